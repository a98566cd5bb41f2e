"""Decoding compared: greedy, beam search, temperature, top-k, top-p and the repetition penalty.

A language model gives a distribution over the next token; **decoding** (解码) chooses the text.
:mod:`tinylm.inference.sampling` implements every strategy (:class:`~tinylm.Sampler`,
:func:`~tinylm.generate`, :func:`~tinylm.beam_search`); this module *measures* them on the same
prompts, on two axes:

- **diversity**: distinct-n (Li et al., 2016), the share of the distinct n-grams among all the
  n-grams the strategy wrote (:func:`distinct_n`); the share of a text's 4-grams that repeat one
  seen earlier in the same text (:func:`repeated_ngram_share`, Welleck et al.'s seq-rep-4); and
  whether a text ends in a loop, one block said again and again (:func:`loop_period`);
- **quality**: the text's bits per character under a *second* model, one that did not write it
  (:func:`continuation_bpc`), and, where answers can be checked, the accuracy of the course's
  small assistant under each strategy (:func:`task_accuracy`).

Words are the units of English text and characters those of Chinese (:func:`units`).

Three comparisons make the study (``python -m tinylm study decoding``, :func:`run`):

- English: the course's GPT rung continues passages of Shakespeare's test text; the LSTM rung
  scores the continuations, and the passages' true continuations are scored the same way (a
  human reference point);
- Chinese: SmolLM2-135M-Instruct answers Chinese writing requests (its answer begun for it with
  the topic, so that it writes Chinese); a Kneser-Ney character
  n-gram counted on the People's Daily training text scores the answers, and People's Daily
  test text is the human reference;
- a task: the SFT assistant of the alignment chapter answers checkable requests
  (:mod:`tinylm.data.instructions`) under each strategy.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..inference.sampling import Sampler, beam_search, generate
from ..results import rounded
from ..tokenizers.symbols import words

# --------------------------------------------------------------------------- diversity


def units(text: str, language: str) -> list[str]:
    """The units diversity is counted in: English words (lower case, punctuation dropped,
    :func:`tinylm.tokenizers.symbols.words`), or the characters of Chinese text (white space
    dropped).

    >>> units("To be, or not to BE.", "en")
    ['to', 'be', 'or', 'not', 'to', 'be']
    >>> units("春天 来了。", "zh")
    ['春', '天', '来', '了', '。']
    """
    if language == "en":
        return words(text)
    if language == "zh":
        return [c for c in text if not c.isspace()]
    raise ValueError(f"language is 'en' or 'zh', got {language!r}")


def ngrams(seq: Sequence, n: int) -> list[tuple]:
    """The n-grams of one sequence, in order (none if it is shorter than n).

    >>> ngrams("abcd", 2)
    [('a', 'b'), ('b', 'c'), ('c', 'd')]
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    return [tuple(seq[i:i + n]) for i in range(len(seq) - n + 1)]


def distinct_n(texts: Sequence[Sequence], n: int) -> float:
    """Distinct-n (Li et al., 2016): the number of distinct n-grams over all ``texts`` (each a
    sequence of units) divided by the number of n-grams they hold, pooled; no n-gram crosses from
    one text into the next.  1 means no n-gram was ever repeated; a strategy that writes the same
    few phrases scores low.  0 when there is no n-gram at all.

    >>> distinct_n([["a", "b", "a", "b"], ["a", "c"]], 1), distinct_n([["a", "b", "a", "b"], ["a", "c"]], 2)
    (0.5, 0.75)
    """
    if isinstance(texts, str):
        raise TypeError("distinct_n takes a list of texts, each a sequence of units")
    grams = [g for text in texts for g in ngrams(text, n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repeated_ngram_share(seq: Sequence, n: int = 4) -> float:
    """The share of one text's n-grams that repeat an n-gram seen earlier in the same text
    (Welleck et al.'s seq-rep-n, 2020): 0 for a text that never repeats itself, near 1 for one
    caught in a loop.  0 for a text with no n-gram.

    >>> repeated_ngram_share("abcabcab", 3)     # abc bca cab abc bca cab: the last three repeat
    0.5
    """
    grams = ngrams(seq, n)
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def loop_period(seq: Sequence, min_repeats: int = 3, min_length: int = 6) -> int | None:
    """The shortest period p with which the text *ends in a loop*: its last ``min_repeats * p``
    units (at least ``min_length`` of them) read the same block of p units ``min_repeats`` times
    over (``seq[i] == seq[i + p]`` throughout), or ``None``.  ``min_length`` keeps a short stutter
    ("ha ha ha") from counting as a loop.

    >>> loop_period("the end. the end. the end.".split())
    2
    >>> loop_period("no loop here at all today".split()) is None
    True
    """
    seq = list(seq)
    for p in range(1, len(seq) // min_repeats + 1):
        span = max(min_repeats * p, min_length)
        if span > len(seq):
            break
        tail = seq[len(seq) - span:]
        if all(tail[i] == tail[i + p] for i in range(span - p)):
            return p
    return None


def diversity(texts: Sequence[str], language: str) -> dict:
    """Distinct-1 and distinct-2 over all ``texts``, their mean repeated-4-gram share, and the
    share of them that end in a loop (the last unit left out: generation stops after a number of
    tokens, often in the middle of a word)."""
    seqs = [units(t, language) for t in texts]
    return {"distinct_1": distinct_n(seqs, 1), "distinct_2": distinct_n(seqs, 2),
            "repeated_4grams": float(np.mean([repeated_ngram_share(s, 4) for s in seqs])),
            "loops": float(np.mean([loop_period(s[:-1]) is not None for s in seqs]))}


# --------------------------------------------------------------------------- quality


def continuation_bpc(scorer, tokenizer, prompt: str, texts: Sequence[str]) -> tuple[float, int]:
    """Bits per character of ``texts`` (each a continuation of ``prompt``, or one continuation per
    prompt if ``prompt`` is a list) under a character model ``scorer``, which reads the prompt
    first, pooled over all characters; and how many characters the scorer does not know (they are
    left out of the text before it is scored, and counted so that the reader can see it)."""
    from .. import score

    prompts = prompt if isinstance(prompt, (list, tuple)) else [prompt] * len(texts)
    if len(prompts) != len(texts):
        raise ValueError(f"{len(prompts)} prompts for {len(texts)} texts")
    known = set(tokenizer.symbols) if hasattr(tokenizer, "symbols") else None
    bits, chars, unknown = 0.0, 0, 0
    for p, text in zip(prompts, texts):
        if known is not None:
            kept = "".join(c for c in text if c in known)
            unknown += len(text) - len(kept)
            text, p = kept, "".join(c for c in p if c in known)
        if not text:
            continue
        ids = tokenizer.encode(p + text)
        lp = score(scorer, ids, streams=1)
        counted = min(len(text), len(lp))        # with no prompt, the first character is given
        bits -= float(lp[len(lp) - counted:].sum())
        chars += counted
    return (bits / chars if chars else float("nan")), unknown


# --------------------------------------------------------------------------- strategies


@dataclass(frozen=True)
class Strategy:
    """A way to decode: a :class:`~tinylm.Sampler`, or beam search of ``beam_width``."""

    name: str
    sampler: Sampler | None = None
    beam_width: int | None = None

    def __post_init__(self):
        if (self.sampler is None) == (self.beam_width is None):
            raise ValueError("a strategy is a sampler or a beam width, exactly one of them")

    @property
    def deterministic(self) -> bool:
        """Greedy decoding and beam search give one text per prompt; the others draw."""
        return self.beam_width is not None or self.sampler.greedy

    def decode(self, model, prompts: Sequence[Sequence[int]], max_new_tokens: int, stop=None,
               samples: int = 1, seed: int = 0) -> list[list[list[int]]]:
        """For each prompt, its continuations: one if the strategy is deterministic, else
        ``samples``.  Equally long prompts are generated as one batch, drawn with one
        generator seeded ``seed`` (each row gets its own draws, so the rows differ)."""
        prompts = [list(p) for p in prompts]
        if self.beam_width is not None:
            return [[beam_search(model, p, max_new_tokens, self.beam_width, stop=stop)] for p in prompts]
        k = 1 if self.sampler.greedy else samples
        sampler = Sampler(self.sampler.temperature, self.sampler.top_k, self.sampler.top_p,
                          self.sampler.repetition_penalty, seed)
        out: list[list[list[int]]] = [[] for _ in prompts]
        by_length: dict[int, list[int]] = {}
        for i, p in enumerate(prompts):
            by_length.setdefault(len(p), []).append(i)
        for length in sorted(by_length):
            rows = [i for i in by_length[length] for _ in range(k)]
            texts = generate(model, [prompts[i] for i in rows], max_new_tokens, sampler, stop=stop)
            for i, text in zip(rows, texts):
                out[i].append(text)
        return out


def strategies(temperatures: Sequence[float] = (0.5, 0.7, 1.0, 1.3), top_k: int = 40, top_p: float = 0.9,
               penalty: float = 1.3, beam_width: int = 4) -> list[Strategy]:
    """The strategies compared: greedy, beam search, greedy with a repetition penalty, pure
    sampling at each temperature, top-k and top-p (each at temperature 1), and top-p with the
    penalty."""
    out = [Strategy("greedy", Sampler(0.0)), Strategy(f"beam {beam_width}", beam_width=beam_width),
           Strategy(f"greedy, penalty {penalty:g}", Sampler(0.0, repetition_penalty=penalty))]
    out += [Strategy(f"T={t:g}", Sampler(t)) for t in temperatures]
    out += [Strategy(f"top-k {top_k}", Sampler(1.0, top_k=top_k)), Strategy(f"top-p {top_p:g}", Sampler(1.0, top_p=top_p)),
            Strategy(f"top-p {top_p:g}, penalty {penalty:g}", Sampler(1.0, top_p=top_p, repetition_penalty=penalty))]
    return out


# --------------------------------------------------------------------------- the three comparisons

ENGLISH = dict(prompts=16, prompt_tokens=32, new_tokens=160, samples=2)
"""English: how many passages of Shakespeare's test text, the GPT tokens of each prompt, the
tokens written, and the samples drawn per prompt by a strategy that draws."""

CHINESE = dict(new_tokens=48, samples=1, order=4)
"""Chinese: the tokens SmolLM2 writes per answer, samples per prompt, and the order of the
People's Daily character n-gram that scores the answers."""

CHINESE_TOPICS = ("春天", "秋天", "冬天", "夏天", "家乡", "月亮", "朋友", "学校")
"""The topics of the Chinese writing requests put to SmolLM2."""


def chinese_request(topic: str) -> str:
    """"Write a short passage about {topic}", in Chinese."""
    return f"请写一段关于{topic}的短文。"


TASK = dict(per_task=50, samples=1)
"""The task comparison: test requests per task (English and Chinese in turn)."""


def english_prompts(tokenizer, n: int, prompt_tokens: int, new_tokens: int) -> list[tuple[list[int], str]]:
    """``n`` passages of Shakespeare's test text, evenly spread, each starting at a line start:
    the first ``prompt_tokens`` tokens (ids) and the text of the next ``new_tokens`` tokens (the
    human continuation)."""
    from ..data import shakespeare

    text = shakespeare().test
    out = []
    for start in np.linspace(0, len(text) - 4000, n).astype(int):
        start = text.index("\n", start) + 1
        ids = tokenizer.encode(text[start:start + 3000])
        out.append((ids[:prompt_tokens], tokenizer.decode(ids[prompt_tokens:prompt_tokens + new_tokens])))
    return out


def chinese_scorer(order: int):
    """``(model, tokenizer)``: a Kneser-Ney character n-gram counted on the People's Daily
    training text; characters it never saw are left out when it scores (and counted)."""
    from ..data import peoples_daily
    from ..models import NGramModel
    from ..tokenizers import CharTokenizer

    corpus = peoples_daily()
    tokenizer = CharTokenizer(corpus.alphabet)
    model = NGramModel(order, len(tokenizer), "kneser-ney").fit(np.asarray(tokenizer.encode(corpus.train)))
    return model, tokenizer


def measure(texts_per_prompt: Sequence[Sequence[str]], prompts: Sequence[str], language: str, scorer,
            scorer_tokenizer) -> dict:
    """Diversity and the second model's bits per character for one strategy's texts, with the
    share of their characters the second model does not know (left out of the bpc)."""
    flat = [t for texts in texts_per_prompt for t in texts]
    flat_prompts = [p for p, texts in zip(prompts, texts_per_prompt) for _ in texts]
    bpc, unknown = continuation_bpc(scorer, scorer_tokenizer, flat_prompts, flat)
    chars = sum(len(t) for t in flat)
    return dict(diversity(flat, language), bpc=bpc, unknown_share=unknown / max(chars, 1), texts=len(flat),
                mean_chars=chars / max(len(flat), 1))


def compare_english(chosen: Sequence[Strategy], prompts: int = ENGLISH["prompts"],
                    prompt_tokens: int = ENGLISH["prompt_tokens"], new_tokens: int = ENGLISH["new_tokens"],
                    samples: int = ENGLISH["samples"], models=None) -> dict:
    """The GPT rung continues ``prompts`` passages under each strategy; the LSTM rung scores.
    Returns, per strategy (and for ``"human"``, the true continuations), the diversity and bpc,
    and each strategy's first text."""
    from ..checkpoint import load

    gpt, gpt_tok, _ = models["gpt"] if models else load("gpt")
    lstm, lstm_tok, _ = models["lstm"] if models else load("lstm")
    passages = english_prompts(gpt_tok, prompts, prompt_tokens, new_tokens)
    prompt_texts = [gpt_tok.decode(ids) for ids, _ in passages]
    rows = {"human": dict(measure([[h] for _, h in passages], prompt_texts, "en", lstm, lstm_tok),
                          example=passages[0][1])}
    for strategy in chosen:
        ids = strategy.decode(gpt, [p for p, _ in passages], new_tokens, samples=samples)
        texts = [[clean(gpt_tok.decode(t)) for t in row] for row in ids]
        rows[strategy.name] = dict(measure(texts, prompt_texts, "en", lstm, lstm_tok), example=texts[0][0])
    return {"prompt": prompt_texts[0], "rows": rows}


def compare_chinese(chosen: Sequence[Strategy], topics: Sequence[str] = CHINESE_TOPICS,
                    new_tokens: int = CHINESE["new_tokens"], samples: int = CHINESE["samples"],
                    order: int = CHINESE["order"], model=None) -> dict:
    """SmolLM2-135M-Instruct answers a Chinese request about each of the ``topics`` under each
    strategy; a People's Daily character n-gram scores the answers.

    Asked in Chinese, the model often answers in English; so its answer is begun for it with the
    topic's name (prefilling, 预填: the prompt ends with the chat template's cue to answer and
    the topic), and what it writes after that is measured, the scorer reading the topic first.
    The eight prompts are equally long (56 tokens), so a strategy writes all answers as one
    batch.  The human row is People's Daily test text cut into pieces as long as the answers."""
    from ..checkpoint import load
    from ..data import peoples_daily
    from ..pretrained.smollm2 import chat_prompt

    model, tok, _ = model or load("smollm2-135m-instruct")
    scorer, scorer_tok = chinese_scorer(order)
    prompts = [tok.encode(chat_prompt([{"role": "user", "content": chinese_request(t)}]) + t) for t in topics]
    rows, lengths = {}, []
    for strategy in chosen:
        ids = strategy.decode(model, prompts, new_tokens, samples=samples)
        texts = [[clean(tok.decode(t)) for t in row] for row in ids]
        lengths += [len(t) for row in texts for t in row]
        rows[strategy.name] = dict(measure(texts, list(topics), "zh", scorer, scorer_tok), example=texts[0][0])
    size = int(np.mean(lengths))
    test = peoples_daily().test.replace("\n", "")
    pieces = [test[i:i + size] for i in range(0, len(test) - size, len(test) // 40)][:40]
    rows = {"human": dict(measure([[p] for p in pieces], [""] * len(pieces), "zh", scorer, scorer_tok),
                          example=pieces[0]), **rows}
    return {"requests": [chinese_request(t) for t in topics], "prefill": list(topics), "rows": rows}


def clean(text: str) -> str:
    """A decoded text without the replacement character that a cut-off UTF-8 sequence leaves
    (byte-level BPE can stop in the middle of a Chinese character)."""
    return text.replace("\ufffd", "")


def task_accuracy(model, template, examples, strategy: Strategy, max_new_tokens: int | None = None,
                  seed: int = 0) -> dict[str, float]:
    """The share of ``examples`` the chat model answers right when it decodes with ``strategy``
    (one answer each), per task and over all."""
    from ..alignment.sft import MAX_ANSWER_TOKENS, score_answers

    prompts = [template.prompt(e.request()) for e in examples]
    ids = strategy.decode(model, prompts, max_new_tokens or MAX_ANSWER_TOKENS, stop=template.end_id, seed=seed)
    specials = len(template.tokenizer.special_tokens)
    answers = [template.tokenizer.decode([t for t in row[0] if t >= specials]) for row in ids]
    return score_answers(examples, answers)


def compare_task(chosen: Sequence[Strategy], per_task: int = TASK["per_task"]) -> dict:
    """The SFT assistant's test accuracy under each strategy."""
    from ..alignment.pipeline import load_stage
    from ..data.instructions import ChatTemplate, examples

    model, tokenizer, _ = load_stage("sft")
    template = ChatTemplate(tokenizer)
    test = examples("test", per_task=per_task)
    return {"examples": len(test), "rows": {s.name: task_accuracy(model, template, test, s) for s in chosen}}


ZH_TEMPERATURES = (0.7, 1.0)
"""Chinese costs about 70 ms a token on one core, so fewer temperatures are tried."""


def run(out_dir=None) -> dict:
    """The study: the three comparisons, written to ``results/study-decoding.json``."""
    import torch

    from . import studies

    torch.set_num_threads(1)
    log = studies.started()
    log["recipe"] = {"english": ENGLISH, "chinese": dict(CHINESE, topics=list(CHINESE_TOPICS)),
                     "task": TASK, "strategies": [s.name for s in strategies()],
                     "zh_strategies": [s.name for s in strategies(ZH_TEMPERATURES)]}
    seconds = {}
    start = time.process_time()
    log["english"] = rounded(compare_english(strategies()))
    seconds["english"] = time.process_time() - start
    start = time.process_time()
    log["task"] = rounded(compare_task(strategies()))
    seconds["task"] = time.process_time() - start
    start = time.process_time()
    log["chinese"] = rounded(compare_chinese(strategies(ZH_TEMPERATURES)))
    seconds["chinese"] = time.process_time() - start
    log["part_cpu_seconds"] = {k: round(v, 1) for k, v in seconds.items()}
    return studies.save("decoding", log)
