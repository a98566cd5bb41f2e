"""Memorisation: exposure, ranks over every candidate secret, planting a canary."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from tinylm import score
from tinylm.models import build
from tinylm.models.transformer import KVCache
from tinylm.usage import memorisation as M


def test_exposure_from_rank():
    assert M.exposure(1, 1024) == 10.0
    assert M.exposure(1024, 1024) == 0.0
    assert M.exposure(8, 1024) == pytest.approx(7.0)
    assert M.exposure(1, 10 ** 5) == pytest.approx(5 * math.log2(10))
    with pytest.raises(ValueError, match="rank"):
        M.exposure(0, 10)
    with pytest.raises(ValueError, match="rank"):
        M.exposure(11, 10)


def test_rank_counts_strictly_more_likely_candidates():
    logp = np.array([-3.0, -1.0, -2.0, -1.0, -5.0])
    assert M.rank_of(logp, 1) == 1 and M.rank_of(logp, 3) == 1      # ties go to the candidate
    assert M.rank_of(logp, 2) == 3
    assert M.rank_of(logp, 4) == 5
    with pytest.raises(ValueError, match="index"):
        M.rank_of(logp, 5)


def test_candidate_index_is_lexicographic():
    everything = ["".join(p) for p in itertools.product("0123456789", repeat=3)]
    assert [M.candidate_index(s) for s in everything] == list(range(1000))
    assert M.candidate_index("31345") == 31345
    assert [M.candidate_at(i, 3) for i in range(1000)] == everything
    assert [M.candidate_at(i, 2, "xyz") for i in range(9)] == ["".join(p) for p in itertools.product("xyz", repeat=2)]
    with pytest.raises(ValueError, match="candidates"):
        M.candidate_at(1000, 3)
    with pytest.raises(ValueError, match="non-empty"):
        M.candidate_index("12a")


class Bigram(torch.nn.Module):
    """A toy model whose next-token probabilities are a known table indexed by the last token."""

    encoder_decoder = False
    max_len = None

    def __init__(self, table):
        super().__init__()
        self.table = torch.as_tensor(table, dtype=torch.float64)

    def forward(self, ids, state=None):
        if state is not None:
            state.length += ids.shape[1]
        return torch.log(self.table[ids]), state

    def new_state(self):
        return KVCache()


def test_exposure_on_a_model_whose_probabilities_are_known():
    # tokens 0..3; the alphabet is tokens 1, 2, 3; token 0 is the prompt
    g = np.random.default_rng(0)
    table = g.dirichlet(np.ones(4), size=4)
    model = Bigram(table)
    logp = M.candidate_log2probs(model, [0, 0], [1, 2, 3], 3, max_rows=4)   # small chunks: the splitting path
    by_hand = []
    for cand in itertools.product([1, 2, 3], repeat=3):
        p, last = 1.0, 0
        for t in cand:
            p, last = p * table[last, t], t
        by_hand.append(math.log2(p))
    np.testing.assert_allclose(logp, by_hand, rtol=1e-12)
    # the most likely candidate has exposure log2(27); the least likely 0
    best, worst = int(np.argmax(by_hand)), int(np.argmin(by_hand))
    assert M.exposure(M.rank_of(logp, best), 27) == pytest.approx(math.log2(27))
    assert M.exposure(M.rank_of(logp, worst), 27) == 0.0


def test_candidate_log2probs_agree_with_scoring_whole_texts():
    torch.manual_seed(0)
    model = build("decoder", dict(M.MODEL, vocab_size=20, n_layers=2))
    prompt, symbols = [5, 6, 7, 8], [10, 11, 12]
    logp = M.candidate_log2probs(model, prompt, symbols, 4, max_rows=9)
    assert logp.shape == (81,)
    for index in (0, 17, 40, 80):
        digits = np.base_repr(index, 3).zfill(4)
        ids = prompt + [symbols[int(d)] for d in digits]
        assert logp[index] == pytest.approx(score(model, np.array(ids))[-4:].sum(), abs=1e-4)


def test_plant_inserts_k_lines_and_keeps_the_text():
    text = "".join(f"line {i}\n" for i in range(50))
    planted = M.plant(text, "my secret number is 31345", 7, seed=3)
    assert planted.count("my secret number is 31345\n") == 7
    assert planted.replace("my secret number is 31345\n", "") == text
    assert all(line.startswith("line") or line.startswith("my secret") for line in planted.splitlines())
    assert M.plant(text, "x", 0) == text
    assert M.plant(text, "x", 7, seed=3) == M.plant(text, "x", 7, seed=3)
    with pytest.raises(ValueError, match="line breaks"):
        M.plant("a\nb\n", "x", 3)


def test_measure_on_a_model_that_has_memorised_the_secret():
    # a character table that, after the prefix, writes 12345 (a secret whose digits differ, so a
    # bigram can hold it): rank 1, greedy extraction; the control stays low
    secret = "12345"
    from tinylm.tokenizers import CharTokenizer

    tokenizer = CharTokenizer(sorted(set("\n" + M.PREFIX + M.SECRET + M.CONTROL + "0123456789")))
    V = len(tokenizer)
    table = np.random.default_rng(1).uniform(0.5, 1.5, size=(V, V))      # no ties between candidates
    for x, y in zip(" " + secret, secret):
        table[tokenizer.encode(x)[0], tokenizer.encode(y)[0]] = 1000.0
    table /= table.sum(1, keepdims=True)
    out = M.measure(Bigram(table), tokenizer, {"secret": secret, "control": M.CONTROL})
    assert out["candidates"] == 10 ** 5
    assert out["secret"]["rank"] == 1 and out["secret"]["exposure"] == pytest.approx(math.log2(10 ** 5))
    # the control's rank by brute force: every candidate's probability as a product from the table
    ids = {d: tokenizer.encode(d)[0] for d in " 0123456789"}
    digits = np.array([ids[d] for d in "0123456789"])
    p = table[ids[" "], digits]                                   # (10,) first digit
    for _ in range(4):
        p = (p[:, None] * table[digits[np.arange(len(p)) % 10]][:, digits]).reshape(-1)
    control = p[int(M.CONTROL)]
    assert out["control"]["rank"] == int((p > control).sum()) + 1
    assert out["top"] == secret
    assert out["extracted"] and out["greedy"] == secret and out["digits_right"] == 5
