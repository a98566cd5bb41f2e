"""Using a trained model: scoring a text and generating one.

- :mod:`tinylm.inference.scoring`   ``score`` (log2-probabilities of a text) and ``token_logprobs`` (of responses, with gradients)
- :mod:`tinylm.inference.sampling`  ``generate`` with a ``Sampler`` (greedy, temperature, top-k, top-p, repetition penalty) and ``beam_search``
"""

from .sampling import GREEDY, Sampler, beam_search, generate
from .scoring import score, token_logprobs

__all__ = ["score", "token_logprobs", "generate", "beam_search", "Sampler", "GREEDY"]
