"""Scaling laws (规模定律) measured on our own sweep of small GPTs, and the law fitted to it.

How does a language model's loss fall as it gets more parameters N and more training tokens D?
Kaplan et al. (2020) and Hoffmann et al. (2022) measured it on hundreds of runs and found a
simple law that fits well:

    L(N, D) = E + A / N**alpha + B / D**beta

``E`` is what no model can remove (the text's own entropy, as the model family sees it);
``A / N**alpha`` is what a finite model misses, ``B / D**beta`` what finite data misses.  This
module does the same on one CPU core, with tiny character-level GPTs on Shakespeare:

**The sweep** (:data:`GRID`, :func:`run_sweep`).  Every pair (N, D) of the grid is its *own*
run: a fresh model, trained for exactly ``D`` tokens with its own learning-rate schedule, a
warm-up and a cosine decay that ends at D (:func:`run_config`).  Reading the loss at token D/2
of a run scheduled for D tokens would be wrong: half-way through a cosine schedule the learning
rate is still high and the loss is worse than a run planned for D/2 tokens would reach, so the
points would make the data term look weaker than it is (Hoffmann et al., 2022, section 3.1
and appendix B).  N counts the *non-embedding* parameters (:func:`non_embedding_parameters`),
as Kaplan et al. do; D counts characters, which are our tokens.  The loss is the validation
bits per character, measured once at the end of each run.  The batch and learning rate are
chosen once, on validation, by a small pilot (:data:`PILOT`), and kept for every run.

**The fit** (:func:`fit_law`).  As Hoffmann et al.: minimise the Huber loss (δ = 10⁻³) between
the predicted and the measured *log* loss, over log E, log A, log B, alpha and beta, with
L-BFGS, from the best of a grid of starting points.  The starting points come from a grid over
the two exponents: for fixed exponents the law is linear in E, A and B, which least squares
solves (:func:`linear_fit`).

**What the fit gives.**  The training compute of a run is about C = 6 N D FLOPs
(:func:`training_flops`); for a budget C the law is lowest at :func:`compute_optimal`.  And it
*predicts*: the loss of a run larger than any in the grid (:data:`HELD_OUT`) is written down
before that run is trained (:func:`predict_held_out`), then measured (:func:`run_held_out`).

``python -m tinylm scaling`` runs the pilot, the grid, the fit and the prediction, resuming where
a previous call stopped; ``python -m tinylm scaling --held-out`` trains the held-out run once the
prediction is committed.  Everything is written to ``results/scaling_laws.json``.
"""

from __future__ import annotations

import functools
import json
import math
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .. import data, system
from ..models import build
from ..tokenizers import CharTokenizer
from .causal_lm import EVAL_TOKENS, CausalLM
from .loop import TrainConfig, one_thread_deterministic, seed_everything, train

RESULT_NAME = "scaling_laws"
"""The sweep's file: ``results/scaling_laws.json``."""

HUBER_DELTA = 1e-3
"""Hoffmann et al.'s δ: residuals of the log loss above it count linearly, so one odd run cannot
pull the whole fit."""

KAPLAN = {"alpha_N": 0.076, "alpha_D": 0.095, "units": "nats per token (BPE), non-embedding N",
          "source": "kaplan2020"}
"""Kaplan et al. (2020)'s exponents for L(N) = (N_c / N)^alpha_N and L(D) = (D_c / D)^alpha_D,
each measured where the other resource does not limit the model."""

HOFFMANN = {"E": 1.69, "A": 406.4, "alpha": 0.34, "B": 410.7, "beta": 0.28,
            "units": "nats per token (SentencePiece), all parameters", "source": "hoffmann2022"}
"""Hoffmann et al. (2022)'s fit of the same law (their approach 3, section 3.3)."""


# ----------------------------------------------------------------------------- the law and its fit

def law(N, D, E: float, A: float, alpha: float, B: float, beta: float):
    """The scaling law L(N, D) = E + A / N**alpha + B / D**beta (numbers or numpy arrays)."""
    N, D = np.asarray(N, dtype=np.float64), np.asarray(D, dtype=np.float64)
    return E + A / N ** alpha + B / D ** beta


def predict(fit: dict, N, D):
    """The law with the parameters of ``fit`` (a dict with E, A, alpha, B, beta) at (N, D)."""
    return law(N, D, fit["E"], fit["A"], fit["alpha"], fit["B"], fit["beta"])


def huber(r: torch.Tensor, delta: float = HUBER_DELTA) -> torch.Tensor:
    """Huber's loss of residuals ``r``: r²/2 near zero, delta·(|r| - delta/2) beyond delta."""
    a = r.abs()
    return torch.where(a <= delta, 0.5 * r ** 2, delta * (a - 0.5 * delta))


def log_law(theta: torch.Tensor, log_N: torch.Tensor, log_D: torch.Tensor) -> torch.Tensor:
    """log L(N, D) for theta = (log E, log A, alpha, log B, beta), computed as
    logsumexp(log E, log A - alpha log N, log B - beta log D) so that it is accurate in float64."""
    e, a, alpha, b, beta = theta
    return torch.logsumexp(torch.stack([e.expand_as(log_N), a - alpha * log_N, b - beta * log_D]), dim=0)


def fit_objective(theta: torch.Tensor, log_N, log_D, log_L, delta: float = HUBER_DELTA) -> torch.Tensor:
    """What the fit minimises: the Huber loss of the log residuals, summed over the runs."""
    return huber(log_law(theta, log_N, log_D) - log_L, delta).sum()


def linear_fit(N, D, L, alpha: float, beta: float):
    """For fixed exponents the law is linear in (E, A, B): solve it by least squares on the
    relative error (each equation divided by its L).  Returns (E, A, B)."""
    N, D, L = (np.asarray(v, dtype=np.float64) for v in (N, D, L))
    X = np.stack([np.ones_like(N), N ** -alpha, D ** -beta], axis=1) / L[:, None]
    (E, A, B), *_ = np.linalg.lstsq(X, np.ones_like(L), rcond=None)
    return float(E), float(A), float(B)


EXPONENT_GRID = np.round(np.arange(0.05, 1.501, 0.05), 2)
"""Exponents tried for the starting points of the fit."""


def fit_law(N, D, L, delta: float = HUBER_DELTA, starts: int = 5) -> dict:
    """Fit L(N, D) = E + A/N^alpha + B/D^beta to runs (N, D, L) as Hoffmann et al. (2022) do.

    Starting points: every pair of exponents of :data:`EXPONENT_GRID`, with E, A, B from
    :func:`linear_fit` (kept when all three are positive); the ``starts`` best by the objective
    are refined by L-BFGS on :func:`fit_objective`, and the lowest end point wins.  The result
    has E, A, alpha, B, beta, the objective ``huber`` and the root-mean-square relative error
    ``rms_rel_error`` of the fitted L.  Deterministic; a second or so.
    """
    N, D, L = (np.asarray(v, dtype=np.float64).reshape(-1) for v in (N, D, L))
    if not (len(N) == len(D) == len(L)):
        raise ValueError("N, D and L must have the same length")
    if len(L) < 5:
        raise ValueError(f"the law has 5 parameters: fitting it needs at least 5 runs, got {len(L)}")
    if (N <= 0).any() or (D <= 0).any() or (L <= 0).any():
        raise ValueError("N, D and L must all be positive")
    log_N, log_D, log_L = (torch.tensor(np.log(v)) for v in (N, D, L))

    candidates = []
    for alpha in EXPONENT_GRID:
        for beta in EXPONENT_GRID:
            E, A, B = linear_fit(N, D, L, alpha, beta)
            if min(E, A, B) <= 0:
                continue
            theta = torch.tensor([math.log(E), math.log(A), alpha, math.log(B), beta], dtype=torch.float64)
            candidates.append((float(fit_objective(theta, log_N, log_D, log_L, delta)), theta))
    if not candidates:       # no positive linear solution: start from small E and middling exponents
        for alpha in (0.3, 0.6):
            for beta in (0.3, 0.6):
                theta = torch.tensor([math.log(L.min() / 2), math.log(L.mean()) + alpha * log_N.mean().item(),
                                      alpha, math.log(L.mean()) + beta * log_D.mean().item(), beta],
                                     dtype=torch.float64)
                candidates.append((float(fit_objective(theta, log_N, log_D, log_L, delta)), theta))
    candidates.sort(key=lambda c: c[0])

    best_value, best_theta = math.inf, None
    for _, start in candidates[:starts]:
        theta = start.clone().requires_grad_(True)
        optimizer = torch.optim.LBFGS([theta], lr=1.0, max_iter=300, tolerance_grad=1e-12,
                                      tolerance_change=1e-14, history_size=20, line_search_fn="strong_wolfe")

        def closure():
            optimizer.zero_grad()
            value = fit_objective(theta, log_N, log_D, log_L, delta)
            value.backward()
            return value

        optimizer.step(closure)
        value = float(fit_objective(theta.detach(), log_N, log_D, log_L, delta))
        if math.isfinite(value) and value < best_value:
            best_value, best_theta = value, theta.detach().clone()
    e, a, alpha, b, beta = best_theta.tolist()
    fit = {"E": math.exp(e), "A": math.exp(a), "alpha": alpha, "B": math.exp(b), "beta": beta}
    relative = predict(fit, N, D) / L - 1
    return dict(fit, huber=best_value, rms_rel_error=float(np.sqrt(np.mean(relative ** 2))))


# ----------------------------------------------------------------------------- compute

def training_flops(N, D):
    """About 6 N D: each token costs 2 N FLOPs forward (a multiply and an add per weight) and
    twice that backward (Kaplan et al., 2020).  It leaves out attention over the context and the
    output layer, which are not small for our tiny models (see the lab)."""
    return 6.0 * np.asarray(N, dtype=np.float64) * np.asarray(D, dtype=np.float64)


def compute_optimal(fit: dict, C):
    """The model size and tokens (N_opt, D_opt) that minimise the law at a compute of C = 6 N D.

    With D = C / (6N), setting dL/dN = 0 gives alpha A N^-alpha = beta B D^-beta, so
    N_opt = G (C/6)^(beta/(alpha+beta)) with G = (alpha A / (beta B))^(1/(alpha+beta)), and
    D_opt = C / (6 N_opt)."""
    alpha, beta = fit["alpha"], fit["beta"]
    G = (alpha * fit["A"] / (beta * fit["B"])) ** (1 / (alpha + beta))
    N = G * (np.asarray(C, dtype=np.float64) / 6) ** (beta / (alpha + beta))
    return N, np.asarray(C, dtype=np.float64) / (6 * N)


# ----------------------------------------------------------------------------- the sweep

@dataclass(frozen=True)
class Shape:
    """A GPT's shape: width, blocks, heads."""

    d_model: int
    n_layers: int
    n_heads: int

    @property
    def name(self) -> str:
        return f"d{self.d_model}-L{self.n_layers}"


@dataclass(frozen=True)
class Recipe:
    """How every run of the sweep is trained, whatever its N and D.

    GPT-2's blocks (LayerNorm before each sublayer, learned positions, GELU, tied embeddings), no
    dropout (every run sees each character about once or less); windows of ``context``
    characters, ``batch_size`` of them per step; AdamW at peak ``lr`` after a linear warm-up of
    ``warmup_fraction`` of the steps, then a cosine decay to ``min_lr_ratio`` of the peak at the
    last step.  Validation: bits per character on the first ``eval_chars`` characters of the
    validation split, scored in windows of ``context`` characters, once, at the end."""

    batch_size: int = 32
    context: int = 64
    lr: float = 3e-3
    warmup_fraction: float = 0.05
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    seed: int = 0
    eval_chars: int = EVAL_TOKENS
    corpus: str = "shakespeare"

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.context

    def to_dict(self) -> dict:
        return asdict(self)


SHAPES = (Shape(32, 2, 2), Shape(48, 3, 3), Shape(64, 4, 4), Shape(96, 4, 4), Shape(128, 4, 4))
"""The grid's model sizes: 25 thousand to 790 thousand non-embedding parameters (about 31 times)."""

TOKENS = (256_000, 512_000, 1_024_000, 2_048_000)
"""The grid's training tokens (characters), 8 times apart: 500 to 4,000 steps of 8 x 64 characters
with the pilot's recipe.  The training split has 3,979,262 characters, so no run reads any part
of it twice on purpose (windows are drawn at random places)."""

HELD_OUT = (Shape(160, 4, 5), 4_096_000)
"""A larger model than any in the grid (1.56 times the largest N), trained on twice the grid's
largest D: predicted from the fit, then trained."""

PILOT = {"shapes": (Shape(48, 3, 3), Shape(128, 4, 4)), "tokens": 512_000, "batch_sizes": (32, 8),
         "lrs": (1e-3, 3e-3, 1e-2)}
"""The pilot that chose the learning rate (:func:`run_pilot`): each learning rate on a small and
the largest size of the grid, at the grid's shortest D, scored on validation."""


def run_config(recipe: Recipe, tokens: int, progress: bool = False) -> TrainConfig:
    """The training configuration of one run of ``tokens`` training tokens: its own schedule,
    warm-up and cosine decay over exactly ``tokens / tokens_per_step`` steps, evaluated once at
    the end (so no choice among checkpoints: the run's end is its score)."""
    if tokens <= 0 or tokens % recipe.tokens_per_step:
        raise ValueError(f"D = {tokens:,} tokens is not a whole number of steps of "
                         f"{recipe.batch_size} x {recipe.context} = {recipe.tokens_per_step:,} tokens")
    steps = tokens // recipe.tokens_per_step
    return TrainConfig(steps=steps, batch_size=recipe.batch_size, context=recipe.context, lr=recipe.lr,
                       warmup=max(1, round(recipe.warmup_fraction * steps)), min_lr_ratio=recipe.min_lr_ratio,
                       weight_decay=recipe.weight_decay, grad_clip=recipe.grad_clip, eval_every=steps,
                       restore_best=False, seed=recipe.seed, progress=progress)


def model_config(shape: Shape, vocab_size: int, recipe: Recipe) -> dict:
    return dict(vocab_size=vocab_size, d_model=shape.d_model, n_heads=shape.n_heads, n_layers=shape.n_layers,
                max_len=recipe.context, dropout=0.0)


def non_embedding_parameters(model) -> int:
    """N as Kaplan et al. count it: every parameter but the token and position embeddings (the
    output layer is tied to the token embedding, so it is not counted either)."""
    embeddings = {id(p) for p in model.embed.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in embeddings)


def shape_parameters(shape: Shape, vocab_size: int = 84, recipe: Recipe = Recipe()) -> int:
    """N of a shape, counted on a model built for the purpose."""
    return non_embedding_parameters(build("decoder", model_config(shape, vocab_size, recipe)))


def run_name(shape: Shape, tokens: int, batch_size: int | None = None, lr: float | None = None) -> str:
    """``d64-L4-D1.024M`` (a run of the grid), or with ``-b8-lr0.003`` (a run of the pilot)."""
    return f"{shape.name}-D{tokens / 1e6:g}M" + (f"-b{batch_size}-lr{lr:g}" if lr is not None else "")


@functools.lru_cache(maxsize=2)
def _text(corpus_name: str, eval_chars: int):
    """The tokenizer, the training ids and the validation ids the sweep reads (kept: encoding the
    training split takes a second or two)."""
    corpus = data.corpus(corpus_name)
    tokenizer = CharTokenizer(corpus.alphabet)
    train_ids = np.asarray(tokenizer.encode(corpus.train), dtype=np.int64)
    valid_ids = np.asarray(tokenizer.encode(corpus.valid[:eval_chars]), dtype=np.int64)
    return tokenizer, train_ids, valid_ids


def train_run(shape: Shape, tokens: int, recipe: Recipe, progress: bool = False) -> dict:
    """Train one run of the sweep from scratch, on one thread, deterministically; return its record."""
    tokenizer, train_ids, valid_ids = _text(recipe.corpus, recipe.eval_chars)
    config = run_config(recipe, tokens, progress)
    with one_thread_deterministic():
        start = time.process_time()
        seed_everything(recipe.seed)
        model = build("decoder", model_config(shape, len(tokenizer), recipe))
        history = train(model, CausalLM(train_ids, valid_ids, eval_tokens=None), config)
        cpu = time.process_time() - start
    return {"name": run_name(shape, tokens), **asdict(shape), "N": non_embedding_parameters(model),
            "parameters": model.num_parameters(), "D": config.steps * recipe.tokens_per_step,
            "steps": config.steps, "batch_size": recipe.batch_size, "context": recipe.context, "lr": recipe.lr,
            "warmup": config.warmup, "train_bpc": round(history.train_loss[-1], 4),
            "val_bpc": round(history.valid["bpc"][-1], 4),
            "train_cpu_seconds": round(history.train_cpu_seconds, 1), "cpu_seconds": round(cpu, 1),
            "flops_6ND": float(f"{6 * non_embedding_parameters(model) * tokens:.4g}"),
            "code": system.code_commit()}


# ----------------------------------------------------------------------------- the results file

def results_path() -> Path:
    from .. import results

    return results.path(RESULT_NAME)


def load_results(path: Path | None = None) -> dict:
    path = Path(path or results_path())
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def write_results(store: dict, path: Path | None = None) -> None:
    from .. import results

    path = Path(path or results_path())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(results.dumps(store), encoding="utf-8")


def _header(store: dict, recipe: Recipe) -> dict:
    store.setdefault("description", "Scaling-law sweep: character-level GPTs (tinylm DecoderLM, GPT-2 blocks) on "
                     "Shakespeare's training split, each (N, D) its own run with its own cosine schedule ending at "
                     "D; loss = validation bits per character at the end of the run. N = non-embedding "
                     "parameters, D = training characters (= tokens). Made by python -m tinylm scaling.")
    store["grid"] = {"shapes": [asdict(s) for s in SHAPES], "tokens": list(TOKENS)}
    store.setdefault("cpu_budget_seconds", 3000)
    return store


PILOT_HOW = ("Each pair of batch size and peak learning rate of PILOT trained on the two pilot sizes at the pilot's D, "
             "scored on validation; the pair with the lowest mean validation bpc became the recipe of every run. "
             "The pilot first tried batch 32 alone; batch 8 was added after a trial of the 48-wide model at batches "
             "16 and 8 (not kept, 28 CPU-s) showed that at this D smaller batches, more steps, learn faster.")


def run_pilot(path: Path | None = None, progress: bool = False, log=print) -> Recipe:
    """Train each (batch size, learning rate) of :data:`PILOT` on its sizes at its D (skipping runs
    already recorded) and choose the pair with the lowest mean validation bpc.  Writes ``pilot``
    and ``recipe`` to the results file and returns the recipe."""
    store = _header(load_results(path), Recipe())
    pilot = store.setdefault("pilot", {"runs": []})
    pilot["how"] = PILOT_HOW
    done = {r["name"] for r in pilot["runs"]}
    for batch in PILOT["batch_sizes"]:
        for lr in PILOT["lrs"]:
            for shape in PILOT["shapes"]:
                name = run_name(shape, PILOT["tokens"], batch, lr)
                if name in done:
                    continue
                record = train_run(shape, PILOT["tokens"], Recipe(batch_size=batch, lr=lr), progress)
                pilot["runs"].append(dict(record, name=name))
                store["cpu_seconds"] = total_cpu(store)
                write_results(store, path)
                log(f"pilot {name}: validation {record['val_bpc']:.4f} bpc, {record['cpu_seconds']:.0f} CPU-s")
    pairs = [(batch, lr) for batch in PILOT["batch_sizes"] for lr in PILOT["lrs"]]
    means = {pair: float(np.mean([r["val_bpc"] for r in pilot["runs"] if (r["batch_size"], r["lr"]) == pair]))
             for pair in pairs}
    batch, lr = min(means, key=means.get)
    pilot["mean_val_bpc"] = [{"batch_size": b, "lr": r, "mean_val_bpc": round(m, 4)} for (b, r), m in means.items()]
    pilot["chosen"] = {"batch_size": batch, "lr": lr}
    recipe = Recipe(batch_size=batch, lr=lr)
    if store.get("runs") and store["recipe"] != recipe.to_dict():
        raise ValueError("the grid's runs were trained with another recipe than the pilot's choice: start a new file")
    store["recipe"] = recipe.to_dict()
    store["cpu_seconds"] = total_cpu(store)
    write_results(store, path)
    return recipe


def run_grid(path: Path | None = None, progress: bool = False, log=print) -> dict:
    """The pilot (if not done), every run of the grid not yet recorded, the fit, and the held-out
    prediction (written once, never changed).  Returns the results."""
    recipe = run_pilot(path, progress, log)
    store = load_results(path)
    done = {r["name"] for r in store.setdefault("runs", [])}
    for tokens in TOKENS:
        for shape in SHAPES:
            if run_name(shape, tokens) in done:
                continue
            record = train_run(shape, tokens, recipe, progress)
            store["runs"].append(record)
            write_results(store, path)
            log(f"{record['name']}: N = {record['N']:,}, D = {record['D']:,}, validation {record['val_bpc']:.4f} bpc, "
                f"{record['cpu_seconds']:.0f} CPU-s")
    runs = store["runs"]
    fit = fit_law([r["N"] for r in runs], [r["D"] for r in runs], [r["val_bpc"] for r in runs])
    store["fit"] = rounded_fit(fit)
    store.setdefault("held_out", predict_held_out(store["fit"]))
    store["cpu_seconds"] = total_cpu(store)
    write_results(store, path)
    return store


def rounded_fit(fit: dict) -> dict:
    """The fit as the results file keeps it (6 significant digits), with how it was made."""
    out = {k: float(f"{v:.6g}") for k, v in fit.items()}
    out.update(units="bits per character (validation); N non-embedding parameters; D training characters",
               method=f"Huber loss (delta {HUBER_DELTA:g}) on log L, L-BFGS over (log E, log A, alpha, log B, beta) "
                      "from the best starts of a grid over the exponents (Hoffmann et al. 2022)")
    return out


def predict_held_out(fit: dict) -> dict:
    """The held-out run's prediction from ``fit``, before it is trained."""
    shape, tokens = HELD_OUT
    N = shape_parameters(shape)
    return {**asdict(shape), "N": N, "D": tokens, "predicted_bpc": round(float(predict(fit, N, tokens)), 4),
            "predicted_with": {k: fit[k] for k in ("E", "A", "alpha", "B", "beta")},
            "predicted_at": system.code_commit()}


def committed_prediction(path: Path) -> float | None:
    """The held-out prediction in the committed (HEAD) version of the results file, if any."""
    path = Path(path).resolve()
    try:
        text = subprocess.run(["git", "show", f"HEAD:./{path.name}"], cwd=path.parent, capture_output=True,
                              text=True, check=True).stdout
        return json.loads(text).get("held_out", {}).get("predicted_bpc")
    except (OSError, subprocess.CalledProcessError, json.JSONDecodeError):
        return None


def run_held_out(path: Path | None = None, progress: bool = False, require_committed: bool = True,
                 log=print) -> dict:
    """Train the held-out run, once its prediction is in the results file (and committed, so the
    prediction provably came first); record the measured bpc and the error."""
    path = Path(path or results_path())
    store = load_results(path)
    held = store.get("held_out")
    if not held or "predicted_bpc" not in held:
        raise ValueError("no prediction for the held-out run yet: run python -m tinylm scaling first")
    if "measured_bpc" in held:
        return store
    if require_committed and committed_prediction(path) != held["predicted_bpc"]:
        raise ValueError(f"commit the prediction first (git commit {path.name}): the held-out run is trained only "
                         "after its predicted bpc is in the repository")
    shape, tokens = Shape(held["d_model"], held["n_layers"], held["n_heads"]), held["D"]
    record = train_run(shape, tokens, Recipe(**store["recipe"]), progress=progress)
    assert record["N"] == held["N"], (record["N"], held["N"])
    held.update(measured_bpc=record["val_bpc"], error_bpc=round(record["val_bpc"] - held["predicted_bpc"], 4),
                relative_error=round(record["val_bpc"] / held["predicted_bpc"] - 1, 4), run=record)
    store["cpu_seconds"] = total_cpu(store)
    write_results(store, path)
    log(f"held-out {record['name']}: predicted {held['predicted_bpc']:.4f} bpc, measured {record['val_bpc']:.4f}, "
        f"error {held['error_bpc']:+.4f}; {record['cpu_seconds']:.0f} CPU-s")
    return store


def total_cpu(store: dict) -> dict:
    """CPU-seconds spent: pilot, grid and held-out run (training and evaluation)."""
    parts = {"pilot": sum(r["cpu_seconds"] for r in store.get("pilot", {}).get("runs", [])),
             "grid": sum(r["cpu_seconds"] for r in store.get("runs", [])),
             "held_out": store.get("held_out", {}).get("run", {}).get("cpu_seconds", 0.0)}
    return {k: round(v, 1) for k, v in parts.items()} | {"total": round(sum(parts.values()), 1)}
