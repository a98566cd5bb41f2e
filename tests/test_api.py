"""The one public API, over every committed rung and both n-gram rungs: ``tinylm.load``, ``score``
and ``generate``.

``score`` must give, on a fixed slice of the test text, the bits per character that the code
before the package redesign gave (commit c2c60d6: ``train.log2probs(model, ids, context=256)``
for the neural rungs, ``NGramModel.log2probs(ids)[1:]`` for the n-grams, the same positions
1 .. n-1 that ``score`` scores), to 1e-6.  The reference numbers were computed once with that
code; the ladder's test numbers are made the same way, so this test guards them too.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tinylm
from tinylm import data
from tinylm.evaluation.metrics import bits_per_char
from tinylm.tokenizers import CharTokenizer

SLICE = 20_000
"""Characters of the test split scored: the first 20,000 (of 537,321)."""

BEFORE_THE_REDESIGN = {
    "mlp": 2.511859748145998,
    "rnn": 2.3132830394126085,
    "lstm": 2.048827388248933,
    "gpt": 1.99389307060905,
    "gpt2style": 2.0393987807557563,
    "kn7": 2.1989556654439264,
    "kn5-bpe512": 2.177761113505202,
}
"""Bits per character of each model on the slice, by the code of commit c2c60d6."""


@pytest.fixture(scope="module")
def text() -> str:
    return data.shakespeare().test[:SLICE]


@pytest.fixture(scope="module", params=sorted(BEFORE_THE_REDESIGN))
def loaded(request):
    torch.set_num_threads(1)
    return request.param, tinylm.load(request.param)


def test_load_gives_a_model_its_tokenizer_and_its_log(loaded):
    name, (model, tokenizer, log) = loaded
    assert log["name"] == name and log["parameters"] == model.num_parameters() > 0
    assert len(tokenizer) == model.config.vocab_size
    assert not getattr(model, "training", False), "a loaded model is in evaluation mode"


def test_score_gives_the_bits_per_character_of_the_code_before_the_redesign(loaded, text):
    name, (model, tokenizer, _) = loaded
    ids = tokenizer.encode(text)
    lp = tinylm.score(model, ids)
    assert lp.shape == (len(ids) - 1,) and lp.dtype == np.float64 and (lp <= 0).all()
    # a character model predicts n - 1 characters; a subword model spells all the slice's characters
    n_chars = len(text) - 1 if isinstance(tokenizer, CharTokenizer) else len(text)
    assert abs(bits_per_char(lp, n_chars) - BEFORE_THE_REDESIGN[name]) < 1e-6


def test_a_seeded_sampler_repeats_itself_and_the_state_changes_nothing(loaded, text):
    name, (model, tokenizer, _) = loaded
    prompt = tokenizer.encode(text[:40])
    sampler = tinylm.Sampler(temperature=0.9, top_k=30, top_p=0.95, repetition_penalty=1.1, seed=7)
    first = tinylm.generate(model, prompt, 25, sampler)
    assert len(first) == 25 and all(0 <= t < model.config.vocab_size for t in first)
    assert tinylm.generate(model, prompt, 25, sampler) == first
    # the model's state (KV cache, hidden state, last n-1 tokens) gives the tokens that rereading gives
    assert tinylm.generate(model, prompt, 25, sampler, use_cache=False) == first
    other = tinylm.generate(model, prompt, 25, tinylm.Sampler(temperature=0.9, top_k=30, top_p=0.95,
                                                              repetition_penalty=1.1, seed=8))
    assert other != first, "another seed draws another text"


def test_greedy_generation_follows_the_scores(loaded, text):
    """The greedy token is the one ``score`` finds most probable after the prompt."""
    name, (model, tokenizer, _) = loaded
    prompt = tokenizer.encode(text[:40])
    token = tinylm.generate(model, prompt, 1, tinylm.GREEDY)[0]
    scores = [tinylm.score(model, prompt + [t])[-1] for t in range(model.config.vocab_size)]
    assert int(np.argmax(scores)) == token
