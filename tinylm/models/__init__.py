"""The models of the course, every one following one protocol (:mod:`tinylm.models.base`).

- :mod:`tinylm.models.ngram`        n-gram models (add-k, interpolation, Kneser-Ney)
- :mod:`tinylm.models.mlp`          Bengio's MLP language model
- :mod:`tinylm.models.rnn`          recurrent language models: RNN, LSTM, GRU
- :mod:`tinylm.models.transformer`  one Transformer, three families: encoder (BERT), decoder (GPT), encoder-decoder (T5)
- :mod:`tinylm.models.moe`          a sparse mixture of experts: top-k routing, load balancing, shared experts
- :mod:`tinylm.models.classifier`   a pre-trained encoder with a classification head
- :mod:`tinylm.models.word2vec`     word vectors: skip-gram and CBOW with negative sampling, PPMI + SVD

:data:`FAMILIES` names each language model's configuration and class, so that a checkpoint
(:mod:`tinylm.checkpoint`) can say which one it holds.
"""

from .base import INIT_STD, Config, LanguageModel, evaluating
from .mlp import MLPConfig, MLPLanguageModel
from .ngram import NGramConfig, NGramModel
from .rnn import RecurrentConfig, RecurrentLM
from .transformer import DecoderLM, EncoderDecoder, MaskedLM, TransformerConfig

FAMILIES: dict[str, tuple[type, type]] = {
    "ngram": (NGramConfig, NGramModel),
    "mlp": (MLPConfig, MLPLanguageModel),
    "recurrent": (RecurrentConfig, RecurrentLM),
    "decoder": (TransformerConfig, DecoderLM),
    "encoder": (TransformerConfig, MaskedLM),
    "encoder-decoder": (TransformerConfig, EncoderDecoder),
}
"""Model families by name: (configuration class, model class)."""


def build(family: str, config: dict):
    """An untrained model of ``family`` from its configuration as a dict."""
    try:
        config_class, model_class = FAMILIES[family]
    except KeyError:
        raise ValueError(f"unknown model family {family!r}; choose one of {sorted(FAMILIES)}") from None
    return model_class.from_config(config_class.from_dict(config))


def family_of(model) -> str:
    """The name under which ``model``'s class is in :data:`FAMILIES`."""
    for name, (_, model_class) in FAMILIES.items():
        if type(model) is model_class:
            return name
    raise TypeError(f"{type(model).__name__} is not one of the model families {sorted(FAMILIES)}")


__all__ = ["Config", "LanguageModel", "INIT_STD", "evaluating", "FAMILIES", "build", "family_of",
           "NGramConfig", "NGramModel", "MLPConfig", "MLPLanguageModel", "RecurrentConfig", "RecurrentLM",
           "TransformerConfig", "DecoderLM", "MaskedLM", "EncoderDecoder"]
