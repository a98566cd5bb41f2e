"""Ablations (tinylm.training.ablations): equal parameters, equal CPU-seconds, runs that repeat, and
the committed logs of `python -m tinylm ablate`."""

from __future__ import annotations

import dataclasses
import json

import pytest

import tinylm
from tinylm.training import ablations
from tinylm.training.ablations import STUDIES, Study, Variant, configurations, matched_d_ff, parameters_of

V = 84   # the Shakespeare alphabet


def test_matched_d_ff_is_the_closest_width():
    gpt2 = dict(ablations.SMALL)
    target = parameters_of(gpt2, V)
    swiglu = dict(gpt2, norm="rms", positions="rotary", mlp="swiglu", bias=False)
    width = matched_d_ff(swiglu, V, target)
    gap = abs(parameters_of(dict(swiglu, d_ff=width), V) - target)
    for other in (width - 1, width + 1):
        assert gap <= abs(parameters_of(dict(swiglu, d_ff=other), V) - target)
    d = gpt2["d_model"]
    assert 8 * d / 3 <= width <= 1.15 * 8 * d / 3, "about 8d/3, a little more for the parts that went"


def test_the_llama_parts_have_equal_parameters_and_end_at_llamas_block():
    study = STUDIES["llama-parts"]
    options = configurations(study, V)
    counts = {name: parameters_of(o, V) for name, o in options.items()}
    first = counts["gpt2"]
    assert all(abs(c - first) / first < 0.002 for c in counts.values()), counts
    last = options[study.variants[-1].name]
    assert (last["norm"], last["positions"], last["mlp"], last["bias"], last["n_kv_heads"]) == \
        ("rms", "rotary", "swiglu", False, 2)
    for before, after in zip(study.variants, study.variants[1:]):    # cumulative: each adds to the one before
        assert set(before.model.items()) <= set(after.model.items())


def test_the_moe_study_compares_equal_active_parameters():
    study = STUDIES["moe"]
    from tinylm.models import build
    from tinylm.models.moe import active_parameters

    models = {name: build("decoder", dict(o, vocab_size=V)) for name, o in configurations(study, V).items()}
    router = study.base["n_layers"] * study.base["d_model"] * 8
    assert active_parameters(models["moe"]) == models["dense-same-time"].num_parameters() + router
    assert models["moe"].num_parameters() > 1.9 * models["dense-same-time"].num_parameters()


def tiny_study():
    return Study("tiny", "a test", base=dict(d_model=16, n_heads=2, n_layers=1, max_len=32),
                 variants=(Variant("dense", "dense", dict(d_ff=32)),
                           Variant("moe", "moe", dict(d_ff=8, moe_experts=4, moe_top_k=2, moe_shared=1),
                                   checkpoint=True),
                           Variant("dense-steps", "dense, the moe's steps", dict(d_ff=32), steps_like="moe")),
                 train=dataclasses.replace(ablations.SHORT_RUN, batch_size=4, context=32, warmup=2),
                 budget=0.4, seeds=(0, 1), eval_chars=3000)


def test_a_study_runs_for_equal_cpu_seconds_and_repeats_from_its_log(tmp_path):
    study = tiny_study()
    log = ablations.run(study, tmp_path / "log.json", tmp_path / "ckpt", progress=False)
    assert json.loads((tmp_path / "log.json").read_text()) == json.loads(json.dumps(log))
    v = log["variants"]
    for name in ("dense", "moe"):
        assert v[name]["steps"] == round(study.budget / v[name]["seconds_per_step"])
    assert v["dense-steps"]["steps"] == v["moe"]["steps"]
    assert [(r["variant"], r["seed"]) for r in log["runs"]] == [(n, s) for n in ("dense", "moe", "dense-steps")
                                                                 for s in (0, 1)]
    moe_runs = [r for r in log["runs"] if r["variant"] == "moe"]
    assert all(len(r["utilisation"]) == 1 and sum(r["utilisation"][0]) == pytest.approx(1, abs=1e-3)
               for r in moe_runs)
    model, tok, saved = tinylm.load(tmp_path / "ckpt" / "moe")
    assert saved["variant"] == "moe" and model.config.moe_experts == 4
    assert ablations.valid_bpc(model, tok, study) == pytest.approx(moe_runs[0]["valid_bpc"], abs=1e-4)
    again = ablations.run(study, tmp_path / "again.json", None, seeds=(1,), reuse=log, progress=False)
    assert [r["valid_bpc"] for r in again["runs"]] == [r["valid_bpc"] for r in log["runs"] if r["seed"] == 1], \
        "with the logged steps a run repeats exactly"


@pytest.mark.parametrize("name", sorted(STUDIES))
def test_the_committed_logs_match_their_studies(name):
    log = ablations.load(name)
    study = STUDIES[name]
    assert log["recipe"] == study.to_dict(), "the study changed since its run: run it again"
    assert log["code"]["commit"]
    runs = {(r["variant"], r["seed"]) for r in log["runs"]}
    assert runs == {(v.name, s) for v in study.variants for s in log["seeds"]}
    assert len(log["seeds"]) >= 2
    for v in study.variants:
        entry = log["variants"][v.name]
        assert entry["config"] == configurations(study, log["vocab_size"])[v.name]
        if v.steps_like:
            assert entry["steps"] == log["variants"][v.steps_like]["steps"]
        else:
            assert entry["steps"] * entry["seconds_per_step"] == pytest.approx(log["budget_cpu_seconds"], rel=0.01)
    for run in log["runs"]:
        assert run["steps"] == log["variants"][run["variant"]]["steps"] and 1.0 < run["valid_bpc"] < 4.0
