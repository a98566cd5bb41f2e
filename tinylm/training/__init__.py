"""Training: one loop, four objectives, and the recipes of the long runs.

- :mod:`tinylm.training.loop`            ``train(model, objective, config)``, ``TrainConfig``, ``History``, seeds
- :mod:`tinylm.training.distributed`     data parallelism: the loop under ``torchrun``, gradients averaged by all-reduce
- :mod:`tinylm.training.batches`         random windows, parallel streams, shuffled examples, padding
- :mod:`tinylm.training.causal_lm`       predict the next token (MLP, RNN, GPT)
- :mod:`tinylm.training.masked_lm`       BERT's masked language model
- :mod:`tinylm.training.seq2seq`         an encoder-decoder writes answers (teacher forcing, exact match)
- :mod:`tinylm.training.answer_lm`       a decoder learns answers to prompts, the loss on the answer tokens only
- :mod:`tinylm.training.span_corruption` T5's pre-training objective
- :mod:`tinylm.training.classification`  fine-tune a classifier
- :mod:`tinylm.training.recipes`         the long runs, made by ``python -m tinylm train NAME``
- :mod:`tinylm.training.scaling`         scaling laws: a sweep over model size and tokens, the fitted law, a held-out prediction
- :mod:`tinylm.training.ablations`       ablations: variants trained for equal CPU-seconds at equal size (LLaMA's parts, MoE)
- :mod:`tinylm.training.emergence`       a family of small decoders learning addition, for Lab 17 (``python -m tinylm emergence``)
- :mod:`tinylm.training.speedrun`        the three-minute speedrun: rules, candidates, leaderboard (``python -m tinylm speedrun``)
"""

from .causal_lm import CausalLM
from .classification import Classification
from .loop import History, TrainConfig, make_optimizer, one_thread_deterministic, seed_everything, train
from .masked_lm import MaskedLM
from .seq2seq import Seq2Seq

__all__ = ["train", "TrainConfig", "History", "seed_everything", "one_thread_deterministic", "make_optimizer",
           "CausalLM", "MaskedLM", "Seq2Seq", "Classification"]
