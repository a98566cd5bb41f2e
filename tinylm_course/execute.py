"""Executing a worked lab before it is committed.

    python -m tinylm_course execute labs/lab01_ngrams.ipynb [...]

Each lab runs top to bottom in a fresh kernel, from the ``labs/`` folder (where labs expect to
run), and is saved in place with its outputs; then its exercise edition is written again, so
the two never drift apart.  A lab whose cell raises is *not* saved: the message names the
cell, and the committed file stays as it was.

This is the asked-for way to remake a lab's results: its kernel runs with
``TINYLM_WRITE_RESULTS=1``, so ``tinylm.results.save`` and ``ladder.record`` write
``results/`` (a lab run in Jupyter for practice does not; see :mod:`tinylm.results`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .exercises import write_exercise
from tinylm.paths import course_root
from tinylm.results import WRITE_ENV

CELL_TIMEOUT = 600
"""Seconds one cell may run (a lab's budget is 180 s in all; this only stops a hang)."""


def client(nb, lab: Path, cell_timeout: float = CELL_TIMEOUT):
    """An nbclient client that runs ``nb`` (read from ``lab``) in a fresh kernel of the
    notebook's own kind, from the lab's folder."""
    from nbclient import NotebookClient

    kernel = nb.metadata.get("kernelspec", {}).get("name") or "python3"
    encrypt_kernel_transport()
    return NotebookClient(nb, timeout=cell_timeout, kernel_name=kernel,
                          resources={"metadata": {"path": str(Path(lab).parent)}})


def encrypt_kernel_transport() -> bool:
    """Make kernel managers provision CurveZMQ keys (``transport_encryption = "auto"``) for the
    kernels that declare support, as ipykernel does; return whether it is on.

    Without keys ipykernel warns on stderr, at every start, that its TCP transport is
    unencrypted (the book build printed it once per executed chapter).  myst-nb starts its
    kernels through nbclient without a way to pass configuration, so this sets the default of
    the kernel manager's trait for this process.  Off where pyzmq lacks CurveZMQ (the trait's
    own validation says so).
    """
    from nbclient.client import KernelManager    # jupyter_client's, the class nbclient's managers derive from

    trait = KernelManager.class_traits().get("transport_encryption")
    if trait is None:                              # a jupyter_client older than 8.8 has no such setting
        return False
    try:
        KernelManager(transport_encryption="auto")
    except Exception:                              # traitlets.TraitError: no CurveZMQ in this pyzmq
        return False
    trait.default_value = "auto"
    return True


def execute(lab: Path, cell_timeout: float = CELL_TIMEOUT) -> float:
    """Run ``lab`` in a fresh kernel and save it with its outputs; return the seconds taken.

    Raises ``RuntimeError`` naming the failing cell; the file is then left untouched.
    """
    import nbformat
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(lab, as_version=4)
    runner = client(nb, lab, cell_timeout)
    start = time.perf_counter()
    try:
        runner.execute(env={**os.environ, WRITE_ENV: "1"})   # the kernel saves the lab's results
    except CellExecutionError as exc:
        raise RuntimeError(f"{lab}: a cell raised; the notebook was not saved.\n{exc}") from None
    seconds = time.perf_counter() - start
    nbformat.write(nb, lab)
    return seconds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("labs", nargs="+", metavar="LAB.ipynb", help="worked labs to execute and save")
    parser.add_argument("--cell-timeout", type=float, default=CELL_TIMEOUT, metavar="S",
                        help=f"seconds one cell may run (default {CELL_TIMEOUT})")
    parser.set_defaults(run=run)


def run(args) -> int:
    """Execute each lab, save it, and write its exercise edition; exit code 1 if any failed."""
    failed = 0
    for name in args.labs:
        lab = Path(name)
        if not lab.is_file() or lab.suffix != ".ipynb":
            print(f"error: {lab} is not a notebook file", file=sys.stderr)
            failed += 1
            continue
        try:
            seconds = execute(lab, args.cell_timeout)
            edition = write_exercise(lab, course_root() / "exercises")
        except (RuntimeError, OSError, ValueError, FileNotFoundError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"{lab}: executed in {seconds:.0f} s and saved; exercise edition {edition}")
    return 1 if failed else 0
