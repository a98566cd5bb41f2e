r"""Word vectors (词向量): word2vec's skip-gram with negative sampling, and PPMI + SVD.

An n-gram model treats every word as a separate symbol: having seen "the king's crown" tells it
nothing about "the queen's crown".  A **word vector** or **word embedding** (词嵌入) gives every
word a point in $\mathbb{R}^d$, with $d$ a few dozen to a few hundred, so that words used in
similar ways get nearby points.  The idea that makes this possible is the **distributional
hypothesis** (分布假设): words that occur in similar contexts tend to have similar meanings
(Harris 1954; "you shall know a word by the company it keeps", Firth 1957).

This module learns such vectors from raw text in two ways, and gives the tools to inspect them.

Skip-gram with negative sampling (SGNS, word2vec; Mikolov et al. 2013a, 2013b)
    Every word $w$ has two vectors: an *input* (center) vector $v_w$ and an *output* (context)
    vector $u_w$.  The **skip-gram** (跳字模型) task is: given a center word $c$, say whether a
    word $o$ really occurred near it.  For every true pair $(c, o)$ taken from the text, draw $K$
    **negative** (负样本) words $n_1 \dots n_K$ at random from a noise distribution and minimise

        L = -log σ(u_o · v_c) - Σ_k log σ(-u_{n_k} · v_c),          σ(x) = 1 / (1 + e^{-x}),

    a logistic regression that tells the true context from the noise.  Its gradients are short
    enough to write by hand (:func:`sgns_loss_and_grads`):

        ∂L/∂v_c = (σ(u_o·v_c) - 1) u_o + Σ_k σ(u_{n_k}·v_c) u_{n_k}
        ∂L/∂u_o = (σ(u_o·v_c) - 1) v_c,          ∂L/∂u_{n_k} = σ(u_{n_k}·v_c) v_c.

    **Negative sampling** (负采样) replaces the softmax over the whole vocabulary, which would
    cost $V$ dot products per pair, by $K + 1$ of them.  The noise distribution is the unigram
    distribution raised to the power 3/4 (:func:`noise_distribution`), which gives rare words a
    little more of a chance than their frequency.

    **CBOW** (连续词袋模型, continuous bag of words) turns the task around: the *mean* of the
    input vectors of the context words predicts the center word, with the same loss.  It is
    faster (one prediction per center instead of one per pair) and slightly worse for rare
    words.  ``train(..., architecture="cbow")`` trains it.

Two tricks from the word2vec paper
    *Subsampling* (下采样) of frequent words: each occurrence of a word with relative frequency
    $f$ is dropped with probability $1 - \sqrt{t / f}$ (:func:`keep_probabilities`), so "the"
    and "and" stop dominating the training pairs and the windows reach further.  *Dynamic
    windows*: for each center word the window size is drawn uniformly from 1..``window``, so
    near neighbours are used more often than far ones (:func:`skipgram_pairs`).

Counting instead of predicting: PPMI + SVD (Levy, Goldberg & Dagan 2015)
    Count how often each word $w$ occurs near each context word $c$ (:func:`cooccurrence`) and
    measure association by **pointwise mutual information** (点互信息, Church & Hanks 1990),

        PMI(w, c) = log P(w, c) / (P(w) P(c)),

    the log of how much more often the two occur together than if they were independent.  Keep
    only the positive values (PPMI; a negative PMI estimated from a few counts is mostly
    noise), and smooth the context distribution with the same power 3/4 as the noise
    distribution (:func:`ppmi`).  Each row of this $V \times V$ matrix is already a (long,
    sparse) word vector; a truncated **singular value decomposition** (奇异值分解, SVD)
    compresses it to $d$ dimensions (:func:`svd_vectors`).  Levy and Goldberg showed that SGNS
    implicitly factorises a shifted PMI matrix, $u_c \cdot v_w \approx \mathrm{PMI}(w, c) - \log K$,
    so the two methods are closer than they look.

Using the vectors
    :class:`WordVectors` finds nearest neighbours by cosine similarity, answers analogies
    a : b :: c : ? by 3CosAdd, $\arg\max_x \cos(x, b - a + c)$ over all words except a, b and c
    (Mikolov, Yih & Zweig 2013; without the exclusion the answer is nearly always b or c, Linzen
    2016), and projects words to two dimensions with PCA; :func:`plot_words` draws them.

Everything is numpy in float64, with an explicit ``numpy.random.Generator``, so training with the
same seed on the same machine gives the same vectors bit for bit.  Training never uses a matrix
product (whose rounding could depend on the number of BLAS threads), only element-wise numpy,
``einsum`` and ``ufunc.at``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..analysis.embeddings import pca_2d, unit_rows
from ..tokenizers.symbols import WordTokenizer, most_frequent


# --------------------------------------------------------------------------- text to ids

def build_vocabulary(tokens: Iterable[str], size: int) -> tuple[WordTokenizer, np.ndarray]:
    """The ``size`` most frequent words (ties: alphabetical) as a tokenizer, and their counts,
    most frequent first.

    The tokenizer *drops* words outside the vocabulary (word2vec's choice) rather than mapping
    them to an unknown word: an ``<unk>`` vector would be a meaningless average.  Cut a text into
    words with :func:`tinylm.tokenizers.words`.

    >>> vocab, counts = build_vocabulary("b a b c b a".split(), size=2)
    >>> vocab.symbols, counts.tolist(), vocab.encode("a c b".split())
    (['b', 'a'], [3, 2], [1, 0])
    """
    kept = most_frequent(tokens, size)
    return WordTokenizer([w for w, _ in kept], drop_unknown=True), np.array([c for _, c in kept], dtype=np.int64)


def keep_probabilities(counts: np.ndarray, threshold: float = 1e-4) -> np.ndarray:
    r"""Probability of keeping each occurrence of each word: $\min(1, \sqrt{t / f})$.

    $f$ is the word's relative frequency and $t$ the ``threshold``: words rarer than $t$ are
    always kept, a word 100 times more frequent than $t$ is kept one time in ten.  (The paper
    writes the discard probability $1 - \sqrt{t/f}$; the released C code uses a slightly
    different formula, $\sqrt{t/f} + t/f$.)
    """
    f = np.asarray(counts, dtype=np.float64) / np.sum(counts)
    return np.minimum(1.0, np.sqrt(threshold / f))


def subsample(ids: np.ndarray, keep: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Drop each occurrence of word ``i`` with probability ``1 - keep[i]``, independently."""
    ids = np.asarray(ids, dtype=np.int64)
    return ids[rng.random(len(ids)) < keep[ids]]


def window_positions(n: int, window: int, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """All (center position, context position) pairs of a text of ``n`` tokens.

    With ``rng=None`` every center uses the full ``window`` on each side; with a generator, each
    center draws its own window size uniformly from 1..``window`` (word2vec's dynamic window),
    so a context word at distance $d$ is used with probability $(w - d + 1)/w$.
    Pairs are sorted by center position, then by context position.
    """
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    span = np.full(n, window, dtype=np.int64) if rng is None else rng.integers(1, window + 1, size=n)
    offsets = np.concatenate([np.arange(-window, 0), np.arange(1, window + 1)])
    pos = np.arange(n)[:, None]
    ctx = pos + offsets[None, :]
    ok = (np.abs(offsets)[None, :] <= span[:, None]) & (ctx >= 0) & (ctx < n)
    centers = np.broadcast_to(pos, ctx.shape)[ok]
    return centers, ctx[ok]


def skipgram_pairs(ids: np.ndarray, window: int, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The skip-gram training pairs (center id, context id), in text order.

    >>> c, o = skipgram_pairs(np.array([10, 11, 12]), window=1)
    >>> list(zip(c.tolist(), o.tolist()))
    [(10, 11), (11, 10), (11, 12), (12, 11)]
    """
    ids = np.asarray(ids, dtype=np.int64)
    centers, contexts = window_positions(len(ids), window, rng)
    return ids[centers], ids[contexts]


def noise_distribution(counts: np.ndarray, power: float = 0.75) -> np.ndarray:
    r"""The negative-sampling distribution $P_n(w) \propto \mathrm{count}(w)^{3/4}$."""
    p = np.asarray(counts, dtype=np.float64) ** power
    return p / p.sum()


def sample_negatives(noise: np.ndarray, shape, rng: np.random.Generator) -> np.ndarray:
    """Word ids drawn independently from ``noise`` (inverse-CDF sampling with one search)."""
    cdf = np.cumsum(noise)
    cdf /= cdf[-1]
    return np.minimum(np.searchsorted(cdf, rng.random(shape), side="right"), len(noise) - 1)


# --------------------------------------------------------------------------- the loss

def sigmoid(x: np.ndarray) -> np.ndarray:
    """σ(x) = 1 / (1 + e^{-x}), computed without overflow for large |x|."""
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def log_sigmoid(x: np.ndarray) -> np.ndarray:
    """log σ(x) = -log(1 + e^{-x}), stable for large |x|."""
    x = np.asarray(x, dtype=np.float64)
    return np.minimum(x, 0.0) - np.log1p(np.exp(-np.abs(x)))


def sgns_loss_and_grads(v: np.ndarray, u_pos: np.ndarray, u_neg: np.ndarray):
    r"""Negative-sampling loss of (center, context, negatives) examples and its gradients.

    ``v``: center vectors, shape (d,) or (B, d); ``u_pos``: context vectors, same shape;
    ``u_neg``: negative vectors, shape (K, d) or (B, K, d).  Returns ``(loss, grad_v,
    grad_pos, grad_neg)``: the loss summed over the batch, and its gradient with respect to
    each input (same shapes as the inputs).  With $s_o = u_o \cdot v$, $s_k = u_{n_k} \cdot v$:

        L = -log σ(s_o) - Σ_k log σ(-s_k)
        ∂L/∂v = (σ(s_o) - 1) u_o + Σ_k σ(s_k) u_{n_k}
        ∂L/∂u_o = (σ(s_o) - 1) v,   ∂L/∂u_{n_k} = σ(s_k) v
    """
    v, u_pos, u_neg = (np.asarray(a, dtype=np.float64) for a in (v, u_pos, u_neg))
    s_pos = np.einsum("...d,...d->...", v, u_pos)                     # (B,) or ()
    s_neg = np.einsum("...d,...kd->...k", v, u_neg)                   # (B, K) or (K,)
    loss = -(log_sigmoid(s_pos).sum() + log_sigmoid(-s_neg).sum())
    g_pos = sigmoid(s_pos) - 1.0                                      # ∂L/∂s_o
    g_neg = sigmoid(s_neg)                                            # ∂L/∂s_k
    grad_v = g_pos[..., None] * u_pos + np.einsum("...k,...kd->...d", g_neg, u_neg)
    grad_pos = g_pos[..., None] * v
    grad_neg = g_neg[..., None] * v[..., None, :]
    return float(loss), grad_v, grad_pos, grad_neg


def _scatter_add(table: np.ndarray, rows: np.ndarray, values: np.ndarray) -> None:
    """``table[rows[i]] += values[i]`` for every i, repeated rows adding up.

    ``np.add.at`` on the flattened table: much faster than on rows of a 2-D table, and, unlike
    ``table[rows] += values``, it does not lose the updates of repeated rows."""
    d = table.shape[1]
    flat = (rows.reshape(-1, 1) * d + np.arange(d)).reshape(-1)
    np.add.at(table.reshape(-1), flat, values.reshape(-1))


# --------------------------------------------------------------------------- training

@dataclass
class TrainingLog:
    """What :func:`train` did: the mean loss per training example over stretches of training."""

    architecture: str
    pairs_per_epoch: list[int] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)          # examples seen at the end of each stretch
    losses: list[float] = field(default_factory=list)       # mean loss per example in that stretch


def train(ids: np.ndarray, counts: np.ndarray, dim: int = 100, window: int = 5, negatives: int = 5,
          epochs: int = 1, lr: float = 0.025, min_lr: float = 1e-4, batch_size: int = 1024,
          subsample_threshold: float | None = 1e-4, architecture: str = "skipgram", seed: int = 0,
          log_every: int = 100):
    """Train word2vec on a text of word ids; return ``(input vectors, output vectors, log)``.

    ``counts`` are the vocabulary's counts (for subsampling and the noise distribution).  Each
    epoch subsamples the text afresh, draws dynamic windows, shuffles the examples and runs
    mini-batch SGD with a learning rate falling linearly from ``lr`` to ``min_lr`` over all
    epochs.  Gradients are summed over the batch, not averaged, so ``lr`` means what it means
    in word2vec's one-pair-at-a-time SGD.  Input vectors start uniform in ±0.5/d, output
    vectors at zero, as in word2vec; the input vectors are the word vectors one keeps.

    ``architecture="skipgram"``: one example per (center, context) pair.
    ``architecture="cbow"``: one example per center word, predicted from the mean $h$ of its
    context words' input vectors.  The exact gradient reaching each context word would be
    ∂L/∂h divided by their number; like word2vec's code, we add the whole ∂L/∂h to each of them
    (a larger step for the input vectors, which otherwise learn slowly).
    """
    if architecture not in ("skipgram", "cbow"):
        raise ValueError(f"architecture must be 'skipgram' or 'cbow', got {architecture!r}")
    ids = np.asarray(ids, dtype=np.int64)
    V = len(counts)
    rng = np.random.default_rng(seed)
    W_in = (rng.random((V, dim)) - 0.5) / dim
    W_out = np.zeros((V, dim))
    noise = noise_distribution(counts)
    keep = keep_probabilities(counts, subsample_threshold) if subsample_threshold else np.ones(V)
    log = TrainingLog(architecture)

    # the examples of every epoch, drawn first so that the learning rate can fall over all of them
    plans = []
    for _ in range(epochs):
        text = subsample(ids, keep, rng)
        centers, contexts = window_positions(len(text), window, rng)
        if architecture == "skipgram":
            order = rng.permutation(len(centers))
            plans.append((text[centers[order]], text[contexts[order]]))
        else:
            starts = np.flatnonzero(np.r_[True, centers[1:] != centers[:-1]])   # one group per center
            plans.append((text, centers, contexts, starts, rng.permutation(len(starts))))
        log.pairs_per_epoch.append(int(len(centers)))
    total = sum(len(p[0]) if architecture == "skipgram" else len(p[3]) for p in plans)

    seen, stretch_loss, stretch_n, batch_no = 0, 0.0, 0, 0
    for plan in plans:
        n_examples = len(plan[0]) if architecture == "skipgram" else len(plan[3])
        for start in range(0, n_examples, batch_size):
            rate = lr - (lr - min_lr) * seen / total
            stop = min(start + batch_size, n_examples)
            negs = sample_negatives(noise, (stop - start, negatives), rng)
            if architecture == "skipgram":
                c, o = plan[0][start:stop], plan[1][start:stop]
                loss, g_v, g_pos, g_neg = sgns_loss_and_grads(W_in[c], W_out[o], W_out[negs])
                _scatter_add(W_in, c, -rate * g_v)
            else:
                c, h, members, sizes = _cbow_batch(W_in, plan, start, stop)
                loss, g_h, g_pos, g_neg = sgns_loss_and_grads(h, W_out[c], W_out[negs])
                _scatter_add(W_in, members, -rate * np.repeat(g_h, sizes, axis=0))
                o = c
            _scatter_add(W_out, o, -rate * g_pos)
            _scatter_add(W_out, negs, -rate * g_neg)
            seen += stop - start
            stretch_loss += loss
            stretch_n += stop - start
            batch_no += 1
            if batch_no % log_every == 0 or seen == total:
                log.steps.append(seen)
                log.losses.append(stretch_loss / stretch_n)
                stretch_loss, stretch_n = 0.0, 0
    return W_in, W_out, log


def _cbow_batch(W_in, plan, start, stop):
    """Centers ``start:stop`` (in shuffled order) of a CBOW epoch: their ids, the mean input vector
    of each one's context, the ids of those context words, and how many each has."""
    text, centers, contexts, starts, order = plan
    ends = np.r_[starts[1:], len(centers)]
    groups = order[start:stop]
    sizes = ends[groups] - starts[groups]
    pair_index = np.repeat(starts[groups] - np.r_[0, np.cumsum(sizes)[:-1]], sizes) + np.arange(sizes.sum())
    members = text[contexts[pair_index]]
    sums = np.add.reduceat(W_in[members], np.r_[0, np.cumsum(sizes)[:-1]], axis=0)
    return text[centers[starts[groups]]], sums / sizes[:, None], members, sizes


# --------------------------------------------------------------------------- counting: PPMI + SVD

def cooccurrence(ids: np.ndarray, vocab_size: int, window: int = 5, weighted: bool = True) -> np.ndarray:
    """The V x V matrix of how often word i occurs within ``window`` words of word j.

    With ``weighted=True`` a pair at distance $d$ counts $(w - d + 1)/w$: exactly how often, on
    average, word2vec's dynamic window uses it, so both methods see the same contexts.
    The matrix is symmetric.  (One ``np.bincount`` over the keys ``i * V + j`` of all pairs, in
    both directions, so that only one V x V array is ever allocated.  It adds the integer
    weights $w - d + 1$, which float64 adds exactly in any order, and divides by $w$ once.)
    """
    ids = np.asarray(ids, dtype=np.int64)
    keys, weights = [], []
    for d in range(1, window + 1):
        left, right = ids[:-d], ids[d:]
        keys += [left * vocab_size + right, right * vocab_size + left]
        weights.append(np.full(2 * len(left), float(window - d + 1) if weighted else 1.0))
    counts = np.bincount(np.concatenate(keys), weights=np.concatenate(weights), minlength=vocab_size * vocab_size)
    if weighted:
        counts /= window
    return counts.reshape(vocab_size, vocab_size)


def ppmi(counts: np.ndarray, alpha: float = 0.75) -> np.ndarray:
    r"""Positive pointwise mutual information of a word-by-context count matrix.

    $\mathrm{PPMI}(w, c) = \max(0, \log \frac{P(w, c)}{P(w)\, P_\alpha(c)})$ with
    $P(w, c) = n_{wc} / N$, $P(w) = n_{w\cdot} / N$ and the smoothed context distribution
    $P_\alpha(c) = n_{\cdot c}^\alpha / \sum_{c'} n_{\cdot c'}^\alpha$ (Levy et al. 2015;
    ``alpha=1`` is plain PPMI).  Cells with a zero count get 0.  Computed in place in one new
    array, because a vocabulary of 5,000 words makes a 200 MB matrix.
    """
    n = np.asarray(counts, dtype=np.float64)
    total = n.sum()
    p_w = n.sum(axis=1) / total
    context = n.sum(axis=0) ** alpha
    p_c = context / context.sum()
    seen = n > 0
    out = np.divide(n, total)
    np.log(out, out=out, where=seen)                          # log P(w, c) where the count is > 0
    with np.errstate(divide="ignore"):
        out -= np.log(p_w)[:, None]
        out -= np.log(p_c)[None, :]
    np.maximum(out, 0.0, out=out)
    out[~seen] = 0.0
    return out


def truncated_svd(M: np.ndarray, k: int, oversample: int = 20, power_iterations: int = 4, seed: int = 0):
    """The ``k`` largest singular values and vectors of ``M``: ``(U, S, Vt)`` with ``M ≈ U diag(S) Vt``.

    Randomised SVD (Halko, Martinsson & Tropp 2011): multiply M by a random matrix to find a
    small basis Q for the space its top singular vectors span (a few power iterations sharpen it),
    then take the exact SVD of the small matrix Qᵀ M.  For a few-thousand-square matrix this
    takes a fraction of a second where ``np.linalg.svd`` takes a minute.  Signs are fixed so that
    the largest entry of each column of U is positive, which makes the result reproducible.
    """
    M = np.asarray(M, dtype=np.float64)
    rng = np.random.default_rng(seed)
    Q = M @ rng.standard_normal((M.shape[1], min(k + oversample, min(M.shape))))
    for _ in range(power_iterations):
        Q, _ = np.linalg.qr(Q)
        Q, _ = np.linalg.qr(M.T @ Q)
        Q = M @ Q
    Q, _ = np.linalg.qr(Q)
    Ub, S, Vt = np.linalg.svd(Q.T @ M, full_matrices=False)
    U = Q @ Ub
    U, S, Vt = U[:, :k], S[:k], Vt[:k]
    sign = np.sign(U[np.argmax(np.abs(U), axis=0), np.arange(U.shape[1])])
    return U * sign, S, Vt * sign[:, None]


def svd_vectors(M: np.ndarray, dim: int, power: float = 0.5, seed: int = 0) -> np.ndarray:
    r"""Word vectors $U_d \Sigma_d^{p}$ from the truncated SVD of a (PPMI) matrix.

    ``power=1`` is the best rank-d approximation's own scaling; Levy et al. (2015) found
    ``0.5`` (or 0) better for similarity tasks.
    """
    U, S, _ = truncated_svd(M, dim, seed=seed)
    return U * S ** power


# --------------------------------------------------------------------------- using the vectors

_LABEL_OFFSETS = [(4, 3, "left", "bottom"), (4, -3, "left", "top"), (-4, 3, "right", "bottom"),
                  (-4, -3, "right", "top"), (0, 6, "center", "bottom"), (0, -6, "center", "top"),
                  (8, 0, "left", "center"), (-8, 0, "right", "center"), (10, 12, "left", "bottom"),
                  (-10, 12, "right", "bottom"), (10, -12, "left", "top"), (-10, -12, "right", "top")]


def plot_words(ax, xy, words: Sequence[str], groups: Sequence[str], fontsize: float = 8) -> None:
    """Scatter 2-D word coordinates coloured by group, with labels placed so they do not overlap.

    Each label tries a dozen positions around its point and keeps the one that overlaps the
    labels already placed (and the points) least: a small greedy version of what label-placement
    libraries do, enough for a few dozen words.  Labels are placed in screen coordinates, so set
    the title and axis labels first: this function lays the figure out (``tight_layout``) and
    fixes the axis limits before it places them.
    """
    xy = np.asarray(xy, dtype=np.float64)
    for group in dict.fromkeys(groups):
        pts = xy[[g == group for g in groups]]
        ax.scatter(pts[:, 0], pts[:, 1], s=16, label=group, zorder=2)
    ax.margins(0.1)
    ax.figure.tight_layout()
    ax.figure.canvas.draw()
    ax.set_xlim(ax.get_xlim())
    ax.set_ylim(ax.get_ylim())
    renderer = ax.figure.canvas.get_renderer()
    points = ax.transData.transform(xy)
    boxes = [np.array([x - 3, y - 3, x + 3, y + 3]) for x, y in points]

    def overlap(box):
        return sum(max(0.0, min(box[2], b[2]) - max(box[0], b[0])) * max(0.0, min(box[3], b[3]) - max(box[1], b[1]))
                   for b in boxes)

    for (x, y), word in zip(xy, words):
        best = None
        for dx, dy, ha, va in _LABEL_OFFSETS:
            text = ax.annotate(word, (x, y), xytext=(dx, dy), textcoords="offset points",
                               ha=ha, va=va, fontsize=fontsize)
            extent = text.get_window_extent(renderer)
            box = np.array([extent.x0, extent.y0, extent.x1, extent.y1])
            score = overlap(box)
            if best is None or score < best[0]:
                if best is not None:
                    best[1].remove()
                best = (score, text, box)
            else:
                text.remove()
            if score == 0:
                break
        boxes.append(best[2])


@dataclass
class WordVectors:
    """A vocabulary and one vector per word, with the usual ways of looking at them.

    >>> wv = WordVectors(WordTokenizer(["a", "b", "c", "d"]), np.array([[1., 0], [1, 1], [0, 1], [-1, 0]]))
    >>> [w for w, _ in wv.neighbours("a", 2)]
    ['b', 'c']
    >>> wv.analogy("a", "b", "d")            # b - a + d = (-1, 1): closest remaining word is c
    'c'
    """

    vocab: WordTokenizer
    vectors: np.ndarray

    def __post_init__(self):
        self.vectors = np.asarray(self.vectors, dtype=np.float64)
        if self.vectors.shape[0] != len(self.vocab):
            raise ValueError(f"{self.vectors.shape[0]} vectors for {len(self.vocab)} words")
        self.unit = unit_rows(self.vectors)

    def __contains__(self, word: str) -> bool:
        return word in self.vocab

    def __getitem__(self, word: str) -> np.ndarray:
        return self.vectors[self._id(word)]

    def _id(self, word: str) -> int:
        try:
            return self.vocab.index[word]
        except KeyError:
            raise KeyError(f"{word!r} is not in the vocabulary of {len(self.vocab)} words") from None

    def similarity(self, a: str, b: str) -> float:
        """Cosine similarity of two words' vectors."""
        return float(self.unit[self._id(a)] @ self.unit[self._id(b)])

    def _ranked(self, target: np.ndarray, exclude: Sequence[int], k: int) -> list[tuple[str, float]]:
        scores = self.unit @ unit_rows(target[None, :])[0]
        scores[list(exclude)] = -np.inf
        top = np.argsort(-scores, kind="stable")[:k]
        return [(self.vocab.symbols[i], float(scores[i])) for i in top]

    def neighbours(self, word: str, k: int = 10) -> list[tuple[str, float]]:
        """The ``k`` words with the highest cosine similarity to ``word`` (itself excluded)."""
        i = self._id(word)
        return self._ranked(self.unit[i], [i], k)

    def analogy(self, a: str, b: str, c: str, k: int = 1):
        """a : b :: c : ?  by 3CosAdd: the word x (not a, b or c) maximising cos(x, b̂ - â + ĉ).

        Returns the best word, or the ``k`` best ``(word, score)`` pairs when ``k > 1``."""
        ia, ib, ic = (self._id(w) for w in (a, b, c))
        ranked = self._ranked(self.unit[ib] - self.unit[ia] + self.unit[ic], [ia, ib, ic], k)
        return ranked[0][0] if k == 1 else ranked

    def analogy_accuracy(self, items: Iterable[Sequence[str]]) -> tuple[float, list[str]]:
        """Share of analogies ``(a, b, c, d)`` answered with ``d``, and the answers given."""
        items = [tuple(item) for item in items]
        answers = [self.analogy(a, b, c) for a, b, c, _ in items]
        correct = sum(ans == item[3] for ans, item in zip(answers, items))
        return correct / len(items), answers

    def project(self, words: Sequence[str]) -> np.ndarray:
        """2-D PCA coordinates of the given words (their unit vectors), one row per word."""
        return pca_2d(self.unit[[self._id(w) for w in words]])
