"""SmolLM2-135M-Instruct read into tinylm's DecoderLM, checked against transformers reading the
same GGUF file."""

import pytest
import torch

import tinylm
from tinylm.pretrained import smollm2
from tinylm.pretrained.gguf import GGUFFile

transformers = pytest.importorskip("transformers")

LOGIT_TOLERANCE = 5e-4
"""Both models compute in float32 from the same dequantised weights, so they differ only in the
order of their sums (fused attention against ours, grouped heads repeated against expanded):
rounding of about 1e-7 of logits near 40, grown over 30 blocks.  Measured: at most 1e-4 on these
prompts; the tolerance leaves five times that, and is still a thousand times smaller than the
gap between the top two logits that greedy decoding depends on."""

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
TEXTS = {
    "English": "To be, or not to be, that is the question:",
    "Chinese": "北京是中国的首都，也是一座历史悠久的城市。",
    "chat": None,             # the chat prompt, filled in by the fixture
}


@pytest.fixture(scope="module")
def ours():
    model, tokenizer, log = tinylm.load(smollm2.NAME)
    return model, tokenizer, log


@pytest.fixture(scope="module")
def theirs():
    path = smollm2.smollm2_gguf()
    model = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                              dtype=torch.float32).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    return model, tokenizer


def test_the_config_is_read_from_the_file(ours):
    model, _, log = ours
    c = model.config
    assert (c.n_layers, c.d_model, c.n_heads, c.kv_heads, c.d_ff, c.vocab_size) == (30, 576, 9, 3, 1536, 49152)
    assert (c.norm, c.positions, c.mlp, c.bias, c.tie_embeddings, c.rope_base) == \
        ("rms", "rotary", "swiglu", False, True, 100000.0)
    assert model.head.weight is model.embed.tokens.weight
    assert log["parameters"] == model.num_parameters() == GGUFFile(smollm2.smollm2_gguf()).num_parameters()
    assert log["stage"] == "LLM" and not model.training


def llama_cpp_permute(weight, n_heads):
    """What llama.cpp's converter does to a query or key matrix (rows 2j, 2j+1 of a head are its
    rows j and j + head_dim/2), written from its description."""
    rows, columns = weight.shape
    return weight.reshape(n_heads, 2, rows // n_heads // 2, columns).transpose(1, 2).reshape(rows, columns)


@pytest.mark.parametrize("n_heads", [1, 3, 9])
def test_unpermute_undoes_llama_cpps_row_order(n_heads):
    weight = torch.randn(n_heads * 8, 5)
    permuted = llama_cpp_permute(weight, n_heads)
    assert not torch.equal(permuted, weight)
    assert torch.equal(smollm2.unpermute(permuted, n_heads), weight)
    assert torch.equal(permuted[1], weight[4]) and torch.equal(permuted[2], weight[1])   # head 0, head_dim 8


def test_the_chat_prompt_is_the_one_transformers_renders(theirs):
    _, tokenizer = theirs
    conversations = [
        MESSAGES,
        [{"role": "system", "content": "Answer in one word."}, *MESSAGES],
        [*MESSAGES, {"role": "assistant", "content": "Paris."}, {"role": "user", "content": "法国的首都是哪里？"}],
    ]
    for messages in conversations:
        for add in (True, False):
            assert smollm2.chat_prompt(messages, add_generation_prompt=add) == \
                tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add)


@pytest.mark.parametrize("kind", sorted(TEXTS))
def test_tokens_and_logits_equal_transformers(ours, theirs, kind):
    model, tokenizer, _ = ours
    reference, reference_tokenizer = theirs
    text = TEXTS[kind] or smollm2.chat_prompt(MESSAGES)
    ids = tokenizer.encode(text)
    assert ids == reference_tokenizer(text, add_special_tokens=False)["input_ids"]
    x = torch.tensor([ids])
    with torch.no_grad():
        mine, _ = model(x)
        expected = reference(x).logits
    difference = (mine - expected).abs().max().item()
    assert difference < LOGIT_TOLERANCE, f"{kind}: logits differ by {difference:.2e}"
    assert torch.equal(mine.argmax(-1), expected.argmax(-1))


def test_it_chats_through_its_template_and_stops_at_the_end_of_its_turn(ours):
    model, tokenizer, _ = ours
    prompt = tokenizer.encode(smollm2.chat_prompt(MESSAGES))
    greedy = tinylm.Sampler(temperature=0)
    answer = tinylm.generate(model, prompt, 30, greedy)
    assert len(answer) < 30 and model.config.eos_id not in answer, "stops at <|im_end|>, which is left out"
    assert "Paris" in tokenizer.decode(answer)
    assert tinylm.generate(model, prompt, 8, greedy, use_cache=False) == answer[:8]
