"""Cutting training data into mini-batches (小批量).

Every objective of :mod:`tinylm.training` draws its batches with one of these, from its own
seeded ``torch.Generator``, so that a run repeats exactly:

- :func:`random_windows`: windows of a long stream of tokens, each starting at a random place
  (a causal LM, a masked LM);
- :class:`Streams`: parallel streams through a text, continued from batch to batch, for a model
  that carries its state (an RNN);
- :class:`ShuffledExamples`: a fixed set of examples in a fresh random order each epoch (pairs
  of a text-to-text task, labelled texts);
- :func:`pad`: sequences of different lengths made into one rectangular batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def random_windows(stream: torch.Tensor, batch_size: int, length: int, generator: torch.Generator,
                   n_starts: int | None = None) -> torch.Tensor:
    """(batch_size, length) windows of ``stream``, each starting at a random place.

    A window may start at any of the first ``n_starts`` positions (default: every position
    that leaves a whole window, ``len(stream) - length + 1``)."""
    if n_starts is None:
        n_starts = len(stream) - length + 1
    if n_starts < 1:
        raise ValueError(f"the text ({len(stream)} tokens) is shorter than one window ({length})")
    starts = torch.randint(0, n_starts, (batch_size,), generator=generator)
    return torch.stack([stream[s:s + length] for s in starts.tolist()])


class Streams:
    """``batch_size`` parallel streams through the text, read ``context`` tokens at a time.

    Stream ``b`` starts at ``b / batch_size`` of the way through the text; each batch continues
    every stream where the last one stopped, so a stateful model may carry its state.  At the
    end the streams start over (``reset`` is True: drop the state).
    """

    def __init__(self, ids: torch.Tensor, batch_size: int, context: int):
        length = (len(ids) - 1) // batch_size
        if length <= context:
            raise ValueError(f"the training text is too short for {batch_size} streams of {context} tokens")
        self.x = ids[: length * batch_size].view(batch_size, length)
        self.y = ids[1: length * batch_size + 1].view(batch_size, length)
        self.context, self.position = context, 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """(inputs, targets, reset): the next ``context`` tokens of every stream and the tokens
        that follow them; ``reset`` is True when the streams start (over)."""
        reset = self.position + self.context > self.x.shape[1]
        if reset:
            self.position = 0
        a, b = self.position, self.position + self.context
        self.position = b
        return self.x[:, a:b], self.y[:, a:b], reset or a == 0


class ShuffledExamples:
    """Batches of example indices 0..n-1, read in a fresh random order each epoch.

    When fewer than a batch are left of an epoch, the next epoch's order is drawn and either
    appended to them (``carry_remainder``: every example is used equally often) or used in
    their place (the remainder is dropped)."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator, carry_remainder: bool = True):
        if n < 1:
            raise ValueError("no examples to train on")
        self.n, self.batch_size, self.generator = n, min(batch_size, n), generator
        self.carry_remainder = carry_remainder
        self.order = torch.empty(0, dtype=torch.long)

    def next(self) -> torch.Tensor:
        if len(self.order) < self.batch_size:
            fresh = torch.randperm(self.n, generator=self.generator)
            self.order = torch.cat([self.order, fresh]) if self.carry_remainder else fresh
        rows, self.order = self.order[:self.batch_size], self.order[self.batch_size:]
        return rows


def pad(sequences: Sequence[Sequence[int]], pad_id: int = 0,
        length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Lists of ids, right-padded with ``pad_id`` to the longest (or cut to ``length``):
    ``(ids, padding_mask)``, both (B, L), the mask True at real tokens."""
    if not sequences:
        raise ValueError("nothing to pad: no sequences")
    length = length or max(len(s) for s in sequences)
    ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : min(len(seq), length)] = torch.as_tensor(list(seq)[:length], dtype=torch.long)
    lengths = torch.tensor([min(len(s), length) for s in sequences])
    return ids, torch.arange(length)[None, :] < lengths[:, None]
