"""Lab budgets: how long each lab runs and how much memory it needs, on one CPU core.

    python -m tinylm_course bench [LAB.ipynb ...] [--write] [--cores N]

A lab is only useful if a reader can run it where they are, so every lab must fit a budget:

- :data:`BUDGET_SECONDS` = 180: three minutes, top to bottom, **on one CPU core**.  A laptop
  has more cores, but a free Binder or Colab session may give a reader about one, and a lab
  that only runs fast on eight cores is slow for the people the course is for.
- :data:`BUDGET_MB` = 1536: 1.5 GB of memory, what a session on mybinder.org may use before
  its kernel is killed.

``bench`` measures each lab as a reader would run it: top to bottom in a **fresh process**
(no warm caches in a long-lived kernel), pinned to one core with ``os.sched_setaffinity``
and with the thread pools of numpy and torch set to one thread (``OMP_NUM_THREADS=1`` and
friends), so the number does not depend on how many cores the measuring machine has.  The
lab runs in its own folder with ``TINYLM_READONLY=1``, so it writes no results, and it runs
from a copy in memory: the lab file is never written.

How it is measured.  For each lab the bench starts a small *runner*, ``python -m tinylm_course bench
--run-one LAB``, which executes the notebook with nbclient; nbclient starts an ipykernel as
the runner's child, and the lab's code runs in that kernel.

- **seconds**: wall-clock time from starting the kernel to shutting it down, read by the runner.
- **peak MB**: the largest resident set size (RSS) the kernel reached.  Once nbclient has shut
  the kernel down and reaped it, ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` in the runner is the
  peak RSS of the largest process among its finished descendants: the kernel (or a process the
  kernel started, if that one was bigger).  The kernel tracks this itself, so even a spike that
  lasts a millisecond is counted, which sampling memory every so often would miss.

The runner prints its measurement as one JSON line; the bench prints a markdown table, the
machine it ran on and the date.  With ``--write`` it puts that table into ``README.md``
between the markers :data:`START` and :data:`END` and saves the numbers to
``results/lab_budget.json``.  The exit code is 0 if every lab ran within budget, 1 if a lab
failed or is over budget, and 2 for a mistake on the command line.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import queue
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from tinylm import system
from tinylm.paths import course_root
from tinylm.results import dumps

from .processes import children_peak_mb, kill_tree

BUDGET_SECONDS = 180
"""Seconds a lab may take, top to bottom, on one CPU core (three minutes)."""
BUDGET_MB = 1536
"""Peak memory a lab's kernel may use in MB (1.5 GB, the memory of a Binder session)."""

CELL_TIMEOUT = 600
"""Seconds one cell may run before the bench gives up on the lab."""
LAB_TIMEOUT = 1800
"""Seconds a whole lab may run (kernel start and shutdown included) before it is killed."""

START, END = "<!-- lab-budget:start -->", "<!-- lab-budget:end -->"
"""The markers around the budget table in README.md."""
RESULT_FILE = "lab_budget.json"
"""Where ``--write`` saves the numbers, in ``results/``."""

ENVIRONMENT = {
    "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
    "MPLBACKEND": "Agg", "TINYLM_READONLY": "1", "PYTHONDONTWRITEBYTECODE": "1",
}
"""Set for the runner and the kernel: one thread, no windows, no results written."""

MARK = "tinylm-bench-result: "
"""The runner prints its result on one line starting with this."""


@dataclass
class Measurement:
    """One lab's run: its name, seconds, peak memory and, if it failed, why."""

    lab: str
    seconds: float | None = None
    peak_mb: float | None = None
    error: str | None = None

    @property
    def over(self) -> list[str]:
        """What the lab overran: "time", "memory", or both."""
        return ([] if self.seconds is None or self.seconds <= BUDGET_SECONDS else ["time"]) + \
               ([] if self.peak_mb is None or self.peak_mb <= BUDGET_MB else ["memory"])

    @property
    def within_budget(self) -> bool:
        return self.error is None and not self.over

    def verdict(self) -> str:
        """The "within budget" column: yes, or no and why."""
        if self.error:
            return "no: failed"
        return "yes" if not self.over else "no: " + " and ".join(self.over)


# Running one lab (in the runner process) -----------------------------------------------

def run_one(lab: Path, core: int | None = None) -> dict:
    """Execute ``lab`` in a fresh kernel and return ``{"seconds", "peak_mb", "error"}``.

    This is the runner: it runs in its own process (see :func:`measure`), so that
    ``RUSAGE_CHILDREN`` holds nothing but the kernel.  It pins itself to ``core``; the
    kernel, its child, inherits the pinning.
    """
    import nbformat

    from .execute import client as kernel_client

    if core is not None:
        os.sched_setaffinity(0, {core})
    try:
        nb = nbformat.read(lab, as_version=4)  # a copy in memory; the file is never written
    except Exception as exc:
        return {"seconds": None, "peak_mb": None, "error": f"cannot read the notebook: {_first_line(str(exc))}"}
    client = kernel_client(nb, lab, CELL_TIMEOUT)
    current = {"index": None}
    client.on_cell_start = lambda cell, cell_index, **_: current.update(index=cell_index)
    error = None
    start = time.perf_counter()
    try:
        client.execute()  # starts the kernel, runs every cell, shuts the kernel down
    except Exception as exc:  # a report, never a traceback
        error = describe_failure(nb, current["index"], exc)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_mb": children_peak_mb(), "error": error}


def describe_failure(nb, index: int | None, exc: Exception) -> str:
    """Which cell failed and how, in one line: ``code cell 3 (`x = f()`): ValueError: ...``."""
    ename, evalue = getattr(exc, "ename", None), getattr(exc, "evalue", None)
    what = f"{ename}: {evalue}" if ename else f"{type(exc).__name__}: {_first_line(str(exc))}"
    if index is None:
        return f"before the first cell: {what}"
    code_cells = [i for i, cell in enumerate(nb.cells[: index + 1]) if cell.cell_type == "code"]
    first = _first_line(nb.cells[index].source)
    return f"code cell {len(code_cells)} (`{first[:60]}`): {what}"


def _first_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else ""


# Measuring labs (in the bench process) -------------------------------------------------

def measure(lab: Path, core: int | None = None, timeout: float = LAB_TIMEOUT) -> Measurement:
    """Run ``lab`` in a fresh runner process pinned to ``core``; never raises."""
    lab = Path(lab).resolve()
    command = [sys.executable, "-m", "tinylm_course", "bench", "--run-one", str(lab)]
    if core is not None:
        command += ["--core", str(core)]
    process = subprocess.Popen(command, cwd=lab.parent, env=environment(), stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               errors="replace", start_new_session=True)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(process)
        return Measurement(lab.stem, error=f"killed after {timeout:g} s in all")
    for line in reversed(out.splitlines()):
        if line.startswith(MARK):
            return Measurement(lab.stem, **json.loads(line[len(MARK):]))
    tail = " / ".join(err.strip().splitlines()[-3:])
    return Measurement(lab.stem, error=f"the runner failed (exit code {process.returncode}): {tail}")


def environment() -> dict[str, str]:
    """The bench's environment plus :data:`ENVIRONMENT` and the course root."""
    env = dict(os.environ, **ENVIRONMENT)
    try:
        env["TINYLM_ROOT"] = str(course_root())
    except FileNotFoundError:
        pass
    return env


def measure_all(labs: list[Path], cores: int = 1, report=print) -> list[Measurement]:
    """Measure each lab, ``cores`` at a time, each pinned to a core of its own."""
    free = queue.Queue()
    for core in sorted(os.sched_getaffinity(0))[:cores]:
        free.put(core)

    def one(lab: Path) -> Measurement:
        core = free.get()
        try:
            result = measure(lab, core)
        finally:
            free.put(core)
        report(progress_line(result))
        return result

    with ThreadPoolExecutor(max_workers=cores) as pool:
        return list(pool.map(one, labs))


def progress_line(m: Measurement) -> str:
    if m.error:
        return f"{m.lab}: FAILED in {_seconds(m.seconds)} s: {m.error}"
    return f"{m.lab}: {_seconds(m.seconds)} s, {_mb(m.peak_mb)} MB, {m.verdict()}"


# The table -----------------------------------------------------------------------------

def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def _mb(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}"


def format_table(measurements: list[Measurement]) -> str:
    """The markdown table: | lab | seconds | peak MB | within budget |."""
    lines = ["| lab | seconds | peak MB | within budget |", "|---|---:|---:|---|"]
    for m in measurements:
        lines.append(f"| {m.lab} | {_seconds(m.seconds)} | {_mb(m.peak_mb)} | {m.verdict()} |")
    return "\n".join(lines)


def machine() -> dict[str, str]:
    """The CPU, the versions of Python and torch, and today's date."""
    return {**system.machine(), "date": datetime.date.today().isoformat()}


def machine_line(info: dict[str, str]) -> str:
    """One sentence under the table: where and when it was measured."""
    versions = f"Python {info['python']}" + (f", torch {info['torch']}" if "torch" in info else "")
    return (f"Measured on one core of {info['cpu']} ({versions}) on {info['date']}; "
            f"budget: {BUDGET_SECONDS} s and {BUDGET_MB} MB per lab.")


def report_text(measurements: list[Measurement], info: dict[str, str]) -> str:
    """The table, the failures if any, and the machine line."""
    parts = [format_table(measurements)]
    failures = [f"- {m.lab} failed: {m.error}" for m in measurements if m.error]
    if failures:
        parts.append("\n".join(failures))
    parts.append(machine_line(info))
    return "\n\n".join(parts)


# Writing the README and the results file -----------------------------------------------

def replace_region(text: str, content: str, start: str = START, end: str = END) -> str:
    """``text`` with what lies between the markers ``start`` and ``end`` replaced by ``content``.

    Raises ``ValueError`` saying what is wrong if a marker is missing, repeated or out of order.
    """
    for marker in (start, end):
        count = text.count(marker)
        if count != 1:
            found = "is missing" if count == 0 else f"appears {count} times"
            raise ValueError(f"the marker {marker} {found}; the README needs exactly one "
                             f"{start} and one {end} around the budget table")
    before, rest = text.split(start)
    if end not in rest:
        raise ValueError(f"the marker {end} comes before {start}")
    _, after = rest.split(end)
    return f"{before}{start}\n{content.strip()}\n{end}{after}"


def write_readme(readme: Path, content: str) -> None:
    text = readme.read_text(encoding="utf-8")
    readme.write_text(replace_region(text, content), encoding="utf-8")


def to_json(measurements: list[Measurement], info: dict[str, str]) -> dict:
    """The numbers for ``results/lab_budget.json``, rounded like the table."""
    labs = {}
    for m in measurements:
        row = asdict(m)
        del row["lab"]
        row["seconds"] = None if m.seconds is None else round(m.seconds, 1)
        row["peak_mb"] = None if m.peak_mb is None else round(m.peak_mb)
        row["within_budget"] = m.within_budget
        labs[m.lab] = row
    return {"budget": {"seconds": BUDGET_SECONDS, "peak_mb": BUDGET_MB}, "machine": info, "labs": labs}


def write_results(path: Path, data: dict) -> None:
    """Write the JSON directly: ``tinylm.results.save`` does nothing when TINYLM_READONLY is set."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps(data), encoding="utf-8")


# The command line ----------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("labs", nargs="*", metavar="LAB.ipynb", help="labs to measure (default: every labs/*.ipynb)")
    parser.add_argument("--write", action="store_true",
                        help=f"put the table into README.md and save results/{RESULT_FILE}")
    parser.add_argument("--cores", type=int, default=1, metavar="N",
                        help="measure N labs at once, each pinned to a core of its own (default 1)")
    parser.add_argument("--run-one", metavar="LAB", help=argparse.SUPPRESS)  # the runner, see run_one
    parser.add_argument("--core", type=int, help=argparse.SUPPRESS)
    parser.set_defaults(run=run)


class UsageError(Exception):
    """A mistake on the command line; the message says what to do."""


def run(args) -> int:
    """Measure the labs and print (and with --write, record) the table; see the module docstring."""
    if args.run_one:
        result = run_one(Path(args.run_one), args.core)
        print(MARK + json.dumps(result), flush=True)
        return 0
    try:
        labs, readme = _check_arguments(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"Measuring {len(labs)} lab(s) on {args.cores} core(s), one lab per core...", file=sys.stderr)
    measurements = measure_all(labs, args.cores, report=lambda line: print(line, file=sys.stderr))
    info = machine()
    text = report_text(measurements, info)
    print(text)
    if args.write:
        write_readme(readme, text)
        write_results(readme.parent / "results" / RESULT_FILE, to_json(measurements, info))
        print(f"wrote {readme} and results/{RESULT_FILE}", file=sys.stderr)
    return 0 if all(m.within_budget for m in measurements) else 1


def _check_arguments(args) -> tuple[list[Path], Path | None]:
    """The labs to measure and, with --write, the README; or a UsageError."""
    cores = len(os.sched_getaffinity(0))
    if not 1 <= args.cores <= cores:
        raise UsageError(f"--cores must be between 1 and {cores}, the cores this process may use")
    readme = None
    if args.write:
        if args.labs:
            raise UsageError("--write records the table of every lab: give no LAB arguments with --write")
        readme = _root() / "README.md"
        try:
            replace_region(readme.read_text(encoding="utf-8"), "")
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot write the table into {readme}: {exc}") from None
    if not args.labs:
        labs = sorted((_root() / "labs").glob("*.ipynb"))
        if not labs:
            raise UsageError(f"there are no labs in {_root() / 'labs'}")
        return labs, readme
    labs = [Path(lab) for lab in args.labs]
    for lab in labs:
        if not lab.is_file():
            raise UsageError(f"no such lab: {lab}")
        if lab.suffix != ".ipynb":
            raise UsageError(f"{lab} is not a notebook (a lab is an .ipynb file)")
    return labs, readme


def _root() -> Path:
    try:
        return course_root()
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None
