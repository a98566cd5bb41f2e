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
layer, and follows the course's model protocol (:mod:`tinylm.models.base`): ``forward(x, state)``
returns ``(logits, state)`` and ``stateful = True``, so the training loop carries the state from
one chunk of text to the next.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .base import Config, LanguageModel

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


@dataclass(frozen=True)
class RecurrentConfig(Config):
    vocab_size: int
    cell: str = "lstm"          # "rnn", "lstm" or "gru"
    d_embed: int = 64           # the size of each token's vector
    d_state: int = 512          # the size of the hidden state h_t (and of an LSTM's cell c_t)
    n_layers: int = 1
    dropout: float = 0.0        # on the embeddings and on the output of the last layer

    def __post_init__(self):
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {sorted(CELLS)}, got {self.cell!r}")


class RecurrentLM(LanguageModel, nn.Module):
    """Embedding -> recurrent layers -> a linear layer giving the next token's logits."""

    stateful = True

    def __init__(self, config: RecurrentConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_embed)
        kwargs = {"nonlinearity": "tanh"} if config.cell == "rnn" else {}
        self.rnn = CELLS[config.cell](config.d_embed, config.d_state, config.n_layers, batch_first=True,
                                      dropout=config.dropout if config.n_layers > 1 else 0.0, **kwargs)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.d_state, config.vocab_size)

    def forward(self, x: torch.Tensor, state=None):
        """Logits (batch, time, vocab) for the token after each position, and the final state."""
        out, state = self.rnn(self.drop(self.embed(x)), state)
        return self.head(self.drop(out)), state


# ----------------------------------------------------------------------------- gradients through time

def gradient_norms_through_time(model: RecurrentLM, ids, max_lag: int):
    """How strongly the loss at the last position depends on the state ``k`` steps back.

    ``ids`` is a batch of sequences, shape (N, n + 1).  The model reads the first ``n`` tokens
    of each row from a zero state and predicts the last one; call that loss ``L`` (one term per
    row).  Write s_t for the state after reading token t (h_t for an RNN or a GRU, the pair
    (h_t, c_t) for an LSTM, all layers together).  The result has shape (N, max_lag + 1): entry
    ``[i, k]`` is the norm of dL/ds_{n-k} for row ``i``.

    Backpropagation through time computes dL/ds_{t-1} from dL/ds_t by multiplying with the
    transposed Jacobian ds_t/ds_{t-1}, so dL/ds_{n-k} is dL/ds_n times a product of ``k``
    Jacobians: the norms show whether that product shrinks (vanishing gradients) or grows
    (exploding gradients) with the distance ``k``.

    The model is stepped one token at a time, so that every intermediate state is a tensor
    autograd can differentiate with respect to; ``torch.autograd.grad`` returns the gradients
    without touching the parameters' ``.grad``.  Use a float64 model (``model.double()``) to
    follow gradients down to 1e-100 and below without underflow.
    """
    import numpy as np
    import torch.nn.functional as F

    ids = torch.as_tensor(np.asarray(ids), dtype=torch.long)
    if ids.dim() != 2:
        raise ValueError(f"ids must have shape (N, n + 1), got {tuple(ids.shape)}")
    n = ids.shape[1] - 1
    if not 0 <= max_lag < n:
        raise ValueError(f"max_lag must be in 0..{n - 1} for sequences of {n + 1} tokens, got {max_lag}")
    was_training = model.training
    model.eval()                                        # no dropout
    try:
        with torch.enable_grad():
            inputs = model.embed(ids[:, :-1])
            state, states = None, []
            for t in range(n):
                _, state = model.rnn(inputs[:, t:t + 1], state)
                states.append(state if isinstance(state, tuple) else (state,))
            last_h = states[-1][0][-1]                     # the top layer's h_n, shape (N, hidden)
            loss = F.cross_entropy(model.head(last_h), ids[:, -1], reduction="sum")
            wanted = [part for parts in states[n - 1 - max_lag:] for part in parts]
            grads = torch.autograd.grad(loss, wanted, allow_unused=True)   # c_n is unused: None
    finally:
        model.train(was_training)
    per_state = len(states[0])                             # 1, or 2 for an LSTM
    norms = []
    for k in range(max_lag + 1):                           # lag k is the state at t = n - k
        index = (max_lag - k) * per_state
        squared = sum(g.pow(2).sum(dim=(0, 2)) for g in grads[index:index + per_state] if g is not None)
        norms.append(squared.sqrt())
    return torch.stack(norms, dim=1).detach().cpu().numpy()
