"""Quantisation (量化): storing a model's weights in fewer bits, and what it costs.

A weight of SmolLM2 is a float32 number: 4 bytes.  *Post-training quantisation* (训练后量化)
replaces each matrix, after training, by small integers (codes) and a few float *scales* (缩放因子)
that turn the codes back into numbers close to the weights: ``w ~ d * q``.  Nothing is trained
again (that would be quantisation-aware training, 量化感知训练: Jacob et al., 2018).

The question is how many weights share one scale.

- **One scale per tensor** (naive int4, :func:`quantize_int4_tensor`): the scale must cover the
  largest weight of the whole matrix, so a single outlier (离群值) makes the step between codes
  large for every other weight.  With 4 bits (15 levels) most weights round to 0 or +-1 step.
- **One scale per output channel** (int8, :func:`quantize_int8_channel`): each row of the matrix
  has its own scale; with 8 bits (255 levels) the steps are small already.
- **One scale per block of 32 weights** (分块量化), as llama.cpp's GGUF formats do: an outlier
  spoils only its own 32 neighbours.  The block formats are defined byte by byte:

  - Q8_0: a float16 scale d and 32 int8 codes q (34 bytes); w = d * q; 8.5 bits a weight;
  - Q4_0: a float16 scale d and 32 four-bit codes q in 16 bytes (18 bytes); w = d * (q - 8);
    4.5 bits a weight;
  - Q4_1: a float16 scale d, a float16 minimum m and 16 bytes of codes (20 bytes);
    w = d * q + m; 5.0 bits a weight.

  Two four-bit codes share a byte: byte ``j`` of a block holds weight ``j`` in its low half and
  weight ``j + 16`` in its high half.  :func:`quantize_q8_0`, :func:`quantize_q4_0` and
  :func:`quantize_q4_1` return exactly those bytes (a test compares them with the ``gguf``
  package's ``gguf.quants.quantize``, byte for byte), and the ``dequantize_*`` functions read them
  back.
- **bfloat16** (:func:`round_bf16`) is not quantisation to integers but a shorter float: the top
  16 bits of a float32 (same exponent range, 8 significant bits instead of 24), rounded to nearest.

:class:`QuantisedLinear` holds one matrix in a format (its bytes, nothing else) and
*dequantises it at every forward pass*, then multiplies in float32.  That is honest about what
this course has: no fused low-bit kernel.  llama.cpp multiplies straight from the 4-bit blocks,
reading 4.5 bits per weight from memory instead of 32, which is where its speed comes from (decode
is limited by memory bandwidth, see :mod:`tinylm.deploy.cost`); here a smaller format saves
memory but *costs* time.  :func:`quantise_model` swaps every linear layer of a
:class:`~tinylm.models.transformer.DecoderLM`; :func:`size_in_bytes` counts what the stored format
really takes; :func:`run` is the study ``python -m tinylm study quantisation``.

What stays in higher precision, and why:

- the **normalisation weights** (RMSNorm gains, 1-D, 0.05 % of SmolLM2's weights) stay float32:
  they cost nothing and each scales a whole feature, as in GGUF files, which store them as F32;
- the **token embedding table**, which SmolLM2 shares with its output head (tied embeddings, 21 %
  of its weights), is stored in Q8_0 for every format of 8 bits or fewer (the GGUF file itself
  stores it so, and llama.cpp keeps the output layer at higher precision): the logits of all
  49,152 tokens come from it, and 4-bit errors there would be paid at every prediction.  In
  float32 and bf16 it is stored like the other matrices.

A caution on the baseline: our only copy of SmolLM2 is the GGUF file, whose matrices are already
Q4_1 blocks (and embeddings Q8_0).  "float32" below is those blocks dequantised, so quantising
them to Q4_1 again should give (nearly) the same numbers back: a check, not a test of Q4_1.
Q4_0 and naive int4 are the real tests.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

BLOCK = 32
"""Weights per block in Q8_0, Q4_0 and Q4_1 (llama.cpp's ``QK8_0``, ``QK4_0``, ``QK4_1``)."""

BLOCK_BYTES = {"q8_0": 2 + 32, "q4_0": 2 + 16, "q4_1": 2 + 2 + 16}
"""Bytes of one block of 32 weights in each block format."""

SCHEMES = ("float32", "bf16", "q8_0", "q4_0", "q4_1", "int8_channel", "int4_tensor")
"""The storage formats a :class:`QuantisedLinear` holds."""


# ----------------------------------------------------------------------------- helpers

def _blocks(x, name: str) -> tuple[np.ndarray, tuple[int, ...]]:
    """``x`` as float32 blocks of 32, (n_blocks, 32), and its shape; a clear error otherwise."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 0 or x.shape[-1] % BLOCK != 0:
        raise ValueError(f"{name} quantises blocks of {BLOCK} weights along the last axis: "
                         f"its length must be a multiple of {BLOCK}, got shape {x.shape}")
    return x.reshape(-1, BLOCK), x.shape


def _raw(data, name: str, block_bytes: int) -> tuple[np.ndarray, tuple[int, ...]]:
    """Stored bytes as (n_blocks, block_bytes) uint8 and the shape of the weights they hold."""
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.ndim == 0 or data.shape[-1] % block_bytes != 0:
        raise ValueError(f"{name} reads uint8 bytes in blocks of {block_bytes} along the last axis, "
                         f"got {data.dtype} of shape {data.shape}")
    shape = data.shape[:-1] + (data.shape[-1] // block_bytes * BLOCK,)
    return data.reshape(-1, block_bytes), shape


def _half_bytes(values: np.ndarray) -> np.ndarray:
    """float32 values (n, 1) -> their float16 bytes (n, 2), little-endian as in the file."""
    return values.astype(np.float16).view(np.uint8)


def _half(raw: np.ndarray) -> np.ndarray:
    """Two bytes per row (n, 2) -> the float16 they hold, as float32 (n, 1)."""
    return np.ascontiguousarray(raw).view(np.float16).astype(np.float32)


def _inverse(d: np.ndarray) -> np.ndarray:
    """1 / d, and 0 where d is 0 (a block of zeros gets codes that decode to zeros)."""
    with np.errstate(divide="ignore"):
        return np.where(d == 0, np.float32(0), np.float32(1) / d).astype(np.float32)


def _pack_nibbles(q: np.ndarray) -> np.ndarray:
    """Codes 0..15, (n, 32) -> 16 bytes a block: byte j = q[j] | q[j + 16] << 4."""
    q = q.astype(np.uint8)
    return q[:, :16] | (q[:, 16:] << np.uint8(4))


def _unpack_nibbles(packed: np.ndarray) -> np.ndarray:
    """16 bytes a block -> the 32 codes 0..15 (low halves first, then high halves)."""
    return np.concatenate([packed & np.uint8(0x0F), packed >> np.uint8(4)], axis=1)


def round_half_away(x: np.ndarray) -> np.ndarray:
    """Round to the nearest integer, halves away from zero (C's ``roundf``, which llama.cpp uses;
    numpy's ``np.round`` sends halves to the even neighbour instead)."""
    a = np.abs(x)
    whole = np.floor(a)
    return np.sign(x) * (whole + (a - whole >= 0.5))


# ----------------------------------------------------------------------------- Q8_0

def quantize_q8_0(x) -> np.ndarray:
    """GGUF's Q8_0: each block of 32 weights -> a float16 scale and 32 int8 codes (34 bytes).

    d = max|w| / 127 and q = round(w / d) (halves away from zero), so the largest weight gets
    code +-127 and every weight is off by at most half a step, d / 2 (plus the rounding of d to
    float16).  Returns uint8 bytes of shape (..., n / 32 * 34) for weights of shape (..., n).
    """
    blocks, shape = _blocks(x, "Q8_0")
    d = np.abs(blocks).max(axis=1, keepdims=True) / np.float32(127)
    q = round_half_away(blocks * _inverse(d))
    raw = np.concatenate([_half_bytes(d), q.astype(np.int8).view(np.uint8)], axis=1)
    return raw.reshape(shape[:-1] + (-1,))


def dequantize_q8_0(data) -> np.ndarray:
    """Q8_0 bytes -> float32 weights: w = d * q."""
    raw, shape = _raw(data, "Q8_0", BLOCK_BYTES["q8_0"])
    d, q = _half(raw[:, :2]), raw[:, 2:].view(np.int8).astype(np.float32)
    return (q * d).reshape(shape)


# ----------------------------------------------------------------------------- Q4_0

def quantize_q4_0(x) -> np.ndarray:
    """GGUF's Q4_0: each block -> a float16 scale and 32 four-bit codes (18 bytes).

    The scale is signed: d = w_max / -8, where w_max is the weight of largest magnitude (with its
    sign), so that w_max gets code 0, i.e. d * (0 - 8) = w_max exactly.  The other weights get
    q = trunc(w / d + 8.5) clipped to 0..15 (rounding to the nearest of the 16 levels
    d * (q - 8)).  Levels run from -8 to +7 steps, so a weight of the opposite sign as large as
    w_max would need +8 and is clipped to +7: its error is a whole step, |d|; every other
    weight is off by at most |d| / 2.
    """
    blocks, shape = _blocks(x, "Q4_0")
    largest = np.take_along_axis(blocks, np.abs(blocks).argmax(axis=1)[:, None], axis=1)
    d = largest / np.float32(-8)
    q = np.trunc(blocks * _inverse(d) + np.float32(8.5)).astype(np.uint8).clip(0, 15)
    raw = np.concatenate([_half_bytes(d), _pack_nibbles(q)], axis=1)
    return raw.reshape(shape[:-1] + (-1,))


def dequantize_q4_0(data) -> np.ndarray:
    """Q4_0 bytes -> float32 weights: w = d * (q - 8)."""
    raw, shape = _raw(data, "Q4_0", BLOCK_BYTES["q4_0"])
    d, q = _half(raw[:, :2]), _unpack_nibbles(raw[:, 2:]).astype(np.float32) - np.float32(8)
    return (d * q).reshape(shape)


# ----------------------------------------------------------------------------- Q4_1

def quantize_q4_1(x) -> np.ndarray:
    """GGUF's Q4_1: each block -> a float16 scale, a float16 minimum and 32 four-bit codes (20 bytes).

    The 16 levels span the block from its minimum m to its maximum: d = (max - min) / 15 and
    q = trunc((w - m) / d + 0.5), i.e. rounded to the nearest level m + d * q.  Unlike Q4_0 the
    levels need not be centred on zero, which suits blocks whose weights lean to one side; the
    error is at most d / 2 (plus the rounding of d and m to float16).
    """
    blocks, shape = _blocks(x, "Q4_1")
    high, low = blocks.max(axis=1, keepdims=True), blocks.min(axis=1, keepdims=True)
    d = (high - low) / np.float32(15)
    q = np.trunc((blocks - low) * _inverse(d) + np.float32(0.5)).astype(np.uint8).clip(0, 15)
    raw = np.concatenate([_half_bytes(d), _half_bytes(low), _pack_nibbles(q)], axis=1)
    return raw.reshape(shape[:-1] + (-1,))


def dequantize_q4_1(data) -> np.ndarray:
    """Q4_1 bytes -> float32 weights: w = d * q + m."""
    raw, shape = _raw(data, "Q4_1", BLOCK_BYTES["q4_1"])
    d, m = _half(raw[:, :2]), _half(raw[:, 2:4])
    q = _unpack_nibbles(raw[:, 4:]).astype(np.float32)
    return (d * q + m).reshape(shape)


# ----------------------------------------------------------------------------- per channel, per tensor, bf16

def quantize_int8_channel(w) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 with one float32 scale per output channel (row) of a matrix (out, in).

    scale[i] = max_j |w[i, j]| / 127 and q = round(w / scale) (halves away from zero), in -127..127.
    Returns (codes int8 (out, in), scales float32 (out,)).  The error of each weight is at most
    scale[i] / 2.
    """
    w = np.asarray(w, dtype=np.float32)
    if w.ndim != 2:
        raise ValueError(f"int8 per channel quantises a matrix (out, in), got shape {w.shape}")
    scale = np.abs(w).max(axis=1) / np.float32(127)
    q = round_half_away(w * _inverse(scale)[:, None])
    return q.astype(np.int8), scale.astype(np.float32)


def dequantize_int8_channel(codes, scales) -> np.ndarray:
    """w = scale[row] * q."""
    return np.asarray(codes).astype(np.float32) * np.asarray(scales, dtype=np.float32)[:, None]


def quantize_int4_tensor(w) -> tuple[np.ndarray, np.float32]:
    """Naive symmetric int4 with ONE float32 scale for the whole tensor.

    scale = max|w| / 7 and q = clip(round(w / scale), -8, 7) (halves away from zero); the codes
    are stored q + 8 (0..15), two to a byte (first weight in the low half).  The tensor's size must
    be even.  Returns (packed uint8 (size / 2,), scale).  The error of each weight is at most
    scale / 2, and scale is set by the single largest weight of the matrix.
    """
    w = np.asarray(w, dtype=np.float32)
    if w.size % 2:
        raise ValueError(f"int4 packs two weights a byte: the tensor's size must be even, got {w.size}")
    scale = np.float32(np.abs(w).max() / np.float32(7))
    inverse = np.float32(0) if scale == 0 else np.float32(1) / scale
    q = np.clip(round_half_away(w.reshape(-1) * inverse), -8, 7).astype(np.int16) + 8
    q = q.astype(np.uint8).reshape(-1, 2)
    return q[:, 0] | (q[:, 1] << np.uint8(4)), scale


def dequantize_int4_tensor(packed, scale, shape) -> np.ndarray:
    """w = scale * (q - 8), with the codes unpacked from ``packed`` and laid out as ``shape``."""
    packed = np.asarray(packed, dtype=np.uint8)
    q = np.stack([packed & np.uint8(0x0F), packed >> np.uint8(4)], axis=1).reshape(-1)
    return (np.float32(scale) * (q.astype(np.float32) - np.float32(8))).reshape(shape)


def round_bf16(x) -> np.ndarray:
    """float32 -> bfloat16 bits (uint16): the top 16 bits, rounded to nearest, ties to even.

    Adding 0x7FFF plus the lowest kept bit to the float's 32 bits and dropping the low 16 does the
    rounding (as ``ggml_compute_fp32_to_bf16``); NaNs keep a set mantissa bit so they stay NaN.
    """
    bits = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(np.asarray(x, dtype=np.float32))
    return np.where(nan, ((bits >> 16) | 64).astype(np.uint16), rounded)


def bf16_to_float32(bits) -> np.ndarray:
    """bfloat16 bits (uint16) -> float32: the 16 bits become the top half of a float32."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


BLOCK_FORMATS = {
    "q8_0": (quantize_q8_0, dequantize_q8_0),
    "q4_0": (quantize_q4_0, dequantize_q4_0),
    "q4_1": (quantize_q4_1, dequantize_q4_1),
}


def check_scheme(scheme: str) -> str:
    if scheme not in SCHEMES:
        raise ValueError(f"no quantisation scheme {scheme!r}; the schemes are {', '.join(SCHEMES)}")
    return scheme


def bits_per_weight(scheme: str, shape: tuple[int, int] | None = None) -> float:
    """Bits each weight takes in ``scheme`` (a matrix of ``shape`` for the per-channel and
    per-tensor schemes, whose scales are shared by a row or by the whole matrix)."""
    check_scheme(scheme)
    if scheme in BLOCK_BYTES:
        return BLOCK_BYTES[scheme] * 8 / BLOCK
    if scheme in ("float32", "bf16"):
        return {"float32": 32.0, "bf16": 16.0}[scheme]
    if shape is None:
        raise ValueError(f"{scheme}: the bits per weight depend on the matrix's shape; give shape=(out, in)")
    out, inp = shape
    if scheme == "int8_channel":
        return 8 + 32 / inp                              # a float32 scale per row
    return (out * inp * 4 + 32) / (out * inp)            # int4_tensor: one float32 scale


def matrix_bytes(scheme: str, shape: tuple[int, int]) -> int:
    """Bytes a matrix of ``shape`` (out, in) takes stored in ``scheme``."""
    out, inp = shape
    return round(bits_per_weight(scheme, shape) * out * inp / 8)


# ----------------------------------------------------------------------------- the stored matrix

ROWS_AT_ONCE = 4096
"""Rows quantised at a time: a large matrix (the 49,152-row embedding table) is done in slices,
so the temporary float arrays stay small; every scheme but int4_tensor works row by row or block
by block, so the result is the same."""


def _by_rows(quantise, w: np.ndarray):
    """``quantise(w)`` computed :data:`ROWS_AT_ONCE` rows at a time and the pieces joined."""
    pieces = [quantise(w[i:i + ROWS_AT_ONCE]) for i in range(0, len(w), ROWS_AT_ONCE)]
    if isinstance(pieces[0], tuple):
        return tuple(np.concatenate(part) for part in zip(*pieces))
    return np.concatenate(pieces)


class QuantisedWeight(nn.Module):
    """One matrix (out, in) stored in a scheme: only its bytes (and scales) are kept.

    :meth:`dequantise` rebuilds the float32 matrix.  A :class:`QuantisedLinear` and a
    :class:`QuantisedEmbedding` may share one (tied embeddings are stored once).
    """

    def __init__(self, weight: torch.Tensor, scheme: str):
        super().__init__()
        self.scheme = check_scheme(scheme)
        w = weight.detach().to(torch.float32).cpu().numpy()
        if w.ndim != 2:
            raise ValueError(f"a quantised weight is a matrix (out, in), got shape {tuple(w.shape)}")
        self.shape = tuple(w.shape)
        if scheme == "float32":
            stored = {"values": torch.from_numpy(w.copy())}
        elif scheme == "bf16":
            stored = {"bits": torch.from_numpy(_by_rows(round_bf16, w).view(np.int16))}
        elif scheme in BLOCK_FORMATS:
            stored = {"raw": torch.from_numpy(_by_rows(BLOCK_FORMATS[scheme][0], w))}
        elif scheme == "int8_channel":
            codes, scales = _by_rows(quantize_int8_channel, w)
            stored = {"codes": torch.from_numpy(codes), "scales": torch.from_numpy(scales)}
        else:
            packed, scale = quantize_int4_tensor(w)
            stored = {"packed": torch.from_numpy(packed), "scale": torch.tensor([scale], dtype=torch.float32)}
        for name, value in stored.items():
            self.register_buffer(name, value)
        self.stored = tuple(stored)

    def nbytes(self) -> int:
        """Bytes of what is stored: codes and scales, nothing rebuilt."""
        return sum(getattr(self, name).numel() * getattr(self, name).element_size() for name in self.stored)

    def dequantise(self) -> torch.Tensor:
        """The float32 matrix (out, in) the stored bytes stand for."""
        s = self.scheme
        if s == "float32":
            return self.values
        if s == "bf16":
            return torch.from_numpy(bf16_to_float32(self.bits.numpy().view(np.uint16)))
        if s in BLOCK_FORMATS:
            return torch.from_numpy(BLOCK_FORMATS[s][1](self.raw.numpy()))
        if s == "int8_channel":
            return self.codes.to(torch.float32) * self.scales[:, None]
        return torch.from_numpy(dequantize_int4_tensor(self.packed.numpy(), self.scale.item(), self.shape))

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Only the rows ``ids`` dequantised (an embedding lookup reads a few rows of the table)."""
        s = self.scheme
        flat = ids.reshape(-1)
        if s in BLOCK_FORMATS:
            values = torch.from_numpy(BLOCK_FORMATS[s][1](self.raw[flat].numpy()))
        elif s == "int8_channel":
            values = self.codes[flat].to(torch.float32) * self.scales[flat, None]
        elif s == "bf16":
            values = torch.from_numpy(bf16_to_float32(self.bits[flat].numpy().view(np.uint16)))
        else:
            values = self.dequantise()[flat]
        return values.reshape(*ids.shape, self.shape[1])

    def extra_repr(self) -> str:
        return f"{self.shape[0]}x{self.shape[1]}, {self.scheme}, {self.nbytes():,} bytes"


class QuantisedLinear(nn.Module):
    """A linear layer whose weight is stored quantised and dequantised at every forward pass.

    No fused low-bit kernel: the matrix is rebuilt in float32 and multiplied as usual, so the
    layer saves memory, not time (it costs the dequantisation on every call).  The bias, if any,
    stays float32.
    """

    def __init__(self, weight: QuantisedWeight, bias: torch.Tensor | None = None):
        super().__init__()
        self.weight_q = weight
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)
        self.out_features, self.in_features = weight.shape

    @classmethod
    def from_linear(cls, linear: nn.Linear, scheme: str) -> QuantisedLinear:
        return cls(QuantisedWeight(linear.weight, scheme), linear.bias)

    def forward(self, x):
        return F.linear(x, self.weight_q.dequantise(), self.bias)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, bias={self.bias is not None}"


class QuantisedEmbedding(nn.Module):
    """A token embedding table stored quantised; a lookup dequantises only the rows it reads."""

    def __init__(self, weight: QuantisedWeight):
        super().__init__()
        self.weight_q = weight
        self.num_embeddings, self.embedding_dim = weight.shape

    def forward(self, ids):
        return self.weight_q.rows(ids)


def embedding_scheme(scheme: str) -> str:
    """How the (tied) embedding table is stored under ``scheme``: as the scheme itself at 16 and
    32 bits, as Q8_0 for every format of 8 bits or fewer (see the module's docstring)."""
    return scheme if scheme in ("float32", "bf16") else "q8_0"


def store_embeddings(model: nn.Module, scheme: str) -> nn.Module:
    """Store ``model.embed.tokens`` in ``scheme`` (in place), and the output head with it when the
    two are tied, so the table is kept once.  A model without such a table is left alone."""
    check_scheme(scheme)
    table = getattr(getattr(model, "embed", None), "tokens", None)
    if not isinstance(table, nn.Embedding):
        return model
    head = getattr(model, "head", None)
    tied = isinstance(head, nn.Linear) and head.weight is table.weight
    stored = QuantisedWeight(table.weight, scheme)
    model.embed.tokens = QuantisedEmbedding(stored)
    if tied:
        model.head = QuantisedLinear(stored, head.bias)
    return model


def quantise_model(model: nn.Module, scheme: str, embeddings: str | None = None) -> nn.Module:
    """Swap every ``nn.Linear`` of ``model`` (in place) for a :class:`QuantisedLinear` in ``scheme``,
    and store the token embedding table (with the output head when they are tied) in
    ``embeddings`` (default :func:`embedding_scheme`).  Norm weights and anything else that is not
    a matrix of a Linear or the embedding stay float32.  Returns the model.
    """
    check_scheme(scheme)
    store_embeddings(model, embeddings or embedding_scheme(scheme))
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, QuantisedLinear.from_linear(child, scheme))
    return model


def _is_dynamic_linear(module: nn.Module) -> bool:
    """Whether ``module`` is a Linear that ``torch.ao``'s dynamic quantisation made (imported only
    when a model may hold one)."""
    if not type(module).__module__.startswith("torch.ao.nn.quantized"):
        return False
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    return isinstance(module, DynamicLinear)


def size_in_bytes(thing, shape: tuple[int, int] | None = None) -> int:
    """Bytes the weights really take in their stored format.

    ``thing`` is a model (its stored matrices counted once even when shared, its other parameters
    and buffers at their own size; a ``torch.ao`` dynamically quantised Linear by its int8
    weight plus scale and zero point) or a scheme's name with a ``shape`` (out, in).
    """
    if isinstance(thing, str):
        if shape is None:
            raise ValueError("size_in_bytes(scheme) needs the matrix's shape=(out, in)")
        return matrix_bytes(thing, shape)
    if not isinstance(thing, nn.Module):
        raise TypeError(f"size_in_bytes takes a model or a scheme's name, got {type(thing).__name__}")
    seen, total = set(), 0
    for module in thing.modules():
        if isinstance(module, QuantisedWeight):          # codes and scales, counted once if shared
            if id(module) not in seen:
                seen.add(id(module))
                total += module.nbytes()
            continue
        if _is_dynamic_linear(module):
            weight, bias = module._weight_bias()              # torch.ao's packed int8 weight
            per_channel = weight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric)
            scales = weight.q_per_channel_scales().numel() if per_channel else 1
            total += weight.numel() * weight.element_size() + scales * (4 + 4)   # scale, zero point
            total += 0 if bias is None else bias.numel() * bias.element_size()
        for tensor in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)):
            if id(tensor) not in seen:                        # a tied weight is stored once
                seen.add(id(tensor))
                total += tensor.numel() * tensor.element_size()
    return total


def torch_dynamic_int8(model: nn.Module, embeddings: str = "q8_0") -> nn.Module:
    """PyTorch's own post-training quantisation, ``torch.ao.quantization.quantize_dynamic``: every
    ``nn.Linear`` gets int8 weights (one scale per tensor) and int8 matrix products with the
    activations quantised on the fly, in a fused kernel (fbgemm or qnnpack).  The embedding table
    (and the head tied to it) is first stored in ``embeddings`` as :func:`quantise_model` does, so
    the comparison with our schemes changes only the block matrices.  Works in place; returns the
    model."""
    import warnings

    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():        # torch 2.13 says torch.ao.quantization is deprecated
        warnings.simplefilter("ignore")
        store_embeddings(model, embeddings)
        return quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=True)


def matrix_errors(weights: dict[str, np.ndarray], schemes=("q8_0", "q4_0", "q4_1", "int8_channel",
                                                             "int4_tensor", "bf16")) -> dict[str, dict[str, float]]:
    """For each matrix and scheme, the relative error ||W - W_hat|| / ||W|| (Frobenius norms)."""
    out = {}
    for name, w in weights.items():
        w = np.asarray(w, dtype=np.float32)
        norm = float(np.linalg.norm(w))
        row = {}
        for scheme in schemes:
            back = QuantisedWeight(torch.from_numpy(w), scheme).dequantise().numpy()
            row[scheme] = float(np.linalg.norm(w - back)) / norm if norm else 0.0
        out[name] = row
    return out


# ----------------------------------------------------------------------------- the study

STUDY = "quantisation"

FORMATS = ("float32", "bf16", "q8_0", "q4_1", "q4_0", "int8_channel", "int4_tensor", "torch_int8_dynamic")
"""The formats the study measures: our schemes, and PyTorch's dynamic int8 quantisation."""

SLICE_CHARS = 10_000
"""The study scores the first 10,000 characters of the ladder's Shakespeare test split, the same
slice for every format: exactly the first piece of ``python -m tinylm score smollm2-135m-instruct``
(:mod:`tinylm.evaluation.long_scores`, windows of 1,024 tokens moving on by 768), so the float32
row can be checked against that committed run."""

SHORT_CHARS = 2_000
"""A shorter slice (the first 2,000 characters) also scored for every format: short enough for a
lab to replay live."""

DECODE_PROMPT, DECODE_TOKENS = 64, 16
"""Decode speed: the first 64 tokens of the slice as a prompt, then 16 greedy tokens."""

ERROR_MATRICES = ("blk.0.attn_q.weight", "blk.0.ffn_down.weight", "blk.15.ffn_up.weight",
                  "blk.29.ffn_down.weight", "token_embd.weight")
"""Matrices whose relative quantisation error the study records one by one (GGUF names)."""


def load_formatted(fmt: str):
    """SmolLM2-135M-Instruct stored in ``fmt`` (one of :data:`FORMATS`), its tokenizer, and the
    CPU-seconds spent quantising."""
    from ..pretrained import smollm2

    model, tokenizer, _ = smollm2.load()
    started = time.process_time()
    if fmt == "torch_int8_dynamic":
        model = torch_dynamic_int8(model)
    elif fmt != "float32":
        model = quantise_model(model, fmt)
    return model.eval(), tokenizer, time.process_time() - started


def decode_speed(model, prompt: list[int], new_tokens: int = DECODE_TOKENS) -> tuple[float, list[int]]:
    """Greedy decode tokens per CPU-second of this thread (``time.thread_time``, so other processes
    on the machine do not count): the time of ``new_tokens + 1`` tokens minus that of 1 token (the
    prompt's prefill and the first token), divided by ``new_tokens``.  Also the new tokens."""
    from ..inference.sampling import Sampler, generate

    greedy = Sampler(temperature=0)
    with torch.no_grad():
        start = time.thread_time()
        generate(model, prompt, 1, greedy, stop=[])
        middle = time.thread_time()
        tokens = generate(model, prompt, new_tokens + 1, greedy, stop=[])
        end = time.thread_time()
    return new_tokens / max((end - middle) - (middle - start), 1e-9), tokens


def gguf_matrices(names=None) -> dict[str, np.ndarray]:
    """Matrices of SmolLM2's GGUF file dequantised to float32 (rows as stored in the file), by name:
    ``names``, or every 2-D tensor."""
    from gguf.quants import dequantize

    from ..data.packages import smollm2_gguf
    from ..pretrained.gguf import GGUFFile

    reader = GGUFFile(smollm2_gguf()).reader
    out = {}
    for t in reader.tensors:
        if (names is None and len(t.shape) == 2) or (names is not None and t.name in names):
            shape = tuple(int(n) for n in reversed(t.shape))
            out[t.name] = dequantize(t.data, t.tensor_type).reshape(shape)
    return out


def _errors_of_all(matrices: dict[str, np.ndarray], schemes) -> dict[str, dict]:
    """Over every block matrix together: relative error (root of summed squared errors over summed
    squares) and the fraction of weights that come back exactly."""
    out = {}
    for scheme in schemes:
        err = total = same = count = 0.0
        for name, w in matrices.items():
            if name == "token_embd.weight":
                continue
            back = QuantisedWeight(torch.from_numpy(w), scheme).dequantise().numpy()
            err += float(((w - back) ** 2).sum(dtype=np.float64))
            total += float((w.astype(np.float64) ** 2).sum())
            same += int((w == back).sum())
            count += w.size
        out[scheme] = {"relative_error": round((err / total) ** 0.5, 5), "unchanged_fraction": round(same / count, 4)}
    return out


def _common_prefix(a: list[int], b: list[int]) -> int:
    """How many tokens two greedy continuations share before they first differ."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def run(out_dir=None) -> dict:
    """``python -m tinylm study quantisation``: SmolLM2 in every format of :data:`FORMATS` on one
    thread: bytes of the weights, bits per character on the first :data:`SLICE_CHARS` characters
    of the Shakespeare test split (and the first :data:`SHORT_CHARS`), greedy decode tokens per
    CPU-second; and the relative error of each scheme on the model's matrices.  Writes
    ``results/quantisation.json``."""
    import gc

    from .. import data, system
    from ..evaluation.long_scores import SETTINGS, score_piece
    from ..pretrained.smollm2 import NAME
    from ..usage import studies

    log = studies.started()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    settings = SETTINGS[NAME]
    text = data.corpus("shakespeare").split("test")[:SLICE_CHARS]
    log.update({
        "model": NAME, "corpus": "shakespeare", "split": "test", "slice_chars": SLICE_CHARS,
        "short_chars": SHORT_CHARS, "context": settings["context"], "stride": settings["stride"],
        "decode": {"prompt_tokens": DECODE_PROMPT, "new_tokens": DECODE_TOKENS, "clock": "time.thread_time, one thread",
                   "how": f"greedy; (time of {DECODE_TOKENS + 1} tokens - time of 1 token) / {DECODE_TOKENS}, "
                          "so the prompt's prefill is left out"},
        "baseline": "float32 is the GGUF file's weights dequantised (matrices stored as Q4_1, embeddings as Q8_0): "
                    "the only copy of SmolLM2 we have offline",
        "kept": {"norms": "float32 in every format",
                 "embeddings": "the token table, tied with the output head, stored once: float32 in float32, bf16 in bf16, "
                               "Q8_0 in every format of 8 bits or fewer (torch_int8_dynamic included)"},
        "kernel": "ours dequantise each matrix to float32 at every forward pass (no fused low-bit kernel); "
                  "torch_int8_dynamic multiplies in int8 with PyTorch's fused kernel",
    })
    rows, reference = [], None
    for fmt in FORMATS:
        model, tokenizer, quantise_seconds = load_formatted(fmt)
        if reference is None:
            ids = tokenizer.encode(text)
            prompt = ids[:DECODE_PROMPT]
        started = time.process_time()
        full = score_piece(model, tokenizer, text, (0, SLICE_CHARS), **settings)
        short = score_piece(model, tokenizer, text[:SHORT_CHARS], (0, SHORT_CHARS), **settings)
        score_seconds = time.process_time() - started
        speed, tokens = decode_speed(model, prompt)
        if reference is None:
            reference = tokens
        row = {"format": fmt, "bytes": size_in_bytes(model),
               "bits_per_weight": None,
               "matrix_bits_per_weight": 8.0 if fmt == "torch_int8_dynamic" else round(
                   bits_per_weight(fmt, (576, 1536)), 3), "bpc": round(full["bits"] / full["chars"], 4),
               "bits": full["bits"], "chars": full["chars"], "tokens": full["tokens"],
               "short_bpc": round(short["bits"] / short["chars"], 4), "short_bits": short["bits"],
               "decode_tokens_per_second": round(speed, 2),
               "greedy_same_as_float32": _common_prefix(tokens, reference),
               "greedy_text": tokenizer.decode(tokens),
               "quantise_cpu_seconds": round(quantise_seconds, 1), "score_cpu_seconds": round(score_seconds, 1)}
        rows.append(row)
        print(f"{fmt:>20}: {row['bytes'] / 1e6:7.1f} MB  {row['bpc']:.4f} bpc  "
              f"{row['decode_tokens_per_second']:.2f} tokens/s", flush=True)
        del model
        gc.collect()
    n_weights = rows[0]["bytes"] / 4           # float32: 4 bytes a weight (norms included)
    for row in rows:
        row["bits_per_weight"] = round(8 * row["bytes"] / n_weights, 3)
    log["formats"] = rows
    log["n_weights"] = int(n_weights)
    # the errors of each scheme on the file's matrices (rows as stored in the file)
    matrices = gguf_matrices()
    schemes = ("bf16", "q8_0", "q4_1", "q4_0", "int8_channel", "int4_tensor")
    log["matrix_errors"] = {name: {s: round(e, 5) for s, e in errors.items()}
                            for name, errors in matrix_errors({n: matrices[n] for n in ERROR_MATRICES}, schemes).items()}
    log["matrix_shapes"] = {name: list(matrices[name].shape) for name in ERROR_MATRICES}
    log["all_block_matrices"] = _errors_of_all(matrices, schemes)
    log["peak_mb"] = round(system.peak_memory_mb())
    del matrices
    return studies.save(STUDY, log)
