"""Lab 17's pieces: the addition task, answer-only training, exact match against partial credit,
and the committed family of models."""

from __future__ import annotations

import dataclasses
import functools
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tinylm
from tinylm.data import arithmetic
from tinylm.data.arithmetic import Addition
from tinylm.evaluation import answers
from tinylm.models.transformer import DecoderLM, TransformerConfig
from tinylm.training import TrainConfig, seed_everything
from tinylm.training import emergence
from tinylm.training.answer_lm import AnswerLM, answer_loss, answer_mask

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- the task

def test_problems_are_written_backwards_and_read_back():
    task = Addition(digits=5)
    assert task.text(3512, 48790) == "21530+09784=203250"          # 3512 + 48790 = 52302
    assert Addition(digits=5, reverse=False).text(3512, 48790) == "03512+48790=052302"
    rng = random.Random(0)
    for _ in range(200):
        a, b = rng.randrange(10 ** 5), rng.randrange(10 ** 5)
        for reverse in (True, False):
            t = Addition(5, reverse)
            assert len(t.prompt(a, b)) == t.prompt_len and len(t.answer(a, b)) == t.answer_len
            assert t.read(t.answer(a, b)) == a + b
            # the digits of a + b, from an int written the usual way
            assert t.answer(a, b) == (f"{a + b:06d}"[::-1] if reverse else f"{a + b:06d}")


def test_encoding_uses_the_symbols_ids():
    ids = Addition(digits=2).encode([(12, 9)])
    assert ids.shape == (1, 2 * 2 + 2 + 3)
    assert "".join(arithmetic.SYMBOLS[i] for i in ids[0]) == "21+90=120"
    assert arithmetic.tokenizer().decode(ids[0].tolist()) == "21+90=120"


@pytest.mark.parametrize("bad", [(-1, 3), (100_000, 3), (1.5, 2), (True, 1)])
def test_bad_operands_are_refused(bad):
    with pytest.raises(ValueError, match="operands"):
        Addition(digits=5).prompt(*bad)
    with pytest.raises(ValueError, match="digits"):
        Addition(digits=0)


def carries_reference(a: int, b: int, digits: int) -> int:
    """Column k carries when the low k+1 digits of a and b add up to 10**(k+1) or more."""
    return sum(a % 10 ** (k + 1) + b % 10 ** (k + 1) >= 10 ** (k + 1) for k in range(digits))


def test_carries_agree_with_sums_of_low_digits():
    rng = random.Random(1)
    for _ in range(500):
        a, b = rng.randrange(10 ** 5), rng.randrange(10 ** 5)
        assert arithmetic.carries(a, b, 5) == carries_reference(a, b, 5), (a, b)
    assert arithmetic.carries(99_999, 1, 5) == 5 and arithmetic.carries(50_000, 49_999, 5) == 0


def test_splits_share_no_problem_in_either_order():
    splits = arithmetic.split_problems(1800, 200, 500, digits=2, seed=3)
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (1800, 200, 500)
    keys = [[(min(p), max(p)) for p in s] for s in (splits.train, splits.valid, splits.test)]
    assert all(len(set(k)) == len(k) for k in keys), "a problem repeated inside a split"
    assert not set(keys[0]) & set(keys[2]) and not set(keys[0]) & set(keys[1]) and not set(keys[1]) & set(keys[2])
    assert splits.overlap() == 0
    assert arithmetic.split_problems(1800, 200, 500, digits=2, seed=3) == splits        # the same every time
    with pytest.raises(ValueError, match="too many"):
        arithmetic.split_problems(3000, 0, 0, digits=1)


def test_mixed_lengths_change_training_only():
    mixed = arithmetic.split_problems(4000, 0, 2000, digits=5, seed=0)
    plain = arithmetic.split_problems(4000, 0, 2000, digits=5, seed=0, mixed_lengths=False)
    assert mixed.test == plain.test
    short = lambda problems: np.mean([max(a, b) < 10 ** 4 for a, b in problems])
    assert short(plain.test) < 0.05 and short(plain.train) < 0.05      # uniform operands: mostly 5 digits
    assert short(mixed.train) > 0.4                                     # about (4/5)^2 of pairs both shorter


# ----------------------------------------------------------------------------- scores of answers

def edit_reference(a, b) -> int:
    @functools.lru_cache(maxsize=None)
    def d(i, j):
        if i == 0 or j == 0:
            return i + j
        return min(d(i - 1, j) + 1, d(i, j - 1) + 1, d(i - 1, j - 1) + (a[i - 1] != b[j - 1]))
    return d(len(a), len(b))


def test_edit_distance_agrees_with_the_recursive_definition():
    rng = random.Random(2)
    for _ in range(300):
        a = "".join(rng.choice("0129") for _ in range(rng.randrange(0, 8)))
        b = "".join(rng.choice("0129") for _ in range(rng.randrange(0, 8)))
        assert answers.edit_distance(a, b) == edit_reference(a, b), (a, b)
        assert answers.edit_distance(list(a), list(b)) == answers.edit_distance(b, a)
    assert answers.edit_distance("203250", "203250") == 0
    assert answers.edit_distance("203250", "20325") == 1 and answers.edit_distance("203250", "303250") == 1


def test_exact_match_token_accuracy_and_the_independent_prediction():
    preds, refs = ["1234", "1299", "12"], ["1234", "1234", "1234"]
    assert answers.exact_match(preds, refs) == pytest.approx(1 / 3)
    assert answers.token_accuracy(preds, refs) == pytest.approx((4 + 2 + 2) / 12)
    assert answers.mean_edit_distance(preds, refs) == pytest.approx((0 + 2 + 2) / 3)
    assert answers.independent_exact_match(0.9, 6) == pytest.approx(0.531441)
    assert np.allclose(answers.independent_exact_match([0.5, 1.0], 2), [0.25, 1.0])
    with pytest.raises(ValueError):
        answers.exact_match(["1"], [])
    with pytest.raises(ValueError):
        answers.independent_exact_match(1.2, 3)


@pytest.fixture(scope="module")
def small_adder():
    """A 2-digit adder trained briefly: right on some answers, wrong on others."""
    task = Addition(digits=2)
    splits = arithmetic.split_problems(2000, 0, 300, digits=2, seed=0)
    pairs = lambda ps: [(r[: task.prompt_len].tolist(), r[task.prompt_len:].tolist()) for r in task.encode(ps)]
    seed_everything(0)
    model = DecoderLM(TransformerConfig(vocab_size=12, d_model=16, n_heads=2, n_layers=2, positions="rotary", max_len=9))
    tinylm.train(model, AnswerLM(pairs(splits.train)), TrainConfig(steps=150, batch_size=32, lr=3e-3, warmup=20,
                                                                   progress=False, restore_best=False))
    return model, task, pairs(splits.test)


def test_teacher_forced_scores_are_those_of_greedy_decoding(small_adder):
    model, task, pairs = small_adder
    scores = answers.teacher_forced(model, pairs, batch_size=128)
    greedy = answers.greedy_answers(model, [p for p, _ in pairs], task.answer_len, batch_size=100)
    targets = [a for _, a in pairs]
    assert 0.0 < scores.exact_match < 1.0, "the fixture should get some answers right and some wrong"
    assert scores.exact_match == pytest.approx(answers.exact_match(greedy, targets))
    for row, g, t in zip(scores.right, greedy, targets):
        wrong = [k for k in range(len(t)) if g[k] != t[k]]
        first_false = [k for k, ok in enumerate(row) if not ok]
        # the greedy answer goes wrong first where the teacher-forced prediction does
        assert (wrong[:1] == first_false[:1]), (g, t, row)
    # the cross-entropy per answer token, computed from the logits directly
    ids, mask = answer_mask(pairs)
    with torch.no_grad():
        logits, _ = model(ids[:, :-1])
    expected = F.cross_entropy(logits[mask[:, 1:]], ids[:, 1:][mask[:, 1:]]).item()
    assert scores.nats == pytest.approx(expected, rel=1e-5)
    assert scores.position_accuracy.shape == (task.answer_len,)
    assert np.mean(scores.position_accuracy) == pytest.approx(scores.token_accuracy)


def test_answer_mask_marks_the_answer_only():
    ids, mask = answer_mask([([1, 2, 3], [4, 5]), ([6], [7, 8, 9])], pad_id=0)
    assert ids.tolist() == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 0]]
    assert mask.tolist() == [[False, False, False, True, True], [False, True, True, True, False]]
    with pytest.raises(ValueError):
        answer_mask([([], [1])])


def test_the_answer_loss_ignores_the_prompt():
    seed_everything(1)
    model = DecoderLM(TransformerConfig(vocab_size=12, d_model=8, n_heads=2, n_layers=1, max_len=12))
    ids, mask = answer_mask([([1, 2, 10, 3, 4, 11], [5, 6, 7]), ([9, 9, 10, 0, 1, 11], [0, 1, 2])])
    logits, _ = model(ids[:, :-1])
    targets = ids[:, 1:].clone()
    targets[~mask[:, 1:]] = -100                     # ignored by the reference loss
    expected = F.cross_entropy(logits.reshape(-1, 12), targets.reshape(-1), ignore_index=-100)
    assert answer_loss(model, ids, mask).item() == pytest.approx(expected.item(), rel=1e-6)
    whole = F.cross_entropy(logits.reshape(-1, 12), ids[:, 1:].reshape(-1))
    assert abs(whole.item() - expected.item()) > 1e-3, "the test would not see a loss over the prompt too"


# ----------------------------------------------------------------------------- the sweep

def test_a_tiny_sweep_writes_loadable_models(tmp_path):
    sweep = dataclasses.replace(emergence.SWEEP, digits=2, widths=(4,), seeds=(0,), n_train=300, n_valid=50,
                                n_test=50, train=dataclasses.replace(emergence.SWEEP.train, steps=10, eval_every=5))
    log = sweep.run(tmp_path)
    assert [r["name"] for r in log["runs"]] == ["d04-seed0"]
    run = log["runs"][0]
    assert run["tokens"] == 10 * 64 * (6 + 3 - 1) and run["flops"] == 6 * run["parameters"] * run["tokens"]
    loaded_log, models = emergence.load_family(tmp_path)
    assert loaded_log["runs"] == json.loads(json.dumps(log["runs"]))
    model = models["d04-seed0"]
    assert isinstance(model, DecoderLM) and model.config.d_model == 4 and model.num_parameters() == run["parameters"]
    assert set(run["valid"]) == {"answer_nats", "token_accuracy", "exact_match"}


def test_the_sweep_and_its_folder_need_each_other(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m tinylm emergence"):
        emergence.load_family(tmp_path)


COMMITTED = ROOT / "checkpoints" / emergence.NAME


@pytest.mark.skipif(not (COMMITTED / "log.json").is_file(), reason="the family is not committed yet")
def test_the_committed_family_is_the_sweep():
    log = json.loads((COMMITTED / "log.json").read_text())
    assert log["recipe"] == json.loads(json.dumps(emergence.SWEEP.to_dict()))
    assert [r["name"] for r in log["runs"]] == emergence.SWEEP.names()
    assert log["cpu_seconds"] <= 30 * 60 and log["machine"]["threads"] == 1
    assert log["code"]["commit"]
    for run in log["runs"]:
        assert (COMMITTED / run["name"] / "model.safetensors").is_file()
