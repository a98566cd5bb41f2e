"""Tokenizers: text to token ids and back.

Every tokenizer of the course follows one protocol, :class:`Tokenizer`:

- ``encode(text) -> list[int]``: the ids of the text's tokens (no special tokens are added);
- ``decode(ids) -> str``: the text back (padding left out);
- ``len(tokenizer)``: the vocabulary size;
- ``special_tokens``: a dict from each special token's text to its id, and ``pad_id``,
  ``unk_id``, ``bos_id``, ``eos_id``, ``cls_id``, ``sep_id``, ``mask_id`` (None where absent);
- ``to_dict()`` / ``from_dict``, which :func:`save_tokenizer` and checkpoints use.

The kinds:

- :class:`~tinylm.tokenizers.symbols.CharTokenizer`: characters, with optional special tokens;
- :class:`~tinylm.tokenizers.symbols.WordTokenizer`: English words;
- :class:`~tinylm.tokenizers.bpe.BPETokenizer`: byte-level byte-pair encoding, trained here or
  read from a real model's file (SmolLM2);
- :class:`~tinylm.tokenizers.wordpiece.WordPieceTokenizer`: a pre-trained BERT's WordPiece
  tokenizer (all-MiniLM-L6-v2), through the ``tokenizers`` library.

:mod:`tinylm.tokenizers.segment` cuts Chinese text into words with a unigram language model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol, runtime_checkable

from .bpe import BPETokenizer
from .symbols import (BERT_SPECIALS, BOS, CLS, EOS, MASK, PAD, SEP, SEQ2SEQ_SPECIALS, UNK, WORD_UNK, CharTokenizer,
                      WordTokenizer, most_frequent, words)
from .wordpiece import WordPieceTokenizer


@runtime_checkable
class Tokenizer(Protocol):
    """What every tokenizer offers (see the module docstring)."""

    special_tokens: dict[str, int]

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids) -> str: ...

    def __len__(self) -> int: ...

    def to_dict(self) -> dict: ...


KINDS = {cls.kind: cls for cls in (CharTokenizer, WordTokenizer, BPETokenizer, WordPieceTokenizer)}
"""The tokenizers a checkpoint may hold, by the ``kind`` their ``to_dict`` writes."""


def from_dict(data: dict) -> Tokenizer:
    """The tokenizer that ``to_dict`` described."""
    try:
        cls = KINDS[data["kind"]]
    except (KeyError, TypeError):
        raise ValueError(f"not a saved tokenizer (kind {data.get('kind') if isinstance(data, dict) else None!r}); "
                         f"known kinds: {sorted(KINDS)}") from None
    return cls.from_dict(data)


def save_tokenizer(tokenizer: Tokenizer, path: str | Path) -> Path:
    """Write ``tokenizer`` as JSON (a BPE tokenizer's tokens spelt as in GPT-2's files, "Ġthe")."""
    path = Path(path)
    path.write_text(json.dumps(tokenizer.to_dict(), ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Read a tokenizer written by :func:`save_tokenizer`."""
    return from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


__all__ = ["Tokenizer", "CharTokenizer", "WordTokenizer", "BPETokenizer", "WordPieceTokenizer", "from_dict", "save_tokenizer",
           "load_tokenizer", "words", "most_frequent", "PAD", "UNK", "BOS", "EOS", "CLS", "SEP", "MASK",
           "BERT_SPECIALS", "SEQ2SEQ_SPECIALS", "WORD_UNK"]
