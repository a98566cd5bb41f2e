"""GRPO with a verifiable reward (组相对策略优化, 可验证奖励): reinforcement learning where a program checks the answer.

When an answer can be checked (a sum, a numeral, a reversed word, a maths problem's final
number), the reward needs no model of human taste: it is 1 if the answer is right and 0 if not
(DeepSeekMath, Shao et al., 2024; DeepSeek-R1, DeepSeek-AI, 2025).  GRPO (Group Relative Policy
Optimization) also drops PPO's value head: it asks each request **G times** and uses the group
as its own baseline.  One iteration:

1. draw a batch of training requests; the policy answers each one G times at temperature 1
   (:func:`~tinylm.alignment.sft.sample`);
2. the checker gives each answer its reward, 1 or 0;
3. each answer's **advantage** is its reward minus its group's mean, divided by the group's
   standard deviation (:func:`~tinylm.alignment.losses.grpo_advantages`): a right answer among
   mostly wrong ones gets a large push up, a wrong one among mostly right ones a large push down,
   and a group that is all right or all wrong teaches nothing (all its advantages are 0);
4. every token of an answer shares the answer's advantage; a few gradient steps on PPO's clipped
   objective (:func:`~tinylm.alignment.losses.ppo_clipped_loss`), with the log-probabilities of
   the policy that sampled the answers as "old", plus β times the KL to the reference estimated
   token by token with the k3 estimator (:func:`~tinylm.alignment.losses.kl_per_token`); β = 0
   is GRPO without the KL term, as many later recipes run it.

- :class:`GRPOConfig`  the sizes, learning rate, clip and β of a run
- :func:`grpo`         the loop on any prompts and any reward function (a test uses a toy reward)
- :func:`run_grpo`     GRPO on the training requests with the checker's reward: ``(policy, log)``
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..inference.scoring import token_logprobs
from ..models.base import Config
from ..training.answer_lm import answer_mask
from ..training.loop import seed_everything
from .losses import grpo_advantages, kl_per_token, masked_mean, ppo_clipped_loss
from .sft import MAX_ANSWER_TOKENS, sample

Reward = Callable[[int, list[int]], float]
"""``reward(i, answer_ids)``: the reward of an answer (its ids, ``<|end|>`` included if it ended)
to prompt number ``i`` of the pool."""


@dataclass(frozen=True)
class GRPOConfig(Config):
    """One GRPO run.  Each iteration samples ``prompts × group_size`` answers and takes
    ``inner_steps`` gradient steps on them (DeepSeekMath's μ)."""

    iterations: int = 100
    prompts: int = 16             # requests per iteration
    group_size: int = 8           # G: answers sampled per request
    inner_steps: int = 2          # gradient steps per batch of answers
    lr: float = 1e-4              # AdamW, constant, no weight decay
    clip: float = 0.2             # PPO's ε
    beta: float = 0.04            # weight of the KL term (DeepSeekMath's value); 0: without it
    temperature: float = 1.0
    max_new_tokens: int = MAX_ANSWER_TOKENS
    grad_clip: float | None = 1.0
    scale_advantages: bool = True  # divide by the group's standard deviation
    eval_every: int = 20          # held-out accuracy every this many iterations (and at the end)
    valid_per_task: int = 25
    train_per_task: int | None = 800    # requests per task in the pool (None: all of them, mostly ``add``)
    seed: int = 0

    def __post_init__(self):
        if min(self.iterations, self.prompts, self.inner_steps, self.max_new_tokens, self.eval_every) < 1:
            raise ValueError("iterations, prompts, inner_steps, max_new_tokens and eval_every must be positive")
        if self.group_size < 2:
            raise ValueError(f"group_size must be at least 2 (a group is its own baseline), got {self.group_size}")
        if self.beta < 0 or self.clip <= 0 or self.lr <= 0 or self.temperature <= 0:
            raise ValueError("beta must be >= 0 and clip, lr and temperature positive")


def grpo(policy, reference, prompts: Sequence[Sequence[int]], reward: Reward, config: GRPOConfig = GRPOConfig(),
         stop: int | None = None, pad_id: int = 0, evaluate: Callable[[object], float] | None = None) -> dict:
    """Train ``policy`` in place by GRPO on requests drawn from ``prompts`` (token ids), scored by
    ``reward``; ``reference`` is frozen (its log-probabilities give the KL).  Returns the log:
    per iteration the mean reward of the sampled answers, the KL to the reference (mean over the
    answers of the summed per-token log-ratio, nats per answer), the share of clipped tokens and
    the share of groups with a learning signal; ``evaluate(policy)`` (e.g. held-out accuracy)
    every ``eval_every`` iterations and at the end; the training CPU-seconds (evaluations excluded)."""
    if not prompts:
        raise ValueError("no prompts to train on")
    if policy is reference:
        raise ValueError("the policy must be a copy of the reference, not the reference itself")
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=config.lr, weight_decay=0.0)
    policy.eval()        # no dropout: the "old" and the new log-probabilities must be of the same function
    reference.eval()
    G = config.group_size
    log = {"iteration": [], "reward": [], "kl": [], "clipfrac": [], "informative": [],
           "eval_iteration": [], "eval": []}
    cpu = 0.0
    if evaluate is not None:
        log["eval_iteration"].append(0)
        log["eval"].append(round(float(evaluate(policy)), 4))
    for it in range(1, config.iterations + 1):
        start = time.process_time()
        chosen = rng.choice(len(prompts), size=min(config.prompts, len(prompts)), replace=False)
        batch_prompts = [list(prompts[i]) for i in chosen for _ in range(G)]
        answers = sample(policy, batch_prompts, config.max_new_tokens, config.temperature, generator, stop,
                         keep_stop=True)
        rewards = torch.tensor([float(reward(int(i), a)) for i, a in zip(np.repeat(chosen, G), answers)])
        advantages = grpo_advantages(rewards, G, scale=config.scale_advantages)
        ids, mask = answer_mask(list(zip(batch_prompts, answers)), pad_id)
        with torch.no_grad():
            ref = token_logprobs(reference, ids, mask)
        clipped = []
        for step in range(config.inner_steps):
            new = token_logprobs(policy, ids, mask)
            if step == 0:       # the weights that sampled the answers: the "old" policy
                old = new.detach()
                token_advantages = advantages[:, None].expand_as(old)
            loss, clipfrac = ppo_clipped_loss(new, old, token_advantages, mask, config.clip)
            if config.beta > 0:
                loss = loss + config.beta * masked_mean(kl_per_token(new, ref, "k3"), mask)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(policy.parameters(), config.grad_clip)
            optimizer.step()
            clipped.append(clipfrac.item())
        cpu += time.process_time() - start
        log["iteration"].append(it)
        log["reward"].append(round(rewards.mean().item(), 4))
        log["kl"].append(round((old - ref).sum(1).mean().item(), 4))
        log["clipfrac"].append(round(float(np.mean(clipped)), 4))
        log["informative"].append(round((rewards.view(-1, G).std(1) > 0).float().mean().item(), 4))
        if evaluate is not None and (it % config.eval_every == 0 or it == config.iterations):
            log["eval_iteration"].append(it)
            log["eval"].append(round(float(evaluate(policy)), 4))
    log["train_cpu_seconds"] = round(cpu, 1)
    return log


def run_grpo(sft_model, config: GRPOConfig = GRPOConfig(), template=None):
    """``(policy, log)``: a copy of ``sft_model`` tuned by GRPO on the training requests, the reward
    1 for a right answer (``Example.correct``) and 0 otherwise; ``sft_model`` is the frozen
    reference (left unchanged).  ``log["eval"]`` is the greedy held-out accuracy on
    ``examples("valid", per_task=config.valid_per_task)`` (:func:`~tinylm.alignment.sft.accuracy`)."""
    from ..data.instructions import ChatTemplate, chat_tokenizer, examples
    from .sft import accuracy

    template = template or ChatTemplate(chat_tokenizer())
    train_examples = examples("train", per_task=config.train_per_task)
    valid = examples("valid", per_task=config.valid_per_task)
    specials = len(template.tokenizer.special_tokens)

    def reward(i: int, answer: list[int]) -> float:
        text = template.tokenizer.decode([t for t in answer if t >= specials])
        return 1.0 if train_examples[i].correct(text) else 0.0

    seed_everything(config.seed)
    policy = copy.deepcopy(sft_model)
    reference = copy.deepcopy(sft_model)
    for p in reference.parameters():
        p.requires_grad_(False)
    prompts = [template.prompt(e.request()) for e in train_examples]
    log = grpo(policy, reference, prompts, reward, config, stop=template.end_id, pad_id=template.pad_id,
               evaluate=lambda model: accuracy(model, template, valid)["all"])
    log["valid_accuracy"] = log.pop("eval")
    return policy, {"config": config.to_dict(), **log}
