"""The Transformer (tinylm.models.transformer): attention, masks, the KV cache, shapes and sizes."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

import tinylm
from tinylm.analysis import params
from tinylm.models.transformer import (FAMILIES, DecoderLM, Encoder, EncoderDecoder, EncoderState, KVCache, MaskedLM,
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
        assert [w.shape for w in model.attention_weights()] == [(2, 4, 12, 12)] * 2
    else:
        fused = model(x[:, :7], model.encode(x))[0]
        memory = EncoderState(model.encoder(x, need_weights=True), None)
        weighted = model(x[:, :7], memory, need_weights=True)[0]
        assert [w.shape for w in model.encoder.attention_weights()] == [(2, 4, 12, 12)] * 2
        assert [w.shape for w in model.attention_weights("self")] == [(2, 4, 7, 7)] * 2
        assert [w.shape for w in model.attention_weights("cross")] == [(2, 4, 7, 12)] * 2
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
    logits, state = model(tgt, model.encode(src))
    assert isinstance(state, EncoderState)
    assert (logits[:, :5] - model(tgt2, model.encode(src))[0][:, :5]).abs().max() < 1e-6
    src2 = src.clone()
    src2[:, -1] = (src2[:, -1] + 1) % V
    assert (logits[:, 0] - model(tgt, model.encode(src2))[0][:, 0]).abs().max() > 1e-4
    with pytest.raises(TypeError, match="encoded source"):
        model(tgt, None)


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
    for sampler in (tinylm.GREEDY, tinylm.Sampler(temperature=1.0, seed=3)):
        with_cache = tinylm.generate(model, prompt, 40, sampler)
        without = tinylm.generate(model, prompt, 40, sampler, use_cache=False)
        assert with_cache == without and len(with_cache) == 40


def greedy_by_hand(model, source, bos, eos, max_new_tokens):
    """Greedy decoding without a cache: re-read the whole answer so far at every step."""
    state, answer = model.encode(torch.tensor([source])), []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            logits, _ = model(torch.tensor([[bos] + answer]), state)
            token = int(logits[0, -1].argmax())
            if token == eos:
                break
            answer.append(token)
    return answer


def test_encoder_decoder_cache_gives_the_same_output():
    torch.manual_seed(0)
    model = EncoderDecoder(config(pad_id=0, bos_id=1, eos_id=2)).eval()
    src = ids(length=9).tolist()
    cached = tinylm.generate(model, src, 20, tinylm.GREEDY)
    assert cached == tinylm.generate(model, src, 20, tinylm.GREEDY, use_cache=False)
    assert cached == [greedy_by_hand(model, s, 1, 2, 20) for s in src]
    # sources of different lengths are padded, and the padding is masked
    assert tinylm.generate(model, [src[0][:6], src[1]], 20, tinylm.GREEDY) == \
        [tinylm.generate(model, src[0][:6], 20, tinylm.GREEDY), cached[1]]


def test_encoder_decoder_stops_at_its_eos():
    torch.manual_seed(0)
    model = EncoderDecoder(config(pad_id=0, bos_id=1)).eval()
    src = ids(length=9).tolist()
    free = tinylm.generate(model, src[0], 12, tinylm.GREEDY)
    assert len(free) == 12, "without an eos_id nothing stops the answer"
    stop = free[4]
    stopped = EncoderDecoder(config(pad_id=0, bos_id=1, eos_id=stop)).eval()
    stopped.load_state_dict(model.state_dict())
    assert tinylm.generate(stopped, src[0], 12, tinylm.GREEDY) == free[:free.index(stop)]
    with pytest.raises(ValueError, match="bos_id"):
        tinylm.generate(EncoderDecoder(config()), src[0], 3, tinylm.GREEDY)


def test_learned_positions_refuse_too_long_a_sequence():
    model = DecoderLM(config(max_len=16))
    with pytest.raises(ValueError, match="longer than max_len"):
        model(ids(length=17))
    with pytest.raises(ValueError, match="more than the model's max_len 16.*use_cache=False"):
        tinylm.generate(model, [1, 2], 20)                               # refused before any work is done
    assert len(tinylm.generate(model, [1, 2], 20, use_cache=False)) == 20   # a sliding window instead
    assert len(tinylm.generate(model, [1, 2], 14)) == 14                     # 16 tokens in all: allowed
    rotary = DecoderLM(config(max_len=16, positions="rotary"))
    with pytest.raises(ValueError, match="max_len"):                     # max_len is what the model reads at once,
        tinylm.generate(rotary, [1, 2], 20)                               # whatever its positions
    assert len(tinylm.generate(rotary, [1, 2], 20, use_cache=False)) == 20


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
    logits, state = MaskedLM(config(norm_first=False, embedding_norm=True))(x)
    assert logits.shape == (2, 12, V) and state is None
    assert Encoder(config())(x).shape == (2, 12, 32)
    model = EncoderDecoder(config())
    assert model(x[:, :5], model.encode(x))[0].shape == (2, 5, V)


def test_model_protocol_flags():
    assert (DecoderLM.causal, DecoderLM.encoder_decoder, DecoderLM.stateful) == (True, False, False)
    assert MaskedLM.causal is False and EncoderDecoder.encoder_decoder is True
    assert DecoderLM(config(max_len=48)).max_len == 48
    assert isinstance(DecoderLM(config()).new_state(), KVCache)
    with pytest.raises(TypeError, match="left to right"):
        tinylm.score(MaskedLM(config()), [1, 2, 3])
    with pytest.raises(TypeError, match="source"):
        tinylm.score(EncoderDecoder(config()), [1, 2, 3])


def test_the_config_is_frozen_and_fills_in_d_ff():
    c = config()
    assert c.d_ff == 4 * 32 and config(d_ff=50).d_ff == 50
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.n_layers = 3
    deeper = dataclasses.replace(c, n_layers=3)
    assert deeper.n_layers == 3 and c.n_layers == 2 and deeper.d_ff == c.d_ff
    assert TransformerConfig.from_dict(c.to_dict()) == c
    assert (c.pad_id, c.bos_id, c.eos_id) == (None, None, None)
    with pytest.raises(ValueError, match="no field 'hidden'"):
        TransformerConfig.from_dict({**c.to_dict(), "hidden": 64})


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
                                            n_layers=c.n_layers, max_len=c.max_len))
    assert model.num_parameters() == count(model) == params.num_parameters(c) == 124_439_808


def test_bert_base_encoder_has_berts_parameter_count():
    c = params.PUBLISHED["bert-base"].config
    with torch.device("meta"):
        model = Encoder(TransformerConfig(vocab_size=c.vocab_size, d_model=c.d_model, n_heads=c.n_heads,
                                          n_layers=c.n_layers, d_ff=c.d_ff, max_len=c.max_len,
                                          type_vocab_size=c.type_vocab_size, norm_first=False,
                                          embedding_norm=True, norm_eps=1e-12))
    pooler = c.d_model * c.d_model + c.d_model
    assert count(model) == params.num_parameters(c) - pooler


def test_llama_7b_options_give_llamas_parameter_count():
    c = params.PUBLISHED["llama-7b"].config
    with torch.device("meta"):
        model = DecoderLM(TransformerConfig(vocab_size=c.vocab_size, d_model=c.d_model, n_heads=c.n_heads,
                                            n_layers=c.n_layers, d_ff=c.d_ff, norm="rms", positions="rotary",
                                            mlp="swiglu", bias=False, tie_embeddings=False))
    assert model.num_parameters() == count(model) == params.num_parameters(c) == 6_738_415_616
