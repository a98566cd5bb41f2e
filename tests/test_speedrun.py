"""The three-minute speedrun (tinylm.training.speedrun, python -m tinylm speedrun): its rules are
enforced, its schedule depends on steps alone, and the committed record is the best of its
leaderboard on validation and reproduces from its checkpoint."""

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest

import tinylm
from tinylm import data
from tinylm.__main__ import main
from tinylm.evaluation import ladder, metrics
from tinylm.paths import course_root
from tinylm.training import loop, speedrun

ROOT = course_root(Path(__file__).parent)
RESULTS = json.loads((ROOT / "results" / "speedrun.json").read_text())


def tiny(name="tiny", steps=6, **train):
    """A speedrun recipe small enough to train in a second."""
    return {"name": name, "description": "a test", "tokens": "char",
            "model": {"d_model": 16, "n_heads": 2, "n_layers": 1, "max_len": 16},
            "train": {"steps": steps, "batch_size": 2, "context": 16, "lr": 1e-2, "warmup": 2, **train}}


@pytest.fixture
def small_validation(monkeypatch):
    """Validate on 500 characters instead of 100,000 (the rules' text, cut short for speed)."""
    make = speedrun.recipe

    def shorter(sub):
        import dataclasses
        return dataclasses.replace(make(sub), eval_chars=500)
    monkeypatch.setattr(speedrun, "recipe", shorter)


# ----------------------------------------------------------------------------- the rules

@pytest.mark.parametrize("steps, said", [(1, "1 step took .* over the budget of 1e-06 \\(no tolerance\\)"),
                                         (40, "stopped after 1 of 40 steps")])
def test_the_command_refuses_a_run_over_budget_and_records_nothing(steps, said, tmp_path, monkeypatch, capsys,
                                                                   small_validation):
    """With a budget of a microsecond every run is over: one step is refused when it ends, a longer
    run is stopped at its second step; nothing is written."""
    monkeypatch.setattr(speedrun, "BUDGET", 1e-6)
    code = main(["speedrun", "--recipe", json.dumps(tiny(steps=steps)), "--out-dir", str(tmp_path)])
    assert code == 2
    said_lines = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]   # not the bar
    assert len(said_lines) == 1 and re.search(said, said_lines[0]), said_lines
    assert not any(tmp_path.iterdir()), "a refused run writes nothing"


def test_a_run_inside_the_budget_is_recorded_and_becomes_the_record_only_if_best(tmp_path, small_validation):
    # a board whose best entry nobody beats: the run joins it, the test split is not scored
    unbeatable = {"name": "unbeatable", "valid_bpc": 0.5, "train_cpu_seconds": 1.0}
    (tmp_path / "speedrun.json").write_text(json.dumps({"record": None, "leaderboard": [unbeatable], "pilots": []}))
    entry = speedrun.compete(tiny(), tmp_path, progress=False)
    on_file = json.loads((tmp_path / "speedrun.json").read_text())
    assert "test_bpc" not in entry and not entry.get("record") and not (tmp_path / "record").exists()
    assert [e["name"] for e in on_file["leaderboard"]] == ["unbeatable", "tiny"]
    assert on_file["record"] is None
    assert 0 <= entry["train_cpu_seconds"] <= speedrun.BUDGET and entry["steps"] == 6
    assert entry["tokens_seen"] == 6 * 2 * 16 and entry["threads"] == 1
    # on an empty board it is the best: test scored once, checkpoint written
    other = tmp_path / "other"
    entry = speedrun.compete(tiny(), other, progress=False)
    on_file = json.loads((other / "speedrun.json").read_text())
    assert entry["record"] and on_file["record"]["name"] == "tiny" == on_file["leaderboard"][0]["name"]
    model, tok, log = tinylm.load(other / "record")
    assert log["speedrun"]["test_bpc"] == on_file["record"]["test_bpc"] == entry["test_bpc"]
    ids = tok.encode(data.shakespeare().test)
    bpc = metrics.bits_per_char(tinylm.score(model, ids, context=16), metrics.scored_chars(tok, ids))
    assert bpc == pytest.approx(entry["test_bpc"], abs=6e-5)


def test_a_submission_with_a_mistake_is_refused_clearly():
    cases = [({**tiny(), "optimizer": "sgd"}, "has no field 'optimizer'"),
             ({**tiny(), "train": {"batch_size": 2}}, "put 'steps' in 'train'"),
             (tiny(eval_every=2), "the rules set 'eval_every'"),
             (tiny(patience=3), "the rules set 'patience'"),
             (tiny(momentum=0.9), "'train' has no field 'momentum'"),
             ({**tiny(), "tokens": "words"}, "'char' or 'bpe-N'"),
             ({**tiny(), "family": "encoder"}, "'family' is one of"),
             ({**tiny(), "model": {"d_model": 16, "n_heads": 3}}, "not divisible"),
             ({**tiny(), "model": {"max_len": 8}}, "fewer than the context of 16"),
             ({**tiny(), "name": "no spaces please"}, "needs a 'name'"),
             (tiny(steps=0), "positive whole number")]
    for submission, said in cases:
        with pytest.raises(ValueError, match=said):
            speedrun.recipe(submission)


def test_the_command_explains_a_bad_recipe_argument(capsys):
    assert main(["speedrun", "--recipe", "no-such-candidate"]) == 2
    assert "is not a candidate" in capsys.readouterr().err
    assert main(["speedrun", "--recipe", "{not json"]) == 2
    assert "not valid JSON" in capsys.readouterr().err


# ----------------------------------------------------------------------------- steps, not the clock

def learning_rates(monkeypatch):
    rates = []
    make = loop.make_optimizer

    def recording(model, config):
        optimizer = make(model, config)
        optimizer.register_step_pre_hook(lambda opt, args, kwargs: rates.append(opt.param_groups[0]["lr"]))
        return optimizer
    monkeypatch.setattr(loop, "make_optimizer", recording)
    return rates


def test_the_schedule_depends_only_on_steps(monkeypatch, small_validation):
    """On a machine whose clock runs five times faster (so CPU-seconds read five times larger),
    the run takes the same steps at the same learning rates and ends with the same weights."""
    rates = learning_rates(monkeypatch)
    sub = tiny(steps=8)
    _, _, entry = speedrun.train(speedrun.recipe(sub), budget=1e9)
    normal = list(rates)
    rates.clear()
    real = time.process_time
    monkeypatch.setattr(time, "process_time", lambda: 5 * real())
    _, _, slow = speedrun.train(speedrun.recipe(sub), budget=1e9)
    assert rates == normal == [speedrun.recipe(sub).train.lr_at(s) for s in range(8)]
    assert slow["steps"] == entry["steps"] == 8 and slow["valid_bpc"] == entry["valid_bpc"]
    assert slow["train_cpu_seconds"] > 2 * entry["train_cpu_seconds"], "the clock did run faster"


def test_a_shortened_run_keeps_the_shape_of_the_schedule():
    made = speedrun.recipe(speedrun.CANDIDATES[speedrun.RECORD])
    short = speedrun.shortened(made, 30)
    assert short.train.steps == round(made.train.steps / 6) and short.train.eval_every == short.train.steps
    assert short.train.warmup == round(made.train.warmup / 6)
    for fraction in (0.25, 0.5, 0.75):           # about the same learning rate at the same fraction of the run
        a, b = made.train.lr_at(int(fraction * made.train.steps)), short.train.lr_at(int(fraction * short.train.steps))
        assert a == pytest.approx(b, rel=0.05), fraction
    assert made.train.lr_at(made.train.steps - 1) < 1e-4 * made.train.lr, "the cosine decays to 0"
    with pytest.raises(ValueError, match="between 0 and 180"):
        speedrun.shortened(made, 200)


# ----------------------------------------------------------------------------- the committed record

def test_the_results_file_is_well_formed():
    assert RESULTS["rules"] == speedrun.rules()
    assert RESULTS["rules"]["budget_cpu_seconds"] == 180 and RESULTS["rules"]["threads"] == 1
    board, record = RESULTS["leaderboard"], RESULTS["record"]
    assert len(board) >= 3
    for entry in board + RESULTS["pilots"]:
        for key in ("name", "valid_bpc", "train_cpu_seconds", "steps", "tokens_seen", "parameters", "recipe",
                    "code", "machine", "date", "threads"):
            assert key in entry, (entry["name"], key)
        assert entry["threads"] == 1 and entry["code"]["commit"]
        assert 1.0 < entry["valid_bpc"] < 4.0
        made = speedrun.recipe(speedrun.CANDIDATES[entry["name"]])      # every entry is a candidate, as run
        if "budget" in entry:
            made = speedrun.shortened(made, entry["budget"])
        assert entry["recipe"] == json.loads(json.dumps(speedrun.submission(made))), entry["name"]
        assert entry["steps"] == made.train.steps
        assert entry["tokens_seen"] == made.train.steps * made.train.batch_size * made.train.context
    for entry in board:
        assert entry["train_cpu_seconds"] <= speedrun.BUDGET, "a run over budget is never recorded"
    # test is scored for a run that is the best on validation when it runs: the record, and any
    # earlier record it beat on validation
    scored = [e for e in board if "test_bpc" in e]
    assert scored[0]["name"] == record["name"]
    assert all(e["date"] <= record["date"] for e in scored)
    for entry in RESULTS["pilots"]:
        assert entry["budget"] < speedrun.BUDGET and "test_bpc" not in entry
    assert [e["valid_bpc"] for e in board] == sorted(e["valid_bpc"] for e in board)
    assert len({e["name"] for e in board}) == len(board)


def test_the_record_is_the_best_validation_entry_of_its_leaderboard():
    board, record = RESULTS["leaderboard"], RESULTS["record"]
    best = min(board, key=lambda e: e["valid_bpc"])
    assert record["name"] == best["name"] == speedrun.RECORD
    assert {k: v for k, v in record.items() if k in best} == best
    for key in ("test_bpc", "valid_bpc", "train_cpu_seconds", "steps", "recipe", "code", "machine", "date",
                "test_cpu_seconds", "valid_cpu_seconds", "prepare_cpu_seconds"):
        assert key in record, key
    assert record["train_cpu_seconds"] <= speedrun.BUDGET
    assert record["recipe"] == json.loads(json.dumps(speedrun.submission(speedrun.recipe(speedrun.CANDIDATES[speedrun.RECORD]))))


def test_the_committed_checkpoint_is_the_records_model():
    """Scored as the run scored it (the first 100,000 characters of the validation split, windows
    of the training context), the committed model gives the record's validation score."""
    model, tok, log = tinylm.load(speedrun.RECORD_DIR)
    record = RESULTS["record"]
    assert log["name"] == record["name"] and log["speedrun"]["test_bpc"] == record["test_bpc"]
    assert model.num_parameters() == record["parameters"] == log["parameters"]
    made = speedrun.recipe(record["recipe"])
    assert model.config == made.build(len(tok)).config and tok.to_dict() == made.tokenizer().to_dict()
    ids = np.asarray(tok.encode(data.shakespeare().valid[:made.eval_chars]))
    bpc = metrics.bits_per_char(tinylm.score(model, ids, context=made.train.context), metrics.scored_chars(tok, ids))
    assert bpc == pytest.approx(record["valid_bpc"], abs=6e-5)
    size = (ROOT / "checkpoints" / speedrun.RECORD_DIR / "model.safetensors").stat().st_size
    assert size < 5 * 2**20, "a few MB at most"


def test_the_record_stands_where_the_chapter_says_against_the_ladder():
    """What .sections/lab20_speedrun.md and Lab 20 say: the record beats the MLP and RNN rungs
    and the compressors, not the n-grams, and the GPT rung is better with far more compute."""
    rungs = {r.name: r for r in ladder.load() if r.corpus == "shakespeare"}
    test = RESULTS["record"]["test_bpc"]
    assert test < rungs["MLP (Bengio), 8 characters"].test_bpc and test < rungs["RNN 512"].test_bpc
    assert test < min(rungs[c].test_bpc for c in ("gzip", "bz2", "xz"))
    assert test > rungs["kneser-ney 7-gram"].test_bpc
    assert test > rungs["GPT (4 blocks, BPE 1024)"].test_bpc
