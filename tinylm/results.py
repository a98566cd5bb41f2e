"""Small result files that labs write and chapters read (``results/NAME.json``).

A lab saves the few numbers the book quotes; a chapter loads them and glues them into its
prose, so no number in the book is typed by hand.

Writing is asked for, never a side effect of practice:

* ``TINYLM_WRITE_RESULTS=1`` asks for it.  ``python -m tinylm_course execute`` (how an author
  re-executes a lab before committing it) and the library's commands (``python -m tinylm
  train``, ``study``, ``score``, ...) set it.  Without it, a lab run in Jupyter for practice
  leaves ``results/`` alone and, if its numbers differ from the file's, prints one line
  saying so and how to save them.
* ``TINYLM_READONLY=1`` forbids it, whatever else is set: the grader and the lab benchmark
  run labs so, because a student's code must not touch the course.  Nothing is printed then,
  so the outputs nbval compares stay the same.

A save that would not change the file leaves it alone.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .paths import results_dir

READONLY_ENV = "TINYLM_READONLY"
WRITE_ENV = "TINYLM_WRITE_RESULTS"


def _set(variable: str) -> bool:
    return os.environ.get(variable, "") not in ("", "0")


def readonly() -> bool:
    """Grading: nothing is written, and nothing is said about it."""
    return _set(READONLY_ENV)


def writing() -> bool:
    """Whether :func:`save` writes: asked for (``TINYLM_WRITE_RESULTS=1``) and not grading."""
    return _set(WRITE_ENV) and not readonly()


def path(name: str) -> Path:
    if not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"a result name is letters, digits, - and _; got {name!r}")
    return results_dir() / f"{name}.json"


def dumps(data) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n"


def save(name: str, data) -> bool:
    """Write ``results/NAME.json`` if its content changed and writing was asked for (see the
    module's docstring); return whether it was written."""
    target = path(name)
    if readonly():
        return False
    text = dumps(data)
    if target.exists() and target.read_text(encoding="utf-8") == text:
        return False
    if not writing():
        print(f"Not saved: these numbers differ from results/{name}.json, which a practice run leaves as it is "
              f"(to save them, run with {WRITE_ENV}=1, or: python -m tinylm_course execute LAB.ipynb).")
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    return True


def rounded(value, digits: int = 4):
    """Numbers rounded (recursively, through dicts and lists) so that a log holds no machine noise."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v, digits) for v in value]
    return value


def load(name: str):
    """Read ``results/NAME.json``; the error says which lab to run if it is missing."""
    target = path(name)
    if not target.exists():
        raise FileNotFoundError(f"{target} does not exist yet: run the lab that saves {name!r}")
    return json.loads(target.read_text(encoding="utf-8"))
