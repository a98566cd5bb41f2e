"""Small result files that labs write and chapters read (``results/NAME.json``).

A lab saves the few numbers the book quotes; a chapter loads them and glues them into its
prose, so no number in the book is typed by hand.  Labs run again under nbval in CI: a
save that would not change the file leaves it alone, and nothing is written while
grading (``TINYLM_READONLY=1``), where a student's code must not touch the course.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .paths import results_dir

READONLY_ENV = "TINYLM_READONLY"


def readonly() -> bool:
    return os.environ.get(READONLY_ENV, "") not in ("", "0")


def path(name: str) -> Path:
    if not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"a result name is letters, digits, - and _; got {name!r}")
    return results_dir() / f"{name}.json"


def dumps(data) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n"


def save(name: str, data) -> bool:
    """Write ``results/NAME.json`` if its content changed; return whether it was written."""
    target = path(name)
    if readonly():
        return False
    text = dumps(data)
    if target.exists() and target.read_text(encoding="utf-8") == text:
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
