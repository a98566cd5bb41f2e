"""Generating text: one token at a time from any model, or the best few sequences by beam search.

A language model gives a distribution over the next token; **decoding** (解码) turns it into
text.  :func:`generate` asks the model for the next token's logits, lets a :class:`Sampler`
choose a token, appends it and repeats, handing the model's state (an RNN's hidden state, a
Transformer's KV cache, an n-gram's last tokens) from one step to the next so that each step
reads only the new token.  The same call serves the n-gram, the MLP, the RNN, the GPT and the
encoder-decoder (which first reads its source, then writes from ``[BOS]``).

The sampler's knobs, applied in this order to the logits of the next token:

- ``repetition_penalty`` p (Keskar et al., 2019): every token already in the text has its logit
  divided by p if positive, multiplied by p if negative, so repeats become less likely;
- ``temperature`` T: logits divided by T; T < 1 sharpens the distribution, T > 1 flattens it, and
  **T = 0 is greedy decoding** (贪心解码): always the most likely token;
- ``top_k``: only the k most likely tokens stay candidates;
- ``top_p`` (nucleus sampling, Holtzman et al., 2020): only the smallest set of most likely
  tokens whose probabilities add up to at least p;
- then a token is drawn from what is left, renormalised, with a numpy generator seeded with
  ``seed``: the same sampler on the same model and prompt gives the same text.

:func:`beam_search` (束搜索) instead keeps the ``beam_width`` most probable sequences at every
step and returns the most probable finished one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..models.base import evaluating


@dataclass(frozen=True)
class Sampler:
    """How to choose the next token from its logits (see the module docstring)."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature must be 0 (greedy) or positive, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be positive, got {self.repetition_penalty}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def penalised(self, logits: torch.Tensor, previous: Sequence[int]) -> torch.Tensor:
        """The logits (float64) with the repetition penalty applied to the ``previous`` tokens."""
        logits = logits.double().clone()
        if self.repetition_penalty != 1.0 and len(previous):
            seen = torch.as_tensor(sorted(set(int(t) for t in previous)), dtype=torch.long)
            values = logits[seen]
            logits[seen] = torch.where(values > 0, values / self.repetition_penalty, values * self.repetition_penalty)
        return logits

    def probabilities(self, logits: torch.Tensor, previous: Sequence[int] = ()) -> np.ndarray:
        """The distribution the next token is drawn from (not defined for greedy decoding)."""
        if self.greedy:
            raise ValueError("greedy decoding (temperature 0) picks the most likely token; it draws nothing")
        probs = F.softmax(self.penalised(logits, previous) / self.temperature, dim=-1)
        if self.top_k is not None and self.top_k < len(probs):
            cut = torch.topk(probs, self.top_k).values[-1]
            probs = torch.where(probs >= cut, probs, torch.zeros_like(probs))
        if self.top_p is not None and self.top_p < 1:
            ordered, order = torch.sort(probs, descending=True, stable=True)
            before = torch.cumsum(ordered, 0) - ordered           # probability of the tokens ranked above
            keep = torch.zeros_like(probs, dtype=torch.bool)
            keep[order] = before < self.top_p * ordered.sum()      # the first token is always kept
            probs = torch.where(keep, probs, torch.zeros_like(probs))
        probs = probs.numpy()
        return probs / probs.sum()

    def pick(self, logits: torch.Tensor, previous: Sequence[int], rng: np.random.Generator) -> int:
        """The next token, given its logits (V,) and the tokens so far."""
        if self.greedy:
            return int(self.penalised(logits, previous).argmax())
        probs = self.probabilities(logits, previous)
        return int(rng.choice(len(probs), p=probs))

    def rng(self) -> np.random.Generator:
        return np.random.default_rng(self.seed)


GREEDY = Sampler(temperature=0.0)
"""Greedy decoding: always the most likely token."""


def _as_batch(prompt_ids) -> tuple[list[list[int]], bool]:
    """Prompts as a list of lists of ints, and whether one prompt (not a batch) was given."""
    if isinstance(prompt_ids, torch.Tensor):
        prompt_ids = prompt_ids.tolist()
    prompt_ids = list(prompt_ids) if not isinstance(prompt_ids, np.ndarray) else prompt_ids.tolist()
    single = not prompt_ids or not isinstance(prompt_ids[0], (list, tuple, np.ndarray, torch.Tensor))
    rows = [prompt_ids] if single else [list(row) for row in prompt_ids]
    return [[int(t) for t in row] for row in rows], single


def _stop_set(model, stop) -> set[int]:
    if stop is None:
        eos = getattr(getattr(model, "config", None), "eos_id", None)
        return set() if eos is None else {eos}
    return {int(stop)} if isinstance(stop, (int, np.integer)) else {int(t) for t in stop}


def _start(model, rows: list[list[int]], use_cache: bool):
    """The first input and state: an encoder-decoder encodes the sources and starts from
    ``[BOS]``; any other model starts from its prompts (which must be equally long)."""
    if model.encoder_decoder:
        from ..training.batches import pad

        config = model.config
        if config.bos_id is None:
            raise ValueError("the encoder-decoder's config has no bos_id: the token its decoder starts from")
        src, src_mask = pad(rows, config.pad_id or 0)
        state = model.encode(src, src_mask, use_cache=use_cache)
        return torch.full((len(rows), 1), config.bos_id, dtype=torch.long), state
    if any(len(row) == 0 for row in rows):
        raise ValueError("generation needs a prompt of at least one token")
    if len({len(row) for row in rows}) > 1:
        raise ValueError("prompts in one batch must be equally long; generate them one at a time")
    return torch.tensor(rows, dtype=torch.long), model.new_state() if use_cache else None


def generate(model, prompt_ids, max_new_tokens: int, sampler: Sampler | None = None, stop=None,
             use_cache: bool = True):
    """``max_new_tokens`` new tokens after ``prompt_ids``, chosen by ``sampler`` (default: draw
    at temperature 1 with seed 0; ``Sampler(temperature=0)`` is greedy).

    ``prompt_ids`` is one prompt (a list of ids; the result is a list) or a batch of them (a list
    of lists, equally long except for an encoder-decoder, whose prompts are its sources; the
    result is a list of lists).  A row ends early at a token in ``stop`` (one id or several; by
    default the model's ``config.eos_id`` if it has one: an encoder-decoder's end of answer, a chat
    model's end of turn), which is not included.  With ``use_cache`` each step
    feeds only the newest token and hands on the model's state; without it, each step reads the
    whole text again (the last ``max_len`` tokens): slower, the same tokens.
    """
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be at least 0, got {max_new_tokens}")
    sampler = sampler or Sampler()
    rng = sampler.rng()
    rows, single = _as_batch(prompt_ids)
    stop = _stop_set(model, stop)
    longest = max_new_tokens + (1 if model.encoder_decoder else max(len(row) for row in rows))
    if use_cache and model.max_len is not None and longest > model.max_len:
        raise ValueError(f"the text would grow to {longest} tokens, more than the model's max_len {model.max_len}: "
                         "generate fewer tokens, or use use_cache=False (each step then reads the last max_len tokens)")
    with evaluating(model):
        x, state = _start(model, rows, use_cache)
        if model.encoder_decoder and not use_cache:
            encoded = state
        texts = [list(row) for row in rows] if not model.encoder_decoder else [[] for _ in rows]
        out = [[] for _ in rows]
        done = [False] * len(rows)
        for _ in range(max_new_tokens):
            if not use_cache:
                state = encoded if model.encoder_decoder else None
                if model.max_len is not None:
                    x = x[:, -model.max_len:]
            logits, state = model(x, state)
            chosen = []
            for b in range(len(rows)):
                token = sampler.pick(logits[b, -1], texts[b], rng) if not done[b] else 0
                if not done[b]:
                    if token in stop:
                        done[b] = True
                    else:
                        out[b].append(token)
                        texts[b].append(token)
                chosen.append(token)
            if all(done):
                break
            new = torch.tensor(chosen, dtype=torch.long)[:, None]
            x = new if use_cache else torch.cat([x, new], dim=1)
    return out[0] if single else out


def _select(state, rows: torch.Tensor):
    if not hasattr(state, "select"):
        raise TypeError("beam search keeps several continuations of one text, which needs a state that can "
                        "be copied row by row: a Transformer decoder's or encoder-decoder's")
    return state.select(rows)


def beam_search(model, prompt_ids: Sequence[int], max_new_tokens: int, beam_width: int = 4, stop=None,
                length_penalty: float = 1.0) -> list[int]:
    """The most probable continuation of ``prompt_ids`` (or, for an encoder-decoder, answer to the
    source ``prompt_ids``) that beam search finds, without the stop token.

    At every step each of the ``beam_width`` sequences kept so far is extended by every token,
    and the ``beam_width`` extensions with the highest total log-probability are kept.  A sequence
    that reaches a token in ``stop`` is finished; finished sequences are compared by their
    log-probability divided by (length ** ``length_penalty``), so that longer answers are not
    punished for having more terms (0: no normalisation).  With ``beam_width=1`` this is greedy
    decoding.
    """
    if beam_width < 1:
        raise ValueError(f"beam_width must be at least 1, got {beam_width}")
    rows, single = _as_batch(prompt_ids)
    if not single:
        raise ValueError("beam search takes one prompt at a time")
    stop = _stop_set(model, stop)
    finished: list[tuple[float, list[int]]] = []

    def normalised(logp: float, length: int) -> float:
        return logp / (max(length, 1) ** length_penalty)

    with evaluating(model):
        x, state = _start(model, rows, use_cache=True)
        beams: list[tuple[float, list[int]]] = [(0.0, [])]
        for step in range(max_new_tokens):
            logits, state = model(x, state)
            logp = F.log_softmax(logits[:, -1].double(), dim=-1)                    # (beams, V)
            total = torch.tensor([score for score, _ in beams], dtype=torch.float64)[:, None] + logp
            order = torch.argsort(total.reshape(-1), descending=True, stable=True)
            keep_rows, keep_tokens, kept = [], [], []
            for flat in order.tolist():
                row, token = divmod(flat, logp.shape[1])
                score, tokens = float(total[row, token]), beams[row][1]
                if token in stop:
                    finished.append((normalised(score, len(tokens) + 1), tokens))
                else:
                    kept.append((score, tokens + [token]))
                    keep_rows.append(row)
                    keep_tokens.append(token)
                if len(kept) == beam_width or len(finished) >= beam_width:
                    break
            if len(finished) >= beam_width or not kept:
                break
            beams = kept
            state = _select(state, torch.tensor(keep_rows))
            x = torch.tensor(keep_tokens)[:, None]
        else:                              # max_new_tokens reached: the open beams compete too
            finished += [(normalised(s, len(t)), t) for s, t in beams if t]
    return max(finished, key=lambda c: c[0])[1] if finished else []
