"""Vector indexes: finding the nearest embeddings among many, exactly or approximately.

Dense retrieval (:class:`tinylm.rag.retrieval.Dense`) compares a query's embedding with every
chunk's.  For the book's few hundred chunks that is instant; for millions it is not, and a
*vector database* (向量数据库) answers with an *approximate nearest-neighbour* (ANN, 近似最近邻)
index instead: it looks at a small part of the collection and usually, not always, finds the
true nearest ones.  The price is measured as *recall@k* against exact search.

- :func:`exact_top_k` is our reference: brute force in NumPy, the inner product of unit vectors
  (their cosine similarity) with every stored vector, best first, ties broken by the lower
  index.  It is the ground truth every index is measured against.
- :func:`flat` is faiss's exact index (``IndexFlatIP``): the same brute force, in optimised C++.
  A test checks it returns the same top-k as :func:`exact_top_k`.
- :func:`hnsw` is a *hierarchical navigable small world* graph (Malkov & Yashunin, 2018): every
  vector is a node linked to about ``M`` near neighbours (``2 M`` on the bottom layer), with
  sparser layers on top for long jumps.  A search walks greedily down the layers and keeps a
  list of ``efSearch`` candidates on the bottom one; a longer list finds more true neighbours
  and costs more time.  ``efConstruction`` is the same list's length while the graph is built.
- :func:`ivf_flat` is an *inverted file*: k-means cuts the space into ``nlist`` cells, each
  vector is stored in its cell's list, and a query scans only the ``nprobe`` nearest cells.
- :func:`ivf_pq` adds *product quantisation* (Jégou, Douze & Schmid, 2011): each vector is cut
  into ``m`` sub-vectors and each sub-vector is replaced by the index (one byte for
  ``nbits=8``) of its nearest centroid in a codebook of ``2**nbits`` learnt for that slot.  A
  384-dimensional float32 vector of 1536 bytes becomes ``m`` bytes; scores become approximate.

Why faiss (Johnson, Douze & Jégou, 2021): one library has all four kinds of index (flat, HNSW,
IVF, PQ and their combinations) behind one interface, so they can be compared on the same
vectors; it is the engine many RAG stacks and vector databases build on; and ``faiss-cpu``
installs as a wheel, with no compiler needed.

Cost is measured as CPU time (``time.process_time``) on one thread (:func:`single_thread`),
never wall time, so that a busy machine does not change the numbers much.  The memory of an
index is the size of its serialised form (:func:`index_bytes`): the vectors or codes it stores
plus its graph, lists or codebooks.

The study ``python -m tinylm study rag-index`` (:func:`run`) embeds over 100,000 lines of
Shakespeare with MiniLM and measures every index against exact search: the trade-off between
recall@10, CPU time per query, build time and memory.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Callable, Sequence

import faiss
import numpy as np

UNIT_TOLERANCE = 1e-3
"""How far from 1 the length of a vector may be for :func:`exact_top_k` to accept it as a unit vector."""


# ----------------------------------------------------------------------------- input

def as_matrix(x, name: str = "vectors", dim: int | None = None) -> np.ndarray:
    """``x`` (NumPy array, torch tensor or list of rows) as a C-contiguous float32 matrix, checked:
    two dimensions, at least one row, ``dim`` columns if given, finite values."""
    if hasattr(x, "detach"):                                   # a torch tensor
        x = x.detach().cpu().numpy()
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if x.ndim != 2:
        raise ValueError(f"{name} must be a matrix (n, d), one vector a row; got shape {x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty: there is nothing to search")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name} have dimension {x.shape[1]}, the index holds vectors of dimension {dim}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    return x


def unit_rows(x) -> np.ndarray:
    """Each row scaled to length 1, so that the inner product of two rows is their cosine."""
    x = as_matrix(x)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError("a zero vector has no direction and cannot be normalised")
    return x / norms


def _check_k(k: int, n: int) -> int:
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if k > n:
        raise ValueError(f"k={k} is larger than the index, which holds {n} vectors")
    return int(k)


# ----------------------------------------------------------------------------- exact search

def exact_top_k(vectors, queries, k: int, block: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` stored vectors with the largest inner product with each query, by brute force.

    Both ``vectors`` (n, d) and ``queries`` (q, d) must be unit vectors, so the inner product
    is the cosine similarity.  Returns ``(scores, ids)``, both (q, k), best first; equal scores
    are ordered by the lower index.  Queries are done ``block`` at a time, so the (block, n)
    score matrix stays small.
    """
    vectors = as_matrix(vectors, "vectors")
    queries = as_matrix(queries, "queries", dim=vectors.shape[1])
    n = vectors.shape[0]
    k = _check_k(k, n)
    for name, x in (("vectors", vectors), ("queries", queries)):
        if np.abs(np.linalg.norm(x, axis=1) - 1).max() > UNIT_TOLERANCE:
            raise ValueError(f"the {name} are not unit vectors: normalise them first (unit_rows)")
    scores = np.empty((len(queries), k), dtype=np.float32)
    ids = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), block):
        s = queries[start:start + block] @ vectors.T                  # (block, n) cosines
        kth = np.partition(s, n - k, axis=1)[:, n - k]               # each row's k-th largest score
        for row, (r, t) in enumerate(zip(s, kth), start=start):
            candidates = np.flatnonzero(r >= t)                       # all of the top k, ties included
            best = candidates[np.lexsort((candidates, -r[candidates]))][:k]   # score, then index
            ids[row], scores[row] = best, r[best]
    return scores, ids


# ----------------------------------------------------------------------------- faiss indexes

def single_thread() -> None:
    """Make faiss use one thread (its searches and k-means otherwise use every core)."""
    faiss.omp_set_num_threads(1)


def flat(vectors) -> faiss.Index:
    """faiss's exact index: every vector stored as it is, a query compared with all of them."""
    vectors = as_matrix(vectors)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    return index


def hnsw(vectors, M: int = 16, ef_construction: int = 40) -> faiss.Index:
    """An HNSW graph over the vectors (inner product): ``M`` links a node, ``ef_construction``
    candidates kept while inserting (faiss's default is 40).  Built by adding the vectors in order."""
    vectors = as_matrix(vectors)
    if M < 2 or ef_construction < 1:
        raise ValueError(f"HNSW needs M >= 2 and ef_construction >= 1, got M={M}, ef_construction={ef_construction}")
    index = faiss.IndexHNSWFlat(vectors.shape[1], M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = ef_construction
    index.add(vectors)
    return index


def _trained(index: faiss.Index, vectors: np.ndarray, nlist: int) -> faiss.Index:
    if nlist > len(vectors):
        raise ValueError(f"nlist={nlist} cells need at least as many vectors to train on, got {len(vectors)}")
    index.train(vectors)
    index.add(vectors)
    return index


def ivf_flat(vectors, nlist: int = 1024, seed: int = 0) -> faiss.Index:
    """An inverted file: k-means (seeded) finds ``nlist`` centroids, each vector is stored in the
    list of its nearest centroid; a search scans the lists of the ``nprobe`` nearest centroids."""
    vectors = as_matrix(vectors)
    d = vectors.shape[1]
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    return _trained(index, vectors, nlist)


def ivf_pq(vectors, nlist: int = 1024, m: int = 48, nbits: int = 8, seed: int = 0) -> faiss.Index:
    """An inverted file whose lists hold product-quantised codes: each vector's residual (the
    vector minus its cell's centroid) cut into ``m`` sub-vectors, each stored as a ``nbits``-bit
    codebook index, so ``m * nbits / 8`` bytes a vector."""
    vectors = as_matrix(vectors)
    d = vectors.shape[1]
    if d % m:
        raise ValueError(f"product quantisation cuts a vector into m equal parts: m={m} does not divide d={d}")
    index = faiss.IndexIVFPQ(faiss.IndexFlatIP(d), d, nlist, m, nbits, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    index.pq.cp.seed = seed
    return _trained(index, vectors, nlist)


def set_search(index: faiss.Index, ef_search: int | None = None, nprobe: int | None = None) -> faiss.Index:
    """Set an index's search-time knob: ``efSearch`` of an HNSW graph, ``nprobe`` of an inverted file."""
    if ef_search is not None:
        if not hasattr(index, "hnsw"):
            raise ValueError(f"ef_search is a setting of HNSW indexes, not of {type(index).__name__}")
        if ef_search < 1:
            raise ValueError(f"ef_search must be at least 1, got {ef_search}")
        index.hnsw.efSearch = int(ef_search)
    if nprobe is not None:
        if not hasattr(index, "nprobe"):
            raise ValueError(f"nprobe is a setting of inverted-file indexes, not of {type(index).__name__}")
        if not 1 <= nprobe <= index.nlist:
            raise ValueError(f"nprobe must be between 1 and nlist={index.nlist}, got {nprobe}")
        index.nprobe = int(nprobe)
    return index


def search(index: faiss.Index, queries, k: int, ef_search: int | None = None,
           nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best stored vectors for each query: ``(scores, ids)``, both (q, k), best first.

    Equal scores are put in order of the lower id, as :func:`exact_top_k` does (faiss itself
    lists equal scores in no promised order).  An approximate index may find fewer than ``k``
    vectors; faiss marks the missing places with id -1.
    """
    if index.ntotal == 0:
        raise ValueError("the index is empty: add vectors before searching")
    queries = as_matrix(queries, "queries", dim=index.d)
    k = _check_k(k, index.ntotal)
    set_search(index, ef_search, nprobe)
    scores, ids = index.search(queries, k)
    for row in range(len(ids)):
        order = np.lexsort((ids[row], -scores[row]))
        scores[row], ids[row] = scores[row][order], ids[row][order]
    return scores, ids


def index_bytes(index: faiss.Index) -> int:
    """The memory an index needs, measured as the size of its serialised form in bytes."""
    return int(faiss.serialize_index(index).size)


# ----------------------------------------------------------------------------- measures

def recall_at_k(found, exact) -> float:
    """Recall@k of an approximate search: the share of the exact top-k that it found.

    ``found`` and ``exact`` are (q, k) id matrices (``k`` = ``exact``'s width; only the first
    ``k`` columns of ``found`` count).  Order does not matter: per query, the size of the
    intersection divided by ``k``, averaged over the queries.  Ids of -1 (nothing found) count
    as misses.
    """
    found, exact = np.asarray(found), np.asarray(exact)
    if found.ndim != 2 or exact.ndim != 2 or len(found) != len(exact):
        raise ValueError(f"found and exact must be id matrices with one row per query, got shapes "
                         f"{found.shape} and {exact.shape}")
    k = exact.shape[1]
    if len(exact) == 0 or k == 0:
        raise ValueError("no queries to measure recall on")
    if found.shape[1] < k:
        raise ValueError(f"found has {found.shape[1]} ids a query, fewer than the {k} of the exact top-k")
    hits = [len(set(f[:k].tolist()) & set(e.tolist()) - {-1}) for f, e in zip(found, exact)]
    return float(np.mean(hits) / k)


def cpu_seconds(fn: Callable, *args, **kwargs):
    """``(fn(*args, **kwargs), CPU-seconds it took)``, by ``time.process_time``."""
    start = time.process_time()
    out = fn(*args, **kwargs)
    return out, time.process_time() - start


def cpu_ms_per_query(index: faiss.Index, queries, k: int, repeats: int = 3, one_at_a_time: bool = False,
                     **params) -> float:
    """CPU-milliseconds per query of ``index.search`` (the median of ``repeats`` runs over all
    ``queries``).  Batched by default, as a server answering many queries does; with
    ``one_at_a_time`` each query is a separate call (the latency of a single question).  The
    search knobs (``ef_search``, ``nprobe``) are set first."""
    queries = as_matrix(queries, "queries", dim=index.d)
    set_search(index, **params)
    runs = []
    for _ in range(repeats):
        start = time.process_time()
        if one_at_a_time:
            for row in range(len(queries)):
                index.search(queries[row:row + 1], k)
        else:
            index.search(queries, k)
        runs.append(time.process_time() - start)
    return float(np.median(runs) / len(queries) * 1000)


# ----------------------------------------------------------------------------- the study

STUDY = "rag-index"
MIN_CHARS = 20
"""Lines shorter than this (speakers' names, "Exit.", short half-lines) are left out."""
N_QUERIES = 500
K = 10
HNSW_BUILDS = ((8, 40), (16, 40), (32, 40), (16, 200))
"""(M, efConstruction) of each HNSW graph the study builds: M swept at faiss's default
efConstruction, and one slower, more careful build."""
EF_SEARCH = (8, 16, 32, 64, 128, 256)
NLIST = 1024
NPROBE = (1, 2, 4, 8, 16, 32, 64, 128)
PQ_M, PQ_NBITS = 48, 8
SAMPLE_INDEX, SAMPLE_QUERIES = 4000, 200
"""How many index vectors and queries the study keeps (float16) for the lab."""
SAMPLE_VECTORS, SAMPLE_TEXTS = "sample_vectors.npy", "sample.json"


def shakespeare_pieces(min_chars: int = MIN_CHARS) -> list[str]:
    """The text pieces of the study: every line of the Shakespeare corpus (all three splits),
    stripped, at least ``min_chars`` characters, each distinct line once, sorted."""
    from ..data import shakespeare

    corpus = shakespeare()
    return sorted({line.strip() for split in ("train", "valid", "test")
                   for line in corpus.split(split).splitlines() if len(line.strip()) >= min_chars})


def split_pieces(pieces: Sequence[str], n_queries: int = N_QUERIES, seed: int = 0) -> tuple[list[str], list[str]]:
    """Shuffle (seeded) and hold out ``n_queries`` pieces as queries; the rest is the collection."""
    order = list(range(len(pieces)))
    random.Random(seed).shuffle(order)
    return [pieces[i] for i in order[n_queries:]], [pieces[i] for i in order[:n_queries]]


def embed(encoder, texts: Sequence[str], batch_size: int = 128) -> np.ndarray:
    """MiniLM unit vectors of ``texts`` (float32, in their order), encoded shortest first so
    that a batch pads little (the embedding of a text does not depend on its batch)."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    vectors = encoder.embed([texts[i] for i in order], batch_size=batch_size).numpy()
    out = np.empty_like(vectors)
    out[order] = vectors
    return out


def _curve(index, queries, exact_ids, knob: str, values) -> list[dict]:
    points = []
    for v in values:
        _, ids = search(index, queries, K, **{knob: v})
        points.append({knob: v, "recall_at_10": round(recall_at_k(ids, exact_ids), 4),
                       "cpu_ms_per_query": round(cpu_ms_per_query(index, queries, K, **{knob: v}), 4)})
    return points


def _sizes(index, n: int) -> dict:
    size = index_bytes(index)
    return {"bytes": size, "bytes_per_vector": round(size / n, 1)}


def run(out_dir: Path | None = None) -> dict:
    """The study ``rag-index``: exact search against faiss's flat, HNSW, IVF and IVF-PQ indexes
    on MiniLM embeddings of over 100,000 lines of Shakespeare, one thread."""
    import torch

    from ..pretrained import minilm
    from ..usage import studies

    log = studies.started()
    torch.set_num_threads(1)
    single_thread()
    folder = studies.output_dir(STUDY, out_dir)
    folder.mkdir(parents=True, exist_ok=True)

    pieces = shakespeare_pieces()
    texts, query_texts = split_pieces(pieces)
    encoder = minilm.sentence_encoder()
    (vectors, queries), embed_s = cpu_seconds(lambda: (embed(encoder, texts), embed(encoder, query_texts)))
    n, d = vectors.shape
    log["data"] = {
        "source": "lines of the Shakespeare corpus (tinylm.data.shakespeare, all splits), stripped, "
                  f">= {MIN_CHARS} characters, distinct; shuffled with seed 0, {N_QUERIES} held out as queries",
        "pieces": len(pieces), "index_vectors": n, "queries": len(queries), "dim": d,
        "mean_chars": round(float(np.mean([len(t) for t in texts])), 1),
        "encoder": minilm.NAME, "embed_cpu_seconds": round(embed_s, 1),
        "embed_cpu_ms_per_piece": round(embed_s / (n + len(queries)) * 1000, 2),
        "float32_bytes": int(vectors.nbytes)}

    # the lab's sample: the first vectors of the collection and the first queries, float16
    np.save(folder / SAMPLE_VECTORS, np.concatenate([vectors[:SAMPLE_INDEX], queries[:SAMPLE_QUERIES]]).astype(np.float16))
    (folder / SAMPLE_TEXTS).write_text(json.dumps(
        {"index": texts[:SAMPLE_INDEX], "queries": query_texts[:SAMPLE_QUERIES]}, ensure_ascii=False, indent=0),
        encoding="utf-8")
    log["sample"] = {"index_vectors": SAMPLE_INDEX, "queries": SAMPLE_QUERIES, "dtype": "float16",
                     "files": [SAMPLE_VECTORS, SAMPLE_TEXTS]}

    # ground truth: exact search in NumPy, and faiss's flat index
    (exact_scores, exact_ids), exact_s = cpu_seconds(exact_top_k, vectors, queries, K)
    index, build_s = cpu_seconds(flat, vectors)
    flat_scores, flat_ids = search(index, queries, K)
    log["exact"] = {"k": K, "numpy_cpu_ms_per_query": round(exact_s / len(queries) * 1000, 3)}
    log["flat"] = {"build_cpu_seconds": round(build_s, 2), **_sizes(index, n),
                   "same_ids_as_numpy": round(float((flat_ids == exact_ids).mean()), 4),
                   "max_score_difference": float(np.abs(flat_scores - exact_scores).max()),
                   "recall_at_10": round(recall_at_k(flat_ids, exact_ids), 4),
                   "cpu_ms_per_query_batched": round(cpu_ms_per_query(index, queries, K), 4),
                   "cpu_ms_per_query_one_at_a_time": round(cpu_ms_per_query(index, queries, K, one_at_a_time=True), 4)}
    del index

    log["hnsw"] = []
    for M, ef_construction in HNSW_BUILDS:
        index, build_s = cpu_seconds(hnsw, vectors, M, ef_construction)
        log["hnsw"].append({"M": M, "ef_construction": ef_construction, "build_cpu_seconds": round(build_s, 1),
                            **_sizes(index, n), "max_level": int(index.hnsw.max_level),
                            "curve": _curve(index, queries, exact_ids, "ef_search", EF_SEARCH),
                            "cpu_ms_per_query_one_at_a_time_ef64":
                                round(cpu_ms_per_query(index, queries, K, one_at_a_time=True, ef_search=64), 4)})
        del index

    for name, build, extra in (("ivf_flat", ivf_flat, {}), ("ivf_pq", ivf_pq, {"m": PQ_M, "nbits": PQ_NBITS})):
        index, build_s = cpu_seconds(build, vectors, NLIST, **extra)
        log[name] = {"nlist": NLIST, **extra, "build_cpu_seconds": round(build_s, 1), **_sizes(index, n),
                     "curve": _curve(index, queries, exact_ids, "nprobe", NPROBE)}
        del index
    from ..system import peak_memory_mb

    log["peak_memory_mb"] = round(peak_memory_mb())
    log["notes"] = ("CPU time by time.process_time on one thread (faiss.omp_set_num_threads(1)); latencies are "
                    "the median of 3 batched searches of all queries, divided by their number; bytes are the "
                    "serialised index; with efSearch 8 < k = 10 faiss still returns 10 ids, from the nodes its "
                    "search visited")
    return studies.save(STUDY, log)
