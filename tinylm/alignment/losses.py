"""The losses of alignment, each a few lines on tensors: what the lab asks the reader to write.

All work on per-sequence or per-token log-probabilities (natural logarithms) that
:func:`tinylm.token_logprobs` gives; ``mask`` marks the response tokens (the prompt and the
padding are out).  A test checks :func:`dpo_loss`, :func:`ppo_clipped_loss` and
:func:`grpo_advantages` against TRL, a well-known independent implementation, on a fixed batch.

- :func:`bradley_terry_loss`  a reward model's loss on preference pairs (奖励模型)
- :func:`kl_per_token`        how far the policy has moved from the reference, token by token
- :func:`gae`                 PPO's advantages, generalised advantage estimation
- :func:`ppo_clipped_loss`    PPO's clipped surrogate objective (近端策略优化)
- :func:`dpo_loss`            direct preference optimisation (直接偏好优化)
- :func:`grpo_advantages`     GRPO's group-normalised advantages (组相对策略优化)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim=None) -> torch.Tensor:
    """Mean of ``x`` where ``mask`` is true (over everything, or along ``dim``)."""
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """``x`` scaled to unit variance (and zero mean) over the masked entries."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    return out if shift_mean else out + mean


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """−log σ(r_chosen − r_rejected), averaged over the pairs.

    Bradley and Terry (1952): the chance that a person prefers answer *a* to *b* is
    σ(r(a) − r(b)); a reward model is fitted by maximising the likelihood of the preferences seen.
    Only differences of rewards matter, so a reward model's scale and offset are arbitrary."""
    return -F.logsigmoid(chosen - rejected).mean()


def kl_per_token(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: str = "k1") -> torch.Tensor:
    """An estimate, token by token, of KL(policy ‖ reference) from tokens the policy sampled.

    ``k1`` = log π − log π_ref (unbiased, can be negative for one token); ``k3`` =
    exp(log π_ref − log π) − (log π_ref − log π) − 1 (unbiased and never negative, Schulman's
    estimator, used by GRPO)."""
    if kind == "k1":
        return logprobs - ref_logprobs
    if kind == "k3":
        d = ref_logprobs - logprobs
        return torch.exp(d) - d - 1
    raise ValueError(f"kind is 'k1' or 'k3', got {kind!r}")


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al., 2016) over each row's masked tokens.

    δ_t = r_t + γ V(t+1) − V(t) (V after the last response token is 0);
    A_t = δ_t + γλ A_{t+1}.  Returns ``(advantages, returns)``, returns = A + V, the value head's
    target.  Rows are (batch, time); positions outside ``mask`` get 0."""
    mask = mask.to(values.dtype)
    rewards, values = rewards * mask, values * mask
    advantages = torch.zeros_like(values)
    last = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        next_value = values[:, t + 1] if t + 1 < values.shape[1] else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = (delta + gamma * lam * last) * mask[:, t]
        advantages[:, t] = last
    return advantages, (advantages + values) * mask


def ppo_clipped_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                     mask: torch.Tensor, clip: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate (Schulman et al., 2017), to minimise; and the share of tokens clipped.

    ratio = π(a|s) / π_old(a|s); loss = mean over tokens of max(−A·ratio, −A·clip(ratio, 1−ε, 1+ε)).
    The clip removes the incentive to move a token's probability more than ε from where it was
    when the response was sampled.  The mean is over all response tokens of the batch (so a long
    response weighs more than a short one), as in TRL's default (``loss_type="dapo"``); the
    clipped share counts the tokens where the clipped term is the larger."""
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - clip, 1 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clipfrac = masked_mean((clipped > unclipped).float(), mask)
    return loss, clipfrac


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip: float = 0.2) -> torch.Tensor:
    """The value head's clipped squared error, ½ max((V − R)², (clip(V) − R)²)."""
    clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    return 0.5 * masked_mean(torch.maximum((values - returns) ** 2, (clipped - returns) ** 2), mask)


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float = 0.1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO (Rafailov et al., 2023): per pair −log σ(β[(log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l))]).

    Arguments are per-sequence log-probabilities (sums over the response tokens).  Returns
    ``(losses, chosen_rewards, rejected_rewards)``, the implicit rewards β(log π − log π_ref)."""
    chosen_rewards = beta * (policy_chosen - ref_chosen)
    rejected_rewards = beta * (policy_rejected - ref_rejected)
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards)
    return losses, chosen_rewards.detach(), rejected_rewards.detach()


def grpo_advantages(rewards: torch.Tensor, group_size: int, scale: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """GRPO (Shao et al., 2024): each response's reward minus its group's mean, divided by the
    group's standard deviation plus ``eps`` (with ``scale``; the sample standard deviation, ÷(n−1),
    and eps = 1e-4, as TRL computes it).  ``rewards`` is flat, groups of ``group_size``
    responses to one prompt in a row.  A group whose responses are all equally good gives all
    zeros: there is nothing to learn from it."""
    if group_size < 2:
        raise ValueError(f"GRPO compares the responses to one prompt: group_size must be at least 2, got {group_size}")
    if rewards.dim() != 1 or rewards.numel() % group_size:
        raise ValueError(f"rewards must be flat, a multiple of group_size={group_size} long")
    grouped = rewards.view(-1, group_size)
    advantages = grouped - grouped.mean(dim=1, keepdim=True)
    if scale:
        advantages = advantages / (grouped.std(dim=1, keepdim=True) + eps)
    return advantages.reshape(-1)
