"""Scoring a text under a model: the log-probability of each token given the ones before it.

Two functions, one convention: position ``t`` is scored given ``ids[:t]``, for t = 1 .. n-1 (the
first token has no context and is not scored, whatever the model).

- :func:`score` gives log2-probabilities as a numpy array, for any language model of the course
  and a text of any length: what bits per character, perplexity and the ladder are made of.
- :func:`token_logprobs` gives natural-log probabilities of a batch of sequences as a torch
  tensor *with gradients*, masked to the positions one cares about (a response after its prompt):
  what supervised fine-tuning, reward models, DPO and PPO are made of.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..models.base import evaluating

SCORE_CONTEXT = 256
"""Tokens per window (or per chunk, for a stateful model) when the model sets no limit of its own."""

STREAMS = 16
"""Parallel pieces a stateful model reads a long text in (each piece's first token goes without
context, so a few predictions of a text of thousands of tokens lose their past)."""

WINDOWS_PER_BATCH = 32
"""Windows scored at once by a stateless model (fewer when their logits would pass
:data:`LOGITS_PER_BATCH`)."""

LOGITS_PER_BATCH = 2 ** 25
"""At most this many logits (positions x vocabulary) in one batch of windows: 128 MB of float32."""

LN2 = float(np.log(2.0))


def score(model, ids, context: int | None = None, streams: int = STREAMS, stride: int | None = None) -> np.ndarray:
    """log2 P(ids[t] | ids[:t]) for t = 1 .. len(ids) - 1, under any language model of the course.

    - A model with a fast exact scorer of its own (``model.log2probs``: the n-gram looks its counts
      up, the MLP needs only n - 1 tokens of history) uses it.
    - A stateful model (an RNN) reads the text as ``streams`` parallel pieces, ``context`` tokens
      at a time, carrying its state through each piece.
    - Any other model reads overlapping windows of ``context`` tokens (default: the model's
      ``max_len``, or :data:`SCORE_CONTEXT`) and keeps the second half of each window, so every
      prediction after the first half window sees at least ``context / 2`` tokens of past.
    - ``stride`` (windows only) is how far each window moves on: by default ``context // 2``.  A
      larger stride costs less (each token is computed ``context / stride`` times) and gives the
      first predictions of each window ``context - stride`` tokens of past instead of half a
      window: the LLM rung reads 1,024-token windows with a stride of 768.

    A masked LM sees both sides of every position and an encoder-decoder needs a source: neither
    gives the probability of a text read left to right, and both are refused with a ``TypeError``.
    """
    if not model.causal:
        raise TypeError(f"{type(model).__name__} does not give P(ids[t] | ids[:t]): "
                        "score works with models that read left to right")
    if model.encoder_decoder:
        raise TypeError("an encoder-decoder scores an answer given its source: "
                        "use token_logprobs(model, ids, state=model.encode(src))")
    ids = torch.as_tensor(np.asarray(ids), dtype=torch.long).reshape(-1)
    if len(ids) < 2:
        return np.empty(0, dtype=np.float64)
    with evaluating(model):
        if hasattr(model, "log2probs"):
            return np.asarray(model.log2probs(ids.numpy()), dtype=np.float64)
        context = context or model.max_len or SCORE_CONTEXT
        if model.stateful:
            return _streams(model, ids, context, streams)
        return _windows(model, ids, context, stride)


def _token_log2probs(logits: torch.Tensor, targets: torch.Tensor, rows: int = 64) -> torch.Tensor:
    """log2 of the targets' probabilities, in float64, ``rows`` positions at a time (a large
    vocabulary's log-softmax over a whole window would take gigabytes)."""
    flat, flat_targets = logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
    out = torch.empty(len(flat), dtype=torch.float64)
    for a in range(0, len(flat), rows):
        logp = F.log_softmax(flat[a:a + rows].double(), dim=-1)
        out[a:a + rows] = logp.gather(-1, flat_targets[a:a + rows, None])[:, 0] / LN2
    return out.reshape(targets.shape)


def _streams(model, ids: torch.Tensor, chunk: int, streams: int) -> np.ndarray:
    n = len(ids) - 1
    streams = max(1, min(streams, n // max(chunk, 1) or 1))
    bounds = np.linspace(0, n, streams + 1).astype(int)
    length = int(np.max(np.diff(bounds)))
    x = torch.zeros(streams, length, dtype=torch.long)
    y = torch.zeros(streams, length, dtype=torch.long)
    for s, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        x[s, : b - a], y[s, : b - a] = ids[a:b], ids[a + 1:b + 1]
    out = torch.empty(streams, length, dtype=torch.float64)
    state = None
    for a in range(0, length, chunk):
        logits, state = model(x[:, a:a + chunk], state)
        out[:, a:a + chunk] = _token_log2probs(logits, y[:, a:a + chunk])
    return np.concatenate([out[s, : b - a].numpy() for s, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))])


def window_plan(n: int, context: int, stride: int | None = None) -> list[tuple[int, int, int]]:
    """How :func:`score` covers ``n`` targets with windows of ``context`` tokens: a list of
    (window start, first target kept, targets in the window).  Each window starts ``stride``
    tokens after the one before (by default half a window, so windows overlap by half) and keeps
    only the targets that no earlier window scored."""
    stride = stride or max(1, context // 2)
    if not 0 < stride <= context:
        raise ValueError(f"stride must be between 1 and the context ({context}), not {stride}")
    plans, done, start = [], 0, 0
    while done < n:
        length = min(context, n - start)
        plans.append((start, done - start, length))
        done = start + length
        start = max(0, done - context + stride)
    return plans


def _windows(model, ids: torch.Tensor, context: int, stride: int | None = None) -> np.ndarray:
    n = len(ids) - 1                            # targets ids[1..n] are out[0..n-1]
    plans = window_plan(n, context, stride)
    out = np.empty(n, dtype=np.float64)
    full = [plan for plan in plans if plan[2] == context]
    vocab = getattr(getattr(model, "config", None), "vocab_size", 0) or 1
    per_batch = max(1, min(WINDOWS_PER_BATCH, LOGITS_PER_BATCH // (context * vocab)))
    for i in range(0, len(full), per_batch):
        _score_windows(model, ids, full[i:i + per_batch], out)
    for plan in plans:
        if plan[2] != context:                  # a text shorter than one window, or its end
            _score_windows(model, ids, [plan], out)
    return out


def _score_windows(model, ids: torch.Tensor, group, out: np.ndarray) -> None:
    """Score windows of equal length in one batch and keep each one's new targets."""
    x = torch.stack([ids[s:s + length] for s, _, length in group])
    y = torch.stack([ids[s + 1:s + length + 1] for s, _, length in group])
    logits, _ = model(x)
    lp = _token_log2probs(logits, y).numpy()
    for row, (s, keep, length) in enumerate(group):
        out[s + keep:s + length] = lp[row, keep:length]


def token_logprobs(model, ids, mask=None, state=None) -> torch.Tensor:
    """ln P(ids[b, t] | ids[b, :t]) for every position of a batch, with gradients.

    ``ids`` is a (batch, time) tensor (or one sequence); the result has the same shape: column 0
    is zero (no context), and so is every position where ``mask`` (same shape, True or 1 where a
    log-probability is wanted) is false, for example the prompt and the padding before and after
    a response.  Sum over time for the log-probability of each response.  For an encoder-decoder
    pass ``state=model.encode(src, src_padding_mask)``; ``ids`` are then the decoder's tokens,
    starting with ``[BOS]``.  The model's mode (dropout) is the caller's to set.
    """
    ids = torch.as_tensor(ids, dtype=torch.long)
    if ids.dim() == 1:
        ids = ids[None]
    if ids.shape[1] < 2:
        raise ValueError("token_logprobs needs sequences of at least two tokens")
    logits, _ = model(ids[:, :-1], state)
    logp = F.log_softmax(logits.float(), dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
    out = torch.cat([torch.zeros_like(logp[:, :1]), logp], dim=1)
    if mask is not None:
        mask = torch.as_tensor(mask)
        if mask.shape != ids.shape:
            mask = mask.reshape(ids.shape)
        out = out * mask.to(out.dtype)
    return out
