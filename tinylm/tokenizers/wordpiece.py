"""A pre-trained BERT's WordPiece tokenizer, through the Hugging Face ``tokenizers`` library.

WordPiece (Schuster and Nakajima, 2012; used by BERT) is a subword tokenizer like BPE: words are
cut into the longest pieces of a fixed vocabulary, a piece inside a word spelt with ``##``.
all-MiniLM-L6-v2 ships its tokenizer as a ``tokenizer.json`` file, which the ``tokenizers``
library reads; :class:`WordPieceTokenizer` gives it the course's tokenizer protocol (see
:mod:`tinylm.tokenizers`).  The library's own object, with its truncation and padding settings,
is ``tokenizer.library``.
"""

from __future__ import annotations

from collections.abc import Iterable

from .symbols import BERT_SPECIALS, SpecialIds


class WordPieceTokenizer(SpecialIds):
    """The protocol around a ``tokenizers.Tokenizer`` whose vocabulary holds BERT's special tokens."""

    kind = "wordpiece"

    def __init__(self, library):
        self.library = library
        vocab = library.get_vocab()
        self.special_tokens = {token: vocab[token] for token in BERT_SPECIALS if token in vocab}

    @classmethod
    def from_file(cls, path) -> "WordPieceTokenizer":
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_file(str(path)))

    def encode(self, text: str) -> list[int]:
        """The ids of ``text``'s pieces, without ``[CLS]`` and ``[SEP]``."""
        return self.library.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int]) -> str:
        """The text of ``ids``; special tokens (padding included) are left out."""
        return self.library.decode([int(i) for i in ids], skip_special_tokens=True)

    @property
    def unk_id(self) -> int | None:
        return self.special_tokens.get("[UNK]")

    def __len__(self) -> int:
        return self.library.get_vocab_size()

    def to_dict(self) -> dict:
        return {"kind": self.kind, "tokenizer": self.library.to_str()}

    @classmethod
    def from_dict(cls, data: dict) -> "WordPieceTokenizer":
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_str(data["tokenizer"]))

    def __repr__(self) -> str:
        return f"WordPieceTokenizer({len(self):,} tokens)"
