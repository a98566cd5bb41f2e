"""Masked-language-model pre-training, and fine-tuning the encoder it leaves behind (BERT).

A language model that reads left to right predicts each token from the ones before it.  BERT
(Devlin et al., 2019) reads the whole text at once with an :class:`~tinylm.transformer.Encoder`,
so that every position sees both sides; predicting a token that the model can see would be
trivial, so it **hides** some tokens and predicts them instead: the **masked language model**
(掩码语言模型, MLM).  No labels are needed, only text, so the encoder can be **pre-trained**
(预训练) on as much text as one has, then **fine-tuned** (微调) with a few labelled examples on
the task one cares about.

The pieces, in the order a reader meets them:

- :class:`CharTokenizer`: one token per character, plus BERT's five special tokens ``[PAD]``
  (filling short sequences up to the batch's length), ``[UNK]`` (a character not in the
  vocabulary), ``[CLS]`` (first of every sequence), ``[SEP]`` (end of a text) and ``[MASK]``.
- :func:`mask_tokens`: BERT's rule.  Each ordinary token is chosen with probability 15%; a
  chosen token is replaced by ``[MASK]`` 80% of the time, by a random ordinary token 10% of the
  time, and left unchanged 10% of the time; the model must predict the original of every
  chosen token.  Special tokens and padding are never chosen.  (The random and unchanged cases
  exist because ``[MASK]`` never occurs when the model is fine-tuned: the model must also build
  good representations of tokens it can see.)
- :func:`mlm_logits` and :func:`pretrain`: the loss is the cross-entropy at the chosen positions
  only; logits are computed only there, which saves most of the cost of the output layer.
- :class:`SequenceClassifier`: the pre-trained encoder with a small head that maps a whole
  sequence to class scores, and :func:`fine_tune` / :func:`accuracy` to train and score it.
- :data:`RECIPES`, :func:`run` and :func:`load`: the pre-training command
  ``python -m tinylm pretrain mlm-zh``, which writes ``checkpoints/pretrained/NAME.safetensors``
  and ``NAME.json`` (the recipe, the vocabulary and the log), like :mod:`tinylm.rungs`.

**Pooling.**  The classifier averages the encoder's outputs over the real tokens of a sequence
(mean pooling, 平均池化) by default, rather than reading the output at ``[CLS]`` as BERT does.
BERT's ``[CLS]`` output is trained during pre-training by a second task (next-sentence
prediction); with the MLM objective alone nothing ever asks ``[CLS]`` to summarise the
sequence (it is never masked and never predicted), so with few labels the mean of all the
outputs, each of which pre-training *did* shape, is the better start.  ``pooling="cls"`` is
there to compare.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import data, train
from .transformer import Encoder, MaskedLM, TransformerConfig

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PAD, UNK, CLS, SEP, MASK = range(len(SPECIALS))
IGNORE = -100
"""The target of a position that is not predicted (``F.cross_entropy``'s ``ignore_index``)."""


# ----------------------------------------------------------------------------- tokens

class CharTokenizer:
    """Characters as tokens, after BERT's special tokens.

    Ids 0-4 are ``[PAD] [UNK] [CLS] [SEP] [MASK]``; ids from 5 on are the characters, in the
    order given.  A text becomes ``[CLS] c1 c2 ... [SEP]``.

    >>> tok = CharTokenizer("你好")
    >>> tok.encode("你好吗")
    [2, 5, 6, 1, 3]
    >>> tok.decode([2, 5, 6, 1, 3])
    '[CLS]你好[UNK][SEP]'
    """

    def __init__(self, characters: Iterable[str]):
        chars = list(dict.fromkeys(characters))
        bad = [c for c in chars if len(c) != 1 or c in SPECIALS]
        if bad:
            raise ValueError(f"a character vocabulary holds single characters; got {bad[:5]}")
        self.symbols: list[str] = list(SPECIALS) + chars
        self.index: dict[str, int] = {s: i for i, s in enumerate(self.symbols)}

    @classmethod
    def from_texts(cls, texts: Iterable[str], min_count: int = 1) -> "CharTokenizer":
        """The characters occurring at least ``min_count`` times, commonest first (ties in
        code-point order), so the vocabulary is the same on every machine."""
        counts = Counter()
        for text in texts:
            counts.update(text)
        kept = sorted((c for c, n in counts.items() if n >= min_count), key=lambda c: (-counts[c], c))
        return cls(kept)

    def __len__(self) -> int:
        return len(self.symbols)

    @property
    def characters(self) -> str:
        """The ordinary symbols, one string (what a checkpoint's log stores)."""
        return "".join(self.symbols[len(SPECIALS):])

    def ids(self, text: str) -> list[int]:
        """The characters of ``text`` as ids, without ``[CLS]``/``[SEP]``."""
        return [self.index.get(c, UNK) for c in text]

    def encode(self, text: str, max_len: int | None = None) -> list[int]:
        """``[CLS] text [SEP]``, the text cut so that the whole fits in ``max_len`` tokens."""
        body = self.ids(text)
        if max_len is not None:
            if max_len < 3:
                raise ValueError(f"max_len {max_len} leaves no room for a character between [CLS] and [SEP]")
            body = body[: max_len - 2]
        return [CLS] + body + [SEP]

    def decode(self, ids: Iterable[int], skip_padding: bool = True) -> str:
        return "".join(self.symbols[int(i)] for i in ids if not (skip_padding and int(i) == PAD))

    def batch(self, texts: Sequence[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode texts and pad them to the longest: ``(ids, padding_mask)``, both (B, L), the
        mask True at real tokens (the convention of :class:`~tinylm.transformer.Encoder`)."""
        return pad([self.encode(t, max_len) for t in texts])

    def __repr__(self) -> str:
        return f"CharTokenizer({len(self)} symbols: {len(SPECIALS)} special, {len(self) - len(SPECIALS)} characters)"


def pad(sequences: Sequence[Sequence[int]], length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Lists of ids -> ``(ids, padding_mask)`` of shape (B, L), filled with ``[PAD]``."""
    if not sequences:
        raise ValueError("nothing to pad: no sequences")
    length = length or max(len(s) for s in sequences)
    ids = torch.full((len(sequences), length), PAD, dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.as_tensor(list(seq)[:length], dtype=torch.long)
    return ids, ids != PAD


# ----------------------------------------------------------------------------- masking

def mask_tokens(ids: torch.Tensor, vocab_size: int, generator: torch.Generator, rate: float = 0.15,
                mask_share: float = 0.8, random_share: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking: ``(inputs, targets)`` for a batch of token ids.

    Each ordinary token (id >= ``len(SPECIALS)``; never padding, ``[CLS]``, ``[SEP]``...) is
    chosen independently with probability ``rate``.  Of the chosen tokens, a share
    ``mask_share`` becomes ``[MASK]``, a share ``random_share`` becomes a random ordinary token,
    and the rest stay as they are.  ``targets`` holds the original id at chosen positions and
    ``IGNORE`` elsewhere.  The draws come from ``generator``, so masking is repeatable.
    """
    if not 0 <= rate <= 1 or mask_share < 0 or random_share < 0 or mask_share + random_share > 1:
        raise ValueError(f"shares out of range: rate {rate}, mask {mask_share}, random {random_share}")
    ordinary = ids >= len(SPECIALS)
    chosen = (torch.rand(ids.shape, generator=generator) < rate) & ordinary
    how = torch.rand(ids.shape, generator=generator)
    to_mask = chosen & (how < mask_share)
    to_random = chosen & (how >= mask_share) & (how < mask_share + random_share)
    random_ids = torch.randint(len(SPECIALS), vocab_size, ids.shape, generator=generator)
    inputs = torch.where(to_mask, torch.full_like(ids, MASK), ids)
    inputs = torch.where(to_random, random_ids, inputs)
    targets = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
    return inputs, targets


def mlm_logits(model: MaskedLM, ids: torch.Tensor, padding_mask: torch.Tensor | None,
               positions: torch.Tensor) -> torch.Tensor:
    """The MLM head's logits at ``positions`` only (a (B, L) boolean mask): (n_positions, V).

    The same numbers as ``model(ids, padding_mask)[positions]``, without multiplying every
    position's hidden state by the whole embedding matrix.
    """
    hidden = model.encoder(ids, padding_mask)[positions]
    return model.transform(hidden) @ model.encoder.embed.tokens.weight.T + model.bias


def mlm_loss(model: MaskedLM, inputs: torch.Tensor, targets: torch.Tensor,
             padding_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, int, int]:
    """Mean cross-entropy (nats) over the chosen positions, the number of them predicted
    correctly (top-1) and the number of chosen positions."""
    chosen = targets != IGNORE
    if not bool(chosen.any()):
        raise ValueError("no position was chosen for prediction")
    logits = mlm_logits(model, inputs, padding_mask, chosen)
    truth = targets[chosen]
    loss = F.cross_entropy(logits, truth)
    return loss, int((logits.argmax(-1) == truth).sum()), int(truth.numel())


@torch.no_grad()
def fill_masks(model: MaskedLM, tokenizer: CharTokenizer, text: str, k: int = 5) -> list[list[tuple[str, float]]]:
    """For each ``[MASK]`` in ``text`` (written literally), the model's ``k`` likeliest
    characters and their probabilities, left to right."""
    parts = text.split("[MASK]")
    if len(parts) < 2:
        raise ValueError("the text has no [MASK] to fill")
    ids = [CLS]
    for i, part in enumerate(parts):
        ids += tokenizer.ids(part) + ([MASK] if i < len(parts) - 1 else [])
    ids = torch.tensor([ids + [SEP]])
    was_training = model.training
    model.eval()
    probs = torch.softmax(mlm_logits(model, ids, None, ids == MASK).double(), dim=-1)
    model.train(was_training)
    special = len(SPECIALS)
    out = []
    for row in probs:
        top = torch.topk(row[special:], k)               # only ordinary characters
        out.append([(tokenizer.symbols[int(i) + special], float(p)) for p, i in zip(top.values, top.indices)])
    return out


# ----------------------------------------------------------------------------- pre-training

def text_stream(tokenizer: CharTokenizer, documents: Iterable[str]) -> torch.Tensor:
    """All documents as one stream of ids, each followed by ``[SEP]``."""
    ids: list[int] = []
    for doc in documents:
        ids += tokenizer.ids(doc)
        ids.append(SEP)
    return torch.tensor(ids, dtype=torch.long)


def random_windows(stream: torch.Tensor, batch_size: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """(batch_size, length) sequences ``[CLS]`` + ``length - 1`` tokens of the stream from a
    random place.  No padding: every position of every sequence is text (or a ``[SEP]``
    between two documents), as in BERT's packed pre-training data."""
    if len(stream) < length:
        raise ValueError(f"the text ({len(stream)} tokens) is shorter than one window ({length})")
    starts = torch.randint(0, len(stream) - length + 2, (batch_size,), generator=generator)
    body = torch.stack([stream[s:s + length - 1] for s in starts.tolist()])
    return torch.cat([torch.full((batch_size, 1), CLS, dtype=torch.long), body], dim=1)


@dataclass
class MLMHistory:
    """What happened during pre-training, evaluated every ``eval_every`` steps."""

    step: list[int] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)      # nats, mean since the last evaluation
    valid_loss: list[float] = field(default_factory=list)      # nats per masked token
    valid_accuracy: list[float] = field(default_factory=list)  # top-1 on the masked tokens
    steps_done: int = 0
    train_cpu_seconds: float = 0.0

    def to_dict(self) -> dict:
        return {k: ([round(x, 6) for x in v] if isinstance(v, list) else round(v, 6) if isinstance(v, float) else v)
                for k, v in self.__dict__.items()}


@torch.no_grad()
def evaluate_mlm(model: MaskedLM, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[float, float]:
    """Loss (nats per masked token) and top-1 accuracy on fixed, already masked batches."""
    was_training = model.training
    model.eval()
    total, correct, count = 0.0, 0, 0
    for inputs, targets in batches:
        loss, right, n = mlm_loss(model, inputs, targets)
        total, correct, count = total + float(loss) * n, correct + right, count + n
    model.train(was_training)
    return total / count, correct / count


def fixed_masked_batches(stream: torch.Tensor, vocab_size: int, n_batches: int, batch_size: int, length: int,
                         seed: int = 1234) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Validation batches: windows and masks drawn once from ``seed``, the same at every evaluation."""
    generator = torch.Generator().manual_seed(seed)
    return [mask_tokens(random_windows(stream, batch_size, length, generator), vocab_size, generator)
            for _ in range(n_batches)]


def _optimizer(model: nn.Module, config: train.TrainConfig) -> torch.optim.AdamW:
    """AdamW, with weight decay on matrices only (not on biases, norms or ...)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)


def _step(model, optimizer, loss, config, step):
    for group in optimizer.param_groups:
        group["lr"] = config.lr_at(step)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    optimizer.step()


def pretrain(model: MaskedLM, stream: torch.Tensor, valid_batches, config: train.TrainConfig,
             history: MLMHistory | None = None) -> MLMHistory:
    """Train ``model`` with the MLM objective on random windows of ``config.context`` tokens of
    ``stream``, masked afresh at every step; evaluate on ``valid_batches`` every
    ``config.eval_every`` steps.  The learning rate follows ``config.lr_at`` (warm-up, cosine).
    CPU-seconds count the training steps only."""
    from tqdm import tqdm

    generator = torch.Generator().manual_seed(config.seed)
    optimizer = _optimizer(model, config)
    history = history or MLMHistory()
    vocab_size = model.config.vocab_size
    last = min(config.steps, config.stop_after or config.steps)
    losses: list[float] = []
    bar = tqdm(total=last, disable=not config.progress, file=sys.stderr, mininterval=2.0, unit="step",
               dynamic_ncols=True)
    model.train()
    for step in range(last):
        start = time.process_time()
        inputs, targets = mask_tokens(random_windows(stream, config.batch_size, config.context, generator),
                                      vocab_size, generator)
        loss, _, _ = mlm_loss(model, inputs, targets)
        _step(model, optimizer, loss, config, step)
        history.train_cpu_seconds += time.process_time() - start
        history.steps_done = step + 1
        losses.append(loss.item())
        bar.update(1)
        if (step + 1) % config.eval_every == 0 or step + 1 == last:
            valid_loss, valid_accuracy = evaluate_mlm(model, valid_batches)
            history.step.append(step + 1)
            history.cpu_seconds.append(round(history.train_cpu_seconds, 3))
            history.train_loss.append(float(np.mean(losses)))
            history.valid_loss.append(valid_loss)
            history.valid_accuracy.append(valid_accuracy)
            losses = []
            bar.set_postfix(loss=f"{valid_loss:.3f}", acc=f"{valid_accuracy:.3f}", refresh=False)
    bar.close()
    model.eval()
    return history


# ----------------------------------------------------------------------------- fine-tuning

def mean_pool(hidden: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
    """The mean of ``hidden`` (B, L, d) over the real positions of each row (``padding_mask``
    (B, L) True there): (B, d).  Padding does not count, whatever its hidden state."""
    weights = padding_mask.to(hidden.dtype)[..., None]
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


class SequenceClassifier(nn.Module):
    """An encoder and a head: pool the encoder's outputs to one vector per sequence, then a
    linear layer to ``n_classes`` scores (logits).

    ``pooling="mean"`` averages the outputs over the real tokens (see the module docstring for
    why it is the default); ``pooling="cls"`` takes the output at position 0, BERT's ``[CLS]``.
    """

    def __init__(self, encoder: Encoder, n_classes: int, pooling: str = "mean", dropout: float = 0.1):
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise ValueError(f"unknown pooling {pooling!r}; choose 'mean' or 'cls'")
        self.encoder, self.pooling = encoder, pooling
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.config.d_model, n_classes)
        nn.init.normal_(self.head.weight, 0.0, 0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, ids: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        if padding_mask is None:
            padding_mask = ids != PAD
        hidden = self.encoder(ids, padding_mask)
        pooled = mean_pool(hidden, padding_mask) if self.pooling == "mean" else hidden[:, 0]
        return self.head(self.drop(pooled))


@dataclass
class FineTuneHistory:
    step: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_cpu_seconds: float = 0.0


def _trim(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the columns that are padding in every row: a batch costs its longest sequence."""
    mask = ids != PAD
    length = max(1, int(mask.sum(1).max()))
    return ids[:, :length], mask[:, :length]


def fine_tune(model: SequenceClassifier, ids: torch.Tensor, labels: torch.Tensor, config: train.TrainConfig,
              log_every: int = 10) -> FineTuneHistory:
    """Train the whole classifier (encoder and head) with cross-entropy for ``config.steps``
    steps of ``config.batch_size`` examples (the rows of ``ids``, padded with ``[PAD]``), read
    in a fresh random order each epoch; learning rate from ``config.lr_at``."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    if len(ids) != len(labels) or len(ids) == 0:
        raise ValueError(f"{len(ids)} sequences and {len(labels)} labels")
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = _optimizer(model, config)
    history, order, losses = FineTuneHistory(), torch.empty(0, dtype=torch.long), []
    batch_size = min(config.batch_size, len(ids))
    model.train()
    for step in range(config.steps):
        start = time.process_time()
        if len(order) < batch_size:
            order = torch.cat([order, torch.randperm(len(ids), generator=generator)])
        rows, order = order[:batch_size], order[batch_size:]
        x, mask = _trim(ids[rows])
        loss = F.cross_entropy(model(x, mask), labels[rows])
        _step(model, optimizer, loss, config, step)
        history.train_cpu_seconds += time.process_time() - start
        losses.append(loss.item())
        if (step + 1) % log_every == 0 or step + 1 == config.steps:
            history.step.append(step + 1)
            history.train_loss.append(float(np.mean(losses)))
            losses = []
    model.eval()
    return history


@torch.no_grad()
def predict(model: nn.Module, ids: torch.Tensor, batch_size: int = 250) -> torch.Tensor:
    """The predicted class of each row of ``ids``.  Rows are batched shortest first, so each
    batch carries little padding; the answers come back in the original order."""
    was_training = model.training
    model.eval()
    lengths = (ids != PAD).sum(1)
    order = torch.argsort(lengths, stable=True)
    out = torch.empty(len(ids), dtype=torch.long)
    for a in range(0, len(ids), batch_size):
        rows = order[a:a + batch_size]
        x, mask = _trim(ids[rows])
        out[rows] = model(x, mask).argmax(-1)
    model.train(was_training)
    return out


def accuracy(model: nn.Module, ids: torch.Tensor, labels) -> float:
    """The share of rows whose predicted class is the label."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    return float((predict(model, ids) == labels).double().mean())


# ----------------------------------------------------------------------------- the pre-training command

@dataclass(frozen=True)
class Recipe:
    """A pre-training run: the encoder's shape, the training schedule and the text."""

    name: str
    description: str
    model: dict                      # TransformerConfig fields, without vocab_size and pad_id
    train: train.TrainConfig
    min_count: int = 2               # characters rarer than this in the text become [UNK]
    reviews: bool = True             # add the training reviews' text (never their labels)
    valid_batches: int = 8


# BERT is post-norm with learned positions; a short run on one core learns faster with pre-norm
# (stable at a higher learning rate) and rotary positions (nearby characters are told apart
# from the start, instead of learning 64 position vectors first).
RECIPES: dict[str, Recipe] = {r.name: r for r in [
    Recipe("mlm-zh",
           "BERT-style character MLM on Chinese: People's Daily (train split) and the training reviews' text",
           dict(d_model=128, n_heads=4, n_layers=4, d_ff=512, max_len=64, norm_first=True, positions="rotary",
                dropout=0.0),
           train.TrainConfig(steps=1800, batch_size=64, context=64, lr=2e-3, warmup=100, min_lr_ratio=0.1,
                             weight_decay=0.01, grad_clip=1.0, eval_every=100, seed=0, progress=True)),
]}


def pretraining_documents(recipe: Recipe, split: str) -> list[str]:
    """The unlabelled text of a split: People's Daily paragraphs, then (if the recipe says so)
    the reviews' text without labels.  Test reviews are never used for pre-training."""
    if split == "test":
        raise ValueError("pre-training never reads the test split")
    documents = data.peoples_daily().split(split).splitlines()
    if recipe.reviews:
        documents += data.sentiment().texts(split)
    return documents


def checkpoint_dir() -> Path:
    """``checkpoints/pretrained/`` (apart from the ladder's rungs in ``checkpoints/``)."""
    from .paths import course_root

    return course_root() / "checkpoints" / "pretrained"


def build(recipe: Recipe, vocab_size: int) -> MaskedLM:
    return MaskedLM(TransformerConfig(vocab_size=vocab_size, pad_id=PAD, **recipe.model))


def run(recipe: Recipe, out_dir: Path, steps: int | None = None) -> dict:
    """Pre-train ``recipe`` (or only ``steps`` steps, a trial) on one thread, deterministically,
    and write ``NAME.safetensors`` and ``NAME.json`` to ``out_dir``."""
    with train.one_thread_deterministic():
        return _run(recipe, out_dir, steps)


def _run(recipe: Recipe, out_dir: Path, steps: int | None) -> dict:
    from safetensors.torch import save_file

    from .rungs import _cpu_name

    config = recipe.train if steps is None else train.TrainConfig(**{**asdict(recipe.train), "steps": steps})
    documents = pretraining_documents(recipe, "train")
    tokenizer = CharTokenizer.from_texts(documents, min_count=recipe.min_count)
    stream = text_stream(tokenizer, documents)
    valid_stream = text_stream(tokenizer, pretraining_documents(recipe, "valid"))
    valid = fixed_masked_batches(valid_stream, len(tokenizer), recipe.valid_batches, config.batch_size,
                                 config.context)
    train.seed_everything(config.seed)
    model = build(recipe, len(tokenizer))
    started, wall = datetime.datetime.now(datetime.timezone.utc), time.monotonic()
    history = pretrain(model, stream, valid, config)
    log = {
        "name": recipe.name, "description": recipe.description, "kind": "pretrained-mlm",
        "model": dict(recipe.model, vocab_size=len(tokenizer), pad_id=PAD), "train": asdict(config),
        "text": {"documents": len(documents), "tokens": len(stream), "reviews": recipe.reviews,
                 "min_count": recipe.min_count, "valid_tokens": len(valid_stream)},
        "parameters": train.count_parameters(model), "history": history.to_dict(),
        "final_valid_loss": round(history.valid_loss[-1], 4),
        "final_valid_accuracy": round(history.valid_accuracy[-1], 4),
        "train_cpu_seconds": round(history.train_cpu_seconds, 1),
        "wall_seconds": round(time.monotonic() - wall, 1),
        "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "machine": {"cpu": _cpu_name(), "python": platform.python_version(), "torch": torch.__version__,
                    "threads": torch.get_num_threads()},
        "started": started.isoformat(timespec="seconds"),
        "trial": steps is not None,
        "characters": tokenizer.characters,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out_dir / f"{recipe.name}.safetensors",
              metadata={"recipe": recipe.name})
    (out_dir / f"{recipe.name}.json").write_text(json.dumps(log, indent=1, ensure_ascii=False) + "\n",
                                                 encoding="utf-8")
    return log


def load(name: str, directory: Path | None = None) -> tuple[MaskedLM, CharTokenizer, dict]:
    """The pre-trained model ``name``, its tokenizer and its log."""
    from safetensors.torch import load_file

    directory = directory or checkpoint_dir()
    weights, log_path = directory / f"{name}.safetensors", directory / f"{name}.json"
    if not weights.is_file() or not log_path.is_file():
        raise FileNotFoundError(f"no pre-trained model {name!r} in {directory}: "
                                f"make it with `python -m tinylm pretrain {name}`")
    log = json.loads(log_path.read_text(encoding="utf-8"))
    tokenizer = CharTokenizer(log["characters"])
    model = MaskedLM(TransformerConfig(**log["model"]))
    model.load_state_dict(load_file(weights))
    return model.eval(), tokenizer, log


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="a recipe name (omit to list them)")
    parser.add_argument("--steps", type=int, help="train only this many steps (a trial; marked in the log)")
    parser.add_argument("--out-dir", help="where to write (default: <course root>/checkpoints/pretrained)")
    parser.set_defaults(run=run_command)


def run_command(args) -> int:
    if args.name is None:
        for recipe in RECIPES.values():
            print(f"{recipe.name:<8} {recipe.train.steps:>6} steps  {recipe.description}")
        return 0
    recipe = RECIPES.get(args.name)
    if recipe is None:
        print(f"error: no recipe {args.name!r}; choose one of {sorted(RECIPES)}", file=sys.stderr)
        return 2
    log = run(recipe, Path(args.out_dir) if args.out_dir else checkpoint_dir(), steps=args.steps)
    print(f"{recipe.name}: {log['parameters']:,} parameters, {log['history']['steps_done']} steps, "
          f"{log['train_cpu_seconds']:.0f} CPU-s, validation MLM loss {log['final_valid_loss']:.3f} nats, "
          f"accuracy {log['final_valid_accuracy']:.1%}, peak {log['peak_mb']} MB")
    return 0
