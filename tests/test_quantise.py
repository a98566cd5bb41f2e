"""Block quantisers against the gguf package byte for byte; error bounds; the stored sizes."""

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as GGML
from gguf.quants import dequantize as gguf_dequantize
from gguf.quants import quantize as gguf_quantize
from torch import nn

from tinylm.deploy import quantise as Q
from tinylm.models.transformer import DecoderLM, TransformerConfig

FORMATS = {"q8_0": GGML.Q8_0, "q4_0": GGML.Q4_0, "q4_1": GGML.Q4_1}


def arrays():
    """Random and adversarial inputs, every last axis a multiple of 32."""
    rng = np.random.default_rng(17)
    outliers = rng.standard_normal((8, 64)).astype(np.float32) * 0.02
    outliers[::2, 5] = 40.0                     # one huge weight in some blocks
    outliers[1::2, 40] = -40.0
    halves = (np.arange(-16, 16, dtype=np.float32) + 0.5)[None, :] * np.float32(1 / 8)   # ties of a step
    return {
        "normal": rng.standard_normal((16, 128)).astype(np.float32),
        "wide": (rng.standard_normal((3, 4, 96)) * 1e3).astype(np.float32),
        "tiny": (rng.standard_normal((4, 32)) * 1e-6).astype(np.float32),
        "zeros": np.zeros((2, 64), np.float32),
        "constant": np.full((2, 64), 0.37, np.float32),
        "negative constant": np.full((1, 32), -2.5, np.float32),
        "negative only": -np.abs(rng.standard_normal((5, 64))).astype(np.float32),
        "positive only": np.abs(rng.standard_normal((5, 64))).astype(np.float32),
        "outliers": outliers,
        "ties": np.repeat(halves, 2, axis=0),
        "exact halves": np.array([[127.0] + [k + 0.5 for k in range(-15, 16)],
                                  [-8.0] + [k + 0.5 for k in range(-8, 7)] * 2 + [7.5]], np.float32),
        "opposite extremes": np.tile(np.array([1.0, -1.0] * 16, np.float32), (2, 1)),
        "one dimension": rng.standard_normal(256).astype(np.float32),
    }


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", list(arrays()))
def test_bytes_equal_gguf(fmt, case):
    x = arrays()[case]
    ours, theirs = Q.BLOCK_FORMATS[fmt][0](x), gguf_quantize(x, FORMATS[fmt])
    assert ours.dtype == np.uint8 and ours.shape == theirs.shape
    assert np.array_equal(ours, theirs), f"{fmt} bytes differ from gguf on {case}"
    back = Q.BLOCK_FORMATS[fmt][1](ours)
    assert back.shape == x.shape
    assert np.array_equal(back, gguf_dequantize(theirs, FORMATS[fmt]))


@pytest.mark.parametrize("fmt", FORMATS)
def test_sizes_not_a_multiple_of_32_are_refused(fmt):
    with pytest.raises(ValueError, match="multiple of 32"):
        Q.BLOCK_FORMATS[fmt][0](np.ones((4, 48), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        Q.BLOCK_FORMATS[fmt][1](np.ones((4, 7), np.uint8))


def test_block_layout_by_hand():
    """One Q8_0 and one Q4_0 block written out from the definitions."""
    x = np.linspace(-1.0, 0.5, 32, dtype=np.float32)
    raw = Q.quantize_q8_0(x)
    d = np.float32(1.0) / np.float32(127)
    assert raw.shape == (34,)
    assert raw[:2].view(np.float16)[0] == np.float16(d)
    assert raw[2:].view(np.int8)[0] == -127 and raw[2:].view(np.int8)[-1] == 64   # 0.5 * 127 = 63.5 -> 64
    raw = Q.quantize_q4_0(x)
    d = np.float32(-1.0) / np.float32(-8)          # the largest magnitude is -1.0: d = 0.125
    assert raw[:2].view(np.float16)[0] == np.float16(0.125)
    q = np.clip(np.trunc(x / d + np.float32(8.5)), 0, 15).astype(np.uint8)
    assert q[0] == 0                               # -1.0 is exactly d * (0 - 8)
    assert np.array_equal(raw[2:], q[:16] | (q[16:] << 4))


def _scales(raw, fmt):
    blocks = raw.reshape(-1, Q.BLOCK_BYTES[fmt])
    return blocks[:, :2].copy().view(np.float16).astype(np.float32)


@pytest.mark.parametrize("case", ["normal", "wide", "outliers", "negative only", "ties"])
def test_error_bounds(case):
    x = arrays()[case].reshape(-1, 32)
    # Q8_0: half a step, plus the float16 rounding of the scale over at most 127 steps
    raw = Q.quantize_q8_0(x)
    d16 = _scales(raw, "q8_0")
    d32 = np.abs(x).max(axis=1, keepdims=True) / np.float32(127)
    err = np.abs(Q.dequantize_q8_0(raw) - x)
    assert np.all(err <= d32 / 2 + 127 * np.abs(d16 - d32) + 1e-6 * d32)
    # Q4_1: half a step, plus the float16 rounding of the scale (15 steps) and of the minimum
    raw = Q.quantize_q4_1(x)
    d16 = _scales(raw, "q4_1")
    m16 = raw.reshape(-1, 20)[:, 2:4].copy().view(np.float16).astype(np.float32)
    low = x.min(axis=1, keepdims=True)
    d32 = (x.max(axis=1, keepdims=True) - low) / np.float32(15)
    err = np.abs(Q.dequantize_q4_1(raw) - x)
    assert np.all(err <= d32 / 2 + 15 * np.abs(d16 - d32) + np.abs(m16 - low) + 1e-6 * np.abs(x).max())
    # Q4_0: half a step, except a weight that needed level +8 (clipped to +7): one step
    raw = Q.quantize_q4_0(x)
    d = np.abs(_scales(raw, "q4_0"))
    err = np.abs(Q.dequantize_q4_0(raw) - x)
    assert np.all(err <= d * (1 + 1e-3))


def test_exact_scales_give_half_a_step():
    """When the scale is a power of two, float16 keeps it exactly and the bound is d / 2 itself."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.99, 0.99, (64, 32)).astype(np.float32)
    x[:, 0] = 127 * 2.0 ** -7                      # d = 2^-7 exactly
    err = np.abs(Q.dequantize_q8_0(Q.quantize_q8_0(x)) - x)
    assert err.max() <= 2.0 ** -8
    x[:, 0] = -8 * 2.0 ** -3                       # Q4_0: d = 2^-3 (w_max negative: no clipping)
    x[:, 1:] = np.clip(x[:, 1:], -1, 0.875)
    err = np.abs(Q.dequantize_q4_0(Q.quantize_q4_0(x)) - x)
    assert err.max() <= 2.0 ** -4


def test_q4_0_clips_the_opposite_extreme():
    x = np.array([1.0, -1.0] + [0.0] * 30, np.float32)   # largest magnitude 1.0 (first): d = -1/8
    back = Q.dequantize_q4_0(Q.quantize_q4_0(x))
    assert back[0] == 1.0 and back[1] == -0.875          # -1.0 needs level +8: clipped to +7


def test_int8_channel_against_the_formula():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((24, 40)).astype(np.float32)
    w[3] = 0.0                                           # a zero row
    w[5, 7] = 25.0                                       # an outlier spoils only its own row
    codes, scales = Q.quantize_int8_channel(w)
    for i in range(w.shape[0]):
        s = np.abs(w[i]).max() / 127
        assert scales[i] == pytest.approx(s, rel=1e-6)
        if s:
            expected = np.sign(w[i]) * np.floor(np.abs(w[i]) / s + 0.5)
            assert np.abs(codes[i].astype(np.int64) - expected).max() <= 1   # ties may differ by float noise
            assert np.mean(codes[i] == expected) > 0.99
    back = Q.dequantize_int8_channel(codes, scales)
    assert np.all(np.abs(back - w) <= scales[:, None] / 2 * (1 + 1e-5) + 1e-12)
    assert np.all(back[3] == 0) and codes.dtype == np.int8 and np.abs(codes).max() == 127
    with pytest.raises(ValueError, match="matrix"):
        Q.quantize_int8_channel(np.ones(8, np.float32))


def test_int4_tensor_against_the_formula():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((6, 10)).astype(np.float32)
    packed, scale = Q.quantize_int4_tensor(w)
    assert scale == pytest.approx(np.abs(w).max() / 7, rel=1e-6) and packed.shape == (30,)
    q = np.clip(np.sign(w) * np.floor(np.abs(w) / scale + 0.5), -8, 7)
    assert np.array_equal(Q.dequantize_int4_tensor(packed, scale, w.shape), (scale * q).astype(np.float32))
    # an outlier sets the one scale: every other weight rounds to 0 steps
    w[0, 0] = 100.0
    packed, scale = Q.quantize_int4_tensor(w)
    back = Q.dequantize_int4_tensor(packed, scale, w.shape)
    assert back[0, 0] == pytest.approx(100.0) and np.count_nonzero(back) == 1
    with pytest.raises(ValueError, match="even"):
        Q.quantize_int4_tensor(np.ones(3, np.float32))


def test_bf16_matches_torch():
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.standard_normal(1000).astype(np.float32) * 10.0 ** rng.integers(-20, 20, 1000),
                        np.array([0.0, -0.0, 1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8, np.inf, -np.inf], np.float32)])
    theirs = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    assert np.array_equal(Q.round_bf16(x), theirs)
    assert np.array_equal(Q.bf16_to_float32(theirs), torch.from_numpy(theirs.view(np.int16)).view(torch.bfloat16).float().numpy())
    assert np.isnan(Q.bf16_to_float32(Q.round_bf16(np.array([np.nan], np.float32))))[0]


def test_bits_per_weight_and_sizes():
    assert Q.bits_per_weight("q8_0") == 8.5 and Q.bits_per_weight("q4_0") == 4.5 and Q.bits_per_weight("q4_1") == 5.0
    assert Q.bits_per_weight("bf16") == 16 and Q.bits_per_weight("float32") == 32
    shape = (64, 96)
    w = torch.randn(shape)
    for scheme in Q.SCHEMES:
        stored = Q.QuantisedWeight(w, scheme)
        assert stored.nbytes() == Q.size_in_bytes(scheme, shape), scheme
    assert Q.size_in_bytes("q4_0", shape) == 64 * 96 // 32 * 18
    assert Q.size_in_bytes("int8_channel", shape) == 64 * 96 + 64 * 4
    assert Q.size_in_bytes("int4_tensor", shape) == 64 * 96 // 2 + 4
    with pytest.raises(ValueError, match="no quantisation scheme"):
        Q.bits_per_weight("q3_k")
    with pytest.raises(ValueError, match="shape"):
        Q.bits_per_weight("int8_channel")


def tiny_llama():
    torch.manual_seed(0)
    config = TransformerConfig(vocab_size=96, d_model=64, n_heads=4, n_kv_heads=2, n_layers=2, d_ff=96,
                               max_len=64, norm="rms", positions="rotary", mlp="swiglu", bias=False,
                               tie_embeddings=True)
    return DecoderLM(config).eval()


@pytest.mark.parametrize("scheme", Q.SCHEMES)
def test_quantised_model_computes_with_the_dequantised_weights(scheme):
    model = tiny_llama()
    ids = torch.randint(0, 96, (2, 12))
    linears = {name: m.weight.detach().clone() for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    n_norm = sum(p.numel() for n, p in model.named_parameters() if "norm" in n)
    table = model.embed.tokens.weight.detach().clone()
    with torch.no_grad():
        before = model(ids)[0]
        Q.quantise_model(model, scheme)
        after = model(ids)[0]
    # the quantised model equals a float model given the dequantised weights
    reference = tiny_llama()
    with torch.no_grad():
        for name, module in reference.named_modules():
            if name in linears and name != "head":
                module.weight.copy_(Q.QuantisedWeight(linears[name], scheme).dequantise())
        reference.embed.tokens.weight.copy_(Q.QuantisedWeight(table, Q.embedding_scheme(scheme)).dequantise())
        assert torch.allclose(reference(ids)[0], after, atol=1e-5)
    assert not any(isinstance(m, nn.Linear) for m in model.modules())
    assert model.head.weight_q is model.embed.tokens.weight_q            # tied: stored once
    expected = sum(Q.size_in_bytes(scheme, tuple(w.shape)) for n, w in linears.items() if n != "head")
    expected += Q.size_in_bytes(Q.embedding_scheme(scheme), tuple(table.shape)) + 4 * n_norm
    assert Q.size_in_bytes(model) == expected
    if scheme in ("float32", "bf16", "q8_0", "int8_channel"):
        assert (after - before).abs().max() < 0.05 * before.abs().max()


def test_size_of_float_and_torch_dynamic_models():
    model = tiny_llama()
    n = sum(p.numel() for p in model.parameters())        # the tied table counted once
    assert Q.size_in_bytes(model) == 4 * n
    dynamic = Q.torch_dynamic_int8(model)
    linear = dynamic.blocks[0].mlp.up
    assert Q._is_dynamic_linear(linear) and not Q._is_dynamic_linear(nn.Linear(2, 2))
    n_linear = sum(m.weight().numel() for m in dynamic.modules() if Q._is_dynamic_linear(m))
    n_linears = 2 * (64 * 64 + 64 * 32 * 2 + 64 * 64 + 3 * 64 * 96)
    assert n_linear == n_linears
    assert Q.size_in_bytes(dynamic) == n_linears + 8 * 14 + Q.size_in_bytes("q8_0", (96, 64)) + 4 * 64 * 5
    with pytest.raises(TypeError):
        Q.size_in_bytes(3.0)


def test_matrix_errors_order():
    rng = np.random.default_rng(4)
    w = rng.standard_normal((64, 128)).astype(np.float32)
    w[0, 0] = 30.0
    errors = Q.matrix_errors({"w": w})["w"]
    assert errors["bf16"] < errors["q8_0"] < errors["q4_1"] < errors["int4_tensor"]
    assert errors["q8_0"] < errors["q4_0"] < errors["int4_tensor"]


def test_large_matrices_quantised_in_slices_give_the_same_bytes(monkeypatch):
    rng = np.random.default_rng(5)
    w = torch.from_numpy(rng.standard_normal((50, 64)).astype(np.float32))
    whole = {s: Q.QuantisedWeight(w, s) for s in Q.SCHEMES}
    monkeypatch.setattr(Q, "ROWS_AT_ONCE", 7)
    for scheme, one in whole.items():
        sliced = Q.QuantisedWeight(w, scheme)
        assert torch.equal(sliced.dequantise(), one.dequantise()), scheme
        for name in one.stored:
            assert torch.equal(getattr(sliced, name), getattr(one, name)), (scheme, name)


def test_the_committed_study_log():
    """The study is registered, came from committed code, and its sizes are what the formats
    promise for SmolLM2's shapes; its float32 row is the committed score run's first piece."""
    from tinylm import results
    from tinylm.usage import studies

    assert studies.STUDIES["quantisation"] == "deploy.quantise"
    log = studies.load("quantisation")
    assert not log["commit"]["dirty"]
    rows = {r["format"]: r for r in log["formats"]}
    assert tuple(rows) == Q.FORMATS
    d, d_ff, kv, layers = 576, 1536, 3 * 64, 30
    shapes = [(d, d), (kv, d), (kv, d), (d, d), (d_ff, d), (d_ff, d), (d, d_ff)] * layers
    table, norms = (49152, d), 2 * layers * d + d
    for scheme in ("float32", "bf16", "q8_0", "q4_1", "q4_0", "int8_channel", "int4_tensor"):
        expected = sum(Q.size_in_bytes(scheme, s) for s in shapes)
        expected += Q.size_in_bytes(Q.embedding_scheme(scheme), table) + 4 * norms
        assert rows[scheme]["bytes"] == expected, scheme
    first = results.load("score-smollm2-135m-instruct")["pieces"][0]
    assert (first["start"], first["end"]) == (0, log["slice_chars"])
    assert rows["float32"]["bits"] == pytest.approx(first["bits"], abs=0.01)
    assert rows["q4_1"]["bits"] == rows["float32"]["bits"]            # the file's own blocks: lossless
    assert rows["q8_0"]["bpc"] < rows["q4_0"]["bpc"] < rows["int4_tensor"]["bpc"]
