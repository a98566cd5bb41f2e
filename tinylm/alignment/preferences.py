"""Preference pairs: which of two answers a labeller prefers (偏好数据).

InstructGPT's labellers were shown several answers of the fine-tuned model to one request and
ranked them; each ranking gives pairs (chosen, rejected).  Ours are made the same way, with a
program in the labeller's place:

1. the SFT model answers each training request ``samples`` times at temperature 1;
2. the distinct answers, with the right answer added (a labeller can write one), are the
   candidates;
3. a **labeller** looks at candidate pairs in a random order and keeps the first pair it has a
   preference on.

:func:`prefers_correct` is an honest labeller: it prefers a right answer to a wrong one and has
no preference between two right or two wrong ones.  Real labellers are not so clean (they are
swayed by length, confidence and style); a labeller with such a flaw is how a reward model
learns the flaw (:mod:`tinylm.alignment.reward` shows what PPO then does with it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..data.instructions import ChatTemplate, Example
from .sft import MAX_ANSWER_TOKENS, sample

Labeller = Callable[[Example, str, str, np.random.Generator], "int | None"]
"""``labeller(example, a, b, rng)``: 0 if it prefers answer ``a``, 1 if ``b``, None if neither."""


@dataclass(frozen=True)
class Pair:
    """A request and two answers to it, the preferred one first, all as token ids (the answers
    end with ``<|end|>``); ``example`` says which request it was, for checking."""

    prompt: tuple[int, ...]
    chosen: tuple[int, ...]
    rejected: tuple[int, ...]
    example: Example


def prefers_correct(example: Example, a: str, b: str, rng: np.random.Generator) -> int | None:
    """The honest labeller: the right answer over a wrong one; no preference otherwise."""
    right_a, right_b = example.correct(a), example.correct(b)
    if right_a == right_b:
        return None
    return 0 if right_a else 1


def candidates(model, template: ChatTemplate, examples: Sequence[Example], samples: int = 4,
               temperature: float = 1.0, seed: int = 0) -> list[list[str]]:
    """For each example, its distinct sampled answers (in the order drawn) and the right answer."""
    generator = torch.Generator().manual_seed(seed)
    prompts = [template.prompt(e.request()) for e in examples for _ in range(samples)]
    drawn = sample(model, prompts, MAX_ANSWER_TOKENS, temperature, generator, stop=template.end_id)
    specials = len(template.tokenizer.special_tokens)
    out = []
    for i, e in enumerate(examples):
        texts = [template.tokenizer.decode([t for t in ids if t >= specials])
                 for ids in drawn[i * samples:(i + 1) * samples]]
        out.append(list(dict.fromkeys(texts + [e.answer()])))
    return out


def label(examples: Sequence[Example], answers: Sequence[Sequence[str]], template: ChatTemplate,
          labeller: Labeller = prefers_correct, seed: int = 0) -> list[Pair]:
    """At most one pair per example: the first candidate pair, in a random order, that the
    labeller has a preference on."""
    rng = np.random.default_rng(seed)
    pairs = []
    for e, texts in zip(examples, answers):
        options = [(i, j) for i in range(len(texts)) for j in range(i + 1, len(texts))]
        for k in rng.permutation(len(options)):
            a, b = texts[options[k][0]], texts[options[k][1]]
            choice = labeller(e, a, b, rng)
            if choice is not None:
                chosen, rejected = (a, b) if choice == 0 else (b, a)
                pairs.append(Pair(tuple(template.prompt(e.request())), tuple(template.response(chosen)),
                                  tuple(template.response(rejected)), e))
                break
    return pairs


def preference_pairs(model, template: ChatTemplate, examples: Sequence[Example], labeller: Labeller = prefers_correct,
                     samples: int = 4, temperature: float = 1.0, seed: int = 0) -> list[Pair]:
    """Pairs labelled by ``labeller`` from the model's sampled answers (see the module docstring)."""
    return label(examples, candidates(model, template, examples, samples, temperature, seed), template, labeller, seed)


def pair_agreement(pairs: Sequence[Pair], template: ChatTemplate, labeller: Labeller = prefers_correct) -> float:
    """The share of pairs whose chosen answer ``labeller`` prefers too (1.0 for its own pairs)."""
    if not pairs:
        raise ValueError("no pairs")
    rng = np.random.default_rng(0)
    decode = template.tokenizer.decode
    return float(np.mean([labeller(p.example, decode(p.chosen[:-1]), decode(p.rejected[:-1]), rng) == 0
                          for p in pairs]))


def save_pairs(path, pairs: Sequence[Pair]) -> None:
    """Write pairs as JSON: ids, and the request's task, problem and language (to check answers)."""
    import json
    from pathlib import Path

    rows = [{"prompt": list(p.prompt), "chosen": list(p.chosen), "rejected": list(p.rejected),
             "task": p.example.task, "problem": p.example.problem, "language": p.example.language} for p in pairs]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(rows, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")


def load_pairs(path) -> list[Pair]:
    """The pairs :func:`save_pairs` wrote."""
    import json
    from pathlib import Path

    rows = json.loads(Path(path).read_text(encoding="utf-8"))
    return [Pair(tuple(r["prompt"]), tuple(r["chosen"]), tuple(r["rejected"]),
                 Example(r["task"], tuple(r["problem"]) if isinstance(r["problem"], list) else r["problem"],
                         r["language"])) for r in rows]
