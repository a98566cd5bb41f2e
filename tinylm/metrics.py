"""How good is a language model?  Bits per character, perplexity, and compressors.

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

import numpy as np

COMPRESSORS = {
    "gzip": lambda data: gzip.compress(data, compresslevel=9, mtime=0),
    "bz2": lambda data: bz2.compress(data, compresslevel=9),
    "xz": lambda data: lzma.compress(data, preset=9 | lzma.PRESET_EXTREME),
}


def bits_per_char(log2probs: np.ndarray, n_chars: int | None = None) -> float:
    """Total -log2 probability divided by the number of characters.

    For a character model ``n_chars`` is the number of predictions; for a model over
    words or subwords pass the text's character count, so different tokenisations compare.
    """
    log2probs = np.asarray(log2probs, dtype=np.float64)
    n = len(log2probs) if n_chars is None else n_chars
    if n <= 0:
        raise ValueError("bits per character needs at least one character")
    return float(-log2probs.sum() / n)


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
