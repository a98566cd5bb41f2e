"""Low-rank adaptation (LoRA, 低秩适配): fine-tune a model by training two thin matrices per layer.

Fine-tuning changes a weight matrix ``W`` (``d_out x d_in``) into ``W + ΔW``.  Hu et al. (2021)
observed that the useful ``ΔW`` has a low **rank**, so they write it as a product of two thin
matrices and train only those:

    y = W x + (alpha / r) * B (A x)          A: r x d_in,  B: d_out x r,  r << d_in, d_out

``W`` stays **frozen** (冻结): it gets no gradient and no optimizer state.  A layer of SmolLM2 with
``d_in = d_out = 576`` has 331,776 weights; a rank-8 adapter has 8 * (576 + 576) = 9,216, 2.8 %
of them.  Three details, all as ``peft`` (the library people use) does them, and tested against it:

- **initialisation**: ``A`` like a ``nn.Linear`` (Kaiming-uniform with ``a = sqrt(5)``), ``B = 0``,
  so that at the start ``B A = 0`` and the adapted model *is* the base model; training moves it;
- **scaling** ``alpha / r``: the update is multiplied by it, so that changing the rank does not
  change the size of the update a learning rate makes (with ``alpha = 16, r = 8`` the factor is 2);
- **dropout** on the adapter's input only (the base path sees ``x`` unchanged).

After training, ``B A`` can be **merged** (合并权重) into the weight: ``W' = W + (alpha / r) B A``
(:func:`merge`); the model is then an ordinary model, exactly as fast as before, with the same
outputs (to float32 rounding).  :func:`unmerge` subtracts it again, to switch adapters.

- :class:`LoRALinear` wraps one ``nn.Linear``;
- :func:`apply_lora` wraps every linear layer whose qualified name ends with one of the targets
  (``["attn.q", "attn.v"]`` matches ``blocks.0.attn.q`` ... ``blocks.29.attn.v``), the way peft's
  ``target_modules`` matches, and freezes every other parameter; tied embeddings stay tied;
- :func:`trainable_parameters` counts what is trained; :func:`save_adapter` /
  :func:`load_adapter` store only the adapters' tensors (a few MB, not the model's 540 MB);
- :func:`memory_arithmetic` and :func:`measure_step` compare the memory of a LoRA step with a full
  fine-tuning step with AdamW, which keeps two states per trained parameter.

The study ``python -m tinylm study lora`` (:func:`run`) teaches SmolLM2-135M-Instruct to write a
tool call in the exact format of :mod:`tinylm.agents.tools` (``Action: calculator[37 * 48]``) with
LoRA: see :func:`tool_requests` for the task and its splits, :func:`score_call` for the score.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

# ============================================================================ the layer


class LoRALinear(nn.Module):
    """``base(x) + (alpha / rank) * lora_B(lora_A(dropout(x)))`` with ``base`` frozen.

    ``lora_A`` (rank x in) starts Kaiming-uniform (``a = sqrt(5)``) and ``lora_B`` (out x rank) at
    zero, so a fresh adapter changes nothing.  After :meth:`merge` the update lives in
    ``base.weight`` and the forward pass is the base layer's alone."""

    def __init__(self, base: nn.Linear, rank: int = 8, alpha: float = 16, dropout: float = 0.0):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRALinear wraps an nn.Linear, got {type(base).__name__}")
        if not isinstance(rank, int) or rank < 1:
            raise ValueError(f"rank must be a positive integer, got {rank!r}")
        if rank > min(base.in_features, base.out_features):
            raise ValueError(f"rank {rank} is larger than the layer ({base.out_features} x {base.in_features}): "
                             "that is not low rank")
        if not alpha > 0:
            raise ValueError(f"alpha must be positive, got {alpha!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.rank, self.alpha = rank, alpha
        self.scaling = alpha / rank
        kind = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Linear(base.in_features, rank, bias=False, **kind)
        self.lora_B = nn.Linear(rank, base.out_features, bias=False, **kind)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """A like an nn.Linear's weight, B zero (Hu et al., 2021; peft's default)."""
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @property
    def weight(self) -> torch.Tensor:
        """The base layer's weight (with the update in it when merged)."""
        return self.base.weight

    def delta_weight(self) -> torch.Tensor:
        """The update the adapter makes to the weight: ``(alpha / rank) * B @ A`` (out x in)."""
        return self.scaling * (self.lora_B.weight @ self.lora_A.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.merged:
            return y
        return y + self.scaling * self.lora_B(self.lora_A(self.dropout(x)))

    def merge(self) -> None:
        """Fold the update into the base weight: ``W <- W + (alpha / rank) B A``."""
        if self.merged:
            raise RuntimeError("this adapter is already merged")
        with torch.no_grad():
            self.base.weight += self.delta_weight()
        self.merged = True

    def unmerge(self) -> None:
        """Take the update out of the base weight again: ``W <- W - (alpha / rank) B A``."""
        if not self.merged:
            raise RuntimeError("this adapter is not merged")
        with torch.no_grad():
            self.base.weight -= self.delta_weight()
        self.merged = False

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha}, scaling={self.scaling:g}, merged={self.merged}"


# ============================================================================ a model's adapters


def matches(name: str, target: str) -> bool:
    """Whether a module's qualified name is ``target`` or ends with ``"." + target`` (peft's rule
    for a list of ``target_modules``): ``"attn.q"`` matches ``blocks.3.attn.q``, not ``blocks.3.attn.qk``."""
    return name == target or name.endswith("." + target)


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """The model's adapted layers by qualified name, in the model's order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def apply_lora(model: nn.Module, targets: Sequence[str] | str, rank: int = 8, alpha: float = 16,
               dropout: float = 0.0) -> nn.Module:
    """Wrap in a :class:`LoRALinear` every ``nn.Linear`` of ``model`` whose qualified name matches
    one of ``targets`` (:func:`matches`), freeze every other parameter, and return ``model``
    (changed in place).  A single string is one name (not a regular expression, as peft reads it).

    Errors: a target that matches no module (the message lists the linear layers' short names),
    a target that matches a module that is not an ``nn.Linear``, a model that already has
    adapters."""
    if isinstance(targets, str):
        targets = [targets]
    targets = list(targets)
    if not targets or not all(isinstance(t, str) and t for t in targets):
        raise ValueError(f"targets must be a non-empty list of module names, got {targets!r}")
    if lora_layers(model):
        raise ValueError("the model already has LoRA adapters; merge or remove them before adding others")
    modules = dict(model.named_modules())
    chosen = {}
    for target in targets:
        found = [name for name in modules if name and matches(name, target)]
        if not found:
            short = sorted({".".join(p for p in name.split(".") if not p.isdigit())
                            for name, m in modules.items() if isinstance(m, nn.Linear)})
            raise ValueError(f"no module of the model matches the target {target!r}; its linear layers are "
                             f"{', '.join(short) or 'none'} (a target matches a name's end: 'attn.q' or 'q')")
        for name in found:
            if not isinstance(modules[name], nn.Linear):
                raise TypeError(f"the target {target!r} matches {name!r}, a {type(modules[name]).__name__}, "
                                "not an nn.Linear: LoRA here adapts linear layers only")
            chosen[name] = modules[name]
    for p in model.parameters():
        p.requires_grad_(False)
    for name, linear in chosen.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRALinear(linear, rank, alpha, dropout))
    return model


def merge(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight (the model then runs at the base model's speed).

    A weight shared with another module (a tied output layer is the embedding table) cannot take
    the update without changing the other too: that is an error."""
    layers = lora_layers(model)
    if not layers:
        raise ValueError("the model has no LoRA adapters to merge")
    shared = _shared_weights(model)
    for name, layer in layers.items():
        if id(layer.base.weight) in shared:
            raise ValueError(f"{name}'s weight is shared with {shared[id(layer.base.weight)]} (tied embeddings): "
                             "merging would change both; keep this adapter unmerged")
    for layer in layers.values():
        layer.merge()
    return model


def unmerge(model: nn.Module) -> nn.Module:
    """Subtract every merged adapter from its base weight again."""
    layers = lora_layers(model)
    if not layers:
        raise ValueError("the model has no LoRA adapters to unmerge")
    for layer in layers.values():
        layer.unmerge()
    return model


def _shared_weights(model: nn.Module) -> dict[int, str]:
    """id of each parameter reachable under two or more names -> those names."""
    names: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), []).append(name)
    return {k: " and ".join(v) for k, v in names.items() if len(v) > 1}


@dataclass(frozen=True)
class Count:
    """Trainable and total parameters (tied tensors counted once, as peft counts them)."""

    trainable: int
    total: int

    @property
    def fraction(self) -> float:
        return self.trainable / self.total


def trainable_parameters(model: nn.Module) -> Count:
    """How many of the model's parameters have ``requires_grad``, and how many there are."""
    params = list(model.parameters())            # each tensor once, even when tied
    return Count(sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params))


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapters' tensors (``...lora_A.weight``, ``...lora_B.weight``), by qualified name."""
    return {f"{name}.{part}.weight": getattr(layer, part).weight.detach()
            for name, layer in lora_layers(model).items() for part in ("lora_A", "lora_B")}


def save_adapter(model: nn.Module, path, dtype: torch.dtype = torch.float16) -> int:
    """Write the adapters (as ``dtype``) and their settings to a safetensors file; return its bytes.

    The settings (the adapted layers' names, rank, alpha, dropout) go in the file's metadata, so
    that :func:`load_adapter` can rebuild the adapters on a fresh copy of the base model."""
    from safetensors.torch import save_file

    layers = lora_layers(model)
    if not layers:
        raise ValueError("the model has no LoRA adapters to save")
    if any(layer.merged for layer in layers.values()):
        raise ValueError("unmerge the adapters before saving them (a merged model is saved whole)")
    first = next(iter(layers.values()))
    settings = {"layers": list(layers), "rank": first.rank, "alpha": first.alpha,
                "dropout": getattr(first.dropout, "p", 0.0)}
    if any((l.rank, l.alpha) != (first.rank, first.alpha) for l in layers.values()):
        raise ValueError("save_adapter stores one rank and alpha for all layers")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.to(dtype).contiguous() for k, v in adapter_state(model).items()}, str(path),
              metadata={"lora": json.dumps(settings)})
    return path.stat().st_size


def load_adapter(model: nn.Module, path) -> nn.Module:
    """Add the adapters saved by :func:`save_adapter` to ``model`` (a fresh base model) and load
    their tensors (converted to the model's float type); returns ``model``."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no adapter file {path}")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "lora" not in meta:
        raise ValueError(f"{path} is not an adapter written by save_adapter (no 'lora' metadata)")
    settings = json.loads(meta["lora"])
    apply_lora(model, settings["layers"], settings["rank"], settings["alpha"], settings["dropout"])
    tensors = load_file(str(path))
    layers = lora_layers(model)
    expected = set(adapter_state(model))
    if set(tensors) != expected:
        raise ValueError(f"{path} does not fit this model: tensors {sorted(set(tensors) ^ expected)[:4]} differ")
    with torch.no_grad():
        for name, layer in layers.items():
            for part in ("lora_A", "lora_B"):
                weight = getattr(layer, part).weight
                saved = tensors[f"{name}.{part}.weight"]
                if saved.shape != weight.shape:
                    raise ValueError(f"{path}: {name}.{part} is {tuple(saved.shape)}, the model needs {tuple(weight.shape)}")
                weight.copy_(saved.to(weight.dtype))
    return model


# ============================================================================ memory


def memory_arithmetic(total: int, trainable: int, bytes_per_value: int = 4) -> dict[str, int]:
    """Bytes of weights, gradients and AdamW's two states (first and second moments) per trained
    parameter, for full fine-tuning (every parameter trained) and for LoRA (``trainable`` of
    ``total``).  Activations come on top and are measured, not counted here."""
    def plan(trained, weights):
        grads, states = trained * bytes_per_value, 2 * trained * bytes_per_value
        return {"weights": weights, "gradients": grads, "optimizer_states": states, "total": weights + grads + states}

    return {"full": plan(total, total * bytes_per_value),
            "lora": plan(trainable, (total + trainable) * bytes_per_value)}


def _status_mb(field: str) -> float | None:
    """A memory field of Linux's /proc/self/status (VmRSS: resident now; VmHWM: the peak), in MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _rss_mb() -> float:
    """The resident memory of this process now, in MB (what psutil reports as ``rss`` on Linux)."""
    rss = _status_mb("VmRSS")
    if rss is None:
        from ..system import peak_memory_mb

        return peak_memory_mb()
    return rss


def _reset_peak() -> bool:
    """Reset Linux's peak resident memory of this process (VmHWM) to its current value."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_mb() -> float:
    """Peak resident memory since the last :func:`_reset_peak` (VmHWM), in MB (elsewhere than
    Linux: the process's peak, :func:`tinylm.system.peak_memory_mb`)."""
    peak = _status_mb("VmHWM")
    if peak is None:
        from ..system import peak_memory_mb

        return peak_memory_mb()
    return peak


def measure_step(mode: str, recipe: dict | None = None) -> dict:
    """Load SmolLM2, make one AdamW training step on a batch of the task, and measure the resident
    memory (RSS, read from Linux's /proc/self/status): after loading, and the peak during the step (Linux's VmHWM, reset after
    loading).  ``mode`` is ``"lora"`` (the study's recipe) or ``"full"`` (every parameter
    trained).  Run it in a fresh process each (:func:`measure_in_subprocess`): peaks do not mix."""
    import tinylm
    from ..training.answer_lm import answer_loss, answer_mask

    if mode not in ("lora", "full"):
        raise ValueError(f"mode is 'lora' or 'full', got {mode!r}")
    recipe = recipe or dict(RECIPE)
    torch.manual_seed(0)
    model, tok, _ = tinylm.load("smollm2-135m-instruct")
    if mode == "lora":
        apply_lora(model, recipe["targets"], recipe["rank"], recipe["alpha"])
    else:
        for p in model.parameters():
            p.requires_grad_(True)
    count = trainable_parameters(model)
    examples = [e for e in tool_requests() if e.split == "train"][: recipe["batch_size"]]
    ids, mask = answer_mask(pairs(tok, examples), tok.special_tokens.get("<|im_end|>", 0))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    model.train()
    rss_loaded = _rss_mb()
    reset = _reset_peak()
    loss = answer_loss(model, ids, mask)
    loss.backward()
    optimizer.step()
    peak = _peak_mb()
    states = sum(t.numel() for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t) and t.dim())
    return {"mode": mode, "trainable": count.trainable, "total": count.total, "batch_tokens": int(ids.numel()),
            "rss_after_load_mb": round(rss_loaded), "peak_rss_step_mb": round(peak),
            "step_extra_mb": round(peak - rss_loaded), "peak_reset": reset, "optimizer_state_values": states}


def measure_in_subprocess(mode: str, recipe: dict | None = None) -> dict:
    """:func:`measure_step` in a fresh Python process on one thread; its result and CPU-seconds."""
    import os

    root = Path(__file__).resolve().parents[2]
    code = ("import json, sys; from tinylm.deploy import lora; "
            f"print(json.dumps(lora.measure_step({mode!r}, json.loads(sys.argv[1]))))")
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    before = os.times()
    done = subprocess.run([sys.executable, "-c", code, json.dumps(recipe or RECIPE)], cwd=root, env=env,
                          capture_output=True, text=True, check=False)
    after = os.times()
    if done.returncode:
        raise RuntimeError(f"measuring a {mode} step failed:\n{done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["cpu_seconds"] = round((after.children_user + after.children_system)
                                  - (before.children_user + before.children_system), 1)
    return result


# ============================================================================ the task: tool calls

TOPICS = (
    "perplexity", "add-k smoothing", "Kneser-Ney smoothing", "byte-pair encoding", "WordPiece",
    "bits per character", "cross-entropy", "beam search", "top-p sampling", "temperature",
    "layer normalisation", "RMSNorm", "rotary positions", "the KV cache", "grouped-query attention",
    "multi-head attention", "causal masks", "residual connections", "dropout", "weight decay",
    "gradient clipping", "learning-rate warm-up", "cosine decay", "early stopping", "AdamW",
    "backpropagation", "vanishing gradients", "LSTM gates", "word2vec", "negative sampling",
    "embeddings", "masked language modelling", "BERT", "T5", "span corruption", "teacher forcing",
    "scaling laws", "compute-optimal training", "mixture of experts", "load balancing",
    "mixed precision", "gradient accumulation", "data parallelism", "instruction tuning",
    "reward models", "PPO", "DPO", "GRPO", "reward hacking", "calibration", "prompt injection",
    "memorisation", "chain of thought", "few-shot prompting", "BM25", "dense retrieval",
    "vector indexes", "reciprocal rank fusion", "retrieval-augmented generation", "the ReAct loop",
    "tool calls", "quantisation", "LoRA", "continuous batching", "PagedAttention", "speculative decoding",
    "Chinese word segmentation", "n-gram models", "Zipf's law", "the softmax", "positional encodings",
    "exposure bias",
)
"""Topics of the course book, one search request each (so a held-out request's topic is new)."""

SEARCH_TEMPLATES = (
    "What does the book say about {t}?",
    "Find the passage of the course book on {t}.",
    "Look up {t} in the book.",
    "Search the book for {t}.",
    "I forgot what {t} is. Can you check the book?",
    "Where does the course explain {t}?",
)

CALC_TEMPLATES = (   # (request, the call's argument, how to draw the numbers)
    ("What is {a} times {b}?", "{a} * {b}", "mul"),
    ("How much is {a} plus {b}?", "{a} + {b}", "add"),
    ("Compute {a} minus {b}.", "{a} - {b}", "sub"),
    ("Divide {a} by {b}.", "{a} / {b}", "div"),
    ("A box holds {a} pens. How many pens are in {b} boxes?", "{a} * {b}", "mul"),
    ("I had {a} coins and spent {b}. How many are left?", "{a} - {b}", "sub"),
    ("What is {a} squared?", "{a} ** 2", "one"),
    ("Add {a}, {b} and {c}.", "{a} + {b} + {c}", "add3"),
    ("What is {a} percent of {b}?", "{a} / 100 * {b}", "pct"),
    ("What is the square root of {a}?", "sqrt({a})", "one"),
    ("{a} people share {b} sweets equally. How many does each get?", "{b} / {a}", "share"),
    ("A train travels {a} km per hour for {b} hours. How far does it go?", "{a} * {b}", "mul"),
)

N_CALCULATOR = 144
"""Arithmetic requests (12 per template); with the 72 topics, 216 requests in all."""

SPLITS = {"train": 0.6, "valid": 0.2, "test": 0.2}
"""The share of requests in each split, by a hash of the request's id (fixed, seed-free)."""


@dataclass(frozen=True)
class Request:
    """A request, the call that answers it, and its split."""

    id: str
    text: str
    tool: str
    argument: str
    split: str

    def call(self) -> str:
        return f"Action: {self.tool}[{self.argument}]"


def split_of(key: str) -> str:
    """``"train"``, ``"valid"`` or ``"test"`` by the SHA-256 of ``key``: the same on every machine."""
    u = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 16 ** 8
    return "train" if u < SPLITS["train"] else "valid" if u < SPLITS["train"] + SPLITS["valid"] else "test"


def _numbers(kind: str, rng: random.Random) -> dict:
    if kind == "mul":
        return {"a": rng.randint(12, 99), "b": rng.randint(12, 99)}
    if kind == "add":
        return {"a": rng.randint(100, 999), "b": rng.randint(100, 999)}
    if kind == "sub":
        a = rng.randint(200, 999)
        return {"a": a, "b": rng.randint(10, a - 10)}
    if kind == "div":
        b = rng.randint(3, 19)
        return {"a": b * rng.randint(11, 60), "b": b}
    if kind == "share":
        a = rng.randint(3, 12)
        return {"a": a, "b": a * rng.randint(4, 25)}
    if kind == "one":
        return {"a": rng.randint(13, 99)}
    if kind == "add3":
        return {"a": rng.randint(10, 99), "b": rng.randint(10, 99), "c": rng.randint(10, 99)}
    if kind == "pct":
        return {"a": rng.choice([5, 10, 15, 20, 25, 30, 40, 50, 75]), "b": rng.randint(2, 40) * 20}
    raise ValueError(kind)


def tool_requests(seed: int = 0) -> list[Request]:
    """The task's requests: one search request per topic of :data:`TOPICS` (a template drawn for
    each) and :data:`N_CALCULATOR` arithmetic requests (each template of :data:`CALC_TEMPLATES` in
    turn, numbers drawn with ``seed``); each in the split :func:`split_of` gives its id.

    The phrasings (templates) are shared by the splits; a held-out request has new numbers or a
    topic never seen in training."""
    rng = random.Random(seed)
    out = []
    for i, topic in enumerate(TOPICS):
        text = rng.choice(SEARCH_TEMPLATES).format(t=topic)
        out.append(Request(f"search-{i:03d}", text, "search", topic, split_of(f"search-{i:03d}")))
    for i in range(N_CALCULATOR):
        request, argument, kind = CALC_TEMPLATES[i % len(CALC_TEMPLATES)]
        values = _numbers(kind, rng)
        if "sqrt" in argument:
            values["a"] = values["a"] ** 2
        out.append(Request(f"calc-{i:03d}", request.format(**values), "calculator", argument.format(**values),
                           split_of(f"calc-{i:03d}")))
    return out


SYSTEM = ("You call tools. The tools:\n{tools}\n"
          "Answer with exactly one line: Action: tool[argument]")
"""The system turn of the task's prompt; ``{tools}`` is the tools' description from :mod:`tinylm.agents.tools`."""


def task_tools():
    """The registry of :mod:`tinylm.agents.tools` (calculator, search) with a search that is never
    run (the task is to write the call, not to read the book)."""
    from ..agents.tools import Tools, calculator_tool, search_tool

    return Tools([calculator_tool(), search_tool(lambda query: "")])


def prompt_text(request: str) -> str:
    """The request in SmolLM2's chat format, the system turn listing the tools, ready for the answer."""
    from ..pretrained.smollm2 import chat_prompt

    return chat_prompt([{"role": "system", "content": SYSTEM.format(tools=task_tools().describe())},
                        {"role": "user", "content": request}])


def pairs(tokenizer, requests: Sequence[Request]) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, answer ids) for training with the loss on the answer only: the answer is the
    call and the end of the turn."""
    end = tokenizer.special_tokens["<|im_end|>"]
    return [(tokenizer.encode(prompt_text(r.text)), tokenizer.encode(r.call()) + [end]) for r in requests]


_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def _topic(text: str) -> str:
    """A search topic as the score compares it: lower case, single spaces, no leading "the "."""
    words = text.lower().split()
    return " ".join(words[1:] if words[:1] == ["the"] else words)


def score_call(text: str, request: Request) -> dict:
    """Score what the model wrote for ``request``: ``parses`` (an ``Action:`` line
    :func:`tinylm.agents.tools.parse_action` accepts), ``tool`` (it names the right tool) and
    ``right`` (right tool and right argument).  A search's argument is right when it equals the
    topic (case, spacing and a leading "the" ignored: ``KV cache`` for ``the KV cache``); a
    calculation's when it computes the same value and uses the same numbers (``48 * 37`` for
    ``37 * 48`` is right, the bare result ``1776`` is not).  The rule was fixed before the test
    split was scored."""
    from ..agents.calculator import calculate
    from ..agents.tools import ToolCallError, parse_action

    try:
        call = parse_action(text)
    except ToolCallError:
        return {"parses": False, "tool": False, "right": False}
    tool = call.tool == request.tool
    if not tool:
        right = False
    elif request.tool == "search":
        right = _topic(call.argument) == _topic(request.argument)
    else:
        try:
            value, expected = calculate(call.argument), calculate(request.argument)
            right = (abs(value - expected) <= 1e-9 * max(1.0, abs(expected))
                     and sorted(_NUMBER.findall(call.argument)) == sorted(_NUMBER.findall(request.argument)))
        except Exception:   # the calculator refuses it (CalculatorError) or it does not compute
            right = False
    return {"parses": True, "tool": tool, "right": bool(right)}


MAX_NEW_TOKENS = 20
"""A call is at most this many tokens (the longest right one has 17, the end of turn one more)."""


def answers(model, tokenizer, requests: Sequence[Request]) -> list[str]:
    """The model's greedy answer to each request (:func:`tinylm.generate`, stopped at the end of
    its turn or after :data:`MAX_NEW_TOKENS` tokens)."""
    import tinylm

    end = tokenizer.special_tokens["<|im_end|>"]
    out = []
    for r in requests:
        ids = tinylm.generate(model, tokenizer.encode(prompt_text(r.text)), MAX_NEW_TOKENS, tinylm.GREEDY, stop=end)
        out.append(tokenizer.decode(ids))
    return out


def evaluate(model, tokenizer, requests: Sequence[Request]) -> dict:
    """The answers and their scores: the share that parse, name the right tool, and are right."""
    texts = answers(model, tokenizer, requests)
    scores = [score_call(t, r) for t, r in zip(texts, requests)]
    n = len(requests)
    per_tool = {tool: {"n": sum(r.tool == tool for r in requests),
                       "right": sum(s["right"] for r, s in zip(requests, scores) if r.tool == tool)}
                for tool in ("calculator", "search")}
    return {"n": n, **{k: sum(s[k] for s in scores) for k in ("parses", "tool", "right")},
            "accuracy": round(sum(s["right"] for s in scores) / n, 4), "per_tool": per_tool,
            "answers": [{"id": r.id, "request": r.text, "answer": t, **s} for r, t, s in zip(requests, texts, scores)]}


# ============================================================================ the study

STUDY = "lora"

CANDIDATES = (
    {"name": "attention q, v; rank 8", "targets": ["attn.q", "attn.v"], "rank": 8, "alpha": 16},
    {"name": "all seven projections; rank 4",
     "targets": ["attn.q", "attn.k", "attn.v", "attn.out", "mlp.gate", "mlp.up", "mlp.down"], "rank": 4, "alpha": 8},
)
"""The recipes compared on the validation split, with the same training settings (:data:`RECIPE`):
Hu et al.'s choice (the query and value projections) and QLoRA's (every linear layer of the blocks,
Dettmers et al., 2023) at a lower rank; alpha / rank is 2 for both."""

RECIPE = {"targets": ["attn.q", "attn.v"], "rank": 8, "alpha": 16, "steps": 60, "batch_size": 4, "lr": 2e-3,
          "warmup": 5, "seed": 0}
"""The training settings every candidate shares (targets, rank and alpha are the candidate's); the
budget (15 CPU-minutes on one core for the whole study) sets the steps: 60 steps of 4 requests,
about two passes over the training split."""


def train_adapter(model, tokenizer, recipe: dict, train: Sequence[Request]):
    """Add the recipe's adapters to ``model`` and train them with :class:`tinylm.training.answer_lm.AnswerLM`
    (cross-entropy on the call's tokens only) through :func:`tinylm.train`; returns the history."""
    import tinylm
    from ..training.answer_lm import AnswerLM

    torch.manual_seed(recipe["seed"])
    apply_lora(model, recipe["targets"], recipe["rank"], recipe["alpha"], recipe.get("dropout", 0.0))
    objective = AnswerLM(pairs(tokenizer, train), pad_id=tokenizer.special_tokens["<|im_end|>"])
    config = tinylm.TrainConfig(steps=recipe["steps"], batch_size=recipe["batch_size"], lr=recipe["lr"],
                                warmup=recipe["warmup"], weight_decay=0.0, eval_every=min(10, recipe["steps"]),
                                restore_best=False, progress=False, seed=recipe["seed"])
    return tinylm.train(model, objective, config)


def remove_adapters(model) -> None:
    """Put the base layers back (unmerged adapters only): the model is the base model again."""
    for name, layer in lora_layers(model).items():
        if layer.merged:
            raise ValueError("unmerge before removing")
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, layer.base)


def valid_scores(model, tokenizer, valid: Sequence[Request]) -> dict:
    """Teacher-forced scores of the calls on validation (no generation: cheap): nats per answer
    token and the exact match of greedy decoding."""
    from ..evaluation.answers import teacher_forced

    scores = teacher_forced(model, pairs(tokenizer, valid), tokenizer.special_tokens["<|im_end|>"], batch_size=8)
    return {"answer_nats": round(scores.nats, 4), "exact_match": round(scores.exact_match, 4)}


def run(out_dir: Path | None = None) -> dict:
    """The study: train each candidate of :data:`CANDIDATES`, keep the one best on validation
    (exact match of the call, then nats), score the held-out test split once, before and after;
    save the adapter (float16) and score what was saved; check that the merged model answers the
    same; measure one step's memory, LoRA against full fine-tuning, each in a fresh process."""
    import tinylm
    from ..training.loop import seed_everything
    from ..usage import studies

    log = studies.started()
    torch.set_num_threads(1)
    out = studies.output_dir(STUDY, out_dir)
    requests = tool_requests()
    split = {s: [r for r in requests if r.split == s] for s in SPLITS}
    log["task"] = {"description": "write the tool call that answers a request, in the format of tinylm.agents.tools",
                   "sizes": {s: len(v) for s, v in split.items()},
                   "per_tool": {s: {t: sum(r.tool == t for r in v) for t in ("calculator", "search")}
                                for s, v in split.items()},
                   "system": SYSTEM.format(tools=task_tools().describe()),
                   "split_rule": "SHA-256 of the request id; phrasings shared, numbers and topics new in held-out requests"}
    model, tok, _ = tinylm.load("smollm2-135m-instruct")
    base_count = trainable_parameters(model)

    start = time.process_time()
    log["before_valid"] = valid_scores(model, tok, split["valid"])
    selection, trained = [], []
    for candidate in CANDIDATES:
        seed_everything(0)
        recipe = {**RECIPE, **{k: candidate[k] for k in ("targets", "rank", "alpha")}}
        history = train_adapter(model, tok, recipe, split["train"])
        count = trainable_parameters(model)
        selection.append({**candidate, **valid_scores(model, tok, split["valid"]), "trainable": count.trainable,
                          "train_loss": [round(x, 4) for x in history.train_loss],
                          "train_cpu_seconds": round(history.train_cpu_seconds, 1)})
        trained.append((recipe, {k: v.clone() for k, v in adapter_state(model).items()}, count))
        remove_adapters(model)
    chosen = max(range(len(selection)), key=lambda i: (selection[i]["exact_match"], -selection[i]["answer_nats"]))
    log["selection"] = {"rule": "highest validation exact match, then lowest answer nats", "candidates": selection,
                        "chosen": selection[chosen]["name"], "cpu_seconds": round(time.process_time() - start, 1)}
    recipe, state, count = trained[chosen]
    del trained

    before = evaluate(model, tok, split["test"])
    apply_lora(model, recipe["targets"], recipe["rank"], recipe["alpha"])
    with torch.no_grad():
        for name, tensor in adapter_state(model).items():
            tensor.copy_(state[name])
    size = save_adapter(model, out / "adapter.safetensors")
    remove_adapters(model)
    load_adapter(model, out / "adapter.safetensors")       # score what was saved (float16), as the lab does
    after = evaluate(model, tok, split["test"])
    merge(model)
    merged = evaluate(model, tok, split["test"][:8])
    unmerge(model)
    log["recipe"] = recipe
    log["parameters"] = {"total": base_count.total, "trainable": count.trainable,
                         "fraction": round(count.trainable / base_count.total, 6)}
    log["adapter"] = {"file": "checkpoints/study/lora/adapter.safetensors", "bytes": size, "dtype": "float16"}
    log["test"] = {"before": before, "after": after,
                   "merged_first8_same_answers": [a["answer"] for a in merged["answers"]]
                   == [a["answer"] for a in after["answers"][:8]]}
    del model
    log["memory"] = {"arithmetic": memory_arithmetic(base_count.total, count.trainable),
                     "measured": {m: measure_in_subprocess(m, recipe) for m in ("lora", "full")}}
    log["subprocess_cpu_seconds"] = round(sum(m["cpu_seconds"] for m in log["memory"]["measured"].values()), 1)
    return studies.save(STUDY, log)
