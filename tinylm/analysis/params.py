r"""Counting the parameters of a Transformer language model from its configuration.

"GPT-2 has 1.5B parameters", "LLaMA-7B": the size of a model is the number of numbers in its
weight matrices, and it follows from a handful of hyperparameters.  This module counts them
for the four families of the course, one readable function each, and tells where every
parameter sits (the *breakdown*):

``embeddings``  tables with one row per token id (and per position, per segment type)
``attention``   the query, key, value and output projections of every layer
``mlp``         the position-wise feed-forward network of every layer
``norms``       the scale (and bias) vectors of LayerNorm or RMSNorm
``head``        what sits after the last layer: an untied output matrix, BERT's pooler

Notation: vocabulary size V, model width d, number of layers L, feed-forward width d_ff.

One layer of a GPT-style decoder
    Attention projects x to queries, keys and values (three d x d matrices) and the result
    back to width d (a fourth one): 4 d^2 weights.  The MLP maps d -> d_ff -> d with
    d_ff = 4 d: 2 * 4 d^2 = 8 d^2 weights.  So a layer has about 12 d^2 weights, and a
    decoder-only model about

        N  ~  12 L d^2  +  V d          (the layers, then the token embedding)

    Biases and norm scales add only O(d) per layer.  Kaplan et al. (2020) use 12 L d^2 as
    "the non-embedding parameters"; the lab checks how close it comes.

Tied weights
    The output head turns a d-vector into V scores, a V x d matrix, exactly the shape of
    the token embedding.  GPT-2, BERT and T5 v1.0 *tie* them: one matrix serves both, and
    it is counted once (PyTorch's ``model.parameters()`` also yields a shared tensor once).
    LLaMA and T5 v1.1 keep a separate head: another V d parameters.

The families
    - :class:`GPTConfig`: GPT-1/2/3. Learned positions, LayerNorm with bias, biases in
      every projection, tied head.  GPT-1 has no final LayerNorm.
    - :class:`BertConfig`: encoder-only. Token, position and token-type embeddings, a
      LayerNorm on the embeddings, post-norm layers with biases, an optional pooler.
    - :class:`T5Config`: encoder-decoder. RMSNorm (a scale, no bias), no biases anywhere,
      one embedding shared by encoder and decoder, a relative position bias (one scalar
      per bucket and head) in the first layer of each stack only, a decoder layer with
      cross-attention. v1.0: ReLU MLP, tied head; v1.1: gated MLP (three matrices), untied.
    - :class:`LlamaConfig`: decoder-only with RMSNorm, a SwiGLU MLP (gate, up and down
      matrices: 3 d d_ff), rotary positions (no position parameters, nothing to count),
      no biases, untied head; optional grouped-query attention (fewer key/value heads).

:data:`PUBLISHED` holds the configurations of well-known models with the total their
authors stated, so that each count can be set beside the published number; the tests
check every count against ``transformers`` itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PARTS = ("embeddings", "attention", "mlp", "norms", "head")


def _parts(**counts: int) -> dict[str, int]:
    """A breakdown with every part present, in the order of :data:`PARTS`."""
    unknown = set(counts) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown parts {sorted(unknown)}; the parts are {PARTS}")
    return {part: int(counts.get(part, 0)) for part in PARTS}


@dataclass(frozen=True)
class Shape:
    """What every family's configuration states first: the vocabulary, the width of the model
    (the size of each token's vector), the number of layers and of attention heads."""

    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int


# --------------------------------------------------------------------------- GPT (decoder-only)

@dataclass(frozen=True)
class GPTConfig(Shape):
    """A GPT-style decoder: learned positions, pre-LayerNorm blocks with biases, tied head."""

    max_len: int                 # the longest sequence: one learned position vector each
    d_ff: int | None = None      # None: 4 * d_model, as in GPT-1, 2 and 3
    final_norm: bool = True      # GPT-2 and GPT-3 end with a LayerNorm; GPT-1 does not
    tied_head: bool = True

    @property
    def ff(self) -> int:
        return self.d_ff or 4 * self.d_model


def gpt_parameters(c: GPTConfig) -> dict[str, int]:
    """Where the parameters of a GPT-style model sit.

    Per layer: attention W_qkv (d x 3d) + b_qkv (3d) and W_o (d x d) + b_o (d), that is
    4 d^2 + 4 d; the MLP W_1 (d x d_ff) + b_1 (d_ff) and W_2 (d_ff x d) + b_2 (d); two
    LayerNorms with a scale and a bias each, 4 d.  With d_ff = 4 d a layer has 12 d^2 + 13 d.
    """
    d, ff, L = c.d_model, c.ff, c.n_layers
    return _parts(
        embeddings=c.vocab_size * d + c.max_len * d,
        attention=L * (4 * d * d + 4 * d),
        mlp=L * (2 * d * ff + ff + d),
        norms=L * 2 * (2 * d) + (2 * d if c.final_norm else 0),
        head=0 if c.tied_head else c.vocab_size * d,
    )


# --------------------------------------------------------------------------- BERT (encoder-only)

@dataclass(frozen=True)
class BertConfig(Shape):
    """A BERT encoder: three embedding tables, post-LayerNorm layers with biases, a pooler."""

    d_ff: int
    max_len: int = 512           # the longest sequence: one learned position vector each
    type_vocab_size: int = 2     # segment A / segment B
    pooler: bool = True          # a d x d layer with tanh on the [CLS] vector


def bert_parameters(c: BertConfig) -> dict[str, int]:
    """Where the parameters of a BERT encoder sit.

    Embeddings: token, position and token-type tables, then a LayerNorm (2 d).  Per layer:
    Q, K, V, O with biases (4 d^2 + 4 d), a LayerNorm after attention, the MLP
    (2 d d_ff + d_ff + d) and a LayerNorm after it.  The pooler is d^2 + d.
    """
    d, ff, L = c.d_model, c.d_ff, c.n_layers
    return _parts(
        embeddings=(c.vocab_size + c.max_len + c.type_vocab_size) * d,
        attention=L * (4 * d * d + 4 * d),
        mlp=L * (2 * d * ff + ff + d),
        norms=2 * d + L * 2 * (2 * d),
        head=d * d + d if c.pooler else 0,
    )


# --------------------------------------------------------------------------- T5 (encoder-decoder)

@dataclass(frozen=True)
class T5Config(Shape):
    """A T5 encoder-decoder: no biases, RMSNorm, relative position buckets, shared embedding.
    ``n_layers`` counts the encoder's layers."""

    d_kv: int                    # width of one head; n_heads * d_kv need not equal d_model
    d_ff: int
    n_decoder_layers: int | None = None   # None: as many as the encoder
    num_buckets: int = 32        # relative-position buckets of the attention bias
    gated_ff: bool = False       # v1.1: a gated MLP with two input matrices
    tied_head: bool = True       # v1.0 ties the head to the embedding; v1.1 does not


def t5_parameters(c: T5Config) -> dict[str, int]:
    """Where the parameters of a T5 model sit.

    An attention block has four d x (h d_kv) matrices and no bias.  The relative position
    bias, a table of num_buckets x h scalars, lives in the first layer of the encoder and
    of the decoder only; the other layers reuse it.  A decoder layer has self-attention,
    cross-attention and the MLP, each after its own RMSNorm (a scale vector of d); each
    stack ends with one more RMSNorm.
    """
    d, inner, ff = c.d_model, c.n_heads * c.d_kv, c.d_ff
    L_enc = c.n_layers
    L_dec = c.n_decoder_layers if c.n_decoder_layers is not None else c.n_layers
    attention = 4 * d * inner
    mlp = (3 if c.gated_ff else 2) * d * ff
    position_bias = c.num_buckets * c.n_heads
    return _parts(
        embeddings=c.vocab_size * d,                              # shared by encoder, decoder
        attention=L_enc * attention + L_dec * 2 * attention + 2 * position_bias,
        mlp=(L_enc + L_dec) * mlp,
        norms=(2 * L_enc + 1) * d + (3 * L_dec + 1) * d,
        head=0 if c.tied_head else c.vocab_size * d,
    )


# --------------------------------------------------------------------------- LLaMA (decoder-only)

@dataclass(frozen=True)
class LlamaConfig(Shape):
    """A LLaMA decoder: RMSNorm, SwiGLU MLP, rotary positions, no biases, untied head."""

    d_ff: int
    n_kv_heads: int | None = None   # grouped-query attention: fewer key/value heads
    tied_head: bool = False


def llama_parameters(c: LlamaConfig) -> dict[str, int]:
    """Where the parameters of a LLaMA model sit.

    Per layer: W_q and W_o are d x d; W_k and W_v are d x (n_kv_heads * head width), which
    is d x d unless grouped-query attention shares each key/value head among several
    query heads.  The SwiGLU MLP, W_down (SiLU(x W_gate) * x W_up), has three matrices:
    3 d d_ff.  Two RMSNorms of d.  Rotary position embeddings rotate queries and keys by
    fixed angles: they have no parameters at all.
    """
    d, L = c.d_model, c.n_layers
    head_dim = d // c.n_heads
    kv = (c.n_kv_heads or c.n_heads) * head_dim
    return _parts(
        embeddings=c.vocab_size * d,
        attention=L * (2 * d * d + 2 * d * kv),
        mlp=L * 3 * d * c.d_ff,
        norms=L * 2 * d + d,
        head=0 if c.tied_head else c.vocab_size * d,
    )


# --------------------------------------------------------------------------- any family

FAMILIES = {GPTConfig: gpt_parameters, BertConfig: bert_parameters,
            T5Config: t5_parameters, LlamaConfig: llama_parameters}


def breakdown(config) -> dict[str, int]:
    """The parameters of ``config`` by part (see :data:`PARTS`)."""
    try:
        return FAMILIES[type(config)](config)
    except KeyError:
        raise TypeError(f"no parameter count for {type(config).__name__}; "
                        f"use one of {[cls.__name__ for cls in FAMILIES]}") from None


def num_parameters(config) -> int:
    """The total number of parameters, each shared (tied) matrix counted once."""
    return sum(breakdown(config).values())


def approx_12Ld2(n_layers: int, d_model: int) -> int:
    """12 L d^2: the weight matrices of L GPT-style layers, without biases and norms."""
    return 12 * n_layers * d_model ** 2


def approx_decoder(config: GPTConfig) -> int:
    """12 L d^2 + V d: the layers plus the (tied) token embedding."""
    return approx_12Ld2(config.n_layers, config.d_model) + config.vocab_size * config.d_model


# --------------------------------------------------------------------------- memory

BYTES_PER_PARAMETER = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "int8": 1.0, "int4": 0.5}
"""Storage per weight for each number format (int4 ignores the scales quantisers add)."""

ADAM_BYTES_PER_PARAMETER = 16
"""Rule of thumb for training with Adam in mixed precision (Rajbhandari et al., 2020):
fp16 weights (2) and gradients (2), plus an fp32 master copy (4) and Adam's two moment
estimates (4 + 4).  Activations come on top and depend on batch size and context length."""


def weight_bytes(n_parameters: int, dtype: str = "fp16") -> float:
    """Bytes needed just to hold the weights in the number format ``dtype``."""
    if dtype not in BYTES_PER_PARAMETER:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {list(BYTES_PER_PARAMETER)}")
    return n_parameters * BYTES_PER_PARAMETER[dtype]


def training_bytes(n_parameters: int) -> float:
    """Bytes of weights, gradients and Adam state when training (without activations)."""
    return n_parameters * ADAM_BYTES_PER_PARAMETER


# --------------------------------------------------------------------------- published models

@dataclass(frozen=True)
class PublishedModel:
    """A released model: its configuration, year, and the size its authors stated."""

    name: str
    year: int
    month: int               # when the paper or release appeared
    config: GPTConfig | BertConfig | T5Config | LlamaConfig
    published: int | None    # the total stated in the paper or model card (None: not stated)
    cite: str                # BibTeX key in references.bib

    @property
    def date(self) -> float:
        """The year as a number, mid-month: June 2018 is 2018.46."""
        return self.year + (self.month - 0.5) / 12

    @property
    def family(self) -> str:
        return {GPTConfig: "decoder-only", BertConfig: "encoder-only", T5Config: "encoder-decoder",
                LlamaConfig: "decoder-only"}[type(self.config)]


def _gpt2(d: int, L: int, h: int) -> GPTConfig:
    return GPTConfig(vocab_size=50257, max_len=1024, d_model=d, n_layers=L, n_heads=h)


PUBLISHED: dict[str, PublishedModel] = {
    # GPT-1: 40,000 BPE merges (40,478 tokens), 512 positions; the paper states no total.
    "gpt-1": PublishedModel("GPT-1", 2018, 6, GPTConfig(vocab_size=40478, max_len=512, d_model=768,
                                                     n_layers=12, n_heads=12, final_norm=False),
                            None, "radford2018"),
    # GPT-2, Table 2 of the paper: 117M, 345M, 762M, 1542M.
    "gpt2-small": PublishedModel("GPT-2 small", 2019, 2, _gpt2(768, 12, 12), 117_000_000, "radford2019"),
    "gpt2-medium": PublishedModel("GPT-2 medium", 2019, 2, _gpt2(1024, 24, 16), 345_000_000, "radford2019"),
    "gpt2-large": PublishedModel("GPT-2 large", 2019, 2, _gpt2(1280, 36, 20), 762_000_000, "radford2019"),
    "gpt2-xl": PublishedModel("GPT-2 XL", 2019, 2, _gpt2(1600, 48, 25), 1_542_000_000, "radford2019"),
    # GPT-3 175B: 96 layers, d = 12288, 96 heads, context 2048, GPT-2's tokeniser.
    "gpt3-175b": PublishedModel("GPT-3 175B", 2020, 5, GPTConfig(vocab_size=50257, max_len=2048,
                                                              d_model=12288, n_layers=96, n_heads=96),
                                175_000_000_000, "brown2020"),
    # BERT: "Total Parameters=110M" and "=340M".
    "bert-base": PublishedModel("BERT-base", 2018, 10, BertConfig(vocab_size=30522, d_model=768, n_layers=12,
                                                              n_heads=12, d_ff=3072), 110_000_000, "devlin2019"),
    "bert-large": PublishedModel("BERT-large", 2018, 10, BertConfig(vocab_size=30522, d_model=1024, n_layers=24,
                                                                n_heads=16, d_ff=4096), 340_000_000, "devlin2019"),
    # T5 v1.0 base: "about 220 million parameters"; 32,128 embedding rows in the release.
    "t5-base": PublishedModel("T5-base", 2019, 10, T5Config(vocab_size=32128, d_model=768, n_layers=12, n_heads=12,
                                                        d_kv=64, d_ff=3072), 220_000_000, "raffel2020"),
    # LLaMA: 6.7B and 13.0B in the paper; d_ff from the released configuration.
    "llama-7b": PublishedModel("LLaMA-7B", 2023, 2, LlamaConfig(vocab_size=32000, d_model=4096, n_layers=32,
                                                             n_heads=32, d_ff=11008), 6_700_000_000, "touvron2023"),
    "llama-13b": PublishedModel("LLaMA-13B", 2023, 2, LlamaConfig(vocab_size=32000, d_model=5120, n_layers=40,
                                                               n_heads=40, d_ff=13824), 13_000_000_000, "touvron2023"),
}


# --------------------------------------------------------------------------- a real checkpoint


@dataclass(frozen=True)
class Checkpoint:
    """What a GGUF file says about a LLaMA-architecture model, without loading its weights."""

    config: LlamaConfig
    tensors: dict[str, tuple[int, str, int]]   # name -> (number of weights, storage type, bytes)
    file_bytes: int

    def num_parameters(self) -> int:
        return sum(n for n, _, _ in self.tensors.values())


def read_gguf(path: str | Path) -> Checkpoint:
    """Read the configuration and the tensor table of a LLaMA GGUF file (needs ``gguf``).

    The file stores the hyperparameters as ``llama.*`` metadata and, for each tensor, its
    shape and number format; we count from those.  There is no ``output.weight`` tensor
    when the head is tied to the token embedding.
    """
    from ..pretrained.gguf import GGUFFile

    path = Path(path)
    gguf = GGUFFile(path)

    def field(name: str) -> int:
        return int(gguf.field(name))

    tensors = gguf.tensors()
    config = LlamaConfig(
        vocab_size=field("llama.vocab_size"), d_model=field("llama.embedding_length"),
        n_layers=field("llama.block_count"), n_heads=field("llama.attention.head_count"),
        d_ff=field("llama.feed_forward_length"), n_kv_heads=field("llama.attention.head_count_kv"),
        tied_head="output.weight" not in tensors)
    return Checkpoint(config, tensors, path.stat().st_size)
