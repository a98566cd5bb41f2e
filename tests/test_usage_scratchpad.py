"""Lab 26's pieces: the scratchpad task, its scores, equal compute, the word problems, and the
committed study."""

from __future__ import annotations

import dataclasses
import random

import pytest

from tinylm.usage import scratchpad as sp
from tinylm.usage import studies


def brute_carries(a: int, b: int, digits: int) -> list[int]:
    """The carry out of each column, by schoolbook addition on strings (another way)."""
    x, y = str(a).zfill(digits)[::-1], str(b).zfill(digits)[::-1]
    out, carry = [], 0
    for i in range(digits):
        carry = 1 if int(x[i]) + int(y[i]) + carry > 9 else 0
        out.append(carry)
    return out


def test_the_steps_add_up_to_the_sum():
    rng = random.Random(0)
    for digits in (1, 3, 10):
        task = sp.Problems(digits)
        for _ in range(200):
            a, b = rng.randrange(10 ** digits), rng.randrange(10 ** digits)
            steps = sp.column_steps(a, b, digits)
            # the sum digits from the ones up, then the last carry, make a + b
            assert sum(s[4] * 10 ** k for k, s in enumerate(steps)) + steps[-1][3] * 10 ** digits == a + b
            assert [s[3] for s in steps] == brute_carries(a, b, digits)
            assert all(steps[k][2] == (steps[k - 1][3] if k else 0) for k in range(digits))
            text = task.scratchpad(a, b)
            assert len(text) == task.target_len(True) and len(task.direct(a, b)) == task.target_len(False)
            assert task.read(text) == task.read(task.direct(a, b)) == a + b
            assert task.decode(task.encode(task.prompt(a, b) + text)) == task.prompt(a, b) + text
            assert sp.steps_right(text, a, b, digits) == [True] * digits


def test_the_longest_carry_chain_by_brute_force():
    rng = random.Random(1)
    for _ in range(300):
        a, b = rng.randrange(10 ** 6), rng.randrange(10 ** 6)
        runs = "".join(map(str, brute_carries(a, b, 6))).split("0")
        assert sp.longest_carry_chain(a, b, 6) == max(len(r) for r in runs)
    assert sp.longest_carry_chain(999999, 1, 6) == 6


def test_reading_answers_and_scoring_steps():
    task = sp.Problems(4)
    right = task.scratchpad(351, 4879)
    assert task.read(right) == 5230
    assert task.read(right[:-1]) is None and task.read(right[:-1] + "x") is None and task.read("") is None
    broken = right.replace("5+7+1=13", "5+7+1=12")
    assert sp.steps_right(broken, 351, 4879, 4) == [True, False, True, True]
    assert sp.step_accuracy(broken, 351, 4879, 4) == 0.75
    assert sp.step_accuracy("1+9+0=10>05230", 351, 4879, 4) == 0.25
    assert sp.answer_digits_right("1+9>05231", 351, 4879, task) == [True] * 4 + [False]
    assert sp.answer_digits_right("0523", 351, 4879, task) == [False] * 5
    with pytest.raises(ValueError, match="operands"):
        task.prompt(10_000, 1)
    with pytest.raises(ValueError, match="symbol"):
        task.encode("12a")
    with pytest.raises(ValueError, match="digits"):
        sp.Problems(0)


def test_accuracy_by_key():
    assert sp.accuracy_by([2, 0, 2, 1], [True, True, False, False]) == {0: (1.0, 1), 1: (0.0, 1), 2: (0.5, 2)}
    with pytest.raises(ValueError):
        sp.accuracy_by([1], [True, False])


def test_equal_compute_means_equal_tokens_per_step():
    for recipe in (sp.RECIPE, dataclasses.replace(sp.RECIPE, digits=3)):
        task = recipe.task()
        for scratchpad in (False, True):
            assert recipe.length(scratchpad) == task.prompt_len + task.target_len(scratchpad) - 1
            assert recipe.batch_size(scratchpad) * recipe.length(scratchpad) == recipe.tokens_per_step
        assert recipe.batch_size(False) > 3 * recipe.batch_size(True)


def test_a_tiny_pair_trains_and_is_scored():
    recipe = dataclasses.replace(sp.RECIPE, digits=3, d_model=16, steps=3, eval_every=3, n_train=300,
                                 n_valid=20, n_test=30)
    task, splits = recipe.task(), recipe.splits()
    for scratchpad in (False, True):
        model, history = sp.train_model(recipe, scratchpad, splits)
        assert history.steps_done == 3
        texts = sp.greedy_targets(model, task, splits.test, scratchpad, batch=16)
        assert len(texts) == 30 and all(len(t) == task.target_len(scratchpad) for t in texts)
        result = sp.score(texts, splits.test, task, scratchpad)
        assert 0 <= result["exact_match"] <= 1 and len(result["digit_accuracy"]) == 4
        assert sum(n for _, n in result["by_carries"].values()) == 30
        assert ("column_accuracy" in result) == scratchpad
    # the right targets score 1 everywhere
    right = [task.scratchpad(a, b) for a, b in splits.test]
    perfect = sp.score(right, splits.test, task, True)
    assert perfect["exact_match"] == perfect["step_accuracy"] == perfect["all_steps_right"] == 1.0
    assert perfect["digit_accuracy"] == [1.0] * 4


def test_word_problems_and_their_answers():
    problems = sp.word_problems(36)
    assert problems == sp.word_problems(36) and problems != sp.word_problems(36, seed=1)
    assert len({p["question"] for p in problems}) == 36
    for p in problems:
        steps, text, answer, ranges = sp.TEMPLATES[p["template"]]
        a, b, c = p["numbers"]
        assert p["answer"] == answer(a, b, c) >= 0 and p["steps"] == steps
        if "equally" in text:
            assert (a + b) % c == 0
        for n, (low, high) in zip((a, b), ranges):      # same count of digits in a slot
            assert len(str(n)) == len(str(low)) == len(str(high - 1))
    assert sum(p["steps"] == 1 for p in problems) == 18
    assert sp.last_number("So 1,200 + 5 = 1,205.") == 1205
    assert sp.last_number("3 apples, then -2") == -2 and sp.last_number("none") is None
    assert sp.messages("Q?", "direct")[0]["content"].endswith(sp.DIRECT)
    assert len(sp.messages("Q?", "few-shot CoT")) == 3
    with pytest.raises(ValueError, match="style"):
        sp.messages("Q?", "socratic")


def test_the_committed_study():
    try:
        log = studies.load("scratchpad")
    except FileNotFoundError:
        pytest.skip("the study has not been run")
    assert log["recipe"] == sp.RECIPE.to_dict() and log["commit"]["dirty"] is False
    models = log["models"]
    assert models["direct"]["batch_size"] * sp.RECIPE.length(False) == \
        models["scratchpad"]["batch_size"] * sp.RECIPE.length(True) == log["tokens_per_step"]
    assert models["scratchpad"]["test"]["exact_match"] > models["direct"]["test"]["exact_match"]
    assert set(log["smollm2"]["accuracy"]) == set(sp.STYLES)
    assert len(log["smollm2"]["replies"]["direct"]) == len(log["smollm2"]["problems"])
