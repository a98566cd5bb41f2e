"""Bengio's neural probabilistic language model: an MLP over the last n-1 tokens.

Bengio, Ducharme, Vincent and Jauvin (2003) replaced the n-gram's table of counts by a neural
network.  Each token gets a learned vector (its *embedding*, a distributed representation); the
vectors of the last ``n - 1`` tokens are concatenated, passed through a hidden layer with a tanh,
and a softmax over the vocabulary gives the next token's distribution:

    y = b + W x + U tanh(d + H x),      x = [C(w_{t-1}), ..., C(w_{t-n+1})],

where the direct connection ``W x`` from the embeddings to the output is optional.  Because
similar tokens get similar vectors, what is learned about one context carries over to similar
ones, which is exactly what a table of counts cannot do.

:class:`MLPLanguageModel` computes this for every position of a sequence at once.  Positions
near the start of a text see a special *start* token in place of the missing history; its
state (see :mod:`tinylm.models.base`) is the last n - 2 tokens, which a continuation needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .base import Config, LanguageModel

LOGITS_PER_CHUNK = 2**20
"""About how many logits :meth:`MLPLanguageModel.log2probs` computes at once (8 MB in float64)."""


@dataclass(frozen=True)
class MLPConfig(Config):
    vocab_size: int
    context: int = 5             # n - 1: how many previous tokens the model sees
    d_embed: int = 32            # the size m of each token's vector
    d_hidden: int = 256          # the number h of hidden units
    direct: bool = False         # Bengio's optional direct connection W x from embeddings to output
    dropout: float = 0.0


class MLPLanguageModel(LanguageModel, nn.Module):
    """P(w_t | w_{t-n+1} .. w_{t-1}) by an MLP over the concatenated embeddings."""

    def __init__(self, config: MLPConfig):
        super().__init__()
        self.config = config
        self.start = config.vocab_size                            # the id of the start token
        self.embed = nn.Embedding(config.vocab_size + 1, config.d_embed)
        width = config.context * config.d_embed
        self.hidden = nn.Linear(width, config.d_hidden)
        self.out = nn.Linear(config.d_hidden, config.vocab_size)
        self.direct = nn.Linear(width, config.vocab_size, bias=False) if config.direct else None
        self.drop = nn.Dropout(config.dropout)

    def windows(self, x: torch.Tensor, state: torch.Tensor | None = None) -> torch.Tensor:
        """For each position t, the ids of tokens t-n+2 .. t (the history of token t+1); the
        ``state`` (the n - 2 tokens before ``x``) or start tokens fill the history of the first."""
        if state is None:
            padded = F.pad(x, (self.config.context - 1, 0), value=self.start)
        else:
            padded = torch.cat([state, x], dim=1)
        return padded.unfold(1, self.config.context, 1)          # (batch, time, context)

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None):
        """Logits (batch, time, vocab) for the token after each position of ``x``, and the state:
        the last n - 2 tokens read (start tokens where there were fewer)."""
        windows = self.windows(x, state)
        e = self.drop(self.embed(windows).flatten(2))             # (batch, time, context * d_embed)
        logits = self.out(self.drop(torch.tanh(self.hidden(e))))
        if self.direct is not None:
            logits = logits + self.direct(e)
        return logits, windows[:, -1, 1:]

    @torch.no_grad()
    def log2probs(self, ids) -> np.ndarray:
        """log2 P(ids[t] | ids[:t]) for t = 1 .. len(ids) - 1, each position computed once.

        What :func:`tinylm.score` returns for an MLP, at half the cost of its general method: an
        MLP's prediction depends only on the last n - 1 tokens, so the text can be cut into chunks
        that overlap by just n - 2 tokens (the history the first prediction of a chunk needs),
        where the windows made for models with a long memory overlap by half.  Only the very first
        predictions of the text see the start token.  About :data:`LOGITS_PER_CHUNK` logits are
        computed at a time, so a large vocabulary does not need a large block of memory.
        """
        chunk = max(64, LOGITS_PER_CHUNK // self.config.vocab_size)
        ids = torch.as_tensor(np.asarray(ids), dtype=torch.long)
        n = len(ids) - 1                                   # targets ids[1..n] are out[0..n-1]
        history = self.config.context - 1
        out = np.empty(max(n, 0), dtype=np.float64)
        for a in range(0, n, chunk):                       # the predictions from positions a .. b-1
            b = min(a + chunk, n)
            s = max(0, a - history)
            logits, _ = self(ids[s:b][None])
            logp = F.log_softmax(logits[0].double(), dim=-1)
            picked = logp.gather(-1, ids[s + 1:b + 1, None])[:, 0] / np.log(2.0)
            out[a:b] = picked[a - s:].numpy()
        return out
