"""The sequence-to-sequence objective: an encoder-decoder learns to write the answer (T5's text-to-text).

T5 (Raffel et al., 2020) casts every task as *text in, text out*: the encoder reads the input
text, often with a task prefix ("translate English to German: ..."), and the decoder writes
the answer one token at a time.  Training uses **teacher forcing** (:func:`teacher_forcing`):
the decoder reads the true answer shifted right by one, starting with ``[BOS]``, and predicts
it, so every position of every answer is trained in one pass; the loss ignores the padding.

Answers are scored by **exact match** (:func:`exact_match`): greedy decoding of a whole batch
with :func:`tinylm.generate`, and a prediction counts only if every token is right.  The special
tokens' ids (``pad_id``, ``bos_id``, ``eos_id``) come from the model's configuration.
:mod:`tinylm.data.numerals` has a task with exact answers; :mod:`tinylm.training.span_corruption`
has T5's pre-training objective.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..inference.sampling import GREEDY, generate
from .batches import ShuffledExamples, pad
from .loop import TrainConfig, autocast

EVAL_BATCH_SIZE = 500
"""Sources decoded at once when predicting (500 short numerals take a few MB)."""

EXTRA_TOKENS = 4
"""When predicting for known targets, up to this many tokens beyond the longest target are
generated, so that a model that does not stop still ends."""

Pair = tuple[Sequence[int], Sequence[int]]


def teacher_forcing(targets: Sequence[Sequence[int]], bos: int, eos: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The decoder's input and labels for a batch of answers.

    The decoder reads ``[BOS] t1 t2 ... tn`` and must predict ``t1 t2 ... tn [EOS]``: the labels
    are the input shifted left by one.  Shorter answers are padded with ``pad_id`` in both.
    """
    decoder_in, _ = pad([[bos] + list(t) for t in targets], pad_id)
    labels, _ = pad([list(t) + [eos] for t in targets], pad_id)
    return decoder_in, labels


@dataclass
class Batch:
    src: torch.Tensor          # (B, S) encoder input, right-padded
    src_mask: torch.Tensor     # (B, S) True on real tokens
    decoder_in: torch.Tensor   # (B, T) [BOS] + answer, padded
    labels: torch.Tensor       # (B, T) answer + [EOS], padded (ignored by the loss)


def make_batch(pairs: Sequence[Pair], config) -> Batch:
    """A :class:`Batch` from (source ids, target ids) pairs, with the special ids of ``config``
    (the encoder-decoder's :class:`~tinylm.models.transformer.TransformerConfig`)."""
    src, src_mask = pad([s for s, _ in pairs], config.pad_id)
    decoder_in, labels = teacher_forcing([t for _, t in pairs], config.bos_id, config.eos_id, config.pad_id)
    return Batch(src, src_mask, decoder_in, labels)


def sequence_loss(model, batch: Batch) -> torch.Tensor:
    """Mean cross-entropy (in nats) of the answer tokens and ``[EOS]``; padding is ignored."""
    logits, _ = model(batch.decoder_in, model.encode(batch.src, batch.src_mask))
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch.labels.reshape(-1),
                           ignore_index=model.config.pad_id)


def predict(model, sources: Sequence[Sequence[int]], max_new_tokens: int, batch_size: int = EVAL_BATCH_SIZE,
            use_cache: bool = True) -> list[list[int]]:
    """Greedy answers (ids, without ``[BOS]`` and ``[EOS]``) to encoded sources, ``batch_size``
    at a time."""
    out: list[list[int]] = []
    for i in range(0, len(sources), batch_size):
        out += generate(model, [list(s) for s in sources[i:i + batch_size]], max_new_tokens, GREEDY,
                        use_cache=use_cache)
    return out


def exact_match(model, pairs: Sequence[Pair], max_new_tokens: int | None = None,
                batch_size: int = EVAL_BATCH_SIZE) -> float:
    """The fraction of pairs whose greedy answer equals the target exactly, every token.

    ``max_new_tokens`` defaults to the longest target plus :data:`EXTRA_TOKENS`."""
    if not pairs:
        raise ValueError("no pairs to score")
    max_new_tokens = max_new_tokens or max(len(t) for _, t in pairs) + EXTRA_TOKENS
    predictions = predict(model, [s for s, _ in pairs], max_new_tokens, batch_size)
    return sum(list(p) == list(t) for p, (_, t) in zip(predictions, pairs)) / len(pairs)


class Seq2Seq:
    """Train an encoder-decoder on (source ids, target ids) pairs with teacher forcing.

    Each step takes ``config.batch_size`` pairs; the pairs are shuffled anew at every pass (the
    last, incomplete batch of a pass is dropped).  Validation is the exact match on
    ``valid_pairs``."""

    unit = "nats"
    monitor = "exact_match"
    higher_is_better = True

    def __init__(self, pairs: Sequence[Pair], valid_pairs: Sequence[Pair] = ()):
        if not pairs:
            raise ValueError("no training pairs")
        self.pairs, self.valid_pairs = list(pairs), list(valid_pairs)

    def start(self, model, config: TrainConfig) -> None:
        generator = torch.Generator().manual_seed(config.seed)
        self.examples = ShuffledExamples(len(self.pairs), config.batch_size, generator, carry_remainder=False)
        self.precision = config.precision

    def loss(self, model) -> tuple[torch.Tensor, float]:
        batch = make_batch([self.pairs[i] for i in self.examples.next().tolist()], model.config)
        with autocast(self.precision):
            loss = sequence_loss(model, batch)
        return loss, loss.item()

    def evaluate(self, model) -> dict[str, float]:
        return {"exact_match": exact_match(model, self.valid_pairs)} if self.valid_pairs else {}
