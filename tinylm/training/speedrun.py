"""The three-minute speedrun: the lowest bits per character on the ladder's test text after 180
CPU-seconds of training on one core.

A speedrun (速通) is a race with written rules, so that two runs compare.  Ours:

1. **One thread.**  The run sets torch to one thread, with deterministic algorithms.
2. **The budget is 180 CPU-seconds of training steps** (``time.process_time()`` around each step:
   forward, backward, optimizer), the same count as :class:`~tinylm.training.loop.History`'s
   ``train_cpu_seconds``.  Learning the tokenizer, encoding the text and evaluating are not
   counted, but they are measured and written down beside the result.  No tolerance: a run whose
   steps took 180.01 CPU-seconds is refused and nothing is recorded; a run that is clearly over
   is stopped as soon as its steps have used up the budget.
3. **The schedule depends on a step count, never on the clock**, so that a run repeats: a recipe
   fixes its number of steps (chosen so that they fit in the budget on the machine that set the
   record), and its learning rate at step ``s`` is ``TrainConfig.lr_at(s)``, whatever the time.
4. **The corpus is the ladder's**: the complete works of Shakespeare, trained on the training
   split only.  Candidates are compared on **validation** (the first 100,000 characters of the
   validation split, the same text the rung runs validate on), once, after the last step: no
   early stopping.  The **test** split is scored once, for the run that is best on validation,
   with :func:`tinylm.score` and the course's one convention (bits over the characters of every
   token but the first, :func:`~tinylm.evaluation.metrics.scored_chars`), so the record stands
   on the ladder beside the rungs.

A recipe is a plain dict (or a JSON file) with the fields of a
:class:`~tinylm.training.recipes.LanguageModelRecipe` that a runner may choose::

    {"name": "my-run", "description": "what is new",
     "family": "decoder", "tokens": "bpe-512",
     "model": {"d_model": 128, "n_heads": 4, "n_layers": 4, "max_len": 128, ...},
     "train": {"steps": 700, "batch_size": 16, "context": 128, "lr": 0.004, ...}}

``model`` holds the fields of the family's configuration (``TransformerConfig`` for
``"decoder"``) without ``vocab_size``; ``train`` holds the fields of
:class:`~tinylm.training.loop.TrainConfig` except the ones the rules fix (evaluation, early
stopping, progress).  Then::

    python -m tinylm speedrun                            # the course's record recipe again
    python -m tinylm speedrun --recipe my-run.json       # a submission: 180 CPU-s, validation
    python -m tinylm speedrun --recipe my-run.json --pilot 30   # a short pilot, same schedule shape

A full run enters the leaderboard of ``results/speedrun.json`` with its validation score; if it
is the best on validation, it becomes the record: its test score is computed and its weights
are written to ``checkpoints/speedrun/record/`` (``tinylm.load("speedrun/record")``).  A pilot
(:func:`shortened`: every step count scaled by ``seconds / 180``) is listed apart and never
scored on test.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
import time
from pathlib import Path

import numpy as np

from .. import data, system
from ..evaluation.metrics import bits_per_char, scored_chars
from ..inference.scoring import score
from .loop import TrainConfig, one_thread_deterministic, seed_everything
from .loop import train as train_loop
from .recipes import LanguageModelRecipe, encode

BUDGET = 180.0
"""CPU-seconds of training steps a speedrun may use."""

TOLERANCE = 0.0
"""CPU-seconds over the budget that are forgiven: none."""

CORPUS = "shakespeare"
RESULTS = "speedrun"
"""``results/speedrun.json``: the record and the leaderboard."""

RECORD_DIR = "speedrun/record"
"""The record's checkpoint, under ``checkpoints/``: ``tinylm.load("speedrun/record")``."""

FIXED_TRAIN = ("eval_every", "patience", "restore_best", "progress", "stop_after")
"""``TrainConfig`` fields the rules set: one evaluation after the last step, no early stopping."""

SUBMISSION_KEYS = ("name", "description", "family", "tokens", "model", "train")

FAMILIES = ("decoder", "recurrent", "mlp")
"""The model families a speedrun may train (``tinylm.models.FAMILIES`` that read left to right)."""


class OverBudget(ValueError):
    """A run whose training steps took more CPU-seconds than the budget."""


# ----------------------------------------------------------------------------- recipes as dicts

def recipe(submission: dict) -> LanguageModelRecipe:
    """The :class:`LanguageModelRecipe` a submission (a dict, see the module docstring) describes;
    a mistake in it is a ``ValueError`` that says what is allowed."""
    if not isinstance(submission, dict):
        raise ValueError(f"a speedrun recipe is a dict (JSON object), got {type(submission).__name__}")
    unknown = sorted(set(submission) - set(SUBMISSION_KEYS))
    if unknown:
        raise ValueError(f"a speedrun recipe has no field {', '.join(map(repr, unknown))}; "
                         f"its fields are {list(SUBMISSION_KEYS)}")
    name = submission.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
        raise ValueError(f"a speedrun recipe needs a 'name' of letters, digits, '-', '_' and '.', got {name!r}")
    if not isinstance(submission.get("description", ""), str):
        raise ValueError("a speedrun recipe's 'description' is text")
    train = dict(submission.get("train") or {})
    if "steps" not in train:
        raise ValueError("a speedrun recipe fixes its number of steps: put 'steps' in 'train'")
    fixed = sorted(set(train) & set(FIXED_TRAIN))
    if fixed:
        raise ValueError(f"the rules set {', '.join(map(repr, fixed))}: remove it from 'train' "
                         "(a speedrun is evaluated once, after its last step)")
    allowed = {f.name for f in dataclasses.fields(TrainConfig)} - set(FIXED_TRAIN)
    unknown = sorted(set(train) - allowed)
    if unknown:
        raise ValueError(f"'train' has no field {', '.join(map(repr, unknown))}; its fields are {sorted(allowed)}")
    steps = train["steps"]
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"'steps' is a positive whole number, got {steps!r}")
    config = TrainConfig(**train, eval_every=steps, patience=None, restore_best=True, progress=False)
    family, tokens = submission.get("family", "decoder"), submission.get("tokens", "char")
    if family not in FAMILIES:
        raise ValueError(f"a speedrun trains a causal language model: 'family' is one of {list(FAMILIES)}, "
                         f"got {family!r}")
    if not isinstance(tokens, str) or not re.fullmatch(r"char|bpe-[0-9]+", tokens):
        raise ValueError(f"'tokens' is 'char' or 'bpe-N' (byte-level BPE with N merges), got {tokens!r}")
    model = dict(submission.get("model") or {})
    if "vocab_size" in model:
        raise ValueError("leave 'vocab_size' out of 'model': the tokens set it")
    if family == "decoder" and model.get("max_len", 256) < config.context:
        raise ValueError(f"the model reads at most max_len = {model.get('max_len', 256)} tokens, fewer than the "
                         f"context of {config.context}")
    made = LanguageModelRecipe(name, submission.get("description", ""), "PLM", family=family, model=model,
                               train=config, corpus=CORPUS, tokens=tokens)
    made.build(8)          # a mistake in the model's fields shows now, not after the tokenizer is learnt
    return made


def submission(made: LanguageModelRecipe) -> dict:
    """The dict a recipe was made from (the inverse of :func:`recipe`)."""
    train = {k: v for k, v in made.train.to_dict().items() if k not in FIXED_TRAIN}
    return {"name": made.name, "description": made.description, "family": made.family, "tokens": made.tokens,
            "model": dict(made.model), "train": train}


def load_submission(text: str) -> dict:
    """A submission from the command line: the name of one of :data:`CANDIDATES`, a JSON file,
    or JSON text."""
    if text in CANDIDATES:
        return CANDIDATES[text]
    path = Path(text)
    if path.suffix == ".json" or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"no recipe file {text}")
        text = path.read_text(encoding="utf-8")
    elif not text.lstrip().startswith("{"):
        raise ValueError(f"--recipe {text!r} is not a candidate ({', '.join(CANDIDATES)}), a .json file, or JSON")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the recipe is not valid JSON: {exc}") from None


def shortened(made: LanguageModelRecipe, seconds: float) -> LanguageModelRecipe:
    """The same recipe for a budget of ``seconds`` instead of :data:`BUDGET`: its steps and warm-up
    scaled by ``seconds / BUDGET`` (at least one step), so that the schedule keeps its shape.  A
    pilot, or a lab's live run."""
    if not 0 < seconds <= BUDGET:
        raise ValueError(f"a shortened run has between 0 and {BUDGET:g} CPU-seconds, got {seconds}")
    fraction = seconds / BUDGET
    steps = max(1, round(made.train.steps * fraction))
    warmup = min(steps, max(1, round(made.train.warmup * fraction))) if made.train.warmup else 0
    train = dataclasses.replace(made.train, steps=steps, warmup=warmup, eval_every=steps)
    return dataclasses.replace(made, train=train)


# ----------------------------------------------------------------------------- running

class Budgeted:
    """An objective that stops the run once its training steps have used more than ``budget``
    CPU-seconds (evaluation time excluded); the loop's own count decides the verdict."""

    def __init__(self, objective, budget: float):
        self.objective, self.budget = objective, budget
        self.unit, self.monitor = objective.unit, objective.monitor
        self.higher_is_better = objective.higher_is_better
        self.spent, self.last, self.steps = 0.0, None, 0

    def start(self, model, config):
        self.objective.start(model, config)
        self.total = config.last_step

    def loss(self, model):
        now = time.process_time()
        if self.last is not None:
            self.spent += now - self.last
            if self.spent > self.budget + TOLERANCE:
                raise OverBudget(f"stopped after {self.steps:,} of {self.total:,} steps: they took "
                                 f"{self.spent:.1f} CPU-seconds, over the budget of {self.budget:g}; "
                                 "take fewer steps or a smaller model (try --pilot 30 first)")
        self.last = now
        self.steps += 1
        return self.objective.loss(model)

    def evaluate(self, model):
        start = time.process_time()
        metrics = self.objective.evaluate(model)
        if self.last is not None:
            self.spent += start - self.last      # the last step, up to the evaluation
            self.last = time.process_time()      # the evaluation itself is not counted
        return metrics


def train(made: LanguageModelRecipe, budget: float | None = None, progress: bool = False):
    """Train a recipe under the rules; return ``(model, tokenizer, entry)`` where ``entry`` holds
    its validation bpc and CPU-seconds.  Raises :class:`OverBudget` (nothing returned) when its
    training steps took more than ``budget`` CPU-seconds."""
    budget = BUDGET if budget is None else budget
    with one_thread_deterministic():
        import torch

        prepare = time.process_time()
        tokenizer = made.tokenizer()
        objective = made.objective(tokenizer)
        prepare = time.process_time() - prepare
        seed_everything(made.train.seed)
        model = made.build(len(tokenizer))
        budgeted = Budgeted(objective, budget)
        loop_start = time.process_time()
        history = train_loop(model, budgeted, dataclasses.replace(made.train, progress=progress))
        total = time.process_time() - loop_start
        threads = torch.get_num_threads()
    if history.train_cpu_seconds > budget + TOLERANCE:
        raise OverBudget(f"{made.name}: its {history.steps_done:,} step{'s' * (history.steps_done != 1)} took "
                         f"{history.train_cpu_seconds:.2f} "
                         f"CPU-seconds, over the budget of {budget:g} (no tolerance); nothing is recorded")
    t = made.train
    entry = {
        "name": made.name,
        "valid_bpc": round(history.valid["bpc"][-1], 4),
        "train_cpu_seconds": round(history.train_cpu_seconds, 1),
        "steps": history.steps_done,
        "tokens_seen": history.steps_done * t.batch_size * t.context,
        "parameters": model.num_parameters(),
        "valid_cpu_seconds": round(total - history.train_cpu_seconds, 1),   # with the loop's bookkeeping
        "prepare_cpu_seconds": round(prepare, 1),
        "description": made.description,
        "recipe": submission(made),
        "threads": threads,
        "train_loss_bpc": round(history.train_loss[-1], 4),
    }
    return model, tokenizer, entry


def pilot(sub: dict, seconds: float, progress: bool = False) -> dict:
    """Run a submission shortened to ``seconds`` (:func:`shortened`); its entry, with the CPU-seconds
    the whole recipe would take at the pilot's pace (``projected_cpu_seconds``).  Not refused
    when a little over: a pilot only guides."""
    made = recipe(sub)
    short = shortened(made, seconds)
    _, _, entry = train(short, budget=float("inf"), progress=progress)
    per_step = entry["train_cpu_seconds"] / entry["steps"]
    return dict(entry, budget=seconds, projected_cpu_seconds=round(per_step * made.train.steps, 1))


def score_test(model, tokenizer, context: int) -> float:
    """Bits per character of the whole test split, the ladder's measure (:func:`tinylm.score` in
    windows of ``context`` tokens, the run's training context, as validation scores it)."""
    ids = encode(tokenizer, data.corpus(CORPUS).test)
    return bits_per_char(score(model, ids, context=context), scored_chars(tokenizer, ids))


def stamp() -> dict:
    """Where and when: the code's commit, the machine, the date."""
    return {"code": system.code_commit(), "machine": system.machine(),
            "date": datetime.date.today().isoformat()}


# ----------------------------------------------------------------------------- the results file

def results_path(out_dir: Path | None = None) -> Path:
    from ..paths import results_dir

    return (Path(out_dir) if out_dir else results_dir()) / f"{RESULTS}.json"


def record_dir(out_dir: Path | None = None) -> Path:
    from ..paths import checkpoints_dir

    return Path(out_dir) / "record" if out_dir else checkpoints_dir() / RECORD_DIR


def load_results(out_dir: Path | None = None) -> dict:
    path = results_path(out_dir)
    if not path.is_file():
        return {"rules": rules(), "record": None, "leaderboard": [], "pilots": []}
    return json.loads(path.read_text(encoding="utf-8"))


def save_results(results: dict, out_dir: Path | None = None) -> None:
    from .. import results as results_module

    if out_dir is None:
        results_module.save(RESULTS, results)
    else:
        results_path(out_dir).parent.mkdir(parents=True, exist_ok=True)
        results_path(out_dir).write_text(results_module.dumps(results), encoding="utf-8")


def rules() -> dict:
    return {"budget_cpu_seconds": BUDGET, "tolerance_cpu_seconds": TOLERANCE, "threads": 1, "corpus": CORPUS,
            "valid": "first 100,000 characters of the validation split, scored once after the last step",
            "test": "the whole test split, scored once, for the best run on validation",
            "counted": "training steps only (time.process_time); tokenizer, encoding and evaluation "
                       "are measured apart"}


def best(leaderboard: list[dict]) -> dict:
    return min(leaderboard, key=lambda e: (e["valid_bpc"], e["train_cpu_seconds"]))


def compete(sub: dict, out_dir: Path | None = None, budget: float | None = None, progress: bool = True) -> dict:
    """A full run of a submission (the command ``python -m tinylm speedrun``): train it under the
    rules, enter its validation score in the leaderboard, and if it is the best there, score the
    test split once and make it the record (its checkpoint written too).  Returns its entry
    (``"record": True`` when it became the record, with ``test_bpc``)."""
    made = recipe(sub)
    model, tokenizer, entry = train(made, BUDGET if budget is None else budget, progress)
    entry.update(stamp())
    results = load_results(out_dir)
    board = [e for e in results["leaderboard"] if e["name"] != entry["name"]] + [entry]
    results["leaderboard"] = sorted(board, key=lambda e: (e["valid_bpc"], e["train_cpu_seconds"]))
    record = results.get("record")
    if best(board) is entry:
        start = time.process_time()
        with one_thread_deterministic():
            entry["test_bpc"] = round(score_test(model, tokenizer, made.train.context), 4)
        record = dict(entry, test_cpu_seconds=round(time.process_time() - start, 1), checkpoint=RECORD_DIR)
        from ..checkpoint import save
        from ..results import readonly

        log = {"name": made.name, "description": made.description, "recipe": made.to_dict(),
               "speedrun": {k: v for k, v in record.items() if k != "recipe"},
               "parameters": record["parameters"], "train_cpu_seconds": record["train_cpu_seconds"],
               "machine": {**record["machine"], "threads": record["threads"]}, "stop_after": None}
        if out_dir is not None or not readonly():        # never while grading (TINYLM_READONLY)
            save(record_dir(out_dir), model, tokenizer, log)
    elif record is not None and record["name"] == entry["name"]:
        record = None     # the record's own run was replaced by a worse one: its weights are gone
    results.update(rules=rules(), record=record)
    results.setdefault("pilots", [])
    save_results(results, out_dir)
    return dict(entry, record=record is not None and record["name"] == entry["name"] and "test_bpc" in entry)


def run_pilot(sub: dict, seconds: float, out_dir: Path | None = None, progress: bool = True) -> dict:
    """A pilot (the command with ``--pilot SECONDS``): run it and list it under ``pilots``."""
    entry = dict(pilot(sub, seconds, progress), **stamp())
    results = load_results(out_dir)
    key = (entry["name"], entry["budget"])
    results["pilots"] = [e for e in results.get("pilots", []) if (e["name"], e["budget"]) != key] + [entry]
    save_results(results, out_dir)
    return entry


def leaderboard_table(results: dict) -> str:
    """The leaderboard as plain text, best validation first."""
    rows = results["leaderboard"]
    width = max([len(e["name"]) for e in rows] + [9])
    lines = [f"{'candidate':<{width}}  {'valid bpc':>9}  {'CPU-s':>6}  {'steps':>6}  {'parameters':>10}  tokens"]
    for e in rows:
        mark = "  <- record" if results.get("record") and results["record"]["name"] == e["name"] else ""
        lines.append(f"{e['name']:<{width}}  {e['valid_bpc']:>9.4f}  {e['train_cpu_seconds']:>6.1f}  {e['steps']:>6,}  "
                     f"{e['parameters']:>10,}  {e['recipe']['tokens']}{mark}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the course's candidates

def _gpt(d_model: int, n_layers: int, context: int, **model) -> dict:
    """A GPT with LLaMA's parts (RMSNorm, rotary positions, SwiGLU about 8d/3 wide, no biases),
    its output layer tied to the embedding, no dropout, reading ``context`` tokens."""
    return dict(d_model=d_model, n_heads=d_model // 32, n_layers=n_layers, d_ff=8 * d_model // 3 // 8 * 8,
                max_len=context, norm="rms", positions="rotary", mlp="swiglu", bias=False, tie_embeddings=True,
                dropout=0.0, **model)


def _train(steps: int, batch_size: int, context: int, lr: float, **train) -> dict:
    """AdamW, a warm-up of 5% of the steps, then a cosine decay to zero; weight decay 0.1."""
    return dict(dict(steps=steps, batch_size=batch_size, context=context, lr=lr, warmup=max(1, steps // 20),
                     min_lr_ratio=0.0, weight_decay=0.1, grad_clip=1.0, seed=0, precision="fp32"), **train)


CANDIDATES: dict[str, dict] = {c["name"]: c for c in [
    {"name": "char-128x4", "tokens": "char",
     "description": "characters; GPT 4 blocks of width 128 (LLaMA parts), 256 characters of context, batch 8",
     "model": _gpt(128, 4, 256), "train": _train(700, 8, 256, 4e-3)},
    {"name": "bpe1024-128x4", "tokens": "bpe-1024",
     "description": "BPE, 1,024 merges (the GPT rung's tokens); GPT 4 blocks of width 128, 128 tokens of "
                    "context, batch 16",
     "model": _gpt(128, 4, 128), "train": _train(680, 16, 128, 4e-3)},
    {"name": "bpe512-128x4", "tokens": "bpe-512",
     "description": "BPE, 512 merges; GPT 4 blocks of width 128, 128 tokens of context, batch 16",
     "model": _gpt(128, 4, 128), "train": _train(730, 16, 128, 4e-3)},
    {"name": "bpe512-128x4-lr1e-2", "tokens": "bpe-512",
     "description": "as bpe512-128x4, peak learning rate 0.01 instead of 0.004",
     "model": _gpt(128, 4, 128), "train": _train(730, 16, 128, 1e-2)},
    {"name": "lstm-512", "tokens": "char", "family": "recurrent",
     "description": "the LSTM rung's shape (one layer of 512, characters) on the speedrun's schedule",
     "model": dict(cell="lstm", d_embed=64, d_state=512, dropout=0.0), "train": _train(650, 32, 128, 4e-3)},
    {"name": "bpe512-128x4-b8", "tokens": "bpe-512",
     "description": "as bpe512-128x4 with batches of 8 windows instead of 16: half the tokens per step, "
                    "about twice the steps",
     "model": _gpt(128, 4, 128), "train": _train(1280, 8, 128, 4e-3)},
    {"name": "bpe512-96x3", "tokens": "bpe-512",
     "description": "a smaller GPT (3 blocks of width 96, 3 heads), batch 16: about twice the tokens of "
                    "bpe512-128x4",
     "model": _gpt(96, 3, 128), "train": _train(1240, 16, 128, 4e-3)},
    {"name": "bpe512-64x4", "tokens": "bpe-512",
     "description": "smaller still (4 blocks of width 64, 2 heads), batch 16: more steps and tokens",
     "model": _gpt(64, 4, 128), "train": _train(1650, 16, 128, 4e-3)},
    {"name": "bpe512-96x3-1360", "tokens": "bpe-512",
     "description": "bpe512-96x3 with 1,360 steps instead of 1,240, to use the budget it left",
     "model": _gpt(96, 3, 128), "train": _train(1360, 16, 128, 4e-3)},
    {"name": "bpe256-96x3", "tokens": "bpe-256",
     "description": "bpe512-96x3 over BPE with 256 merges (512 tokens) instead of 512 merges",
     "model": _gpt(96, 3, 128), "train": _train(1240, 16, 128, 4e-3)},
]}
"""The recipes the course tried, in the order tried (``--recipe NAME`` runs one again)."""

RECORD = "bpe512-96x3"
"""The candidate that holds the record: the best of the leaderboard on validation (a test checks
it against ``results/speedrun.json``); ``python -m tinylm speedrun`` runs it again."""
