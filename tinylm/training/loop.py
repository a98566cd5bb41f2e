"""The one training loop: every model of the course is trained by :func:`train` with an objective.

What is learnt is said by an **objective** (目标), one class each in this package:

- :class:`~tinylm.training.causal_lm.CausalLM`: predict the next token (n-gram-free LMs, GPT);
- :class:`~tinylm.training.masked_lm.MaskedLM`: predict hidden tokens (BERT's pre-training);
- :class:`~tinylm.training.seq2seq.Seq2Seq`: write the answer to a source (T5, teacher forcing);
- :class:`~tinylm.training.classification.Classification`: label a text (fine-tuning).

An objective draws its own batches (from a generator seeded with ``config.seed``), computes the
loss of a batch, and scores the model on its validation data.  The loop holds the training
practice that every lab reuses:

- **AdamW** with weight decay on the weight matrices only (:func:`make_optimizer`);
- **a learning-rate schedule** (学习率调度): a linear warm-up, then a cosine decay to
  ``min_lr_ratio`` of the peak, over a fixed number of steps (:meth:`TrainConfig.lr_at`);
- **gradient clipping** (梯度裁剪): the gradient is scaled down when its norm exceeds
  ``grad_clip``, which tames the exploding gradients of recurrent networks;
- **evaluation** every ``eval_every`` steps and **early stopping** (早停): the weights with the
  best validation score are kept and put back at the end (``restore_best``); with ``patience``
  training stops after that many evaluations without improvement;
- **seeds**: :func:`seed_everything` before building the model makes a run repeatable on one
  machine (on another CPU, float32 sums may round differently); ``stop_after`` runs only the
  first steps of the schedule, exactly as the full run starts;
- **gradient accumulation** (梯度累积): with ``accumulate=k`` a step adds up the gradients of
  ``k`` micro-batches of ``batch_size / k`` rows, each loss divided by ``k``, before it updates
  the weights: the update of a batch of ``batch_size`` rows with the activation memory of a
  batch ``k`` times smaller (exactly so when every row has the same number of predicted tokens,
  as windows of text do; to float32 rounding);
- **mixed precision** (混合精度): ``precision="bf16"`` runs the objectives' forward passes under
  :func:`autocast`;
- **data parallelism** (数据并行): under ``torchrun`` every process trains on its own shard of
  each batch and the gradients are averaged over the processes
  (:mod:`tinylm.training.distributed`); alone, a process trains as before.

Progress goes to a tqdm bar on stderr; the :class:`History` records the training loss, the
validation metrics, steps and CPU-seconds.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from ..models.base import Config

LN2 = math.log(2.0)
"""A loss in nats divided by ln 2 is a loss in bits."""

PRECISIONS = ("fp32", "bf16")


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


@dataclass(frozen=True)
class TrainConfig(Config):
    """How to train; the defaults suit a character model on one CPU core."""

    steps: int = 1000            # optimizer steps in all (the schedule is defined over them)
    batch_size: int = 32
    context: int = 128           # tokens per training window (or per chunk, for a stateful model)
    lr: float = 3e-3             # peak learning rate of AdamW
    warmup: int = 50             # steps of linear warm-up
    min_lr_ratio: float = 0.1    # the cosine decays to this fraction of the peak
    weight_decay: float = 0.01
    grad_clip: float | None = 1.0
    eval_every: int = 100        # evaluate on the validation data every this many steps (and at the end)
    patience: int | None = None  # stop after this many evaluations without improvement
    restore_best: bool = True    # end with the weights that scored best on validation
    seed: int = 0
    progress: bool = True        # a tqdm progress bar on stderr
    stop_after: int | None = None  # run only the first steps of the schedule (a short live version)
    precision: str = "fp32"      # "bf16": mixed precision, matrix products in bfloat16 (weights stay fp32)
    accumulate: int = 1          # micro-batches per step (gradient accumulation); batch_size is their total

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1 or self.eval_every < 1:
            raise ValueError("steps, batch_size and eval_every must be positive")
        if self.stop_after is not None and not 1 <= self.stop_after <= self.steps:
            raise ValueError(f"stop_after must be between 1 and steps ({self.steps}), got {self.stop_after}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.accumulate < 1 or self.batch_size % self.accumulate:
            raise ValueError(f"accumulate must be a positive divisor of batch_size ({self.batch_size}), "
                             f"got {self.accumulate}")

    @property
    def last_step(self) -> int:
        """How many steps this run takes: ``steps``, or ``stop_after`` of them."""
        return self.stop_after or self.steps

    def lr_at(self, step: int) -> float:
        """The learning rate for optimizer step ``step`` (0-based)."""
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        t = (step - self.warmup) / max(1, self.steps - self.warmup)
        return self.lr * (self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


class Objective(Protocol):
    """What the loop needs from an objective (see the module docstring)."""

    unit: str                     # the unit of the training loss it reports ("bpc", "nats")
    monitor: str                  # the validation metric that chooses the best weights
    higher_is_better: bool        # whether a larger value of ``monitor`` is better

    def start(self, model, config: TrainConfig) -> None:
        """Get ready for a run: seed the batches, reset any carried state."""

    def loss(self, model) -> tuple[torch.Tensor, float]:
        """Draw the next batch; return the loss to differentiate and its value in ``unit``."""

    def evaluate(self, model) -> dict[str, float]:
        """The validation metrics (an empty dict when there is no validation data)."""


@dataclass
class History:
    """What happened during training.

    At each evaluation: the step, the training CPU- and wall-clock seconds so far, the mean
    training loss since the previous evaluation (in ``unit``) and each validation metric
    (``valid["bpc"]``, ``valid["exact_match"]``...).  ``best_step`` and ``best_valid`` are the
    evaluation with the best ``monitor`` metric.
    """

    unit: str = "bpc"
    monitor: str = "bpc"
    step: list[int] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)
    wall_seconds: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    valid: dict[str, list[float]] = field(default_factory=dict)
    best_step: int = 0
    best_valid: float | None = None
    steps_done: int = 0
    train_cpu_seconds: float = 0.0               # training steps only, evaluations excluded
    train_wall_seconds: float = 0.0
    stopped_early: bool = False
    snapshots: dict[int, dict] = field(default_factory=dict, repr=False)   # step -> a copy of the weights

    def to_dict(self) -> dict:
        """Everything but the snapshots, floats rounded to 6 digits (what a run's log keeps)."""
        def rounded(value):
            if isinstance(value, float):
                return round(value, 6)
            if isinstance(value, list):
                return [rounded(v) for v in value]
            if isinstance(value, dict):
                return {k: rounded(v) for k, v in value.items()}
            return value
        return {k: rounded(v) for k, v in self.__dict__.items() if k != "snapshots"}

    @classmethod
    def from_dict(cls, data: dict) -> "History":
        return cls(**data)


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on the weight matrices (and embeddings) only, not on biases or
    normalisation scales, which decay would pull towards zero for no benefit."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)


def autocast(precision: str):
    """The context in which an objective runs its model's forward pass: bfloat16 matrix products
    on the CPU for ``"bf16"``, nothing for ``"fp32"``.

    Under autocast the matrix products (``linear``, ``matmul``, ``bmm``, attention) take bfloat16
    copies of their inputs and return bfloat16; operations that need the range or precision of
    float32 (softmax, normalisation, losses) still compute in float32; the weights, their
    gradients and the optimizer's states stay float32."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


def train(model: torch.nn.Module, objective: Objective, config: TrainConfig = TrainConfig(),
          snapshots: tuple[int, ...] = ()) -> History:
    """Train ``model`` on ``objective`` as ``config`` says; return the :class:`History`.

    CPU-seconds count the training steps only (``time.process_time``), not the evaluations.
    After each step listed in ``snapshots`` a copy of the weights is kept in
    ``history.snapshots`` (load one with ``model.load_state_dict``), to look at a half-trained
    model.  The model is left in evaluation mode.

    The objective draws micro-batches of ``batch_size / (accumulate * world_size)`` rows (the
    whole batch when both are 1).  Under ``torchrun`` each rank draws its own with the seed
    ``seed + rank``, the gradients are averaged over the ranks once a step, only rank 0
    evaluates and shows progress, and every rank returns the same history (its training loss
    the mean over the ranks); see :mod:`tinylm.training.distributed`.
    """
    from tqdm import tqdm   # plain text on stderr: no widget library needed

    from . import distributed

    rank, world = distributed.world()
    shards = config.accumulate * world
    if config.batch_size % shards:
        raise ValueError(f"batch_size {config.batch_size} does not split into {config.accumulate} micro-batch(es) "
                         f"on each of {world} process(es)")
    if shards > 1 and getattr(model, "stateful", False):
        raise ValueError("gradient accumulation and data parallelism split a batch of independent rows; a stateful "
                         "model reads parallel streams and carries its state from batch to batch: train it with "
                         "accumulate=1 in one process")
    if shards == 1 and rank == 0:
        objective.start(model, config)
    else:
        objective.start(model, dataclasses.replace(config, batch_size=config.batch_size // shards, accumulate=1,
                                                   seed=distributed.shard_seed(config.seed, rank)))
    if world > 1:
        distributed.broadcast_parameters(model)
    optimizer = make_optimizer(model, config)
    history = History(unit=objective.unit, monitor=objective.monitor)
    sign = -1.0 if objective.higher_is_better else 1.0
    best_state, since_best, losses = None, 0, []
    last = config.last_step
    bar = tqdm(total=last, disable=not config.progress or rank != 0, file=sys.stderr, mininterval=2.0,
               unit="step", dynamic_ncols=True)
    model.train()
    for step in range(last):
        start, wall = time.process_time(), time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = config.lr_at(step)
        if config.accumulate == 1:
            loss, value = objective.loss(model)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        else:
            optimizer.zero_grad(set_to_none=True)
            value = 0.0
            for _ in range(config.accumulate):       # gradients add up in .grad until the step
                loss, micro_value = objective.loss(model)
                (loss / config.accumulate).backward()
                value += micro_value / config.accumulate
        if world > 1:
            distributed.average_gradients(model)
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        history.train_cpu_seconds += time.process_time() - start
        history.train_wall_seconds += time.perf_counter() - wall
        history.steps_done = step + 1
        losses.append(value)
        bar.update(1)
        if step + 1 in snapshots:
            history.snapshots[step + 1] = copy.deepcopy(model.state_dict())
        if (step + 1) % config.eval_every == 0 or step + 1 == last:
            metrics = objective.evaluate(model) if rank == 0 else None
            if world > 1:
                metrics = distributed.broadcast_object(metrics)
            model.train()
            history.step.append(step + 1)
            history.cpu_seconds.append(round(history.train_cpu_seconds, 3))
            history.wall_seconds.append(round(history.train_wall_seconds, 3))
            history.train_loss.append(float(np.mean(losses)) if world == 1
                                      else distributed.mean_over_ranks(float(np.mean(losses))))
            for name, metric in metrics.items():
                history.valid.setdefault(name, []).append(metric)
            losses = []
            bar.set_postfix(train=f"{history.train_loss[-1]:.3f}",
                            **{name: f"{metric:.3f}" for name, metric in metrics.items()}, refresh=False)
            if objective.monitor not in metrics:
                continue
            score = metrics[objective.monitor]
            if history.best_valid is None or sign * score < sign * history.best_valid:
                history.best_valid, history.best_step, since_best = score, step + 1, 0
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
