"""Rung runs: training a ladder rung for longer than a lab may, once, and keeping the result.

A lab must run in a few minutes, but counting is strong: a Kneser-Ney n-gram fitted in seconds is
hard to beat with a neural model trained for three minutes on one core.  So a rung of the ladder
may come from a longer run, made by a command and committed with its log:

    python -m tinylm rung train lstm        # at most 30 minutes on one core
    python -m tinylm rung list

The command seeds everything, uses one thread, trains the rung's recipe for its fixed number of
steps (the schedule depends on steps, never on the clock, so the run is repeatable), and writes

- ``checkpoints/NAME.safetensors``: the weights (float32, a few MB), and
- ``checkpoints/NAME.json``: the recipe, the training history (validation bpc against steps and
  CPU-seconds), the training CPU-seconds, the peak memory, and the versions and machine.

A lab then loads the checkpoint with :func:`load`, scores it on the test split, and records the
rung.  The test bpc is computed in the lab, from the committed weights, so nbval checks it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import data, train
from .bpe import BPETokenizer
from .mlp_lm import MLPConfig, MLPLanguageModel
from .paths import course_root
from .rnn import RecurrentConfig, RecurrentLM
from .transformer import DecoderLM, TransformerConfig
from .vocab import Vocabulary

MODELS = {"mlp": (MLPConfig, MLPLanguageModel), "recurrent": (RecurrentConfig, RecurrentLM),
          "transformer": (TransformerConfig, DecoderLM)}
"""Model families a recipe may use: name -> (config class, model class)."""


@dataclass(frozen=True)
class Recipe:
    """Everything a rung run needs: which corpus, which model, how to train it."""

    name: str
    description: str
    family: str                       # a key of MODELS
    model: dict                       # the model's config, without vocab_size
    train: train.TrainConfig
    corpus: str = "shakespeare"
    stage: str = "NLM"
    tokens: str = "char"              # "char", or "bpe-N": byte-level BPE with N merges learnt on train

    def build(self, vocab_size: int) -> torch.nn.Module:
        config_class, model_class = MODELS[self.family]
        return model_class(config_class(vocab_size=vocab_size, **self.model))


RECIPES: dict[str, Recipe] = {r.name: r for r in [
    Recipe("mlp", "Bengio-style MLP over the last 8 characters (embeddings 32, hidden 512)",
           "mlp", dict(context=8, embedding=32, hidden=512, dropout=0.1),
           train.TrainConfig(steps=3000, batch_size=32, context=128, lr=2e-3, warmup=100, min_lr_ratio=0.05,
                             eval_every=500, progress=True)),
    Recipe("rnn", "plain tanh RNN, one layer of 512 (Elman)",
           "recurrent", dict(cell="rnn", embedding=64, hidden=512, dropout=0.1),
           train.TrainConfig(steps=4000, batch_size=32, context=128, lr=1e-3, warmup=100, min_lr_ratio=0.05,
                             eval_every=500, grad_clip=0.5, progress=True)),
    Recipe("lstm", "LSTM, one layer of 512",
           "recurrent", dict(cell="lstm", embedding=64, hidden=512, dropout=0.1),
           train.TrainConfig(steps=6000, batch_size=32, context=128, lr=3e-3, warmup=100, min_lr_ratio=0.05,
                             eval_every=500, progress=True)),
    Recipe("gpt", "GPT with LLaMA-style blocks (RMSNorm, rotary positions, SwiGLU): 4 blocks of width 256, "
                  "4 heads, over BPE-1024 tokens; dropout 0.1 and weight decay 0.1",
           "transformer", dict(d_model=256, n_heads=4, n_layers=4, max_len=256, norm="rms", positions="rotary",
                               mlp="swiglu", dropout=0.1),
           train.TrainConfig(steps=3700, batch_size=8, context=256, lr=2e-3, warmup=100, min_lr_ratio=0.05,
                             weight_decay=0.1, eval_every=250, progress=True, precision="bf16"),
           stage="PLM", tokens="bpe-1024"),
    Recipe("gpt2style", "GPT with GPT-2's blocks (LayerNorm, learned positions, GELU): 4 blocks of width 256, "
                        "4 heads, over BPE-1024 tokens",
           "transformer", dict(d_model=256, n_heads=4, n_layers=4, max_len=256, dropout=0.0),
           train.TrainConfig(steps=4800, batch_size=8, context=256, lr=2e-3, warmup=100, min_lr_ratio=0.05,
                             eval_every=300, progress=True, precision="bf16"),
           stage="PLM", tokens="bpe-1024"),
]}


def checkpoint_dir() -> Path:
    return course_root() / "checkpoints"


def make_tokenizer(recipe: Recipe, corpus: data.Corpus):
    """The recipe's tokens: the corpus's characters, or BPE merges learnt on its training split
    (deterministic, a second or two)."""
    if recipe.tokens == "char":
        return Vocabulary(corpus.alphabet)
    if recipe.tokens.startswith("bpe-"):
        return BPETokenizer.train(corpus.train, int(recipe.tokens.removeprefix("bpe-")))
    raise ValueError(f"unknown tokens {recipe.tokens!r}: 'char' or 'bpe-N'")


def corpus_ids(recipe: Recipe, tokenizer=None):
    """The corpus, its tokenizer, and the train and validation ids."""
    corpus = data.load(recipe.corpus)
    tokenizer = tokenizer or make_tokenizer(recipe, corpus)
    return corpus, tokenizer, _encode(tokenizer, corpus.train), _encode(tokenizer, corpus.valid)


def _encode(tokenizer, text: str) -> np.ndarray:
    return np.asarray(tokenizer.encode(text), dtype=np.int64)


def validation(recipe: Recipe, config: train.TrainConfig, corpus: data.Corpus, tokenizer):
    """The validation ids a run evaluates on and the characters they spell.

    Characters: the first ``eval_tokens`` characters.  Subwords: the first ``eval_tokens``
    *characters* of the validation text, encoded, so that every recipe is judged on the same text.
    """
    text = corpus.valid[: config.eval_tokens]
    return _encode(tokenizer, text), len(text)


def run(recipe: Recipe, out_dir: Path, steps: int | None = None) -> dict:
    """Train ``recipe`` (or only ``steps`` steps, for a trial) on one thread, deterministically,
    and write its checkpoint and log."""
    with train.one_thread_deterministic():
        return _run(recipe, out_dir, steps)


def _run(recipe: Recipe, out_dir: Path, steps: int | None) -> dict:
    from safetensors.torch import save_model

    config = recipe.train if steps is None else train.TrainConfig(**{**asdict(recipe.train), "steps": steps})
    corpus = data.load(recipe.corpus)
    tokenizer = make_tokenizer(recipe, corpus)
    train_ids = _encode(tokenizer, corpus.train)
    valid_ids, valid_chars = validation(recipe, config, corpus, tokenizer)
    train.seed_everything(config.seed)
    model = recipe.build(len(tokenizer))
    started, wall = datetime.datetime.now(datetime.timezone.utc), time.monotonic()
    history = train.train(model, train_ids, valid_ids, replace(config, eval_tokens=None),
                          valid_chars=valid_chars, train_chars=len(corpus.train))
    log = {
        "name": recipe.name, "description": recipe.description, "stage": recipe.stage, "corpus": corpus.name,
        "family": recipe.family, "tokens": recipe.tokens, "model": dict(recipe.model, vocab_size=len(tokenizer)),
        "train": asdict(config),
        "parameters": train.count_parameters(model), "history": history.to_dict(),
        "train_cpu_seconds": round(history.train_cpu_seconds, 1),
        "wall_seconds": round(time.monotonic() - wall, 1),
        "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "machine": {"cpu": _cpu_name(), "python": platform.python_version(), "torch": torch.__version__,
                    "threads": torch.get_num_threads()},
        "started": started.isoformat(timespec="seconds"),
        "trial": steps is not None,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    if recipe.tokens != "char":
        tokenizer.save(out_dir / f"{recipe.name}.tokenizer.json")
    # save_model stores a tied tensor (a GPT's embedding and output layer) once
    save_model(model, str(out_dir / f"{recipe.name}.safetensors"), metadata={"recipe": recipe.name})
    (out_dir / f"{recipe.name}.json").write_text(json.dumps(log, indent=1) + "\n", encoding="utf-8")
    return log


def load(name: str, directory: Path | None = None) -> tuple[torch.nn.Module, dict]:
    """The trained model of rung ``name`` and its log, from ``checkpoints/``."""
    from safetensors.torch import load_model

    directory = directory or checkpoint_dir()
    weights, log_path = directory / f"{name}.safetensors", directory / f"{name}.json"
    if not weights.is_file() or not log_path.is_file():
        raise FileNotFoundError(f"no checkpoint for rung {name!r} in {directory}: "
                                f"train it with `python -m tinylm rung train {name}`")
    log = json.loads(log_path.read_text(encoding="utf-8"))
    config_class, model_class = MODELS[log["family"]]
    model = model_class(config_class(**log["model"]))
    load_model(model, str(weights))
    return model.eval(), log


def load_tokenizer(name: str, directory: Path | None = None):
    """The tokenizer rung ``name`` was trained with: characters, or its saved BPE merges."""
    directory = directory or checkpoint_dir()
    log = json.loads((directory / f"{name}.json").read_text(encoding="utf-8"))
    if log.get("tokens", "char") == "char":
        return Vocabulary(data.load(log["corpus"]).alphabet)
    return BPETokenizer.load(directory / f"{name}.tokenizer.json")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="rung_command", required=True)
    sub.add_parser("list", help="list the recipes")
    trainer = sub.add_parser("train", help="train a rung and write its checkpoint")
    trainer.add_argument("name", help="a recipe name (see: rung list)")
    trainer.add_argument("--steps", type=int, help="train only this many steps (a trial; marked in the log)")
    trainer.add_argument("--out-dir", help="where to write (default: <course root>/checkpoints)")
    parser.set_defaults(run=run_command)


def run_command(args) -> int:
    if args.rung_command == "list":
        for recipe in RECIPES.values():
            print(f"{recipe.name:<8} {recipe.train.steps:>6} steps  {recipe.description}")
        return 0
    recipe = RECIPES.get(args.name)
    if recipe is None:
        print(f"error: no recipe {args.name!r}; choose one of {sorted(RECIPES)}", file=sys.stderr)
        return 2
    log = run(recipe, Path(args.out_dir) if args.out_dir else checkpoint_dir(), steps=args.steps)
    history = log["history"]
    print(f"{recipe.name}: {log['parameters']:,} parameters, {history['steps_done']} steps, "
          f"{log['train_cpu_seconds']:.0f} CPU-s, best validation {history['best_valid_bpc']:.4f} bpc "
          f"at step {history['best_step']}, peak {log['peak_mb']} MB")
    return 0
