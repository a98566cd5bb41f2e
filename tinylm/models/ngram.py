r"""N-gram language models with add-k, interpolated and Kneser-Ney smoothing.

An n-gram model makes the Markov assumption: the next token depends only on the previous
n-1 tokens, its *context* h.  It estimates P(w | h) from counts in the training text.

How the counts are stored (and why it is fast)
    Tokens are integers 0..V-1.  A k-gram is (its first k-1 tokens, its last token).  We
    number the distinct k-grams of the training text order by order: the key of a k-gram is
    ``id(prefix (k-1)-gram) * V + last token``, a single int64, and ``np.unique`` over the
    keys of every position gives each distinct k-gram an id, its count, and (through the
    id of the (k-1)-gram that ends at the same position) its suffix.  Scoring a text
    looks its k-grams up with ``np.searchsorted``.  No Python loop runs over n-grams: a
    6-gram model of four million characters fits in a few seconds.

Smoothing
    ``"mle"``          maximum likelihood, c(h w) / c(h); zero for anything unseen.
    ``"add-k"``        (c(h w) + k) / (c(h) + k V) at the highest order only.
    ``"interpolated"`` Jelinek-Mercer: λ·MLE_k + (1-λ)·P_{k-1}, down to the uniform 1/V.
    ``"kneser-ney"``   interpolated Kneser-Ney with the three discounts of Chen and Goodman
                       (modified KN): absolute discounting at every order, and lower orders
                       estimated from *continuation counts* N1+(• h w), the number of
                       distinct tokens seen before h w, not from raw counts.

For every method and every position, the probabilities of all V tokens sum to one
(``next_distribution`` lets you check that).

The model follows the course's model protocol (:mod:`tinylm.models.base`): its ``forward``
gives log-probabilities as logits and carries the last n - 1 tokens as its state, so
:func:`tinylm.generate` samples from it like from any other model, and :func:`tinylm.score`
scores a text with :meth:`NGramModel.log2probs`, which looks every n-gram up at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .base import Config, LanguageModel

METHODS = ("mle", "add-k", "interpolated", "kneser-ney")


@dataclass(frozen=True)
class NGramConfig(Config):
    """An n-gram model's order, vocabulary and smoothing (see the module docstring)."""

    order: int
    vocab_size: int
    method: str = "kneser-ney"
    k: float = 1.0                             # add-k's k
    lambdas: tuple[float, ...] = (0.7,)        # interpolation weights: one for all orders, or one per order

    def __post_init__(self):
        if self.order < 1:
            raise ValueError(f"order must be at least 1, got {self.order}")
        if self.vocab_size < 1:
            raise ValueError(f"vocab_size must be at least 1, got {self.vocab_size}")
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {METHODS}")
        if self.k < 0:
            raise ValueError(f"k must be non-negative, got {self.k}")
        lambdas = tuple(float(x) for x in self.lambdas)
        if len(lambdas) == 1:
            lambdas = lambdas * self.order
        if len(lambdas) != self.order or not all(0 <= x <= 1 for x in lambdas):
            raise ValueError(f"lambdas must be one value or {self.order} values in [0, 1]")
        object.__setattr__(self, "lambdas", lambdas)


@dataclass
class _Order:
    """The statistics of all distinct k-grams for one k."""

    keys: np.ndarray       # sorted int64 keys: prefix id * V + last token
    counts: np.ndarray     # how often each k-gram occurs in the training text
    prefix: np.ndarray     # id of each k-gram's first k-1 tokens in the (k-1) table
    suffix: np.ndarray     # id of each k-gram's last k-1 tokens in the (k-1) table


def _ids_ending_at(keys: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Position of each query key in the sorted ``keys``, or -1 when absent."""
    if len(keys) == 0:
        return np.full(len(query), -1, dtype=np.int64)
    pos = np.searchsorted(keys, query)
    pos_clipped = np.minimum(pos, len(keys) - 1)
    return np.where(keys[pos_clipped] == query, pos_clipped, -1)


def _shift(ids: np.ndarray) -> np.ndarray:
    """ids[i-1] at position i (and -1 at position 0): the gram that ends just before."""
    out = np.empty_like(ids)
    out[0] = -1
    out[1:] = ids[:-1]
    return out


class NGramModel(LanguageModel):
    """An n-gram language model over integer tokens 0..V-1.

    >>> import numpy as np
    >>> m = NGramModel(order=2, vocab_size=3, method="add-k", k=1.0).fit(np.array([0, 1, 0, 1, 2]))
    >>> round(float(m.next_distribution([0])[1]), 3)   # (2 + 1) / (2 + 3)
    0.6
    """

    def __init__(self, order: int, vocab_size: int, method: str = "kneser-ney",
                 k: float = 1.0, lambdas: float | tuple[float, ...] = 0.7):
        lambdas = (lambdas,) if np.isscalar(lambdas) else tuple(lambdas)
        self.config = NGramConfig(order, vocab_size, method, k, lambdas)
        self.order, self.V, self.method, self.k = order, vocab_size, method, k
        self.lambdas = list(self.config.lambdas)
        self.orders: list[_Order] = []

    @classmethod
    def from_config(cls, config: NGramConfig) -> "NGramModel":
        return cls(**config.to_dict())

    # ------------------------------------------------------------------ counting

    def fit(self, ids) -> "NGramModel":
        """Count every k-gram (k = 1..order) of the training sequence ``ids``."""
        ids = self._check_ids(ids)
        n, V = len(ids), self.V
        self.orders = []
        ending = np.zeros(n, dtype=np.int64)          # order 0: the empty context, id 0
        for k in range(1, self.order + 1):
            prev = ending if k == 1 else _shift(ending)
            start = k - 1                              # the first position with a whole k-gram
            keys = prev[start:] * V + ids[start:]
            uniq, first, inverse, counts = np.unique(keys, return_index=True,
                                                     return_inverse=True, return_counts=True)
            if k == 1:
                suffix = np.zeros(len(uniq), dtype=np.int64)
            else:
                suffix = ending[first + start]           # the (k-1)-gram ending where it ends
            self.orders.append(_Order(uniq, counts.astype(np.int64), uniq // V, suffix))
            ending = np.full(n, -1, dtype=np.int64)
            ending[start:] = inverse.reshape(-1)
        self._prepare()
        return self

    def _prepare(self) -> None:
        """Precompute, per order, the counts each method uses and their sums per context."""
        self._used, self._total, self._gamma, self._discount_by_order = [], [], [], {}
        for k, table in enumerate(self.orders, start=1):
            used = table.counts
            if self.method == "kneser-ney" and k < self.order:
                used = self._continuation_counts(k)
            n_contexts = 1 if k == 1 else len(self.orders[k - 2].keys)
            total = np.bincount(table.prefix, weights=used, minlength=n_contexts)
            gamma = np.zeros(n_contexts)
            if self.method == "kneser-ney":
                discount = self._discounts(used)
                for c, d in enumerate(discount, start=1):
                    has = (used == c) if c < 3 else (used >= 3)
                    gamma += d * np.bincount(table.prefix, weights=has, minlength=n_contexts)
                self._discount_by_order[k] = discount
            self._used.append(used.astype(np.float64))
            self._total.append(total)
            self._gamma.append(gamma)

    def _continuation_counts(self, k: int) -> np.ndarray:
        """N1+(• g) for every k-gram g: how many distinct tokens precede it in the text."""
        above = self.orders[k]                          # the (k+1)-grams
        return np.bincount(above.suffix, minlength=len(self.orders[k - 1].keys)).astype(np.int64)

    @staticmethod
    def _discounts(counts: np.ndarray) -> tuple[float, float, float]:
        """Chen and Goodman's D1, D2, D3+ from the counts-of-counts n1..n4."""
        n1, n2, n3, n4 = (np.sum(counts == c) for c in (1, 2, 3, 4))
        if n1 == 0 or n2 == 0:                         # too little data to estimate: a fixed 0.75
            return (0.75, 0.75, 0.75)
        y = n1 / (n1 + 2 * n2)
        d = [1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / max(n3, 1)]
        return tuple(float(np.clip(x, 0.0, c)) for c, x in enumerate(d, start=1))

    # ------------------------------------------------------------------ probabilities

    def _mix(self, k: int, context: np.ndarray, gram: np.ndarray, lower: np.ndarray) -> np.ndarray:
        """P_k(w | h) for each item, given the context id h, the k-gram id (h w) and P_{k-1}.

        Ids are -1 where the context or the k-gram never occurred in training.
        """
        used, total, gamma = self._used[k - 1], self._total[k - 1], self._gamma[k - 1]
        seen = context >= 0
        ctx = np.where(seen, context, 0)
        denom = np.where(seen, total[ctx], 0.0)
        count = np.where(gram >= 0, used[np.maximum(gram, 0)], 0.0)
        known = denom > 0
        safe = np.where(known, denom, 1.0)
        if self.method == "kneser-ney":
            d1, d2, d3 = self._discount_by_order[k]
            discount = np.select([count == 0, count == 1, count == 2], [0.0, d1, d2], d3)
            p = (np.maximum(count - discount, 0.0) + gamma[ctx] * lower) / safe
        elif self.method == "interpolated":
            lam = self.lambdas[k - 1]
            p = lam * count / safe + (1 - lam) * lower
        else:  # mle and add-k use the highest order alone
            return lower
        return np.where(known, p, lower)

    def _highest_only(self, context: np.ndarray, gram: np.ndarray) -> np.ndarray:
        """MLE or add-k at the highest order: (c(h w) + k) / (c(h) + k V).

        MLE is undefined for a context never seen in training; it gets the uniform 1/V.
        """
        k = self.k if self.method == "add-k" else 0.0
        used, total = self._used[-1], self._total[-1]
        seen = context >= 0
        denom = np.where(seen, total[np.maximum(context, 0)], 0.0) + k * self.V
        count = np.where(gram >= 0, used[np.maximum(gram, 0)], 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(denom > 0, (count + k) / np.where(denom > 0, denom, 1.0), 1.0 / self.V)

    def _chain(self, contexts: list[np.ndarray], grams: list[np.ndarray]) -> np.ndarray:
        """Combine the orders: ``contexts[k-1]``/``grams[k-1]`` are the ids for order k."""
        if self.method in ("mle", "add-k"):
            return self._highest_only(contexts[-1], grams[-1])
        p = np.full(len(grams[0]), 1.0 / self.V)
        for k in range(1, self.order + 1):
            p = self._mix(k, contexts[k - 1], grams[k - 1], p)
        return p

    def _lookup(self, ids: np.ndarray) -> list[np.ndarray]:
        """For each order k, the id of the training k-gram ending at each position (or -1)."""
        n, V = len(ids), self.V
        ending = np.zeros(n, dtype=np.int64)
        found = []
        for k, table in enumerate(self.orders, start=1):
            prev = ending if k == 1 else _shift(ending)
            ok = prev >= 0
            ending = np.where(ok, _ids_ending_at(table.keys, np.maximum(prev, 0) * V + ids), -1)
            found.append(ending)
        return found

    def log2probs(self, ids) -> np.ndarray:
        """log2 P(ids[t] | ids[:t]) for t = 1 .. len(ids) - 1, every n-gram looked up at once.

        This is what :func:`tinylm.score` returns for an n-gram; like every model's score it
        leaves out the first token, which has no context."""
        self._check_fitted()
        ids = self._check_ids(ids)
        grams = self._lookup(ids)
        contexts = [np.zeros(len(ids), dtype=np.int64)] + [_shift(g) for g in grams[:-1]]
        with np.errstate(divide="ignore"):
            return np.log2(self._chain(contexts, grams))[1:]

    def next_distribution(self, context) -> np.ndarray:
        """P(w | context) for all V tokens w, given the tokens so far (only the last n-1 matter)."""
        self._check_fitted()
        context = self._check_ids(context, allow_empty=True)
        history = context[max(len(context) - (self.order - 1), 0):]
        words = np.arange(self.V, dtype=np.int64)
        contexts, grams = [], []
        for k in range(1, self.order + 1):
            # the context of order k is the last k-1 tokens, if there are that many
            ctx = self._gram_id(history[len(history) - (k - 1):]) if k - 1 <= len(history) else -1
            contexts.append(np.full(self.V, ctx, dtype=np.int64))
            gram = _ids_ending_at(self.orders[k - 1].keys, max(ctx, 0) * self.V + words)
            grams.append(gram if ctx >= 0 else np.full(self.V, -1, dtype=np.int64))
        return self._chain(contexts, grams)

    def _gram_id(self, tokens) -> int:
        """The id of the k-gram ``tokens`` in its table, or -1 if it never occurred."""
        gid = 0
        for k, token in enumerate(tokens, start=1):
            gid = int(_ids_ending_at(self.orders[k - 1].keys, np.array([gid * self.V + int(token)]))[0])
            if gid < 0:
                return -1
        return gid

    # ------------------------------------------------------------------ using the model

    def seen_fraction(self, ids) -> list[float]:
        """For k = 1..order: the share of k-grams of ``ids`` that occurred in training."""
        self._check_fitted()
        grams = self._lookup(self._check_ids(ids))
        return [float(np.mean(g[k - 1:] >= 0)) for k, g in enumerate(grams, start=1)]

    # ------------------------------------------------------------------ the model protocol

    def forward(self, ids, state=None):
        """Log-probabilities of the next token after each position, and the new state.

        ``ids`` is a (batch, time) array or tensor; ``state`` holds, for each row, the tokens
        before ``ids`` (only the last n - 1 matter).  The logits are ``log P``, so a softmax of
        them gives the probabilities back.  Each position costs one :meth:`next_distribution`:
        fine for generating, slow for scoring a long text (use :meth:`log2probs`)."""
        ids = torch.as_tensor(ids).tolist()
        history = [list(row) for row in (state or [[] for _ in ids])]
        if len(history) != len(ids):
            raise ValueError(f"the state has {len(history)} rows, the input {len(ids)}")
        logits = torch.empty(len(ids), len(ids[0]) if ids else 0, self.V, dtype=torch.float64)
        keep = self.order - 1
        for b, row in enumerate(ids):
            for t, token in enumerate(row):
                history[b].append(int(token))
                with np.errstate(divide="ignore"):
                    logits[b, t] = torch.from_numpy(np.log(self.next_distribution(history[b][-keep:] if keep else [])))
            history[b] = history[b][len(history[b]) - keep:] if keep else []
        return logits, history

    __call__ = forward

    def num_parameters(self) -> int:
        """The number of stored counts: one per distinct k-gram, k = 1..order."""
        self._check_fitted()
        return int(sum(len(t.keys) for t in self.orders))

    def state_dict(self) -> dict[str, np.ndarray]:
        """The counted tables, order by order (what a checkpoint stores)."""
        self._check_fitted()
        return {f"order{k}.{name}": getattr(table, name) for k, table in enumerate(self.orders, start=1)
                for name in ("keys", "counts", "prefix", "suffix")}

    def load_state_dict(self, tables: dict[str, np.ndarray]) -> "NGramModel":
        self.orders = [_Order(*(np.asarray(tables[f"order{k}.{name}"], dtype=np.int64)
                                for name in ("keys", "counts", "prefix", "suffix")))
                       for k in range(1, self.order + 1)]
        self._prepare()
        return self

    # ------------------------------------------------------------------ checks

    def _check_fitted(self) -> None:
        if not self.orders:
            raise RuntimeError("the model is not fitted yet: call fit(train_ids) first")

    def _check_ids(self, ids, allow_empty: bool = False) -> np.ndarray:
        arr = np.asarray(ids, dtype=np.int64).reshape(-1)
        if len(arr) == 0 and not allow_empty:
            raise ValueError("the token sequence is empty")
        if len(arr) and (arr.min() < 0 or arr.max() >= self.V):
            raise ValueError(f"token ids must be in 0..{self.V - 1}; got {arr.min()}..{arr.max()}")
        return arr

    def __repr__(self) -> str:
        state = f"{self.num_parameters():,} n-grams" if self.orders else "not fitted"
        return f"NGramModel(order={self.order}, V={self.V}, method={self.method!r}, {state})"
