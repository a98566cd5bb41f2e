"""A vocabulary: the symbols a model knows, numbered 0..V-1.

Models work on integer ids, people read symbols.  For a character model the symbols are
characters; for a word model they are words.  Later chapters add subword tokenisers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


class Vocabulary:
    """A fixed list of symbols and the maps between symbols and ids.

    >>> v = Vocabulary("abc")
    >>> v.encode("cab").tolist()
    [2, 0, 1]
    >>> v.decode([0, 1, 2])
    'abc'
    """

    def __init__(self, symbols: Iterable[str]):
        self.symbols: list[str] = list(dict.fromkeys(symbols))
        self.index: dict[str, int] = {s: i for i, s in enumerate(self.symbols)}

    def __len__(self) -> int:
        return len(self.symbols)

    def __contains__(self, symbol: str) -> bool:
        return symbol in self.index

    def encode(self, sequence: Iterable[str]) -> np.ndarray:
        """Symbols to an int64 array of ids; an unknown symbol raises a ``KeyError`` naming it."""
        try:
            return np.fromiter((self.index[s] for s in sequence), dtype=np.int64)
        except KeyError as err:
            raise KeyError(f"symbol {err.args[0]!r} is not in the vocabulary of {len(self)} symbols") from None

    def decode(self, ids: Sequence[int] | np.ndarray, sep: str = "") -> str:
        return sep.join(self.symbols[int(i)] for i in ids)

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} symbols)"
