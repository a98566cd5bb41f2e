"""T5's pre-training objective: span corruption (Raffel et al., 2020).

Hide random spans of a text behind sentinels ``<X0>``, ``<X1>`` ... in the encoder's input, and
ask the decoder to write the hidden spans out, each after its sentinel.  Like BERT's masking it
needs no labels; unlike it, a whole span becomes one sentinel, so the input is shorter than the
text and the target shorter still.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import torch

def sentinel(i: int) -> str:
    """T5's i-th sentinel token, written <X0>, <X1>, ... (T5's own are <extra_id_0>, ...)."""
    return f"<X{i}>"


def _random_segmentation(n_items: int, n_segments: int, generator: torch.Generator) -> list[int]:
    """Split ``n_items`` into ``n_segments`` non-empty pieces at random; return their lengths."""
    cuts = torch.randperm(n_items - 1, generator=generator)[: n_segments - 1].sort().values + 1
    bounds = [0] + cuts.tolist() + [n_items]
    return [b - a for a, b in zip(bounds[:-1], bounds[1:])]


def noise_mask(length: int, rate: float = 0.15, mean_span: float = 3.0,
               generator: torch.Generator | None = None, roll: bool = True) -> list[bool]:
    """Which of ``length`` tokens to hide, chosen as T5 does (``random_spans_noise_mask``).

    ``round(rate * length)`` tokens are hidden (at least 1, at most ``length - 1``), in
    ``round(noise / mean_span)`` spans (at least 1).  The hidden and the kept tokens are each cut
    into that many non-empty runs at random and interleaved, kept run first, so spans never
    touch.  That always ends the sequence with a hidden span; ``roll`` (T5's ``random_roll``)
    then rotates the mask by a random offset, so any position can be hidden.
    """
    if length < 2:
        raise ValueError(f"span corruption needs at least 2 tokens, got {length}")
    if not 0 < rate < 1 or mean_span < 1:
        raise ValueError(f"need 0 < rate < 1 and mean_span >= 1, got rate={rate}, mean_span={mean_span}")
    generator = generator or torch.Generator().manual_seed(0)
    n_noise = min(max(1, round(length * rate)), length - 1)
    n_spans = min(max(1, round(n_noise / mean_span)), length - n_noise)
    noise = _random_segmentation(n_noise, n_spans, generator)
    keep = _random_segmentation(length - n_noise, n_spans, generator)
    mask: list[bool] = []
    for k, m in zip(keep, noise):
        mask += [False] * k + [True] * m
    if roll:
        offset = int(torch.randint(length, (1,), generator=generator))
        mask = mask[offset:] + mask[:offset]
    return mask


def apply_noise_mask(tokens: Sequence[Hashable], mask: Sequence[bool],
                     make_sentinel: Callable[[int], Hashable] = sentinel) -> tuple[list, list]:
    """(input, target) of span corruption for a given mask: each run of hidden tokens becomes
    one sentinel in the input; the target lists each sentinel followed by the tokens it hides,
    and ends with one more sentinel (as in the T5 paper's figure)."""
    if len(tokens) != len(mask):
        raise ValueError(f"{len(tokens)} tokens but a mask of {len(mask)}")
    inputs, targets, spans = [], [], 0
    for i, (token, hidden) in enumerate(zip(tokens, mask)):
        if hidden:
            if i == 0 or not mask[i - 1]:            # a new span starts
                inputs.append(make_sentinel(spans))
                targets.append(make_sentinel(spans))
                spans += 1
            targets.append(token)
        else:
            inputs.append(token)
    targets.append(make_sentinel(spans))
    return inputs, targets


def span_corrupt(tokens: Sequence[Hashable], rate: float = 0.15, mean_span: float = 3.0,
                 generator: torch.Generator | None = None, roll: bool = True,
                 make_sentinel: Callable[[int], Hashable] = sentinel) -> tuple[list, list]:
    """T5's pre-training objective on one sequence: hide about ``rate`` of the tokens, in spans
    of ``mean_span`` on average (see :func:`noise_mask`), each span replaced by one sentinel in
    the input; the target is the sentinels, each followed by what it hides.  Returns
    (input, target); T5 pre-trains with ``rate=0.15, mean_span=3``.

    >>> g = torch.Generator().manual_seed(0)
    >>> inp, tgt = span_corrupt("Thank you for inviting me to your party last week .".split(), 0.25, 2, g)
    >>> span_uncorrupt(inp, tgt) == "Thank you for inviting me to your party last week .".split()
    True
    """
    return apply_noise_mask(tokens, noise_mask(len(tokens), rate, mean_span, generator, roll), make_sentinel)


def span_uncorrupt(inputs: Sequence[Hashable], targets: Sequence[Hashable],
                   make_sentinel: Callable[[int], Hashable] = sentinel) -> list:
    """Put the hidden spans of ``targets`` back into ``inputs``: the inverse of :func:`span_corrupt`."""
    spans: dict[Hashable, list] = {}
    current = None
    for token in targets:
        if token == make_sentinel(len(spans)):
            current = token
            spans[current] = []
        elif current is None:
            raise ValueError(f"the target must start with {make_sentinel(0)!r}, got {token!r}")
        else:
            spans[current].append(token)
    out = []
    for token in inputs:
        out += spans[token] if token in spans else [token]
    return out
