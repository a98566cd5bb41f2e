"""How good is a model?  Bits per character, perplexity, compressors, and scores of answers.

A model that gives the text probability P can encode it in -log2 P bits (arithmetic coding
gets within two bits of that for the whole text), so *bits per character* (bpc) is both a
measure of prediction and a file size.  That makes any compressor a language model we can
score on the same scale: its bpc on the test split is the number of bits it adds to encode
the test text after it has seen the training text,

    bpc = 8 * (len(C(train + test)) - len(C(train))) / number of test characters.

Conditioning on the training text is what makes the comparison fair: the model has seen the
training split too.  (gzip only looks 32 KB back, so for it the training text hardly helps.)
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import math
from collections.abc import Sequence

import numpy as np

COMPRESSORS = {
    "gzip": lambda data: gzip.compress(data, compresslevel=9, mtime=0),
    "bz2": lambda data: bz2.compress(data, compresslevel=9),
    "xz": lambda data: lzma.compress(data, preset=9 | lzma.PRESET_EXTREME),
}


def bits_per_char(log2probs: np.ndarray, n_chars: int | None = None) -> float:
    """The course's one convention: the sum of -log2 P over the predictions made, divided by the
    number of characters those predictions spell.

    :func:`tinylm.score` predicts every token but the first (it has no context).  For a
    character model that is one character per prediction, the default; for a model over words or
    subwords pass ``n_chars = scored_chars(tokenizer, ids)``, the characters of every token but
    the first, so that different tokenisations compare.
    """
    log2probs = np.asarray(log2probs, dtype=np.float64)
    n = len(log2probs) if n_chars is None else n_chars
    if n <= 0:
        raise ValueError("bits per character needs at least one character")
    return float(-log2probs.sum() / n)


def scored_chars(tokenizer, ids) -> int:
    """The number of characters that the scored tokens of ``ids`` spell: those of the whole text
    but the first token's, which :func:`tinylm.score` does not predict.  For characters, len - 1."""
    ids = [int(i) for i in np.asarray(ids).reshape(-1)]
    if len(ids) < 2:
        raise ValueError("a text of fewer than two tokens has no scored characters")
    return len(tokenizer.decode(ids)) - len(tokenizer.decode(ids[:1]))


def perplexity(log2probs: np.ndarray) -> float:
    """2 to the power of the average bits per token: the effective branching factor."""
    return float(2.0 ** (-np.mean(np.asarray(log2probs, dtype=np.float64))))


def compressed_bits(text: str, compressor: str) -> int:
    """Size in bits of the UTF-8 text compressed by ``compressor`` (gzip, bz2 or xz)."""
    try:
        compress = COMPRESSORS[compressor]
    except KeyError:
        raise ValueError(f"unknown compressor {compressor!r}; choose one of {sorted(COMPRESSORS)}") from None
    return 8 * len(compress(text.encode("utf-8")))


def compressor_bpc(train: str, test: str, compressor: str) -> float:
    """Bits per test character that ``compressor`` needs once it has seen ``train``."""
    if not test:
        raise ValueError("the test text is empty")
    extra = compressed_bits(train + test, compressor) - compressed_bits(train, compressor)
    return extra / len(test)


def mix_log2probs(a, b, weight: float) -> np.ndarray:
    """log2 of the mixture ``weight * P_a + (1 - weight) * P_b``, from log2 P_a and log2 P_b of the
    same text under two models.

    Bengio et al. (2003) got their best results by mixing the MLP with an interpolated trigram:
    the two models make different mistakes.  The mixture is computed in the log domain
    (``logaddexp2``), so tiny probabilities do not underflow.
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"the weight of a mixture is in [0, 1], got {weight}")
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"the two models scored different texts: shapes {a.shape} and {b.shape}")
    if weight == 1.0:
        return a.copy()
    if weight == 0.0:
        return b.copy()
    return np.logaddexp2(np.log2(weight) + a, np.log2(1.0 - weight) + b)


# ----------------------------------------------------------------------------- answers of a task

def char_accuracy(predictions: Sequence[str], references: Sequence[str]) -> float:
    """The fraction of reference characters that the prediction has at the same position (a
    short prediction misses the rest, extra characters are not counted): a kinder score than
    exact match, which gives nothing for an answer with one character wrong."""
    right = sum(a == b for p, r in zip(predictions, references) for a, b in zip(p, r))
    return right / sum(len(r) for r in references)


def accuracy_by(predictions: Sequence[str], references: Sequence[str], keys: Sequence) -> dict:
    """Exact-match accuracy and count for each key (e.g. the number of digits): {key: (acc, n)}."""
    groups: dict = {}
    for p, r, k in zip(predictions, references, keys):
        right, total = groups.get(k, (0, 0))
        groups[k] = (right + (p == r), total + 1)
    return {k: (right / total, total) for k, (right, total) in sorted(groups.items())}


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval for a proportion: ``successes`` of ``n`` (95% for z = 1.96).

    Unlike ``p ± z sqrt(p(1-p)/n)`` it stays inside [0, 1] and does not shrink to a point at
    p = 0 or 1:  centre ``(p + z²/2n) / (1 + z²/n)``, half-width
    ``z sqrt(p(1-p)/n + z²/4n²) / (1 + z²/n)``.
    """
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n > 0, got {successes} of {n}")
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)
