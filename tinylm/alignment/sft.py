"""Supervised fine-tuning (监督微调, SFT): teach a base model to answer in the chat template.

A base model continues text.  Asked ``<|user|>What is 23+58?<|end|><|assistant|>`` it has never
seen those role tokens and writes whatever text is likely next; asked the way its pre-training
text looked (``12+40=52`` on the lines before, then ``23+58=``) it may well answer.  SFT trains it
on conversations, request then answer, with the loss on the **answer tokens only**: the request
is given, not predicted (InstructGPT's first step, Ouyang et al., 2022).  That is exactly
:class:`~tinylm.training.answer_lm.AnswerLM` on (chat prompt, response) pairs, so :class:`SFT`
is that objective under its alignment name.

:func:`accuracy` measures what alignment is for: the share of held-out requests answered right,
per task.  :func:`base_accuracy` asks the base model the way it can be asked, few-shot in its
own raw format.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch

from ..data.instructions import (
    ChatTemplate,
    Example,
    few_shot_prompt,
    instruction_tasks,
)
from ..inference.sampling import Sampler
from ..models.base import evaluating
from ..training.answer_lm import AnswerLM

SFT = AnswerLM
"""Supervised fine-tuning's objective: (prompt ids, response ids) pairs, cross-entropy on the
response tokens only."""

MAX_ANSWER_TOKENS = 12
"""A right answer has at most 6 characters; generation stops at ``<|end|>`` or after this many."""


def sft_pairs(examples: Sequence[Example], template: ChatTemplate) -> list[tuple[list[int], list[int]]]:
    """``(prompt ids, response ids)`` for each example: the user's request and the cue to answer,
    then the right answer and ``<|end|>``."""
    return [(template.prompt(e.request()), template.response(e.answer())) for e in examples]


def sample(model, prompts: Sequence[Sequence[int]], max_new_tokens: int, temperature: float = 0.0,
           generator: torch.Generator | None = None, stop: int | None = None,
           keep_stop: bool = False) -> list[list[int]]:
    """Answers to prompts of any lengths, greedy (``temperature=0``) or drawn at ``temperature``
    with ``generator``; each stops at ``stop`` or after ``max_new_tokens``.  The stop token is
    left out, unless ``keep_stop``: reinforcement learning keeps it, since the policy chose it
    (an answer that does not end with it was cut off).

    The same as :func:`tinylm.generate` with a KV cache, written for speed where alignment needs
    it (thousands of answers in a run): prompts of one length share a batch (our decoder has no
    padding mask), and each step picks every row's token in one tensor operation."""
    groups = defaultdict(list)
    for i, prompt in enumerate(prompts):
        groups[len(prompt)].append(i)
    out: list[list[int]] = [[] for _ in prompts]
    with evaluating(model), torch.no_grad():
        for length in sorted(groups):
            rows = groups[length]
            x = torch.tensor([list(prompts[i]) for i in rows], dtype=torch.long)
            state, done = model.new_state(), torch.zeros(len(rows), dtype=torch.bool)
            tokens = []
            for _ in range(max_new_tokens):
                logits, state = model(x, state)
                logits = logits[:, -1].float()
                if temperature == 0:
                    token = logits.argmax(-1)
                else:
                    token = torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=generator)[:, 0]
                tokens.append(torch.where(done, -1, token))
                if stop is not None:
                    done = done | (token == stop)
                if bool(done.all()):
                    break
                x = token[:, None]
            table = torch.stack(tokens, 1).tolist() if tokens else [[] for _ in rows]
            for i, row in zip(rows, table):
                out[i] = [t for t in row if t != -1 and (keep_stop or t != stop)]
    return out


def generate_grouped(model, prompts: Sequence[Sequence[int]], max_new_tokens: int, stop: int | None = None):
    """Greedy answers to prompts of any lengths (:func:`sample` at temperature 0)."""
    return sample(model, prompts, max_new_tokens, 0.0, stop=stop)


def respond(model, template: ChatTemplate, requests: Sequence[str], sampler: Sampler | None = None,
            max_new_tokens: int = MAX_ANSWER_TOKENS) -> list[str]:
    """The model's answer to each request in the chat template (greedy by default), up to ``<|end|>``."""
    prompts = [template.prompt(r) for r in requests]
    if sampler is not None and not sampler.greedy:
        raise ValueError("respond answers greedily; sample() draws answers at a temperature")
    answers = generate_grouped(model, prompts, max_new_tokens, stop=template.end_id)
    return [template.tokenizer.decode([t for t in a if t >= len(template.tokenizer.special_tokens)]) for a in answers]


def score_answers(examples: Sequence[Example], answers: Sequence[str]) -> dict[str, float]:
    """The share of right answers per task, and over all (``"all"``)."""
    if len(examples) != len(answers):
        raise ValueError(f"{len(examples)} examples but {len(answers)} answers")
    right = defaultdict(list)
    for e, a in zip(examples, answers):
        right[e.task].append(e.correct(a))
    scores = {task: float(np.mean(r)) for task, r in right.items()}
    scores["all"] = float(np.mean([x for r in right.values() for x in r]))
    return scores


def accuracy(model, template: ChatTemplate, examples: Sequence[Example]) -> dict[str, float]:
    """How often the model's greedy chat answer is right, per task and over all."""
    return score_answers(examples, respond(model, template, [e.request() for e in examples]))


def base_answers(model, tokenizer, examples: Sequence[Example], shots: int = 3) -> list[str]:
    """A base model's greedy answers to few-shot raw prompts (:func:`few_shot_prompt`), each read
    up to the end of its line."""
    tasks = instruction_tasks()
    newline = tokenizer.encode("\n")[0]
    prompts = [tokenizer.encode(few_shot_prompt(tasks[e.task], e.problem, shots, seed=i))
               for i, e in enumerate(examples)]
    answers = generate_grouped(model, prompts, MAX_ANSWER_TOKENS, stop=newline)
    return [tokenizer.decode(a) for a in answers]


def base_accuracy(model, tokenizer, examples: Sequence[Example], shots: int = 3) -> dict[str, float]:
    """How often the base model's few-shot raw answer is right, per task and over all."""
    return score_answers(examples, base_answers(model, tokenizer, examples, shots))
