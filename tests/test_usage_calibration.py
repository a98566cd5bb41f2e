"""Hallucination and calibration: the measures against hand-computed cases and brute-force
references, the question set, and asking a model (on a tiny random Transformer)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import tinylm
from tinylm.models.transformer import DecoderLM, TransformerConfig
from tinylm.usage import calibration as cal
from tinylm.usage import capitals


# --------------------------------------------------------------------------- the measures

def test_ece_by_hand_one_answer_per_bin():
    # each answer alone in its bin: ECE = mean |correct - confidence|
    ece = cal.expected_calibration_error([0.15, 0.25, 0.85, 0.95], [0, 1, 1, 1])
    assert ece == pytest.approx((0.15 + 0.75 + 0.15 + 0.05) / 4)


def test_ece_by_hand_one_bin():
    # all four in (0.8, 0.9]: mean confidence 0.845, accuracy 0.75
    ece = cal.expected_calibration_error([0.81, 0.89, 0.85, 0.83], [1, 0, 1, 1])
    assert ece == pytest.approx(0.095)


def test_ece_by_hand_two_bins_weighted():
    # bin (0.2, 0.3]: 2 answers, conf 0.25, acc 0.5 -> gap 0.25; bin (0.9, 1]: 3 answers, conf 1, acc 1
    ece = cal.expected_calibration_error([0.2 + 1e-9, 0.3, 1.0, 1.0, 1.0], [1, 0, 1, 1, 1])
    assert ece == pytest.approx(2 / 5 * 0.25, abs=1e-8)
    assert cal.expected_calibration_error([1.0, 1.0], [True, True]) == 0.0


def test_ece_against_a_loop():
    rng = np.random.default_rng(0)
    conf = rng.random(500)
    right = rng.random(500) < conf ** 2
    for n_bins in (1, 5, 10, 15):
        total = 0.0
        for m in range(n_bins):
            lo, hi = m / n_bins, (m + 1) / n_bins
            inside = [(c, r) for c, r in zip(conf, right) if (lo < c <= hi) or (m == 0 and c == 0)]
            if inside:
                total += len(inside) / len(conf) * abs(np.mean([r for _, r in inside]) - np.mean([c for c, _ in inside]))
        assert cal.expected_calibration_error(conf, right, n_bins) == pytest.approx(total)
    # one bin: |accuracy - mean confidence| overall
    assert cal.expected_calibration_error(conf, right, 1) == pytest.approx(abs(right.mean() - conf.mean()))


def test_bins_edges_and_contents():
    assert cal.bin_index([0.0, 0.05, 0.1, 0.1000001, 0.3, 0.7, 0.9999, 1.0], 10).tolist() == [0, 0, 0, 1, 2, 6, 9, 9]
    bins = cal.reliability_bins([0.05, 0.35, 0.38, 0.95], [0, 1, 0, 1], n_bins=4)
    assert bins["count"] == [1, 2, 0, 1]
    assert bins["confidence"][1] == pytest.approx(0.365) and bins["accuracy"][1] == pytest.approx(0.5)
    assert math.isnan(bins["accuracy"][2]) and math.isnan(bins["confidence"][2])
    assert bins["edges"] == pytest.approx([0, 0.25, 0.5, 0.75, 1])


def test_selective_by_hand():
    conf, right = [0.9, 0.6, 0.3, 0.8], [1, 0, 0, 1]
    assert cal.selective(conf, right, 0.5) == pytest.approx((0.75, 2 / 3))
    assert cal.selective(conf, right, 0.0) == pytest.approx((1.0, 0.5))
    assert cal.selective(conf, right, 0.8)[0] == 0.5          # >= threshold is answered
    coverage, accuracy = cal.selective(conf, right, 0.95)
    assert coverage == 0 and math.isnan(accuracy)
    curve = cal.coverage_curve(conf, right)
    assert [p["coverage"] for p in curve] == [1.0, 1.0, 0.75, 0.5, 0.25]
    assert curve[-1]["accuracy"] == 1.0


def test_log_loss_and_temperature_fit():
    assert cal.log_loss([0.5, 0.5], [1, 0]) == pytest.approx(math.log(2))
    assert cal.log_loss([0.9], [0]) == pytest.approx(-math.log(0.1))
    rows = np.array([[0.99, 0.99, 0.99, 0.99], [0.6, 0.6, 0.6, 0.6], [0.1, 0.1, 0.1, 0.1]])
    assert cal.fit_temperature(rows, [1, 1, 1, 0], temperatures=(0.5, 1.0, 2.0)) == 1.0
    with pytest.raises(ValueError, match="temperatures"):
        cal.fit_temperature(rows, [1, 1, 1, 0], temperatures=(1.0,))


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="between 0 and 1"):
        cal.expected_calibration_error([1.2], [1])
    with pytest.raises(ValueError, match="2 confidences but 1"):
        cal.expected_calibration_error([0.2, 0.3], [1])
    with pytest.raises(ValueError, match="0/1"):
        cal.selective([0.2], [2], 0.1)
    with pytest.raises(ValueError, match="no answers"):
        cal.reliability_bins([], [])
    with pytest.raises(ValueError, match="n_bins"):
        cal.bin_index([0.5], 0)


def test_abstains():
    for reply in ["I don't know.", "I’m not sure, but I think it is Paris.", "There is no such country.",
                  "Zorvania is a fictional place.", "I'm sorry, I cannot help with that.", "我不知道。", "这个国家不存在。"]:
        assert cal.abstains(reply), reply
    for reply in ["The capital of France is Paris.", "Zorvan is a city in the continent of Kyre.", "巴黎"]:
        assert not cal.abstains(reply), reply


# --------------------------------------------------------------------------- the questions

def test_capitals_table():
    names = [c.name for c in capitals.CAPITALS]
    assert len(names) == len(set(names)) >= 60
    assert all(c.name in capitals.UN_MEMBERS for c in capitals.CAPITALS)
    assert all(c.capital and c.name_zh and c.capital_zh for c in capitals.CAPITALS)
    ukraine = next(c for c in capitals.CAPITALS if c.name == "Ukraine")
    assert ukraine.answers("en") == ("Kyiv", "Kiev") and ukraine.answers("zh")[0] == "基辅"


def test_invented_countries_are_not_real_and_repeat():
    real = {n.lower() for n in capitals.UN_MEMBERS} | {c.capital.lower() for c in capitals.CAPITALS}
    for language in capitals.LANGUAGES:
        names = capitals.invented_countries(64, seed=0, language=language)
        assert len(set(names)) == 64
        assert names == capitals.invented_countries(64, seed=0, language=language)
        assert names != capitals.invented_countries(64, seed=1, language=language)
        assert not {n.lower() for n in names} & real
        assert not set(names) & {c.name_zh for c in capitals.CAPITALS}
    with pytest.raises(ValueError, match="language"):
        capitals.invented_countries(3, language="fr")


def test_questions_and_matching():
    france = capitals.CAPITALS[0]
    assert capitals.question("Zorvania", "en", abstain_ok=True).startswith("What is the capital of Zorvania? If")
    assert capitals.answer_start(france, "zh") == "法国的首都是"
    assert capitals.normalise("  Brasília!! ") == "brasilia"
    assert capitals.mentions("The capital of Italy is Rome.", ("Rome",))
    assert not capitals.mentions("Romeo and Juliet", ("Rome",))
    assert capitals.mentions("法国的首都是巴黎。", ("巴黎",))
    us = next(c for c in capitals.CAPITALS if c.name == "United States")
    assert capitals.matches("Washington, D.C", us.answers()) and capitals.matches("washington", us.answers())
    assert not capitals.matches("Washington State", us.answers()) and not capitals.matches("", us.answers())


# --------------------------------------------------------------------------- asking a model

def tiny_model(seed=0):
    torch.manual_seed(seed)
    return DecoderLM(TransformerConfig(vocab_size=17, d_model=16, n_heads=2, n_layers=1, max_len=32,
                                       positions="rotary", norm="rms")).eval()


def test_greedy_answers_match_generate_one_at_a_time():
    model = tiny_model()
    prompts = [[1, 2, 3], [4, 5, 6], [7, 8], [1, 2, 3, 4], [9, 9]]
    got = cal.greedy_answers(model, prompts, 5, stop=3, batch_size=2)
    for prompt, answer in zip(prompts, got):
        assert answer == tinylm.generate(model, prompt, 5, tinylm.Sampler(temperature=0), stop=3)


def test_answer_logprobs_match_token_logprobs_and_temperature():
    model = tiny_model(1)
    prompts, answers = [[1, 2, 3], [4, 5, 6], [7, 8]], [[4, 5], [6, 1], [2, 2, 2]]
    got = cal.answer_logprobs(model, prompts, answers, temperatures=(1.0, 2.0), batch_size=1)
    for p, a, lp in zip(prompts, answers, got):
        ids = torch.tensor(p + a)
        mask = torch.tensor([False] * len(p) + [True] * len(a))
        with torch.no_grad():
            reference = tinylm.token_logprobs(model, ids, mask)[0][len(p):]
            logits = model(ids[None, :-1])[0][0, len(p) - 1:]
        assert lp.shape == (2, len(a))
        assert np.allclose(lp[0], reference.numpy(), atol=1e-5)
        by_hand = torch.log_softmax(logits / 2.0, -1).gather(-1, ids[len(p):, None])[:, 0]
        assert np.allclose(lp[1], by_hand.numpy(), atol=1e-5)
    assert cal.answer_logprobs(model, [[1]], [[]])[0].shape == (1, 0)
    with pytest.raises(ValueError, match="positive"):
        cal.answer_logprobs(model, prompts, answers, temperatures=(0.0,))


class Letters:
    """A tokenizer whose tokens are the strings of a list (to test cutting answers)."""

    def __init__(self, pieces):
        self.pieces = pieces

    def decode(self, ids):
        return "".join(self.pieces[i] for i in ids)


def test_cut_answer():
    tok = Letters([" Buen", "os", " A", "ires", ".", " and", "\n", " Paris", ",", " Sa"])
    assert cal.cut_answer(tok, [0, 1, 2, 3, 4, 5]) == ("Buenos Aires", 4)
    assert cal.cut_answer(tok, [7, 8, 9]) == ("Paris", 1)
    assert cal.cut_answer(tok, [4, 7]) == ("", 1)
    assert cal.cut_answer(tok, [7, 9]) == ("Paris Sa", 2)
    assert cal.cut_answer(tok, []) == ("", 0)


def test_tables_from_asked_items():
    asked = [
        {"language": "en", "kind": "real", "reply_right": True, "reply_ok_right": False, "abstains": False,
         "abstains_ok": True, "confidence": 0.9, "right": True},
        {"language": "en", "kind": "real", "reply_right": False, "reply_ok_right": False, "abstains": False,
         "abstains_ok": False, "confidence": 0.4, "right": False},
        {"language": "en", "kind": "invented", "abstains": False, "abstains_ok": True, "confidence": 0.05, "right": False},
        {"language": "en", "kind": "invented", "abstains": True, "abstains_ok": True, "confidence": 0.5, "right": False},
    ]
    asked += [{**a, "language": "zh"} for a in asked]
    table = cal.hallucination_table(asked)
    assert table["en_plain"] == {"real_n": 2, "real_right": 0.5, "real_wrong": 0.5, "real_abstained": 0.0,
                                 "invented_n": 2, "hallucinated": 0.5, "invented_abstained": 0.5}
    assert table["en_abstain_ok"]["hallucinated"] == 0.0 and table["en_abstain_ok"]["real_abstained"] == 0.5
    rows = cal.selective_table(asked, (0.0, 0.45, 0.95))
    assert rows[1] == {"threshold": 0.45, "coverage": 0.5, "accuracy": 1.0, "invented_declined": 0.5}
    assert rows[2]["accuracy"] is None and rows[2]["invented_declined"] == 1.0
