"""Hallucination and calibration: does a model know when it does not know?

A language model always has a next token to offer, so asked a question it has no answer to it
tends to answer anyway, fluently: a **hallucination** (幻觉, Ji et al., 2023).  Two measurements
tell a practitioner how much to trust it:

1. **Questions with and without an answer.**  "What is the capital of France?" has one right
   answer; "What is the capital of Zorvania?" has none (:mod:`tinylm.usage.capitals`).  The
   model **abstains** (拒答, 弃权) when its reply says it does not know, by a rule a program applies
   (:func:`abstains`: a list of refusal phrases, :data:`ABSTAIN_PHRASES`).  On invented countries
   every reply that does not abstain is a hallucination; on real ones a reply is right when it
   names the capital (:func:`tinylm.usage.capitals.mentions`).

2. **Confidence against accuracy.**  The model's **confidence** in its greedy answer is the
   probability it gives that answer: the product of the probabilities of the answer's tokens
   (:func:`answer_logprobs`).  A model is **calibrated** (校准) when, of the answers it gives with
   confidence about 0.8, about 80% are right.  The **reliability diagram** sorts answers into
   equal-width bins of confidence and plots each bin's accuracy against its mean confidence
   (:func:`reliability_bins`); the **expected calibration error** (期望校准误差, ECE; Guo et al.,
   2017) is the gap averaged over the bins, weighted by how many answers each holds:

   .. math:: \\mathrm{ECE} = \\sum_{m=1}^{M} \\frac{|B_m|}{n}\\,\\bigl|\\mathrm{acc}(B_m) - \\mathrm{conf}(B_m)\\bigr|

   Bin m holds the confidences in ((m-1)/M, m/M]; a confidence of exactly 0 goes in the first.

**Selective prediction** (选择性预测): answer only when the confidence is at least a threshold t,
say "I don't know" otherwise.  :func:`selective` gives the **coverage** (the share answered) and
the accuracy of the answers given; :func:`coverage_curve` sweeps t.  If confidence means anything,
accuracy rises as coverage falls, and questions without an answer are declined more often than
those with one.

**Temperature scaling** (温度缩放, Guo et al., 2017) divides the logits by one number T, fitted on
validation; it changes no greedy answer, only how sure the model says it is.
:func:`fit_temperature` picks T from a grid by the log loss of (confidence, right or wrong).

``python -m tinylm study calibration`` (:func:`run`) measures SmolLM2-135M-Instruct on the
capital questions in English and Chinese, and the course's small SFT assistant
(``checkpoints/align/sft``) on its checkable tasks, where answers are many and cheap.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import capitals

ABSTAIN_PHRASES = (
    "i don't know", "i do not know", "i don't have", "i do not have", "not sure", "i'm sorry",
    "i am sorry", "i apologize", "i cannot", "i can't", "i'm unable", "i am unable", "unable to",
    "no such", "does not exist", "doesn't exist", "not exist", "not a real", "isn't a real",
    "fictional", "fictitious", "imaginary", "not a country", "not aware of", "no information",
    "no capital", "不知道", "不确定", "没有这个", "不存在", "抱歉", "无法", "没有首都",
)
"""Phrases that make a reply an abstention (matched in lower case, curly apostrophes made straight)."""


def abstains(reply: str) -> bool:
    """Does ``reply`` decline to answer?  True when it contains one of :data:`ABSTAIN_PHRASES`.

    The rule is crude on purpose, so that anyone can apply it: "I'm not sure, but I think it is
    Paris" counts as abstaining, and a confident wrong city does not."""
    text = reply.lower().replace("\u2019", "'")
    return any(phrase in text for phrase in ABSTAIN_PHRASES)


# --------------------------------------------------------------------------- calibration measures

def _pairs(confidence, correct) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(confidence, dtype=float).reshape(-1)
    y = np.asarray(correct, dtype=float).reshape(-1)
    if c.shape != y.shape:
        raise ValueError(f"{c.size} confidences but {y.size} right-or-wrong values")
    if c.size == 0:
        raise ValueError("no answers to measure")
    if np.any(~np.isfinite(c)) or np.any((c < 0) | (c > 1)):
        raise ValueError("confidences are probabilities, between 0 and 1")
    if np.any((y != 0) & (y != 1)):
        raise ValueError("correct holds 0/1 or False/True")
    return c, y


def bin_index(confidence, n_bins: int = 10) -> np.ndarray:
    """Each confidence's bin: m (0-based) for a confidence in (m/M, (m+1)/M], 0 for exactly 0."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.searchsorted(edges[1:-1], np.asarray(confidence, dtype=float), side="left")


def reliability_bins(confidence, correct, n_bins: int = 10) -> dict[str, list]:
    """The reliability diagram's numbers: for each of ``n_bins`` equal-width bins of confidence,
    its edges, how many answers fall in it, their mean confidence and their accuracy (``nan`` for
    an empty bin)."""
    c, y = _pairs(confidence, correct)
    index = bin_index(c, n_bins)
    count = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(index, weights=c, minlength=n_bins) / count
        accuracy = np.bincount(index, weights=y, minlength=n_bins) / count
    return {"edges": np.linspace(0, 1, n_bins + 1).tolist(), "count": count.tolist(),
            "confidence": mean_conf.tolist(), "accuracy": accuracy.tolist()}


def expected_calibration_error(confidence, correct, n_bins: int = 10) -> float:
    """ECE (Guo et al., 2017): the mean over answers of |accuracy - confidence| of their bin."""
    c, y = _pairs(confidence, correct)
    bins = reliability_bins(c, y, n_bins)
    return float(sum(n / c.size * abs(a - m) for n, a, m in
                     zip(bins["count"], bins["accuracy"], bins["confidence"]) if n))


def selective(confidence, correct, threshold: float) -> tuple[float, float]:
    """Answer only when confidence >= ``threshold``: (coverage, accuracy of the answers given).
    The accuracy is ``nan`` when nothing is answered."""
    c, y = _pairs(confidence, correct)
    answered = c >= threshold
    coverage = float(answered.mean())
    return coverage, float(y[answered].mean()) if answered.any() else float("nan")


def coverage_curve(confidence, correct, thresholds: Sequence[float] | None = None) -> list[dict]:
    """:func:`selective` at each threshold (by default 0 and every distinct confidence, so the
    curve has every point there is), as ``{"threshold", "coverage", "accuracy"}``."""
    c, y = _pairs(confidence, correct)
    if thresholds is None:
        thresholds = [0.0, *np.unique(c).tolist()]
    out = []
    for t in thresholds:
        coverage, accuracy = selective(c, y, t)
        out.append({"threshold": float(t), "coverage": coverage, "accuracy": accuracy})
    return out


def log_loss(confidence, correct, eps: float = 1e-12) -> float:
    """The mean binary cross-entropy (nats) of confidence as the probability of being right."""
    c, y = _pairs(confidence, correct)
    c = np.clip(c, eps, 1 - eps)
    return float(-np.mean(y * np.log(c) + (1 - y) * np.log(1 - c)))


TEMPERATURES = tuple(np.round(np.arange(0.5, 4.01, 0.1), 2).tolist())
"""The grid :func:`fit_temperature` searches."""


def fit_temperature(confidences_by_t: np.ndarray, correct, temperatures: Sequence[float] = TEMPERATURES) -> float:
    """The temperature of the grid whose confidences (row t of ``confidences_by_t``, one column
    per answer) have the least :func:`log_loss` against ``correct``: temperature scaling, fitted on
    validation answers only."""
    rows = np.asarray(confidences_by_t, dtype=float)
    if rows.shape[0] != len(temperatures):
        raise ValueError(f"{rows.shape[0]} rows of confidences for {len(temperatures)} temperatures")
    losses = [log_loss(row, correct) for row in rows]
    return float(temperatures[int(np.argmin(losses))])


# --------------------------------------------------------------------------- asking a model

BATCH = 16
"""At most this many prompts share a batch (SmolLM2's logits for 16 prompts of 60 tokens are
190 MB)."""


def _chunks(rows: list, size: int) -> list[list]:
    return [rows[i:i + size] for i in range(0, len(rows), size)]


def greedy_answers(model, prompts: Sequence[Sequence[int]], max_new_tokens: int, stop=None,
                   batch_size: int = BATCH) -> list[list[int]]:
    """The greedy answer to each prompt (without the stop token), by :func:`tinylm.generate`.
    Prompts of one length share a batch (the decoder has no padding mask), at most
    ``batch_size`` at a time."""
    from ..inference.sampling import GREEDY, generate

    groups = defaultdict(list)
    for i, prompt in enumerate(prompts):
        groups[len(prompt)].append(i)
    out: list[list[int]] = [[] for _ in prompts]
    with torch.no_grad():
        for length in sorted(groups):
            for rows in _chunks(groups[length], batch_size):
                answers = generate(model, [list(prompts[i]) for i in rows], max_new_tokens, GREEDY, stop=stop)
                for i, answer in zip(rows, answers):
                    out[i] = list(answer)
    return out


def answer_logprobs(model, prompts: Sequence[Sequence[int]], answers: Sequence[Sequence[int]],
                    temperatures: Sequence[float] = (1.0,), batch_size: int = BATCH) -> list[np.ndarray]:
    """ln P(answer token | prompt, answer so far) for every token of each answer, with the logits
    divided by each of ``temperatures``: one array (temperatures, answer length) per answer.  The
    answer's confidence is the exponential of a row's sum.  Prompt + answer pairs of one total
    length share a batch."""
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
    temps = torch.tensor(list(temperatures), dtype=torch.float32)
    if torch.any(temps <= 0):
        raise ValueError("temperatures must be positive")
    out: list[np.ndarray] = [np.zeros((len(temps), 0)) for _ in prompts]
    groups = defaultdict(list)
    for i, (p, a) in enumerate(zip(prompts, answers)):
        if len(p) == 0:
            raise ValueError("a prompt needs at least one token")
        if len(a):
            groups[(len(p), len(a))].append(i)
    batches = [rows for key in sorted(groups) for rows in _chunks(groups[key], batch_size)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for rows in batches:
                n_prompt = len(prompts[rows[0]])
                ids = torch.tensor([list(prompts[i]) + list(answers[i]) for i in rows], dtype=torch.long)
                logits, _ = model(ids[:, :-1])
                logits = logits[:, n_prompt - 1:].float()                     # the answer's positions
                target = ids[:, n_prompt:]
                scaled = logits[None] / temps[:, None, None, None]              # (T, B, k, V)
                index = target[None, ..., None].expand(len(temps), -1, -1, 1)
                logp = F.log_softmax(scaled, -1).gather(-1, index)[..., 0]
                for j, i in enumerate(rows):
                    out[i] = logp[:, j].double().numpy()
    finally:
        model.train(was_training)
    return out


CUT = ".,;?!\n(。，；？！（"
"""A forced answer ends at the first of these characters (or at the end of the model's turn)."""


def cut_answer(tokenizer, tokens: Sequence[int]) -> tuple[str, int]:
    """The answer in a greedy continuation ``tokens`` of "The capital of X is": the text up to the
    first character of :data:`CUT`, stripped, and how many tokens it takes (at least 1, so that
    even an empty answer has a confidence: that of its first token)."""
    text = tokenizer.decode(list(tokens))
    end = min([text.index(ch) for ch in CUT if ch in text], default=len(text))
    answer = text[:end].strip()
    for k in range(1, len(tokens) + 1):
        if tokenizer.decode(list(tokens[:k])).strip().startswith(answer) and (
                answer or k == 1):
            return answer, k
    return answer, max(len(tokens), 1) if tokens else 0


# --------------------------------------------------------------------------- the study

SMOLLM2 = "smollm2-135m-instruct"
ZH_EVERY = 4
"""In Chinese, every 4th country of :data:`capitals.CAPITALS` is asked (17 of 65): the model is
weak in Chinese, and the study's budget is 6 CPU-minutes."""
N_INVENTED = {"en": len(capitals.CAPITALS), "zh": len(capitals.CAPITALS[::ZH_EVERY])}
"""As many invented countries as real ones, in each language."""
FREE_TOKENS = 16
"""A free reply is cut after this many tokens: enough to answer, or to decline."""
FORCED_TOKENS = 6
"""A forced answer ("The capital of X is ...") is cut after this many tokens; generation also
stops at the end of the turn and at :data:`FORCED_STOPS`."""
FORCED_STOPS = (".", "\n", "。")
"""Texts of single tokens that end a forced answer (each must be one token)."""
N_BINS = 10
THRESHOLDS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
"""The thresholds at which the study reports what abstaining buys."""
SFT_STAGE = "sft"


def _question_items(seed: int = 0) -> list[dict]:
    """Every question of the study: each real country, then as many invented ones, per language."""
    items = []
    for language in capitals.LANGUAGES:
        for country in capitals.CAPITALS[::1 if language == "en" else ZH_EVERY]:
            items.append({"language": language, "kind": "real", "country": country.name,
                          "name": country.name if language == "en" else country.name_zh,
                          "answers": list(country.answers(language))})
        for name in capitals.invented_countries(N_INVENTED[language], seed=seed, language=language):
            items.append({"language": language, "kind": "invented", "country": name, "name": name, "answers": []})
    return items


def ask_smollm2(model, tokenizer, items: Sequence[dict], template: str | None = None) -> list[dict]:
    """Ask SmolLM2 every question three ways, in its chat ``template`` (default: the one in its
    GGUF file), and return each item with what it said.

    - ``reply``: the free greedy reply to the plain question (default system prompt);
    - ``reply_ok``: the free reply when the question adds permission to say "I don't know";
    - ``answer``: the city it names when its reply is started for it ("The capital of X is"),
      with ``confidence`` (the product of the answer tokens' probabilities) and ``first``
      (the probability of the answer's first token).
    """
    from ..pretrained.smollm2 import chat_prompt

    eos = model.config.eos_id

    def prompt(text: str, start: str = "") -> list[int]:
        return tokenizer.encode(chat_prompt([{"role": "user", "content": text}], template) + start)

    free = [prompt(capitals.question(it["name"], it["language"])) for it in items]
    free_ok = [prompt(capitals.question(it["name"], it["language"], abstain_ok=True)) for it in items]
    forced = [prompt(capitals.question(it["name"], it["language"]), capitals.answer_start(it["name"], it["language"]))
              for it in items]
    stops = [eos]
    for text in FORCED_STOPS:
        ids = tokenizer.encode(text)
        if len(ids) != 1:
            raise ValueError(f"a forced answer's stop {text!r} must be one token, it is {ids}")
        stops.append(ids[0])
    replies = greedy_answers(model, free, FREE_TOKENS, stop=eos)
    replies_ok = greedy_answers(model, free_ok, FREE_TOKENS, stop=eos)
    continuations = greedy_answers(model, forced, FORCED_TOKENS, stop=stops)
    cuts = [cut_answer(tokenizer, c) for c in continuations]
    logps = answer_logprobs(model, forced, [c[:k] for c, (_, k) in zip(continuations, cuts)])
    out = []
    for it, r, r_ok, (answer, k), lp in zip(items, replies, replies_ok, cuts, logps):
        reply, reply_ok = tokenizer.decode(r), tokenizer.decode(r_ok)
        real = it["kind"] == "real"
        out.append({**it, "reply": reply, "reply_ok": reply_ok,
                    "abstains": abstains(reply), "abstains_ok": abstains(reply_ok),
                    "reply_right": bool(real and not abstains(reply) and capitals.mentions(reply, it["answers"])),
                    "reply_ok_right": bool(real and not abstains(reply_ok) and capitals.mentions(reply_ok, it["answers"])),
                    "answer": answer, "answer_tokens": k,
                    "confidence": float(np.exp(lp[0].sum())) if k else 0.0,
                    "first": float(np.exp(lp[0][0])) if k else 0.0,
                    "right": bool(real and capitals.matches(answer, it["answers"]))})
    return out


def hallucination_table(asked: Sequence[dict]) -> dict:
    """Per language and per form of the question (plain, with permission to abstain): on real
    countries the shares right, wrong and abstained; on invented ones the share answered anyway
    (the hallucination rate) and the share declined."""
    table = {}
    for language in capitals.LANGUAGES:
        for form, key in (("plain", ""), ("abstain_ok", "_ok")):
            real = [a for a in asked if a["language"] == language and a["kind"] == "real"]
            fake = [a for a in asked if a["language"] == language and a["kind"] == "invented"]
            right = np.mean([a[f"reply{key}_right"] for a in real])
            declined = np.mean([a[f"abstains{key}"] for a in real])
            fake_declined = np.mean([a[f"abstains{key}"] for a in fake])
            table[f"{language}_{form}"] = {
                "real_n": len(real), "real_right": round(float(right), 3),
                "real_wrong": round(float(1 - right - declined), 3), "real_abstained": round(float(declined), 3),
                "invented_n": len(fake), "hallucinated": round(float(1 - fake_declined), 3),
                "invented_abstained": round(float(fake_declined), 3)}
    return table


def selective_table(asked: Sequence[dict], thresholds: Sequence[float] = THRESHOLDS, language: str = "en") -> list[dict]:
    """What abstaining below each threshold buys on the forced answers of one language: coverage
    and accuracy on the real countries, the share of invented countries declined."""
    real = [a for a in asked if a["language"] == language and a["kind"] == "real"]
    fake = [a for a in asked if a["language"] == language and a["kind"] == "invented"]
    rows = []
    for t in thresholds:
        coverage, accuracy = selective([a["confidence"] for a in real], [a["right"] for a in real], t)
        declined = float(np.mean([a["confidence"] < t for a in fake]))
        rows.append({"threshold": t, "coverage": round(coverage, 3),
                     "accuracy": None if np.isnan(accuracy) else round(accuracy, 3),
                     "invented_declined": round(declined, 3)})
    return rows


def ask_sft(model, tokenizer, examples) -> dict:
    """The SFT assistant's greedy answers to ``examples`` (:mod:`tinylm.data.instructions`), whether
    each is right, and its confidence at each temperature of :data:`TEMPERATURES` (the
    probability of the answer and its ``<|end|>``)."""
    from ..alignment.sft import MAX_ANSWER_TOKENS
    from ..data.instructions import ChatTemplate

    template = ChatTemplate(tokenizer)
    prompts = [template.prompt(e.request()) for e in examples]
    answers = greedy_answers(model, prompts, MAX_ANSWER_TOKENS, stop=template.end_id)
    specials = len(tokenizer.special_tokens)
    texts = [tokenizer.decode([t for t in a if t >= specials]) for a in answers]
    # the answer as the model wrote it: its tokens, then <|end|> if it ended there
    written = [a + [template.end_id] if len(a) < MAX_ANSWER_TOKENS else a for a in answers]
    logps = answer_logprobs(model, prompts, written, TEMPERATURES)
    conf = np.array([np.exp(lp.sum(axis=1)) for lp in logps]).T             # (temperatures, examples)
    return {"answers": texts, "right": [bool(e.correct(t)) for e, t in zip(examples, texts)],
            "tasks": [e.task for e in examples], "languages": [e.language for e in examples],
            "confidence_by_t": conf}


def _r(x, digits: int = 4):
    if isinstance(x, (list, tuple)):
        return [_r(v, digits) for v in x]
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return None
    return round(float(x), digits)


def _bins(confidence, correct) -> dict:
    bins = reliability_bins(confidence, correct, N_BINS)
    return {"count": bins["count"], "confidence": _r(bins["confidence"]), "accuracy": _r(bins["accuracy"])}


def run(out_dir: Path | None = None) -> dict:
    """The study behind ``python -m tinylm study calibration``: SmolLM2 on the capital questions
    (English and Chinese, real and invented countries, three ways each), and the SFT assistant's
    confidence on its validation (to fit a temperature) and test requests."""
    from .. import load
    from ..alignment import pipeline
    from ..data import instructions
    from ..training import seed_everything
    from . import studies

    torch.set_num_threads(1)
    seed_everything(0)
    log = studies.started()
    log["recipe"] = {"model": SMOLLM2, "n_real": len(capitals.CAPITALS), "n_invented": N_INVENTED,
                     "free_tokens": FREE_TOKENS, "forced_tokens": FORCED_TOKENS, "n_bins": N_BINS,
                     "confidence": "product of the probabilities of the greedy answer's tokens",
                     "abstain_rule": "the reply contains one of calibration.ABSTAIN_PHRASES",
                     "sft": SFT_STAGE, "temperatures": [TEMPERATURES[0], TEMPERATURES[-1], 0.1]}

    # the course's small assistant: many cheap, exactly checkable answers
    started = time.process_time()
    sft_model, sft_tok, _ = pipeline.load_stage(SFT_STAGE)
    valid = ask_sft(sft_model, sft_tok, instructions.examples("valid"))
    test = ask_sft(sft_model, sft_tok, instructions.examples("test"))
    t_fit = fit_temperature(valid["confidence_by_t"], valid["right"])
    one = TEMPERATURES.index(1.0)
    fitted = TEMPERATURES.index(t_fit)
    c1, cT = test["confidence_by_t"][one], test["confidence_by_t"][fitted]
    log["sft"] = {
        "n_test": len(test["right"]), "accuracy": _r(np.mean(test["right"]), 3),
        "accuracy_by_task": {task: _r(np.mean([r for r, tk in zip(test["right"], test["tasks"]) if tk == task]), 3)
                             for task in dict.fromkeys(test["tasks"])},
        "mean_confidence": _r(c1.mean(), 3), "ece": _r(expected_calibration_error(c1, test["right"], N_BINS), 4),
        "temperature": t_fit, "mean_confidence_scaled": _r(cT.mean(), 3),
        "ece_scaled": _r(expected_calibration_error(cT, test["right"], N_BINS), 4),
        "valid_ece": _r(expected_calibration_error(valid["confidence_by_t"][one], valid["right"], N_BINS), 4),
        "bins": _bins(c1, test["right"]), "bins_scaled": _bins(cT, test["right"]),
        "curve": [{"threshold": t, "coverage": _r(c, 3), "accuracy": _r(a, 3)} for t, (c, a) in
                  ((t, selective(c1, test["right"], t)) for t in THRESHOLDS)],
        "confidence": _r(c1.tolist()), "right": [int(r) for r in test["right"]],
        "cpu_seconds": round(time.process_time() - started, 1)}
    del sft_model

    # SmolLM2: capitals of real and invented countries
    started = time.process_time()
    model, tokenizer, smollm2_log = load(SMOLLM2)
    asked = ask_smollm2(model, tokenizer, _question_items(), smollm2_log["chat_template"])
    smol = {"hallucination": hallucination_table(asked)}
    for language in capitals.LANGUAGES:
        real = [a for a in asked if a["language"] == language and a["kind"] == "real"]
        conf, right = [a["confidence"] for a in real], [a["right"] for a in real]
        smol[language] = {
            "forced_accuracy": _r(np.mean(right), 3), "mean_confidence": _r(np.mean(conf), 3),
            "ece": _r(expected_calibration_error(conf, right, N_BINS), 4),
            "ece_first_token": _r(expected_calibration_error([a["first"] for a in real], right, N_BINS), 4),
            "bins": _bins(conf, right),
            "mean_confidence_invented": _r(np.mean([a["confidence"] for a in asked
                                                    if a["language"] == language and a["kind"] == "invented"]), 3),
            "selective": selective_table(asked, THRESHOLDS, language)}
    smol["items"] = [{k: (_r(v) if isinstance(v, float) else v) for k, v in a.items() if k != "answers"}
                     for a in asked]
    smol["cpu_seconds"] = round(time.process_time() - started, 1)
    log["smollm2"] = smol
    return studies.save("calibration", log)
