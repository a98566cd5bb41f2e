"""The classification objective: fine-tune a model to label texts (微调).

The model (a :class:`~tinylm.models.classifier.SequenceClassifier`: a pre-trained encoder and a
small head) gives class logits for each text; the loss is the cross-entropy with the labels.
The whole model is trained, encoder included.  Texts come as rows of a padded id tensor (see
:func:`tinylm.training.masked_lm.bert_inputs`), read in a fresh random order each pass; each
batch is cut to its longest text, so short texts cost little.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models.classifier import accuracy, trim_padding
from .batches import ShuffledExamples
from .loop import TrainConfig, autocast


class Classification:
    """Cross-entropy on (padded ids, labels); validation is the accuracy on ``valid`` (ids, labels)
    when given."""

    unit = "nats"
    monitor = "accuracy"
    higher_is_better = True

    def __init__(self, ids: torch.Tensor, labels, pad_id: int, valid: tuple[torch.Tensor, object] | None = None):
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        if len(ids) != len(self.labels) or len(ids) == 0:
            raise ValueError(f"{len(ids)} sequences and {len(self.labels)} labels")
        self.ids, self.pad_id, self.valid = ids, pad_id, valid

    def start(self, model, config: TrainConfig) -> None:
        generator = torch.Generator().manual_seed(config.seed)
        self.examples = ShuffledExamples(len(self.ids), config.batch_size, generator, carry_remainder=True)
        self.precision = config.precision

    def loss(self, model) -> tuple[torch.Tensor, float]:
        rows = self.examples.next()
        x, mask = trim_padding(self.ids[rows], self.pad_id)
        with autocast(self.precision):
            logits, _ = model(x, padding_mask=mask)
        loss = F.cross_entropy(logits.float(), self.labels[rows])
        return loss, loss.item()

    def evaluate(self, model) -> dict[str, float]:
        if self.valid is None:
            return {}
        return {"accuracy": accuracy(model, *self.valid)}
