"""Bengio's neural probabilistic language model: an MLP over the last n-1 tokens.

Bengio, Ducharme, Vincent and Jauvin (2003) replaced the n-gram's table of counts by a neural
network.  Each token gets a learned vector (its *embedding*, a distributed representation); the
vectors of the last ``n - 1`` tokens are concatenated, passed through a hidden layer with a tanh,
and a softmax over the vocabulary gives the next token's distribution:

    y = b + W x + U tanh(d + H x),      x = [C(w_{t-1}), ..., C(w_{t-n+1})],

where the direct connection ``W x`` from the embeddings to the output is optional.  Because
similar tokens get similar vectors, what is learned about one context carries over to similar
ones, which is exactly what a table of counts cannot do.

:class:`MLPLanguageModel` computes this for every position of a sequence at once (positions near
the start see a special *start* token in place of the missing history) and follows the
interface of :mod:`tinylm.train`: ``forward(x, state=None)`` returns ``(logits, None)``.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .vocab import Vocabulary


@dataclass(frozen=True)
class MLPConfig:
    vocab_size: int
    context: int = 5             # n - 1: how many previous tokens the model sees
    embedding: int = 32          # the size m of each token's vector
    hidden: int = 256
    direct: bool = False         # Bengio's optional direct connection W x from embeddings to output
    dropout: float = 0.0


class MLPLanguageModel(nn.Module):
    """P(w_t | w_{t-n+1} .. w_{t-1}) by an MLP over the concatenated embeddings."""

    stateful = False

    def __init__(self, config: MLPConfig):
        super().__init__()
        self.config = config
        self.start = config.vocab_size                            # the id of the start token
        self.embed = nn.Embedding(config.vocab_size + 1, config.embedding)
        width = config.context * config.embedding
        self.hidden = nn.Linear(width, config.hidden)
        self.out = nn.Linear(config.hidden, config.vocab_size)
        self.direct = nn.Linear(width, config.vocab_size, bias=False) if config.direct else None
        self.drop = nn.Dropout(config.dropout)

    def windows(self, x: torch.Tensor) -> torch.Tensor:
        """For each position t, the ids of tokens t-n+2 .. t (the history of token t+1)."""
        padded = F.pad(x, (self.config.context - 1, 0), value=self.start)
        return padded.unfold(1, self.config.context, 1)          # (batch, time, context)

    def forward(self, x: torch.Tensor, state=None):
        """Logits (batch, time, vocab) for the token after each position of ``x``."""
        e = self.embed(self.windows(x)).flatten(2)               # (batch, time, context * embedding)
        e = self.drop(e)
        logits = self.out(self.drop(torch.tanh(self.hidden(e))))
        if self.direct is not None:
            logits = logits + self.direct(e)
        return logits, None

    def to_dict(self) -> dict:
        return asdict(self.config)


# ----------------------------------------------------------------------------- counting parameters

def parameter_count(config: MLPConfig) -> int:
    """The number of parameters of ``MLPLanguageModel(config)``, by formula.

    With V tokens, n - 1 = ``context``, embedding size m and h hidden units:

    - the embedding table C: (V + 1) m, one row per token and one for the start token;
    - the hidden layer H, d: (n - 1) m h + h;
    - the output layer U, b: h V + V;
    - the direct connection W, if any: (n - 1) m V.

    Every term grows *linearly* with the context n - 1, where an n-gram table may need a row
    for each of the V^(n-1) possible contexts.
    """
    V, m, h, width = config.vocab_size, config.embedding, config.hidden, config.context * config.embedding
    total = (V + 1) * m + width * h + h + h * V + V
    if config.direct:
        total += width * V
    return total


# ----------------------------------------------------------------------------- scoring a text

@torch.no_grad()
def log2probs(model: MLPLanguageModel, ids, chunk: int | None = None) -> np.ndarray:
    """log2 P(token_t | the tokens before it) for t = 1 .. len(ids) - 1, each position computed once.

    The same numbers as :func:`tinylm.train.log2probs` gives for an MLP, at half the cost: an
    MLP's prediction depends only on the last n - 1 tokens, so the text can be cut into chunks
    that overlap by just n - 2 tokens (the history the first prediction of a chunk needs), where
    the windows of :func:`tinylm.train.log2probs`, made for models with a long memory, overlap
    by half.  Only the very first predictions of the text see the start token.  ``chunk``
    predictions are computed at a time; by default about a million logits' worth, so that a
    large vocabulary does not need a large block of memory.
    """
    if chunk is None:
        chunk = max(64, 2 ** 20 // model.config.vocab_size)
    if chunk < 1:
        raise ValueError(f"chunk must be positive, got {chunk}")
    ids = torch.as_tensor(np.asarray(ids), dtype=torch.long)
    n = len(ids) - 1                                   # targets ids[1..n] are out[0..n-1]
    history = model.config.context - 1
    out = np.empty(max(n, 0), dtype=np.float64)
    was_training = model.training
    model.eval()
    try:
        for a in range(0, n, chunk):                   # the predictions from positions a .. b-1
            b = min(a + chunk, n)
            s = max(0, a - history)
            logits, _ = model(ids[s:b][None])
            logp = F.log_softmax(logits[0].double(), dim=-1)
            picked = logp.gather(-1, ids[s + 1:b + 1, None])[:, 0] / np.log(2.0)
            out[a:b] = picked[a - s:].numpy()
    finally:
        model.train(was_training)
    return out


# ----------------------------------------------------------------------------- mixing two models

def mix_log2probs(a, b, weight: float) -> np.ndarray:
    """log2 of the mixture ``weight * P_a + (1 - weight) * P_b``, from log2 P_a and log2 P_b.

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


# ----------------------------------------------------------------------------- looking at embeddings

def cosine_similarities(vectors) -> np.ndarray:
    """The matrix of cosine similarities cos(v_i, v_j) = v_i . v_j / (|v_i| |v_j|) between rows."""
    v = np.asarray(vectors, dtype=np.float64)
    unit = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    return unit @ unit.T


def nearest_neighbours(vectors, index: int, k: int = 5, among=None) -> list[int]:
    """The ``k`` rows most similar to row ``index`` by cosine similarity, most similar first.

    ``among`` restricts the candidates to some rows (for example the characters seen often
    enough in training for their vectors to have been learnt); row ``index`` itself is never
    returned.  Ties go to the smaller row number.
    """
    similarity = cosine_similarities(vectors)[index]
    candidates = np.arange(len(similarity)) if among is None else np.asarray(sorted(set(int(i) for i in among)))
    candidates = candidates[candidates != index]
    order = np.lexsort((candidates, -similarity[candidates]))     # by similarity, then by row
    return [int(i) for i in candidates[order[:k]]]


def pca_2d(vectors) -> np.ndarray:
    """Project the rows on their first two principal components (for a plot).

    The rows are centred and the two directions of largest variance found by an SVD.  An
    SVD may return a direction or its opposite; we fix the sign so that the largest
    coordinate along each axis is positive, so the picture does not flip between machines.
    """
    v = np.asarray(vectors, dtype=np.float64)
    centred = v - v.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    points = centred @ vt[:2].T
    for axis in range(points.shape[1]):
        if points[np.argmax(np.abs(points[:, axis])), axis] < 0:
            points[:, axis] *= -1
    return points


# ----------------------------------------------------------------------------- words on a vocabulary cut

WORD_PATTERN = re.compile(r"[a-z]+(?:'[a-z]+)*")
"""A word: lowercase letters, possibly with inner apostrophes (``o'er``, ``i'll``)."""

UNK = "<unk>"
"""The token that stands for every word outside the vocabulary."""


def lowercase_words(text: str) -> list[str]:
    """The words of ``text``, lowercased; punctuation, digits and line breaks are dropped.

    >>> lowercase_words("To be, or not to be: O'er THE hill!")
    ['to', 'be', 'or', 'not', 'to', 'be', "o'er", 'the', 'hill']
    """
    return WORD_PATTERN.findall(text.lower())


def word_vocabulary(words, size: int) -> Vocabulary:
    """The ``size`` most frequent words (ties in alphabetical order), then :data:`UNK`.

    A word model needs a fixed vocabulary, and most words are rare: the cut keeps the frequent
    ones and maps all the others to one token, ``<unk>``, whose probability the model learns
    like any other word's.
    """
    if size < 1:
        raise ValueError(f"a vocabulary needs at least one word, got size={size}")
    counts = Counter(words)
    counts.pop(UNK, None)
    kept = sorted(counts, key=lambda w: (-counts[w], w))[:size]
    return Vocabulary(kept + [UNK])


def encode_words(words, vocab: Vocabulary) -> np.ndarray:
    """Word ids in ``vocab``; a word outside it gets the id of :data:`UNK`."""
    unk = vocab.index[UNK]
    return np.fromiter((vocab.index.get(w, unk) for w in words), dtype=np.int64)
