"""The cost of a token: FLOPs and bytes counted against torch's FLOP counter and the model."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tinylm.analysis.compute import inference_flops
from tinylm.deploy import cost
from tinylm.models.transformer import DecoderLM, TransformerConfig

LLAMA = dict(vocab_size=61, d_model=48, n_heads=6, n_kv_heads=2, n_layers=3, d_ff=80, max_len=64,
             norm="rms", positions="rotary", mlp="swiglu", bias=False)
GPT2 = dict(vocab_size=57, d_model=32, n_heads=4, n_layers=2, max_len=40)
CONFIGS = {"llama, tied": TransformerConfig(**LLAMA),
           "llama, untied": TransformerConfig(**LLAMA, tie_embeddings=False),
           "gpt-2": TransformerConfig(**GPT2),
           "gpt-2, untied, relu": TransformerConfig(**GPT2, tie_embeddings=False, mlp="relu")}


def model_of(config):
    torch.manual_seed(0)
    return DecoderLM(config).eval()


def counted(model, ids, state=None):
    """torch's count of a forward pass.  Its counter does not see the fused attention kernel on
    CPU, so the model attends the written-out way (``need_weights``: q @ k^T, softmax, @ v)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(ids, state, need_weights=True)
    return counter.get_total_flops()


@pytest.mark.parametrize("name", CONFIGS)
def test_parameter_counts_equal_the_model(name):
    config = CONFIGS[name]
    model = model_of(config)
    n = cost.parameter_counts(config)
    assert n["total"] == model.num_parameters()
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    if config.tie_embeddings:
        assert n["matmul"] == linear      # the head is the embedding; counted once in total
    else:
        assert n["matmul"] == linear
    # a forward pass reads every parameter but the look-up tables' unused rows
    rows = (0 if config.tie_embeddings else 1) + (1 if config.positions == "learned" else 0)
    assert cost.weight_bytes(config) == 4 * (model.num_parameters() - n["lookup"] + rows * config.d_model)


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("context", [1, 9, 30])
def test_decode_flops_equal_torchs_count(name, context):
    """One new token after ``context - 1`` cached ones: torch counts the matrix products and
    attention over ``context`` keys; so do we."""
    config = CONFIGS[name]
    model = model_of(config)
    state = model.new_state()
    with torch.no_grad():
        if context > 1:
            model(torch.randint(0, config.vocab_size, (1, context - 1)), state)
    got = counted(model, torch.randint(0, config.vocab_size, (1, 1)), state)
    assert cost.decode_flops(config, context) == got
    assert cost.decode_flops(config, context) == inference_flops(cost.parameter_counts(config)["matmul"]) \
        + 4 * config.n_layers * context * config.d_model


@pytest.mark.parametrize("batch", [1, 3])
def test_batched_decode_flops(batch):
    config = CONFIGS["llama, tied"]
    model = model_of(config)
    cache = cost.filled_cache(config, batch, 10)
    got = counted(model, torch.zeros(batch, 1, dtype=torch.long), cache)
    assert cost.decode_flops(config, 11, batch) == got


@pytest.mark.parametrize("name", CONFIGS)
def test_prefill_flops_equal_torchs_count_less_the_masked_half(name):
    """torch counts a causal attention as if every query saw every key (n^2 pairs); only
    n (n + 1) / 2 pairs are real, and our count is torch's less the masked ones."""
    config = CONFIGS[name]
    n = 17
    got = counted(model_of(config), torch.randint(0, config.vocab_size, (1, n)))
    masked = n * n - n * (n + 1) // 2
    assert cost.prefill_flops(config, n) == got - 4 * config.n_layers * masked * config.d_model


def test_smollm2_kv_bytes_and_intensity():
    from tinylm.deploy.paging import SMOLLM2_KV_BYTES_PER_TOKEN

    smol = TransformerConfig(vocab_size=49152, d_model=576, n_heads=9, n_layers=30, d_ff=1536, max_len=8192,
                             norm="rms", positions="rotary", mlp="swiglu", n_kv_heads=3, bias=False)
    assert cost.kv_bytes_per_token(smol) == SMOLLM2_KV_BYTES_PER_TOKEN == 46_080
    n = cost.parameter_counts(smol)
    assert n["total"] == 134_515_008            # SmolLM2-135M's parameter count
    one = cost.intensity(cost.decode_flops(smol, 256), cost.decode_bytes(smol, 256))
    assert 0.5 < one < 0.55                     # about 2 FLOPs per 4-byte weight, and attention
    many = cost.intensity(cost.decode_flops(smol, 256, 64), cost.decode_bytes(smol, 256, 64))
    assert many > 20 * one                      # batching shares the weights
    prefill = cost.intensity(cost.prefill_flops(smol, 256), cost.prefill_bytes(smol, 256))
    assert prefill > 100


def test_roofline():
    assert cost.ridge_point(100e9, 20e9) == 5
    assert cost.roofline(0.5, 100e9, 20e9) == 10e9       # memory-bound: intensity x bandwidth
    assert cost.roofline(50, 100e9, 20e9) == 100e9       # compute-bound: the peak
    with pytest.raises(ValueError, match="positive"):
        cost.roofline(1, 0, 1)


def test_measurements_are_plausible():
    bandwidth = cost.memory_bandwidth(megabytes=64, repeats=2)
    assert 5e8 < bandwidth < 1e12
    peak = cost.peak_flops(n=256, repeats=2)
    assert 1e8 < peak < 1e13
    model = model_of(CONFIGS["llama, tied"])
    assert cost.time_prefill(model, 8, repeats=1) > 0
    assert cost.time_decode(model, 8, batch=2, steps=2) > 0


def test_read_bandwidth_is_plausible():
    assert 5e8 < cost.read_bandwidth(megabytes=64, repeats=2) < 1e12


def test_paging_and_sharing_tables():
    workload = {"prompt": [10, 30], "generated": [6, 2], "max_tokens": 8}
    table = cost.paging_table(workload, context=64, block_sizes=(8,), budget_bytes=4000, bytes_per_token=10)
    assert table["budget_tokens"] == 400 and table["n"] == 2
    # steps hold 11..16 and 31, 32 tokens: 81 + 63 = 144 used; reserved 6 x 18 + 2 x 38 = 184 (max_tokens),
    # 8 x 64 = 512 (context); paged by 8: 6 x 16 + 2 x 32 = 160
    schemes = table["schemes"]
    assert schemes["contiguous, max_tokens"]["waste"] == round(1 - 144 / 184, 4)
    assert schemes["contiguous, context"]["waste"] == round(1 - 144 / 512, 4)
    assert schemes["paged, 8"]["waste"] == round(1 - 144 / 160, 4)
    assert schemes["paged, 8"]["fit"] == 400 * 8 // 160 and schemes["contiguous, context"]["fit"] == 400 * 8 // 512
    sharing = cost.sharing_table(workload, samples=(2,), block_size=8)
    # prompt 10: blocks 0 full, 1 holds 2; two samples of 6 tokens: separate 2 x 2 = 4 blocks;
    # shared: 2 prompt blocks + 1 copy = 3.  Prompt 30 (3 full + 6), samples of 2: separate
    # 2 x 4 = 8, shared 4 + 1 copy = 5
    assert sharing["2"] == {"separate": 12, "shared": 8, "saving": round(1 - 8 / 12, 4)}
