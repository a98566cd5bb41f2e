"""The emergence sweep: a family of small decoders learning to add, made by ``python -m tinylm emergence``.

Lab 17 asks whether an ability *emerges* with scale (Wei et al., 2022) or only looks as if it
does because of how it is scored (Schaeffer et al., 2023).  For that it needs models of
several sizes trained the same way on one task with exact answers.  :data:`SWEEP` says how:

- the task: adding two 5-digit numbers (:class:`tinylm.data.arithmetic.Addition`), every number
  written least significant digit first and padded with zeros, so that every answer has 6 tokens;
  100,000 training problems (operands of mixed lengths, some of them 0: see
  :func:`~tinylm.data.arithmetic.split_problems`), 1,000 validation and 2,000 test problems
  (operands uniform in 0-99,999), no problem in two splits in either order;
- the models: :class:`~tinylm.models.transformer.DecoderLM` with two layers and two heads,
  rotary positions (the digits that go together are a fixed distance apart, which rotary
  attention finds easily), widths ``d_model`` from 4 to 32, each width trained from two seeds;
- the training: the same for all, :class:`~tinylm.training.answer_lm.AnswerLM` (the loss on the
  answer's tokens only), 1,500 steps of 64 problems, AdamW at 3e-3 with warm-up and cosine decay,
  the weights of the last step kept (``restore_best=False``): every model sees the same problems
  in the same order for its seed, and its training compute grows with its size alone.

:meth:`Sweep.run` trains them one after another on one thread, deterministically, and writes one
checkpoint per model, ``checkpoints/emergence/d08-seed0/`` and so on (loaded with
:func:`tinylm.load`), and ``checkpoints/emergence/log.json``: the recipe, every run's parameters,
history, training tokens and FLOPs (6ND, Kaplan et al., 2020), CPU-seconds, the machine and the
code's commit.  The lab scores the models on the test problems; the validation problems are
what the runs were watched on.

How the recipe was chosen (trials while writing the lab, scored on validation problems, not
recorded): with the answer alone reversed and learned positions, or with operands of full
length only, models of these sizes sat for thousands of steps at the loss of guessing digits
from their frequencies, and whether one escaped depended more on its seed than on its size.
Writing every number backwards, rotary positions and operands of mixed lengths made that
wait shorter; it did not remove it for the smallest widths, where a seed may still leave a model
stuck at that plateau (the lab shows which).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import system
from ..data import arithmetic
from .answer_lm import AnswerLM
from .loop import TrainConfig, one_thread_deterministic, seed_everything, train

NAME = "emergence"
"""The folder the sweep writes under ``checkpoints/``."""


def training_flops(parameters: int, tokens: int) -> float:
    """Training compute by Kaplan et al.'s rule: about 6 floating-point operations per
    parameter per token read (2 for the forward pass, 4 for the backward pass)."""
    return 6.0 * parameters * tokens


@dataclass(frozen=True)
class Sweep:
    """A family of decoders of several widths, each trained the same way on one addition task."""

    digits: int = 5
    reverse: bool = True
    widths: tuple[int, ...] = (4, 8, 12, 16, 24, 32)   # multiples of 4: two heads, each of an even size (rotary)
    seeds: tuple[int, ...] = (0, 1)
    model: dict = field(default_factory=lambda: {"n_layers": 2, "n_heads": 2, "positions": "rotary"})
    train: TrainConfig = TrainConfig(steps=1500, batch_size=64, lr=3e-3, warmup=100, weight_decay=0.0,
                                     eval_every=500, restore_best=False, progress=False)
    n_train: int = 100_000
    n_valid: int = 1_000
    n_test: int = 2_000
    data_seed: int = 0
    mixed_lengths: bool = True

    def task(self) -> arithmetic.Addition:
        return arithmetic.Addition(self.digits, self.reverse)

    def splits(self) -> arithmetic.Splits:
        """The problems (a few seconds to draw); the same on every machine."""
        return arithmetic.split_problems(self.n_train, self.n_valid, self.n_test, self.digits, self.data_seed,
                                         self.mixed_lengths)

    def pairs(self, problems) -> list[tuple[list[int], list[int]]]:
        """(prompt ids, answer ids) for each problem."""
        task = self.task()
        ids = task.encode(problems)
        return [(row[: task.prompt_len].tolist(), row[task.prompt_len:].tolist()) for row in ids]

    def config(self, width: int):
        from ..models.transformer import TransformerConfig

        task = self.task()
        return TransformerConfig(vocab_size=len(arithmetic.SYMBOLS), d_model=width,
                                 max_len=task.prompt_len + task.answer_len, **self.model)

    @staticmethod
    def run_name(width: int, seed: int) -> str:
        return f"d{width:02d}-seed{seed}"

    def names(self) -> list[str]:
        return [self.run_name(w, s) for w in self.widths for s in self.seeds]

    def tokens_read(self) -> int:
        """Tokens each model reads in training: every position of every problem of every step."""
        task = self.task()
        return self.train.steps * self.train.batch_size * (task.prompt_len + task.answer_len - 1)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def run(self, out_dir: Path) -> dict:
        """Train every model of the family; write ``out_dir/<run>/`` checkpoints and
        ``out_dir/log.json``; return the log."""
        from ..checkpoint import save
        from ..models.transformer import DecoderLM

        out_dir = Path(out_dir)
        started, wall, cpu = datetime.datetime.now(datetime.timezone.utc), time.monotonic(), time.process_time()
        splits = self.splits()
        if splits.overlap():
            raise RuntimeError("the splits share problems")      # cannot happen: split_problems refuses repeats
        train_pairs, valid_pairs = self.pairs(splits.train), self.pairs(splits.valid)
        tokenizer = arithmetic.tokenizer()
        runs = []
        with one_thread_deterministic():
            for width in self.widths:
                for seed in self.seeds:
                    name = self.run_name(width, seed)
                    seed_everything(seed)
                    model = DecoderLM(self.config(width))
                    history = train(model, AnswerLM(train_pairs, valid_pairs), dataclasses.replace(self.train, seed=seed))
                    run = {"name": name, "width": width, "seed": seed, "parameters": model.num_parameters(),
                           "tokens": self.tokens_read(),
                           "flops": training_flops(model.num_parameters(), self.tokens_read()),
                           "train_cpu_seconds": round(history.train_cpu_seconds, 1),
                           "valid": {k: round(v[-1], 4) for k, v in history.valid.items()}}
                    save(out_dir / name, model, tokenizer,
                         {"name": name, "description": f"sweep {NAME}: width {width}, seed {seed}",
                          "recipe": self.to_dict(), **run, "history": history.to_dict()})
                    runs.append(run)
                    print(f"{name}: {run['parameters']:,} parameters, {run['train_cpu_seconds']:.0f} CPU-s, "
                          f"validation {run['valid']}", flush=True)
            log = {"name": NAME, "recipe": self.to_dict(), "runs": runs,
                   "problems": {"train": len(splits.train), "valid": len(splits.valid), "test": len(splits.test)},
                   "train_cpu_seconds": round(sum(r["train_cpu_seconds"] for r in runs), 1),
                   "cpu_seconds": round(time.process_time() - cpu, 1),
                   "wall_seconds": round(time.monotonic() - wall, 1), "peak_mb": round(system.peak_memory_mb()),
                   "machine": {**system.machine(), "threads": torch.get_num_threads()},
                   "started": started.isoformat(timespec="seconds"), "code": system.code_commit()}
        (out_dir / "log.json").write_text(json.dumps(log, indent=1) + "\n", encoding="utf-8")
        return log


SWEEP = Sweep()
"""The sweep that ``python -m tinylm emergence`` runs and Lab 17 scores."""


def load_family(folder: Path | None = None):
    """The sweep's log and its models: ``(log, {run name: model})``, from ``checkpoints/emergence``."""
    from ..checkpoint import load
    from ..paths import checkpoints_dir

    folder = Path(folder) if folder is not None else checkpoints_dir() / NAME
    log_path = folder / "log.json"
    if not log_path.is_file():
        raise FileNotFoundError(f"{log_path} is missing: make the family with `python -m tinylm emergence`")
    log = json.loads(log_path.read_text(encoding="utf-8"))
    return log, {run["name"]: load(folder / run["name"])[0] for run in log["runs"]}
