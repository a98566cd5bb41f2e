"""The Transformer (tinylm.transformer): attention, masks, the KV cache, shapes and sizes."""

import pytest
import torch
import torch.nn.functional as F

from tinylm import params
from tinylm.transformer import (FAMILIES, DecoderLM, Encoder, EncoderDecoder, KVCache, MaskedLM,
                                TransformerConfig, attention, causal_mask, rotate)

V = 37


def config(**overrides):
    return TransformerConfig(**{**dict(vocab_size=V, d_model=32, n_heads=4, n_layers=2, max_len=64), **overrides})


def ids(batch=2, length=12, seed=0):
    return torch.randint(0, V, (batch, length), generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- attention itself

@pytest.mark.parametrize("causal", [False, True])
def test_attention_equals_torch_sdpa(causal):
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(3, 4, 9, 16, generator=g) for _ in range(3))
    ours, weights = attention(q, k, v, causal_mask(9) if causal else None)
    theirs = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    assert (ours - theirs).abs().max() < 1e-6
    assert torch.allclose(weights.sum(-1), torch.ones(3, 4, 9))


def test_attention_with_padding_mask_equals_torch_sdpa():
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(2, 2, 5, 8, generator=g) for _ in range(3))
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)[:, None, None, :]
    ours, weights = attention(q, k, v, mask)
    assert (ours - F.scaled_dot_product_attention(q, k, v, attn_mask=mask)).abs().max() < 1e-6
    assert weights[0, :, :, 3:].abs().max() == 0       # padded keys get no weight


def test_causal_mask_with_a_past():
    assert causal_mask(2, past=3).tolist() == [[True] * 4 + [False], [True] * 5]


@pytest.mark.parametrize("family", ["decoder", "encoder-decoder"])
def test_need_weights_path_equals_fused_path(family):
    torch.manual_seed(0)
    model = FAMILIES[family](config()).eval()
    x = ids()
    if family == "decoder":
        fused, weighted = model(x)[0], model(x, need_weights=True)[0]
    else:
        fused = model(x, x[:, :7])
        memory = model.encoder(x, need_weights=True)
        weighted = model.decode(x[:, :7], memory, need_weights=True)
    assert (fused - weighted).abs().max() < 1e-5


# ----------------------------------------------------------------------------- masks really mask

def test_decoder_cannot_see_the_future():
    """Changing tokens after position t leaves the logits at positions <= t unchanged."""
    torch.manual_seed(0)
    model = DecoderLM(config()).eval()
    x = ids(length=20)
    y = x.clone()
    y[:, 11:] = (y[:, 11:] + 1 + torch.arange(9)) % V
    a, b = model(x)[0], model(y)[0]
    assert (a[:, :11] - b[:, :11]).abs().max() < 1e-6
    assert (a[:, 11:] - b[:, 11:]).abs().max() > 1e-3       # and the future does change


def test_encoder_sees_both_ways():
    torch.manual_seed(0)
    model = Encoder(config()).eval()
    x = ids(length=20)
    y = x.clone()
    y[:, -1] = (y[:, -1] + 1) % V
    assert (model(x)[:, 0] - model(y)[:, 0]).abs().max() > 1e-4


def test_padding_is_ignored():
    """Padding tokens (whatever they are) do not change the encoder's output on real tokens."""
    torch.manual_seed(0)
    model = Encoder(config()).eval()
    x = ids(batch=1, length=10)
    padded_a = torch.cat([x, torch.zeros(1, 5, dtype=torch.long)], 1)
    padded_b = torch.cat([x, torch.full((1, 5), 7)], 1)
    keep = torch.tensor([[True] * 10 + [False] * 5])
    alone = model(x)
    assert (model(padded_a, keep)[:, :10] - alone).abs().max() < 1e-5
    assert (model(padded_b, keep)[:, :10] - alone).abs().max() < 1e-5


def test_decoder_of_encoder_decoder_is_causal_and_reads_the_source():
    torch.manual_seed(0)
    model = EncoderDecoder(config()).eval()
    src, tgt = ids(length=9), ids(length=8, seed=1)
    tgt2 = tgt.clone()
    tgt2[:, 5:] = (tgt2[:, 5:] + 3) % V
    assert (model(src, tgt)[:, :5] - model(src, tgt2)[:, :5]).abs().max() < 1e-6
    src2 = src.clone()
    src2[:, -1] = (src2[:, -1] + 1) % V
    assert (model(src, tgt)[:, 0] - model(src2, tgt)[:, 0]).abs().max() > 1e-4


# ----------------------------------------------------------------------------- the KV cache

@pytest.mark.parametrize("options", [{}, dict(positions="rotary", norm="rms", mlp="swiglu", n_kv_heads=2, bias=False),
                                     dict(positions="sinusoidal")])
def test_cache_gives_the_same_logits_and_tokens(options):
    torch.manual_seed(0)
    model = DecoderLM(config(**options)).eval()
    x = ids(batch=1, length=30)
    full = model(x)[0]
    cache = KVCache()
    first, cache = model(x[:, :17], cache)
    pieces = [first] + [model(x[:, t:t + 1], cache)[0] for t in range(17, 30)]
    assert cache.length == 30
    assert (torch.cat(pieces, 1) - full).abs().max() < 1e-5
    prompt = x[0, :5].tolist()
    for greedy in (True, False):
        with_cache = model.generate(prompt, 40, greedy=greedy, generator=torch.Generator().manual_seed(3))
        without = model.generate(prompt, 40, greedy=greedy, use_cache=False,
                                 generator=torch.Generator().manual_seed(3))
        assert with_cache == without


def test_encoder_decoder_cache_gives_the_same_output():
    torch.manual_seed(0)
    model = EncoderDecoder(config()).eval()
    src = ids(length=9)
    assert model.generate(src, 1, 2, 20) == model.generate(src, 1, 2, 20, use_cache=False)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[0, 6:] = False
    assert (model.generate(src, 1, 2, 20, src_padding_mask=mask)[0]
            == model.generate(src[:1, :6], 1, 2, 20)[0])


def test_learned_positions_refuse_too_long_a_sequence():
    model = DecoderLM(config(max_len=16))
    with pytest.raises(ValueError, match="longer than max_len"):
        model(ids(length=17))
    with pytest.raises(ValueError, match="exceed max_len"):
        model.generate([1, 2], 20)
    assert len(model.generate([1, 2], 20, use_cache=False)) == 20       # a sliding window instead


def test_rotary_depends_only_on_relative_position():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 1, 16, generator=g), torch.randn(1, 1, 1, 16, generator=g)
    a = (rotate(q, 3) * rotate(k, 1)).sum()
    b = (rotate(q, 10) * rotate(k, 8)).sum()
    assert abs(float(a - b)) < 1e-5
    assert torch.allclose(rotate(q, 5).norm(), q.norm())


# ----------------------------------------------------------------------------- shapes and sizes

def test_shapes_of_the_three_families():
    torch.manual_seed(0)
    x = ids()
    assert DecoderLM(config())(x)[0].shape == (2, 12, V)
    assert MaskedLM(config(norm_first=False, embedding_norm=True))(x).shape == (2, 12, V)
    assert Encoder(config())(x).shape == (2, 12, 32)
    assert EncoderDecoder(config())(x, x[:, :5]).shape == (2, 5, V)


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="divisible"):
        config(d_model=30)
    with pytest.raises(ValueError, match="multiple of n_kv_heads"):
        config(n_kv_heads=3)
    with pytest.raises(ValueError, match="unknown mlp"):
        config(mlp="tanh")


def count(model):
    return sum(p.numel() for p in model.parameters())


def test_gpt2_small_has_gpt2s_parameter_count():
    c = params.PUBLISHED["gpt2-small"].config
    with torch.device("meta"):
        model = DecoderLM(TransformerConfig(vocab_size=c.vocab_size, d_model=c.d_model, n_heads=c.n_heads,
                                            n_layers=c.n_layers, max_len=c.n_positions))
    assert count(model) == params.count(c) == 124_439_808


def test_bert_base_encoder_has_berts_parameter_count():
    c = params.PUBLISHED["bert-base"].config
    with torch.device("meta"):
        model = Encoder(TransformerConfig(vocab_size=c.vocab_size, d_model=c.d_model, n_heads=c.n_heads,
                                          n_layers=c.n_layers, d_ff=c.d_ff, max_len=c.max_positions,
                                          type_vocab_size=c.type_vocab_size, norm_first=False,
                                          embedding_norm=True, norm_eps=1e-12))
    pooler = c.d_model * c.d_model + c.d_model
    assert count(model) == params.count(c) - pooler


def test_llama_7b_options_give_llamas_parameter_count():
    c = params.PUBLISHED["llama-7b"].config
    with torch.device("meta"):
        model = DecoderLM(TransformerConfig(vocab_size=c.vocab_size, d_model=c.d_model, n_heads=c.n_heads,
                                            n_layers=c.n_layers, d_ff=c.d_ff, norm="rms", positions="rotary",
                                            mlp="swiglu", bias=False, tie_embeddings=False))
    assert count(model) == params.count(c) == 6_738_415_616
