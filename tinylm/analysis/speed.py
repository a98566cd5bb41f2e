"""How fast is our GPT?  Training steps against two other implementations, and the KV cache.

    python -m tinylm speed gpt            # measure, print
    python -m tinylm speed gpt --write    # and keep the numbers in results/gpt_speed.json

A training step of :class:`tinylm.models.transformer.DecoderLM` is timed beside two other GPTs of the
same shape, on one thread, with the same batch, loss and optimizer:

- ``transformers``' ``GPT2LMHeadModel`` (the reference implementation of GPT-2, built from a
  ``GPT2Config`` with random weights: nothing is downloaded), with PyTorch's fused attention;
- a minimal GPT written the way nanoGPT's ``model.py`` (Karpathy) writes one: one fused
  linear layer for queries, keys and values, ``scaled_dot_product_attention``, GELU MLP,
  tied embeddings.  It is re-typed here in a few lines, not imported.

Then generation: tokens per second with and without the KV cache, for 256 new tokens.

These are timings: they vary from machine to machine and run to run, so they are measured by
this command and kept in a file (like the lab budgets), not checked by nbval.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import results, system
from ..inference.sampling import GREEDY, generate
from ..models.transformer import DecoderLM, TransformerConfig


# ----------------------------------------------------------------------------- a nanoGPT-style GPT

class _NanoBlock(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.c_attn, self.c_proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.c_fc, self.mlp_proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        x = x + self.c_proj(y)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))


class NanoStyleGPT(nn.Module):
    """A GPT in the style of nanoGPT's model.py: fused QKV, fused attention, tied embeddings."""

    def __init__(self, vocab_size: int, d: int, heads: int, layers: int, max_len: int):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab_size, d), nn.Embedding(max_len, d)
        self.blocks = nn.ModuleList(_NanoBlock(d, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, ids):
        x = self.wte(ids) + self.wpe.weight[: ids.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))


def _hf_gpt2(vocab_size: int, d: int, heads: int, layers: int, max_len: int) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=vocab_size, n_positions=max_len, n_embd=d, n_layer=layers, n_head=heads,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(config, attn_implementation="sdpa") if _takes_attn(GPT2LMHeadModel) \
        else GPT2LMHeadModel._from_config(config, attn_implementation="sdpa")


def _takes_attn(cls) -> bool:
    import inspect
    return "attn_implementation" in inspect.signature(cls.__init__).parameters


# ----------------------------------------------------------------------------- timing

@dataclass
class Shape:
    vocab_size: int
    d_model: int
    n_heads: int
    n_layers: int
    context: int
    batch_size: int


def _logits(model, x):
    out = model(x)
    if isinstance(out, tuple):
        return out[0]
    return out.logits if hasattr(out, "logits") else out


def time_training(model: nn.Module, shape: Shape, steps: int = 10, warmup: int = 3, repeats: int = 3,
                  bf16: bool = False) -> float:
    """Median CPU-seconds of one optimizer step (forward, backward, AdamW) over ``repeats`` runs;
    ``bf16``: matrix products in bfloat16 (autocast), as the rung runs train."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, shape.vocab_size, (shape.batch_size, shape.context), generator=g)
    y = torch.randint(0, shape.vocab_size, (shape.batch_size, shape.context), generator=g)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = _logits(model, x)
        loss = F.cross_entropy(logits.float().reshape(-1, shape.vocab_size), y.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    runs = []
    for _ in range(repeats):
        start = time.process_time()
        for _ in range(steps):
            step()
        runs.append((time.process_time() - start) / steps)
    return statistics.median(runs)


def time_generation(model: DecoderLM, new_tokens: int = 256, prompt: int = 1, repeats: int = 3) -> dict:
    """Tokens per second generating ``new_tokens`` greedily, with and without the KV cache."""
    out = {}
    for use_cache in (True, False):
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            generate(model, list(range(prompt)), new_tokens, GREEDY, use_cache=use_cache)
            runs.append(new_tokens / (time.perf_counter() - start))
        out["with_cache" if use_cache else "without_cache"] = statistics.median(runs)
    out["speedup"] = out["with_cache"] / out["without_cache"]
    return out


def measure(shape: Shape, new_tokens: int = 256) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        config = TransformerConfig(vocab_size=shape.vocab_size, d_model=shape.d_model, n_heads=shape.n_heads,
                                   n_layers=shape.n_layers, max_len=max(shape.context, new_tokens + 1))
        ours = DecoderLM(config)
        models = {"tinylm": ours,
                  "nanoGPT-style": NanoStyleGPT(shape.vocab_size, shape.d_model, shape.n_heads, shape.n_layers,
                                                config.max_len),
                  "transformers GPT-2": _hf_gpt2(shape.vocab_size, shape.d_model, shape.n_heads, shape.n_layers,
                                                 config.max_len)}
        tokens = shape.batch_size * shape.context
        step = {name: time_training(model, shape) for name, model in models.items()}
        step_bf16 = {name: time_training(model, shape, bf16=True) for name, model in models.items()}
        generation = time_generation(ours.eval(), new_tokens)
    finally:
        torch.set_num_threads(threads)
    return {
        "shape": shape.__dict__,
        "parameters": {name: sum(p.numel() for p in m.parameters()) for name, m in models.items()},
        "step_ms": {name: round(1000 * s, 1) for name, s in step.items()},
        "tokens_per_second": {name: round(tokens / s) for name, s in step.items()},
        "step_ms_bf16": {name: round(1000 * s, 1) for name, s in step_bf16.items()},
        "tokens_per_second_bf16": {name: round(tokens / s) for name, s in step_bf16.items()},
        "generation": {"new_tokens": new_tokens, **{k: round(v, 2) for k, v in generation.items()}},
        "machine": {**system.machine(), "threads": 1},
    }


def shape_of(name: str) -> Shape:
    """The shape of a Transformer recipe's model and batches."""
    from ..training.recipes import RECIPES

    recipe = RECIPES.get(name)
    if recipe is None or getattr(recipe, "family", None) != "decoder":
        decoders = sorted(n for n, r in RECIPES.items() if getattr(r, "family", None) == "decoder")
        raise ValueError(f"{name!r} is not a GPT recipe; choose one of {decoders}")
    m = recipe.model
    return Shape(len(recipe.tokenizer()), m["d_model"], m["n_heads"], m["n_layers"], recipe.train.context,
                 recipe.train.batch_size)


def run(name: str = "gpt", write: bool = False) -> dict:
    """Measure the GPT recipe ``name``'s shape, print the numbers, and with ``write`` keep them in
    ``results/gpt_speed.json``."""
    numbers = measure(shape_of(name))
    print(json.dumps(numbers, indent=1))
    if write:
        results.save("gpt_speed", numbers)
    return numbers
