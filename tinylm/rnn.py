"""Recurrent language models: an RNN, an LSTM or a GRU reading one token at a time.

A recurrent network keeps a **hidden state** h_t, a running summary of the prefix: at each step
it combines the previous summary with the new token,

    h_t = tanh(W_h h_{t-1} + W_x x_t + b)                          (a plain RNN, Elman 1990)

and predicts the next token from h_t.  Training unrolls this recurrence over a chunk of text
and backpropagates through it ("backpropagation through time").  Because the same W_h is
multiplied in at every step, gradients from far back shrink (or grow) geometrically: the
**vanishing** (and exploding) gradient problem.  The **LSTM** (Hochreiter and Schmidhuber 1997)
adds a cell state c_t that is updated *additively* under the control of gates,

    c_t = f_t * c_{t-1} + i_t * g_t,     h_t = o_t * tanh(c_t),

so information (and gradient) can flow across many steps when the forget gate f_t stays near 1.
The GRU (Cho et al. 2014) is a lighter variant with two gates.

:class:`RecurrentLM` wraps ``torch.nn.RNN``, ``LSTM`` or ``GRU`` with an embedding and an output
layer, and follows the interface of :mod:`tinylm.train`: ``forward(x, state)`` returns
``(logits, state)`` and ``stateful = True``, so the training loop carries the state from one
chunk of text to the next.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


@dataclass(frozen=True)
class RecurrentConfig:
    vocab_size: int
    cell: str = "lstm"          # "rnn", "lstm" or "gru"
    embedding: int = 64
    hidden: int = 512
    layers: int = 1
    dropout: float = 0.0        # on the embeddings and on the output of the last layer

    def __post_init__(self):
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {sorted(CELLS)}, got {self.cell!r}")


class RecurrentLM(nn.Module):
    """Embedding -> recurrent layers -> a linear layer giving the next token's logits."""

    stateful = True

    def __init__(self, config: RecurrentConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.embedding)
        kwargs = {"nonlinearity": "tanh"} if config.cell == "rnn" else {}
        self.rnn = CELLS[config.cell](config.embedding, config.hidden, config.layers, batch_first=True,
                                      dropout=config.dropout if config.layers > 1 else 0.0, **kwargs)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden, config.vocab_size)

    def forward(self, x: torch.Tensor, state=None):
        """Logits (batch, time, vocab) for the token after each position, and the final state."""
        out, state = self.rnn(self.drop(self.embed(x)), state)
        return self.head(self.drop(out)), state

    def to_dict(self) -> dict:
        return asdict(self.config)
