"""A sparse mixture of experts (混合专家, MoE): many feed-forward networks, each token routed to a few.

A Transformer block's MLP (:class:`~tinylm.models.transformer.FeedForward`) holds about two thirds
of the block's parameters, and every token goes through all of them.  A **mixture of experts**
(Shazeer et al., 2017) replaces it with ``E`` smaller MLPs, the **experts** (专家), and a
**router** (路由器) that sends each token to only ``k`` of them.  The model then *has* the
parameters of ``E`` experts but each token *uses* (its "active" parameters) only those of ``k``:
more capacity for the same computation per token.  The pieces, each a few lines here:

- **Routing** (:meth:`MixtureOfExperts.route`).  A linear layer scores every expert for a token,
  a softmax turns the scores into probabilities ``p``, and the ``k`` most probable experts are
  chosen (top-k).  Their **gates** (门控权重) are their probabilities, *renormalised* to sum to 1
  over the chosen ``k`` (as in GShard's top-2 and Mixtral), or, with ``moe_renormalise=False``,
  left as they are (as in Switch Transformer's top-1, where renormalising would make the one gate
  always 1 and leave the router without a gradient from the language-modelling loss).
- **Dispatch and combine** (:meth:`MixtureOfExperts.forward`): a loop over the experts; each
  gathers the tokens routed to it (``index_select``), runs them through its MLP, scales each
  output by that token's gate and adds it back in place (``index_add_``).  An expert computes
  only its own tokens: no dense "every token through every expert, then mask" shortcut, which
  would cost ``E / k`` times the computation.  Nothing is dropped: every expert takes all the
  tokens routed to it (no capacity limit, unlike Switch Transformer's, which bounds the work per
  expert on parallel hardware).
- **Load balancing** (负载均衡, :func:`load_balancing_loss`).  Left alone, a router tends to
  collapse onto a few experts (they are trained more, so they get better, so they are chosen
  more) and the rest are wasted.  Switch Transformer (Fedus et al., 2022), after GShard, adds
  ``E * sum_i f_i * P_i``, where ``f_i`` is the fraction of routing choices that went to expert
  ``i`` and ``P_i`` the mean router probability of expert ``i`` over the tokens.  It is 1 when
  the routing is uniform and ``E`` when every token goes to one expert; the model adds it to
  the training loss times a small coefficient (``moe_aux_coef``, 0.01 in Switch Transformer).
- **Shared experts** (共享专家, DeepSeekMoE, Dai et al., 2024): ``moe_shared`` experts that every
  token goes through, beside the ``k`` routed ones, so that what all tokens need is learnt once
  and the routed experts can specialise.  ``s`` shared experts of width ``d_ff`` are one MLP of
  width ``s * d_ff`` (their outputs add up), and are built that way.

Each expert is a :class:`~tinylm.models.transformer.FeedForward` of the model's kind (``mlp``:
GELU or SwiGLU) and width ``d_ff``.  A :class:`~tinylm.models.transformer.TransformerConfig` with
``moe_experts > 0`` puts a :class:`MixtureOfExperts` in every block; a
:class:`~tinylm.models.transformer.DecoderLM` then sets ``model.aux_loss`` after each forward pass
(the coefficient times the sum of its layers' balancing losses), which the causal-LM objective
(:mod:`tinylm.training.causal_lm`) adds to the loss it differentiates.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from .transformer import FeedForward, TransformerConfig


def top_k_routing(probs: torch.Tensor, k: int, renormalise: bool = True):
    """Choose the ``k`` most probable experts for each token.

    ``probs`` is (T, E), each row a probability distribution over the experts.  Returns
    ``(chosen, gates)``, both (T, k): the experts chosen, most probable first, and the weights of
    their outputs: their probabilities, divided by their sum when ``renormalise``.
    """
    gates, chosen = probs.topk(k, dim=-1)
    if renormalise:
        gates = gates / gates.sum(dim=-1, keepdim=True)
    return chosen, gates


def expert_load(chosen: torch.Tensor, n_experts: int) -> torch.Tensor:
    """The fraction of routing choices that went to each expert: (E,), summing to 1.

    With top-k routing each token makes ``k`` choices; a token's choices are counted once each."""
    counts = F.one_hot(chosen.reshape(-1), n_experts).sum(dim=0)
    return counts.float() / chosen.numel()


def load_balancing_loss(probs: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """Switch Transformer's auxiliary loss, ``E * sum_i f_i * P_i``.

    ``f_i`` (:func:`expert_load`) counts choices and has no gradient; ``P_i``, the mean router
    probability of expert ``i``, has one, and lowering the product pushes probability away from
    the experts that get more than their share.  Equal to 1 when the load and the probabilities
    are uniform (``f_i = P_i = 1/E``); ``E`` when every token goes to one expert with certainty.
    """
    n_experts = probs.shape[-1]
    f = expert_load(chosen, n_experts)
    P = probs.mean(dim=0)
    return n_experts * (f * P).sum()


class MixtureOfExperts(nn.Module):
    """A sparse mixture-of-experts MLP: ``moe_experts`` experts, ``moe_top_k`` per token, plus
    ``moe_shared`` always-on shared experts (see the module docstring).

    After each forward pass it keeps, for inspection, ``aux_loss`` (the load-balancing loss of
    that pass, with its gradient while training) and ``load`` (the fraction of routing choices
    each expert received, without gradient).
    """

    def __init__(self, config: TransformerConfig):
        super().__init__()
        c = config
        if c.moe_experts < 1:
            raise ValueError("a mixture of experts needs moe_experts >= 1")
        self.n_experts, self.k, self.renormalise = c.moe_experts, c.moe_top_k, c.moe_renormalise
        self.router = nn.Linear(c.d_model, c.moe_experts, bias=False)
        self.experts = nn.ModuleList(FeedForward(c) for _ in range(c.moe_experts))
        self.shared = FeedForward(dataclasses.replace(c, d_ff=c.moe_shared * c.d_ff, moe_experts=0)) \
            if c.moe_shared else None
        self.aux_loss: torch.Tensor | None = None
        self.load: torch.Tensor | None = None

    def route(self, x: torch.Tensor):
        """Route tokens ``x`` (T, d_model): ``(probs, chosen, gates)``, the router's probabilities
        (T, E), and the experts chosen and their gates (T, k) (:func:`top_k_routing`)."""
        logits = self.router(x)
        probs = torch.softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)  # >= fp32
        chosen, gates = top_k_routing(probs, self.k, self.renormalise)
        return probs, chosen, gates

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        tokens = x.reshape(-1, shape[-1])                       # (T, d): every position of every row
        probs, chosen, gates = self.route(tokens)
        out = torch.zeros_like(tokens)
        for e, expert in enumerate(self.experts):
            token, slot = torch.nonzero(chosen == e, as_tuple=True)    # the tokens that chose e
            if token.numel() == 0:
                continue
            y = expert(tokens.index_select(0, token)) * gates[token, slot, None].to(tokens.dtype)
            out.index_add_(0, token, y.to(out.dtype))
        if self.shared is not None:
            out = out + self.shared(tokens)
        balance = load_balancing_loss(probs, chosen)
        self.aux_loss = balance if torch.is_grad_enabled() else balance.detach()
        self.load = expert_load(chosen, self.n_experts).detach()
        return out.reshape(shape)

    def active_parameters(self) -> int:
        """Parameters a token goes through: the router, ``k`` routed experts and the shared ones."""
        expert = sum(p.numel() for p in self.experts[0].parameters())
        shared = sum(p.numel() for p in self.shared.parameters()) if self.shared is not None else 0
        return self.router.weight.numel() + self.k * expert + shared


def active_parameters(model) -> int:
    """A model's parameters that one token goes through: all of them for a dense model; for a
    mixture of experts, all but the ``E - k`` routed experts a token does not use."""
    total = model.num_parameters()
    for module in model.modules():
        if isinstance(module, MixtureOfExperts):
            everything = sum(p.numel() for p in module.parameters())
            total -= everything - module.active_parameters()
    return total


def utilisation(model) -> list[list[float]]:
    """Each MoE layer's expert load in the model's last forward pass: one list per layer, the
    fraction of routing choices each expert received (``[]`` for a dense model)."""
    return [module.load.tolist() for module in model.modules()
            if isinstance(module, MixtureOfExperts) and module.load is not None]
