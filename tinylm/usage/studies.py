"""The studies that ``python -m tinylm study NAME`` runs, each a function of one module.

A study module defines ``run(out_dir: Path | None = None) -> dict``: it does the whole
measurement on one thread, seeded, writes ``results/study-NAME.json`` (or the name in
:data:`RESULT_NAMES`) through :func:`save`, and
returns the log it wrote, with its ``cpu_seconds``.  The log records the code's git commit
(:func:`tinylm.system.code_commit`) so a reader can tell which code made the numbers.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path

from .. import results
from ..paths import checkpoints_dir
from ..system import code_commit, machine

STUDIES = {
    "decoding": "decoding",
    "prompting": "prompting",
    "scratchpad": "scratchpad",
    "calibration": "calibration",
    "attacks": "attacks",
    "memorisation": "memorisation",
    "rag-book": "rag.corpus",
    "rag-generation": "rag.generation",
    "rag-retrieval": "rag.fusion",
    "agents": "agents.tasks",
    "rag-index": "rag.index",
    "lora": "deploy.lora",
    "quantisation": "deploy.quantise",
    "serving": "deploy.server",
    "inference-cost": "deploy.cost",
}
"""Each study's name and the module whose ``run`` makes it: a module of :mod:`tinylm.usage`, or,
with a dot, of :mod:`tinylm` (``rag.corpus`` is :mod:`tinylm.rag.corpus`)."""


RESULT_NAMES = {"quantisation": "quantisation", "serving": "serving"}
"""Studies whose log has a name of its own (the issue that asked for them named the file);
every other study writes ``results/study-NAME.json``."""


def result_name(study: str) -> str:
    return RESULT_NAMES.get(study, f"study-{study}")


def output_dir(study: str, out_dir: Path | None = None) -> Path:
    """Where a study that trains keeps its checkpoints (``checkpoints/study/NAME`` by default)."""
    return Path(out_dir) if out_dir else checkpoints_dir() / "study" / study


def started() -> dict:
    """What a study's log records at its start: the code's commit, the machine, the CPU clock."""
    return {"commit": code_commit(), "machine": machine(), "_cpu_start": time.process_time()}


def save(study: str, log: dict) -> dict:
    """Finish a study's log (its CPU-seconds) and write it to ``results/study-NAME.json`` (or the
name in :data:`RESULT_NAMES`)."""
    log = dict(log)
    start = log.pop("_cpu_start", None)
    if start is not None:
        log["cpu_seconds"] = round(time.process_time() - start, 1)
    results.save(result_name(study), log)
    return log


def run(study: str, out_dir: Path | None = None) -> dict:
    """Run one study by name; the error lists the studies when the name is unknown."""
    if study not in STUDIES:
        raise ValueError(f"no study {study!r}; the studies are {', '.join(STUDIES)}")
    where = STUDIES[study]
    module = importlib.import_module(f"tinylm.{where}" if "." in where else f"{__package__}.{where}")
    return module.run(out_dir)


def load(study: str) -> dict:
    """The committed log of a study; the error names the command that writes it."""
    try:
        return results.load(result_name(study))
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{exc}; it is written by: python -m tinylm study {study}") from None
