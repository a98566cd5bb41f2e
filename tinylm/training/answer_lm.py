"""A causal language model trained on answers only: the prompt is given, the answer is learnt.

A decoder-only model can learn a task with exact answers (``03512+48790=`` → ``052302``) as
plain next-token prediction on the whole line, prompt and answer.  But the prompt's tokens are
random operands that nothing can predict; training on them only adds noise to the gradient.  So
:class:`AnswerLM` trains a :class:`~tinylm.models.transformer.DecoderLM` on (prompt, answer) pairs
with the loss on the **answer tokens only** (仅对答案计算损失): the model reads the whole line
with its causal mask, and the cross-entropy is averaged over the positions that predict an
answer token, exactly as instruction tuning masks the prompt out of the loss.

Pairs of different lengths are padded on the right; padding, like the prompt, is out of the
loss (:func:`answer_mask`).  Validation scores the answers with
:func:`tinylm.evaluation.answers.teacher_forced`: the cross-entropy per answer token, the
accuracy per answer token, and the exact match of greedy answers (a greedy answer is right
exactly when the most likely token is right at every answer position, given the right ones
before it).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..inference.scoring import token_logprobs
from .batches import ShuffledExamples, pad
from .loop import TrainConfig, autocast

Pair = tuple[Sequence[int], Sequence[int]]


def answer_mask(pairs: Sequence[Pair], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, mask)``, both (B, T): each row the prompt then the answer, right-padded with
    ``pad_id``; ``mask`` True exactly at the answer's tokens (the positions whose token the loss
    predicts)."""
    if not pairs:
        raise ValueError("no (prompt, answer) pairs")
    for prompt, answer in pairs:
        if not len(prompt) or not len(answer):
            raise ValueError("every pair needs a non-empty prompt (the first token is never predicted) and answer")
    ids, _ = pad([list(p) + list(a) for p, a in pairs], pad_id)
    mask = torch.zeros_like(ids, dtype=torch.bool)
    for row, (prompt, answer) in enumerate(pairs):
        mask[row, len(prompt): len(prompt) + len(answer)] = True
    return ids, mask


def answer_loss(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy (nats) of the masked tokens given everything before them."""
    return -token_logprobs(model, ids, mask).sum() / mask.sum()


class AnswerLM:
    """Train a decoder-only model on (prompt ids, answer ids) pairs, the loss on the answers only.

    Each step takes ``config.batch_size`` pairs, the pairs shuffled anew at each pass.
    Validation (on ``valid_pairs``): ``answer_nats``, the mean cross-entropy per answer token
    (the monitored metric), ``token_accuracy`` and ``exact_match``."""

    unit = "nats"
    monitor = "answer_nats"
    higher_is_better = False

    def __init__(self, pairs: Sequence[Pair], valid_pairs: Sequence[Pair] = (), pad_id: int = 0):
        if not pairs:
            raise ValueError("no training pairs")
        self.pairs, self.valid_pairs, self.pad_id = list(pairs), list(valid_pairs), pad_id

    def start(self, model, config: TrainConfig) -> None:
        if getattr(model, "encoder_decoder", False) or not getattr(model, "causal", True):
            raise ValueError("AnswerLM trains a causal decoder-only model (a DecoderLM)")
        generator = torch.Generator().manual_seed(config.seed)
        self.examples = ShuffledExamples(len(self.pairs), config.batch_size, generator)
        self.precision = config.precision

    def loss(self, model) -> tuple[torch.Tensor, float]:
        ids, mask = answer_mask([self.pairs[i] for i in self.examples.next().tolist()], self.pad_id)
        with autocast(self.precision):
            loss = answer_loss(model, ids, mask)
        return loss, loss.item()

    def evaluate(self, model) -> dict[str, float]:
        if not self.valid_pairs:
            return {}
        from ..evaluation.answers import teacher_forced

        scores = teacher_forced(model, self.valid_pairs, self.pad_id)
        return {"answer_nats": scores.nats, "token_accuracy": scores.token_accuracy,
                "exact_match": scores.exact_match}
