"""The reward model and PPO (tinylm.alignment.reward, tinylm.alignment.ppo) on a tiny random model."""

import pytest
import torch

from tinylm.alignment.losses import gae
from tinylm.alignment.ppo import PolicyWithValue, PPOConfig, batch_of, per_token_rewards, run_ppo
from tinylm.alignment.reward import (Preferences, RewardConfig, RewardModel, load_reward_model, pair_accuracy,
                                     save_reward_model, train_reward_model, verbose_labeller)
from tinylm.data.instructions import ChatTemplate, Example, chat_tokenizer, examples
from tinylm.inference.scoring import token_logprobs
from tinylm.models import build
from tinylm.training.loop import TrainConfig


@pytest.fixture(scope="module")
def template():
    return ChatTemplate(chat_tokenizer())


def tiny(vocab, seed=0):
    torch.manual_seed(seed)
    return build("decoder", dict(vocab_size=vocab, d_model=32, n_heads=2, n_layers=2, max_len=64, norm="rms",
                                 positions="rotary", mlp="swiglu", dropout=0.0)).eval()


def test_reward_model_reads_the_last_real_token_whatever_the_padding(template):
    rm = RewardModel.from_policy(tiny(len(template.tokenizer)))
    torch.nn.init.normal_(rm.head.weight)
    prompt = template.prompt("What is 2+3?")
    short, long = template.response("5"), template.response("five hundred")
    alone = rm.score([prompt], [short])
    together = rm.score([prompt, prompt], [short, long])
    assert torch.allclose(alone[0], together[0], atol=1e-5)
    # the score is the head applied to the features at <|end|>, computed without padding
    hidden, _ = rm.trunk.features(torch.tensor([prompt + short]))
    assert torch.allclose(alone[0], rm.head(hidden[0, -1])[0], atol=1e-5)
    # reading the padding instead would give a different number
    ids = torch.tensor([prompt + short + [template.pad_id] * 5])
    assert not torch.allclose(rm(ids, torch.tensor([ids.shape[1]])), alone, atol=1e-4)
    with pytest.raises(ValueError):
        rm(ids, torch.tensor([0]))


def test_reward_model_learns_separable_preferences_and_round_trips(template, tmp_path):
    """Chosen: the right answer; rejected: the answer with 'zz' in front. A reward model trained
    on 160 such pairs ranks held-out pairs right; a fresh one (head at zero) gets none right (ties)."""
    model = tiny(len(template.tokenizer))
    pairs = [(template.prompt(e.request()), template.response(e.answer()), template.response("zz" + e.answer()))
             for e in examples("train")[:200]]
    fresh = RewardModel.from_policy(model)
    assert pair_accuracy(fresh, pairs[160:]) == 0.0
    config = RewardConfig(train=TrainConfig(steps=40, batch_size=16, lr=3e-3, warmup=5, eval_every=20, progress=False))
    rm, log = train_reward_model(model, pairs[:160], pairs[160:], config)
    assert log["pair_accuracy"] >= 0.95
    assert log["history"]["valid"]["bt_loss"][-1] < 0.3
    # the SFT model itself is untouched
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), tiny(len(template.tokenizer)).state_dict().values()))
    save_reward_model(tmp_path / "rm", rm, template.tokenizer, {"note": "test"})
    again, _, _ = load_reward_model(tmp_path / "rm")
    prompts, answers = [p for p, _, _ in pairs[:5]], [c for _, c, _ in pairs[:5]]
    assert torch.allclose(rm.score(prompts, answers), again.score(prompts, answers), atol=1e-6)


def test_preferences_objective_rejects_a_plain_language_model(template):
    with pytest.raises(ValueError, match="RewardModel"):
        Preferences([([1, 2], [3], [4])]).start(tiny(len(template.tokenizer)), TrainConfig())


def test_verbose_labeller_prefers_length_as_often_as_told():
    import numpy as np

    e = Example("add", (2, 3), "en")
    rng = np.random.default_rng(0)
    honest_only = verbose_labeller(0.0)
    always = verbose_labeller(1.0)
    assert honest_only(e, "5", "55555", rng) == 0 and honest_only(e, "4", "5", rng) == 1
    assert always(e, "5", "55555", rng) == 1 and always(e, "4", "5", rng) == 1   # equal lengths: honest
    half = verbose_labeller(0.5)
    picks = [half(e, "5", "55555", rng) for _ in range(2000)]
    assert abs(np.mean(picks) - 0.5) < 0.05


def test_value_head_ignores_right_padding(template):
    policy = PolicyWithValue(tiny(len(template.tokenizer)))
    torch.nn.init.normal_(policy.value_head.weight)
    prompts = [template.prompt("Reverse the word cat."), template.prompt("What is 12+30?")]
    responses = [template.response("tac"), template.response("42 and more")]
    ids, mask = batch_of(prompts, responses, template.pad_id)
    logp, values = policy(ids, mask)
    alone_ids, alone_mask = batch_of(prompts[:1], responses[:1], template.pad_id)
    logp1, values1 = policy(alone_ids, alone_mask)
    n = alone_ids.shape[1]
    assert torch.allclose(values[0, :n], values1[0], atol=1e-5) and torch.allclose(logp[0, :n], logp1[0], atol=1e-5)
    assert (values[0, n:] == 0).all() and (logp[0, n:] == 0).all()
    # log-probabilities agree with tinylm.token_logprobs; values are zero outside the responses
    assert torch.allclose(logp, token_logprobs(policy.lm, ids, mask), atol=1e-5)
    assert (values[~mask] == 0).all() and (values[mask] != 0).all()


def test_per_token_rewards_put_the_score_at_the_last_response_token():
    mask = torch.tensor([[0, 1, 1, 1, 0], [0, 0, 1, 0, 0]], dtype=torch.bool)
    kl = torch.arange(10, dtype=torch.float32).reshape(2, 5)
    rewards = per_token_rewards(torch.tensor([2.0, -1.0]), kl, mask, beta=0.5)
    expected = torch.zeros(2, 5)
    for b in range(2):
        cols = mask[b].nonzero()[:, 0].tolist()
        for t in cols:
            expected[b, t] = -0.5 * kl[b, t]
        expected[b, cols[-1]] += [2.0, -1.0][b]
    assert torch.allclose(rewards, expected)
    # with gamma = lambda = 1 and zero values, the advantage at a token is the reward still to come
    adv, _ = gae(rewards, torch.zeros(2, 5), mask, gamma=1.0, lam=1.0)
    assert abs(float(adv[0, 1]) - (2.0 - 0.5 * (1 + 2 + 3))) < 1e-5


def test_sampled_responses_keep_their_end(template):
    """RL keeps the stop token the policy chose; a response without it was cut off at the limit."""
    from tinylm.alignment.sft import sample

    model = tiny(len(template.tokenizer))
    prompts = [template.prompt("What is 1+2?"), template.prompt("Reverse the word night.")] * 8
    kept = sample(model, prompts, 3, 1.0, torch.Generator().manual_seed(0), stop=template.end_id, keep_stop=True)
    plain = sample(model, prompts, 3, 1.0, torch.Generator().manual_seed(0), stop=template.end_id)
    for k, p in zip(kept, plain):
        assert k == (p + [template.end_id] if len(p) < 3 else p)


def test_ppo_raises_a_toy_reward_and_moves_away_from_the_reference(template):
    """Reward: the share of a response's tokens that are digits (about 8% for a random model).
    A few PPO iterations raise it, and the KL to the reference grows from 0."""
    tokenizer = template.tokenizer
    model = tiny(len(tokenizer))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    digits = set(tokenizer.encode("0123456789"))

    def share_of_digits(prompts, responses):
        return [sum(t in digits for t in r) / len(r) for r in responses]

    config = PPOConfig(iterations=10, batch_size=32, minibatch_size=16, max_new_tokens=8, lr=3e-3, eval_every=0,
                       kl_prompts_per_task=3)
    policy, log = run_ppo(model, share_of_digits, config, template=template, train_examples=examples("train")[:200],
                          valid_examples=[])
    assert log["kl"][0] == 0.0                               # the first rollout is the reference's own
    assert sum(log["score"][-3:]) / 3 > sum(log["score"][:3]) / 3 + 0.05
    assert sum(log["kl"][-3:]) / 3 > 0.1 and log["final_kl"] > 0.1
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())   # the SFT model is untouched
    assert type(policy) is type(model)


def test_ppo_config_rejects_bad_values():
    with pytest.raises(ValueError):
        PPOConfig(minibatch_size=100, batch_size=10)
    with pytest.raises(ValueError):
        PPOConfig(beta=-1)
