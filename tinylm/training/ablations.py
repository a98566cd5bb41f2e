"""Ablations (消融实验): variants of one model, trained for equal CPU-seconds, compared on validation.

An ablation changes one thing at a time and measures what it does.  Two things make such a
comparison fair, and both are easy to get wrong:

- **Equal size.**  A variant that is better only because it has more parameters says nothing
  about the part that was changed.  With ``match_parameters`` each variant's MLP width
  ``d_ff`` is set so that its parameter count is as close as it can be to the first variant's
  (parameters are linear in ``d_ff``, so two model builds give the width: :func:`matched_d_ff`).
- **Equal compute.**  A part that costs more per step (a gated MLP has three matrices, routing to
  experts has a loop) must be paid for.  Each variant is timed first for a few steps
  (:func:`time_steps`, CPU-seconds per step on one thread) and then given the number of steps
  that fills the same CPU budget.  The learning-rate schedule is defined over the steps, so the
  run repeats exactly once its steps are known: the log keeps them, and
  ``--reuse-steps`` trains with the logged steps instead of timing again.  A variant may instead
  take its steps from another (``steps_like``): equal steps, that is equal tokens seen.

Seeds matter as much: two runs of one variant with different seeds (a different initialisation
and different batches) differ too, and a difference between variants smaller than that is not
evidence.  Each variant runs with every seed of the study; the lab compares the differences
between variants with the differences between seeds.

Two studies, run by ``python -m tinylm ablate NAME`` (one thread, deterministic given the steps;
writes ``results/ablate-NAME.json`` with the recipe, each run's steps, CPU-seconds and
validation bits per character, and the code's commit; some runs' weights go to
``checkpoints/ablate-NAME/VARIANT/``):

- ``llama-parts``: GPT-2's block turned into LLaMA's one part at a time, cumulatively: RMSNorm,
  then rotary positions, then SwiGLU without biases, then grouped-query attention;
- ``moe``: a mixture of experts (:mod:`tinylm.models.moe`) with and without its load-balancing
  loss, against dense models of the same active parameters trained for the same steps and for
  the same CPU-seconds.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import data, system
from ..evaluation.metrics import bits_per_char
from ..inference.scoring import score
from ..models import build
from ..tokenizers import CharTokenizer
from .causal_lm import EVAL_TOKENS, CausalLM
from .loop import TrainConfig, one_thread_deterministic, seed_everything, train

TIMING_STEPS = (5, 25)
"""Steps a variant is timed for: the CPU-seconds from the end of step 5 to the end of step 25,
divided by 20 (the first steps are slower: memory is being allocated)."""

UTILISATION_WINDOWS = 64
"""Validation windows (of the training context) read at once to measure the experts' load."""


@dataclass(frozen=True)
class Variant:
    """One variant of a study: the options it changes in the study's base model."""

    name: str
    description: str
    model: dict = field(default_factory=dict)     # TransformerConfig options on top of the study's base
    steps_like: str | None = None                 # take the steps of that variant (equal tokens), not the budget's
    checkpoint: bool = False                      # keep the weights of its first seed's run


@dataclass(frozen=True)
class Study:
    """Variants of a decoder trained on a character corpus for equal CPU-seconds (see the module
    docstring), each with every seed, validated on the first ``eval_chars`` characters of the
    validation split."""

    name: str
    description: str
    base: dict                                    # TransformerConfig options shared by all variants
    variants: tuple[Variant, ...]
    train: TrainConfig                            # steps are set per variant; seed per run
    budget: float = 50.0                          # training CPU-seconds per run
    seeds: tuple[int, ...] = (0, 1)
    match_parameters: bool = False
    corpus: str = "shakespeare"
    eval_chars: int = EVAL_TOKENS

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise ValueError(f"study {self.name!r} has no variant {name!r}; its variants are "
                         f"{[v.name for v in self.variants]}")


def parameters_of(options: dict, vocab_size: int) -> int:
    """The parameter count of the decoder with these TransformerConfig options."""
    return build("decoder", dict(options, vocab_size=vocab_size)).num_parameters()


def matched_d_ff(options: dict, vocab_size: int, target: int) -> int:
    """The MLP width that brings the decoder with ``options`` closest to ``target`` parameters.

    The count is linear in ``d_ff`` (each block's MLP has two or three ``d_model x d_ff``
    matrices, and biases), so its value at two widths gives the slope and the answer."""
    a, b = 64, 128
    pa, pb = parameters_of(dict(options, d_ff=a), vocab_size), parameters_of(dict(options, d_ff=b), vocab_size)
    slope = (pb - pa) / (b - a)
    guess = a + (target - pa) / slope
    candidates = {max(1, int(np.floor(guess))), max(1, int(np.ceil(guess)))}
    return min(candidates, key=lambda w: (abs(parameters_of(dict(options, d_ff=w), vocab_size) - target), w))


def configurations(study: Study, vocab_size: int) -> dict[str, dict]:
    """Each variant's full TransformerConfig options (without ``vocab_size``), widths matched to
    the first variant's parameter count when the study says so."""
    out = {}
    for i, v in enumerate(study.variants):
        options = dict(study.base, **v.model)
        if study.match_parameters and i > 0 and "d_ff" not in v.model:
            target = parameters_of(out[study.variants[0].name], vocab_size)
            options["d_ff"] = matched_d_ff(options, vocab_size, target)
        out[v.name] = options
    return out


def time_steps(model, objective, config: TrainConfig) -> float:
    """CPU-seconds per training step of ``model`` (see :data:`TIMING_STEPS`); trains a copy's worth
    of steps on ``model``, so pass a fresh model that is thrown away afterwards."""
    first, last = TIMING_STEPS
    history = train(model, objective, dataclasses.replace(config, steps=last, eval_every=first, warmup=1,
                                                          progress=False, restore_best=False, stop_after=None))
    return (history.cpu_seconds[-1] - history.cpu_seconds[0]) / (last - first)


def expert_utilisation(model, ids: np.ndarray, context: int) -> list[list[float]]:
    """Each MoE layer's load over validation text: the fraction of routing choices each expert
    received, over :data:`UTILISATION_WINDOWS` consecutive windows of ``context`` characters read
    at once."""
    from ..models.moe import utilisation

    n = min(UTILISATION_WINDOWS, len(ids) // context)
    windows = torch.as_tensor(np.asarray(ids[: n * context]).reshape(n, context), dtype=torch.long)
    with torch.no_grad():
        model(windows)
    return [[round(f, 4) for f in layer] for layer in utilisation(model)]


def run(study: Study, out: Path, checkpoints: Path | None, seeds: tuple[int, ...] | None = None,
        budget: float | None = None, reuse: dict | None = None, progress: bool = True) -> dict:
    """Time every variant, then train each with every seed for the budget's steps; write the log
    (``out``) after each run, and the weights of the variants marked ``checkpoint`` (first seed)
    under ``checkpoints``.  ``reuse``: a previous log of the study, whose steps are used instead
    of timing again (the run then repeats it)."""
    from ..checkpoint import save
    from ..models.moe import active_parameters

    seeds = tuple(seeds or study.seeds)
    budget = float(budget or study.budget)
    corpus = data.corpus(study.corpus)
    tokenizer = CharTokenizer(corpus.alphabet)
    train_ids = np.asarray(tokenizer.encode(corpus.train), dtype=np.int64)
    valid_ids = np.asarray(tokenizer.encode(corpus.valid[: study.eval_chars]), dtype=np.int64)
    options = configurations(study, len(tokenizer))
    log = {"study": study.name, "description": study.description, "recipe": study.to_dict(),
           "budget_cpu_seconds": budget, "seeds": list(seeds), "vocab_size": len(tokenizer),
           "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "code": system.code_commit(), "machine": None, "variants": {}, "runs": []}
    started = time.process_time()
    with one_thread_deterministic():
        log["machine"] = {**system.machine(), "threads": torch.get_num_threads()}
        for v in study.variants:                                    # 1. time each variant, or reuse
            seed_everything(0)
            model = build("decoder", dict(options[v.name], vocab_size=len(tokenizer)))
            entry = {"description": v.description, "config": options[v.name], "d_ff": model.config.d_ff,
                     "parameters": model.num_parameters(), "active_parameters": active_parameters(model)}
            if reuse is not None:
                old = reuse["variants"][v.name]
                if old["config"] != options[v.name]:
                    raise ValueError(f"the logged {v.name} has another configuration than the study's now")
                entry.update(seconds_per_step=old["seconds_per_step"], steps=old["steps"], timed="reused from the log")
            else:
                entry["seconds_per_step"] = round(time_steps(model, CausalLM(train_ids), study.train), 4)
                entry["timed"] = "measured"
            log["variants"][v.name] = entry
        for v in study.variants:                                    # 2. steps: the budget's, or another's
            entry = log["variants"][v.name]
            if reuse is None:
                entry["steps"] = int(round(budget / entry["seconds_per_step"])) if v.steps_like is None else None
        for v in study.variants:
            if v.steps_like is not None and reuse is None:
                log["variants"][v.name]["steps"] = log["variants"][v.steps_like]["steps"]
        for v in study.variants:                                    # 3. train every variant with every seed
            entry = log["variants"][v.name]
            for seed in seeds:
                seed_everything(seed)
                model = build("decoder", dict(options[v.name], vocab_size=len(tokenizer)))
                steps = entry["steps"]
                config = dataclasses.replace(study.train, steps=steps, seed=seed, eval_every=steps, progress=progress)
                history = train(model, CausalLM(train_ids, valid_ids, eval_tokens=None), config)
                result = {"variant": v.name, "seed": seed, "steps": steps,
                          "train_cpu_seconds": round(history.train_cpu_seconds, 1),
                          "valid_bpc": round(history.best_valid, 4)}
                if model.config.moe_experts:
                    result["utilisation"] = expert_utilisation(model, valid_ids, study.train.context)
                    result["balance_loss"] = [round(float(b.mlp.aux_loss), 4) for b in model.blocks]
                log["runs"].append(result)
                print(f"{study.name} {v.name} seed {seed}: {steps:,} steps, {result['train_cpu_seconds']:.1f} CPU-s, "
                      f"validation {result['valid_bpc']:.4f} bpc", flush=True)
                if v.checkpoint and seed == seeds[0] and checkpoints is not None:
                    save(checkpoints / v.name, model, tokenizer,
                         {"name": f"ablate-{study.name}/{v.name}", "study": study.name, "variant": v.name,
                          "description": v.description, "seed": seed, "parameters": model.num_parameters(),
                          "history": history.to_dict(), "train_cpu_seconds": result["train_cpu_seconds"],
                          "eval_chars": study.eval_chars})
                log["total_cpu_seconds"] = round(time.process_time() - started, 1)
                log["peak_mb"] = round(system.peak_memory_mb())
                write(out, log)
    return log


def write(path: Path, log: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(log, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def valid_bpc(model, tokenizer, study: Study | str = "llama-parts", chars: int | None = None) -> float:
    """A model's validation bits per character as a study measures it (the first ``eval_chars``
    characters of the validation split, or the first ``chars``), to check a committed checkpoint."""
    study = STUDIES[study] if isinstance(study, str) else study
    text = data.corpus(study.corpus).valid[: chars or study.eval_chars]
    return bits_per_char(score(model, np.asarray(tokenizer.encode(text)), context=study.train.context))


# ----------------------------------------------------------------------------- the two studies

SMALL = dict(d_model=64, n_heads=4, n_layers=3, max_len=64, dropout=0.0)
"""The shape of every model of both studies: 3 blocks of width 64, 4 heads, 64 characters of context.
Small, so that a run of 50 CPU-seconds takes a couple of thousand steps and gets well past the
first plateau (a model 128 wide with 4 blocks and 128 characters was still on it after 300 steps)."""

SHORT_RUN = TrainConfig(steps=1, batch_size=16, context=64, lr=1e-2, warmup=50, min_lr_ratio=0.1,
                        weight_decay=0.01, grad_clip=1.0, precision="fp32")
"""How every run trains (its steps come from the budget)."""

LLAMA = dict(norm="rms", positions="rotary", mlp="swiglu", bias=False, n_kv_heads=2)
"""LLaMA's block: RMSNorm, rotary positions, SwiGLU without biases, grouped-query attention
(here 2 key/value heads for 4 query heads)."""

STUDIES: dict[str, Study] = {s.name: s for s in [
    Study("llama-parts",
          "GPT-2's block (LayerNorm, learned positions, GELU MLP 4d with biases, multi-head attention) turned "
          "into LLaMA's one part at a time, cumulatively, at equal parameters (d_ff matched) and equal CPU-seconds",
          base=SMALL,
          variants=(
              Variant("gpt2", "GPT-2's block: LayerNorm, learned positions, GELU MLP 4d with biases, multi-head"),
              Variant("+rmsnorm", "RMSNorm instead of LayerNorm", dict(norm="rms")),
              Variant("+rotary", "and rotary positions instead of learned ones", dict(norm="rms", positions="rotary")),
              Variant("+swiglu", "and a SwiGLU MLP (about 8d/3 wide) without biases anywhere",
                      dict(norm="rms", positions="rotary", mlp="swiglu", bias=False)),
              Variant("+gqa", "and grouped-query attention, 2 key/value heads for 4 query heads: LLaMA's block",
                      LLAMA),
          ),
          train=SHORT_RUN, budget=50.0, seeds=(0, 1), match_parameters=True),
    Study("moe",
          "A LLaMA-block decoder whose MLPs are mixtures of 8 experts (top-2, renormalised gates) and 2 shared "
          "experts, each 32 wide, with and without the load-balancing loss, against dense LLaMA-block decoders "
          "with the same active parameters (one MLP 128 wide), trained for the same steps and for the same CPU-seconds",
          base=dict(SMALL, **LLAMA),
          variants=(
              Variant("moe", "8 routed experts (top-2) and 2 shared ones, 32 wide each; balancing loss 0.01",
                      dict(d_ff=32, moe_experts=8, moe_top_k=2, moe_shared=2, moe_aux_coef=0.01), checkpoint=True),
              Variant("moe-no-balance", "the same mixture without the balancing loss",
                      dict(d_ff=32, moe_experts=8, moe_top_k=2, moe_shared=2, moe_aux_coef=0.0), checkpoint=True),
              Variant("dense-same-time", "dense, one SwiGLU MLP 128 wide (the MoE's active width), "
                                         "trained for the same CPU-seconds", dict(d_ff=128)),
              Variant("dense-same-steps", "the same dense model trained for the MoE's steps (the same tokens)",
                      dict(d_ff=128), steps_like="moe"),
          ),
          train=SHORT_RUN, budget=50.0, seeds=(0, 1)),
]}
"""The studies, by name."""


def log_path(name: str) -> Path:
    from ..paths import results_dir

    return results_dir() / f"ablate-{name}.json"


def checkpoint_dir(name: str) -> Path:
    from ..paths import checkpoints_dir

    return checkpoints_dir() / f"ablate-{name}"


def load(name: str) -> dict:
    """The committed log of study ``name`` (``results/ablate-NAME.json``)."""
    if name not in STUDIES:
        raise ValueError(f"no study {name!r}; choose one of {sorted(STUDIES)}")
    path = log_path(name)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run `python -m tinylm ablate {name}`")
    return json.loads(path.read_text(encoding="utf-8"))
