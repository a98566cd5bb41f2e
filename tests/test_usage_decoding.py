"""Decoding compared (tinylm.usage.decoding): the diversity measures against hand-computed cases,
the strategies on a tiny model, and the bits-per-character of a continuation."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

import tinylm
from tinylm.inference.sampling import Sampler, beam_search, generate
from tinylm.models import DecoderLM, NGramModel, TransformerConfig
from tinylm.tokenizers import CharTokenizer
from tinylm.usage import decoding as d

# ----------------------------------------------------------------------------- units and n-grams


def test_units_are_words_in_english_and_characters_in_chinese():
    assert d.units("O Romeo, Romeo!", "en") == ["o", "romeo", "romeo"]
    assert d.units("春天 来了。\n好", "zh") == ["春", "天", "来", "了", "。", "好"]
    with pytest.raises(ValueError, match="language"):
        d.units("x", "fr")


def test_ngrams():
    assert d.ngrams(["a", "b", "c"], 1) == [("a",), ("b",), ("c",)]
    assert d.ngrams(["a", "b", "c"], 3) == [("a", "b", "c")]
    assert d.ngrams(["a", "b"], 3) == []
    with pytest.raises(ValueError):
        d.ngrams("ab", 0)


# ----------------------------------------------------------------------------- distinct-n, by hand


def test_distinct_n_by_hand():
    texts = [["the", "cat", "the", "cat", "sat"], ["the", "dog"]]
    # unigrams: the cat the cat sat the dog -> 7, distinct {the, cat, sat, dog} -> 4
    assert d.distinct_n(texts, 1) == pytest.approx(4 / 7)
    # bigrams: (the cat) (cat the) (the cat) (cat sat) | (the dog) -> 5, distinct 4;
    # none crosses from "sat" to "the": pooling must not join the texts
    assert d.distinct_n(texts, 2) == pytest.approx(4 / 5)
    # trigrams: (the cat the) (cat the cat) (the cat sat) -> 3 distinct of 3; the second text has none
    assert d.distinct_n(texts, 3) == pytest.approx(1.0)


def test_distinct_n_is_pooled_not_averaged_over_texts():
    texts = [["a", "b"], ["a", "b"]]               # each text alone is all distinct; together half
    assert d.distinct_n(texts, 1) == pytest.approx(0.5)
    assert d.distinct_n(texts, 2) == pytest.approx(0.5)


def test_distinct_n_edge_cases():
    assert d.distinct_n([], 1) == 0.0
    assert d.distinct_n([["a"]], 2) == 0.0
    with pytest.raises(TypeError):
        d.distinct_n("a text", 1)


def test_distinct_n_against_a_brute_force_count():
    rng = np.random.default_rng(0)
    for _ in range(20):
        texts = [list(rng.integers(0, 4, rng.integers(0, 12))) for _ in range(3)]
        for n in (1, 2, 3):
            grams = []
            for t in texts:
                grams += [tuple(t[i:i + n]) for i in range(len(t) - n + 1)]
            expected = len(set(grams)) / len(grams) if grams else 0.0
            assert d.distinct_n(texts, n) == pytest.approx(expected)


# ----------------------------------------------------------------------------- repetition


def test_repeated_ngram_share_by_hand():
    assert d.repeated_ngram_share(list("abcdefgh"), 4) == 0.0
    # 4-grams of abcabcabc: abca bcab cabc abca bcab cabc -> 6, three of them repeats
    assert d.repeated_ngram_share(list("abcabcabc"), 4) == pytest.approx(0.5)
    # aaaaaa: aaaa x3, two repeats
    assert d.repeated_ngram_share(list("aaaaaa"), 4) == pytest.approx(2 / 3)
    assert d.repeated_ngram_share(list("abc"), 4) == 0.0


def test_loop_period_finds_a_trailing_loop():
    words = "once upon a time i am not well i am not well i am not well".split()
    assert d.loop_period(words) == 4
    assert d.loop_period(words, min_repeats=4) is None              # only three times
    # the loop need not end at a block boundary
    assert d.loop_period(words + ["i", "am"], min_repeats=3) == 4
    assert d.loop_period(words[:-1], min_repeats=3) is None       # "well" missing: 11 periodic words < 12
    assert d.loop_period("a b c d e f g h".split()) is None
    # a short stutter is not a loop unless min_length allows it
    assert d.loop_period("we said ha ha ha".split()) is None
    assert d.loop_period("we said ha ha ha".split(), min_length=3) == 1
    # the shortest period is reported: x x x x x x is period 1, not 2
    assert d.loop_period(list("yxxxxxx")) == 1


def test_diversity_of_a_loop_and_of_varied_text():
    loop = ["I am not well. " * 6]
    varied = ["Now is the winter of our discontent made glorious summer by this sun of York"]
    a, b = d.diversity(loop, "en"), d.diversity(varied, "en")
    assert a["loops"] == 1.0 and b["loops"] == 0.0
    assert a["repeated_4grams"] > 0.7 and b["repeated_4grams"] == 0.0
    assert a["distinct_1"] < b["distinct_1"] and a["distinct_2"] < b["distinct_2"]


# ----------------------------------------------------------------------------- quality


def test_continuation_bpc_counts_only_the_continuation():
    text = "abababababcabab"
    tok = CharTokenizer("abc")
    model = NGramModel(2, len(tok), "add-k", k=1.0).fit(np.asarray(tok.encode(text * 5)))
    prompt, cont = "abab", "abca"
    lp = tinylm.score(model, tok.encode(prompt + cont))
    expected = -lp[-len(cont):].sum() / len(cont)
    bpc, unknown = d.continuation_bpc(model, tok, prompt, [cont])
    assert bpc == pytest.approx(expected) and unknown == 0
    # two texts pool their bits and characters
    bpc2, _ = d.continuation_bpc(model, tok, [prompt, "a"], [cont, "bb"])
    lp2 = tinylm.score(model, tok.encode("abb"))
    assert bpc2 == pytest.approx((-lp[-4:].sum() - lp2[-2:].sum()) / 6)
    # unknown characters are left out and counted
    bpc3, unknown3 = d.continuation_bpc(model, tok, prompt, ["abXcaY"])
    assert unknown3 == 2 and bpc3 == pytest.approx(expected)
    with pytest.raises(ValueError):
        d.continuation_bpc(model, tok, [prompt], [cont, cont])


def test_clean_drops_replacement_characters():
    assert d.clean("春\ufffd天") == "春天"


# ----------------------------------------------------------------------------- strategies


def tiny_decoder(seed: int = 0, vocab: int = 7) -> DecoderLM:
    torch.manual_seed(seed)
    model = DecoderLM(TransformerConfig(vocab_size=vocab, d_model=16, n_heads=2, n_layers=2, max_len=32))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(8.0)
    return model.eval()


def test_strategy_decode_is_the_package_sampler_and_beam_search():
    model = tiny_decoder()
    prompts = [[1, 2], [3, 4], [5]]
    greedy = d.Strategy("greedy", Sampler(0.0)).decode(model, prompts, 6, samples=3)
    assert [len(row) for row in greedy] == [1, 1, 1]                  # greedy writes one text each
    assert greedy[0][0] == generate(model, [1, 2], 6, Sampler(0.0))
    beam = d.Strategy("beam", beam_width=3).decode(model, prompts, 6)
    assert beam[2][0] == beam_search(model, [5], 6, 3)
    drawn = d.Strategy("T=1", Sampler(1.0)).decode(model, prompts, 6, samples=2, seed=4)
    assert [len(row) for row in drawn] == [2, 2, 1 * 2]
    # the two equally long prompts are one batch of four rows, drawn with one generator seeded 4
    batch = generate(model, [[1, 2], [1, 2], [3, 4], [3, 4]], 6, Sampler(1.0, seed=4))
    assert drawn[0] == batch[:2] and drawn[1] == batch[2:]
    with pytest.raises(ValueError):
        d.Strategy("both", Sampler(0.0), beam_width=2)
    with pytest.raises(ValueError):
        d.Strategy("neither")


def test_the_strategies_compared():
    names = [s.name for s in d.strategies((0.5, 1.0))]
    assert names == ["greedy", "beam 4", "greedy, penalty 1.3", "T=0.5", "T=1", "top-k 40", "top-p 0.9",
                     "top-p 0.9, penalty 1.3"]
    by_name = {s.name: s for s in d.strategies()}
    assert by_name["greedy"].deterministic and by_name["beam 4"].deterministic
    assert by_name["greedy, penalty 1.3"].sampler.repetition_penalty == 1.3
    assert not by_name["top-p 0.9"].deterministic and by_name["top-p 0.9"].sampler.top_p == 0.9


def test_rounded():
    assert d.rounded({"a": [1.23456, 2], "b": {"c": 0.00004}}, 3) == {"a": [1.235, 2], "b": {"c": 0.0}}


def test_the_study_is_registered():
    from tinylm.usage import studies

    assert studies.STUDIES["decoding"] == "decoding"
    assert callable(d.run)
