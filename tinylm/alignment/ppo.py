"""Reinforcement learning from human feedback (人类反馈强化学习, RLHF) with PPO and a KL leash.

InstructGPT's third step (Ouyang et al., 2022, after Ziegler et al., 2019 and Stiennon et al.,
2020): the SFT model writes answers, the reward model scores them, and the model is pushed
towards answers that score higher, while a penalty keeps it near where it started.  One
**iteration** of :func:`run_ppo`:

1. **rollout**: the policy answers a batch of training requests, sampling at temperature 1;
2. **reward**: each answer gets the reward model's score at its last token; every answer token
   *t* also gets −β·KL_t, with KL_t = log π(a_t|s_t) − log π_ref(a_t|s_t) (the "k1" estimate,
   :func:`~tinylm.alignment.losses.kl_per_token`) against the frozen SFT model, the
   **reference**.  Summed over the answer this is score − β·KL(π ‖ π_ref) for the answer: the
   KL penalty (KL 惩罚) is the leash that stops the policy from wandering to text the reward
   model was never trained on;
3. **advantages**: a value head estimates, at each token, the reward still to come;
   :func:`~tinylm.alignment.losses.gae` turns rewards and values into advantages (how much
   better a token did than expected), whitened over the batch;
4. **update**: a few epochs of minibatch steps on PPO's clipped objective
   (:func:`~tinylm.alignment.losses.ppo_clipped_loss`) plus the value head's loss
   (:func:`~tinylm.alignment.losses.value_loss`).

The value head is a linear layer on the policy's own last hidden states (:class:`PolicyWithValue`),
as in TRL's classic ``AutoModelForCausalLMWithValueHead``: one forward pass gives both the
next-token logits and the values, half the compute of a separate value model (InstructGPT's
choice), which matters on one CPU core.  The price is that the value loss also moves the shared
trunk; its coefficient ``vf_coef`` keeps that small.

The reward is any function ``reward_fn(prompts, responses) -> scores`` of id lists (a
:meth:`RewardModel.score <tinylm.alignment.reward.RewardModel.score>`, or a rule in a test).
A response the policy ended itself ends with ``<|end|>``; one cut at ``max_new_tokens`` does not.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..data.instructions import ChatTemplate, Example, chat_tokenizer, examples
from ..inference.scoring import token_logprobs
from ..models.base import evaluating
from ..training.answer_lm import answer_mask
from .losses import gae, kl_per_token, ppo_clipped_loss, value_loss, whiten
from .measures import kl_to_reference
from .sft import accuracy, sample

RewardFn = Callable[[Sequence[Sequence[int]], Sequence[Sequence[int]]], "torch.Tensor | Sequence[float]"]


class PolicyWithValue(nn.Module):
    """A causal LM (the policy) and a value head on its final hidden states.

    ``forward(ids)`` returns ``(logprobs, values)``, both (B, T) in the convention of
    :func:`tinylm.token_logprobs`: column *t* is about token ``ids[:, t]``, its ln-probability
    given ``ids[:, :t]`` and the value of the state before it was chosen (the value read at
    position t − 1); column 0 is zero."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm
        self.value_head = nn.Linear(lm.config.d_model, 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None):
        hidden, _ = self.lm.features(ids[:, :-1])
        logp = torch.log_softmax(self.lm.head(hidden).float(), -1).gather(-1, ids[:, 1:, None])[..., 0]
        values = self.value_head(hidden)[..., 0].float()
        zero = torch.zeros_like(logp[:, :1])
        logp, values = torch.cat([zero, logp], 1), torch.cat([zero, values], 1)
        if mask is not None:
            logp, values = logp * mask, values * mask
        return logp, values


@dataclass(frozen=True)
class PPOConfig:
    """RLHF with PPO: sizes and coefficients (the defaults are TRL's where TRL has one)."""

    iterations: int = 40          # rollout + update rounds
    batch_size: int = 64          # responses per rollout
    minibatch_size: int = 16      # responses per gradient step
    ppo_epochs: int = 4           # passes over each rollout
    max_new_tokens: int = 12      # the longest response (a right answer has at most 6 characters)
    temperature: float = 1.0
    beta: float = 0.05            # the KL coefficient β (TRL's kl_coef 0.05)
    lr: float = 3e-5
    clip: float = 0.2             # PPO's ε (TRL's cliprange)
    vf_clip: float = 0.2          # the value loss's clip (TRL's cliprange_value)
    vf_coef: float = 0.1          # the value loss's weight (TRL's vf_coef)
    gamma: float = 1.0
    lam: float = 0.95
    grad_clip: float = 1.0
    missing_end_penalty: float | None = None   # added to the score of a response cut off without <|end|>
    eval_every: int = 10          # held-out accuracy every this many iterations (0: never)
    valid_per_task: int = 25
    kl_prompts_per_task: int = 25  # held-out prompts per task (and samples each) for the final KL (0: none)
    kl_samples: int = 4
    seed: int = 0

    def __post_init__(self):
        if self.iterations < 1 or self.batch_size < 1 or self.ppo_epochs < 1 or self.max_new_tokens < 1:
            raise ValueError("iterations, batch_size, ppo_epochs and max_new_tokens must be positive")
        if not 1 <= self.minibatch_size <= self.batch_size:
            raise ValueError(f"minibatch_size must be between 1 and batch_size ({self.batch_size})")
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")


@dataclass
class Rollout:
    """A batch of responses and everything PPO needs about them, (B, T) tensors over prompt +
    response, ``mask`` True at the response's tokens."""

    prompts: list[list[int]]
    responses: list[list[int]]
    ids: torch.Tensor
    mask: torch.Tensor
    scores: torch.Tensor          # (B,) the reward function's
    logprobs: torch.Tensor        # the policy's when sampling (the "old" ones)
    ref_logprobs: torch.Tensor
    values: torch.Tensor
    kl: torch.Tensor              # k1 per token
    rewards: torch.Tensor         # −β·KL per token, plus the score at the last token
    advantages: torch.Tensor
    returns: torch.Tensor


def batch_of(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad_id: int):
    """``(ids, mask)``: each prompt then its response, right-padded; ``mask`` at the responses
    (SFT's :func:`~tinylm.training.answer_lm.answer_mask`)."""
    return answer_mask(list(zip(prompts, responses)), pad_id)


def per_token_rewards(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, beta: float) -> torch.Tensor:
    """−β·KL_t at every response token, and the response's score added at its last token."""
    mask = mask.to(kl.dtype)
    rewards = -beta * kl * mask
    last = mask.shape[1] - 1 - torch.flip(mask, [1]).argmax(1)     # the last masked column of each row
    rewards[torch.arange(len(scores)), last] += scores
    return rewards


def _scores(reward_fn: RewardFn, prompts, responses) -> torch.Tensor:
    out = torch.as_tensor(reward_fn(prompts, responses), dtype=torch.float32).reshape(-1)
    if len(out) != len(responses):
        raise ValueError(f"reward_fn gave {len(out)} scores for {len(responses)} responses")
    return out


def rollout(policy: PolicyWithValue, reference, reward_fn: RewardFn, prompts: list[list[int]], template: ChatTemplate,
            config: PPOConfig, generator: torch.Generator) -> Rollout:
    """Sample responses to ``prompts``, score them, and compute the advantages (no gradients)."""
    responses = sample(policy.lm, prompts, config.max_new_tokens, config.temperature, generator, stop=template.end_id,
                       keep_stop=True)
    keep = [i for i, r in enumerate(responses) if r]      # an empty response has nothing to learn from
    prompts, responses = [prompts[i] for i in keep], [responses[i] for i in keep]
    ids, mask = batch_of(prompts, responses, template.pad_id)
    scores = _scores(reward_fn, prompts, responses)
    if config.missing_end_penalty is not None:
        cut = torch.tensor([r[-1] != template.end_id for r in responses])
        scores = scores + config.missing_end_penalty * cut
    with torch.no_grad(), evaluating(policy), evaluating(reference):
        logprobs, values = policy(ids, mask)
        ref_logprobs = token_logprobs(reference, ids, mask)
    kl = kl_per_token(logprobs, ref_logprobs) * mask
    rewards = per_token_rewards(scores, kl, mask, config.beta)
    advantages, returns = gae(rewards, values, mask, config.gamma, config.lam)
    advantages = whiten(advantages, mask) * mask
    return Rollout(prompts, responses, ids, mask, scores, logprobs, ref_logprobs, values, kl, rewards,
                   advantages, returns)


def ppo_update(policy: PolicyWithValue, optimizer: torch.optim.Optimizer, batch: Rollout, config: PPOConfig,
               generator: torch.Generator) -> dict[str, float]:
    """``ppo_epochs`` passes of minibatch steps over one rollout; mean losses and clip fraction."""
    stats = {"policy_loss": [], "value_loss": [], "clipfrac": []}
    n = len(batch.responses)
    policy.train()
    for _ in range(config.ppo_epochs):
        order = torch.randperm(n, generator=generator)
        for a in range(0, n, config.minibatch_size):
            rows = order[a:a + config.minibatch_size]
            mask = batch.mask[rows]
            width = int(mask.any(0).nonzero().max()) + 1          # drop columns that are padding in every row
            ids, mask = batch.ids[rows, :width], mask[:, :width]
            logprobs, values = policy(ids, mask)
            pg_loss, clipfrac = ppo_clipped_loss(logprobs, batch.logprobs[rows, :width], batch.advantages[rows, :width],
                                                 mask, config.clip)
            vf_loss = value_loss(values, batch.values[rows, :width], batch.returns[rows, :width], mask, config.vf_clip)
            loss = pg_loss + config.vf_coef * vf_loss
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(policy.parameters(), config.grad_clip)
            optimizer.step()
            stats["policy_loss"].append(pg_loss.item())
            stats["value_loss"].append(vf_loss.item())
            stats["clipfrac"].append(clipfrac.item())
    policy.eval()
    return {k: float(np.mean(v)) for k, v in stats.items()}


def run_ppo(sft_model, reward_fn: RewardFn, config: PPOConfig = PPOConfig(), template: ChatTemplate | None = None,
            train_examples: Sequence[Example] | None = None, valid_examples: Sequence[Example] | None = None):
    """``(policy, log)``: a copy of ``sft_model`` tuned by PPO to maximise ``reward_fn`` − β·KL.

    Training requests come from ``train_examples`` (default: every training request), drawn at
    random each iteration; held-out accuracy (:func:`~tinylm.alignment.sft.accuracy`, greedy)
    is measured on ``valid_examples`` (default ``examples("valid", config.valid_per_task)``)
    before training and every ``eval_every`` iterations.  The log's curves, one value per
    iteration: ``score`` (mean reward-function score), ``kl`` (mean KL to the reference per
    response, summed over its tokens), ``length`` (mean response tokens, ``<|end|>`` included),
    ``cut`` (share cut off without ``<|end|>``), ``reward`` (score − β·KL); ``accuracy`` at
    ``accuracy_at`` iterations; and ``final_kl``, :func:`~tinylm.alignment.measures.kl_to_reference`
    on held-out requests (``kl_prompts_per_task`` per task, ``kl_samples`` answers each).
    The returned policy is a plain language model (the value head is dropped)."""
    started = time.process_time()
    template = template or ChatTemplate(chat_tokenizer())
    train_examples = list(train_examples) if train_examples is not None else examples("train")
    valid_examples = (list(valid_examples) if valid_examples is not None
                      else examples("valid", config.valid_per_task))
    torch.manual_seed(config.seed)
    reference = copy.deepcopy(sft_model).eval()
    for p in reference.parameters():
        p.requires_grad_(False)
    policy = PolicyWithValue(copy.deepcopy(sft_model))
    optimizer = torch.optim.Adam(policy.parameters(), lr=config.lr, eps=1e-5)
    generator = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    log = {k: [] for k in ("score", "kl", "length", "cut", "reward", "policy_loss", "value_loss", "clipfrac")}
    log.update(accuracy_at=[], accuracy=[], examples=[])

    def evaluate(iteration):
        if config.eval_every and valid_examples:
            log["accuracy_at"].append(iteration)
            log["accuracy"].append(round(accuracy(policy.lm, template, valid_examples)["all"], 4))

    evaluate(0)
    for iteration in range(1, config.iterations + 1):
        chosen = rng.choice(len(train_examples), size=config.batch_size, replace=False)
        prompts = [template.prompt(train_examples[i].request()) for i in chosen]
        batch = rollout(policy, reference, reward_fn, prompts, template, config, generator)
        stats = ppo_update(policy, optimizer, batch, config, generator)
        kl = batch.kl.sum(1)
        log["score"].append(round(float(batch.scores.mean()), 4))
        log["kl"].append(round(float(kl.mean()), 4))
        log["length"].append(round(float(batch.mask.sum(1).float().mean()), 3))
        log["cut"].append(round(float(np.mean([r[-1] != template.end_id for r in batch.responses])), 4))
        log["reward"].append(round(float((batch.scores - config.beta * kl).mean()), 4))
        for k, v in stats.items():
            log[k].append(round(v, 4))
        if config.eval_every and (iteration % config.eval_every == 0 or iteration == config.iterations) \
                and (not log["accuracy_at"] or log["accuracy_at"][-1] != iteration):
            evaluate(iteration)
    lm = policy.lm.eval()
    if config.kl_prompts_per_task:
        log["final_kl"] = round(kl_to_reference(lm, reference, template, examples("valid", config.kl_prompts_per_task),
                                                config.kl_samples, config.seed), 4)
    if valid_examples:
        specials = len(template.tokenizer.special_tokens)
        shown = valid_examples[:8]
        answers = sample(lm, [template.prompt(e.request()) for e in shown], config.max_new_tokens, 0.0,
                         stop=template.end_id)
        log["examples"] = [{"request": e.request(), "answer": template.tokenizer.decode([t for t in a if t >= specials])}
                           for e, a in zip(shown, answers)]
    log["cpu_seconds"] = round(time.process_time() - started, 1)
    return lm, log
