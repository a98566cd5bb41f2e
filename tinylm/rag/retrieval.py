"""Retrievers: from a query to a ranking of chunks, by words (BM25), by meaning (dense
embeddings), or both (reciprocal rank fusion); and the measures of a ranking.

Every retriever has the same method, ``rank(query, k) -> list[int]``: the indices of the ``k``
best chunks, best first.  Ties are broken by the chunk's index, so a ranking never depends on
the order a sort happens to leave equal scores in.

- :class:`BM25` scores by the query's words (Robertson & Zaragoza's Okapi BM25): a word counts
  more when it is rare in the corpus (idf) and when it appears often in a short chunk, with
  diminishing returns (``k1``) and a length normalisation (``b``).  Its numbers equal those of
  the ``rank-bm25`` package's ``BM25Okapi`` (a test checks), which is what a reader would use.
- :class:`Dense` embeds the chunks and the query with a sentence encoder (all-MiniLM-L6-v2) and
  ranks by cosine similarity: it finds a chunk that says the same thing in other words.
- :func:`reciprocal_rank_fusion` merges several rankings (Cormack et al., 2009): each chunk gets
  ``sum 1 / (k + rank)`` over the rankings it appears in.
"""

from __future__ import annotations

import math
import re
import warnings
from collections import Counter
from typing import Sequence

import numpy as np

from .corpus import Chunk

_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[\u4e00-\u9fff]")
STOPWORDS = frozenset("""a an and are as at be by can do does for from has have how i in into is it
its of on or so than that the their then there these this to was what when where which who why
will with you your""".split())


def words(text: str) -> list[str]:
    """BM25's tokens: lower-case words and numbers, each Chinese character on its own, stop
    words dropped (they occur everywhere and only add noise to a score)."""
    return [w for w in _TOKEN.findall(text.lower()) if w not in STOPWORDS]


def _check_query(query: str) -> None:
    if not isinstance(query, str):
        raise TypeError(f"a query is a string, got {type(query).__name__}")
    if not query.strip():
        raise ValueError("the query is empty: there is nothing to search for")


def _top(scores: np.ndarray, k: int) -> list[int]:
    order = np.lexsort((np.arange(len(scores)), -scores))        # best score first, then lower index
    return [int(i) for i in order[:k]]


class BM25:
    """Okapi BM25 over chunks (the idf of a word in more than half the chunks is floored at
    ``epsilon`` times the average idf, as ``rank_bm25.BM25Okapi`` does)."""

    def __init__(self, chunks: Sequence[Chunk | str], k1: float = 1.5, b: float = 0.75, epsilon: float = 0.25):
        texts = [c.text if isinstance(c, Chunk) else c for c in chunks]
        if not texts:
            raise ValueError("the corpus is empty: BM25 needs at least one chunk")
        self.k1, self.b = k1, b
        self.docs = [Counter(words(t)) for t in texts]
        self.lengths = np.array([sum(d.values()) for d in self.docs], dtype=np.float64)
        self.avg_length = float(self.lengths.mean()) or 1.0
        df = Counter(w for d in self.docs for w in d)
        n = len(self.docs)
        idf = {w: math.log(n - f + 0.5) - math.log(f + 0.5) for w, f in df.items()}
        floor = epsilon * (sum(idf.values()) / len(idf)) if idf else 0.0
        self.idf = {w: (v if v >= 0 else floor) for w, v in idf.items()}

    def scores(self, query: str) -> np.ndarray:
        """The BM25 score of every chunk for ``query``."""
        _check_query(query)
        norm = self.k1 * (1 - self.b + self.b * self.lengths / self.avg_length)
        out = np.zeros(len(self.docs))
        for w in words(query):
            if w not in self.idf:
                continue
            tf = np.array([d.get(w, 0) for d in self.docs], dtype=np.float64)
            out += self.idf[w] * tf * (self.k1 + 1) / (tf + norm)
        return out

    def rank(self, query: str, k: int = 10) -> list[int]:
        return _top(self.scores(query), k)


class TruncatedQuery(UserWarning):
    """A query longer than the sentence encoder's window: only its beginning is embedded."""


class Dense:
    """Cosine similarity between unit-length sentence embeddings of the query and the chunks.

    ``encoder`` is a :class:`tinylm.pretrained.minilm.SentenceEncoder`; ``embeddings`` (n, d) may
    be given when they were computed before (a lab reads them from a committed study)."""

    def __init__(self, encoder, chunks: Sequence[Chunk | str], embeddings=None, prefix: str = ""):
        texts = [c.text if isinstance(c, Chunk) else c for c in chunks]
        if not texts:
            raise ValueError("the corpus is empty: dense retrieval needs at least one chunk")
        self.encoder = encoder
        self.prefix = prefix
        if embeddings is None:
            embeddings = encoder.embed([prefix + t for t in texts])
        self.embeddings = np.asarray(embeddings, dtype=np.float32)
        if self.embeddings.shape[0] != len(texts):
            raise ValueError(f"{self.embeddings.shape[0]} embeddings for {len(texts)} chunks")

    def cut(self, text: str) -> str:
        """The end of ``text`` that the encoder does not read ('' when all of it fits): MiniLM reads
        at most 256 word pieces and silently drops the rest."""
        tokenizer = getattr(getattr(self.encoder, "tokenizer", None), "library", None)
        if tokenizer is None:
            return ""
        encoding = tokenizer.encode(text)
        if not encoding.overflowing:
            return ""
        read = [end for (_, end), special in zip(encoding.offsets, encoding.special_tokens_mask) if not special]
        return text[max(read):].strip() if read else text

    def embed_query(self, query: str) -> np.ndarray:
        """The query's embedding; a query longer than the encoder's window is embedded from its
        beginning, and a :class:`TruncatedQuery` warning says what was cut."""
        _check_query(query)
        cut = self.cut(query)
        if cut:
            warnings.warn(f"the query is longer than the encoder reads: its last {len(cut.split())} words "
                          f"are ignored, from {cut[:60]!r}{'...' if len(cut) > 60 else ''}",
                          TruncatedQuery, stacklevel=2)
        return np.asarray(self.encoder.embed([query]), dtype=np.float32)[0]

    def scores(self, query: str) -> np.ndarray:
        return self.embeddings @ self.embed_query(query)

    def rank(self, query: str, k: int = 10) -> list[int]:
        return _top(self.scores(query).astype(np.float64), k)


RRF_K = 60
"""Cormack et al.'s constant: a chunk ranked first by one list gets 1/61, not 1; a large ``k``
keeps one list's top result from outweighing agreement between the lists."""


def reciprocal_rank_fusion(rankings: Sequence[Sequence[int]], k: int = RRF_K, top: int | None = None) -> list[int]:
    """Fuse rankings (lists of chunk indices, best first): score ``sum 1 / (k + rank)``, rank
    counted from 1; ties go to the lower index."""
    if not rankings:
        raise ValueError("there are no rankings to fuse")
    score: dict[int, float] = {}
    for ranking in rankings:
        for r, i in enumerate(ranking, start=1):
            score[int(i)] = score.get(int(i), 0.0) + 1.0 / (k + r)
    fused = sorted(score, key=lambda i: (-score[i], i))
    return fused[:top] if top else fused


class Hybrid:
    """BM25 and a dense retriever fused by reciprocal rank fusion, each ranking ``depth`` chunks deep."""

    def __init__(self, retrievers: Sequence, depth: int = 50, k: int = RRF_K):
        self.retrievers, self.depth, self.k = list(retrievers), depth, k

    def rank(self, query: str, k: int = 10) -> list[int]:
        return reciprocal_rank_fusion([r.rank(query, self.depth) for r in self.retrievers], self.k, top=k)


# ----------------------------------------------------------------------------- measures

def first_relevant_rank(ranking: Sequence[int], relevant: set[int]) -> int | None:
    """The rank (from 1) of the first relevant chunk, or None if none is in the ranking."""
    if not relevant:
        raise ValueError("a question with no relevant chunk cannot be scored")
    return next((r for r, i in enumerate(ranking, start=1) if i in relevant), None)


def recall_at(rankings: Sequence[Sequence[int]], relevant: Sequence[set[int]], k: int) -> float:
    """The fraction of questions with a relevant chunk among the first ``k`` (a question counts
    once, however many of its chunks are found: "was the answer retrieved?")."""
    if len(rankings) != len(relevant) or not rankings:
        raise ValueError(f"{len(rankings)} rankings for {len(relevant)} questions")
    hits = [(first_relevant_rank(r, rel) or k + 1) <= k for r, rel in zip(rankings, relevant)]
    return float(np.mean(hits))


def mean_reciprocal_rank(rankings: Sequence[Sequence[int]], relevant: Sequence[set[int]]) -> float:
    """The mean over questions of 1 / (rank of the first relevant chunk), 0 when none is ranked."""
    if len(rankings) != len(relevant) or not rankings:
        raise ValueError(f"{len(rankings)} rankings for {len(relevant)} questions")
    ranks = [first_relevant_rank(r, rel) for r, rel in zip(rankings, relevant)]
    return float(np.mean([1.0 / r if r else 0.0 for r in ranks]))
