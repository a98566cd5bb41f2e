"""Scoring a whole split with a large model: a committed run, like a recipe's training.

A pre-trained LLM reads the ladder's test text (half a million characters, about 170,000 of
SmolLM2's tokens) at roughly 150 tokens per CPU-second, so scoring it takes longer than a lab may
run.  As with a long training run, a command does it once and commits the result with its log:

    python -m tinylm score smollm2-135m-instruct        # writes results/score-smollm2-135m-instruct.json

and a lab scores a slice of the same text live and checks it against the committed per-slice
numbers.  The result keeps the bits of every window group (:data:`PIECE_CHARS` characters of text
each), so that any prefix of pieces can be checked without scoring the whole text again.
"""

from __future__ import annotations

import datetime
import time

import numpy as np
import torch

from .. import data, results, system
from ..inference.scoring import score
from .metrics import bits_per_char, scored_chars

PREFIX = "score-"
"""A scoring run of model NAME is saved as ``results/score-NAME.json``."""

PIECE_CHARS = 10_000
"""The text is scored in pieces of this many characters, each read afresh with one token of the
text before it as context (not predicted), so that a lab can score a piece live and compare it with
the committed run.  The first tokens of a piece have little past, which costs a little: the whole
test text is about 54 pieces."""

SETTINGS = {"smollm2-135m-instruct": {"context": 1024, "stride": 768}}
"""How each model reads: windows of ``context`` tokens, moving on by ``stride``.  SmolLM2 was
trained on sequences of 2,048 tokens; 1,024-token windows with a stride of 768 give every
prediction at least 256 tokens of past (more than any other rung's whole window) and compute each
token 4/3 times, which keeps the whole test text within 30 CPU-minutes."""


def pieces(text: str, size: int = PIECE_CHARS) -> list[tuple[int, int]]:
    """(start, end) character spans that cover ``text`` in order."""
    return [(a, min(a + size, len(text))) for a in range(0, len(text), size)]


def score_piece(model, tokenizer, text: str, span: tuple[int, int], context: int, stride: int) -> dict:
    """Bits and characters of ``text[span]``: it is tokenised with the token before it (the last
    token of the text up to its start) as a context that is not predicted, so consecutive pieces
    together predict every token of the whole text but the first."""
    a, b = span
    prefix = tokenizer.encode(text[max(0, a - 64):a])[-1:] if a > 0 else []
    ids = np.asarray(prefix + tokenizer.encode(text[a:b]), dtype=np.int64)
    with torch.no_grad():
        lp = score(model, ids, context=context, stride=stride)
    chars = scored_chars(tokenizer, ids) if a == 0 else b - a
    return {"start": a, "end": b, "tokens": int(len(ids) - (1 if a > 0 else 0)),     # its own tokens, not the context
            "chars": int(chars),
            "bits": round(float(-lp.sum()), 3)}


def run(name: str, split: str = "test", corpus: str = "shakespeare", limit: int | None = None) -> dict:
    """Score ``split`` of ``corpus`` (its first ``limit`` characters if given) with the model
    ``name``, piece by piece, and save the result as ``results/score-NAME.json``."""
    from .. import load

    if name not in SETTINGS:
        raise ValueError(f"no scoring settings for {name!r}; known: {sorted(SETTINGS)}")
    settings = SETTINGS[name]
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model, tokenizer, _ = load(name)
    text = data.corpus(corpus).split(split)[:limit]
    started = time.process_time()
    done = []
    for span in pieces(text):
        done.append(score_piece(model, tokenizer, text, span, **settings))
        print(f"{name}: {span[1]:,} / {len(text):,} characters, "
              f"{sum(p['bits'] for p in done) / sum(p['chars'] for p in done):.4f} bpc so far", flush=True)
    bits, chars = sum(p["bits"] for p in done), sum(p["chars"] for p in done)
    log = {"model": name, "corpus": corpus, "split": split, "limit": limit, **settings,
           "piece_chars": PIECE_CHARS, "chars": chars, "tokens": sum(p["tokens"] for p in done),
           "bpc": round(bits / chars, 4), "pieces": done,
           "cpu_seconds": round(time.process_time() - started, 1), "peak_mb": round(system.peak_memory_mb()),
           "machine": system.machine(), "code": system.code_commit(),
           "date": datetime.date.today().isoformat()}
    results.save(f"{PREFIX}{name}", log)
    return log


def load(name: str) -> dict:
    """The committed scoring run of ``name``."""
    return results.load(f"{PREFIX}{name}")


def bpc(log: dict) -> float:
    """Bits per character of a scoring run, from its pieces."""
    return bits_per_char(np.array([-p["bits"] for p in log["pieces"]]), sum(p["chars"] for p in log["pieces"]))
