"""The Transformer: one implementation, three families.

Everything here is built from five pieces, each a few lines:

- :func:`attention`, scaled dot-product attention, softmax(q k^T / sqrt(d)) v, written out;
- :class:`MultiHeadAttention`, which projects the input to queries, keys and values, splits
  them into heads, attends (optionally to another sequence: cross-attention) and keeps a
  :class:`KVCache` when generating;
- :class:`FeedForward`, the position-wise MLP (GELU or ReLU, or the gated SwiGLU of LLaMA);
- :class:`Block`, attention and MLP with residual connections, normalised before
  (pre-norm, GPT-2 and later) or after (post-norm, the original Transformer and BERT);
- :class:`Embeddings`, tokens plus positions (learned, sinusoidal, or none when rotary
  positions are applied inside attention).

and assembled into the three families of :doc:`/chapters/plm`:

- :class:`Encoder` / :class:`MaskedLM`: bidirectional, BERT;
- :class:`DecoderLM`: causal, GPT, with a KV cache for generation;
- :class:`EncoderDecoder`: an encoder, and a causal decoder that cross-attends to it, T5.

A :class:`TransformerConfig` switches the options; the ones later chapters use (RMSNorm,
rotary positions, SwiGLU, grouped-query attention) are already here, and the MLP is chosen by
``config.mlp``; with ``config.moe_experts > 0`` each block's MLP becomes a sparse mixture of
such MLPs (:mod:`tinylm.models.moe`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .base import INIT_STD, Config, LanguageModel

NORM_EPS = 1e-5
"""The epsilon a normalisation adds to the variance (or mean square) before the square root."""


@dataclass(frozen=True)
class TransformerConfig(Config):
    """The shape and options of a Transformer; the defaults make a small GPT-2-style model."""

    vocab_size: int
    d_model: int = 128
    n_heads: int = 4
    n_layers: int = 4
    d_ff: int | None = None            # width of the MLP's hidden layer (None: 4 * d_model)
    max_len: int = 256                 # the longest sequence the model reads at once
    dropout: float = 0.0               # on embeddings and on each sublayer's output
    attn_dropout: float = 0.0          # on the attention weights (slow on CPU: no fused kernel)
    norm: str = "layer"                # "layer" (LayerNorm) or "rms" (RMSNorm, LLaMA)
    norm_eps: float = NORM_EPS
    norm_first: bool = True            # pre-norm (GPT-2) or post-norm (BERT, the 2017 original)
    positions: str = "learned"         # "learned", "sinusoidal", "rotary" or "none"
    rope_base: float = 10000.0
    mlp: str = "gelu"                  # "gelu", "gelu_tanh", "relu" or "swiglu"
    n_kv_heads: int | None = None      # fewer key/value heads than query heads: grouped-query
    bias: bool = True                  # biases in the linear layers
    tie_embeddings: bool = True        # the output layer reuses the token embedding
    type_vocab_size: int = 0           # BERT's segment embeddings (0: none)
    embedding_norm: bool = False       # BERT normalises the embeddings
    pad_id: int | None = None
    bos_id: int | None = None          # the token an encoder-decoder's decoder starts from
    eos_id: int | None = None          # the token that ends an answer
    moe_experts: int = 0               # > 0: each block's MLP is a mixture of this many experts (moe.py)
    moe_top_k: int = 2                 # experts each token is routed to
    moe_shared: int = 0                # always-on shared experts (DeepSeekMoE), each d_ff wide
    moe_aux_coef: float = 0.01         # weight of the load-balancing loss added to the training loss
    moe_renormalise: bool = True       # the chosen experts' gates are renormalised to sum to 1

    def __post_init__(self):
        if self.d_ff is None:
            object.__setattr__(self, "d_ff", 4 * self.d_model)
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if self.n_heads % self.kv_heads:
            raise ValueError(f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.kv_heads}")
        for name, value, allowed in [("norm", self.norm, NORMS), ("positions", self.positions, POSITIONS),
                                     ("mlp", self.mlp, MLPS)]:
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; choose one of {sorted(allowed)}")
        if self.moe_experts < 0 or self.moe_shared < 0 or self.moe_aux_coef < 0:
            raise ValueError("moe_experts, moe_shared and moe_aux_coef cannot be negative")
        if self.moe_experts and not 1 <= self.moe_top_k <= self.moe_experts:
            raise ValueError(f"moe_top_k must be between 1 and moe_experts ({self.moe_experts}), "
                             f"got {self.moe_top_k}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads


NORMS = {"layer", "rms"}
POSITIONS = {"learned", "sinusoidal", "rotary", "none"}
MLPS = {"gelu", "gelu_tanh", "relu", "swiglu"}


# ----------------------------------------------------------------------------- attention

def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None):
    """Scaled dot-product attention, written out: returns (output, weights).

    ``q`` is (..., Lq, d), ``k`` and ``v`` are (..., Lk, d); ``mask`` (broadcast to (..., Lq, Lk))
    is True where a query may look at a key.  Each output row is a weighted average of the rows
    of ``v``, weighted by how well the query matches each key.
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights @ v, weights


def causal_mask(length: int, past: int = 0) -> torch.Tensor:
    """(length, past + length) booleans: query i (at position past + i) sees keys 0 .. past + i."""
    return torch.ones(length, past + length, dtype=torch.bool).tril(diagonal=past)


def sinusoidal_positions(length: int, d_model: int) -> torch.Tensor:
    """The fixed positions of Vaswani et al. (2017): sines and cosines of geometric frequencies."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    table = torch.zeros(length, d_model)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)[:, : d_model // 2]
    return table


def rotate(x: torch.Tensor, start: int, base: float = 10000.0) -> torch.Tensor:
    """Rotary positions (Su et al., 2021): turn each pair of dimensions of x (..., L, d) by an
    angle proportional to its position, so q . k depends on positions only through their
    difference.  Pairs are (i, i + d/2), as in LLaMA's Hugging Face layout."""
    return turn(x, torch.arange(start, start + x.shape[-2], dtype=torch.float32), base)


def turn(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Turn the rows of x (..., L, d) by the rotary angles of ``positions`` (L values, or one for
    every row; or, for x (B, heads, L, d), a (B, L) table: each sequence its own positions).
    Turns add up: a row turned by p and then by -s is the row turned by p - s."""
    d = x.shape[-1]
    inv = base ** (-torch.arange(0, d, 2, dtype=torch.float32) / d)
    per_sequence = positions.dim() == 2
    angles = positions.to(torch.float32)[..., None] * inv if per_sequence else positions.to(torch.float32).reshape(-1, 1) * inv
    cos, sin = torch.cat([angles.cos()] * 2, -1).to(x.dtype), torch.cat([angles.sin()] * 2, -1).to(x.dtype)
    if per_sequence:                       # (B, L, d) -> (B, 1, L, d): the same turn for every head
        cos, sin = cos[:, None], sin[:, None]
    half1, half2 = x[..., : d // 2], x[..., d // 2:]
    return x * cos + torch.cat([-half2, half1], dim=-1) * sin


class KVCache:
    """The keys and values a decoder has computed so far, one pair per layer.

    When generating, each new token needs the keys and values of all the tokens before it;
    without a cache they are recomputed from the whole prefix at every step.
    """

    def __init__(self):
        self.keys: dict[int, torch.Tensor] = {}
        self.values: dict[int, torch.Tensor] = {}
        self.length = 0          # tokens cached (the position of the next token)

    def positions(self, n_new: int) -> torch.Tensor:
        """The positions of the next ``n_new`` tokens (the same for every sequence of the batch)."""
        return torch.arange(self.length, self.length + n_new, dtype=torch.float32)

    def key_mask(self) -> torch.Tensor | None:
        """Which cached keys each sequence may see: here all of them (None).  A cache that holds
        sequences of different lengths side by side (:mod:`tinylm.deploy.batching`) says which
        are padding."""
        return None

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        if layer in self.keys:
            k = torch.cat([self.keys[layer], k], dim=-2)
            v = torch.cat([self.values[layer], v], dim=-2)
        self.keys[layer], self.values[layer] = k, v
        return k, v

    def select(self, rows: torch.Tensor) -> "KVCache":
        """A cache holding the given rows of this one's batch, in that order (beam search keeps
        the sequences that survive a step, some of them several times)."""
        out = KVCache()
        out.keys = {layer: k[rows] for layer, k in self.keys.items()}
        out.values = {layer: v[rows] for layer, v in self.values.items()}
        out.length = self.length
        return out

    def slide(self, keep: int, rope_base: float | None) -> None:
        """Keep only the last ``keep`` tokens, renumbered as positions 0 .. keep - 1.

        For a model with rotary positions only the *difference* of two positions matters, so
        turning every kept key back by the same angle makes the cache exactly what reading those
        ``keep`` tokens afresh would have made *in the first layer* (``rope_base=None``: a model
        without positions, nothing to turn).  In deeper layers a kept key also remembers the past
        its token saw, and a model trained on sequences that start at position 0 expects the
        first token it sees to be a real start (an "attention sink"): Lab 15 measures what
        sliding the cache to read a long text costs."""
        if keep >= self.length:
            return
        if keep == 0:
            self.keys, self.values, self.length = {}, {}, 0
            return
        shift = torch.tensor([float(self.length - keep)])
        for layer in self.keys:
            kept = self.keys[layer][..., -keep:, :]
            self.keys[layer] = kept if rope_base is None else turn(kept, -shift, rope_base)
            self.values[layer] = self.values[layer][..., -keep:, :]
        self.length = keep

    def __repr__(self) -> str:
        return f"KVCache(layers={len(self.keys)}, length={self.length})"


class MultiHeadAttention(nn.Module):
    """Queries from ``x``; keys and values from ``x`` (self-attention) or ``memory`` (cross)."""

    def __init__(self, config: TransformerConfig, layer: int = 0, cross: bool = False):
        super().__init__()
        c = config
        self.config, self.layer, self.cross = c, layer, cross
        self.q = nn.Linear(c.d_model, c.n_heads * c.head_dim, bias=c.bias)
        self.k = nn.Linear(c.d_model, c.kv_heads * c.head_dim, bias=c.bias)
        self.v = nn.Linear(c.d_model, c.kv_heads * c.head_dim, bias=c.bias)
        self.out = nn.Linear(c.d_model, c.d_model, bias=c.bias)
        self.weights: torch.Tensor | None = None     # the last attention weights, when asked for

    def _heads(self, x: torch.Tensor, n: int) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, n, self.config.head_dim).transpose(1, 2)   # (B, heads, L, d)

    def _memory_keys(self, memory, cache):
        """Cross-attention's keys and values come from the encoder's output, which does not
        change while decoding: compute them once and keep them in the cache."""
        if cache is not None and self.layer in cache.keys:
            return cache.keys[self.layer], cache.values[self.layer]
        k, v = self._heads(self.k(memory), self.config.kv_heads), self._heads(self.v(memory), self.config.kv_heads)
        if cache is not None:
            cache.keys[self.layer], cache.values[self.layer] = k, v
        return k, v

    def forward(self, x, memory=None, mask=None, causal: bool = False, cache: KVCache | None = None,
                need_weights: bool = False):
        """``mask``: True where attention is allowed, broadcast to (B, heads, Lq, Lk).
        ``causal``: each position sees only itself and earlier positions (and the cache)."""
        c = self.config
        q = self._heads(self.q(x), c.n_heads)
        if self.cross:
            k, v = self._memory_keys(memory, cache)
        else:
            k, v = self._heads(self.k(x), c.kv_heads), self._heads(self.v(x), c.kv_heads)
            if c.positions == "rotary":
                positions = (cache.positions(x.shape[1]) if cache is not None
                             else torch.arange(x.shape[1], dtype=torch.float32))
                q, k = turn(q, positions, c.rope_base), turn(k, positions, c.rope_base)
            if cache is not None:
                k, v = cache.update(self.layer, k, v)
                visible = cache.key_mask()             # None, or (B, 1, 1, keys): padding hidden
                if visible is not None:
                    mask = visible if mask is None else mask & visible
        if c.kv_heads != c.n_heads:                    # grouped-query: each key/value head serves a group
            k = k.repeat_interleave(c.n_heads // c.kv_heads, dim=1)
            v = v.repeat_interleave(c.n_heads // c.kv_heads, dim=1)
        n_q, n_k = q.shape[-2], k.shape[-2]
        fused_causal = causal and mask is None and n_q == n_k     # torch's fast path needs no mask
        if causal and not fused_causal:
            allowed = causal_mask(n_q, n_k - n_q)
            mask = allowed if mask is None else mask & allowed
        if need_weights:
            y, self.weights = attention(q, k, v, causal_mask(n_q) if fused_causal else mask)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=fused_causal,
                                               dropout_p=c.attn_dropout if self.training else 0.0)
        batch, _, length, _ = y.shape
        return self.out(y.transpose(1, 2).reshape(batch, length, c.d_model))


# ----------------------------------------------------------------------------- the block

class RMSNorm(nn.Module):
    """x / rms(x) * g: LayerNorm without centring or bias (Zhang and Sennrich, 2019; LLaMA)."""

    def __init__(self, d: int, eps: float = NORM_EPS):
        super().__init__()
        self.eps, self.weight = eps, nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def make_norm(config: TransformerConfig) -> nn.Module:
    if config.norm == "rms":
        return RMSNorm(config.d_model, config.norm_eps)
    return nn.LayerNorm(config.d_model, eps=config.norm_eps, bias=config.bias)


class FeedForward(nn.Module):
    """The position-wise MLP: d_model -> hidden -> d_model, applied to every position alike."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        c = config
        self.kind = c.mlp
        self.up = nn.Linear(c.d_model, c.d_ff, bias=c.bias)
        self.gate = nn.Linear(c.d_model, c.d_ff, bias=c.bias) if c.mlp == "swiglu" else None
        self.down = nn.Linear(c.d_ff, c.d_model, bias=c.bias)

    def forward(self, x):
        if self.kind == "swiglu":
            h = F.silu(self.gate(x)) * self.up(x)
        elif self.kind == "relu":
            h = F.relu(self.up(x))
        else:
            h = F.gelu(self.up(x), approximate="tanh" if self.kind == "gelu_tanh" else "none")
        return self.down(h)


def make_mlp(config: TransformerConfig) -> nn.Module:
    """A block's MLP: a :class:`FeedForward`, or a mixture of them (:mod:`tinylm.models.moe`)."""
    if config.moe_experts:
        from .moe import MixtureOfExperts     # moe builds its experts from FeedForward

        return MixtureOfExperts(config)
    return FeedForward(config)


class Block(nn.Module):
    """Self-attention (and, in a decoder of an encoder-decoder, cross-attention), then the MLP;
    each sublayer added to the residual stream, with normalisation before (pre-norm) or after
    (post-norm) it."""

    def __init__(self, config: TransformerConfig, layer: int = 0, cross: bool = False):
        super().__init__()
        self.config = config
        self.attn_norm, self.attn = make_norm(config), MultiHeadAttention(config, layer)
        self.cross_norm = make_norm(config) if cross else None
        self.cross = MultiHeadAttention(config, layer, cross=True) if cross else None
        self.mlp_norm, self.mlp = make_norm(config), make_mlp(config)
        self.drop = nn.Dropout(config.dropout)

    def _sublayer(self, x, norm, f):
        if self.config.norm_first:
            return x + self.drop(f(norm(x)))
        return norm(x + self.drop(f(x)))

    def forward(self, x, mask=None, causal=False, cache=None, memory=None, memory_mask=None,
                need_weights=False, cross_cache=None):
        x = self._sublayer(x, self.attn_norm,
                           lambda h: self.attn(h, mask=mask, causal=causal, cache=cache, need_weights=need_weights))
        if self.cross is not None:
            x = self._sublayer(x, self.cross_norm,
                               lambda h: self.cross(h, memory=memory, mask=memory_mask, cache=cross_cache,
                                                    need_weights=need_weights))
        return self._sublayer(x, self.mlp_norm, self.mlp)


class Embeddings(nn.Module):
    """Token embeddings plus position (and, for BERT, segment) embeddings."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        c = config
        self.config = c
        self.tokens = nn.Embedding(c.vocab_size, c.d_model)
        self.positions = nn.Embedding(c.max_len, c.d_model) if c.positions == "learned" else None
        if c.positions == "sinusoidal":
            self.register_buffer("table", sinusoidal_positions(c.max_len, c.d_model), persistent=False)
        self.types = nn.Embedding(c.type_vocab_size, c.d_model) if c.type_vocab_size else None
        self.norm = make_norm(c) if c.embedding_norm else None
        self.drop = nn.Dropout(c.dropout)

    def forward(self, ids, start: int = 0, token_types=None):
        length = ids.shape[1]
        if start + length > self.config.max_len and self.config.positions in ("learned", "sinusoidal"):
            raise ValueError(f"sequence of {start + length} tokens is longer than max_len {self.config.max_len}")
        x = self.tokens(ids)
        if self.positions is not None:
            x = x + self.positions.weight[start:start + length]
        elif self.config.positions == "sinusoidal":
            x = x + self.table[start:start + length]
        if self.types is not None:
            x = x + self.types(token_types if token_types is not None else torch.zeros_like(ids))
        if self.norm is not None:
            x = self.norm(x)
        return self.drop(x)


def _init_weights(module: nn.Module, std: float = INIT_STD) -> None:
    """GPT-2's initialisation: small normal weights, zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, std)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)


def _padding_mask(padding_mask):
    """(B, L) True for real tokens -> (B, 1, 1, L), broadcast over heads and queries."""
    return None if padding_mask is None else padding_mask[:, None, None, :].bool()


# ----------------------------------------------------------------------------- the three families

class Encoder(nn.Module):
    """Encoder-only (BERT): every position attends to every other; returns hidden states.

    A building block, not a language model: :class:`MaskedLM` puts a head on it, and so do
    :class:`tinylm.models.classifier.SequenceClassifier` and the sentence encoder of
    :mod:`tinylm.pretrained.minilm`."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        self.embed = Embeddings(config)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layers))
        self.norm = make_norm(config) if config.norm_first else None
        _init_weights(self)

    def forward(self, ids, padding_mask=None, token_types=None, need_weights: bool = False):
        x = self.embed(ids, token_types=token_types)
        mask = _padding_mask(padding_mask)
        for block in self.blocks:
            x = block(x, mask=mask, need_weights=need_weights)
        return self.norm(x) if self.norm is not None else x

    def attention_weights(self) -> list[torch.Tensor]:
        """Each layer's attention weights (B, heads, L, L) from the last call with need_weights."""
        return [block.attn.weights for block in self.blocks]


class MaskedLM(LanguageModel, nn.Module):
    """An :class:`Encoder` with BERT's masked-language-model head: predict the hidden tokens.

    ``forward(ids, padding_mask=...)`` returns ``(logits, None)``: logits at every position for the
    token that belongs there.  Every position sees the whole text, so a masked LM gives no
    probability of a text read left to right: :func:`tinylm.score` refuses it."""

    causal = False

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.transform = nn.Sequential(nn.Linear(config.d_model, config.d_model), nn.GELU(), make_norm(config))
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        _init_weights(self.transform)

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits over the vocabulary from hidden states: the output layer reuses the embedding."""
        return self.transform(hidden) @ self.encoder.embed.tokens.weight.T + self.bias

    def forward(self, ids, state=None, padding_mask=None, token_types=None):
        return self.head(self.encoder(ids, padding_mask, token_types)), None

    @property
    def max_len(self) -> int:
        return self.config.max_len


class DecoderLM(LanguageModel, nn.Module):
    """Decoder-only (GPT): causal self-attention and a next-token head.

    ``forward(ids, state)`` returns ``(logits, state)`` like every model of the course; the state
    is a :class:`KVCache` (``new_state()`` makes an empty one) holding the keys and values of the
    tokens read so far, so that generation feeds one new token at a time.  Without a state
    (training, scoring) nothing is cached.

    With a mixture of experts (``moe_experts > 0``), ``aux_loss`` holds after each forward pass
    the load-balancing loss times ``moe_aux_coef``, summed over the layers, which the causal-LM
    objective adds to its loss; for a dense model it stays None.
    """

    aux_loss: torch.Tensor | None = None

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        self.embed = Embeddings(config)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layers))
        self.norm = make_norm(config) if config.norm_first else nn.Identity()
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        _init_weights(self)
        for block in self.blocks:   # GPT-2: scale the residual projections by 1/sqrt(2 * layers)
            mlps = [m for m in block.mlp.modules() if isinstance(m, FeedForward)]   # one, or the experts
            for linear in [block.attn.out] + [mlp.down for mlp in mlps]:
                nn.init.normal_(linear.weight, 0.0, INIT_STD / math.sqrt(2 * config.n_layers))
        if config.tie_embeddings:
            self.head.weight = self.embed.tokens.weight

    def forward(self, ids, state: KVCache | None = None, need_weights: bool = False):
        hidden, state = self.features(ids, state, need_weights)
        return self.head(hidden), state

    def features(self, ids, state: KVCache | None = None, need_weights: bool = False):
        """``(hidden, state)``: the last block's output after the final norm, (B, T, d_model), the
        vectors the next-token head reads.  A reward model or a value head reads them too
        (:mod:`tinylm.alignment`)."""
        start = state.length if state is not None else 0
        x = self.embed(ids, start=start)
        for block in self.blocks:
            x = block(x, causal=True, cache=state, need_weights=need_weights)
        if state is not None:
            state.length += ids.shape[1]
        if self.config.moe_experts:
            self.aux_loss = self.config.moe_aux_coef * sum(block.mlp.aux_loss for block in self.blocks)
        return self.norm(x), state

    def new_state(self) -> KVCache:
        return KVCache()

    @property
    def max_len(self) -> int:
        return self.config.max_len

    def attention_weights(self) -> list[torch.Tensor]:
        return [block.attn.weights for block in self.blocks]


@dataclass
class EncoderState:
    """What an encoder-decoder's decoder needs while it writes: the encoder's output (``memory``)
    and its padding mask, and, when generating, the caches of its self- and cross-attention."""

    memory: torch.Tensor                       # (B, S, d_model)
    memory_mask: torch.Tensor | None           # (B, 1, 1, S), True at real source tokens
    cache: KVCache | None = None
    cross_cache: KVCache | None = None

    def select(self, rows: torch.Tensor) -> "EncoderState":
        """The state of the given rows of the batch (see :meth:`KVCache.select`)."""
        return EncoderState(self.memory[rows], None if self.memory_mask is None else self.memory_mask[rows],
                            None if self.cache is None else self.cache.select(rows),
                            None if self.cross_cache is None else self.cross_cache.select(rows))


class EncoderDecoder(LanguageModel, nn.Module):
    """Encoder-decoder (the 2017 Transformer, T5): the decoder cross-attends to the encoder's
    output.  Both share one token embedding, as in T5.

    The encoder reads the source once: ``state = model.encode(src, src_padding_mask)``.  Then the
    decoder follows the model protocol, ``model(ids, state) -> (logits, state)``: ``ids`` are the
    decoder's tokens (teacher forcing: the answer shifted right, after ``[BOS]``), and the state,
    an :class:`EncoderState`, carries the encoder's output (and the caches when generating).
    """

    encoder_decoder = True

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.embed = Embeddings(config)
        self.embed.tokens = self.encoder.embed.tokens
        self.blocks = nn.ModuleList(Block(config, i, cross=True) for i in range(config.n_layers))
        self.norm = make_norm(config) if config.norm_first else nn.Identity()
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        _init_weights(self)
        if config.tie_embeddings:
            self.head.weight = self.encoder.embed.tokens.weight

    def encode(self, src, src_padding_mask=None, use_cache: bool = False) -> EncoderState:
        """Run the encoder over the source; with ``use_cache`` the state also gets empty caches
        for generating one token at a time."""
        caches = (KVCache(), KVCache()) if use_cache else (None, None)
        return EncoderState(self.encoder(src, src_padding_mask), _padding_mask(src_padding_mask), *caches)

    def forward(self, ids, state: EncoderState, need_weights: bool = False):
        """Logits for each position of the decoder's ``ids``, given the encoded source."""
        if not isinstance(state, EncoderState):
            raise TypeError("an encoder-decoder decodes from the encoded source: "
                            "model(ids, model.encode(src, src_padding_mask))")
        cache = state.cache
        start = cache.length if cache is not None else 0
        x = self.embed(ids, start=start)
        for block in self.blocks:
            x = block(x, causal=True, cache=cache, memory=state.memory, memory_mask=state.memory_mask,
                      cross_cache=state.cross_cache, need_weights=need_weights)
        if cache is not None:
            cache.length += ids.shape[1]
        return self.head(self.norm(x)), state

    @property
    def max_len(self) -> int:
        return self.config.max_len

    def attention_weights(self, kind: str = "cross") -> list[torch.Tensor]:
        """Each decoder layer's self- or cross-attention weights from the last call with
        need_weights."""
        if kind not in ("self", "cross"):
            raise ValueError(f"kind is 'self' or 'cross', got {kind!r}")
        return [(block.cross if kind == "cross" else block.attn).weights for block in self.blocks]


FAMILIES = {"encoder": MaskedLM, "decoder": DecoderLM, "encoder-decoder": EncoderDecoder}
"""The three architecture families, by name."""
