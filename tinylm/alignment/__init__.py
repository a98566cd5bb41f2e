"""Alignment: from a base model that continues text to an assistant that answers.

- :mod:`~tinylm.alignment.losses`  the losses, each a few lines (Bradley-Terry, PPO, DPO, GRPO)
- :mod:`~tinylm.alignment.sft`     supervised fine-tuning on chat-formatted answers, and how
  often a model answers held-out requests right
- :mod:`~tinylm.alignment.preferences`  preference pairs from the SFT model's samples, labelled by
  a program (the honest labeller prefers a right answer)
- :mod:`~tinylm.alignment.reward`  a reward model: the SFT model's trunk and a scalar head, fitted
  to preference pairs (Bradley-Terry); a labeller with a taste for length
- :mod:`~tinylm.alignment.ppo`     RLHF with PPO: rollouts, the KL-penalised reward, a value head,
  advantages, the clipped update
- :mod:`~tinylm.alignment.dpo`     direct preference optimisation: the policy trained on the pairs,
  no reward model, a frozen reference
- :mod:`~tinylm.alignment.grpo`    GRPO with a verifiable reward: groups of sampled answers, each
  group its own baseline
- :mod:`~tinylm.alignment.measures`  what alignment costs: the KL to the reference, bits per
  character on Shakespeare (the alignment tax)
- :mod:`~tinylm.alignment.pipeline`  every run in order from one command, ``python -m tinylm align``
"""
