"""Direct preference optimisation (直接偏好优化, DPO): learn from preference pairs with no reward model and no sampling.

RLHF fits a reward model r to preference pairs, then tunes the policy π to maximise r while a
KL penalty β·KL(π ‖ π_ref) keeps it near the reference (the SFT model).  That problem has a
closed-form best policy, π*(y|x) ∝ π_ref(y|x)·exp(r(x, y)/β); turned around, every policy
*defines* a reward, its **implicit reward** β·[log π(y|x) − log π_ref(y|x)] (up to a term that
depends on x alone and cancels in a pair).  Put that reward into the Bradley–Terry loss of a
reward model and the policy is trained directly on the pairs (Rafailov et al., 2023)::

    loss = −log σ( β·[(log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l))] )

where y_w is the chosen answer, y_l the rejected one, and each log π is a whole answer's
log-probability, the sum of :func:`tinylm.token_logprobs` over its tokens.  The reference's
log-probabilities never change, so :class:`DPO` computes them once, before training.  β plays
the part of RLHF's KL coefficient: the loss sees β times the change of log-ratio, so with a
larger β a smaller move away from the reference already fits the pairs, and the policy stays
closer to it.

- :class:`DPO`            the objective for :func:`tinylm.train`
- :class:`DPOConfig`      β and how long to train
- :func:`run_dpo`         a copy of the SFT model tuned on the pairs: ``(policy, log)``
- :func:`beta_sweep`      DPO at several β: held-out accuracy against KL to the reference
- :func:`sequence_logprobs`  per-answer log-probabilities of (prompt, answer) pairs, with gradients
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..inference.scoring import token_logprobs
from ..models.base import Config, evaluating
from ..training.answer_lm import answer_mask
from ..training.batches import ShuffledExamples
from ..training.loop import TrainConfig, autocast, seed_everything, train
from .losses import dpo_loss


def sequence_logprobs(model, prompts: Sequence[Sequence[int]], answers: Sequence[Sequence[int]],
                      pad_id: int = 0) -> torch.Tensor:
    """ln P(answer | prompt) for each row: the sum of :func:`tinylm.token_logprobs` over the
    answer's tokens (prompt and padding masked out), with gradients."""
    ids, mask = answer_mask(list(zip(prompts, answers)), pad_id)
    return token_logprobs(model, ids, mask).sum(1)


def pair_logprobs(model, pairs: Sequence, pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(chosen, rejected)``: each pair's two answers' log-probabilities, one forward pass for both."""
    prompts = [p.prompt for p in pairs]
    both = sequence_logprobs(model, prompts + prompts, [p.chosen for p in pairs] + [p.rejected for p in pairs], pad_id)
    return both[:len(pairs)], both[len(pairs):]


def frozen_pair_logprobs(model, pairs: Sequence, pad_id: int = 0, batch_size: int = 256):
    """:func:`pair_logprobs` without gradients, in batches: what the frozen reference says."""
    chosen, rejected = [], []
    with evaluating(model), torch.no_grad():
        for a in range(0, len(pairs), batch_size):
            c, r = pair_logprobs(model, pairs[a:a + batch_size], pad_id)
            chosen.append(c)
            rejected.append(r)
    return torch.cat(chosen), torch.cat(rejected)


def _check_pairs(pairs: Sequence, what: str) -> None:
    for p in pairs:
        if not (hasattr(p, "prompt") and hasattr(p, "chosen") and hasattr(p, "rejected")):
            raise ValueError(f"{what} must have .prompt, .chosen and .rejected (token ids), got {type(p).__name__}")
        if not len(p.prompt) or not len(p.chosen) or not len(p.rejected):
            raise ValueError(f"{what}: a pair has an empty prompt or answer")


class DPO:
    """DPO on preference pairs (anything with ``.prompt``, ``.chosen``, ``.rejected`` token ids, e.g.
    :class:`~tinylm.alignment.preferences.Pair`) against a frozen ``reference`` model.

    Training loss: the mean of :func:`~tinylm.alignment.losses.dpo_loss` over a batch of pairs, in
    nats.  Validation (on ``valid_pairs``): ``loss`` (the monitored metric), ``pair_accuracy`` (the
    share of held-out pairs whose chosen answer gets the larger implicit reward) and ``margin`` (the
    mean implicit reward of the chosen answer minus that of the rejected one)."""

    unit = "nats"
    monitor = "loss"
    higher_is_better = False

    def __init__(self, pairs: Sequence, reference, valid_pairs: Sequence = (), beta: float = 0.1, pad_id: int = 0):
        if not pairs:
            raise ValueError("no training pairs")
        if beta <= 0:
            raise ValueError(f"beta must be positive, got {beta}")
        _check_pairs(pairs, "pairs")
        _check_pairs(valid_pairs, "valid_pairs")
        self.pairs, self.valid_pairs = list(pairs), list(valid_pairs)
        self.reference, self.beta, self.pad_id = reference, beta, pad_id
        self.ref = self.valid_ref = None

    def start(self, model, config: TrainConfig) -> None:
        if model is self.reference:
            raise ValueError("the policy must be a copy of the reference, not the reference itself")
        generator = torch.Generator().manual_seed(config.seed)
        self.examples = ShuffledExamples(len(self.pairs), config.batch_size, generator)
        self.precision = config.precision
        if self.ref is None:                      # the reference never changes: once, up front
            self.ref = frozen_pair_logprobs(self.reference, self.pairs, self.pad_id)
            if self.valid_pairs:
                self.valid_ref = frozen_pair_logprobs(self.reference, self.valid_pairs, self.pad_id)

    def loss(self, model) -> tuple[torch.Tensor, float]:
        rows = self.examples.next()
        with autocast(self.precision):
            chosen, rejected = pair_logprobs(model, [self.pairs[i] for i in rows.tolist()], self.pad_id)
        losses, _, _ = dpo_loss(chosen, rejected, self.ref[0][rows], self.ref[1][rows], self.beta)
        loss = losses.mean()
        return loss, loss.item()

    def evaluate(self, model) -> dict[str, float]:
        if not self.valid_pairs:
            return {}
        return implicit_reward_metrics(model, self.valid_pairs, self.valid_ref, self.beta, self.pad_id)


def implicit_reward_metrics(model, pairs: Sequence, reference_logprobs, beta: float, pad_id: int = 0) -> dict[str, float]:
    """``loss``, ``pair_accuracy`` and ``margin`` of ``model``'s implicit rewards on ``pairs``
    (``reference_logprobs`` = the reference's ``(chosen, rejected)``, or the reference model)."""
    if not isinstance(reference_logprobs, tuple):
        reference_logprobs = frozen_pair_logprobs(reference_logprobs, pairs, pad_id)
    chosen, rejected = frozen_pair_logprobs(model, pairs, pad_id)
    losses, r_chosen, r_rejected = dpo_loss(chosen, rejected, *reference_logprobs, beta)
    return {"loss": losses.mean().item(), "pair_accuracy": (r_chosen > r_rejected).float().mean().item(),
            "margin": (r_chosen - r_rejected).mean().item()}


@dataclass(frozen=True)
class DPOConfig(Config):
    """DPO's β and its training run (constant learning rate after a short warm-up, the last
    weights kept: a preference objective's validation loss is a poor guide to the best answers)."""

    beta: float = 0.1
    train: TrainConfig = TrainConfig(steps=300, batch_size=32, lr=1e-4, warmup=20, min_lr_ratio=1.0,
                                     weight_decay=0.0, grad_clip=1.0, eval_every=50, restore_best=False)

    def __post_init__(self):
        if self.beta <= 0:
            raise ValueError(f"beta must be positive, got {self.beta}")


def _round(values, digits: int = 4):
    return [round(float(v), digits) for v in values]


def run_dpo(sft_model, pairs: Sequence, valid_pairs: Sequence = (), config: DPOConfig = DPOConfig(),
            pad_id: int = 0, stop_after: int | None = None):
    """``(policy, log)``: a copy of ``sft_model`` tuned by DPO on ``pairs``, ``sft_model`` its
    frozen reference (left unchanged).  The log holds the curves per evaluation (training loss,
    held-out pair accuracy and margin, rounded), the number of pairs and the training CPU-seconds."""
    seed_everything(config.train.seed)
    policy = copy.deepcopy(sft_model)
    reference = copy.deepcopy(sft_model).eval()
    for p in reference.parameters():
        p.requires_grad_(False)
    objective = DPO(pairs, reference, valid_pairs, config.beta, pad_id)
    history = train(policy, objective, dataclasses.replace(config.train, stop_after=stop_after, progress=False))
    curves = {"step": history.step, "train_loss": _round(history.train_loss)}
    curves.update({f"valid_{k}": _round(v) for k, v in history.valid.items()})
    return policy, {"beta": config.beta, "pairs": len(objective.pairs), "valid_pairs": len(objective.valid_pairs),
                    "curves": curves, "train_cpu_seconds": round(history.train_cpu_seconds, 1)}


def beta_sweep(sft_model, template, pairs: Sequence, valid_pairs: Sequence, held_out: Sequence,
               betas: Sequence[float] = (0.03, 0.1, 0.3, 1.0), config: DPOConfig = DPOConfig(),
               samples: int = 4) -> list[dict]:
    """DPO once per β, each from ``sft_model``: a row per β with the held-out accuracy (greedy
    answers to ``held_out`` requests, :func:`~tinylm.alignment.sft.accuracy`) and the KL to the
    reference (:func:`~tinylm.alignment.measures.kl_to_reference`): the points of a
    reward-against-KL plot."""
    from .measures import kl_to_reference
    from .sft import accuracy

    rows = []
    for beta in betas:
        policy, log = run_dpo(sft_model, pairs, valid_pairs, dataclasses.replace(config, beta=beta), template.pad_id)
        rows.append({"beta": beta, "accuracy": round(accuracy(policy, template, held_out)["all"], 4),
                     "kl": round(kl_to_reference(policy, sft_model, template, held_out, samples), 4),
                     "train_cpu_seconds": log["train_cpu_seconds"]})
    return rows
