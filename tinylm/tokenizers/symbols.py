"""Tokenizers over a fixed list of symbols: characters, or words.

Models work on integer ids, people read symbols.  A vocabulary numbers the symbols a model
knows 0..V-1; a tokenizer cuts a text into symbols and looks each one up.  For a character
model the symbols are characters (:class:`CharTokenizer`); for a word model they are words
(:class:`WordTokenizer`).  Subword tokenizers are in :mod:`tinylm.tokenizers.bpe`.

**Special tokens** (特殊词元) come first, ids 0, 1, ...: markers that no text contains, such as
``[PAD]`` (fills short sequences up to a batch's length), ``[BOS]`` / ``[EOS]`` (start and end
of an answer) or BERT's ``[CLS]``, ``[SEP]``, ``[MASK]`` and ``[UNK]``.  Their names are below.

**Unknown symbols.**  A symbol outside the vocabulary becomes the *unknown token* when the
tokenizer has one (``[UNK]`` among the specials, or an ordinary symbol such as ``<unk>`` named
by ``unk=``); otherwise encoding raises a ``KeyError`` naming it, or, with
``drop_unknown=True``, leaves it out (word2vec's choice: an ``<unk>`` vector would be a
meaningless average).

>>> tok = CharTokenizer("abc")
>>> tok.encode("cab")
[2, 0, 1]
>>> tok.decode([0, 1, 2])
'abc'
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

PAD, UNK, BOS, EOS, CLS, SEP, MASK = "[PAD]", "[UNK]", "[BOS]", "[EOS]", "[CLS]", "[SEP]", "[MASK]"
"""The names of the special tokens."""

BERT_SPECIALS = (PAD, UNK, CLS, SEP, MASK)
"""BERT's special tokens, ids 0-4 of a BERT-style vocabulary."""

SEQ2SEQ_SPECIALS = (PAD, BOS, EOS)
"""The special tokens of an encoder-decoder's vocabulary, ids 0-2."""

WORD_PATTERN = re.compile(r"[a-z]+(?:'[a-z]+)*")
"""An English word: lower-case letters, with inner apostrophes kept ("o'er", "king's", "i'll").
A leading or trailing apostrophe (a quotation mark, or an elision like "'tis") is dropped."""

WORD_UNK = "<unk>"
"""The word that stands for every word outside a word vocabulary (see :meth:`WordTokenizer.most_frequent`)."""


def words(text: str) -> list[str]:
    """The lower-case English words of ``text``, in order; punctuation, digits and line breaks
    are dropped.

    >>> words("O Romeo, Romeo! wherefore art thou Romeo? I'll o'er-leap 'tis")
    ['o', 'romeo', 'romeo', 'wherefore', 'art', 'thou', 'romeo', "i'll", "o'er", 'leap', 'tis']
    """
    return WORD_PATTERN.findall(text.lower())


def most_frequent(tokens: Iterable[str], size: int) -> list[tuple[str, int]]:
    """The ``size`` most frequent tokens with their counts, most frequent first, ties in
    alphabetical order (so the vocabulary is the same on every machine); :data:`WORD_UNK` is not
    counted.

    >>> most_frequent("b a b c b a".split(), size=2)
    [('b', 3), ('a', 2)]
    """
    if size < 1:
        raise ValueError(f"a vocabulary needs at least one word, got size={size}")
    counts = Counter(tokens)
    counts.pop(WORD_UNK, None)
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:size]


def _special_id(token: str) -> property:
    return property(lambda self: self.special_tokens.get(token), doc=f"The id of {token}, or None if there is none.")


class SpecialIds:
    """The ids of the special tokens a tokenizer has (None for one it has not).

    Every tokenizer of the course keeps ``special_tokens``, a dict from a special token's text to
    its id; these properties look up the usual ones by name.
    """

    special_tokens: dict[str, int]

    pad_id = _special_id(PAD)
    bos_id = _special_id(BOS)
    eos_id = _special_id(EOS)
    cls_id = _special_id(CLS)
    sep_id = _special_id(SEP)
    mask_id = _special_id(MASK)


class SymbolTokenizer(SpecialIds):
    """A fixed vocabulary of symbols: the specials (ids 0..k-1), then the symbols in the order
    given (repeats dropped).  Subclasses say how a text is cut into symbols and joined back."""

    kind = "symbols"
    unit = "symbols"          # what an ordinary symbol is, for repr

    def __init__(self, symbols: Iterable[str], specials: Sequence[str] = (), unk: str | None = None,
                 drop_unknown: bool = False):
        specials = list(dict.fromkeys(specials))
        ordinary = [s for s in dict.fromkeys(symbols) if s not in specials]
        self.symbols: list[str] = specials + ordinary
        self.index: dict[str, int] = {s: i for i, s in enumerate(self.symbols)}
        self.special_tokens: dict[str, int] = {s: i for i, s in enumerate(specials)}
        if unk is None and UNK in self.special_tokens:
            unk = UNK
        if unk is not None and unk not in self.index:
            raise ValueError(f"the unknown token {unk!r} is not in the vocabulary")
        if unk is not None and drop_unknown:
            raise ValueError("a tokenizer with an unknown token has no unknown symbols to drop")
        self.unk, self.drop_unknown = unk, drop_unknown

    # ------------------------------------------------------------------ the protocol

    def __len__(self) -> int:
        return len(self.symbols)

    def __contains__(self, symbol: str) -> bool:
        return symbol in self.index

    @property
    def unk_id(self) -> int | None:
        return None if self.unk is None else self.index[self.unk]

    def split(self, text: str) -> list[str]:
        """Cut ``text`` into symbols."""
        raise NotImplementedError

    def join(self, symbols: Sequence[str]) -> str:
        """Put symbols back together into text."""
        raise NotImplementedError

    def encode(self, text: str | Sequence[str]) -> list[int]:
        """The ids of ``text`` (a string, cut by :meth:`split`; or a list of symbols already cut).

        An unknown symbol becomes the unknown token, is dropped, or raises a ``KeyError`` naming
        it (see the module docstring)."""
        symbols = self.split(text) if isinstance(text, str) else text
        index = self.index
        if self.unk is not None:
            unk = index[self.unk]
            return [index.get(s, unk) for s in symbols]
        if self.drop_unknown:
            return [index[s] for s in symbols if s in index]
        try:
            return [index[s] for s in symbols]
        except KeyError as err:
            raise KeyError(f"symbol {err.args[0]!r} is not in the vocabulary of {len(self)} symbols") from None

    def decode(self, ids: Iterable[int]) -> str:
        """The text of ``ids``; padding is left out (it is not text)."""
        pad = self.pad_id
        return self.join([self.symbols[int(i)] for i in ids if int(i) != pad])

    @property
    def ordinary(self) -> list[str]:
        """The symbols that are not special tokens."""
        return self.symbols[len(self.special_tokens):]

    # ------------------------------------------------------------------ saving

    def to_dict(self) -> dict:
        return {"kind": self.kind, "symbols": self.ordinary, "specials": list(self.special_tokens),
                "unk": self.unk, "drop_unknown": self.drop_unknown}

    @classmethod
    def from_dict(cls, data: dict) -> "SymbolTokenizer":
        if data.get("kind") != cls.kind:
            raise ValueError(f"not a {cls.__name__} (kind {data.get('kind')!r})")
        return cls(data["symbols"], data.get("specials", ()), data.get("unk"), data.get("drop_unknown", False))

    def __repr__(self) -> str:
        if not self.special_tokens:
            return f"{type(self).__name__}({len(self)} {self.unit})"
        return (f"{type(self).__name__}({len(self)} symbols: {len(self.special_tokens)} special, "
                f"{len(self) - len(self.special_tokens)} {self.unit})")


class CharTokenizer(SymbolTokenizer):
    """Characters as tokens.

    >>> tok = CharTokenizer("你好", specials=BERT_SPECIALS)
    >>> tok.encode("你好吗")
    [5, 6, 1]
    >>> tok
    CharTokenizer(7 symbols: 5 special, 2 characters)
    """

    kind = "chars"
    unit = "characters"

    def __init__(self, symbols: Iterable[str], specials: Sequence[str] = (), unk: str | None = None,
                 drop_unknown: bool = False):
        symbols = list(symbols)
        bad = [c for c in symbols if len(c) != 1]
        if bad:
            raise ValueError(f"a character vocabulary holds single characters; got {bad[:5]}")
        super().__init__(symbols, specials, unk, drop_unknown)

    @classmethod
    def from_texts(cls, texts: Iterable[str], min_count: int = 1, specials: Sequence[str] = ()) -> "CharTokenizer":
        """The characters occurring at least ``min_count`` times, commonest first (ties in
        code-point order), so the vocabulary is the same on every machine."""
        counts = Counter()
        for text in texts:
            counts.update(text)
        kept = sorted((c for c, n in counts.items() if n >= min_count), key=lambda c: (-counts[c], c))
        return cls(kept, specials)

    def split(self, text: str) -> list[str]:
        return list(text)

    def join(self, symbols: Sequence[str]) -> str:
        return "".join(symbols)


class WordTokenizer(SymbolTokenizer):
    """English words as tokens (see :func:`words`); decoding puts one space between words.

    >>> tok = WordTokenizer.most_frequent(words("to be or not to be"), size=2)
    >>> tok.symbols, tok.encode("To be, or not?")
    (['be', 'to', '<unk>'], [1, 0, 2, 2])
    """

    kind = "words"
    unit = "words"

    @classmethod
    def most_frequent(cls, tokens: Iterable[str], size: int, unk: bool = True) -> "WordTokenizer":
        """The ``size`` most frequent words (see :func:`most_frequent`); with ``unk``, then
        :data:`WORD_UNK`, which every other word becomes; without, other words are dropped.

        A word model needs a fixed vocabulary, and most words are rare: the cut keeps the frequent
        ones.  With ``unk`` the model learns the probability of "some other word" like any other
        word's; word2vec instead drops the other words from the text."""
        kept = [word for word, _ in most_frequent(tokens, size)]
        return cls(kept, unk=WORD_UNK) if unk else cls(kept, drop_unknown=True)

    def __init__(self, symbols: Iterable[str], specials: Sequence[str] = (), unk: str | None = None,
                 drop_unknown: bool = False):
        symbols = list(symbols)
        if unk is not None and unk not in symbols and unk not in specials:
            symbols.append(unk)
        super().__init__(symbols, specials, unk, drop_unknown)

    def split(self, text: str) -> list[str]:
        return words(text)

    def join(self, symbols: Sequence[str]) -> str:
        return " ".join(symbols)
