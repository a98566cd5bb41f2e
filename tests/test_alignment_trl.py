"""Our alignment losses against TRL's (Hugging Face's library for RLHF, pinned in requirements.txt).

TRL's trainers compute their losses inside the training step, from a model's outputs, rather
than in stand-alone functions.  So each test builds a real trainer around a tiny Llama made from
a config (random weights, nothing downloaded), hands TRL's own method a small fixed batch, and
compares the result with what :mod:`tinylm.alignment.losses` computes from log-probabilities that
this test reads from the same model's logits by itself:

- DPO: ``DPOTrainer._compute_loss`` (default ``loss_type=["sigmoid"]``, ``beta=0.1``) against
  :func:`~tinylm.alignment.losses.dpo_loss`, pair by pair, with the implicit rewards TRL logs;
- PPO's clipped objective: TRL 1.x has no PPO trainer any more; its clipped token-level
  surrogate lives in ``GRPOTrainer._compute_loss`` (``per_token_loss = -min(ratio·A,
  clip(ratio)·A)``, default ``loss_type="dapo"``: a mean over all response tokens of the batch),
  against :func:`~tinylm.alignment.losses.ppo_clipped_loss` and its clip fraction (TRL's logged
  ``clip_ratio/region_mean``); with ``beta > 0`` the k3 KL term too (:func:`kl_per_token`);
- GRPO's advantages: ``GRPOTrainer._generate_and_score_completions`` (rewards minus the group
  mean, divided by the group's sample standard deviation plus 1e-4; ``scale_rewards="group"``,
  or ``"none"``) against :func:`~tinylm.alignment.losses.grpo_advantages`.

Each comparison also checks that a deliberately wrong formula does *not* match, so that the test
could fail.
"""

import os
import random
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tinylm.alignment.losses import dpo_loss, grpo_advantages, kl_per_token, masked_mean, ppo_clipped_loss

pytest.importorskip("trl", reason="TRL is not installed: pip install -r requirements.txt")

VOCAB = ["<pad>", "<eos>", *"abcdefghijklmn"]
CLOSE = dict(rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def trl_parts(tmp_path_factory):
    """TRL's trainers, a tiny random Llama and a character tokenizer, built offline; the global
    random state (which a trainer's ``set_seed`` resets) is restored afterwards."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    states = torch.get_rng_state(), np.random.get_state(), random.getstate()
    import datasets
    import transformers
    import trl
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    from trl import DPOConfig, DPOTrainer, GRPOConfig, GRPOTrainer

    assert trl.__version__ == "1.16.0", "the pinned TRL changed: re-read its loss code before trusting this test"
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    chars = Tokenizer(models.WordLevel({s: i for i, s in enumerate(VOCAB)}, unk_token="<pad>"))
    chars.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    chars.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=chars, pad_token="<pad>", eos_token="<eos>")
    config = LlamaConfig(vocab_size=len(VOCAB), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                         pad_token_id=0, bos_token_id=1, eos_token_id=1)
    out = str(tmp_path_factory.mktemp("trl"))
    common = dict(output_dir=out, report_to=[], use_cpu=True, bf16=False, seed=0)   # float32 throughout

    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(f"{out}/tiny-llama")    # a local folder TRL loads its models from

    rewards = {}

    def fixed_reward(prompts, completions, **kwargs):
        """The rewards the test put in ``rewards["next"]``, in the order of the completions."""
        return list(rewards["next"])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pairs = datasets.Dataset.from_dict({"prompt": ["abc", "de", "fgh", "i"], "chosen": ["jk", "lmn", "a", "bcde"],
                                            "rejected": ["nml", "k", "edcb", "fg"]})
        dpo = DPOTrainer(model=f"{out}/tiny-llama", args=DPOConfig(precompute_ref_log_probs=True, **common),
                         train_dataset=pairs, processing_class=tokenizer)
        prompts = datasets.Dataset.from_dict({"prompt": ["ab", "cd", "ef"]})
        grpo = {beta: GRPOTrainer(model=f"{out}/tiny-llama", reward_funcs=fixed_reward, train_dataset=prompts,
                                  processing_class=tokenizer,
                                  args=GRPOConfig(num_generations=4, per_device_train_batch_size=4,
                                                  max_completion_length=3, beta=beta, **common))
                for beta in (0.0, 0.04)}
    torch.set_rng_state(states[0]), np.random.set_state(states[1]), random.setstate(states[2])
    return {"dpo": dpo, "grpo": grpo, "rewards": rewards}


def response_logprobs(model, input_ids, attention_mask):
    """ln P(token t | tokens before it) for t = 1 .. T-1, from the model's logits: (B, T-1)."""
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits.float()
    return torch.log_softmax(logits[:, :-1], -1).gather(-1, input_ids[:, 1:, None])[..., 0]


def mode_of(trainer) -> str:
    return "train" if trainer.model.training else "eval"


# --------------------------------------------------------------------------- DPO

def test_dpo_loss_equals_trls_sigmoid_loss(trl_parts):
    trainer = trl_parts["dpo"]
    assert trainer.loss_types == ["sigmoid"] and trainer.f_divergence_type == "reverse_kl"
    assert trainer.beta == 0.1 and trainer.label_smoothing == 0 and not trainer.use_weighting
    rows = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    # the reference's log-probabilities: the policy's moved by these many nats (chosen, rejected),
    # so that the log-ratios are large enough for β = 0.1 to give losses far from ln 2, both ways
    offsets = torch.tensor([[-15.0, 15.0], [15.0, -15.0], [6.0, -2.5], [-3.0, 9.0]])
    losses = []
    for i, row in enumerate(rows):
        batch = trainer.data_collator([row])                     # TRL's layout: [chosen; rejected]
        policy = response_logprobs(trainer.model, batch["input_ids"], batch["attention_mask"])
        policy = (policy * batch["completion_mask"][:, 1:]).sum(1)          # per-sequence sums
        ref = policy + offsets[i]
        batch["ref_chosen_logps"], batch["ref_rejected_logps"] = ref[:1], ref[1:]
        theirs = trainer._compute_loss(trainer.model, batch, return_outputs=False)
        ours, chosen_rewards, rejected_rewards = dpo_loss(policy[:1], policy[1:], ref[:1], ref[1:])
        torch.testing.assert_close(ours.mean(), theirs.detach(), **CLOSE)
        metrics = {k: v[-1] for k, v in trainer._metrics[mode_of(trainer)].items()}
        assert metrics["rewards/chosen"] == pytest.approx(chosen_rewards.item(), rel=1e-5, abs=1e-6)
        assert metrics["rewards/rejected"] == pytest.approx(rejected_rewards.item(), rel=1e-5, abs=1e-6)
        losses.append(theirs.item())
        # a wrong DPO, without the reference model, must not match
        wrong = -F.logsigmoid(0.1 * (policy[0] - policy[1]))
        assert abs(wrong.item() - theirs.item()) > 1e-3, f"pair {i}: the test cannot tell a DPO without π_ref"
    assert min(losses) < np.log(2) - 0.3 and max(losses) > np.log(2) + 0.3, f"too easy a batch: losses {losses}"


# --------------------------------------------------------------------------- PPO's clip

def grpo_batch(trainer, seed: int, beta: float = 0.0):
    """A fixed batch for ``GRPOTrainer._compute_loss``: 6 prompts of 3 tokens, responses of up to
    5 tokens (masks ending early), per-token advantages, and old log-probabilities that differ
    from the policy's by enough that many ratios leave [0.8, 1.2]."""
    g = torch.Generator().manual_seed(seed)
    prompt_ids = torch.randint(2, len(VOCAB), (6, 3), generator=g)
    completion_ids = torch.randint(2, len(VOCAB), (6, 5), generator=g)
    lengths = torch.tensor([5, 1, 3, 4, 2, 5])
    completion_mask = (torch.arange(5)[None] < lengths[:, None]).long()
    ids = torch.cat([prompt_ids, completion_ids], 1)
    logprobs = response_logprobs(trainer.model, ids, torch.ones_like(ids))[:, -5:]
    batch = {"prompt_ids": prompt_ids, "prompt_mask": torch.ones_like(prompt_ids), "completion_ids": completion_ids,
             "completion_mask": completion_mask, "advantages": torch.randn(6, 5, generator=g),
             "old_per_token_logps": logprobs + 0.4 * torch.randn(6, 5, generator=g),
             "num_items_in_batch": completion_mask.sum()}
    if beta:
        batch["ref_per_token_logps"] = logprobs + 0.5 * torch.randn(6, 5, generator=g)
    return batch, logprobs


def test_ppo_clipped_loss_equals_trls_clipped_token_loss(trl_parts):
    trainer = trl_parts["grpo"][0.0]
    assert trainer.loss_type == "dapo" and trainer.epsilon_low == trainer.epsilon_high == 0.2
    assert trainer.importance_sampling_level == "token" and trainer.args.delta is None
    for seed in range(3):
        batch, logprobs = grpo_batch(trainer, seed)
        theirs = trainer._compute_loss(trainer.model, batch).detach()
        mask = batch["completion_mask"]
        ours, clipfrac = ppo_clipped_loss(logprobs, batch["old_per_token_logps"], batch["advantages"], mask)
        torch.testing.assert_close(ours, theirs, **CLOSE)
        theirs_clipfrac = trainer._metrics[mode_of(trainer)]["clip_ratio/region_mean"][-1]
        assert clipfrac.item() == pytest.approx(theirs_clipfrac, abs=1e-7)
        assert 0.1 < clipfrac.item() < 0.9, "the batch should clip some tokens and not others"
        # wrong variants must not match: no clip, and a mean of per-sequence means (TRL's "grpo")
        ratio, advantages = torch.exp(logprobs - batch["old_per_token_logps"]), batch["advantages"]
        unclipped = masked_mean(-advantages * ratio, mask)
        per_token = torch.maximum(-advantages * ratio, -advantages * ratio.clamp(0.8, 1.2))
        per_sequence = masked_mean(per_token, mask, dim=1).mean()
        assert abs(unclipped - theirs) > 1e-3 and abs(per_sequence - theirs) > 1e-3


def test_ppo_loss_with_the_k3_kl_term_equals_trls(trl_parts):
    """GRPO's loss with β > 0: the clipped surrogate plus β times Schulman's k3 KL estimate, as in
    the GRPO paper (``use_bias_correction_kl=False``); TRL's default since DeepSeek-V3.2 weights
    each token's k3 by its ratio π/π_old, which this test checks too."""
    trainer = trl_parts["grpo"][0.04]
    assert trainer.beta == 0.04
    batch, logprobs = grpo_batch(trainer, seed=5, beta=trainer.beta)
    mask, ref = batch["completion_mask"], batch["ref_per_token_logps"]
    clipped, _ = ppo_clipped_loss(logprobs, batch["old_per_token_logps"], batch["advantages"], mask)
    k3 = kl_per_token(logprobs, ref, "k3")
    ratio = torch.exp(logprobs - batch["old_per_token_logps"])
    losses = {}
    try:
        for corrected, kl in ((False, k3), (True, ratio * k3)):
            trainer.args.use_bias_correction_kl = corrected
            theirs = losses[corrected] = trainer._compute_loss(trainer.model, batch).detach()
            torch.testing.assert_close(clipped + trainer.beta * masked_mean(kl, mask), theirs, **CLOSE)
            assert trainer._metrics[mode_of(trainer)]["kl"][-1] == pytest.approx(masked_mean(kl, mask).item(), rel=1e-5)
    finally:
        trainer.args.use_bias_correction_kl = True
    k1 = masked_mean(kl_per_token(logprobs, ref, "k1"), mask)
    assert abs(clipped + trainer.beta * k1 - losses[False]) > 1e-4, "the test cannot tell k1 from k3"
    assert abs(losses[True] - losses[False]) > 1e-4, "the test cannot tell the two KL terms apart"


# --------------------------------------------------------------------------- GRPO's advantages

@pytest.mark.parametrize("scale", [True, False])
def test_grpo_advantages_equal_trls(trl_parts, scale):
    trainer = trl_parts["grpo"][0.0]
    assert trainer.num_generations == 4 and trainer.multi_objective_aggregation == "sum_then_normalize"
    g = torch.Generator().manual_seed(1)
    rewards = torch.cat([torch.randn(4, generator=g),                        # a reward model's scores
                         torch.tensor([1.0, 0.0, 0.0, 1.0]),                    # right or wrong (verifiable)
                         torch.tensor([1.0, 1.0, 1.0, 1.0])])                   # a group with nothing to learn
    trl_parts["rewards"]["next"] = rewards.tolist()
    trainer.scale_rewards = "group" if scale else "none"
    try:
        inputs = [{"prompt": p} for p in ("ab", "cd", "ef") for _ in range(4)]   # TRL's order: groups in a row
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = trainer._generate_and_score_completions(inputs)["advantages"]
    finally:
        trainer.scale_rewards = "group"
    ours = grpo_advantages(rewards, group_size=4, scale=scale)
    torch.testing.assert_close(ours, theirs.float(), **CLOSE)
    assert torch.all(ours[8:] == 0)
    if scale:   # the population standard deviation (÷n, not ÷(n-1)) must not match
        grouped = rewards.view(3, 4)
        biased = (grouped - grouped.mean(1, keepdim=True)) / (grouped.std(1, correction=0, keepdim=True) + 1e-4)
        assert (biased.reshape(-1) - theirs).abs().max() > 1e-2
