"""Generation with and without retrieval: a language model answers from its memory (closed book)
or from retrieved chunks of the book placed in its prompt, and names the chunk it used.

A model that answers from its weights alone (**closed book**, 闭卷) knows only what it read in
training, up to its knowledge cut-off, and nothing of private documents; asked anyway, a small
model states something fluent and false (a **hallucination**, 幻觉).  **Retrieval-augmented
generation** (检索增强生成, RAG; Lewis et al., 2020) puts the passages a retriever found into the
prompt and asks the model to answer from them.  Here:

- :func:`rag_prompt` writes SmolLM2's chat prompt with the top ``k`` chunks as **numbered
  sources**, ``[1] (chapter § section) text``, and the instruction to answer in one short
  sentence from the sources and to name the source's number, or to say the answer is not in
  them; :func:`closed_book_prompt` asks the same question with no sources;
- :data:`READERS` are alternative prompts for the same sources (an instruction and a prefill
  each: the ``first`` prompt, an ``extractive`` one that asks for a quoted sentence, a ``short``
  one that asks for a few words); the study chooses one on the development half;
- :func:`answer` decodes greedily with the KV cache (:func:`tinylm.generate`), one prompt at a time;
- :func:`cited_sources` reads the source numbers an answer names (its **citations**, 引用), and
  :func:`citation_relevant` checks that a cited number points at a chunk that holds the evidence;
- an answer is right when it contains one of the question's key phrases
  (:func:`tinylm.rag.questions.answered`): a stated, automatic rule, generous to an answer that
  copies a source at length, strict with a right answer in other words;
- :func:`key_phrase_logprob` is a measure that needs no generation: the log-probability the model
  gives the key phrase as the start of its answer (teacher-forced), closed book and with sources;
  :func:`gains` compares two conditions question by question;
- :func:`contingency` is the 2×2 table closed-book right/wrong × RAG right/wrong; its cell
  "right closed-book, wrong with retrieval" is where retrieval **hurts**.

``python -m tinylm study rag-generation`` (:func:`run`; its second run, which reuses the first's
answers, compares the readers on the development half and scores the test half a second time with
the chosen one) measures it on the book's questions with
SmolLM2-135M-Instruct as the reader and a hybrid retriever (BM25 and MiniLM embeddings fused by
reciprocal rank fusion) over 128-word chunks overlapping by 32: ``k`` is chosen on the development
half, and the test half is answered once closed-book, with the top ``k`` chunks, and with the
**gold** chunk alone (the chunk that holds the evidence): the last is an upper bound for this
reader, so comparing it with retrieval tells whether the retriever or the reader is the weak link.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from ..evaluation.metrics import wilson_interval
from .corpus import Chunk, Document
from .questions import Question, answered, locate

INSTRUCTION = ("Answer in one short sentence from the sources and name the source number, "
               "or say that it is not in the sources.")
"""What the RAG prompt asks of the model, after the sources and the question."""

ANSWER_PREFIX = "According to source ["
"""The words the RAG prompt puts at the start of the model's reply (a *prefill*): the model goes
on with a source number, so every answer names one.  Longer instructions alone made
SmolLM2-135M repeat them ("The source you used by its number in brackets is [2].") in a pilot on
questions of our own, outside the labelled set."""

READERS = {
    "first": (INSTRUCTION, ANSWER_PREFIX),
    "extractive": ("Copy the one sentence of the sources that answers the question.", '"'),
    "short": ("Answer with a few words from the sources.", "The answer is"),
}
"""The readers compared on the development half: (instruction, prefill) of each RAG prompt.
``first`` is the prompt the study first used (chosen on a handful of made-up questions, never on
the labelled set); ``extractive`` asks the model to quote the sentence that answers (a small model
copies better than it paraphrases, and a question's key phrase is in its evidence sentence) and
opens the quote for it; ``short`` asks for a few words and starts them with ``The answer is``.
The two new wordings were settled on the first six development questions (a prefill
``Source [`` made the model list source numbers; ``Answer:`` made it write ``[n]``); neither
names a source number, so their answers rarely cite one."""

PROBE_PREFIX = "Answer: "
"""The probability measure (:func:`key_phrase_logprob`) scores a key phrase after the prompt's
assistant turn begun with these words, the same for every condition and reader."""

CLOSED_BOOK_INSTRUCTION = "Answer the question in one short sentence."
"""The closed-book prompt's instruction: the same request, with no sources."""

MAX_NEW_TOKENS = 32
"""Tokens generated at most: one short sentence and a citation fit; a run-on answer is cut."""

CHUNK_SIZE, CHUNK_OVERLAP = 128, 32
"""The study's chunks: 128-word windows overlapping by 32 words (about 170 SmolLM2 tokens each)."""

KS = (1, 3)
"""The numbers of retrieved chunks tried on the development half (5 chunks, about 1,300 tokens,
cost SmolLM2 about 8 CPU-seconds an answer in a pilot: over the study's budget)."""

DEPTH = 50
"""How deep BM25 and the dense retriever each rank before their rankings are fused."""

STUDY = "rag-generation"
EMBEDDINGS_FILE = "chunk_embeddings.npy"


# ----------------------------------------------------------------------------- prompts

def _text(question) -> str:
    text = question.question if isinstance(question, Question) else question
    if not isinstance(text, str):
        raise TypeError(f"a question is a string or a Question, got {type(question).__name__}")
    if not text.strip():
        raise ValueError("the question is empty: there is nothing to answer")
    return text.strip()


def one_line(text: str) -> str:
    """``text`` with every run of white space (new lines too) made one space: a source is one paragraph."""
    return " ".join(text.split())


def sources_text(chunks: Sequence[Chunk]) -> str:
    """The retrieved chunks as numbered sources, numbered from 1, one paragraph each:
    ``[1] (chapter § section) text``, separated by blank lines."""
    if not chunks:
        raise ValueError("no chunks: a RAG prompt needs at least one source (use closed_book_prompt)")
    return "\n\n".join(f"[{i}] ({c.cite}) {one_line(c.text)}" for i, c in enumerate(chunks, start=1))


def _reader(reader: str) -> tuple[str, str]:
    if reader not in READERS:
        raise ValueError(f"unknown reader {reader!r}: choose one of {', '.join(READERS)}")
    return READERS[reader]


def rag_messages(question, chunks: Sequence[Chunk], reader: str = "first") -> list[dict[str, str]]:
    """The chat messages of the RAG prompt: one user turn with the sources, then the question and
    the reader's instruction on the last lines (a system turn made SmolLM2-135M no better in a
    pilot; its template adds its own)."""
    text = _text(question)
    instruction = _reader(reader)[0]
    return [{"role": "user", "content": f"Sources:\n\n{sources_text(chunks)}\n\nQuestion: {text}\n{instruction}"}]


def closed_book_messages(question) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Question: {_text(question)}\n\n{CLOSED_BOOK_INSTRUCTION}"}]


def rag_prompt(question, chunks: Sequence[Chunk], template: str | None = None, reader: str = "first") -> str:
    """SmolLM2's chat prompt (:func:`tinylm.pretrained.smollm2.chat_prompt`) asking ``question``
    with ``chunks`` as numbered sources, ending with the start of the answer, the reader's
    prefill (:data:`READERS`; for ``first``, :data:`ANSWER_PREFIX`); pass ``template`` (the model
    log's ``chat_template``) to avoid reading it from the model file every time."""
    from ..pretrained.smollm2 import chat_prompt

    return chat_prompt(rag_messages(question, chunks, reader), template) + _reader(reader)[1]


def probe_prompt(question, chunks: Sequence[Chunk] = (), template: str | None = None, reader: str = "first") -> str:
    """The prompt the probability measure reads: the reader's RAG prompt with ``chunks`` as
    sources (the closed-book prompt if there are none), without the reader's prefill."""
    from ..pretrained.smollm2 import chat_prompt

    if not chunks:
        return closed_book_prompt(question, template)
    return chat_prompt(rag_messages(question, chunks, reader), template)


def closed_book_prompt(question, template: str | None = None) -> str:
    """SmolLM2's chat prompt asking ``question`` with no sources: the model answers from memory."""
    from ..pretrained.smollm2 import chat_prompt

    return chat_prompt(closed_book_messages(question), template)


# ----------------------------------------------------------------------------- answering

def answer(model, tokenizer, prompts: Sequence[str], max_new_tokens: int = MAX_NEW_TOKENS) -> list[str]:
    """Greedy answers to ``prompts`` (chat prompts as text), with the KV cache, each ending at the
    model's end-of-turn token or after ``max_new_tokens`` tokens.  A prompt that ends with
    :data:`ANSWER_PREFIX` put those words in the model's mouth: they start its answer.

    One prompt at a time: :func:`tinylm.generate` batches only prompts of equal length (the
    model has no padding mask), and prompts with different sources almost never are."""
    from ..inference.sampling import GREEDY, generate

    if isinstance(prompts, str):
        raise TypeError("pass a list of prompts, not one string")
    out = []
    for p in prompts:
        text = tokenizer.decode(generate(model, tokenizer.encode(p), max_new_tokens, GREEDY))
        out.append((prefill(p) + text).strip())
    return out


def prefill(prompt: str) -> str:
    """The reader's prefill a prompt ends with (the longest that fits), or ``""``."""
    return max((pre for _, pre in READERS.values() if prompt.endswith(pre)), key=len, default="")


def key_phrase_logprob(model, tokenizer, prompt: str, phrase: str) -> float:
    """ln P(``phrase`` | ``prompt``) in nats, teacher-forced (no generation): the text read is
    ``prompt + "Answer:" + " " + phrase`` (``prompt`` a chat prompt ending where the assistant's
    turn begins, with no prefill: :func:`probe_prompt`), and the scored tokens are those of
    ``" " + phrase``, tokenised apart from what comes before so the split is exact.  The sum
    over the phrase's tokens: the log-probability that the model's answer begins with the phrase."""
    from ..inference.scoring import token_logprobs
    import torch

    if not phrase.strip():
        raise ValueError("the key phrase is empty")
    head = tokenizer.encode(prompt + PROBE_PREFIX.rstrip())
    tail = tokenizer.encode(" " + phrase.strip())
    ids = torch.tensor([head + tail])
    mask = torch.zeros_like(ids, dtype=torch.bool)
    mask[0, len(head):] = True
    with torch.no_grad():
        return float(token_logprobs(model, ids, mask).sum())


# ----------------------------------------------------------------------------- citations and scoring

_CITE = re.compile(r"\[\s*(\d+(?:\s*(?:,|and|&|-|–)\s*\d+)*)\s*\]|\bsources?\s*#?\s*(\d+(?:\s*(?:,|and|&)\s*\d+)*)",
                   re.IGNORECASE)


def cited_sources(text: str) -> list[int]:
    """The source numbers an answer names, in the order it first names them, each once:
    ``[2]``, ``[1, 3]``, ``[1][3]``, ``[2-4]`` (a range), ``source 2``, ``Sources 1 and 3``.
    Other brackets (``[n]``, ``[lewis2020]``) are not citations."""
    out: list[int] = []
    for m in _CITE.finditer(text):
        group = m.group(1) or m.group(2)
        numbers: list[int] = []
        for part in re.split(r"\s*(?:,|and|&)\s*", group):
            span = re.split(r"\s*[-–]\s*", part)
            if len(span) == 2 and span[0].isdigit() and span[1].isdigit() and int(span[0]) <= int(span[1]) <= int(span[0]) + 20:
                numbers.extend(range(int(span[0]), int(span[1]) + 1))
            elif part.strip().isdigit():
                numbers.append(int(part))
        for n in numbers:
            if n not in out:
                out.append(n)
    return out


def citation_relevant(cited: Sequence[int], retrieved: Sequence[int], relevant: set[int]) -> bool | None:
    """Whether the first source the answer cites is a chunk that holds the evidence: source ``n``
    is ``retrieved[n - 1]``.  ``None`` when the answer cites nothing; ``False`` when it cites a
    number that was not among the sources."""
    if not cited:
        return None
    n = cited[0]
    return 1 <= n <= len(retrieved) and retrieved[n - 1] in relevant


ABSTAIN = re.compile(r"not in the sources?|not (?:mentioned|stated|given|provided|found) in|do(?:es)? not (?:contain|say|mention)|"
                     r"i (?:do not|don't) know|i'm not sure|i am not sure|cannot (?:answer|determine)|no information",
                     re.IGNORECASE)


def abstains(text: str) -> bool:
    """Whether the answer declines ("not in the sources", "I don't know", ...) instead of stating something."""
    return bool(ABSTAIN.search(text))


def contingency(closed: Sequence[bool], rag: Sequence[bool]) -> dict[str, int]:
    """The 2×2 table of two answers to the same questions: rows closed-book right/wrong, columns
    RAG right/wrong.  ``hurt`` (right closed-book, wrong with retrieval) is where retrieval hurts,
    ``fixed`` (wrong closed-book, right with retrieval) where it helps."""
    if len(closed) != len(rag):
        raise ValueError(f"{len(closed)} closed-book results for {len(rag)} RAG results")
    pairs = list(zip(map(bool, closed), map(bool, rag)))
    return {"both_right": pairs.count((True, True)), "hurt": pairs.count((True, False)),
            "fixed": pairs.count((False, True)), "both_wrong": pairs.count((False, False))}


def accuracy(correct: Sequence[bool]) -> dict:
    """The share right, with its 95 % Wilson interval."""
    n, right = len(correct), int(sum(map(bool, correct)))
    low, high = wilson_interval(right, n)
    return {"n": n, "right": right, "accuracy": right / n, "low": low, "high": high}


def language(question) -> str:
    """``zh`` for a question with Chinese characters, else ``en``."""
    return "zh" if re.search(r"[\u4e00-\u9fff]", _text(question)) else "en"


def gold_chunk(question: Question, docs: Sequence[Document], chunks: Sequence[Chunk]) -> int:
    """The chunk that holds the most of the question's evidence (the lowest index on a tie)."""
    a, b = locate(question, docs)
    cover = [(min(b, c.end) - max(a, c.start) if c.doc == question.doc else -1, -i) for i, c in enumerate(chunks)]
    best, minus_i = max(cover)
    if best <= 0:
        raise ValueError(f"{question.id}: no chunk holds any of its evidence")
    return -minus_i


# ----------------------------------------------------------------------------- the retriever

def retriever(chunks: Sequence[Chunk], encoder=None, embeddings=None):
    """The study's retriever: BM25 and MiniLM dense retrieval, each ranking :data:`DEPTH` deep,
    fused by reciprocal rank fusion.  ``embeddings`` (the study's float16 file) saves embedding
    the chunks again; they are used as float32."""
    from .retrieval import BM25, Dense, Hybrid

    if encoder is None:
        from ..pretrained import minilm

        encoder = minilm.sentence_encoder()
    if embeddings is not None:
        embeddings = np.asarray(embeddings, dtype=np.float32)
    return Hybrid([BM25(chunks), Dense(encoder, chunks, embeddings)], depth=DEPTH)


def chunk_embeddings(encoder, chunks: Sequence[Chunk]) -> np.ndarray:
    """The chunks' MiniLM embeddings rounded to float16 (as stored; MiniLM reads at most 256 word
    pieces of a chunk, about 190 words of English prose, so a 128-word chunk is rarely cut)."""
    return np.asarray(encoder.embed([c.text for c in chunks]), dtype=np.float32).astype(np.float16)


def load_embeddings(out_dir: Path | None = None) -> np.ndarray:
    from ..usage import studies

    path = studies.output_dir(STUDY, out_dir) / EMBEDDINGS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: it is written by `python -m tinylm study {STUDY}`")
    return np.load(path)


# ----------------------------------------------------------------------------- the study

def answer_all(model, tokenizer, template, items: list[dict], condition: str, chunks, k: int | None = None,
               max_new_tokens: int = MAX_NEW_TOKENS, reader: str = "first") -> tuple[list[dict], float]:
    """Answer every question of ``items`` under ``condition`` (``closed``, ``rag`` with the top
    ``k`` retrieved chunks, or ``gold``) with ``reader``'s prompt; the per-question records and
    the CPU-seconds taken."""
    start = time.process_time()
    rows = []
    for it in items:
        q = it["q"]
        if condition == "closed":
            sources, prompt = [], closed_book_prompt(q, template)
        else:
            sources = it["retrieved"][:k] if condition == "rag" else [it["gold"]]
            prompt = rag_prompt(q, [chunks[i] for i in sources], template, reader)
        text = answer(model, tokenizer, [prompt], max_new_tokens)[0]
        cited = cited_sources(text) if sources else []
        rows.append({"id": q.id, "sources": sources, "answer": text, "right": answered(text, q),
                     "cited": cited, "abstains": abstains(text),
                     "citation_relevant": citation_relevant(cited, sources, it["relevant"]) if sources else None,
                     "found": bool(set(sources) & it["relevant"]) if sources else None,
                     "prompt_tokens": len(tokenizer.encode(prompt))})
    return rows, round(time.process_time() - start, 1)


def summary(rows: list[dict], langs: dict[str, str]) -> dict:
    """Accuracy (with its interval), overall and by language; how often the answer cites a
    source and how often the first cited source holds the evidence; how often the sources held it."""
    out = {"all": accuracy([r["right"] for r in rows])}
    for lang in ("en", "zh"):
        mine = [r["right"] for r in rows if langs[r["id"]] == lang]
        if mine:
            out[lang] = accuracy(mine)
    if rows and rows[0]["sources"]:
        cites = [r for r in rows if r["cited"]]
        out["cites"] = len(cites)
        out["citation_relevant"] = sum(bool(r["citation_relevant"]) for r in cites)
        out["found"] = sum(bool(r["found"]) for r in rows)
        out["right_when_found"] = sum(r["right"] for r in rows if r["found"])
        out["right_when_not_found"] = sum(r["right"] for r in rows if not r["found"])
        out["prompt_tokens"] = round(float(np.mean([r["prompt_tokens"] for r in rows])), 1)
    out["abstains"] = sum(r["abstains"] for r in rows)
    return out


def choose_k(dev: dict[str, dict]) -> int:
    """The ``k`` with the best development accuracy; on a tie the smaller (a shorter prompt)."""
    ks = [int(name[4:]) for name in dev if name.startswith("rag-")]
    if not ks:
        raise ValueError("no RAG measurement (rag-K) to choose k from")
    return min(ks, key=lambda k: (-dev[f"rag-{k}"]["all"]["right"], k))


def choose_reader(dev: dict[str, dict]) -> str:
    """The reader with the best development accuracy (``dev[reader]["all"]["right"]``); on a tie
    the one with the shorter prompt (``dev[reader]["prompt_tokens"]``, the mean in tokens)."""
    if not dev:
        raise ValueError("no reader measured on the development half")
    return min(dev, key=lambda r: (-dev[r]["all"]["right"], dev[r]["prompt_tokens"], r))


def gains(closed: Sequence[float], other: Sequence[float]) -> dict:
    """The log-probability gains ``other - closed`` (nats), question by question: their mean,
    and on how many questions the gain is positive, of how many."""
    if len(closed) != len(other) or not closed:
        raise ValueError(f"{len(closed)} closed-book and {len(other)} other log-probabilities")
    d = np.asarray(other, dtype=float) - np.asarray(closed, dtype=float)
    return {"n": int(len(d)), "mean_gain": float(d.mean()), "median_gain": float(np.median(d)),
            "positive": int((d > 0).sum())}


FIRST_READER_FILE = "first_reader.json"
"""The log of the study's first run (at commit 0f2da93: the ``first`` reader, k chosen on dev,
the test half scored once), kept in the study's folder: the second run reuses its answers
(greedy decoding is deterministic, and the closed-book prompt did not change) instead of making them again."""


def run(out_dir: Path | None = None, limit: int | None = None, readers: Sequence[str] = ("extractive", "short")) -> dict:
    """The study ``rag-generation``, second run.  The first run (:data:`FIRST_READER_FILE`)
    chose k = 3 on the development half with the ``first`` reader and scored the test half once:
    0 of 48 closed book, with the top 3 and with the gold chunk.  That reader's prompt had been
    chosen on made-up questions, never compared on the development half; so here the other
    ``readers`` answer the development half with the same top 3 chunks, the reader is chosen by
    development accuracy (ties: the shorter prompt), and the test half is scored **a second time**,
    with the chosen reader, top 3 and gold chunk (closed book is unchanged and reused).  Then the
    probability measure on the test half: ln P(first key phrase) closed book, top 3 and gold
    (:func:`key_phrase_logprob`).  ``limit`` answers only the first few questions (a pilot; nothing is saved)."""
    import json

    import torch

    from .. import load
    from ..pretrained import minilm
    from ..results import rounded
    from ..usage import studies
    from . import corpus, questions

    torch.set_num_threads(1)
    torch.manual_seed(0)
    log = studies.started()
    folder = studies.output_dir(STUDY, out_dir)
    first = json.loads((folder / FIRST_READER_FILE).read_text())
    if first["recipe"]["instruction"] != INSTRUCTION or first["recipe"]["closed_book_instruction"] != CLOSED_BOOK_INSTRUCTION:
        raise ValueError("the first run's prompts differ from this code's: its answers cannot be reused")
    k = first["recipe"]["k"]
    docs = corpus.load_book()
    chunks = corpus.chunk(docs, CHUNK_SIZE, CHUNK_OVERLAP)
    start = time.process_time()
    embeddings = load_embeddings(out_dir)
    hybrid = retriever(chunks, minilm.sentence_encoder(), embeddings)
    halves, old = {}, {}
    for split in questions.SPLITS:
        qs = questions.load(split)[:limit] if limit else questions.load(split)
        old[split] = {q["id"]: q for q in first[split]["questions"]}
        halves[split] = [{"q": q, "relevant": questions.relevant(q, docs, chunks), "gold": gold_chunk(q, docs, chunks),
                          "retrieved": hybrid.rank(q.question, k)} for q in qs]
        for it in halves[split]:
            if it["retrieved"] != old[split][it["q"].id]["retrieved"][:k] or it["gold"] != old[split][it["q"].id]["gold_chunk"]:
                raise ValueError(f"{it['q'].id}: the retrieval differs from the first run's")
    retrieval_seconds = round(time.process_time() - start, 1)
    model, tokenizer, model_log = load("smollm2-135m-instruct")
    template = model_log["chat_template"]
    langs = {it["q"].id: language(it["q"]) for half in halves.values() for it in half}
    rag = f"rag-{k}"

    def reused(split, name):
        return [{"id": it["q"].id, **old[split][it["q"].id][name]} for it in halves[split]]

    # the development half: every reader with the same top-k chunks
    dev_answers = {"closed": reused("dev", "closed"), f"first/{rag}": reused("dev", rag)}
    dev_seconds = {}
    for reader in readers:
        dev_answers[f"{reader}/{rag}"], dev_seconds[f"{reader}/{rag}"] = answer_all(
            model, tokenizer, template, halves["dev"], "rag", chunks, k, reader=reader)
    dev = {name: summary(rows, langs) for name, rows in dev_answers.items()}
    for name in dev:
        print(f"dev {name}: {dev[name]['all']['right']}/{len(dev_answers[name])} right", flush=True)
    chosen = choose_reader({name.split("/")[0]: s for name, s in dev.items() if name != "closed"})

    # the test half, a second time, with the chosen reader
    test_answers = {"closed": reused("test", "closed"), f"first/{rag}": reused("test", rag), "first/gold": reused("test", "gold")}
    test_seconds = {}
    if chosen != "first":
        for name, condition in ((f"{chosen}/{rag}", "rag"), (f"{chosen}/gold", "gold")):
            test_answers[name], test_seconds[name] = answer_all(model, tokenizer, template, halves["test"], condition,
                                                                chunks, k, reader=chosen)
    test = {name: summary(rows, langs) for name, rows in test_answers.items()}
    for name in test:
        print(f"test {name}: {test[name]['all']['right']}/{len(test_answers[name])} right", flush=True)

    # the probability measure, test half, chosen reader's prompt
    start = time.process_time()
    logprob = {"closed": [], rag: [], "gold": []}
    for it in halves["test"]:
        q, phrase = it["q"], it["q"].answers[0]
        for name, sources in (("closed", []), (rag, it["retrieved"][:k]), ("gold", [it["gold"]])):
            prompt = probe_prompt(q, [chunks[i] for i in sources], template, chosen)
            logprob[name].append(key_phrase_logprob(model, tokenizer, prompt, phrase))
    probe_seconds = round(time.process_time() - start, 1)
    probe = {"reader": chosen, "text": f"prompt (no prefill) + {PROBE_PREFIX.strip()!r} + ' ' + first key phrase; "
                                         "the phrase's tokens scored (nats)",
             "mean": {name: float(np.mean(v)) for name, v in logprob.items()},
             "gain": {name: gains(logprob["closed"], logprob[name]) for name in (rag, "gold")},
             "cpu_seconds": probe_seconds}
    for name in (rag, "gold"):
        g = probe["gain"][name]
        print(f"ln P(key phrase) {name} - closed: mean {g['mean_gain']:+.2f} nats, positive {g['positive']}/{g['n']}", flush=True)

    def tables(answers, names):
        closed = [r["right"] for r in answers["closed"]]
        return {name: contingency(closed, [r["right"] for r in answers[name]]) for name in names}

    def per_question(split, answers, extra=None):
        out = []
        for i, it in enumerate(halves[split]):
            q = it["q"]
            row = {"id": q.id, "question": q.question, "answers": list(q.answers), "language": langs[q.id],
                   "doc": q.doc, "relevant": sorted(it["relevant"]), "gold_chunk": it["gold"], "retrieved": it["retrieved"],
                   **{name: {key: v for key, v in rows[i].items() if key != "id"} for name, rows in answers.items()}}
            if extra:
                row["logprob"] = {name: v[i] for name, v in extra.items()}
            out.append(row)
        return out

    log.update(rounded({
        "recipe": {"model": "smollm2-135m-instruct", "decoding": "greedy", "max_new_tokens": MAX_NEW_TOKENS,
                   "chunks": {"size": CHUNK_SIZE, "overlap": CHUNK_OVERLAP, "count": len(chunks)},
                   "retriever": f"Hybrid([BM25, Dense(MiniLM)]), reciprocal rank fusion, depth {DEPTH}",
                   "embeddings": f"{EMBEDDINGS_FILE} (float16)", "k": k,
                   "k_chosen_by": "the first run: development accuracy over k in (1, 3), ties to the smaller k",
                   "readers": {name: {"instruction": READERS[name][0], "prefill": READERS[name][1]}
                               for name in ("first", *readers)},
                   "reader": chosen,
                   "reader_chosen_by": "development accuracy with the top k chunks, ties to the shorter prompt",
                   "closed_book_instruction": CLOSED_BOOK_INSTRUCTION,
                   "scoring": "right when a key phrase appears (tinylm.rag.questions.answered)",
                   "first_run": {"commit": first["commit"]["commit"], "cpu_seconds": first["cpu_seconds"],
                                 "reused": "closed-book answers (both halves) and the first reader's answers"},
                   "test_scored": "twice: first with the first reader (chosen on made-up questions), then with the "
                                  "reader chosen on the development half after that result was seen",
                   "book_digest": corpus.digest(docs)},
        "retrieval_cpu_seconds": retrieval_seconds,
        "dev": {"summary": dev, "tables": tables(dev_answers, [n for n in dev_answers if n != "closed"]),
                "cpu_seconds": dev_seconds, "questions": per_question("dev", dev_answers)},
        "test": {"summary": test, "tables": tables(test_answers, [n for n in test_answers if n != "closed"]),
                 "cpu_seconds": test_seconds, "questions": per_question("test", test_answers, logprob)},
        "probe": probe,
    }))
    if limit:
        log.pop("_cpu_start", None)
        return log
    return studies.save(STUDY, log)
