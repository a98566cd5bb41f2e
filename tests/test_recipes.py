"""Recipes (tinylm.training.recipes): the command that makes them, the checkpoint folders it writes,
and the checkpoints committed for the ladder."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tinylm
from tinylm import data
from tinylm.__main__ import main
from tinylm.checkpoint import FILES
from tinylm.evaluation import ladder, metrics
from tinylm.models import NGramModel
from tinylm.paths import course_root
from tinylm.training import loop
from tinylm.training.recipes import CHOICES, RECIPES, LanguageModelRecipe, NGramRecipe

ROOT = course_root(Path(__file__).parent)
COMMITTED = sorted(p.name for p in (ROOT / "checkpoints").iterdir() if (p / FILES["config"]).is_file())
MAX_MB = 24   # a 5M-parameter GPT in float32 is 20 MB
LANGUAGE_MODELS = sorted(name for name, r in RECIPES.items() if r.kind == "causal-lm")
CHECKPOINT_FILES = {"model.safetensors", "config.json", "tokenizer.json", "log.json"}


def small(name, **train):
    """A language-model recipe shrunk to run in seconds, validated on 500 characters."""
    recipe = RECIPES[name]
    shrink = {"decoder": {"d_model": 16, "n_heads": 2, "n_layers": 1, "max_len": 16},
              "recurrent": {"d_state": 16, "d_embed": 8},
              "mlp": {"d_hidden": 16, "d_embed": 8}}[recipe.family]
    return dataclasses.replace(
        recipe, name=f"{name}-tiny", model={**recipe.model, **shrink}, eval_chars=500,
        train=dataclasses.replace(recipe.train, **{**dict(steps=4, batch_size=2, context=16, eval_every=2,
                                                          progress=False), **train}))


def recorded(recipe_log: dict) -> dict:
    """A log's recipe with the training options added to ``TrainConfig`` since its run at their
    defaults: the values the run had before the option existed (``accumulate``: 1)."""
    if "train" not in recipe_log:
        return recipe_log
    return {**recipe_log, "train": {**json.loads(json.dumps(loop.TrainConfig().to_dict())), **recipe_log["train"]}}


def test_every_recipe_is_listed_with_its_kind():
    assert set(LANGUAGE_MODELS) == {"mlp", "rnn", "lstm", "gpt", "gpt2style"}
    assert {name for name, r in RECIPES.items() if r.kind == "ngram"} == {"kn7", "kn5-bpe512"}
    assert RECIPES["mlm-zh"].kind == "masked-lm" and RECIPES["chat-base"].kind == "chat-base"
    assert all(name == r.name for name, r in RECIPES.items())


@pytest.mark.parametrize("name", LANGUAGE_MODELS)
def test_a_trial_run_writes_a_checkpoint_that_loads_and_repeats(name, tmp_path):
    recipe = small(name)
    log = recipe.run(tmp_path)
    again = recipe.run(tmp_path / "again")
    assert log["history"]["valid"] == again["history"]["valid"], "a recipe run must be deterministic"
    assert log["history"]["train_loss"] == again["history"]["train_loss"]
    folder = tmp_path / recipe.name
    assert {p.name for p in folder.iterdir()} == CHECKPOINT_FILES
    model, tok, on_disk = tinylm.load(folder)
    assert not model.training, "a loaded model is in evaluation mode"
    assert on_disk["parameters"] == model.num_parameters() == log["parameters"]
    assert model.config == recipe.build(len(tok)).config
    assert tok.to_dict() == recipe.tokenizer().to_dict()
    assert on_disk["recipe"] == json.loads(json.dumps(recipe.to_dict()))
    ids = tok.encode(data.corpus(recipe.corpus).valid[:500])
    # the ladder's measure: bits per character predicted (all but the first token's)
    bpc = metrics.bits_per_char(tinylm.score(model, ids, context=16), metrics.scored_chars(tok, ids))
    assert bpc == pytest.approx(log["history"]["best_valid"], abs=1e-6)
    assert log["history"]["steps_done"] == 4 and log["history"]["step"] == [2, 4]
    assert log["stop_after"] is None and log["train_cpu_seconds"] >= 0 and log["peak_mb"] > 0
    assert log["machine"]["threads"] == 1, "recipes run on one thread"


def test_the_chat_base_recipe_reads_the_mixture_and_validates_on_its_validation_split(tmp_path):
    """The alignment chapter's base model: Shakespeare with raw task lines, over the chat vocabulary."""
    from tinylm.data import instructions

    recipe = small("chat-base")
    log = recipe.run(tmp_path)
    model, tok, _ = tinylm.load(tmp_path / recipe.name)
    assert tok.to_dict() == instructions.chat_tokenizer().to_dict()
    ids = tok.encode(instructions.pretraining_text("valid")[:500])
    bpc = metrics.bits_per_char(tinylm.score(model, ids, context=16))
    assert bpc == pytest.approx(log["history"]["best_valid"], abs=1e-6)
    assert log["code"]["commit"] is None or "dirty" in log["code"]


def learning_rates(monkeypatch):
    """Record the learning rate of every optimizer step of the runs that follow."""
    rates = []
    make = loop.make_optimizer

    def recording(model, config):
        optimizer = make(model, config)
        optimizer.register_step_pre_hook(lambda opt, args, kwargs: rates.append(opt.param_groups[0]["lr"]))
        return optimizer
    monkeypatch.setattr(loop, "make_optimizer", recording)
    return rates


@pytest.mark.parametrize("name", ["mlp", "lstm"])
def test_stop_after_runs_the_start_of_the_real_schedule(name, tmp_path, monkeypatch):
    recipe = small(name, steps=8, warmup=1, eval_every=1)
    rates = learning_rates(monkeypatch)
    whole = recipe.run(tmp_path / "whole")
    whole_rates = list(rates)
    rates.clear()
    start = recipe.run(tmp_path / "start", stop_after=4)
    assert len(whole_rates) == 8 and rates == whole_rates[:4] == [recipe.train.lr_at(s) for s in range(4)]
    squeezed = dataclasses.replace(recipe.train, steps=4)
    assert rates[2:] != [squeezed.lr_at(s) for s in range(2, 4)], "the schedule of 8 steps, not one of 4"
    assert start["history"]["steps_done"] == 4 and start["history"]["step"] == [1, 2, 3, 4]
    assert start["history"]["train_loss"] == whole["history"]["train_loss"][:4]
    assert start["history"]["valid"]["bpc"] == whole["history"]["valid"]["bpc"][:4]
    assert start["stop_after"] == 4 and whole["stop_after"] is None
    assert start["recipe"]["train"]["steps"] == 8, "the log records the recipe's whole schedule"


def test_stop_after_must_be_inside_the_schedule(tmp_path):
    with pytest.raises(ValueError, match="between 1 and 4"):
        small("mlp").run(tmp_path, stop_after=5)
    with pytest.raises(ValueError, match="counted, not trained"):
        RECIPES["kn7"].run(tmp_path, stop_after=1)
    assert not any(tmp_path.iterdir()), "nothing is written for a refused run"


def test_an_ngram_recipe_is_counted_and_its_checkpoint_loads(tmp_path):
    recipe = dataclasses.replace(RECIPES["kn7"], name="kn3-test", order=3)
    assert isinstance(recipe, NGramRecipe)
    log = recipe.run(tmp_path)
    assert log["counted_when_loaded"] is False and "history" not in log
    model, tok, on_disk = tinylm.load(tmp_path / "kn3-test")
    counted, counted_tok, counted_log = recipe.fit()
    assert isinstance(model, NGramModel) and model.config == counted.config
    assert on_disk["parameters"] == model.num_parameters() == counted.num_parameters() == counted_log["parameters"]
    assert counted_log["counted_when_loaded"] is True
    ids = tok.encode(data.shakespeare().valid[:5_000])
    assert ids == counted_tok.encode(data.shakespeare().valid[:5_000])
    np.testing.assert_array_equal(tinylm.score(model, ids), tinylm.score(counted, ids))


def rung(name):
    return next(r for r in ladder.load() if r.name == name)


@pytest.mark.parametrize("name, rung_name", [("kn7", "kneser-ney 7-gram"), ("kn5-bpe512", "kneser-ney 5-gram, BPE 512")])
def test_loading_an_ngram_by_name_counts_the_ladders_rung(name, rung_name):
    model, tok, log = tinylm.load(name)
    assert log["counted_when_loaded"] is True and log["name"] == name
    on_ladder = rung(rung_name)
    assert model.num_parameters() == log["parameters"] == on_ladder.parameters
    ids = tok.encode(data.shakespeare().test)
    bpc = metrics.bits_per_char(tinylm.score(model, ids), metrics.scored_chars(tok, ids))
    assert bpc == pytest.approx(on_ladder.test_bpc, abs=6e-5)


# ----------------------------------------------------------------------------- the command

def run_command(*args):
    return subprocess.run([sys.executable, "-m", "tinylm", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def test_the_command_lists_the_recipes():
    done = run_command("recipes")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[0] for line in lines] == list(RECIPES)
    assert "3,000 steps" in lines[list(RECIPES).index("mlp")] and "counted" in lines[list(RECIPES).index("kn7")]


def test_the_command_trains_the_start_of_a_recipe(tmp_path):
    done = run_command("train", "mlp", "--stop-after", "2", "--out-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "mlp"
    assert {p.name for p in folder.iterdir()} == CHECKPOINT_FILES
    model, tok, log = tinylm.load(folder)
    assert log["stop_after"] == 2 and log["history"]["steps_done"] == 2 and log["history"]["step"] == [2]
    assert log["recipe"]["train"]["steps"] == 3000
    assert model.config == RECIPES["mlp"].build(len(tok)).config
    assert done.stdout.startswith(f"mlp: {log['parameters']:,} parameters, 2 steps, best validation bpc ")
    assert done.stdout.strip().endswith(f"wrote {folder}")


@pytest.mark.parametrize("args, message", [
    (["train", "nonsense"], "no recipe 'nonsense'; choose one of"),
    (["train", "mlp", "--stop-after", "0"], "--stop-after must be between 1 and 3000"),
    (["train", "kn7", "--stop-after", "5"], "counted, not trained"),
])
def test_mistakes_are_one_line_with_exit_code_2(args, message, capsys, tmp_path):
    assert main([*args, "--out-dir", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and message in err
    assert err.startswith("python -m tinylm train: error: ")


@pytest.mark.parametrize("args, message", [
    (["frobnicate"], "invalid choice"),
    (["train"], "the following arguments are required: name"),
    (["train", "mlp", "--stop-after", "many"], "invalid int value"),
    (["train", "mlp", "--steps", "5"], "unrecognized arguments: --steps 5"),
])
def test_usage_mistakes_are_one_line_with_exit_code_2(args, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and message in err


def test_the_real_command_reports_a_mistake_in_one_line():
    done = run_command("train", "nonsense")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [f"python -m tinylm train: error: no recipe 'nonsense'; choose one of "
                                        f"{sorted(RECIPES)} (python -m tinylm recipes)"]


@pytest.fixture
def empty_course(tmp_path, monkeypatch):
    (tmp_path / "_toc.yml").write_text("root: intro\n")
    (tmp_path / "tinylm").mkdir()
    monkeypatch.setenv("TINYLM_ROOT", str(tmp_path))
    return tmp_path


def test_a_missing_checkpoint_says_how_to_make_it(empty_course):
    with pytest.raises(FileNotFoundError, match="make it with `python -m tinylm train lstm`"):
        tinylm.load("lstm")
    with pytest.raises(FileNotFoundError, match="no model 'nonsense'"):
        tinylm.load("nonsense")
    (empty_course / "half").mkdir()
    (empty_course / "half" / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="not a checkpoint: model.safetensors, tokenizer.json, log.json missing"):
        tinylm.load(empty_course / "half")


# ----------------------------------------------------------------------------- the committed checkpoints

def test_every_recipe_that_trains_has_a_committed_checkpoint():
    trained = {name for name, r in RECIPES.items() if r.steps()}
    assert trained <= set(COMMITTED)


@pytest.mark.parametrize("name", COMMITTED)
def test_committed_checkpoints_are_complete_runs_of_their_recipe(name):
    folder = ROOT / "checkpoints" / name
    assert {p.name for p in folder.iterdir()} == CHECKPOINT_FILES
    weights = folder / FILES["weights"]
    assert weights.stat().st_size < MAX_MB * 2**20, f"{name}'s weights are larger than {MAX_MB} MB"
    model, tok, log = tinylm.load(name)
    assert log["name"] == name and not model.training
    assert log["stop_after"] is None, f"{name} is a trial run (--stop-after); train the whole recipe"
    recipe = RECIPES[name]
    assert recorded(log["recipe"]) == json.loads(json.dumps(recipe.to_dict())), "the recipe changed since"
    history = log["history"]
    assert history["steps_done"] == recipe.steps() and not history["stopped_early"]
    assert log["parameters"] == model.num_parameters()
    assert log["train_cpu_seconds"] <= 30 * 60, "a recipe run has at most 30 minutes of one core"
    monitored = history["valid"][history["monitor"]]          # bits per character, or the MLM loss
    assert history["monitor"] in ("bpc", "loss") and len(monitored) == len(history["step"])
    assert np.isclose(min(monitored), history["best_valid"])
    assert history["best_step"] == history["step"][monitored.index(min(monitored))]
    if isinstance(recipe, LanguageModelRecipe):
        assert model.config == recipe.build(len(tok)).config, "the model's shape is the recipe's"
        assert tok.to_dict() == recipe.tokenizer().to_dict(), "the tokenizer is the recipe's"
        ids = tok.encode(data.corpus(recipe.corpus).valid[:2_000])
        bpc = metrics.bits_per_char(tinylm.score(model, ids, context=recipe.train.context), 2_000)
        fresh = metrics.bits_per_char(tinylm.score(recipe.build(len(tok)), ids, context=recipe.train.context), 2_000)
        assert bpc < 3.2 and fresh > bpc + 2.0, ("trained weights, not a fresh model", bpc, fresh)


def test_the_committed_mlp_reproduces_its_logged_validation_score():
    """The weights are those of the run: scored as the run scored them (bits per predicted
    character of the first 100,000 characters of the validation split), they give its best score."""
    model, tok, log = tinylm.load("mlp")
    recipe = RECIPES["mlp"]
    ids = tok.encode(data.shakespeare().valid[:recipe.eval_chars])
    bpc = metrics.bits_per_char(tinylm.score(model, ids, context=recipe.train.context))
    assert bpc == pytest.approx(log["history"]["best_valid"], abs=1e-6)


@pytest.mark.parametrize("name", ["mlp", "gpt"])
def test_the_recipes_objective_reproduces_the_committed_log(name):
    """Validation is bits per character predicted, for characters and subwords alike (the ladder's
    measure): as the committed runs logged them (the GPT's log rescaled to it, see its "rescaled")."""
    model, tok, log = tinylm.load(name)
    objective = RECIPES[name].objective(tok)
    objective.start(model, RECIPES[name].train)
    assert objective.evaluate(model)["bpc"] == pytest.approx(log["history"]["best_valid"], abs=1e-6)


# ----------------------------------------------------------------------------- how recipes were chosen

def test_every_recipe_says_how_it_was_chosen():
    assert set(CHOICES) == set(RECIPES)
    assert all(choice.how.strip() for choice in CHOICES.values())


@pytest.mark.parametrize("name", sorted(name for name, choice in CHOICES.items() if choice.alternatives))
def test_the_chosen_recipe_has_the_best_validation_score_of_its_alternatives(name):
    """The alternatives' logs (``train NAME --alternatives``) are committed, were made by the
    alternatives as written, and none beats the chosen recipe on validation."""
    chosen = json.loads((ROOT / "checkpoints" / name / FILES["log"]).read_text())
    for alternative in CHOICES[name].alternatives:
        path = ROOT / "results" / "selection" / f"{alternative.name}.json"
        assert path.is_file(), f"run: python -m tinylm train {name} --alternatives"
        log = json.loads(path.read_text())
        assert recorded(log["recipe"]) == json.loads(json.dumps(alternative.to_dict())), \
            "the alternative changed since its run"
        assert log["stop_after"] is None and log["history"]["steps_done"] == alternative.steps()
        assert log["history"]["monitor"] == chosen["history"]["monitor"] == "bpc"
        assert chosen["history"]["best_valid"] <= log["history"]["best_valid"], (
            f"{alternative.name} is better on validation than the recipe chosen")
        for score in (log["history"]["best_valid"], chosen["history"]["best_valid"]):
            assert f"{score:.4f}" in CHOICES[name].how, f"the Choice quotes the logs' scores ({score:.4f})"
