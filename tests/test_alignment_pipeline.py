"""The committed alignment runs (``python -m tinylm align``): complete, honest and consistent.

The results file has what issue 13 asks for; every stage's log names clean committed code and
the configuration it ran; the SFT recipe is the best of its candidates on validation; the claim
that all demonstrations would leave nothing to show is the selection log's; numbers the labs and
the chapter quote are recomputed from the committed weights."""

import json
import subprocess
import sys

import pytest

from tinylm import results
from tinylm.alignment import pipeline
from tinylm.data import instructions
from tinylm.paths import course_root

ROOT = course_root()
STAGES = [s for s in pipeline.STAGES if s not in ("pairs", "evaluate")]
MODELS = ("base", "sft", "ppo", "dpo", "grpo")


def stage_log(name: str) -> dict:
    return json.loads((pipeline.align_dir() / name / "log.json").read_text())


def test_the_results_file_has_what_the_issue_asks_for():
    store = results.load(pipeline.RESULTS)
    tasks = list(instructions.instruction_tasks())
    for model in MODELS:
        row = store["heldout_accuracy"][model]
        assert set(tasks) <= set(row) and 0 <= row["all"] <= 1
        assert row["all"] == pytest.approx(sum(row[t] for t in tasks) / len(tasks), abs=1e-4), \
            "the same number of test requests per task, so the overall share is the mean"
        assert model in store["shakespeare_bpc"]
    assert set(store["kl_to_reference"]) >= {"ppo", "dpo", "grpo"} and store["kl_to_reference"]["sft"] == 0
    assert 0.5 < store["reward_model_accuracy"] <= 1
    assert store["test_requests"] == len(instructions.examples("test"))


@pytest.mark.parametrize("name", STAGES)
def test_every_stage_ran_from_clean_committed_code_on_one_thread(name):
    log = stage_log(name)
    assert log["code"]["commit"] and log["code"]["dirty"] is False, f"{name} ran from uncommitted code"
    assert log["cpu_seconds"] <= 30 * 60, "a committed run has at most 30 CPU-minutes"
    assert "config" in log


def test_pairs_and_evaluation_ran_from_clean_committed_code():
    pairs = json.loads((pipeline.pairs_dir() / "log.json").read_text())
    assert pairs["code"]["dirty"] is False
    assert results.load(pipeline.RESULTS)["evaluation"]["code"]["dirty"] is False


def test_sft_kept_the_best_of_its_recipes_on_validation():
    log = stage_log("sft")
    scores = {name: c["valid_accuracy"]["all"] for name, c in log["candidates"].items()}
    assert set(scores) == set(pipeline.SFT_RECIPES)
    assert log["choice"] == max(scores, key=scores.get)
    assert log["config"] == json.loads(json.dumps(pipeline.dataclasses.asdict(pipeline.SFT_RECIPES[log["choice"]])))
    assert log["pairs"] == len(instructions.examples("train", pipeline.DEMONSTRATIONS))


def test_with_every_demonstration_sft_alone_would_be_nearly_perfect():
    """The reason given for 400 demonstrations per task (pipeline.DEMONSTRATIONS)."""
    selection = json.loads((ROOT / "results" / "selection" / "alignment-sft.json").read_text())
    assert selection["code"]["dirty"] is False
    best = selection["runs"][selection["best"]]["valid_accuracy"]["all"]
    assert best >= 0.99
    assert best > stage_log("sft")["candidates"][stage_log("sft")["choice"]]["valid_accuracy"]["all"] + 0.1


def test_the_committed_sft_model_scores_as_the_results_say():
    model, tokenizer, _ = pipeline.load_stage("sft")
    from tinylm.alignment.sft import accuracy

    test = instructions.examples("test")
    scores = accuracy(model, instructions.ChatTemplate(tokenizer), test)
    assert scores == pytest.approx(results.load(pipeline.RESULTS)["heldout_accuracy"]["sft"], abs=1e-9)


def test_an_unknown_stage_is_one_line_and_exit_code_2():
    done = subprocess.run([sys.executable, "-m", "tinylm", "align", "--stage", "nope"], capture_output=True,
                          text=True, cwd=ROOT)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "no stage 'nope'" in done.stderr
