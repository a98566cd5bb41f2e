"""A sequence classifier: a pre-trained encoder and a small head that maps a text to class scores.

Fine-tuning (微调) BERT for a task such as sentiment puts a linear layer on top of the encoder
and trains both with the labels.  The head needs one vector per text; the encoder gives one per
token, so they are **pooled** (池化): averaged over the real tokens (:func:`mean_pool`, the
default), or read at position 0, BERT's ``[CLS]``.

BERT's ``[CLS]`` output is trained during pre-training by a second task (next-sentence
prediction); with the masked-language-model objective alone nothing ever asks ``[CLS]`` to
summarise the sequence (it is never masked and never predicted), so with few labels the mean of
all the outputs, each of which pre-training *did* shape, is the better start.  ``pooling="cls"``
is there to compare.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import INIT_STD, LanguageModel
from .transformer import Encoder

PREDICT_BATCH_SIZE = 250
"""Texts classified at once by :func:`predict` (a batch of 250 x 64 tokens is a few MB)."""


def mean_pool(hidden: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
    """The mean of ``hidden`` (B, L, d) over the real positions of each row (``padding_mask``
    (B, L), true or 1 there): (B, d).  Padding does not count, whatever its hidden state; a row
    with no real token gives zeros."""
    weights = padding_mask.to(hidden.dtype)[..., None]
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


class SequenceClassifier(LanguageModel, nn.Module):
    """An encoder and a head: pool the encoder's outputs to one vector per sequence, then a
    linear layer to ``n_classes`` scores (logits).

    ``forward(ids, padding_mask=...)`` returns ``(logits, None)``, logits of shape
    (batch, n_classes); without a mask, every position that is not the encoder's ``pad_id``
    is real."""

    causal = False

    def __init__(self, encoder: Encoder, n_classes: int, pooling: str = "mean", dropout: float = 0.1):
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise ValueError(f"unknown pooling {pooling!r}; choose 'mean' or 'cls'")
        self.encoder, self.pooling = encoder, pooling
        self.config = encoder.config
        self.pad_id = encoder.config.pad_id
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.config.d_model, n_classes)
        nn.init.normal_(self.head.weight, 0.0, INIT_STD)
        nn.init.zeros_(self.head.bias)

    def forward(self, ids: torch.Tensor, state=None, padding_mask: torch.Tensor | None = None):
        if padding_mask is None:
            padding_mask = ids != self.pad_id
        hidden = self.encoder(ids, padding_mask)
        pooled = mean_pool(hidden, padding_mask) if self.pooling == "mean" else hidden[:, 0]
        return self.head(self.drop(pooled)), None


def trim_padding(ids: torch.Tensor, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the columns that are padding in every row, so a batch costs its longest sequence:
    ``(ids, padding_mask)``."""
    mask = ids != pad_id
    length = max(1, int(mask.sum(1).max()))
    return ids[:, :length], mask[:, :length]


@torch.no_grad()
def predict(model: SequenceClassifier, ids: torch.Tensor, batch_size: int = PREDICT_BATCH_SIZE) -> torch.Tensor:
    """The predicted class of each row of ``ids`` (padded with the model's ``pad_id``).  Rows are
    batched shortest first, so each batch carries little padding; the answers come back in the
    original order."""
    was_training = model.training
    model.eval()
    lengths = (ids != model.pad_id).sum(1)
    order = torch.argsort(lengths, stable=True)
    out = torch.empty(len(ids), dtype=torch.long)
    for a in range(0, len(ids), batch_size):
        rows = order[a:a + batch_size]
        x, mask = trim_padding(ids[rows], model.pad_id)
        out[rows] = model(x, padding_mask=mask)[0].argmax(-1)
    model.train(was_training)
    return out


def accuracy(model: SequenceClassifier, ids: torch.Tensor, labels) -> float:
    """The share of rows whose predicted class is the label."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    return float((predict(model, ids) == labels).double().mean())
