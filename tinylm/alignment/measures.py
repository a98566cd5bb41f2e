"""What alignment costs: how far a tuned model moved from its reference, and what it forgot.

- :func:`kl_to_reference`: KL(π ‖ π_ref) on held-out requests, estimated from answers the tuned
  model samples: the mean over answers of Σ_t [log π(y_t | …) − log π_ref(y_t | …)], in nats.
  RLHF keeps this small on purpose (the "KL leash"); it is the x-axis of a reward-against-KL plot.
- :func:`shakespeare_bpc`: bits per character on the ladder's test text.  Fine-tuning on
  conversations moves the weights away from plain text; the rise in bpc from the base model is
  the **alignment tax** (对齐税) paid in language modelling.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..data.instructions import ChatTemplate, Example
from ..inference.scoring import token_logprobs
from ..models.base import evaluating
from ..training.answer_lm import answer_mask
from .sft import MAX_ANSWER_TOKENS, sample

KL_SAMPLES = 4
"""Answers drawn per held-out request to estimate a KL."""


def response_logprobs(model, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]],
                      pad_id: int = 0, batch_size: int = 256) -> torch.Tensor:
    """ln P(response | prompt) summed over the response's tokens, one per row, without gradients."""
    out = []
    with evaluating(model), torch.no_grad():
        for a in range(0, len(prompts), batch_size):
            ids, mask = answer_mask(list(zip(prompts[a:a + batch_size], responses[a:a + batch_size])), pad_id)
            out.append(token_logprobs(model, ids, mask).sum(1))
    return torch.cat(out)


def kl_to_reference(model, reference, template: ChatTemplate, held_out: Sequence[Example],
                    samples: int = KL_SAMPLES, seed: int = 0) -> float:
    """KL(model ‖ reference) in nats per answer, estimated on ``samples`` sampled answers (with
    their ``<|end|>``) to each held-out request (see the module docstring)."""
    generator = torch.Generator().manual_seed(seed)
    prompts = [template.prompt(e.request()) for e in held_out for _ in range(samples)]
    answers = sample(model, prompts, MAX_ANSWER_TOKENS, 1.0, generator, stop=template.end_id, keep_stop=True)
    lp = response_logprobs(model, prompts, answers, template.pad_id)
    lp_ref = response_logprobs(reference, prompts, answers, template.pad_id)
    return float((lp - lp_ref).mean())


def shakespeare_bpc(model, tokenizer, chars: int | None = None) -> float:
    """Bits per character on the Shakespeare test split (its first ``chars`` characters, or all),
    read in windows of the model's ``max_len`` tokens."""
    from ..data import shakespeare
    from ..evaluation.metrics import bits_per_char
    from ..inference.scoring import score

    text = shakespeare().test[:chars]
    ids = np.asarray(tokenizer.encode(text), dtype=np.int64)
    return bits_per_char(score(model, ids, context=model.max_len))
