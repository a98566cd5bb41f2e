"""Scoring answers all or nothing, or with partial credit: the two readings of "emergence".

A task with exact answers (an addition, a date, the digits of a numeral) can be scored in two
kinds of way:

- **all or nothing**: :func:`exact_match` (精确匹配), the fraction of answers right in every
  token.  An answer with one digit wrong of six scores 0, as much as a random string;
- **partial credit** (部分得分): :func:`token_accuracy`, the fraction of answer tokens right at
  their place; :func:`edit_distance` (编辑距离), how many tokens must be inserted, deleted or
  replaced to turn the answer into the right one; and the cross-entropy of the right answer's
  tokens (``TeacherForced.nats``), which moves even when no answer changes.

Wei et al. (2022) called an ability *emergent* (涌现) when it is near chance for small models and
far above it for large ones, which they saw in exact-match scores; Schaeffer et al. (2023) showed
that the same models scored with partial credit often improve smoothly.  The link is
:func:`independent_exact_match`: if each of an answer's ``L`` tokens were right with probability
``p``, independently, the whole answer would be right with probability ``p ** L``, a curve that
stays near zero until ``p`` is close to 1 and then shoots up.

:func:`teacher_forced` scores a causal model on (prompt, answer) pairs in one pass, reading the
right answer (teacher forcing): at each answer position, is the most likely token the right one,
and how many nats does the right one cost.  A greedy answer is right exactly when every one of
those most likely tokens is right (the first wrong one would have been the greedy choice), so the
exact match of greedy decoding comes out of the same pass; :func:`greedy_answers` decodes, to
see the wrong answers themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

Pair = tuple[Sequence[int], Sequence[int]]


def _check_lengths(predictions: Sequence, references: Sequence) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not references:
        raise ValueError("no answers to score")


def exact_match(predictions: Sequence[Sequence], references: Sequence[Sequence]) -> float:
    """The fraction of predictions equal to their reference, every token (or character)."""
    _check_lengths(predictions, references)
    return sum(list(p) == list(r) for p, r in zip(predictions, references)) / len(references)


def token_accuracy(predictions: Sequence[Sequence], references: Sequence[Sequence]) -> float:
    """The fraction of reference tokens that the prediction has at the same place (a short
    prediction misses the rest; extra tokens are not counted)."""
    _check_lengths(predictions, references)
    right = sum(a == b for p, r in zip(predictions, references) for a, b in zip(p, r))
    return right / sum(len(r) for r in references)


def edit_distance(a: Sequence, b: Sequence) -> int:
    """The Levenshtein distance between two sequences: the fewest insertions, deletions and
    substitutions of one token that turn ``a`` into ``b``.

    Dynamic programming over prefixes: ``row[j]`` is the distance between the prefix of ``a``
    read so far and ``b[:j]``.

    >>> edit_distance("kitten", "sitting"), edit_distance("123", "1234"), edit_distance("", "ab")
    (3, 1, 2)
    """
    a, b = list(a), list(b)
    row = list(range(len(b) + 1))                       # from the empty prefix of a: j insertions
    for i, x in enumerate(a, start=1):
        previous, row[0] = row[0], i                    # previous: the diagonal, distance(a[:i-1], b[:j-1])
        for j, y in enumerate(b, start=1):
            previous, row[j] = row[j], min(row[j] + 1,            # delete x
                                           row[j - 1] + 1,        # insert y
                                           previous + (x != y))   # keep x, or replace it by y
    return row[-1]


def mean_edit_distance(predictions: Sequence[Sequence], references: Sequence[Sequence]) -> float:
    """The mean :func:`edit_distance` of predictions from their references, in tokens."""
    _check_lengths(predictions, references)
    return sum(edit_distance(p, r) for p, r in zip(predictions, references)) / len(references)


def independent_exact_match(p, length: int):
    """The exact match that a per-token accuracy ``p`` predicts for answers of ``length``
    tokens, were the tokens right or wrong independently: ``p ** length``."""
    if length < 1:
        raise ValueError(f"an answer has at least one token, got length {length}")
    p = np.asarray(p, dtype=np.float64)
    if np.any((p < 0) | (p > 1)):
        raise ValueError("an accuracy is between 0 and 1")
    return p ** length if p.ndim else float(p ** length)


@dataclass
class TeacherForced:
    """A model's answers scored with the right answer given (see :func:`teacher_forced`).

    ``right[i, k]``: whether the most likely token at answer position ``k`` of pair ``i`` is the
    right one; ``nll[i, k]``: the right token's cost in nats; ``mask[i, k]``: whether pair ``i``'s
    answer has a position ``k`` (answers may differ in length)."""

    right: np.ndarray
    nll: np.ndarray
    mask: np.ndarray

    @property
    def nats(self) -> float:
        """The mean cross-entropy per answer token, in nats."""
        return float(self.nll[self.mask].mean())

    @property
    def bits(self) -> float:
        """The mean cross-entropy per answer token, in bits."""
        return self.nats / float(np.log(2.0))

    @property
    def token_accuracy(self) -> float:
        """The fraction of answer tokens whose most likely token is right."""
        return float(self.right[self.mask].mean())

    @property
    def exact_match(self) -> float:
        """The fraction of answers right at every position: the exact match of greedy decoding."""
        return float((self.right | ~self.mask).all(axis=1).mean())

    @property
    def position_accuracy(self) -> np.ndarray:
        """The accuracy at each answer position (over the answers that have it)."""
        return self.right.sum(0) / np.maximum(self.mask.sum(0), 1)


def teacher_forced(model, pairs: Sequence[Pair], pad_id: int = 0, batch_size: int = 1000) -> TeacherForced:
    """Score a causal model's answers to (prompt ids, answer ids) pairs in one pass per batch."""
    from ..models.base import evaluating
    from ..training.answer_lm import answer_mask

    if not pairs:
        raise ValueError("no (prompt, answer) pairs to score")
    width = max(len(a) for _, a in pairs)
    right = np.zeros((len(pairs), width), dtype=bool)
    nll = np.zeros((len(pairs), width))
    mask = np.zeros((len(pairs), width), dtype=bool)
    with evaluating(model), torch.no_grad():
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start: start + batch_size]
            ids, _ = answer_mask(chunk, pad_id)
            logits, _ = model(ids[:, :-1])
            logp = F.log_softmax(logits.float(), dim=-1)
            for row, (prompt, answer) in enumerate(chunk):
                where = slice(len(prompt) - 1, len(prompt) - 1 + len(answer))   # positions that predict the answer
                target = torch.as_tensor(list(answer))
                i, n = start + row, len(answer)
                right[i, :n] = (logp[row, where].argmax(-1) == target).numpy()
                nll[i, :n] = (-logp[row, where].gather(-1, target[:, None])[:, 0]).numpy()
                mask[i, :n] = True
    return TeacherForced(right, nll, mask)


def greedy_answers(model, prompts: Sequence[Sequence[int]], length: int, batch_size: int = 500) -> list[list[int]]:
    """``length`` tokens after each prompt, the most likely one each time (prompts equally long
    within a batch; :func:`tinylm.generate` with :data:`tinylm.GREEDY`)."""
    from ..inference.sampling import GREEDY, generate

    out: list[list[int]] = []
    for start in range(0, len(prompts), batch_size):
        out += generate(model, [list(p) for p in prompts[start: start + batch_size]], length, GREEDY, stop=())
    return out
