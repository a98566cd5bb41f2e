"""Scoring (tinylm.inference.scoring): one convention for every model, and the log-probabilities of
responses with gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tinylm
from tinylm.inference.scoring import LN2, window_plan
from tinylm.models import (DecoderLM, EncoderDecoder, MaskedLM, MLPConfig, MLPLanguageModel, NGramModel,
                           RecurrentConfig, RecurrentLM, TransformerConfig)

V = 11
RNG = np.random.default_rng(0)
TEXT = RNG.integers(0, V, 300)


def forward_log2probs(model, ids) -> np.ndarray:
    """log2 P(ids[t] | ids[:t]), t = 1.., from one forward pass over the whole text."""
    with torch.no_grad():
        logits, _ = model(torch.as_tensor(ids)[None, :-1])
    return (F.log_softmax(logits[0].double(), -1).gather(-1, torch.as_tensor(ids)[1:, None])[:, 0] / LN2).numpy()


def test_an_ngram_scores_every_token_but_the_first_from_its_distribution():
    model = NGramModel(3, V, "kneser-ney").fit(RNG.integers(0, V, 2000))
    lp = tinylm.score(model, TEXT[:50])
    assert lp.shape == (49,)
    by_hand = [np.log2(model.next_distribution(TEXT[:t])[TEXT[t]]) for t in range(1, 50)]
    assert np.allclose(lp, by_hand, atol=1e-12)
    assert np.allclose(lp, forward_log2probs(model, TEXT[:50]), atol=1e-12)     # its forward agrees


def test_the_mlps_own_scorer_equals_the_windows_of_the_general_one():
    torch.manual_seed(0)
    model = MLPLanguageModel(MLPConfig(V, context=4, d_embed=3, d_hidden=16)).eval()
    from tinylm.inference.scoring import _windows

    fast = tinylm.score(model, TEXT)
    with torch.no_grad():
        general = _windows(model, torch.as_tensor(TEXT), 64)
    assert np.allclose(fast, general, atol=1e-9)
    assert np.allclose(fast, forward_log2probs(model, TEXT), atol=1e-9)


def test_a_recurrent_model_read_as_one_stream_is_one_forward_pass():
    torch.manual_seed(0)
    model = RecurrentLM(RecurrentConfig(V, "gru", d_embed=4, d_state=8)).eval()
    assert np.allclose(tinylm.score(model, TEXT, context=32, streams=1), forward_log2probs(model, TEXT), atol=1e-9)
    several = tinylm.score(model, TEXT, context=32, streams=4)
    assert several.shape == (len(TEXT) - 1,)
    assert abs(several.mean() - forward_log2probs(model, TEXT).mean()) < 0.05   # only 3 tokens lose their past


def test_a_transformer_text_shorter_than_its_context_is_one_forward_pass():
    torch.manual_seed(0)
    model = DecoderLM(TransformerConfig(V, d_model=16, n_heads=2, n_layers=1, max_len=64)).eval()
    assert np.allclose(tinylm.score(model, TEXT[:60]), forward_log2probs(model, TEXT[:60]), atol=1e-9)
    long = tinylm.score(model, TEXT)            # longer than max_len: overlapping windows
    assert long.shape == (len(TEXT) - 1,) and np.isfinite(long).all()
    assert np.allclose(long[:63], forward_log2probs(model, TEXT[:64]), atol=1e-9)


@pytest.mark.parametrize("n, context", [(1, 8), (7, 8), (8, 8), (9, 8), (100, 8), (100, 7), (1000, 256)])
def test_windows_score_each_target_once_with_at_least_half_a_window_of_past(n, context):
    seen = np.zeros(n, dtype=int)
    for start, keep, length in window_plan(n, context):
        assert length <= context
        for target in range(start + keep, start + length):     # target t predicts ids[t + 1]
            seen[target] += 1
            assert target - start >= context // 2 or start == 0
    assert (seen == 1).all()


def test_score_refuses_models_that_do_not_read_left_to_right():
    config = TransformerConfig(V, d_model=16, n_heads=2, n_layers=1, max_len=32, pad_id=0, bos_id=1, eos_id=2)
    with pytest.raises(TypeError, match="left to right"):
        tinylm.score(MaskedLM(config), TEXT[:10])
    with pytest.raises(TypeError, match="source"):
        tinylm.score(EncoderDecoder(config), TEXT[:10])


def test_a_text_of_one_token_has_nothing_to_score():
    model = NGramModel(2, V).fit(TEXT)
    assert tinylm.score(model, TEXT[:1]).shape == (0,)


def test_token_logprobs_are_the_scores_in_nats_where_the_mask_says():
    torch.manual_seed(0)
    model = DecoderLM(TransformerConfig(V, d_model=16, n_heads=2, n_layers=1, max_len=64)).eval()
    ids = torch.as_tensor(RNG.integers(0, V, (3, 12)))
    lp = tinylm.token_logprobs(model, ids)
    assert lp.shape == ids.shape and bool((lp[:, 0] == 0).all())
    for row in range(3):
        assert np.allclose(lp[row, 1:].detach().numpy() / LN2, tinylm.score(model, ids[row]), atol=1e-5)
    mask = torch.zeros_like(ids, dtype=torch.bool)
    mask[:, 6:9] = True                      # a "response" in the middle, padding after it
    masked = tinylm.token_logprobs(model, ids, mask)
    assert torch.equal(masked[:, 6:9], lp[:, 6:9]) and bool((masked[:, :6] == 0).all() and (masked[:, 9:] == 0).all())


def test_token_logprobs_carry_gradients_to_the_weights():
    torch.manual_seed(0)
    model = DecoderLM(TransformerConfig(V, d_model=16, n_heads=2, n_layers=1, max_len=64))
    ids = torch.as_tensor(RNG.integers(0, V, (2, 8)))
    tinylm.token_logprobs(model, ids, torch.ones_like(ids)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_token_logprobs_of_an_answer_given_its_source():
    torch.manual_seed(0)
    model = EncoderDecoder(TransformerConfig(V, d_model=16, n_heads=2, n_layers=1, max_len=32, pad_id=0,
                                             bos_id=1, eos_id=2)).eval()
    src, answer = torch.tensor([[3, 4, 5, 6]]), torch.tensor([[1, 7, 8, 2]])
    lp = tinylm.token_logprobs(model, answer, state=model.encode(src))
    with torch.no_grad():
        logits, _ = model(answer[:, :-1], model.encode(src))
    expected = F.log_softmax(logits, -1).gather(-1, answer[:, 1:, None])[..., 0]
    assert torch.allclose(lp[:, 1:], expected, atol=1e-6)
    with pytest.raises(ValueError, match="two tokens"):
        tinylm.token_logprobs(model, answer[:, :1], state=model.encode(src))


@pytest.mark.parametrize("n,context,stride", [(300, 32, 24), (301, 32, 32), (40, 32, 8), (20, 32, 24)])
def test_a_longer_stride_keeps_every_target_once_with_the_past_it_promises(n, context, stride):
    plans = window_plan(n, context, stride)
    kept = np.concatenate([np.arange(s + keep, s + length) for s, keep, length in plans])
    assert np.array_equal(kept, np.arange(n))                      # every target exactly once, in order
    for s, keep, length in plans[1:]:
        assert keep >= context - stride and length <= context     # each window's first kept target has that past
    torch.manual_seed(0)
    model = DecoderLM(TransformerConfig(V, d_model=16, n_heads=2, n_layers=2, max_len=context)).eval()
    ids = RNG.integers(0, V, n + 1)
    by_hand = np.empty(n)
    with torch.no_grad():
        for s, keep, length in plans:                              # each window read on its own
            logits, _ = model(torch.as_tensor(ids[s:s + length])[None])
            lp = F.log_softmax(logits[0].double(), -1).gather(-1, torch.as_tensor(ids[s + 1:s + length + 1])[:, None])
            by_hand[s + keep:s + length] = lp[keep:, 0].numpy() / LN2
    assert np.allclose(tinylm.score(model, ids, context=context, stride=stride), by_hand, atol=1e-9)


def test_a_stride_outside_the_window_is_refused():
    with pytest.raises(ValueError, match="stride"):
        window_plan(100, 32, 33)


def test_a_large_vocabulary_is_scored_a_few_windows_at_a_time(monkeypatch):
    from tinylm.inference import scoring

    torch.manual_seed(0)
    model = DecoderLM(TransformerConfig(V, d_model=16, n_heads=2, n_layers=1, max_len=16)).eval()
    ids = RNG.integers(0, V, 200)
    whole = tinylm.score(model, ids)
    monkeypatch.setattr(scoring, "LOGITS_PER_BATCH", 16 * V)        # one window per batch
    assert np.allclose(tinylm.score(model, ids), whole, atol=1e-9)


def test_sliding_a_cache_renumbers_rotary_keys_from_zero():
    from tinylm.models.transformer import KVCache, rotate

    k = torch.randn(1, 2, 10, 8)
    cache = KVCache()
    cache.update(0, rotate(k, 0, 100.0), k)
    cache.length = 10
    cache.slide(4, 100.0)
    assert cache.length == 4 and cache.keys[0].shape[-2] == 4
    assert torch.allclose(cache.keys[0], rotate(k[..., 6:, :], 0, 100.0), atol=1e-5)
    assert torch.equal(cache.values[0], k[..., 6:, :])
