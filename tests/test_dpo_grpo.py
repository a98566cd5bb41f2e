"""DPO and GRPO (tinylm.alignment.dpo, tinylm.alignment.grpo) on toy problems a tiny model learns in seconds."""

import copy
import math
from dataclasses import dataclass

import pytest
import torch

from tinylm.alignment import dpo, grpo
from tinylm.alignment.losses import grpo_advantages
from tinylm.models import build
from tinylm.training import TrainConfig

V, STOP = 12, 11


def tiny(seed: int = 0):
    torch.manual_seed(seed)
    return build("decoder", dict(vocab_size=V, d_model=32, n_heads=2, n_layers=2, max_len=32, dropout=0.0))


@dataclass(frozen=True)
class ToyPair:
    prompt: tuple
    chosen: tuple
    rejected: tuple


# prompt (1, p): answer (p+1, STOP) preferred to (p+2, STOP); lengths differ to exercise the padding
PAIRS = [ToyPair((1, p), (p + 1, STOP), (p + 2, p, STOP)) for p in range(2, 8)]
TRAIN = TrainConfig(steps=60, batch_size=6, lr=3e-3, warmup=1, min_lr_ratio=1.0, weight_decay=0.0,
                    eval_every=20, restore_best=False, progress=False)


def logprob_by_hand(model, prompt, answer):
    """ln P(answer | prompt) one token at a time from the softmax of the logits: a second way."""
    ids = list(prompt) + list(answer)
    with torch.no_grad():
        logits, _ = model(torch.tensor([ids[:-1]]))
    logp = torch.log_softmax(logits[0].double(), -1)
    return sum(logp[t - 1, ids[t]].item() for t in range(len(prompt), len(ids)))


def test_sequence_logprobs_sum_the_answer_tokens_only():
    model = tiny().eval()
    with torch.no_grad():
        chosen, rejected = dpo.pair_logprobs(model, PAIRS)
    for i, p in enumerate(PAIRS):
        assert chosen[i].item() == pytest.approx(logprob_by_hand(model, p.prompt, p.chosen), abs=1e-5)
        assert rejected[i].item() == pytest.approx(logprob_by_hand(model, p.prompt, p.rejected), abs=1e-5)


def test_dpo_starts_at_log2_and_leaves_the_reference_alone():
    sft = tiny()
    before = copy.deepcopy(sft.state_dict())
    metrics = dpo.implicit_reward_metrics(sft, PAIRS, sft, beta=0.5)
    assert metrics["loss"] == pytest.approx(math.log(2), abs=1e-6) and metrics["margin"] == 0.0
    policy, log = dpo.run_dpo(sft, PAIRS, PAIRS, dpo.DPOConfig(beta=0.5, train=TRAIN))
    assert all(torch.equal(before[k], v) for k, v in sft.state_dict().items())
    assert policy is not sft and log["pairs"] == len(PAIRS)
    assert len(log["curves"]["valid_pair_accuracy"]) == 3


def log_ratio_margin(policy, reference):
    """Mean over pairs of [log π(y_w) − log π_ref(y_w)] − [log π(y_l) − log π_ref(y_l)], unscaled by β."""
    pc, pr = dpo.frozen_pair_logprobs(policy, PAIRS)
    rc, rr = dpo.frozen_pair_logprobs(reference, PAIRS)
    return ((pc - rc) - (pr - rr)).mean().item()


def test_dpo_raises_the_chosen_answer_and_a_larger_beta_stays_closer():
    sft = tiny()
    margins = {}
    for beta in (0.1, 2.0):
        policy, log = dpo.run_dpo(sft, PAIRS, PAIRS, dpo.DPOConfig(beta=beta, train=TRAIN))
        margins[beta] = log_ratio_margin(policy, sft)
        assert log["curves"]["valid_pair_accuracy"][-1] == 1.0
        assert log["curves"]["train_loss"][-1] < log["curves"]["train_loss"][0] < math.log(2)
    assert margins[0.1] > 2.0 and margins[2.0] > 0.5
    assert margins[2.0] < 0.5 * margins[0.1]          # the same pairs fitted with a smaller move


def test_dpo_rejects_bad_input():
    with pytest.raises(ValueError, match="beta"):
        dpo.DPOConfig(beta=0.0)
    with pytest.raises(ValueError, match="no training pairs"):
        dpo.DPO([], tiny())
    with pytest.raises(ValueError, match=".prompt"):
        dpo.DPO([((1,), (2,), (3,))], tiny())


# --------------------------------------------------------------------------- GRPO

PROMPTS = [(1, p) for p in range(2, 10)]
TARGET = 5


def first_token_is_target(i, answer):
    return float(len(answer) > 0 and answer[0] == TARGET)


def toy_config(**kw):
    base = dict(iterations=25, prompts=4, group_size=8, inner_steps=2, lr=3e-3, beta=0.0, max_new_tokens=3,
                eval_every=5, seed=0)
    return grpo.GRPOConfig(**{**base, **kw})


def mean_first_token_probability(model):
    with torch.no_grad():
        logits, _ = model(torch.tensor(PROMPTS))
    return torch.softmax(logits[:, -1], -1)[:, TARGET].mean().item()


@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_grpo_raises_a_verifiable_reward(beta):
    policy, reference = tiny(), tiny()
    start = mean_first_token_probability(policy)
    log = grpo.grpo(policy, reference, PROMPTS, first_token_is_target, toy_config(beta=beta), stop=STOP,
                    evaluate=mean_first_token_probability)
    assert start < 0.2 and log["eval"][0] == pytest.approx(start, abs=1e-4)
    assert log["eval"][-1] > 0.85 and sum(log["reward"][-5:]) / 5 > 0.8
    assert log["kl"][0] == pytest.approx(0.0, abs=1e-5) and log["kl"][-1] > 0.5    # it moved away
    assert mean_first_token_probability(reference) == pytest.approx(start)        # the reference did not


def test_the_kl_term_holds_the_policy_back():
    kls = {}
    for beta in (0.0, 1.0):
        log = grpo.grpo(tiny(), tiny(), PROMPTS, first_token_is_target, toy_config(beta=beta), stop=STOP)
        kls[beta] = sum(log["kl"][-5:]) / 5
    assert kls[1.0] < 0.7 * kls[0.0]


@pytest.mark.parametrize("beta", [0.0, 0.5])
def test_groups_with_equal_rewards_move_nothing(beta):
    assert torch.equal(grpo_advantages(torch.tensor([1.0, 1, 1, 0, 0, 0]), 3), torch.zeros(6))
    policy = tiny()
    before = copy.deepcopy(policy.state_dict())
    log = grpo.grpo(policy, tiny(), PROMPTS, lambda i, a: 1.0, toy_config(iterations=3, beta=beta), stop=STOP)
    assert log["informative"] == [0.0, 0.0, 0.0]
    # zero advantages, and the k3 term's gradient is zero where the policy equals the reference
    assert all(torch.equal(before[k], v) for k, v in policy.state_dict().items())


def test_finished_answers_keep_their_stop_token():
    from tinylm.alignment.sft import sample

    model = tiny()
    prompts = [list(p) for p in PROMPTS]
    kept = sample(model, prompts, 3, 1.0, torch.Generator().manual_seed(0), STOP, keep_stop=True)
    plain = sample(model, prompts, 3, 1.0, torch.Generator().manual_seed(0), STOP)
    assert [k == (p + [STOP] if len(p) < 3 else p) for k, p in zip(kept, plain)] == [True] * len(prompts)


def test_grpo_rejects_bad_input():
    with pytest.raises(ValueError, match="group_size"):
        grpo.GRPOConfig(group_size=1)
    with pytest.raises(ValueError, match="beta"):
        grpo.GRPOConfig(beta=-0.1)
    with pytest.raises(ValueError, match="no prompts"):
        grpo.grpo(tiny(), tiny(), [], first_token_is_target, toy_config())
    model = tiny()
    with pytest.raises(ValueError, match="copy of the reference"):
        grpo.grpo(model, model, PROMPTS, first_token_is_target, toy_config())
