"""The causal language-modelling objective: predict each next token (因果语言模型).

The loss is the cross-entropy of the next token at every position of a batch, reported in bits
per character; validation scores the model's bits per character on held-out text with
:func:`tinylm.score`, the same measure as the ladder.

Batches (see :mod:`tinylm.training.batches`): a *stateless* model (an MLP, a Transformer) gets
windows of ``context + 1`` tokens cut at random places; a *stateful* one (an RNN) reads
``batch_size`` parallel streams of the text, one chunk after another, and keeps its state between
chunks: backpropagation through time is truncated at the chunk boundary, but the model still sees
a long past.

For subword tokens, give the number of characters the training ids spell (``train_chars``) and
the number the scored validation ids spell (``valid_chars``, all but the first token's:
:func:`tinylm.evaluation.metrics.scored_chars`), and the losses are in bits per character;
otherwise they are per token.

A model that sets an auxiliary loss after its forward pass (``model.aux_loss``: the
load-balancing loss of a mixture of experts, :mod:`tinylm.models.moe`) has it added to the loss
that is differentiated; the loss reported stays the language model's alone.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..evaluation.metrics import bits_per_char
from ..inference.scoring import score
from .batches import Streams, random_windows
from .loop import LN2, TrainConfig, autocast

EVAL_TOKENS = 100_000
"""How much of the validation text a run evaluates on by default (all of it takes longer)."""


class CausalLM:
    """Next-token prediction on ``train_ids``, scored on the first ``eval_tokens`` of ``valid_ids``."""

    unit = "bpc"
    monitor = "bpc"
    higher_is_better = False

    def __init__(self, train_ids, valid_ids=None, eval_tokens: int | None = EVAL_TOKENS,
                 train_chars: int | None = None, valid_chars: int | None = None):
        self.train_ids = torch.as_tensor(np.asarray(train_ids), dtype=torch.long)
        if valid_chars is not None and valid_ids is not None and eval_tokens is not None \
                and eval_tokens < len(valid_ids):
            raise ValueError("valid_chars counts all of valid_ids: set eval_tokens=None and cut the text instead")
        self.valid_ids = None if valid_ids is None else np.asarray(valid_ids)[:eval_tokens]
        self.valid_chars = valid_chars
        self.train_scale = len(self.train_ids) / train_chars if train_chars else 1.0

    def start(self, model, config: TrainConfig) -> None:
        self.stateful = model.stateful
        self.context, self.precision = config.context, config.precision
        generator = torch.Generator().manual_seed(config.seed)
        if self.stateful:
            self.batches, self.state = Streams(self.train_ids, config.batch_size, config.context), None
        else:
            # Windows of context + 1 tokens; they start anywhere but at the very last place (as
            # every recorded run drew them, so that a run repeats).
            length = config.context + 1
            self.windows = lambda: random_windows(self.train_ids, config.batch_size, length, generator,
                                                  n_starts=len(self.train_ids) - length)

    def next_batch(self):
        """(inputs, targets, state to start from)."""
        if not self.stateful:
            rows = self.windows()
            return rows[:, :-1], rows[:, 1:], None
        x, y, reset = self.batches.next()
        return x, y, None if reset else self.state

    def loss(self, model) -> tuple[torch.Tensor, float]:
        x, y, state = self.next_batch()
        with autocast(self.precision):
            logits, state = model(x, state)
        if self.stateful:                       # truncate backpropagation through time here
            self.state = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
        value = loss.item() / LN2 * self.train_scale        # the reported loss: the language model's alone
        aux = getattr(model, "aux_loss", None)               # a mixture of experts' load balancing (models.moe)
        if aux is not None:
            loss = loss + aux
        return loss, value

    def evaluate(self, model) -> dict[str, float]:
        if self.valid_ids is None:
            return {}
        return {"bpc": bits_per_char(score(model, self.valid_ids, context=self.context), self.valid_chars)}
