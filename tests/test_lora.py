"""LoRA (tinylm.deploy.lora) against peft's LoRA on the same layers, and its bookkeeping."""

import copy
import math

import pytest
import torch
from torch import nn

from tinylm.deploy import lora
from tinylm.models.transformer import DecoderLM, TransformerConfig

TARGETS = ["attn.q", "attn.v", "mlp.down"]


def tiny_llama(seed=0, tie=True):
    torch.manual_seed(seed)
    config = TransformerConfig(vocab_size=50, d_model=32, n_heads=4, n_kv_heads=2, n_layers=2, d_ff=48, max_len=16,
                               norm="rms", positions="rotary", mlp="swiglu", bias=False, tie_embeddings=tie)
    return DecoderLM(config).eval()


def randomise_b(model, seed=1):
    """B starts at zero, which would hide a wrong B or a wrong scale: give it random values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora.lora_layers(model).values():
            layer.lora_B.weight.copy_(torch.randn(layer.lora_B.weight.shape, generator=g) * 0.1)


def peft_twin(model, ours, targets, rank, alpha):
    """peft's LoRA injected into a copy of the base model, with our A and B copied into it."""
    import peft

    config = peft.LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), lora_dropout=0.0)
    theirs = peft.inject_adapter_in_model(config, copy.deepcopy(model))
    with torch.no_grad():
        for name, layer in lora.lora_layers(ours).items():
            twin = theirs.get_submodule(name)
            twin.lora_A["default"].weight.copy_(layer.lora_A.weight)
            twin.lora_B["default"].weight.copy_(layer.lora_B.weight)
    return theirs


def test_layer_equals_peft_outputs_and_gradients():
    import peft

    torch.manual_seed(0)
    base = nn.Linear(12, 7)
    ours = lora.LoRALinear(copy.deepcopy(base), rank=3, alpha=5)
    randomise_b(nn.ModuleDict({"x": ours}))
    holder = nn.ModuleDict({"layer": copy.deepcopy(base)})
    theirs = peft.inject_adapter_in_model(peft.LoraConfig(r=3, lora_alpha=5, target_modules=["layer"]), holder).layer
    with torch.no_grad():
        theirs.lora_A["default"].weight.copy_(ours.lora_A.weight)
        theirs.lora_B["default"].weight.copy_(ours.lora_B.weight)
    x = torch.randn(4, 5, 12)
    y_ours, y_theirs = ours(x), theirs(x)
    assert torch.allclose(y_ours, y_theirs, atol=1e-6)
    (y_ours ** 2).sum().backward()
    (y_theirs ** 2).sum().backward()
    assert torch.allclose(ours.lora_A.weight.grad, theirs.lora_A["default"].weight.grad, atol=1e-5)
    assert torch.allclose(ours.lora_B.weight.grad, theirs.lora_B["default"].weight.grad, atol=1e-5)
    assert ours.base.weight.grad is None and not ours.base.weight.requires_grad


def test_initialisation_is_peft_s():
    """Same seed, same A: Kaiming-uniform with a = sqrt(5) (drawn by peft's own code); B zero."""
    import peft

    torch.manual_seed(3)
    ours = lora.LoRALinear(nn.Linear(20, 10), rank=4, alpha=8)
    holder = nn.ModuleDict({"layer": nn.Linear(20, 10)})
    theirs = peft.inject_adapter_in_model(peft.LoraConfig(r=4, lora_alpha=8, target_modules=["layer"]), holder).layer
    torch.manual_seed(3)
    ours.reset_parameters()
    torch.manual_seed(3)
    theirs.reset_lora_parameters("default", True)
    assert torch.equal(ours.lora_A.weight, theirs.lora_A["default"].weight)
    assert torch.count_nonzero(ours.lora_B.weight) == 0
    x = torch.randn(3, 20)
    assert torch.equal(ours(x), ours.base(x))          # a fresh adapter changes nothing


def test_model_equals_peft_outputs_gradients_and_counts():
    model = tiny_llama()
    ours = lora.apply_lora(copy.deepcopy(model), TARGETS, rank=4, alpha=8)
    randomise_b(ours)
    theirs = peft_twin(model, ours, TARGETS, 4, 8)
    ids = torch.randint(0, 50, (3, 10), generator=torch.Generator().manual_seed(2))
    out_ours, _ = ours(ids)
    out_theirs, _ = theirs(ids)
    assert torch.allclose(out_ours, out_theirs, atol=1e-5)
    out_ours.logsumexp(-1).sum().backward()
    out_theirs.logsumexp(-1).sum().backward()
    for name, layer in lora.lora_layers(ours).items():
        twin = theirs.get_submodule(name)
        assert torch.allclose(layer.lora_A.weight.grad, twin.lora_A["default"].weight.grad, atol=1e-5), name
        assert torch.allclose(layer.lora_B.weight.grad, twin.lora_B["default"].weight.grad, atol=1e-5), name
    assert sorted(lora.lora_layers(ours)) == sorted(n for n, m in theirs.named_modules()
                                                    if type(m).__module__.startswith("peft") and hasattr(m, "lora_A"))
    count = lora.trainable_parameters(ours)
    trainable = sum(p.numel() for p in theirs.parameters() if p.requires_grad)
    total = sum(p.numel() for p in theirs.parameters())
    assert (count.trainable, count.total) == (trainable, total)
    # by hand: per layer rank * (in + out); q 32->32, v 32->16, down 48->32, in 2 layers
    assert count.trainable == 2 * 4 * ((32 + 32) + (32 + 16) + (48 + 32))


def test_scaling_is_alpha_over_rank():
    """The update is (alpha / rank) B A x: a wrong scale (alpha, alpha * rank, 1) fails here."""
    torch.manual_seed(0)
    layer = lora.LoRALinear(nn.Linear(6, 5, bias=False), rank=2, alpha=7)
    randomise_b(nn.ModuleDict({"x": layer}))
    x = torch.randn(4, 6)
    by_hand = x @ layer.base.weight.T + (7 / 2) * x @ layer.lora_A.weight.T @ layer.lora_B.weight.T
    assert torch.allclose(layer(x), by_hand, atol=1e-6)
    assert layer.scaling == 3.5


def test_merge_and_unmerge():
    model = tiny_llama(tie=False)
    targets = TARGETS + ["head"]
    lora.apply_lora(model, targets, rank=4, alpha=8)
    randomise_b(model)
    base_weights = {n: l.base.weight.clone() for n, l in lora.lora_layers(model).items()}
    ids = torch.randint(0, 50, (2, 9), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        unmerged, _ = model(ids)
        lora.merge(model)
        merged, _ = model(ids)
        assert not torch.equal(model.blocks[0].attn.q.base.weight, base_weights["blocks.0.attn.q"])
        lora.unmerge(model)
        again, _ = model(ids)
    assert torch.allclose(merged, unmerged, atol=1e-5)
    assert torch.allclose(again, unmerged, atol=1e-5)
    for name, layer in lora.lora_layers(model).items():
        assert torch.allclose(layer.base.weight, base_weights[name], atol=1e-6), name
    with pytest.raises(RuntimeError, match="not merged"):
        model.blocks[0].attn.q.unmerge()


def test_merged_model_is_a_plain_model():
    """After merging, replacing each LoRALinear by its base layer gives the same outputs."""
    model = tiny_llama()
    lora.apply_lora(model, TARGETS, rank=2, alpha=4)
    randomise_b(model)
    ids = torch.randint(0, 50, (1, 8), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        adapted, _ = model(ids)
        lora.merge(model)
        for layer in lora.lora_layers(model).values():
            layer.merged = False          # forget the adapter is there ...
        lora.remove_adapters(model)      # ... and drop it: a plain DecoderLM with merged weights
        plain, _ = model(ids)
    assert not lora.lora_layers(model)
    assert torch.allclose(plain, adapted, atol=1e-5)


def test_freezing_and_tied_embeddings():
    model = tiny_llama(tie=True)
    lora.apply_lora(model, ["q", "head"], rank=2)
    assert model.head.base.weight is model.embed.tokens.weight         # still tied
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert len(lora.lora_layers(model)) == 3                               # q in 2 blocks and the head
    with pytest.raises(ValueError, match="tied"):
        lora.merge(model)


def test_bad_targets_raise_clear_errors():
    model = tiny_llama()
    with pytest.raises(ValueError, match="no module of the model matches the target 'attn.query'.*attn.q"):
        lora.apply_lora(model, ["attn.query"])
    with pytest.raises(TypeError, match="'attn'.*MultiHeadAttention.*not an nn.Linear"):
        lora.apply_lora(tiny_llama(), ["attn"])
    with pytest.raises(ValueError, match="non-empty"):
        lora.apply_lora(tiny_llama(), [])
    with pytest.raises(ValueError, match="rank"):
        lora.apply_lora(tiny_llama(), ["attn.q"], rank=0)
    once = lora.apply_lora(tiny_llama(), ["attn.q"])
    with pytest.raises(ValueError, match="already has LoRA"):
        lora.apply_lora(once, ["attn.v"])
    assert lora.matches("blocks.1.attn.q", "attn.q") and lora.matches("blocks.1.attn.q", "q")
    assert not lora.matches("blocks.1.attn.qq", "q") and not lora.matches("blocks.1.xattn.q", "attn.q")


def test_save_and_load_adapter(tmp_path):
    model = tiny_llama()
    lora.apply_lora(model, TARGETS, rank=4, alpha=8)
    randomise_b(model)
    size = lora.save_adapter(model, tmp_path / "a.safetensors", dtype=torch.float32)
    fresh = lora.load_adapter(tiny_llama(), tmp_path / "a.safetensors")
    ids = torch.randint(0, 50, (2, 7), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.equal(model(ids)[0], fresh(ids)[0])
    n = lora.trainable_parameters(model).trainable
    assert n * 4 <= size < n * 4 + 4096                    # the adapters only, not the model
    with pytest.raises(FileNotFoundError):
        lora.load_adapter(tiny_llama(), tmp_path / "missing.safetensors")


def test_memory_arithmetic():
    plan = lora.memory_arithmetic(total=1000, trainable=10)
    assert plan["full"] == {"weights": 4000, "gradients": 4000, "optimizer_states": 8000, "total": 16000}
    assert plan["lora"]["total"] == 4 * 1010 + 4 * 10 + 8 * 10


def test_task_splits_and_score():
    requests = lora.tool_requests()
    assert requests == lora.tool_requests()
    splits = {s: [r for r in requests if r.split == s] for s in lora.SPLITS}
    assert all(len(v) > 20 for v in splits.values())
    train_topics = {r.argument for r in splits["train"] if r.tool == "search"}
    assert not train_topics & {r.argument for r in splits["test"] if r.tool == "search"}
    calc = next(r for r in requests if r.argument == "74 * 25")
    assert lora.score_call("Action: calculator[74 * 25]", calc)["right"]
    assert lora.score_call("Action: calculator[25*74]", calc)["right"]
    assert not lora.score_call("Action: calculator[1850]", calc)["right"]        # the result, not the call
    assert not lora.score_call("Action: calculator[74 + 25]", calc)["right"]
    assert lora.score_call("Action: search[74 * 25]", calc) == {"parses": True, "tool": False, "right": False}
    assert lora.score_call("calculator[74 * 25]", calc) == {"parses": False, "tool": False, "right": False}
    search = next(r for r in requests if r.argument == "beam search")
    assert lora.score_call("Action: search[Beam  search]", search)["right"]
    assert not lora.score_call("Action: search[beam]", search)["right"]
    for r in requests:                                     # every reference call scores right
        assert lora.score_call(r.call(), r)["right"], r
    kv = next(r for r in requests if r.argument == "the KV cache")
    assert lora.score_call("Action: search[KV cache]", kv)["right"]
    assert not lora.score_call("Action: search[cache]", kv)["right"]
