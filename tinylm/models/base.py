"""What every model of the course offers: the model protocol.

A language model, whatever its family (an n-gram table, an MLP, a recurrent network, a
Transformer), is used the same way:

- ``model(ids, state=None) -> (logits, state)``: ``ids`` is a (batch, time) tensor of token ids;
  ``logits[b, t]`` scores every token of the vocabulary as the one that comes *after*
  ``ids[b, t]``.  ``state`` carries what the model remembers of the text so far (an RNN's
  hidden state, a Transformer's KV cache, an n-gram's last n - 1 tokens), so that a text can be
  fed in pieces: the logits for ``ids[:, :k]`` then ``ids[:, k:]`` with the state handed on are
  those of ``ids`` in one call (up to floating-point rounding).
- ``model.num_parameters()``: the number of trainable parameters, a shared (tied) tensor counted
  once (an n-gram counts its stored counts).
- ``model.config``: a frozen dataclass (:class:`Config`) with ``to_dict()`` and ``from_dict()``,
  everything needed to build the model again; :mod:`tinylm.checkpoint` stores it beside the
  weights.
- ``model.new_state()``: the state that starts a text (``None`` for most; a Transformer's empty
  KV cache), used by :func:`tinylm.generate`.
- ``model.stateful``: True when the state holds a summary of *all* the text so far (an RNN),
  so that training reads the text as continuous streams and carries the state from one chunk
  to the next (see :mod:`tinylm.training.causal_lm`).
- ``model.max_len``: the longest input the model takes at once (``None``: no limit).
- ``model.causal`` (False for a masked LM or a classifier, which see the whole text) and
  ``model.encoder_decoder`` (True when the model reads a source first, ``model.encode(src)``,
  and its state holds the encoded source).

:func:`tinylm.score`, :func:`tinylm.generate`, :func:`tinylm.token_logprobs` and the training
loop rely on nothing else.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass

import torch

INIT_STD = 0.02
"""The standard deviation of GPT-2's (and BERT's) normal initialisation of weights."""


@dataclass(frozen=True)
class Config:
    """Base of every model configuration: a frozen dataclass that converts to and from a dict."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        """The configuration ``to_dict`` gave; an unknown field is an error that names it."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"{cls.__name__} has no field {', '.join(map(repr, unknown))}; "
                             f"its fields are {sorted(names)}")
        return cls(**data)


class LanguageModel:
    """Defaults of the model protocol (see the module docstring); models inherit from it."""

    stateful = False
    causal = True               # reads left to right: P(ids[t] | ids[:t]) (a masked LM does not)
    encoder_decoder = False     # reads a source first (model.encode), then decodes

    def num_parameters(self) -> int:
        """Trainable parameters, each shared tensor counted once (``parameters()`` yields it once)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def new_state(self):
        """The state that starts a text: none."""
        return None

    @classmethod
    def from_config(cls, config: Config):
        """The (untrained) model that ``config`` describes."""
        return cls(config)

    @property
    def max_len(self) -> int | None:
        """The longest input the model takes at once: no limit."""
        return None


@contextlib.contextmanager
def evaluating(model):
    """Run the block with ``model`` in evaluation mode (no dropout) and without gradients, then
    put its mode back.  Models that are not torch modules (the n-gram) have no mode."""
    training = getattr(model, "training", None)
    if training is not None:
        model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        if training is not None:
            model.train(training)
