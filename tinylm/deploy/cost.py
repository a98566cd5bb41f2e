"""What a token costs: FLOPs and bytes per token, prefill against decode, and the roofline.

Stage 4's calculator (:mod:`tinylm.analysis.compute`) counts the arithmetic of a model:
:func:`~tinylm.analysis.compute.inference_flops` says a forward pass costs about 2 FLOPs per
parameter per token.  On real hardware arithmetic is only half the story: the weights must also
be *moved* from memory to the processor, and a processor moves bytes far more slowly than it
multiplies them.  This module counts both, for any
:class:`~tinylm.models.transformer.TransformerConfig`:

==================  ============================================  ==========================
                    FLOPs                                         bytes moved
==================  ============================================  ==========================
decode, 1 token     2 N + 4 x layers x context x d_model          weights once + the KV cache
decode, B at once   B x (the same)                                weights once + B KV caches
prefill, n tokens   2 N n + 4 x layers x d_model x n (n + 1) / 2  weights once + n tokens' KV
==================  ============================================  ==========================

N is the number of weights in matrix products (:func:`parameter_counts`; the output layer
counts, the embedding look-up does not), 4 x layers x context x d_model is attention: the
scores q.k and the weighted sum of the values, 2 FLOPs per multiply-add each, over ``context``
keys in every layer.  Activations are left out of the bytes: for one token they are a few
kilobytes, against hundreds of megabytes of weights.

**Arithmetic intensity** (算术强度) is FLOPs per byte moved.  A processor that does ``peak``
FLOP/s and moves ``bandwidth`` bytes/s can attain at most ``min(peak, intensity x bandwidth)``
FLOP/s: the **roofline** (屋顶线模型; Williams et al., 2009).  Where the two meet, at
``peak / bandwidth`` FLOP/byte (the *ridge point*), a computation turns from memory-bound to
compute-bound.  Decoding one token reads every weight to do 2 FLOPs with it: float32 weights
give it an intensity near 2 / 4 = 0.5 FLOP/byte, far below any processor's ridge point, so
decoding is **memory-bound** and its speed is the memory bandwidth (内存带宽) divided by the
bytes of the model.  Prefill (预填充) reads the weights once for all n prompt tokens, an
intensity near n / 2: compute-bound.  Decoding B sequences together (batching) reads the
weights once for B tokens, so it raises the intensity, and the throughput, until it too reaches
the ridge (Pope et al., 2023).

:func:`memory_bandwidth` and :func:`peak_flops` measure this machine's two numbers on one thread;
:func:`time_prefill` and :func:`time_decode` time a model against them.  ``python -m tinylm study
inference-cost`` (:func:`run`) measures SmolLM2-135M this way, and the request lengths of the
paging measurement (:mod:`tinylm.deploy.paging`).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ..analysis.compute import inference_flops

FLOAT32_BYTES = 4


# ----------------------------------------------------------------------------- counting

def parameter_counts(config) -> dict:
    """The parameters of a :class:`~tinylm.models.transformer.TransformerConfig` by what a
    token does with them (a dense decoder; no mixture of experts):

    - ``matmul``: weights of matrix products, each used once per token (2 FLOPs each): the
      attention and MLP projections and the output layer (which, with tied embeddings, *is* the
      token embedding);
    - ``lookup``: tables a token only indexes (the token embedding when untied, learned
      positions): no FLOPs, and one row read;
    - ``other``: normalisation weights and biases (a few FLOPs each, left out of the FLOPs);
    - ``total``: every distinct parameter, what ``model.num_parameters()`` counts.
    """
    c = config
    if getattr(c, "moe_experts", 0):
        raise ValueError("parameter_counts counts dense models; a mixture of experts activates "
                         "only some of its MLPs per token")
    d, kv = c.d_model, c.kv_heads * c.head_dim
    attention = d * d + 2 * d * kv + d * d                         # q, k, v, out
    mlp = (3 if c.mlp == "swiglu" else 2) * d * c.d_ff             # (gate,) up, down
    biases = (d + 2 * kv + d + (2 if c.mlp == "swiglu" else 1) * c.d_ff + d) if c.bias else 0
    norm = d * (2 if c.norm == "layer" and c.bias else 1)          # weight (and bias)
    head = c.vocab_size * d
    matmul = c.n_layers * (attention + mlp) + head
    lookup = (0 if c.tie_embeddings else c.vocab_size * d) + (c.max_len * d if c.positions == "learned" else 0)
    lookup += c.type_vocab_size * d
    other = c.n_layers * (2 * norm + biases) + (norm if c.norm_first else 0) + (norm if c.embedding_norm else 0)
    return {"matmul": matmul, "lookup": lookup, "other": other, "total": matmul + lookup + other}


def kv_bytes_per_token(config, bytes_per_value: int = FLOAT32_BYTES) -> int:
    """Bytes of keys and values one token adds to the cache: layers x 2 x kv_heads x head_dim x
    bytes (SmolLM2 in float32: 30 x 2 x 3 x 64 x 4 = 46,080)."""
    return config.n_layers * 2 * config.kv_heads * config.head_dim * bytes_per_value


def weight_bytes(config, bytes_per_parameter: float = FLOAT32_BYTES) -> float:
    """Bytes of weights one forward pass reads: every matrix and normalisation weight once, and
    one row of each look-up table per token (counted once here)."""
    n = parameter_counts(config)
    rows = (0 if config.tie_embeddings else 1) + (1 if config.positions == "learned" else 0)
    return (n["matmul"] + n["other"] + rows * config.d_model) * bytes_per_parameter


def attention_flops(config, context: int) -> int:
    """FLOPs of one token's attention over ``context`` keys in every layer: q.k for each key and
    the weighted sum of the values, 2 x d_model FLOPs each per layer: 4 x layers x context x d."""
    return 2 * 2 * config.n_layers * int(context) * config.d_model


def decode_flops(config, context: int, batch: int = 1) -> float:
    """FLOPs to decode one token for each of ``batch`` sequences whose caches hold ``context``
    tokens (the new one included): 2 N per token (:func:`tinylm.analysis.compute.inference_flops`)
    plus attention."""
    per_token = inference_flops(parameter_counts(config)["matmul"]) + attention_flops(config, context)
    return batch * per_token


def decode_bytes(config, context: int, batch: int = 1, bytes_per_parameter: float = FLOAT32_BYTES,
                 bytes_per_value: int = FLOAT32_BYTES) -> float:
    """Bytes moved to decode one token for each of ``batch`` sequences: the weights once (all
    sequences share them) and each sequence's cache of ``context`` tokens."""
    return (weight_bytes(config, bytes_per_parameter)
            + batch * int(context) * kv_bytes_per_token(config, bytes_per_value))


def prefill_flops(config, n_tokens: int) -> float:
    """FLOPs of one forward pass over an ``n_tokens`` prompt: 2 N per token, and token i
    attends to i keys (causal), 4 x layers x d x n (n + 1) / 2 in all."""
    n = int(n_tokens)
    return inference_flops(parameter_counts(config)["matmul"], n) + attention_flops(config, n * (n + 1) // 2)


def prefill_bytes(config, n_tokens: int, bytes_per_parameter: float = FLOAT32_BYTES,
                  bytes_per_value: int = FLOAT32_BYTES) -> float:
    """Bytes moved by a prefill: the weights once for all the prompt's tokens, and the keys and
    values written for each of them."""
    return weight_bytes(config, bytes_per_parameter) + int(n_tokens) * kv_bytes_per_token(config, bytes_per_value)


def intensity(flops: float, bytes_moved: float) -> float:
    """Arithmetic intensity: FLOPs per byte moved."""
    if bytes_moved <= 0:
        raise ValueError(f"bytes moved must be positive, got {bytes_moved}")
    return flops / bytes_moved


def roofline(intensity_: float, peak: float, bandwidth: float) -> float:
    """FLOP/s attainable at an arithmetic intensity: min(peak, intensity x bandwidth)."""
    if peak <= 0 or bandwidth <= 0:
        raise ValueError(f"peak and bandwidth must be positive, got {peak} and {bandwidth}")
    return min(peak, intensity_ * bandwidth)


def ridge_point(peak: float, bandwidth: float) -> float:
    """The intensity (FLOP/byte) where the roofline turns: below it memory bounds the speed."""
    return peak / bandwidth


# ----------------------------------------------------------------------------- measuring

class _one_thread:
    """torch on one thread inside the block (the house rule for every measurement)."""

    def __enter__(self):
        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.threads)


def memory_bandwidth(megabytes: int = 256, repeats: int = 5) -> float:
    """Bytes per second this machine moves on one thread, measured by copying a float64 array of
    ``megabytes`` MB (much larger than the caches, so every byte comes from and goes to main
    memory) into another: (bytes read + bytes written) / CPU-seconds, the best of ``repeats``.
    CPU time, not wall time: a process waiting for memory is still running, so it counts, and
    time spent descheduled on a shared machine does not."""
    n = int(megabytes) * 2**20 // 8
    src = np.arange(n, dtype=np.float64)
    dst = np.empty_like(src)
    np.copyto(dst, src)                        # touch every page first
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        np.copyto(dst, src)
        best = min(best, time.process_time() - start)
    return 2 * src.nbytes / best


def read_bandwidth(megabytes: int = 256, repeats: int = 5) -> float:
    """Bytes per second a matrix-vector product reads on one thread: one float32 vector times a
    ``megabytes`` MB matrix (what decoding one token does with every weight matrix), matrix
    bytes / CPU-seconds, the best of ``repeats``.  A read-only stream, and the library's own
    kernel: usually below :func:`memory_bandwidth`, which counts a copy's reads and writes."""
    cols = 1024
    rows = int(megabytes) * 2**20 // (4 * cols)
    weight, x = torch.full((rows, cols), 0.5), torch.full((1, cols), 0.25)   # the values do not change the time
    best = float("inf")
    with _one_thread():
        x @ weight.T
        for _ in range(repeats):
            start = time.process_time()
            x @ weight.T
            best = min(best, time.process_time() - start)
    return weight.numel() * 4 / best


def peak_flops(n: int = 1024, repeats: int = 5) -> float:
    """FLOP/s of a float32 matrix product (n x n by n x n: 2 n^3 FLOPs) on one thread, the best
    of ``repeats``: this machine's practical peak."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    best = float("inf")
    with _one_thread():
        torch.mm(a, b)
        for _ in range(repeats):
            start = time.process_time()
            torch.mm(a, b)
            best = min(best, time.process_time() - start)
    return 2 * n**3 / best


def filled_cache(config, batch: int, context: int, seed: int = 0):
    """A :class:`~tinylm.models.transformer.KVCache` holding ``context`` tokens of random keys and
    values for ``batch`` sequences: what a prefill would leave, without its cost (a decode
    step's time does not depend on the values)."""
    from ..models.transformer import KVCache

    g = torch.Generator().manual_seed(seed)
    cache = KVCache()
    shape = (batch, config.kv_heads, context, config.head_dim)
    for layer in range(config.n_layers):
        cache.keys[layer] = torch.randn(shape, generator=g)
        cache.values[layer] = torch.randn(shape, generator=g)
    cache.length = context
    return cache


@torch.no_grad()
def time_prefill(model, n_tokens: int, repeats: int = 3, seed: int = 0) -> float:
    """CPU-seconds of one forward pass over an ``n_tokens`` prompt (random tokens) with an
    empty cache, the best of ``repeats``, on one thread."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size, (1, n_tokens), generator=g)
    best = float("inf")
    with _one_thread():
        for _ in range(repeats):
            state = model.new_state()
            start = time.process_time()
            model(ids, state)
            best = min(best, time.process_time() - start)
    return best


@torch.no_grad()
def time_decode(model, context: int, batch: int = 1, steps: int = 5, seed: int = 0) -> float:
    """CPU-seconds of one decoding step (one new token for each of ``batch`` sequences whose
    caches hold ``context`` tokens), the best of ``steps`` steps, on one thread."""
    g = torch.Generator().manual_seed(seed)
    best = float("inf")
    with _one_thread():
        cache = filled_cache(model.config, batch, context, seed)
        for _ in range(steps):
            ids = torch.randint(0, model.config.vocab_size, (batch, 1), generator=g)
            start = time.process_time()
            model(ids, cache)
            best = min(best, time.process_time() - start)
    return best


# ----------------------------------------------------------------------------- the study

STUDY = "inference-cost"
PREFILL_TOKENS = (16, 64, 256)
"""Prompt lengths whose prefill the study times."""
DECODE_CONTEXT = 256
"""The decode steps are timed with this many tokens in each sequence's cache, and again with
:data:`SHORT_CONTEXT` (where copying the cache costs little: see :func:`run`)."""
SHORT_CONTEXT = 16
BATCHES = (1, 2, 4, 8, 16, 32, 64)
"""Sequences decoded together."""
OPEN_QUESTIONS = 12
"""Development questions of the book (:mod:`tinylm.rag.questions`) SmolLM2 answers freely for
the paging measurement's chat workload."""
OPEN_MAX_TOKENS = 256
"""The open answers' limit (``max_tokens``): what a contiguous cache reserves beyond the prompt."""
BLOCK_SIZES = (8, 16, 32)
KV_BUDGET_BYTES = 2**30
"""The key/value memory the 'how many requests fit' count assumes: 1 GiB."""
SAMPLES = (2, 4, 8)
"""Parallel samples of one prompt for the sharing measurement."""


def rag_requests(tokenizer) -> dict:
    """Prompt and answer lengths (tokens) of the requests the RAG study made (Lab 32,
    ``results/study-rag-generation.json``): every development and test question, closed book and
    with retrieved sources (each reader the study tried, and the gold chunk), answered greedily
    with at most :data:`tinylm.rag.generation.MAX_NEW_TOKENS` new tokens.  The study recorded each
    prompt's length; an answer's length is its stored text (less the prefill the prompt put in
    the model's mouth) tokenised again, plus the end-of-turn token when it ended before the limit."""
    from ..rag import generation
    from ..usage import studies

    log = studies.load(generation.STUDY)
    prompt, generated, conditions = [], [], set()
    for split in ("dev", "test"):
        for q in log[split]["questions"]:
            for condition, row in q.items():
                if not (isinstance(row, dict) and "answer" in row and "prompt_tokens" in row):
                    continue
                reader = condition.split("/")[0]
                pre = generation.READERS[reader][1] if reader in generation.READERS else ""
                text = row["answer"][len(pre):] if pre and row["answer"].startswith(pre) else row["answer"]
                n = len(tokenizer.encode(text))
                generated.append(min(generation.MAX_NEW_TOKENS, n + 1))
                prompt.append(row["prompt_tokens"])
                conditions.add(condition)
    return {"source": "results/study-rag-generation.json: every request (question x condition: "
                      + ", ".join(sorted(conditions)) + ")",
            "max_tokens": generation.MAX_NEW_TOKENS, "prompt": prompt, "generated": generated}


def open_requests(model, tokenizer, n_questions: int = OPEN_QUESTIONS, max_tokens: int = OPEN_MAX_TOKENS) -> dict:
    """SmolLM2 answers the first ``n_questions`` development questions of the book as a user
    would ask them in a chat (no instruction to be short), greedily, up to ``max_tokens``: the
    lengths of a chat workload whose answers vary."""
    from ..inference.sampling import GREEDY, generate
    from ..pretrained.smollm2 import chat_prompt
    from ..rag import questions

    prompt, generated = [], []
    for q in questions.load("dev")[:n_questions]:
        ids = tokenizer.encode(chat_prompt([{"role": "user", "content": q.question}]))
        out = generate(model, ids, max_tokens, GREEDY)
        prompt.append(len(ids))
        generated.append(len(out) + (1 if len(out) < max_tokens else 0))
    return {"source": f"SmolLM2-135M-Instruct answering the first {n_questions} dev questions of "
                      f"tinylm/rag/book_questions.json in a chat, greedy", "max_tokens": max_tokens,
            "prompt": prompt, "generated": generated}


def paging_table(requests: dict, context: int, block_sizes=BLOCK_SIZES, budget_bytes: int = KV_BUDGET_BYTES,
                 bytes_per_token: int | None = None) -> dict:
    """The waste of each scheme on one workload (fractions of the reserved memory, averaged over
    every decoding step) and the requests that fit in ``budget_bytes`` of keys and values."""
    from . import paging

    per_token = bytes_per_token or paging.SMOLLM2_KV_BYTES_PER_TOKEN
    budget = budget_bytes // per_token
    p, g = requests["prompt"], requests["generated"]
    schemes = {"contiguous, max_tokens": paging.contiguous_usage(p, g, [x + requests["max_tokens"] for x in p]),
               "contiguous, context": paging.contiguous_usage(p, g, [context] * len(p))}
    for size in block_sizes:
        schemes[f"paged, {size}"] = paging.paged_usage(p, g, size)
    out = {}
    for name, usage in schemes.items():
        row = {"waste": round(usage["waste"], 4), "fit": paging.requests_that_fit(budget, usage)}
        if "never_used" in usage:
            row["never_used"] = round(usage["never_used"] / usage["reserved"], 4)
            row["reserved_for_later"] = round(usage["reserved_for_later"] / usage["reserved"], 4)
        out[name] = row
    return {"n": len(p), "mean_prompt": round(sum(p) / len(p), 1), "mean_generated": round(sum(g) / len(g), 1),
            "budget_tokens": budget, "schemes": out}


def sharing_table(requests: dict, samples=SAMPLES, block_size: int = 16) -> dict:
    """Blocks held when each prompt of the workload is sampled n times, each sample as long as
    the recorded answer, with separate prompts or one shared prompt (copy-on-write)."""
    from . import paging

    out = {}
    for n in samples:
        separate = shared = 0
        for p, g in zip(requests["prompt"], requests["generated"]):
            r = paging.shared_prefix_blocks(p, [g] * n, block_size)
            separate, shared = separate + r["separate"], shared + r["shared"]
        out[str(n)] = {"separate": separate, "shared": shared, "saving": round(1 - shared / separate, 4)}
    return out


def run(out_dir=None) -> dict:
    """``python -m tinylm study inference-cost``: this machine's memory bandwidth and matrix
    product peak; SmolLM2-135M's prefill and decode (batched) timed against the roofline they
    make; the request lengths of two workloads and what paging saves on them."""
    import tinylm

    from ..usage import studies

    import os

    log = studies.started()
    log["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]   # others sharing the machine
    torch.manual_seed(0)
    with _one_thread():
        log["machine_measured"] = {"bandwidth": memory_bandwidth(), "peak": peak_flops(),
                                   "read_bandwidth": read_bandwidth(),
                                   "read_recipe": "a float32 vector times a 256 MB float32 matrix (x @ W.T), "
                                                  "matrix bytes / CPU-seconds, best of 5",
                                   "bandwidth_recipe": "np.copyto of a 256 MB float64 array, (read + write) / "
                                                       "CPU-seconds, best of 5",
                                   "peak_recipe": "torch.mm of two 1024 x 1024 float32 matrices, 2 n^3 / "
                                                  "CPU-seconds, best of 5"}
        bandwidth, peak = log["machine_measured"]["bandwidth"], log["machine_measured"]["peak"]
        model, tokenizer, _ = tinylm.load("smollm2-135m-instruct")
        config = model.config
        log["config"] = config.to_dict()
        log["counts"] = {**parameter_counts(config), "weight_bytes": weight_bytes(config),
                         "kv_bytes_per_token": kv_bytes_per_token(config)}
        prefill = {}
        for n in PREFILL_TOKENS:
            seconds = time_prefill(model, n, repeats=3)
            flops, moved = prefill_flops(config, n), prefill_bytes(config, n)
            prefill[str(n)] = {"seconds": seconds, "tokens_per_second": n / seconds, "flops": flops,
                               "bytes": moved, "intensity": flops / moved,
                               "bound_seconds": max(flops / peak, moved / bandwidth)}
        log["prefill"] = prefill
        decode = {}
        for context in (SHORT_CONTEXT, DECODE_CONTEXT):
            rows = {}
            for b in BATCHES:
                seconds = time_decode(model, context, batch=b, steps=5)
                flops, moved = decode_flops(config, context + 1, b), decode_bytes(config, context + 1, b)
                rows[str(b)] = {"seconds": seconds, "tokens_per_second": b / seconds, "flops": flops,
                                "bytes": moved, "intensity": flops / moved,
                                "bound_seconds": max(flops / peak, moved / bandwidth)}
            decode[str(context)] = rows
        log["decode"] = {"recipe": "one step of each batch from a KVCache of random keys and values holding "
                                   "`context` tokens per sequence, best of 5 steps", "contexts": decode}
        cpu = time.process_time()
        rag = rag_requests(tokenizer)
        chat = open_requests(model, tokenizer)
        log["open_answers_cpu_seconds"] = round(time.process_time() - cpu, 1)
    log["workloads"] = {"rag": rag, "open": chat}
    log["paging"] = {name: paging_table(w, config.max_len) for name, w in log["workloads"].items()}
    log["sharing"] = {name: sharing_table(w) for name, w in log["workloads"].items()}
    log["context"] = config.max_len
    return studies.save(STUDY, log)
