"""A reward model (奖励模型): a number for how much a labeller would like an answer.

InstructGPT's second step (Ouyang et al., 2022).  Labellers compare answers; a model learns to
give each answer a score ``r(prompt, answer)`` such that the answer people preferred scores
higher.  The link between scores and preferences is the Bradley–Terry model (Bradley and Terry,
1952): the chance that answer *a* is preferred to *b* is σ(r(a) − r(b)), so the reward model is
fitted by minimising :func:`~tinylm.alignment.losses.bradley_terry_loss` over the preference
pairs (:mod:`tinylm.alignment.preferences`).

:class:`RewardModel` is the SFT model's trunk (its Transformer blocks, weights copied, so it
starts out understanding requests and answers) with its next-token head unused and a new
**scalar head** ``nn.Linear(d_model, 1)`` that reads the last hidden state of the answer, at its
``<|end|>`` token: the one position that has seen the whole request and the whole answer.

:class:`Preferences` is the training objective for :func:`tinylm.train`; its validation metric
is ``pair_accuracy``, the share of held-out pairs whose chosen answer scores higher.
:func:`train_reward_model` does it all.

A reward model learns whatever the labeller's choices contain, flaws included.
:func:`verbose_labeller` is a labeller with a human-like flaw, a taste for longer answers; the
reward model trained on its pairs likes length, and PPO (:mod:`tinylm.alignment.ppo`) finds
and exploits that (reward hacking, 奖励黑客).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..models.base import evaluating
from ..training.batches import ShuffledExamples, pad
from ..training.loop import TrainConfig, autocast, seed_everything, train
from .losses import bradley_terry_loss


class RewardModel(nn.Module):
    """A decoder's trunk and a scalar head: ``forward(ids, lengths)`` gives one score per row.

    ``ids`` (B, T) are prompt + answer, right-padded; ``lengths`` (B,) the number of real tokens
    of each row, so that the head reads position ``lengths − 1`` (the answer's last token, its
    ``<|end|>``), never the padding."""

    def __init__(self, trunk):
        super().__init__()
        if not hasattr(trunk, "features"):
            raise TypeError(f"a reward model's trunk is a DecoderLM (with .features), not {type(trunk).__name__}")
        self.trunk = trunk
        self.head = nn.Linear(trunk.config.d_model, 1)
        nn.init.zeros_(self.head.weight)       # every answer scores 0 at the start
        nn.init.zeros_(self.head.bias)

    @classmethod
    def from_policy(cls, model) -> RewardModel:
        """A reward model whose trunk is a copy of ``model`` (the SFT model), weights and all."""
        return cls(copy.deepcopy(model))

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        ids, lengths = torch.as_tensor(ids, dtype=torch.long), torch.as_tensor(lengths, dtype=torch.long)
        if ids.dim() != 2 or lengths.shape != ids.shape[:1]:
            raise ValueError(f"ids must be (batch, time) and lengths (batch,), got {tuple(ids.shape)} and "
                             f"{tuple(lengths.shape)}")
        if bool((lengths < 1).any()) or bool((lengths > ids.shape[1]).any()):
            raise ValueError(f"every length must be between 1 and {ids.shape[1]}, got {lengths.tolist()}")
        hidden, _ = self.trunk.features(ids)
        last = hidden[torch.arange(len(ids)), lengths - 1]
        return self.head(last)[:, 0].float()

    def score(self, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]],
              batch_size: int = 256) -> torch.Tensor:
        """The score of each (prompt, response) given as id lists (no gradients): the reward PPO
        maximises.  A response is read up to its last token, ``<|end|>`` if it has one."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        out = []
        with evaluating(self), torch.no_grad():
            for a in range(0, len(prompts), batch_size):
                rows = [list(p) + list(r) for p, r in zip(prompts[a:a + batch_size], responses[a:a + batch_size])]
                ids, mask = pad(rows, 0)
                out.append(self(ids, mask.sum(1)))
        return torch.cat(out) if out else torch.empty(0)


def _triple(pair) -> tuple[list[int], list[int], list[int]]:
    """(prompt, chosen, rejected) of a :class:`~tinylm.alignment.preferences.Pair` or a 3-tuple."""
    if hasattr(pair, "chosen"):
        return list(pair.prompt), list(pair.chosen), list(pair.rejected)
    prompt, chosen, rejected = pair
    return list(prompt), list(chosen), list(rejected)


def pair_batch(pairs: Sequence, pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, lengths)`` of 2B rows: the B prompts with their chosen answers, then with their
    rejected answers, right-padded with ``pad_id``."""
    if not pairs:
        raise ValueError("no preference pairs")
    triples = [_triple(p) for p in pairs]
    rows = [p + c for p, c, _ in triples] + [p + r for p, _, r in triples]
    ids, mask = pad(rows, pad_id)
    return ids, mask.sum(1)


def pair_scores(rm: RewardModel, pairs: Sequence, pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The scores (chosen, rejected), each (B,), with gradients."""
    ids, lengths = pair_batch(pairs, pad_id)
    scores = rm(ids, lengths)
    return scores[: len(pairs)], scores[len(pairs):]


def pair_accuracy(rm: RewardModel, pairs: Sequence, pad_id: int = 0, batch_size: int = 128) -> float:
    """The share of pairs whose chosen answer the reward model scores higher (a tie counts as wrong)."""
    if not pairs:
        raise ValueError("no preference pairs")
    right = 0
    with evaluating(rm), torch.no_grad():
        for a in range(0, len(pairs), batch_size):
            chosen, rejected = pair_scores(rm, pairs[a:a + batch_size], pad_id)
            right += int((chosen > rejected).sum())
    return right / len(pairs)


class Preferences:
    """The objective of a reward model for :func:`tinylm.train`: the Bradley–Terry loss on
    ``config.batch_size`` pairs a step (shuffled anew each pass).  Validation on
    ``valid_pairs``: ``pair_accuracy`` (monitored) and ``bt_loss``."""

    unit = "nats"
    monitor = "pair_accuracy"
    higher_is_better = True

    def __init__(self, pairs: Sequence, valid_pairs: Sequence = (), pad_id: int = 0):
        if not pairs:
            raise ValueError("no training pairs")
        self.pairs, self.valid_pairs, self.pad_id = list(pairs), list(valid_pairs), pad_id

    def start(self, model, config: TrainConfig) -> None:
        if not isinstance(model, RewardModel):
            raise ValueError(f"Preferences trains a RewardModel, not a {type(model).__name__}")
        self.examples = ShuffledExamples(len(self.pairs), config.batch_size, torch.Generator().manual_seed(config.seed))
        self.precision = config.precision

    def loss(self, model) -> tuple[torch.Tensor, float]:
        batch = [self.pairs[i] for i in self.examples.next().tolist()]
        with autocast(self.precision):
            loss = bradley_terry_loss(*pair_scores(model, batch, self.pad_id))
        return loss, loss.item()

    def evaluate(self, model) -> dict[str, float]:
        if not self.valid_pairs:
            return {}
        with evaluating(model), torch.no_grad():
            chosen, rejected = pair_scores(model, self.valid_pairs, self.pad_id)
        return {"pair_accuracy": float((chosen > rejected).float().mean()),
                "bt_loss": float(bradley_terry_loss(chosen, rejected))}


@dataclass(frozen=True)
class RewardConfig:
    """How to train a reward model: the trunk starts as the SFT model, the head at zero."""

    train: TrainConfig = TrainConfig(steps=300, batch_size=32, lr=3e-4, warmup=20, min_lr_ratio=0.1,
                                     weight_decay=0.0, eval_every=50)
    pad_id: int = 0


def train_reward_model(sft_model, pairs: Sequence, valid_pairs: Sequence = (), config: RewardConfig = RewardConfig(),
                       stop_after: int | None = None):
    """``(rm, log)``: a :class:`RewardModel` from a copy of ``sft_model`` fitted to ``pairs``.

    The log holds the training history, ``pair_accuracy`` on ``valid_pairs`` at the end (the
    weights with the best validation accuracy are kept) and the training CPU-seconds."""
    seed_everything(config.train.seed)
    rm = RewardModel.from_policy(sft_model)
    objective = Preferences(pairs, valid_pairs, config.pad_id)
    history = train(rm, objective, dataclasses.replace(config.train, stop_after=stop_after))
    log = {"history": history.to_dict(), "train_cpu_seconds": round(history.train_cpu_seconds, 1),
           "pairs": len(objective.pairs), "valid_pairs": len(objective.valid_pairs)}
    if valid_pairs:
        log["pair_accuracy"] = round(pair_accuracy(rm, valid_pairs, config.pad_id), 4)
    return rm, log


# --------------------------------------------------------------------------- saving

HEAD_FILE = "reward_head.safetensors"


def save_reward_model(directory: str | Path, rm: RewardModel, tokenizer, log: dict | None = None) -> Path:
    """The trunk as an ordinary checkpoint (:func:`tinylm.save`) and the scalar head beside it."""
    from safetensors.torch import save_file

    from ..checkpoint import save

    directory = save(directory, rm.trunk, tokenizer, log)
    save_file({k: v.contiguous() for k, v in rm.head.state_dict().items()}, str(Path(directory) / HEAD_FILE))
    return Path(directory)


def load_reward_model(directory: str | Path):
    """``(rm, tokenizer, log)`` from a folder :func:`save_reward_model` wrote."""
    from safetensors.torch import load_file

    from ..checkpoint import load

    head = Path(directory) / HEAD_FILE
    if not head.is_file():
        raise FileNotFoundError(f"{head} is missing: {directory} is not a reward model's checkpoint")
    trunk, tokenizer, log = load(Path(directory))
    rm = RewardModel(trunk)
    rm.head.load_state_dict(load_file(str(head)))
    rm.eval()
    return rm, tokenizer, log


# --------------------------------------------------------------------------- a flawed labeller

def verbose_labeller(share: float = 0.5, honest=None):
    """A labeller with a taste for length: with probability ``share`` it prefers the longer of two
    answers of different lengths, whether right or wrong; otherwise it judges as ``honest`` does
    (by default :func:`~tinylm.alignment.preferences.prefers_correct`).

    People rating answers are known to favour longer ones (Singhal et al., 2024 found much of
    RLHF's gain in length); a reward model fitted to such choices scores length, and a policy
    optimised against it writes long."""
    if not 0 <= share <= 1:
        raise ValueError(f"share must be in [0, 1], got {share}")
    if honest is None:
        from .preferences import prefers_correct as honest

    def labeller(example, a: str, b: str, rng: np.random.Generator):
        if len(a) != len(b) and rng.random() < share:
            return 0 if len(a) > len(b) else 1
        return honest(example, a, b, rng)

    labeller.__name__ = f"verbose_labeller(share={share})"
    return labeller
