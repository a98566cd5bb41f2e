"""Scaling laws (tinylm.training.scaling): the law's fit, compute-optimal sizes, the sweep's runs,
and the committed sweep in results/scaling_laws.json."""

import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tinylm.models import build
from tinylm.paths import course_root
from tinylm.training import scaling

ROOT = course_root(Path(__file__).parent)
GRID_N = np.array([25_472, 84_912, 200_064, 447_552, 793_344])


def grid(Ns=GRID_N, Ds=scaling.TOKENS):
    N, D = np.meshgrid(np.asarray(Ns, dtype=float), np.asarray(Ds, dtype=float))
    return N.ravel(), D.ravel()


@pytest.mark.parametrize("true", [
    dict(E=1.3, A=40.0, alpha=0.45, B=900.0, beta=0.5),
    dict(E=0.9, A=8.0, alpha=0.25, B=60.0, beta=0.3),
])
def test_fit_recovers_the_parameters_of_runs_made_by_the_law(true):
    N, D = grid()
    fit = scaling.fit_law(N, D, scaling.law(N, D, **true))
    for name, value in true.items():
        assert fit[name] == pytest.approx(value, rel=1e-4), (name, fit)
    assert fit["rms_rel_error"] < 1e-8


def test_fit_recovers_hoffmanns_law_at_their_scale():
    """Their parameters, on a grid of their sizes (10^7 to 10^10 parameters, 10^9 to 10^11 tokens)."""
    law = {k: scaling.HOFFMANN[k] for k in ("E", "A", "alpha", "B", "beta")}
    N, D = grid(np.logspace(7, 10, 5), np.logspace(9, 11, 4))
    fit = scaling.fit_law(N, D, scaling.law(N, D, **law))
    for name, value in law.items():
        assert fit[name] == pytest.approx(value, rel=1e-3), (name, fit)


def test_fit_with_noise_predicts_the_runs_within_the_noise_and_ignores_an_outlier():
    true = dict(E=1.3, A=40.0, alpha=0.45, B=900.0, beta=0.5)
    N, D = grid()
    clean = scaling.law(N, D, **true)
    noisy = clean * np.exp(np.random.default_rng(0).normal(0, 0.003, clean.shape))
    noisy[3] *= 1.3                         # one run gone wrong: Huber's loss should not follow it
    fit = scaling.fit_law(N, D, noisy)
    assert np.max(np.abs(scaling.predict(fit, N, D) / clean - 1)) < 0.02
    assert abs(scaling.predict(fit, N[3], D[3]) / noisy[3] - 1) > 0.2


def test_huber_and_the_objective_against_their_formulas():
    r = torch.tensor([-0.01, -1e-3, -2e-4, 0.0, 5e-4, 1e-3, 0.3], dtype=torch.float64)
    d = 1e-3
    reference = [x * x / 2 if abs(x) <= d else d * abs(x) - d * d / 2 for x in r.tolist()]
    assert np.allclose(scaling.huber(r, d).numpy(), reference, rtol=0, atol=1e-15)
    N, D = grid()
    params = dict(E=1.1, A=30.0, alpha=0.4, B=500.0, beta=0.45)
    theta = torch.tensor([np.log(1.1), np.log(30.0), 0.4, np.log(500.0), 0.45], dtype=torch.float64)
    logs = [torch.tensor(np.log(v)) for v in (N, D)]
    assert np.allclose(scaling.log_law(theta, *logs).numpy(), np.log(scaling.law(N, D, **params)), atol=1e-12)
    L = scaling.law(N, D, **params) * 1.01
    objective = float(scaling.fit_objective(theta, *logs, torch.tensor(np.log(L)), d))
    assert objective == pytest.approx(len(L) * (d * np.log(1.01) - d * d / 2), rel=1e-9)


def test_linear_fit_is_exact_at_the_right_exponents():
    N, D = grid()
    E, A, B = scaling.linear_fit(N, D, scaling.law(N, D, 1.2, 35.0, 0.4, 700.0, 0.5), 0.4, 0.5)
    assert (E, A, B) == pytest.approx((1.2, 35.0, 700.0), rel=1e-8)


def test_fit_refuses_too_few_or_bad_runs():
    with pytest.raises(ValueError, match="at least 5 runs"):
        scaling.fit_law([1e4, 1e5], [1e6, 1e6], [2.0, 1.8])
    with pytest.raises(ValueError, match="positive"):
        scaling.fit_law([1e4] * 5, [1e6] * 5, [2.0, 1.8, 1.7, 0.0, 1.5])


def test_compute_optimal_minimises_the_law_along_an_iso_flop_curve():
    fit = dict(E=1.2, A=30.0, alpha=0.4, B=600.0, beta=0.3)
    for C in (1e12, 1e15, 1e18):
        N_opt, D_opt = scaling.compute_optimal(fit, C)
        assert float(scaling.training_flops(N_opt, D_opt)) == pytest.approx(C, rel=1e-12)
        N = np.logspace(2, 12, 200_001)                 # brute force: every N, D = C / 6N
        best = N[np.argmin(scaling.predict(fit, N, C / (6 * N)))]
        assert float(N_opt) == pytest.approx(best, rel=1e-3)
    assert scaling.training_flops(1e6, 2e7) == 1.2e14


def test_non_embedding_parameters_are_twelve_d_squared_per_block():
    """GPT-2's blocks: attention 4d^2 + 4d, MLP 8d^2 + 5d, two LayerNorms 4d; a final LayerNorm 2d."""
    for shape in scaling.SHAPES + (scaling.HELD_OUT[0],):
        d, L = shape.d_model, shape.n_layers
        model = build("decoder", scaling.model_config(shape, 84, scaling.Recipe()))
        assert scaling.non_embedding_parameters(model) == L * (12 * d * d + 13 * d) + 2 * d
        embeddings = 84 * d + scaling.Recipe().context * d
        assert model.num_parameters() == scaling.non_embedding_parameters(model) + embeddings
    Ns = [scaling.shape_parameters(s) for s in scaling.SHAPES]
    assert Ns == sorted(Ns) and 25 < Ns[-1] / Ns[0] < 40, Ns


def test_each_run_has_its_own_schedule_ending_at_its_D():
    recipe = scaling.Recipe()
    for tokens in scaling.TOKENS + (scaling.HELD_OUT[1],):
        config = scaling.run_config(recipe, tokens)
        assert config.steps * config.batch_size * config.context == tokens
        assert config.last_step == config.steps and config.stop_after is None
        assert config.eval_every == config.steps          # one evaluation, at the end
        assert config.lr_at(config.warmup - 1) == pytest.approx(recipe.lr)
        assert config.lr_at(config.steps) == pytest.approx(recipe.lr * recipe.min_lr_ratio, rel=1e-12)
        assert config.lr_at(config.steps - 1) == pytest.approx(recipe.lr * recipe.min_lr_ratio, rel=1e-2)
        assert config.lr_at(config.steps // 2) > 0.5 * recipe.lr     # half-way the rate is still high
        assert config.warmup == round(recipe.warmup_fraction * config.steps)
    with pytest.raises(ValueError, match="whole number of steps"):
        scaling.run_config(recipe, 1_000_000)


def test_a_tiny_sweep_end_to_end_resumes_and_records_the_held_out_error(tmp_path, monkeypatch):
    tiny = functools.partial(scaling.Recipe, batch_size=2, context=16, eval_chars=400)
    monkeypatch.setattr(scaling, "Recipe", tiny)
    monkeypatch.setattr(scaling, "SHAPES", (scaling.Shape(8, 1, 2), scaling.Shape(16, 1, 2), scaling.Shape(16, 2, 2)))
    monkeypatch.setattr(scaling, "TOKENS", (32 * 4, 32 * 8))
    monkeypatch.setattr(scaling, "PILOT", {"shapes": (scaling.Shape(8, 1, 2),), "tokens": 32 * 4, "batch_sizes": (2, 4),
                                           "lrs": (1e-3, 1e-2)})
    monkeypatch.setattr(scaling, "HELD_OUT", (scaling.Shape(24, 2, 2), 32 * 8))
    trained = []
    real_train_run = scaling.train_run
    monkeypatch.setattr(scaling, "train_run", lambda *a, **k: trained.append(a[:2]) or real_train_run(*a, **k))
    path = tmp_path / "scaling_laws.json"
    with pytest.raises(ValueError, match="no prediction"):
        scaling.run_held_out(path, require_committed=False)

    store = scaling.run_grid(path, log=lambda *_: None)
    assert len(trained) == 4 + 6 and len(store["runs"]) == 6
    assert scaling.run_grid(path, log=lambda *_: None)["fit"] == store["fit"] and len(trained) == 10   # resumes
    chosen = store["pilot"]["chosen"]
    assert (store["recipe"]["batch_size"], store["recipe"]["lr"]) == (chosen["batch_size"], chosen["lr"])
    assert all(r["D"] == r["steps"] * r["batch_size"] * 16 for r in store["runs"])
    held = store["held_out"]
    assert held["predicted_bpc"] == round(float(scaling.predict(store["fit"], held["N"], held["D"])), 4)
    with pytest.raises(ValueError, match="commit the prediction"):
        scaling.run_held_out(path)                     # tmp_path is not in the repository
    store = scaling.run_held_out(path, require_committed=False, log=lambda *_: None)
    held = store["held_out"]
    assert held["error_bpc"] == pytest.approx(held["measured_bpc"] - held["predicted_bpc"], abs=1e-9)
    assert json.loads(path.read_text())["held_out"]["measured_bpc"] == held["measured_bpc"]


# ----------------------------------------------------------------------------- the committed sweep

@pytest.fixture(scope="module")
def sweep():
    return json.loads((ROOT / "results" / "scaling_laws.json").read_text(encoding="utf-8"))


def test_the_committed_sweep_is_complete_and_each_run_is_its_own(sweep):
    recipe = scaling.Recipe(**sweep["recipe"])
    runs = {(r["d_model"], r["n_layers"], r["D"]): r for r in sweep["runs"]}
    assert len(runs) == len(sweep["runs"]) == len(scaling.SHAPES) * len(scaling.TOKENS)
    for shape in scaling.SHAPES:
        for tokens in scaling.TOKENS:
            run = runs[(shape.d_model, shape.n_layers, tokens)]
            config = scaling.run_config(recipe, tokens)
            assert run["steps"] == config.steps and run["D"] == run["steps"] * run["batch_size"] * run["context"]
            assert run["N"] == scaling.shape_parameters(shape)
            assert run["lr"] == recipe.lr and run["batch_size"] == recipe.batch_size
            assert run["code"]["commit"] and 0 < run["cpu_seconds"] and 0.5 < run["val_bpc"] < 5
    # More tokens help at every N; more parameters at every D but the shortest, where the runs are still
    # on the plateau at the start of training (what the lab and the chapter say)
    for tokens in scaling.TOKENS:
        losses = [runs[(s.d_model, s.n_layers, tokens)]["val_bpc"] for s in scaling.SHAPES]
        assert (losses == sorted(losses, reverse=True)) == (tokens != min(scaling.TOKENS)), (tokens, losses)
    for shape in scaling.SHAPES:
        losses = [runs[(shape.d_model, shape.n_layers, t)]["val_bpc"] for t in scaling.TOKENS]
        assert losses == sorted(losses, reverse=True), (shape, losses)


def test_the_recipe_was_chosen_by_the_pilot_on_validation(sweep):
    pilot = sweep["pilot"]
    pairs = [(b, lr) for b in scaling.PILOT["batch_sizes"] for lr in scaling.PILOT["lrs"]]
    means = {pair: np.mean([r["val_bpc"] for r in pilot["runs"] if (r["batch_size"], r["lr"]) == pair])
             for pair in pairs}
    best = min(means, key=means.get)
    assert best == (pilot["chosen"]["batch_size"], pilot["chosen"]["lr"])
    assert best == (sweep["recipe"]["batch_size"], sweep["recipe"]["lr"])
    assert len(pilot["runs"]) == len(pairs) * len(scaling.PILOT["shapes"])
    assert all(r["D"] == scaling.PILOT["tokens"] for r in pilot["runs"])


def test_the_committed_fit_is_the_fit_of_the_runs(sweep):
    fit = sweep["fit"]
    assert {"E", "A", "alpha", "B", "beta"} <= set(fit)
    N, D, L = (np.array([r[k] for r in sweep["runs"]], dtype=float) for k in ("N", "D", "val_bpc"))
    refit = scaling.fit_law(N, D, L)
    assert np.allclose(scaling.predict(refit, N, D), scaling.predict(fit, N, D), rtol=1e-4)
    assert fit["rms_rel_error"] < 0.03


def test_the_held_out_prediction_is_the_fits_value_and_was_measured(sweep):
    held, fit = sweep["held_out"], sweep["fit"]
    assert held["predicted_with"] == {k: fit[k] for k in ("E", "A", "alpha", "B", "beta")}
    assert held["predicted_bpc"] == round(float(scaling.predict(fit, held["N"], held["D"])), 4)
    assert held["N"] > max(r["N"] for r in sweep["runs"]) and held["D"] >= max(r["D"] for r in sweep["runs"])
    assert held["N"] == scaling.shape_parameters(scaling.Shape(held["d_model"], held["n_layers"], held["n_heads"]))
    assert held["measured_bpc"] == held["run"]["val_bpc"]
    assert held["error_bpc"] == pytest.approx(held["measured_bpc"] - held["predicted_bpc"], abs=1e-9)


def test_the_sweep_kept_to_its_cpu_budget(sweep):
    spent = scaling.total_cpu(sweep)
    assert spent == sweep["cpu_seconds"]
    assert spent["total"] <= sweep["cpu_budget_seconds"] == 3000
