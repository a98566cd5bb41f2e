"""Run the longest tests first.

CI runs the tests on two workers (``pytest -n 2 --dist worksteal``), and a worker that is left
with one long test at the end keeps the other idle.  Verifying a lab takes minutes while almost
every other test takes seconds, so the labs are moved to the front, longest first (by their
measured seconds in ``results/lab_budget.json``); the short tests then fill the gaps and the two
workers finish together.  The order of everything else is unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

BUDGET = Path(__file__).resolve().parent.parent / "results" / "lab_budget.json"
LAB_TEST = "test_worked_lab_reproduces_scores_full_marks_and_no_check_is_free"


def lab_seconds() -> dict[str, float]:
    try:
        labs = json.loads(BUDGET.read_text(encoding="utf-8"))["labs"]
    except (OSError, ValueError, KeyError):
        return {}
    return {name: float(row.get("seconds") or 0) for name, row in labs.items()}


def pytest_collection_modifyitems(session, config, items):
    seconds = lab_seconds()
    labs = [item for item in items if item.name.startswith(LAB_TEST + "[")]
    if not labs:
        return
    # a lab not measured yet counts as long: better early than last
    labs.sort(key=lambda item: -seconds.get(item.name[len(LAB_TEST) + 1:-1], 180.0))
    chosen = set(map(id, labs))
    items[:] = labs + [item for item in items if id(item) not in chosen]
