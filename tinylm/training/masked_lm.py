"""The masked-language-model objective: BERT's pre-training (掩码语言模型, MLM).

A language model that reads left to right predicts each token from the ones before it.  BERT
(Devlin et al., 2019) reads the whole text at once with an :class:`~tinylm.models.transformer.Encoder`,
so that every position sees both sides; predicting a token that the model can see would be
trivial, so it **hides** some tokens and predicts them instead.  No labels are needed, only
text, so the encoder can be **pre-trained** (预训练) on as much text as one has, then
**fine-tuned** (微调) with a few labelled examples on the task one cares about (see
:mod:`tinylm.training.classification`).

The pieces, in the order a reader meets them:

- BERT's input: ``[CLS] text [SEP]``, padded with ``[PAD]`` (:func:`bert_inputs`); the special
  tokens are a :class:`~tinylm.tokenizers.CharTokenizer`'s first five ids
  (:data:`~tinylm.tokenizers.BERT_SPECIALS`).
- :func:`mask_tokens`: BERT's rule.  Each ordinary token is chosen with probability 15%; a
  chosen token is replaced by ``[MASK]`` 80% of the time, by a random ordinary token 10% of the
  time, and left unchanged 10% of the time; the model must predict the original of every
  chosen token.  Special tokens and padding are never chosen.  (The random and unchanged cases
  exist because ``[MASK]`` never occurs when the model is fine-tuned: the model must also build
  good representations of tokens it can see.)
- :func:`mlm_loss`: the cross-entropy at the chosen positions only; logits are computed only
  there, which saves most of the cost of the output layer.
- :class:`MaskedLM`, the objective for :func:`tinylm.training.train`: windows of a stream of
  documents, masked afresh at every step, validated on fixed masked batches.
- :func:`fill_masks`: what the pre-trained model puts in the blanks of a sentence.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F

from ..models.base import evaluating
from ..tokenizers.symbols import BERT_SPECIALS, CLS, MASK, SEP
from .batches import pad, random_windows
from .loop import TrainConfig, autocast

BERT_IDS = {name: i for i, name in enumerate(BERT_SPECIALS)}
"""The ids of BERT's special tokens in a vocabulary that starts with them."""

N_SPECIAL = len(BERT_SPECIALS)
"""Ids below this are special tokens; ordinary tokens come after them."""

IGNORE = -100
"""The target of a position that is not predicted (``F.cross_entropy``'s ``ignore_index``)."""

VALID_SEED = 1234
"""The seed of the fixed validation batches (apart from the training run's seed)."""


# ----------------------------------------------------------------------------- BERT's input

def frame(ids: Sequence[int], max_len: int | None = None) -> list[int]:
    """``[CLS] ids [SEP]``, the ids cut so that the whole fits in ``max_len`` tokens."""
    ids = list(ids)
    if max_len is not None:
        if max_len < 3:
            raise ValueError(f"max_len {max_len} leaves no room for a token between [CLS] and [SEP]")
        ids = ids[: max_len - 2]
    return [BERT_IDS[CLS]] + ids + [BERT_IDS[SEP]]


def bert_inputs(tokenizer, texts: Sequence[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Texts as BERT reads them, padded to the longest: ``(ids, padding_mask)``, both (B, L), the
    mask True at real tokens (the convention of :class:`~tinylm.models.transformer.Encoder`)."""
    if isinstance(texts, str):
        raise TypeError("pass a list of texts, not one string")
    return pad([frame(tokenizer.encode(text), max_len) for text in texts], tokenizer.pad_id)


def text_stream(tokenizer, documents: Iterable[str]) -> torch.Tensor:
    """All documents as one stream of ids, each followed by ``[SEP]``."""
    ids: list[int] = []
    for doc in documents:
        ids += tokenizer.encode(doc)
        ids.append(BERT_IDS[SEP])
    return torch.tensor(ids, dtype=torch.long)


def bert_windows(stream: torch.Tensor, batch_size: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """(batch_size, length) sequences ``[CLS]`` + ``length - 1`` tokens of the stream from a
    random place.  No padding: every position of every sequence is text (or a ``[SEP]``
    between two documents), as in BERT's packed pre-training data."""
    body = random_windows(stream, batch_size, length - 1, generator)
    return torch.cat([torch.full((batch_size, 1), BERT_IDS[CLS], dtype=torch.long), body], dim=1)


# ----------------------------------------------------------------------------- masking

def mask_tokens(ids: torch.Tensor, vocab_size: int, generator: torch.Generator, rate: float = 0.15,
                mask_share: float = 0.8, random_share: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking: ``(inputs, targets)`` for a batch of token ids.

    Each ordinary token (id >= :data:`N_SPECIAL`; never padding, ``[CLS]``, ``[SEP]``...) is
    chosen independently with probability ``rate``.  Of the chosen tokens, a share
    ``mask_share`` becomes ``[MASK]``, a share ``random_share`` becomes a random ordinary token,
    and the rest stay as they are.  ``targets`` holds the original id at chosen positions and
    :data:`IGNORE` elsewhere.  The draws come from ``generator``, so masking is repeatable.
    """
    if not 0 <= rate <= 1 or mask_share < 0 or random_share < 0 or mask_share + random_share > 1:
        raise ValueError(f"shares out of range: rate {rate}, mask {mask_share}, random {random_share}")
    ordinary = ids >= N_SPECIAL
    chosen = (torch.rand(ids.shape, generator=generator) < rate) & ordinary
    how = torch.rand(ids.shape, generator=generator)
    to_mask = chosen & (how < mask_share)
    to_random = chosen & (how >= mask_share) & (how < mask_share + random_share)
    random_ids = torch.randint(N_SPECIAL, vocab_size, ids.shape, generator=generator)
    inputs = torch.where(to_mask, torch.full_like(ids, BERT_IDS[MASK]), ids)
    inputs = torch.where(to_random, random_ids, inputs)
    targets = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
    return inputs, targets


def mlm_loss(model, inputs: torch.Tensor, targets: torch.Tensor,
             padding_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, int, int]:
    """Mean cross-entropy (nats) over the chosen positions, the number of them predicted
    correctly (top-1) and the number of chosen positions.

    The head runs at the chosen positions only: the same numbers as the model's logits there,
    without multiplying every position's hidden state by the whole embedding matrix."""
    chosen = targets != IGNORE
    if not bool(chosen.any()):
        raise ValueError("no position was chosen for prediction")
    logits = model.head(model.encoder(inputs, padding_mask)[chosen])
    truth = targets[chosen]
    loss = F.cross_entropy(logits, truth)
    return loss, int((logits.argmax(-1) == truth).sum()), int(truth.numel())


def evaluate_mlm(model, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[float, float]:
    """Loss (nats per masked token) and top-1 accuracy on fixed, already masked batches."""
    total, correct, count = 0.0, 0, 0
    with evaluating(model):
        for inputs, targets in batches:
            loss, right, n = mlm_loss(model, inputs, targets)
            total, correct, count = total + float(loss) * n, correct + right, count + n
    return total / count, correct / count


def fixed_masked_batches(stream: torch.Tensor, vocab_size: int, n_batches: int, batch_size: int, length: int,
                         seed: int = VALID_SEED) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Validation batches: windows and masks drawn once from ``seed``, the same at every evaluation."""
    generator = torch.Generator().manual_seed(seed)
    return [mask_tokens(bert_windows(stream, batch_size, length, generator), vocab_size, generator)
            for _ in range(n_batches)]


# ----------------------------------------------------------------------------- the objective

class MaskedLM:
    """Pre-train a :class:`~tinylm.models.transformer.MaskedLM` on a stream of documents: each
    step takes ``config.batch_size`` windows of ``config.context`` tokens (``[CLS]`` first) from
    random places, masked afresh; validation is the loss and accuracy on ``valid_batches``
    (see :func:`fixed_masked_batches`)."""

    unit = "nats"
    monitor = "loss"
    higher_is_better = False

    def __init__(self, stream: torch.Tensor, valid_batches: Sequence[tuple[torch.Tensor, torch.Tensor]] = ()):
        self.stream, self.valid_batches = stream, list(valid_batches)

    def start(self, model, config: TrainConfig) -> None:
        self.generator = torch.Generator().manual_seed(config.seed)
        self.batch_size, self.length, self.precision = config.batch_size, config.context, config.precision
        self.vocab_size = model.config.vocab_size

    def loss(self, model) -> tuple[torch.Tensor, float]:
        windows = bert_windows(self.stream, self.batch_size, self.length, self.generator)
        inputs, targets = mask_tokens(windows, self.vocab_size, self.generator)
        with autocast(self.precision):
            loss, _, _ = mlm_loss(model, inputs, targets)
        return loss, loss.item()

    def evaluate(self, model) -> dict[str, float]:
        if not self.valid_batches:
            return {}
        loss, accuracy = evaluate_mlm(model, self.valid_batches)
        return {"loss": loss, "accuracy": accuracy}


# ----------------------------------------------------------------------------- using the model

def fill_masks(model, tokenizer, text: str, k: int = 5) -> list[list[tuple[str, float]]]:
    """For each ``[MASK]`` in ``text`` (written literally), the model's ``k`` likeliest ordinary
    tokens and their probabilities, left to right."""
    parts = text.split(MASK)
    if len(parts) < 2:
        raise ValueError(f"the text has no {MASK} to fill")
    ids = []
    for i, part in enumerate(parts):
        ids += tokenizer.encode(part) + ([BERT_IDS[MASK]] if i < len(parts) - 1 else [])
    ids = torch.tensor([frame(ids)])
    with evaluating(model):
        hidden = model.encoder(ids)[ids == BERT_IDS[MASK]]
        probs = torch.softmax(model.head(hidden).double(), dim=-1)
    out = []
    for row in probs:
        top = torch.topk(row[N_SPECIAL:], k)               # only ordinary tokens
        out.append([(tokenizer.symbols[int(i) + N_SPECIAL], float(p)) for p, i in zip(top.values, top.indices)])
    return out
