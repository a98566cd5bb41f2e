"""RAG-Fusion: a language model asks the question several ways, and the rankings are fused.

A reader's question and the passage that answers it often use different words.  RAG-Fusion
(Rackauckas, 2024) lets a language model write a few **rephrasings** (改写) of the question,
retrieves chunks for the original question and for every rephrasing with the same retriever, and
merges the rankings by reciprocal rank fusion (:func:`tinylm.rag.retrieval.reciprocal_rank_fusion`):
a chunk that several phrasings rank high comes first.  The original question is always one of the
queries, so a bad rephrasing can dilute the ranking but never replace it.

The steps, one function each:

- :func:`rewrite_messages` is the chat prompt: a system turn that says what to do, and three
  worked examples (few-shot), because SmolLM2-135M-Instruct, asked plainly for "four rephrasings,
  one per line", answers the question instead of rephrasing it.
- :func:`rewrite` samples ``n`` rephrasings at once (one batch of ``n`` copies of the prompt,
  seeded sampling at a low temperature, each row stopped at the end of its first line).
- :func:`queries` cleans them: numbering, bullets and quotes stripped, empty lines, duplicates and
  copies of the question dropped, the original question first.
- :class:`RagFusion` is a retriever like the others (``rank(query, k)``): it looks the
  rephrasings up (computed before, or by a function it is given), ranks each with its base
  retriever ``depth`` deep, and fuses.

:func:`run` is the study ``python -m tinylm study rag-retrieval``: on the development questions
it chooses the chunking (size and overlap) and the RAG-Fusion settings, records the whole grid,
then scores BM25, dense, hybrid and RAG-Fusion once on the test questions, English and Chinese
apart, and writes ``results/rag.json``.  It keeps what the lab needs (the chunk embeddings and
every question's rephrasings) under ``checkpoints/study/rag-retrieval/``.

There is no reranker here: a reranker reads the question and a chunk *together* (a
cross-encoder), and the only encoder available offline, all-MiniLM-L6-v2, is a bi-encoder that
embeds them apart.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from . import corpus, questions, retrieval
from .retrieval import RRF_K, reciprocal_rank_fusion

STUDY = "rag-retrieval"
N_REWRITES = 4
"""Rephrasings written per question (the study tries fusing the first 1, 2, 3 or 4)."""
DEPTH = 50
"""How deep each ranking goes: the rankings fused, and the rankings scored (MRR counts a first
relevant chunk up to this rank)."""
MAX_NEW_TOKENS = 24
TEMPERATURE = 0.5
TOP_P = 0.9

SYSTEM = ("You help search a textbook about language models (tokens, neural networks, transformers, "
          "training, alignment). Rephrase the user's question in different words, keeping its meaning "
          "and its technical terms. Reply with the rephrased question only, in the language of the question.")
SHOTS = (("How does a cat see in the dark?", "How are cats able to see at night?"),
         ("What is the capital of France?", "Which city is France's capital?"),
         ("Why do leaves change colour in autumn?", "What makes leaves turn red and yellow in the fall?"))
"""Worked examples, about other things than the book so that they cannot leak an answer."""

SIZES = (64, 128, 256)
OVERLAPS = (0.0, 0.25)
"""The chunkings tried on the development questions: words per chunk, and the fraction of a
chunk shared with the next."""
BASES = ("bm25", "dense", "hybrid")

_CJK = re.compile(r"[\u4e00-\u9fff]")
_BULLET = re.compile(r"^\s*(?:[-*•]+|\(?\d+[.)、:]|[a-d][.)])\s*")
_LABEL = re.compile(r"^\s*(?:rephrased|rewritten|rewrite|question|query)[^:：]{0,20}[:：]\s*", re.I)


def language(text: str) -> str:
    """``zh`` if the text has a Chinese character, else ``en``."""
    return "zh" if _CJK.search(text) else "en"


# ----------------------------------------------------------------------------- rephrasing

def rewrite_messages(question: str) -> list[dict[str, str]]:
    """The chat that asks for one rephrasing of ``question``."""
    retrieval._check_query(question)
    messages = [{"role": "system", "content": SYSTEM}]
    for asked, rephrased in SHOTS:
        messages += [{"role": "user", "content": asked}, {"role": "assistant", "content": rephrased}]
    return messages + [{"role": "user", "content": question}]


def _clean(line: str) -> str:
    line = _LABEL.sub("", _BULLET.sub("", line.strip()))
    return line.strip().strip("\"'“”‘’「」").strip()


def _key(text: str) -> str:
    return re.sub(r"[\W_]+", " ", text.lower()).strip()


def queries(question: str, rewrites: Sequence[str], n: int | None = None) -> list[str]:
    """The queries RAG-Fusion searches with: ``question`` first, then up to ``n`` distinct
    rephrasings from ``rewrites`` (texts the model wrote; each may hold several lines, one
    rephrasing a line).  Numbering, bullets, labels and quotes are stripped; empty lines, lines
    without a letter, repeats and copies of the question (ignoring case and punctuation) dropped."""
    retrieval._check_query(question)
    if n is not None and n < 0:
        raise ValueError(f"the number of rephrasings must be at least 0, got {n}")
    out, seen = [question], {_key(question)}
    for text in rewrites:
        for line in str(text).splitlines():
            if n is not None and len(out) > n:
                return out
            line = _clean(line)
            key = _key(line)
            if key and re.search(r"[^\W\d_]", key) and key not in seen:
                seen.add(key)
                out.append(line)
    return out


def rewrite(model, tokenizer, question: str, n: int = N_REWRITES, seed: int = 0, template: str | None = None,
            max_new_tokens: int = MAX_NEW_TOKENS) -> list[str]:
    """``n`` rephrasings of ``question`` as the model wrote them (raw; clean them with
    :func:`queries`): ``n`` copies of the prompt in one batch, sampled at temperature
    :data:`TEMPERATURE` with nucleus :data:`TOP_P` and ``seed``, each stopped at its first
    newline or the end of the model's turn."""
    from ..inference.sampling import Sampler, generate
    from ..pretrained.smollm2 import chat_prompt

    if n < 1:
        raise ValueError(f"ask for at least one rephrasing, got n={n}")
    ids = tokenizer.encode(chat_prompt(rewrite_messages(question), template))
    stop = set(tokenizer.encode("\n"))
    eos = getattr(model.config, "eos_id", None)
    if eos is not None:
        stop.add(int(eos))
    sampler = Sampler(temperature=TEMPERATURE, top_p=TOP_P, seed=seed)
    rows = generate(model, [ids] * n, max_new_tokens, sampler, stop=sorted(stop))
    return [tokenizer.decode(row).strip() for row in rows]


# ----------------------------------------------------------------------------- the retriever

class RagFusion:
    """A retriever that searches with the question and its rephrasings and fuses the rankings.

    ``base`` is any retriever (``rank(query, k)``); ``rewrites`` either maps a question to the
    model's rephrasings (read from a cache) or is a function from a question to them; ``n`` is how
    many distinct rephrasings are used (all if None); each ranking is ``depth`` deep and the
    rankings are fused with the constant ``k``."""

    def __init__(self, base, rewrites: Mapping[str, Sequence[str]] | Callable[[str], Sequence[str]],
                 n: int | None = None, depth: int = DEPTH, k: int = RRF_K):
        if depth < 1:
            raise ValueError(f"the depth of a ranking is at least 1, got {depth}")
        self.base, self.rewrites, self.n, self.depth, self.k = base, rewrites, n, depth, k

    def queries(self, query: str) -> list[str]:
        if callable(self.rewrites):
            found = self.rewrites(query)
        else:
            if query not in self.rewrites:
                raise KeyError(f"no rephrasings stored for the query {query[:60]!r}")
            found = self.rewrites[query]
        return queries(query, found, self.n)

    def rank(self, query: str, k: int = 10) -> list[int]:
        rankings = [self.base.rank(q, self.depth) for q in self.queries(query)]
        return reciprocal_rank_fusion(rankings, self.k, top=k)


class CachedEncoder:
    """A sentence encoder that embeds each distinct text once (a study asks for the same
    queries again at every chunking)."""

    def __init__(self, encoder):
        self.encoder, self.cache = encoder, {}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        new = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if new:
            for t, e in zip(new, np.asarray(self.encoder.embed(new), dtype=np.float32)):
                self.cache[t] = e
        return np.stack([self.cache[t] for t in texts])


# ----------------------------------------------------------------------------- measuring

def relevant_sets(qs: Sequence[questions.Question], docs, chunks) -> list[set[int]]:
    """Each question's relevant chunks; a question whose evidence no chunk holds half of gets
    ``{-1}``, a chunk that is never ranked, so it counts as a miss (the chunking is to blame)."""
    return [questions.relevant(q, docs, chunks) or {-1} for q in qs]


def scores(rankings: Sequence[Sequence[int]], relevant: Sequence[set[int]]) -> dict:
    """recall@1, recall@5 and MRR of ``rankings`` (any list of the same length as ``relevant``)."""
    return {"recall@1": retrieval.recall_at(rankings, relevant, 1),
            "recall@5": retrieval.recall_at(rankings, relevant, 5),
            "mrr": retrieval.mean_reciprocal_rank(rankings, relevant), "n_questions": len(rankings)}


def retrievers(chunks, encoder, embeddings) -> dict:
    """BM25, dense (with the given chunk embeddings) and their hybrid, over ``chunks``."""
    bm25 = retrieval.BM25(chunks)
    dense = retrieval.Dense(encoder, chunks, embeddings)
    return {"bm25": bm25, "dense": dense, "hybrid": retrieval.Hybrid([bm25, dense], depth=DEPTH)}


def half(embeddings) -> np.ndarray:
    """Embeddings as float16 and back: what the lab reads from the cache, so the study ranks
    with exactly the numbers the lab will have."""
    return np.asarray(embeddings, dtype=np.float16).astype(np.float32)


def method_rankings(bases: dict, qs, rewrites: Mapping[str, Sequence[str]], ns=range(1, N_REWRITES + 1)) -> dict:
    """{method: rankings of ``qs``}: each base retriever alone, and RAG-Fusion over each base with
    the first ``n`` rephrasings for each ``n`` in ``ns`` (named ``fusion-BASE-N``)."""
    out = {}
    for name, base in bases.items():
        memo = {}

        def ranked(text, base=base, memo=memo):
            if text not in memo:
                memo[text] = base.rank(text, DEPTH)
            return memo[text]

        out[name] = [ranked(q.question) for q in qs]
        for n in ns:
            out[f"fusion-{name}-{n}"] = [
                reciprocal_rank_fusion([ranked(t) for t in queries(q.question, rewrites[q.question], n)], RRF_K, top=DEPTH)
                for q in qs]
    return out


def _chunking_name(size: int, overlap: int) -> str:
    return f"{size}/{overlap}"


def run(out_dir: Path | None = None, limit: int | None = None, sizes: Sequence[int] = SIZES) -> dict:
    """The study ``rag-retrieval`` (see the module docstring); ``limit`` (the first questions of
    each split) and ``sizes`` make a pilot smaller."""
    import gc

    import torch

    import tinylm
    from ..pretrained import minilm
    from ..usage import studies
    from ..results import rounded

    torch.set_num_threads(1)
    log = studies.started()
    folder = studies.output_dir(STUDY, out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    docs = corpus.load_book()
    every = questions.load()
    dev, test = [q for q in every if q.split == "dev"][:limit], [q for q in every if q.split == "test"][:limit]
    every = dev + test
    if limit is not None:
        log["pilot"] = {"limit": limit, "sizes": list(sizes)}
    log.update({"corpus_digest": corpus.digest(docs), "questions": {
        "dev": len(dev), "test": len(test),
        "dev_zh": sum(language(q.question) == "zh" for q in dev),
        "test_zh": sum(language(q.question) == "zh" for q in test)}})
    cpu = {}

    # 1. every question's rephrasings, by SmolLM2 (then freed)
    t = time.process_time()
    model, tokenizer, model_log = tinylm.load("smollm2-135m-instruct")
    raw = {q.question: rewrite(model, tokenizer, q.question, N_REWRITES, seed=0, template=model_log["chat_template"])
           for q in every}
    del model, tokenizer
    gc.collect()
    cpu["rewrites"] = time.process_time() - t
    log["rewriting"] = {"model": "smollm2-135m-instruct", "n": N_REWRITES, "temperature": TEMPERATURE,
                        "top_p": TOP_P, "seed": 0, "max_new_tokens": MAX_NEW_TOKENS, "system": SYSTEM,
                        "shots": [list(s) for s in SHOTS],
                        "distinct_rewrites_mean": float(np.mean([len(queries(q, r)) - 1 for q, r in raw.items()]))}

    # 2. every chunking: embed the chunks, rank the dev questions every way
    t = time.process_time()
    encoder = CachedEncoder(minilm.sentence_encoder())
    encoder.embed(sorted({s for q, r in raw.items() for s in queries(q, r)}))      # all queries at once
    cpu["embed_queries"] = time.process_time() - t
    grid, embedded = {}, {}
    cpu["embed_chunks"] = 0.0
    for size in sizes:
        for frac in OVERLAPS:
            overlap = int(size * frac)
            name = _chunking_name(size, overlap)
            chunks = corpus.chunk(docs, size, overlap)
            t = time.process_time()
            embedded[name] = half(encoder.encoder.embed([c.text for c in chunks]))
            cpu["embed_chunks"] += time.process_time() - t
            relevant = relevant_sets(dev, docs, chunks)
            ranked = method_rankings(retrievers(chunks, encoder, embedded[name]), dev, raw)
            grid[name] = {"size": size, "overlap": overlap, "chunks": len(chunks),
                          "dev_without_relevant_chunk": sum(r == {-1} for r in relevant),
                          "methods": {m: scores(r, relevant) for m, r in ranked.items()}}

    # 3. choose on dev: the chunking by the mean of recall@5 + MRR over BM25, dense and hybrid;
    #    then RAG-Fusion's base retriever and number of rephrasings by recall@5, then MRR
    def merit(s):
        return s["recall@5"] + s["mrr"]

    chunking = max(grid, key=lambda c: (np.mean([merit(grid[c]["methods"][b]) for b in BASES]), c))
    fused = {m: s for m, s in grid[chunking]["methods"].items() if m.startswith("fusion-")}
    best_fusion = max(fused, key=lambda m: (fused[m]["recall@5"], fused[m]["mrr"], -int(m.rsplit("-", 1)[1])))
    _, fusion_base, fusion_n = best_fusion.split("-")
    size, overlap = grid[chunking]["size"], grid[chunking]["overlap"]
    chosen = {"chunk_size": size, "overlap": overlap, "fusion_base": fusion_base, "fusion_rewrites": int(fusion_n),
              "how": "on the development questions: the chunking with the highest mean of recall@5 + MRR over "
                     "BM25, dense and hybrid; then RAG-Fusion's base retriever and number of rephrasings with "
                     "the highest recall@5 (ties: MRR, then fewer rephrasings)"}

    # 4. once on test, with the chosen settings
    chunks = corpus.chunk(docs, size, overlap)
    bases = retrievers(chunks, encoder, embedded[chunking])
    ranked = method_rankings(bases, test, raw, ns=[int(fusion_n)])
    methods = {"bm25": ranked["bm25"], "dense": ranked["dense"], "hybrid": ranked["hybrid"],
               "rag-fusion": ranked[best_fusion]}
    relevant = relevant_sets(test, docs, chunks)
    table = {}
    for lang in ("all", "en", "zh"):
        keep = [i for i, q in enumerate(test) if lang == "all" or language(q.question) == lang]
        if keep:
            table[lang] = {m: scores([r[i] for i in keep], [relevant[i] for i in keep]) for m, r in methods.items()}
    per_question = {q.id: {m: retrieval.first_relevant_rank(r[i], relevant[i]) for m, r in methods.items()}
                    for i, q in enumerate(test)}

    # 5. what the lab reads: the chunk embeddings (float16) and the rephrasings
    np.save(folder / "chunk_embeddings.npy", embedded[chunking].astype(np.float16))
    (folder / "rewrites.json").write_text(json.dumps(
        {"chunk_size": size, "overlap": overlap, "rewrites": {q.id: {"question": q.question, "raw": raw[q.question]}
                                                               for q in every}},
        ensure_ascii=False, indent=1) + "\n", encoding="utf-8")

    cpu = {k: round(v, 1) for k, v in cpu.items()}
    log.update({"chosen": chosen, "dev_grid": rounded(grid), "test": rounded(table),
                "test_first_relevant_rank": per_question, "depth": DEPTH, "rrf_k": RRF_K,
                "cpu_seconds_by_step": cpu, "files": ["chunk_embeddings.npy", "rewrites.json"],
                "encoder_max_word_pieces": 256})
    from .. import results
    results.save("rag", rounded({
        "what": "retrieval on the book's test questions (held out; settings chosen on the development half)",
        "methods": table["all"], "by_language": {k: v for k, v in table.items() if k != "all"},
        "chosen": chosen, "corpus_digest": log["corpus_digest"], "commit": log["commit"],
        "command": "python -m tinylm study rag-retrieval"}))
    return studies.save(STUDY, log)
