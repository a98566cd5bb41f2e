"""The sparse mixture of experts (tinylm.models.moe): routing, combining, load balancing, shared
experts, and an MoE decoder trained, cached, saved and loaded like any other model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tinylm
from tinylm.models.moe import (MixtureOfExperts, active_parameters, expert_load, load_balancing_loss, top_k_routing,
                               utilisation)
from tinylm.models.transformer import DecoderLM, FeedForward, TransformerConfig
from tinylm.tokenizers import CharTokenizer
from tinylm.training import CausalLM, TrainConfig

V = 29


def config(**overrides):
    return TransformerConfig(**{**dict(vocab_size=V, d_model=16, n_heads=2, n_layers=2, max_len=32, d_ff=8,
                                       mlp="swiglu", bias=False, norm="rms", positions="rotary",
                                       moe_experts=6, moe_top_k=2, moe_shared=1), **overrides})


def layer(seed=0, **overrides):
    torch.manual_seed(seed)
    moe = MixtureOfExperts(config(**overrides)).double()
    for p in moe.parameters():                 # larger weights than the 0.02 init: routing that varies
        torch.nn.init.normal_(p, 0.0, 0.5)
    return moe


def tokens(n=40, d=16, seed=1):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ----------------------------------------------------------------------------- routing

def test_routing_picks_the_k_most_probable_experts_and_gates_sum_to_one():
    probs = torch.softmax(torch.randn(50, 7, generator=torch.Generator().manual_seed(0)), -1)
    chosen, gates = top_k_routing(probs, 3)
    order = np.argsort(-probs.numpy(), axis=1, kind="stable")[:, :3]      # a sort, not topk
    assert np.array_equal(chosen.numpy(), order)
    assert torch.allclose(gates.sum(-1), torch.ones(50))
    assert torch.allclose(gates, probs.gather(1, chosen) / probs.gather(1, chosen).sum(-1, keepdim=True))
    raw_chosen, raw = top_k_routing(probs, 3, renormalise=False)
    assert torch.equal(raw_chosen, chosen) and torch.equal(raw, probs.gather(1, chosen))
    assert (raw.sum(-1) < 1).all()


def test_the_layer_routes_with_its_router():
    moe, x = layer(), tokens()
    probs, chosen, gates = moe.route(x)
    assert torch.allclose(probs, torch.softmax(x @ moe.router.weight.T, -1))
    assert chosen.shape == gates.shape == (len(x), 2)
    assert torch.allclose(gates.sum(-1), torch.ones(len(x), dtype=gates.dtype))
    assert len(set(chosen.flatten().tolist())) > 2, "the test's routing should use several experts"


# ----------------------------------------------------------------------------- combining

@pytest.mark.parametrize("k, shared, renormalise", [(2, 1, True), (1, 0, False), (3, 2, True)])
def test_the_output_equals_a_naive_loop_over_each_tokens_chosen_experts(k, shared, renormalise):
    moe, x = layer(moe_top_k=k, moe_shared=shared, moe_renormalise=renormalise), tokens()
    probs = torch.softmax(x @ moe.router.weight.T, -1)
    expected = torch.zeros_like(x)
    for t in range(len(x)):
        top = sorted(range(moe.n_experts), key=lambda e: -probs[t, e].item())[:k]
        weights = probs[t, top] / (probs[t, top].sum() if renormalise else 1.0)
        for e, w in zip(top, weights):
            expected[t] += w * moe.experts[e](x[t:t + 1])[0]
        if shared:
            expected[t] += moe.shared(x[t:t + 1])[0]
    assert torch.allclose(moe(x), expected, atol=1e-12)
    batched = x.reshape(4, 10, -1)                       # (B, L, d) in, same shape out
    assert torch.allclose(moe(batched), expected.reshape(4, 10, -1), atol=1e-12)


def test_a_shared_expert_is_always_applied():
    moe, x = layer(moe_shared=2), tokens()
    assert moe.shared.up.out_features == 2 * 8        # two shared experts of width d_ff = one MLP twice as wide
    with_shared = moe(x)
    shared = moe.shared
    moe.shared = None
    routed = moe(x)
    moe.shared = shared
    assert torch.allclose(with_shared - routed, shared(x), atol=1e-12)
    assert (shared(x).abs().sum(-1) > 0).all(), "every token gets the shared expert's output"
    for expert in moe.experts:                         # routed experts silenced: the shared one is left
        torch.nn.init.zeros_(expert.down.weight)
    assert torch.allclose(moe(x), shared(x), atol=1e-12)


# ----------------------------------------------------------------------------- load balancing

def test_balancing_loss_is_one_at_perfect_balance_and_grows_as_routing_collapses():
    E, T = 4, 8
    uniform = torch.full((T, E), 1 / E)
    balanced = torch.arange(T).remainder(E)[:, None]        # tokens spread evenly over the experts
    assert expert_load(balanced, E).tolist() == [0.25] * 4
    assert load_balancing_loss(uniform, balanced).item() == pytest.approx(1.0)
    losses = []
    for skew in (0.0, 1.0, 2.0, 4.0, 8.0):                  # the router prefers expert 0 more and more
        probs = torch.softmax(torch.tensor([skew, 0.0, 0.0, 0.0]).repeat(T, 1)
                              + 0.01 * torch.randn(T, E, generator=torch.Generator().manual_seed(0)), -1)
        chosen = torch.where(torch.arange(T) < T * probs[0, 0], 0, balanced[:, 0])[:, None]
        losses.append(load_balancing_loss(probs, chosen).item())
    assert losses[0] == pytest.approx(1.0, abs=0.02)
    assert all(a < b for a, b in zip(losses, losses[1:])), losses
    collapsed = torch.zeros(T, E)
    collapsed[:, 0] = 1.0
    assert load_balancing_loss(collapsed, torch.zeros(T, 1, dtype=torch.long)).item() == pytest.approx(E)


def test_balancing_loss_formula_on_uneven_routing():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.5, 0.1, 0.4], [0.2, 0.2, 0.6]])
    chosen, _ = top_k_routing(probs, 2)                     # choices: {0,1} {1,2} {0,2} {2,0|1}
    f = np.bincount(chosen.flatten().numpy(), minlength=3) / 8
    P = probs.numpy().mean(0)
    assert expert_load(chosen, 3).numpy() == pytest.approx(f)
    assert load_balancing_loss(probs, chosen).item() == pytest.approx(3 * float((f * P).sum()))


def test_the_layer_keeps_its_load_and_loss():
    moe, x = layer(), tokens()
    moe(x)
    assert moe.load.shape == (6,) and moe.load.sum().item() == pytest.approx(1.0)
    probs, chosen, _ = moe.route(x)
    assert torch.allclose(moe.aux_loss, load_balancing_loss(probs, chosen))
    assert moe.aux_loss.requires_grad
    with torch.no_grad():
        moe(x)
    assert not moe.aux_loss.requires_grad


# ----------------------------------------------------------------------------- gradients

def test_gradients_reach_the_router_from_both_losses():
    moe, x = layer(), tokens()
    moe(x).pow(2).sum().backward()
    assert moe.router.weight.grad.abs().sum() > 0, "the language-model loss trains the router through the gates"
    moe.zero_grad()
    moe(x)
    moe.aux_loss.backward()
    assert moe.router.weight.grad.abs().sum() > 0, "the balancing loss trains the router"
    assert all(e.up.weight.grad is None for e in moe.experts), "the balancing loss does not touch the experts"


def test_top1_with_renormalised_gates_leaves_the_router_no_gradient_from_the_output():
    """Why Switch Transformer does not renormalise its one gate: it would always be 1."""
    moe, x = layer(moe_top_k=1, moe_shared=0), tokens()
    moe(x).pow(2).sum().backward()
    assert moe.router.weight.grad is None or moe.router.weight.grad.abs().max() < 1e-12   # p / p = 1: rounding only
    moe = layer(moe_top_k=1, moe_shared=0, moe_renormalise=False)
    moe(x).pow(2).sum().backward()
    assert moe.router.weight.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- in a model

def test_a_dense_model_is_unchanged_and_has_no_aux_loss():
    dense = config(moe_experts=0, moe_shared=0)
    model = DecoderLM(dense)
    model(torch.zeros(1, 5, dtype=torch.long))
    assert model.aux_loss is None and all(type(b.mlp) is FeedForward for b in model.blocks)
    assert utilisation(model) == [] and active_parameters(model) == model.num_parameters()


def test_moe_decoder_sets_aux_loss_and_the_objective_adds_it():
    torch.manual_seed(0)
    model = DecoderLM(config(moe_aux_coef=0.5))
    assert all(isinstance(b.mlp, MixtureOfExperts) for b in model.blocks)
    ids = torch.randint(0, V, (3, 12), generator=torch.Generator().manual_seed(2))
    logits, _ = model(ids)
    layers = [b.mlp.aux_loss for b in model.blocks]
    assert torch.allclose(model.aux_loss, 0.5 * (layers[0] + layers[1]))
    assert [len(u) for u in utilisation(model)] == [6, 6]

    text = torch.randint(0, V, (500,), generator=torch.Generator().manual_seed(3)).numpy()
    objective = CausalLM(text, None)
    objective.start(model, TrainConfig(batch_size=2, context=8, seed=0))
    loss, value = objective.loss(model)
    plain = loss - model.aux_loss
    assert value == pytest.approx(plain.item() / np.log(2), rel=1e-5), "the reported loss is the LM's alone"
    assert model.aux_loss.item() > 0.5 * 0.9


def test_an_moe_decoder_trains_and_balancing_evens_the_load():
    text = ("the quick brown fox jumps over the lazy dog. " * 40)
    tok = CharTokenizer(sorted(set(text)))
    ids = np.asarray(tok.encode(text))
    spread = {}
    for coef in (0.0, 0.1):
        torch.manual_seed(0)
        model = DecoderLM(config(vocab_size=len(tok), moe_aux_coef=coef, moe_top_k=1, moe_shared=0,
                                 moe_renormalise=False))
        history = tinylm.train(model, CausalLM(ids, ids[:200]), TrainConfig(steps=60, batch_size=8, context=16,
                                                                             eval_every=60, progress=False, lr=1e-2))
        assert history.valid["bpc"][-1] < np.log2(len(tok))
        with torch.no_grad():
            model(torch.as_tensor(ids[None, :300]))
        spread[coef] = max(max(u) for u in utilisation(model))
    assert spread[0.1] < spread[0.0], spread


def test_the_kv_cache_gives_the_same_logits_with_experts():
    torch.manual_seed(0)
    model = DecoderLM(config()).eval()
    ids = torch.randint(0, V, (1, 10), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        whole, _ = model(ids)
        state = model.new_state()
        first, state = model(ids[:, :6], state)
        rest, _ = model(ids[:, 6:], state)
    assert torch.allclose(torch.cat([first, rest], 1), whole, atol=1e-5)


def test_active_parameters_count_k_routed_experts_and_the_shared_ones():
    moe = DecoderLM(config(moe_experts=8, moe_top_k=2, moe_shared=1, d_ff=8))
    dense = DecoderLM(config(moe_experts=0, moe_shared=0, d_ff=3 * 8))   # one MLP as wide as the active experts
    router = 2 * 16 * 8                                                    # two layers of d_model x E
    assert active_parameters(moe) == dense.num_parameters() + router
    expert = 3 * 16 * 8
    assert moe.num_parameters() == dense.num_parameters() + router + 2 * (8 - 2) * expert


def test_an_moe_model_saves_and_loads(tmp_path):
    torch.manual_seed(0)
    tok = CharTokenizer([chr(ord("a") + i) for i in range(V)])
    model = DecoderLM(config(moe_aux_coef=0.02))
    folder = tinylm.save(tmp_path / "moe", model, tok, {"name": "moe"})
    back, tok2, log = tinylm.load(folder)
    assert type(back) is DecoderLM and back.config == model.config and back.config.moe_experts == 6
    ours, theirs = model.state_dict(), back.state_dict()
    assert set(ours) == set(theirs) and any(".experts.5." in name for name in ours)
    assert all(torch.equal(ours[n], theirs[n]) for n in ours)
    ids = torch.randint(0, V, (2, 9), generator=torch.Generator().manual_seed(5))
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(ids)[0], back(ids)[0])
    assert back.head.weight is back.embed.tokens.weight


def test_bad_moe_configs_are_refused():
    with pytest.raises(ValueError, match="moe_top_k"):
        config(moe_experts=4, moe_top_k=5)
    with pytest.raises(ValueError, match="moe_top_k"):
        config(moe_experts=4, moe_top_k=0)
    with pytest.raises(ValueError, match="negative"):
        config(moe_experts=-1)
    with pytest.raises(ValueError, match="moe_experts >= 1"):
        MixtureOfExperts(dataclasses.replace(config(), moe_experts=0))
