"""Training a neural language model: the one loop every neural model of the course uses.

A language model here is a ``torch.nn.Module`` whose ``forward(x, state=None)`` takes token ids
``x`` of shape (batch, time) and returns ``(logits, state)``: a score for every token of the
vocabulary at every position, predicting the *next* token, and a state to carry into the next
chunk of text (``None`` for models without one, such as the MLP and the Transformer).  Models
that carry a state set ``stateful = True``.

The loop holds the training practice that every later lab reuses:

- **mini-batches** (小批量).  A *stateless* model gets windows of ``context + 1`` tokens cut at
  random places; a *stateful* one (an RNN) reads ``batch_size`` parallel streams of the text,
  one chunk after another, and keeps its state between chunks: backpropagation through time is
  truncated at the chunk boundary, but the model still sees a long past.
- **a learning-rate schedule** (学习率调度): a linear warm-up, then a cosine decay to
  ``min_lr_ratio`` of the peak, over a fixed number of steps.
- **gradient clipping** (梯度裁剪): the gradient is scaled down when its norm exceeds
  ``grad_clip``, which tames the exploding gradients of recurrent networks.
- **early stopping** (早停) on the validation split: the weights with the best validation score
  are kept and, at the end, put back (``restore_best``); with ``patience`` training stops after
  that many evaluations without improvement.
- **seeds**: :func:`seed_everything` before building the model makes a run repeatable on one
  machine (on another CPU, float32 sums may round differently).

Progress goes to a tqdm bar on stderr; the :class:`History` records steps, CPU-seconds and
bits per character, and :meth:`History.plot` draws the loss curves.
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

LN2 = math.log(2.0)
"""A loss in nats divided by ln 2 is a loss in bits."""


@contextlib.contextmanager
def one_thread_deterministic():
    """Run the block on one thread with deterministic algorithms, as the long recorded runs do
    (rungs, pre-training), then restore the settings."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch, so that a run repeats exactly on the same machine."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class TrainConfig:
    """How to train; the defaults suit a character model on one CPU core."""

    steps: int = 1000            # optimizer steps in all (the schedule is defined over them)
    batch_size: int = 32
    context: int = 128           # tokens per training window (or per chunk, for a stateful model)
    lr: float = 3e-3             # peak learning rate of AdamW
    warmup: int = 50             # steps of linear warm-up
    min_lr_ratio: float = 0.1    # the cosine decays to this fraction of the peak
    weight_decay: float = 0.01
    grad_clip: float | None = 1.0
    eval_every: int = 100        # evaluate on the validation split every this many steps
    eval_tokens: int | None = 100_000   # how much of the validation split (None: all of it)
    patience: int | None = None  # stop after this many evaluations without improvement
    restore_best: bool = True    # end with the weights that scored best on validation
    seed: int = 0
    progress: bool = True        # a tqdm progress bar on stderr
    stop_after: int | None = None  # run only the first steps of the schedule (a short live version)
    precision: str = "fp32"      # "bf16": mixed precision, matrix products in bfloat16 (weights stay fp32)

    def lr_at(self, step: int) -> float:
        """The learning rate for optimizer step ``step`` (0-based)."""
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        t = (step - self.warmup) / max(1, self.steps - self.warmup)
        return self.lr * (self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


@dataclass
class History:
    """What happened during training."""

    step: list[int] = field(default_factory=list)          # at each evaluation
    cpu_seconds: list[float] = field(default_factory=list)
    wall_seconds: list[float] = field(default_factory=list)   # the same, by the clock on the wall
    train_bpc: list[float] = field(default_factory=list)   # mean over the steps since the last evaluation
    valid_bpc: list[float] = field(default_factory=list)
    best_step: int = 0
    best_valid_bpc: float = math.inf
    steps_done: int = 0
    train_cpu_seconds: float = 0.0                        # training only, evaluations excluded
    train_wall_seconds: float = 0.0
    stopped_early: bool = False

    def to_dict(self) -> dict:
        return {k: (v if not isinstance(v, float) else round(v, 6)) for k, v in self.__dict__.items()}

    def plot(self, ax=None, label: str = "", x: str = "step"):
        """Training and validation bits per character against steps (or ``x="cpu_seconds"``)."""
        import matplotlib.pyplot as plt

        ax = ax or plt.subplots(figsize=(6.4, 4))[1]
        xs = self.step if x == "step" else self.cpu_seconds
        prefix = f"{label}, " if label else ""
        line, = ax.plot(xs, self.train_bpc, alpha=0.6, label=f"{prefix}training")
        ax.plot(xs, self.valid_bpc, color=line.get_color(), marker="o", markersize=3, label=f"{prefix}validation")
        ax.set_xlabel("optimizer step" if x == "step" else "training CPU-seconds")
        ax.set_ylabel("bits per character")
        ax.grid(alpha=0.3)
        ax.legend()
        return ax


def count_parameters(model: torch.nn.Module) -> int:
    """Trainable parameters, each shared tensor counted once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ----------------------------------------------------------------------------- batches

class RandomWindows:
    """Batches of windows of ``context + 1`` tokens, each starting at a random place."""

    def __init__(self, ids: torch.Tensor, batch_size: int, context: int, generator: torch.Generator):
        if len(ids) <= context + 1:
            raise ValueError(f"the training text ({len(ids)} tokens) is shorter than one window ({context + 1})")
        self.ids, self.batch_size, self.context, self.generator = ids, batch_size, context, generator

    def next(self):
        starts = torch.randint(0, len(self.ids) - self.context - 1, (self.batch_size,), generator=self.generator)
        rows = torch.stack([self.ids[s:s + self.context + 1] for s in starts.tolist()])
        return rows[:, :-1], rows[:, 1:], False


class Streams:
    """``batch_size`` parallel streams through the text, read ``context`` tokens at a time.

    Stream ``b`` starts at ``b / batch_size`` of the way through the text; each batch continues
    every stream where the last one stopped, so a stateful model may carry its state.  At the
    end the streams start over (``reset`` is True: drop the state).
    """

    def __init__(self, ids: torch.Tensor, batch_size: int, context: int):
        length = (len(ids) - 1) // batch_size
        if length <= context:
            raise ValueError(f"the training text is too short for {batch_size} streams of {context} tokens")
        self.x = ids[: length * batch_size].view(batch_size, length)
        self.y = ids[1: length * batch_size + 1].view(batch_size, length)
        self.context, self.position = context, 0

    def next(self):
        reset = self.position + self.context > self.x.shape[1]
        if reset:
            self.position = 0
        a, b = self.position, self.position + self.context
        self.position = b
        return self.x[:, a:b], self.y[:, a:b], reset or a == 0


# ----------------------------------------------------------------------------- evaluation

@torch.no_grad()
def log2probs(model: torch.nn.Module, ids, context: int = 256, streams: int = 16) -> np.ndarray:
    """log2 P(token_t | the tokens before it) for t = 1 .. len(ids) - 1, under ``model``.

    A stateful model reads the text as ``streams`` parallel pieces, carrying its state through
    each piece (only the first token of each piece goes without context).  A stateless model
    reads overlapping windows of ``context`` tokens and scores only the second half of each
    window, so every prediction (after the first half window) sees at least ``context / 2``
    tokens of past.
    """
    ids = torch.as_tensor(np.asarray(ids), dtype=torch.long)
    was_training = model.training
    model.eval()
    try:
        if getattr(model, "stateful", False):
            out = _log2probs_streams(model, ids, context, streams)
        else:
            out = _log2probs_windows(model, ids, context)
    finally:
        model.train(was_training)
    return out


def _log2probs_streams(model, ids, chunk, streams):
    n = len(ids) - 1
    streams = max(1, min(streams, n // max(chunk, 1) or 1))
    bounds = np.linspace(0, n, streams + 1).astype(int)
    length = int(np.max(np.diff(bounds)))
    x = torch.zeros(streams, length, dtype=torch.long)
    y = torch.zeros(streams, length, dtype=torch.long)
    mask = torch.zeros(streams, length, dtype=torch.bool)
    for s, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        x[s, : b - a], y[s, : b - a], mask[s, : b - a] = ids[a:b], ids[a + 1:b + 1], True
    out = torch.empty(streams, length, dtype=torch.float64)
    state = None
    for a in range(0, length, chunk):
        logits, state = model(x[:, a:a + chunk], state)
        out[:, a:a + chunk] = _token_log2probs(logits, y[:, a:a + chunk])
    return np.concatenate([out[s, : b - a].numpy() for s, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))])


def _log2probs_windows(model, ids, context, batch: int = 32):
    n = len(ids) - 1                           # targets ids[1..n] are out[0..n-1]
    stride = max(1, context // 2)
    plans, done, start = [], 0, 0              # (window start, first target kept, targets in window)
    while done < n:
        length = min(context, n - start)
        plans.append((start, done - start, length))
        done = start + length
        start = max(0, done - context + stride)
    out = np.empty(n, dtype=np.float64)
    full = [plan for plan in plans if plan[2] == context]
    for i in range(0, len(full), batch):
        _score_windows(model, ids, full[i:i + batch], out)
    for plan in plans:
        if plan[2] != context:                 # a text shorter than one window, or its end
            _score_windows(model, ids, [plan], out)
    return out


def _score_windows(model, ids, group, out):
    """Score windows of equal length in one batch and keep each one's new targets."""
    x = torch.stack([ids[s:s + length] for s, _, length in group])
    y = torch.stack([ids[s + 1:s + length + 1] for s, _, length in group])
    logits, _ = model(x)
    lp = _token_log2probs(logits, y).numpy()
    for row, (s, keep, length) in enumerate(group):
        out[s + keep:s + length] = lp[row, keep:length]


def _token_log2probs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logp = F.log_softmax(logits.double(), dim=-1)
    return logp.gather(-1, targets[..., None])[..., 0] / LN2


def bits_per_char(model, ids, context: int = 256, n_chars: int | None = None) -> float:
    """Bits per character of ``ids`` under ``model`` (``n_chars`` for subword tokens)."""
    lp = log2probs(model, ids, context=context)
    return float(-lp.sum() / (n_chars if n_chars is not None else len(lp)))


# ----------------------------------------------------------------------------- the loop

def train(model: torch.nn.Module, train_ids, valid_ids, config: TrainConfig = TrainConfig(),
          history: History | None = None, valid_chars: int | None = None,
          train_chars: int | None = None) -> History:
    """Train ``model`` on ``train_ids``, evaluating on ``valid_ids``; return the :class:`History`.

    CPU-seconds count the training steps only (``time.process_time``), not the evaluations.
    For subword tokens pass the characters the ids spell (``valid_chars``, ``train_chars``)
    and the history is in bits per character; otherwise it is in bits per token.
    """
    from tqdm import tqdm   # plain text on stderr: no widget library needed

    train_ids = torch.as_tensor(np.asarray(train_ids), dtype=torch.long)
    if valid_chars is not None and config.eval_tokens is not None and config.eval_tokens < len(valid_ids):
        raise ValueError("valid_chars counts all of valid_ids: set eval_tokens=None and cut the text instead")
    train_scale = (len(train_ids) / train_chars) if train_chars else 1.0
    valid_ids = np.asarray(valid_ids)[: config.eval_tokens]
    generator = torch.Generator().manual_seed(config.seed)
    stateful = getattr(model, "stateful", False)
    batches = (Streams(train_ids, config.batch_size, config.context) if stateful
               else RandomWindows(train_ids, config.batch_size, config.context, generator))
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
    history = history or History()
    best_state, since_best, losses, state = None, 0, [], None
    last = min(config.steps, config.stop_after or config.steps)
    bar = tqdm(total=last, disable=not config.progress, file=sys.stderr, mininterval=2.0,
               unit="step", dynamic_ncols=True)
    model.train()
    for step in range(last):
        start, wall = time.process_time(), time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = config.lr_at(step)
        x, y, reset = batches.next()
        if reset or state is None:
            state = None
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.precision == "bf16"):
            logits, state = model(x, state)
        if state is not None:                  # truncate backpropagation through time here
            state = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        history.train_cpu_seconds += time.process_time() - start
        history.train_wall_seconds += time.perf_counter() - wall
        history.steps_done = step + 1
        losses.append(loss.item() / LN2 * train_scale)
        bar.update(1)
        if (step + 1) % config.eval_every == 0 or step + 1 == last:
            valid = bits_per_char(model, valid_ids, context=config.context, n_chars=valid_chars)
            history.step.append(step + 1)
            history.cpu_seconds.append(round(history.train_cpu_seconds, 3))
            history.wall_seconds.append(round(history.train_wall_seconds, 3))
            history.train_bpc.append(float(np.mean(losses)))
            history.valid_bpc.append(valid)
            losses = []
            bar.set_postfix(train=f"{history.train_bpc[-1]:.3f}", valid=f"{valid:.3f}", refresh=False)
            if valid < history.best_valid_bpc:
                history.best_valid_bpc, history.best_step, since_best = valid, step + 1, 0
                if config.restore_best:
                    best_state = copy.deepcopy(model.state_dict())
            else:
                since_best += 1
                if config.patience is not None and since_best >= config.patience:
                    history.stopped_early = True
                    break
    bar.close()
    if config.restore_best and best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history


@torch.no_grad()
def sample(model: torch.nn.Module, prompt_ids, length: int, temperature: float = 1.0,
           generator: torch.Generator | None = None, context: int | None = None) -> list[int]:
    """Draw ``length`` tokens after ``prompt_ids``, one at a time, at ``temperature``."""
    if temperature <= 0:
        raise ValueError("temperature must be positive")
    generator = generator or torch.Generator().manual_seed(0)
    model.eval()
    ids = list(int(i) for i in prompt_ids)
    if not ids:
        raise ValueError("sampling needs a prompt of at least one token")
    stateful = getattr(model, "stateful", False)
    state, out = None, []
    x = torch.tensor([ids])
    for _ in range(length):
        if not stateful and context:
            x = x[:, -context:]
        logits, state = model(x, state)
        probs = F.softmax(logits[0, -1].double() / temperature, dim=-1)
        nxt = int(torch.multinomial(probs, 1, generator=generator))
        out.append(nxt)
        x = torch.tensor([[nxt]]) if stateful else torch.cat([x, torch.tensor([[nxt]])], dim=1)
    return out
