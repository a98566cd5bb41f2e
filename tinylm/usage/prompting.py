"""Prompting and in-context learning (上下文学习): what the examples and the template in a prompt do.

A large language model can be asked to do a task without any training: write the task down as
text (a **prompt**, 提示) and read the model's continuation.  With no example in the prompt this is
**zero-shot** (零样本); with ``k`` solved examples ("demonstrations") before the question it is
**few-shot** (少样本) or **in-context learning**: the weights do not change, only the text the model
reads (Brown et al., 2020).  Few-shot prompts are known to be fragile: the same examples in another
order, or with the labels unbalanced, can move accuracy a lot (Zhao et al., 2021; Lu et al., 2022).

Here everything is measured on SmolLM2-135M-Instruct with a task whose answers are exact:
the sentiment of a review, negative or positive, in English (:mod:`tinylm.usage.reviews_en`, short
reviews written for the course) and in Chinese (:func:`tinylm.data.reviews.sentiment`, real
reviews).  A prompt looks like this (the Chinese one says the same in Chinese)::

    Classify the sentiment of each review as positive or negative.

    Review: Absolutely loved this blender, it crushes ice in seconds.
    Sentiment: positive

    Review: Not worth the money at all.
    Sentiment:

**Restricted choice.**  Instead of letting the model write and parsing what it wrote, we compare
the probabilities it gives to the answer words: ``ln P(" negative" | prompt)`` against
``ln P(" positive" | prompt)`` (:func:`answer_logprobs`) and take the larger.  That is exact, needs
no parsing and costs one forward pass per prompt; it measures whether the model *prefers* the
right label, which is easier than producing it unprompted.

**Calibration.**  A model may prefer one label whatever the review says.  Zhao et al. (2021) measure
that bias by asking about a content-free input ("N/A") and divide it out: the *calibrated*
prediction is the label with the largest ``ln P(label | review) - ln P(label | "N/A")``
(:func:`calibrated_predictions`).

**The chat template.**  An instruction-tuned model was fine-tuned on conversations written in a
template (ChatML for SmolLM2: ``<|im_start|>user ... <|im_end|>``), usually after a **system prompt**
(系统提示) that sets the assistant's role.  :func:`prompt_variant` writes the same request raw and
in the template, with no system prompt, the template's default one, or one that states the task.

:func:`run` (``python -m tinylm study prompting``) measures accuracy against the number of
examples ``k`` = 0, 1, 2, 4, 8, several orders of the same examples, the four templates, and the
calibrated accuracy, and writes ``results/study-prompting.json``; Lab 25 reads it.  A third task
asks about the Chinese reviews in the English prompt, to tell reading Chinese from following it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..evaluation.metrics import wilson_interval as wilson
from ..models.base import evaluating
from ..pretrained.smollm2 import stored_chat_template as chat_template
from . import studies

CONTENT_FREE = "N/A"
"""The input with no content whose predicted label measures a prompt's bias (Zhao et al., 2021)."""


@dataclass(frozen=True)
class Task:
    """A classification task written as text: an instruction, then ``k`` examples and the query,
    each as ``{input_prefix}{text}\\n{answer_prefix}{answer}``, separated by blank lines.

    ``answers[label]`` is the word the model should write for that label, exactly as it follows
    ``answer_prefix`` (with its leading space in English).  ``test`` and ``pool`` are ``(text,
    label)`` pairs: the questions and the examples a few-shot prompt draws from.
    """

    name: str
    language: str
    instruction: str
    input_prefix: str
    answer_prefix: str
    answers: tuple[str, ...]
    test: tuple[tuple[str, int], ...]
    pool: tuple[tuple[str, int], ...]
    system: str

    @property
    def chance(self) -> float:
        """Accuracy of always answering the most common test label."""
        counts = np.bincount([label for _, label in self.test], minlength=len(self.answers))
        return float(counts.max() / counts.sum())


def english_task() -> Task:
    """Sentiment of short English reviews written for the course (:mod:`tinylm.usage.reviews_en`)."""
    from .reviews_en import DEMONSTRATIONS, TEST

    return Task("sentiment-en", "en", "Classify the sentiment of each review as positive or negative.",
                "Review: ", "Sentiment:", (" negative", " positive"), tuple(TEST), tuple(DEMONSTRATIONS),
                "You are a sentiment classifier. Answer with one word: positive or negative.")


ZH_LENGTH = (8, 24)
"""The Chinese test reviews have 8 to 24 characters (a long review costs many forward passes:
SmolLM2's tokenizer spends about two tokens on a Chinese character)."""

ZH_POOL_LENGTH = (8, 20)
"""The Chinese examples are shorter still, so that eight of them fit a small prompt."""


def chinese_task(per_label: int = 20, pool_per_label: int = 8) -> Task:
    """Sentiment of real Chinese reviews (:func:`tinylm.data.reviews.sentiment`): the first
    ``per_label`` reviews of each label in the test split whose length is within
    :data:`ZH_LENGTH`, and the first ``pool_per_label`` of each label in the training split within
    :data:`ZH_POOL_LENGTH` as examples."""
    from ..data.reviews import sentiment

    data = sentiment()

    def pick(split, lengths, n):
        low, high = lengths
        chosen = {0: [], 1: []}
        for text, label in data.split(split):
            if low <= len(text) <= high and len(chosen[label]) < n:
                chosen[label].append((text, label))
        return [pair for pairs in zip(chosen[0], chosen[1]) for pair in pairs]   # alternate the labels

    return Task("sentiment-zh", "zh", "判断每条评论的情感是正面还是负面。", "评论：", "情感：", ("负面", "正面"),
                tuple(pick("test", ZH_LENGTH, per_label)), tuple(pick("train", ZH_POOL_LENGTH, pool_per_label)),
                "你是一个情感分类器。只用一个词回答：正面或负面。")


def chinese_reviews_english_prompt() -> Task:
    """The Chinese reviews of :func:`chinese_task` asked about in the English prompt and answer
    words of :func:`english_task`: does the model fail to read Chinese, or to follow Chinese?"""
    zh, en = chinese_task(), english_task()
    return Task("sentiment-zh-en", "zh", en.instruction, en.input_prefix, en.answer_prefix, en.answers,
                zh.test, zh.pool, en.system)


def tasks() -> dict[str, Task]:
    """The study's three tasks: English reviews with an English prompt, Chinese reviews with a
    Chinese prompt, and the same Chinese reviews with the English prompt."""
    return {task.name: task for task in (english_task(), chinese_task(), chinese_reviews_english_prompt())}


# ---------------------------------------------------------------------------------------------
# Writing prompts

def few_shot_prompt(task: Task, examples: Sequence[tuple[str, int]], query: str) -> str:
    """The raw k-shot prompt: the instruction, each example with its answer, then the query with
    the answer left for the model.  Blocks are separated by a blank line; the text ends with the
    answer prefix (``"Sentiment:"``), where the answer word begins."""
    blocks = [task.instruction]
    blocks += [f"{task.input_prefix}{text}\n{task.answer_prefix}{task.answers[label]}" for text, label in examples]
    blocks.append(f"{task.input_prefix}{query}\n{task.answer_prefix}")
    return "\n\n".join(blocks)


VARIANTS = ("raw", "chat, no system", "chat, default system", "chat, task system")
"""The same request written four ways: as plain text, and in the chat template with an empty
system prompt, with the template's default one ("You are a helpful AI assistant named SmolLM,
trained by Hugging Face") and with one that states the task (:attr:`Task.system`)."""


def prompt_variant(task: Task, examples, query: str, variant: str, template: str | None = None) -> tuple[str, tuple[str, ...]]:
    """``(prompt, answers)`` for one of :data:`VARIANTS`.  In the chat template the request is
    the user's turn and the answer word opens the assistant's, so it loses its leading space."""
    from ..pretrained.smollm2 import chat_prompt

    template = template or chat_template()
    request = few_shot_prompt(task, examples, query)
    if variant == "raw":
        return request, task.answers
    systems = {"chat, no system": "", "chat, task system": task.system, "chat, default system": None}
    if variant not in systems:
        raise ValueError(f"unknown prompt variant {variant!r}; the variants are {', '.join(VARIANTS)}")
    messages = [{"role": "user", "content": request}]
    if systems[variant] is not None:
        messages.insert(0, {"role": "system", "content": systems[variant]})
    return chat_prompt(messages, template), tuple(a.lstrip() for a in task.answers)


# ---------------------------------------------------------------------------------------------
# Scoring: the log-probability of each answer

def shared_prefix(rows: Sequence[Sequence[int]]) -> int:
    """How many tokens every row starts with (at most the shortest row's length minus one, so
    that each row keeps at least one token of its own)."""
    if not rows:
        return 0
    n = min(len(row) for row in rows) - 1
    first = rows[0]
    for row in rows[1:]:
        i = 0
        while i < n and row[i] == first[i]:
            i += 1
        n = i
    return max(n, 0)


@torch.no_grad()
def answer_logprobs(model, tokenizer, prompts: Sequence[str], answers: Sequence[str], batch: int = 16) -> np.ndarray:
    """``ln P(answer | prompt)`` for every prompt and answer: an array (prompts, answers).

    An answer of several tokens scores the sum of their log-probabilities, each given the prompt
    and the answer's tokens before it.  ``model`` is a decoder with a key/value cache (a
    :class:`~tinylm.models.transformer.DecoderLM`).  The prompts' common beginning (the
    instruction and the examples of a few-shot prompt) is read once and its cache reused; the rest
    of each prompt is read in batches of ``batch`` rows, padded on the right (a causal model's
    predictions do not see the padding after them).  When every answer is one token, one row per
    prompt gives them all; otherwise each (prompt, answer) pair is a row: the prompt, then the
    answer without its last token.  The prompt must end where the answer's first token begins
    (``"Sentiment:"`` then ``" positive"``): the answer is tokenized alone.
    """
    answer_ids = [tokenizer.encode(a) for a in answers]
    if not answers or any(len(ids) == 0 for ids in answer_ids):
        raise ValueError(f"every answer needs at least one token; got {list(answers)!r}")
    rows = [tokenizer.encode(p) for p in prompts]
    if any(len(row) == 0 for row in rows):
        raise ValueError("a prompt has no tokens")
    n_shared = shared_prefix(rows)
    one_token = all(len(ids) == 1 for ids in answer_ids)
    jobs = [(i, None) for i in range(len(rows))] if one_token else \
        [(i, j) for i in range(len(rows)) for j in range(len(answer_ids))]
    out = np.zeros((len(rows), len(answer_ids)))
    with evaluating(model):
        prefix = model.new_state()
        if n_shared:
            model(torch.tensor([rows[0][:n_shared]]), prefix)
        for start in range(0, len(jobs), batch):
            chunk = jobs[start:start + batch]
            reads = [rows[i][n_shared:] + ([] if j is None else answer_ids[j][:-1]) for i, j in chunk]
            width = max(len(r) for r in reads)
            x = torch.tensor([r + [0] * (width - len(r)) for r in reads])
            logits, _ = model(x, prefix.select(torch.zeros(len(chunk), dtype=torch.long)))
            for r, (i, j) in enumerate(chunk):
                last = len(rows[i]) - n_shared - 1          # where the prompt's last token is read
                if j is None:
                    logp = F.log_softmax(logits[r, last].double(), dim=-1)
                    out[i] = [float(logp[ids[0]]) for ids in answer_ids]
                else:
                    ids = answer_ids[j]
                    logp = F.log_softmax(logits[r, last:last + len(ids)].double(), dim=-1)
                    out[i, j] = sum(float(logp[t, ids[t]]) for t in range(len(ids)))
            del logits
    return out


# ---------------------------------------------------------------------------------------------
# From log-probabilities to accuracy

def predictions(logprobs) -> np.ndarray:
    """The label each row prefers (the first on a tie)."""
    return np.asarray(logprobs).argmax(axis=1)


def calibrated_predictions(logprobs, content_free) -> np.ndarray:
    """Contextual calibration (Zhao et al., 2021): divide each label's probability by the one the
    same prompt gives it for a content-free input, i.e. subtract the log-probabilities."""
    return predictions(np.asarray(logprobs) - np.asarray(content_free)[None, :])


def accuracy(predicted, labels) -> float:
    predicted, labels = np.asarray(predicted), np.asarray(labels)
    if predicted.shape != labels.shape or predicted.size == 0:
        raise ValueError(f"predictions {predicted.shape} and labels {labels.shape} must be equally many, and some")
    return float((predicted == labels).mean())


# ---------------------------------------------------------------------------------------------
# Which examples, in which order

def example_sets(pool: Sequence[tuple[str, int]], k: int, orders: int, seed: int = 0) -> list[list[int]]:
    """Indices into ``pool`` of the few-shot examples to try for ``k`` examples.

    ``k = 1``: one example of each label in turn (does a single example pull the answers to its
    label?).  Even ``k >= 2``: the same balanced set (the first ``k/2`` examples of each label),
    in ``orders`` different random orders (all of them if there are fewer).
    """
    by_label: dict[int, list[int]] = {}
    for i, (_, label) in enumerate(pool):
        by_label.setdefault(label, []).append(i)
    labels = sorted(by_label)
    if k == 0:
        return [[]]
    if k == 1:
        return [[by_label[label][0]] for label in labels]
    if k % len(labels):
        raise ValueError(f"k = {k} cannot be balanced over {len(labels)} labels")
    chosen = [i for label in labels for i in by_label[label][:k // len(labels)]]
    if len(chosen) < k:
        raise ValueError(f"the pool has too few examples for k = {k}")
    rng = np.random.default_rng(seed)
    found: list[list[int]] = []
    limit = math.factorial(k)
    while len(found) < min(orders, limit):
        order = [chosen[i] for i in rng.permutation(k)]
        if order not in found:
            found.append(order)
    return found


def evaluate(model, tokenizer, task: Task, examples: Sequence[int], variant: str = "raw",
             items: int | None = None) -> dict:
    """Ask the model about the first ``items`` test reviews (all by default) with the given pool
    examples in a prompt variant; returns the answers' log-probabilities, the predictions, the
    calibrated ones and their accuracies."""
    shots = [task.pool[i] for i in examples]
    test = task.test[:items] if items else task.test
    prompts, answers = zip(*(prompt_variant(task, shots, text, variant) for text, _ in test))
    logprobs = answer_logprobs(model, tokenizer, list(prompts), answers[0])
    free_prompt, _ = prompt_variant(task, shots, CONTENT_FREE, variant)
    content_free = answer_logprobs(model, tokenizer, [free_prompt], answers[0])[0]
    labels = [label for _, label in test]
    predicted = predictions(logprobs)
    calibrated = calibrated_predictions(logprobs, content_free)
    correct = int((predicted == np.asarray(labels)).sum())
    low, high = wilson(correct, len(labels))
    return {"logprobs": logprobs, "content_free": content_free, "predicted": predicted, "labels": labels,
            "accuracy": accuracy(predicted, labels), "low": low, "high": high,
            "calibrated_accuracy": accuracy(calibrated, labels),
            "positive_rate": float(predicted.mean()), "tokens": sum(len(tokenizer.encode(p)) for p in prompts)}


# ---------------------------------------------------------------------------------------------
# The study

KS = (0, 1, 2, 4, 8)
ORDERS = 4
"""Random orders tried for each k >= 4 (k = 2 has only two)."""
SEED = 0
PLAN = {
    "sentiment-en": {"ks": KS, "orders": ORDERS, "variants_at": (0, 4)},
    "sentiment-zh-en": {"ks": KS, "orders": ORDERS, "variants_at": (0,)},
    "sentiment-zh": {"ks": (0, 4), "orders": 1, "variants_at": ()},
}
"""What the study measures for each task: the numbers of examples, the orders of each, and the k
at which the four prompt variants are compared.  A Chinese answer word is four tokens (two bytes
a character) and needs a forward row of its own, so the Chinese prompt costs twice as much and is
measured at two k only."""

SUMMARY = ("accuracy", "low", "high", "calibrated_accuracy", "positive_rate", "content_free_margin")


def _summary(result: dict) -> dict:
    return {"accuracy": round(result["accuracy"], 4), "low": round(result["low"], 4), "high": round(result["high"], 4),
            "calibrated_accuracy": round(result["calibrated_accuracy"], 4),
            "positive_rate": round(result["positive_rate"], 4),
            "content_free_margin": round(float(result["content_free"][1] - result["content_free"][0]), 3)}


def _rounded(logprobs) -> list:
    return [[round(float(x), 3) for x in row] for row in np.atleast_2d(logprobs)]


def run(out_dir=None, plan: dict | None = None, items: int | None = None, name: str = "prompting") -> dict:
    """The whole grid on SmolLM2-135M-Instruct, one thread: for each task of :data:`PLAN`, accuracy
    for every k and order (raw prompts), then the four prompt variants at the plan's k (first
    order); writes ``results/study-NAME.json``.  ``plan`` and ``items`` shrink it for a pilot.
    Each measurement keeps its answers' log-probabilities (rounded), so a reader can recompute
    every accuracy."""
    import tinylm

    torch.set_num_threads(1)
    plan = plan or PLAN
    log = studies.started()
    model, tokenizer, _ = tinylm.load("smollm2-135m-instruct")
    log.update({"model": "smollm2-135m-instruct", "plan": {t: {key: list(v) if isinstance(v, tuple) else v
                                                               for key, v in p.items()} for t, p in plan.items()},
                "seed": SEED, "variants": list(VARIANTS), "content_free": CONTENT_FREE, "tasks": {}})
    all_tasks = tasks()
    for task_name, task_plan in plan.items():
        task = all_tasks[task_name]
        test = task.test[:items] if items else task.test
        entry = {"language": task.language, "n": len(test), "chance": task.chance, "answers": list(task.answers),
                 "instruction": task.instruction, "labels": [label for _, label in test],
                 "pool": [list(p) for p in task.pool], "grid": [], "variants": []}
        for k in task_plan["ks"]:
            for o, examples in enumerate(example_sets(task.pool, k, task_plan["orders"], SEED)):
                result = evaluate(model, tokenizer, task, examples, "raw", items)
                entry["grid"].append({"k": k, "order": o, "examples": examples,
                                      "example_labels": [task.pool[i][1] for i in examples], **_summary(result),
                                      "logprobs": _rounded(result["logprobs"]),
                                      "content_free_logprobs": _rounded(result["content_free"])[0]})
                print(f"{task.name} k={k} order {o}: accuracy {result['accuracy']:.3f} "
                      f"[{result['low']:.3f}, {result['high']:.3f}], calibrated {result['calibrated_accuracy']:.3f}, "
                      f"positive {result['positive_rate']:.2f}", flush=True)
        for k in task_plan["variants_at"]:
            examples = example_sets(task.pool, k, task_plan["orders"], SEED)[0]
            for variant in VARIANTS:
                if variant == "raw":     # measured in the grid already
                    row = next(r for r in entry["grid"] if r["k"] == k and r["order"] == 0)
                    entry["variants"].append({"k": k, "variant": variant, **{key: row[key] for key in SUMMARY}})
                    continue
                result = evaluate(model, tokenizer, task, examples, variant, items)
                entry["variants"].append({"k": k, "variant": variant, **_summary(result),
                                          "logprobs": _rounded(result["logprobs"])})
                print(f"{task.name} k={k} {variant}: accuracy {result['accuracy']:.3f}, "
                      f"positive {result['positive_rate']:.2f}", flush=True)
        log["tasks"][task.name] = entry
    return studies.save(name, log)
