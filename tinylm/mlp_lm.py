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

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


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
