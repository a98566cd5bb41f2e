"""Decoding (tinylm.inference.sampling): the Sampler's knobs, generate for every model, beam search."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tinylm
from tinylm.inference.sampling import Sampler, beam_search, generate
from tinylm.models import (DecoderLM, EncoderDecoder, MLPConfig, MLPLanguageModel, NGramModel, RecurrentConfig,
                           RecurrentLM, TransformerConfig)

V = 7


def tiny_decoder(seed: int = 0, vocab: int = V) -> DecoderLM:
    torch.manual_seed(seed)
    model = DecoderLM(TransformerConfig(vocab_size=vocab, d_model=16, n_heads=2, n_layers=2, max_len=32))
    with torch.no_grad():                     # larger weights: a peaked, varied distribution
        for p in model.parameters():
            p.mul_(8.0)
    return model.eval()


def tiny_models():
    torch.manual_seed(0)
    ngram = NGramModel(3, V, "kneser-ney").fit(np.random.default_rng(0).integers(0, V, 400))
    return {"ngram": ngram, "mlp": MLPLanguageModel(MLPConfig(V, context=3, d_embed=4, d_hidden=8)),
            "rnn": RecurrentLM(RecurrentConfig(V, "lstm", d_embed=4, d_state=8)), "gpt": tiny_decoder()}


# ----------------------------------------------------------------------------- the sampler's knobs

LOGITS = torch.tensor([2.0, -1.0, 0.5, 3.0, 0.0, -2.0, 1.0], dtype=torch.float64)


def test_temperature_divides_the_logits():
    for t in (0.5, 1.0, 2.0):
        expected = F.softmax(LOGITS / t, dim=-1).numpy()
        assert np.allclose(Sampler(temperature=t).probabilities(LOGITS), expected)


def test_top_k_keeps_the_k_most_likely_tokens():
    p = Sampler(top_k=3).probabilities(LOGITS)
    assert set(np.flatnonzero(p)) == {3, 0, 6}
    full = F.softmax(LOGITS, -1).numpy()
    assert np.allclose(p[[3, 0, 6]], full[[3, 0, 6]] / full[[3, 0, 6]].sum())


def test_top_p_keeps_the_smallest_set_that_reaches_p():
    full = F.softmax(LOGITS, -1).numpy()
    order = np.argsort(-full)
    for top_p in (0.3, 0.6, 0.9, 0.99):
        kept = set(np.flatnonzero(Sampler(top_p=top_p).probabilities(LOGITS)))
        needed = int(np.searchsorted(np.cumsum(full[order]), top_p) + 1)      # the smallest prefix reaching p
        assert kept == set(order[:needed].tolist()), top_p
    assert set(np.flatnonzero(Sampler(top_p=1e-9).probabilities(LOGITS))) == {3}, "the best token always stays"


def test_repetition_penalty_makes_seen_tokens_less_likely():
    sampler = Sampler(repetition_penalty=2.0)
    penalised = sampler.penalised(LOGITS, previous=[3, 5, 3])
    assert penalised[3] == LOGITS[3] / 2 and penalised[5] == LOGITS[5] * 2    # positive shrinks, negative grows
    assert torch.equal(penalised[[0, 1, 2, 4, 6]], LOGITS[[0, 1, 2, 4, 6]])
    assert sampler.probabilities(LOGITS, [3])[3] < Sampler().probabilities(LOGITS)[3]


def test_temperature_zero_is_greedy_and_draws_nothing():
    assert Sampler(temperature=0).pick(LOGITS, [], np.random.default_rng(0)) == 3
    assert Sampler(temperature=0, repetition_penalty=10.0).pick(LOGITS, [3], np.random.default_rng(0)) == 0
    with pytest.raises(ValueError, match="greedy"):
        Sampler(temperature=0).probabilities(LOGITS)


def test_draws_follow_the_distribution():
    sampler, rng = Sampler(temperature=1.5, top_k=5), np.random.default_rng(1)
    draws = np.bincount([sampler.pick(LOGITS, [], rng) for _ in range(20_000)], minlength=V) / 20_000
    assert np.abs(draws - sampler.probabilities(LOGITS)).max() < 0.015


@pytest.mark.parametrize("bad", [dict(temperature=-1), dict(top_k=0), dict(top_p=0), dict(top_p=1.5),
                                 dict(repetition_penalty=0)])
def test_a_sampler_refuses_impossible_settings(bad):
    with pytest.raises(ValueError):
        Sampler(**bad)


# ----------------------------------------------------------------------------- generate

@pytest.mark.parametrize("name", ["ngram", "mlp", "rnn", "gpt"])
def test_generate_is_the_same_call_for_every_model(name):
    model = tiny_models()[name]
    prompt = [1, 2, 3]
    sampler = Sampler(temperature=0.8, seed=3)
    out = generate(model, prompt, 12, sampler)
    assert len(out) == 12 and all(0 <= t < V for t in out)
    assert generate(model, prompt, 12, sampler) == out
    assert generate(model, prompt, 12, sampler, use_cache=False) == out
    greedy = generate(model, prompt, 6, tinylm.GREEDY)
    text = list(prompt)
    for token in greedy:        # each greedy token is the most probable continuation, by score
        scores = [tinylm.score(model, text + [t])[-1] for t in range(V)]
        assert token == int(np.argmax(scores))
        text.append(token)


def test_generate_puts_the_model_back_in_its_mode():
    model = tiny_models()["gpt"].train()
    generate(model, [1, 2], 3)
    assert model.training
    model.eval()
    generate(model, [1, 2], 3)
    assert not model.training


def test_a_stop_token_ends_a_row_and_is_left_out():
    model = tiny_models()["gpt"]
    free = generate(model, [1, 2, 3], 10, tinylm.GREEDY)
    stop = free[4]
    first = free.index(stop)
    assert generate(model, [1, 2, 3], 10, tinylm.GREEDY, stop=stop) == free[:first]
    assert generate(model, [1, 2, 3], 10, tinylm.GREEDY, stop=[stop, 99]) == free[:first]


def test_a_decoder_with_an_end_token_stops_there_by_default():
    """A chat model's config names the token that ends its turn; generate stops there unless
    told otherwise (stop=[] lets it run on)."""
    model = tiny_decoder(seed=3)
    free = generate(model, [1, 2, 3], 10, tinylm.GREEDY)
    end = free[4]
    model.config = dataclasses.replace(model.config, eos_id=end)
    assert generate(model, [1, 2, 3], 10, tinylm.GREEDY) == free[:free.index(end)]
    assert generate(model, [1, 2, 3], 10, tinylm.GREEDY, stop=[]) == free


def test_a_batch_of_prompts_gives_what_each_prompt_gives_alone():
    model = tiny_models()["gpt"]
    prompts = [[1, 2, 3], [4, 4, 0], [6, 5, 1]]
    batch = generate(model, prompts, 8, tinylm.GREEDY)
    assert batch == [generate(model, p, 8, tinylm.GREEDY) for p in prompts]
    with pytest.raises(ValueError, match="equally long"):
        generate(model, [[1, 2], [3]], 4)
    with pytest.raises(ValueError, match="at least one token"):
        generate(model, [], 4)


def tiny_encoder_decoder() -> EncoderDecoder:
    torch.manual_seed(1)
    model = EncoderDecoder(TransformerConfig(vocab_size=V + 3, d_model=16, n_heads=2, n_layers=1, max_len=32,
                                             pad_id=0, bos_id=1, eos_id=2))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(6.0)
    return model.eval()


def greedy_by_hand(model: EncoderDecoder, source: list[int], n: int) -> list[int]:
    """Greedy decoding written out: reread the whole answer at every step, no cache."""
    state = model.encode(torch.tensor([source]))
    answer = [model.config.bos_id]
    with torch.no_grad():
        for _ in range(n):
            logits, _ = model(torch.tensor([answer]), state)
            token = int(logits[0, -1].argmax())
            if token == model.config.eos_id:
                break
            answer.append(token)
    return answer[1:]


def test_an_encoder_decoder_reads_its_source_then_writes_from_bos():
    model = tiny_encoder_decoder()
    sources = [[3, 4, 5, 6], [7, 8], [9, 3, 3]]
    batch = generate(model, sources, 9, tinylm.GREEDY)          # padded sources, one batch
    assert batch == [greedy_by_hand(model, s, 9) for s in sources]
    assert batch == generate(model, sources, 9, tinylm.GREEDY, use_cache=False)


# ----------------------------------------------------------------------------- beam search

def sequence_logprob(model, prompt: list[int], continuation: list[int]) -> float:
    ids = torch.tensor([prompt + continuation])
    with torch.no_grad():
        return float(tinylm.token_logprobs(model, ids)[0, len(prompt):].sum())


def test_beam_search_of_width_one_is_greedy():
    model = tiny_models()["gpt"]
    assert beam_search(model, [1, 2, 3], 8, beam_width=1) == generate(model, [1, 2, 3], 8, tinylm.GREEDY)
    ed = tiny_encoder_decoder()
    assert beam_search(ed, [3, 4, 5], 8, beam_width=1) == generate(ed, [3, 4, 5], 8, tinylm.GREEDY)


def test_a_wide_enough_beam_finds_the_most_probable_sequence():
    """With V^(n-1) beams nothing is ever pruned, so beam search is exhaustive search."""
    model, prompt, n = tiny_decoder(seed=3, vocab=5), [1, 2], 3
    best = max(itertools.product(range(5), repeat=n), key=lambda seq: sequence_logprob(model, prompt, list(seq)))
    found = beam_search(model, prompt, n, beam_width=25, length_penalty=0.0)
    assert found == list(best)
    greedy = generate(model, prompt, n, tinylm.GREEDY)
    assert sequence_logprob(model, prompt, found) >= sequence_logprob(model, prompt, greedy) - 1e-9


def test_beam_search_finishes_at_a_stop_token():
    model = tiny_decoder(seed=3, vocab=5)
    stop = beam_search(model, [1, 2], 4, beam_width=25, length_penalty=0.0)[0]
    found = beam_search(model, [1, 2], 4, beam_width=3, stop=stop)
    assert stop not in found


def test_beam_search_needs_a_state_it_can_copy_row_by_row():
    with pytest.raises(TypeError, match="beam search"):
        beam_search(tiny_models()["rnn"], [1, 2], 3, beam_width=2)


@pytest.mark.parametrize("penalty", [0.0, 1.0])
def test_finished_beams_are_compared_by_log_probability_over_a_power_of_length(penalty):
    """Exhaustively: with a stop token, the answer is the candidate with the best
    log P / length ** penalty (length counting the stop token), among the sequences that end at
    the stop token and those that reach the limit; a beam of V^(n-1) prunes nothing."""
    # a model and prompt for which the three rules disagree: no normalisation, normalisation by
    # length with the stop token, and without it (the wrong count)
    model, prompt, n, stop = tiny_decoder(seed=6, vocab=5), [0], 3, 4
    candidates = []
    for length in range(1, n + 1):
        for seq in itertools.product(range(4), repeat=length - 1):       # tokens before the stop token
            finished = list(seq) + [stop]
            candidates.append((sequence_logprob(model, prompt, finished) / length ** penalty, list(seq)))
    for seq in itertools.product(range(4), repeat=n):                      # reached the limit
        candidates.append((sequence_logprob(model, prompt, list(seq)) / n ** penalty, list(seq)))
    best = max(candidates, key=lambda c: c[0])[1]
    assert beam_search(model, prompt, n, beam_width=25, stop=stop, length_penalty=penalty) == best
