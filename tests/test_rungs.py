"""Rung runs: the command, the checkpoint it writes, and the checkpoints committed for the ladder."""

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tinylm import rungs, train
from tinylm.paths import course_root

ROOT = course_root(Path(__file__).parent)
COMMITTED = sorted(p for p in (ROOT / "checkpoints").glob("*.json") if not p.name.endswith(".tokenizer.json"))
MAX_MB = 24   # a 5M-parameter GPT in float32 is 20 MB


def small(name):
    """A recipe shrunk to run in seconds, on a slice of the corpus."""
    recipe = rungs.RECIPES[name]
    shrink = ({"d_model": 16, "n_heads": 2, "n_layers": 1, "max_len": 16} if recipe.family == "transformer"
              else {"hidden": 16, "embedding": 8})
    return replace(recipe, name=f"{name}-tiny", model={**recipe.model, **shrink},
                   train=replace(recipe.train, steps=4, batch_size=2, context=16, eval_every=2, eval_tokens=500,
                                 progress=False))


@pytest.mark.parametrize("name", sorted(rungs.RECIPES))
def test_a_trial_run_writes_a_checkpoint_that_loads_and_repeats(name, tmp_path):
    recipe = small(name)
    log = rungs.run(recipe, tmp_path)
    again = rungs.run(recipe, tmp_path / "again")
    assert log["history"]["valid_bpc"] == again["history"]["valid_bpc"], "a rung run must be deterministic"
    model, on_disk = rungs.load(recipe.name, tmp_path)
    assert on_disk["parameters"] == train.count_parameters(model) == log["parameters"]
    corpus = rungs.data.load(recipe.corpus)
    valid, chars = rungs.validation(recipe, recipe.train, corpus, rungs.load_tokenizer(recipe.name, tmp_path))
    assert chars == 500
    assert (train.bits_per_char(model, valid, context=16, n_chars=chars)
            == pytest.approx(log["history"]["best_valid_bpc"]))
    assert log["history"]["steps_done"] == 4 and log["train_cpu_seconds"] >= 0 and log["peak_mb"] > 0


def test_the_command_line(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    rungs.add_arguments(parser)
    args = parser.parse_args(["list"])
    assert args.run(args) == 0 and "lstm" in capsys.readouterr().out
    args = parser.parse_args(["train", "nonsense"])
    assert args.run(args) == 2 and "choose one of" in capsys.readouterr().err


def test_a_missing_checkpoint_says_how_to_make_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m tinylm rung train lstm"):
        rungs.load("lstm", tmp_path)


@pytest.mark.parametrize("log_path", COMMITTED, ids=[p.stem for p in COMMITTED])
def test_committed_checkpoints_are_complete_small_runs_of_their_recipe(log_path):
    log = json.loads(log_path.read_text())
    weights = log_path.with_suffix(".safetensors")
    assert weights.is_file(), f"{weights.name} is missing"
    assert weights.stat().st_size < MAX_MB * 2**20, f"{weights.name} is larger than {MAX_MB} MB"
    assert not log["trial"], f"{log_path.name} is a trial run (--steps); train the whole recipe"
    recipe = rungs.RECIPES[log["name"]]
    assert log["history"]["steps_done"] == recipe.train.steps
    assert log["model"] == dict(recipe.model, vocab_size=log["model"]["vocab_size"]), "the recipe changed since"
    assert log["train_cpu_seconds"] <= 30 * 60, "a rung run has at most 30 minutes of one core"
    assert np.isclose(min(log["history"]["valid_bpc"]), log["history"]["best_valid_bpc"])
