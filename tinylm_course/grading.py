"""Grading a student's lab with nbval, or a whole class's.

    python -m tinylm_course grade SUBMISSION.ipynb [--lab LAB] [--json OUT.json]
    python -m tinylm_course grade SUBMISSIONS... [--lab N] [--jobs J] [--csv FILE.csv] [--feedback DIR]

A submission is graded against its **worked lab** (``labs/<lab>.ipynb``, named by the
submission's ``metadata.tinylm.lab``, or by ``--lab`` as ``N``, ``labNN``, ``labNN_name`` or a
path).  Several notebooks, or folders of them, are graded ``--jobs`` at a time, each in a process
of its own with its own temporary folder, kernel and IPython profile; ``--csv`` writes one row per
submission and exercise (``file,lab,exercise,points,max_points,status``, the status one of
:data:`VERDICTS`) and ``--feedback`` one Markdown file per submission, into a folder that holds
no submission.  An answer cell that still holds the exercise edition's placeholder is *not
attempted*; each exercise is graded on its own (the kernel goes on with the worked answers), and
the notes say when an exercise builds on an earlier one the submission did not get right.  The grader builds a *grading notebook*, the worked lab
with a few cells of its own, and nbval runs it in a separate, limited process.

**The submission never runs where the checks run.**  The kernel runs the worked lab itself.
Just before each exercise it forks: the copy runs the student's answer and the lab's cells up to
the exercise's last check (see :mod:`tinylm_course.isolation`), while the kernel goes on with the
worked answer.  Each check cell then runs in the kernel on the values the answer produced, sent
over as plain data (numbers, strings, lists, dicts, arrays, tensors); a function of the
submission that a check calls runs in the copy, its arguments and result crossing as data.  So
whatever an answer does to numpy, the builtins, the interpreter or IPython, it does it to its own
process, and no check sees it.  Which values a check reads is found by reading the lab's code
(:mod:`tinylm_course.dataflow`).

- answer cells' and the lab's other cells' output is not compared;
- check cells come from the worked lab, and their output must match the lab's;
- an exercise earns its points when its answer (and the lab's cells up to its last check) ran
  without error within its budget, and all its checks passed.

The student's checks and extra cells are ignored.  An answer's budget is
:data:`ANSWER_TIME_FACTOR` times what the worked lab recorded for the same cells, plus
:data:`ANSWER_TIME_MARGIN` seconds, so a submission that loops forever is graded in minutes.

For the lab's authors, ``--verify`` grades a worked lab against itself more strictly, in one
run of the lab:

- every cell's output is compared, as plain nbval does (the lab's own ``nbval-ignore-output``
  tags still hold), and each cell outside the exercises that differs becomes a note;
- the checks read the worked answer's values through the same plain-data crossing a submission's
  take, so a check that reads something that cannot cross is noted;
- each exercise is also run, in copies, *without* its answer (the exercise edition's stub) and
  with each of its **wrong answers** (the answer cell's ``tinylm.wrong`` metadata); a check that
  passes without the answer, a wrong answer that passes every check, a wrong answer that does
  not run, and an exercise without a wrong answer are noted.

So one execution proves that the worked lab reproduces its outputs, that it earns full marks
under the grader's limits, and that its checks reject a missing answer and plausible wrong ones.

Whatever happens, :func:`grade` returns a :class:`Report` and never raises.

The run is limited: each cell by ``--cell-timeout``, the whole run by ``--timeout`` (then
pytest and the kernel are killed), each process's address space by ``--memory-mb``, and
each cell's printed output by :data:`OUTPUT_LIMIT`; with ``TINYLM_READONLY=1`` labs write
no results.  The grader's processes end with it, however it is stopped.  It is not a sandbox:
the student's code runs as the grading user, with that user's files and network, so run
untrusted submissions inside a container or a throwaway account.
"""

from __future__ import annotations

import argparse
import ast
import copy
import inspect
import json
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat

from tinylm.paths import course_root

from .dataflow import exercise_flow, parse
from .exercises import (ANSWER_TAG, CHECK_TAG, Exercise, ExerciseError, list_exercises, make_exercise,
                        strip_solution, tagged_id, wrong_answer)
from .nbval_plugin import KERNEL_DIED, SANITIZE_FILE, TRUNCATED
from .isolation import die_with_parent
from .processes import kill_tree

CELL_TIMEOUT = 300.0
"""Seconds one cell may run (a cell of the worked lab, or an exercise's answer in all)."""
ANSWER_TIME_FACTOR = 5.0
ANSWER_TIME_MARGIN = 20.0
"""An answer (with the lab's cells up to its exercise's last check) may take this many times what
the worked lab recorded for them, plus this many seconds (the grader's generic kernels and another
CPU may be slower)."""
TOTAL_TIMEOUT = 1800.0
"""Seconds the whole grading run may take."""
MEMORY_MB = 4096
"""Address space of each grading process (the kernel and pytest) in MB."""
OUTPUT_LIMIT = 100_000
"""Characters one cell may print on stdout and on stderr; the rest is dropped."""
MESSAGE_LIMIT = 300
"""Characters of a reason in the report."""

PASSED, MISSING, EXCEPTION, MEMORY, TIMEOUT, DIED, STOPPED, WRONG, NOT_RUN, NOT_ATTEMPTED = (
    "passed", "missing", "exception", "memory", "timeout", "kernel died", "stopped", "wrong output", "not run",
    "not attempted")
"""The status of an exercise."""

INVALID, WRONG_LAB, NOT_GRADED = "invalid notebook", "wrong lab", "not graded"
"""Why a whole submission could not be graded (the status of each of its exercises then)."""

VERDICTS = ("passed", "failed", "not attempted", "missing", "error", "timeout", "not run",
            INVALID, WRONG_LAB, NOT_GRADED)
"""The statuses of the class table (``--csv``): an exercise's status, in fewer words.
*failed*: the answer ran but a check did not pass; *error*: the answer (or the lab's code using it,
or a check calling it) raised, ran out of memory or stopped its process; *missing*: the answer
cell was deleted; *not run*: the grader stopped before the exercise (the kernel had died)."""


class GradingError(Exception):
    """The submission could not be graded at all; the message says why in plain words, ``kind``
    in one of :data:`INVALID`, :data:`WRONG_LAB`, :data:`TIMEOUT`, :data:`NOT_GRADED`."""

    def __init__(self, message: str, kind: str = NOT_GRADED):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Limits:
    """What the grading run may use."""

    cell_timeout: float = CELL_TIMEOUT
    total_timeout: float = TOTAL_TIMEOUT
    memory_mb: int = MEMORY_MB
    answer_timeout: float | None = None


# The report ---------------------------------------------------------------------------

@dataclass
class ExerciseResult:
    """One exercise's line in the report."""

    id: str
    title: str
    max_points: float
    points: float = 0.0
    status: str = NOT_RUN
    reason: str = ""
    verdict: str = "not run"   # the status in the class table, one of VERDICTS


@dataclass
class Report:
    """What the grader found.  ``error`` is set when nothing could be graded."""

    submission: str
    lab: str | None = None
    exercises: list[ExerciseResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    error_kind: str | None = None   # INVALID, WRONG_LAB, TIMEOUT or NOT_GRADED when error is set
    seconds: float = 0.0

    @property
    def score(self) -> float:
        return sum(ex.points for ex in self.exercises)

    @property
    def max_score(self) -> float:
        return sum(ex.max_points for ex in self.exercises)

    def to_dict(self) -> dict:
        return {"submission": self.submission, "lab": self.lab, "graded": self.error is None,
                "score": self.score, "max_score": self.max_score, "error": self.error, "error_kind": self.error_kind,
                "exercises": [asdict(ex) for ex in self.exercises], "notes": self.notes,
                "seconds": round(self.seconds, 1)}

    def format(self) -> str:
        """The report as text for a terminal."""
        lines = [f"Grading {self.submission}" + (f" against lab {self.lab}" if self.lab else "")]
        if self.error:
            lines.append(f"Could not grade: {self.error}")
        width = max([len(f"{ex.id}  {ex.title}") for ex in self.exercises] + [8])
        for ex in self.exercises:
            name = f"{ex.id}  {ex.title}" if ex.title != ex.id else ex.id
            points = f"{ex.points:g}/{ex.max_points:g}"
            lines.append(f"  {name:<{width}}  {points:>7}  {ex.status:<16}  {ex.reason}".rstrip())
        lines += [f"Note: {note}" for note in self.notes]
        lines.append(f"Score: {self.score:g}/{self.max_score:g}")
        return "\n".join(lines)


def _shorten(text: str, limit: int = MESSAGE_LIMIT, max_lines: int = 4) -> str:
    """The first lines of ``text``, without ANSI colours, cut to ``limit`` characters."""
    text = re.sub(r"(?:\x1b|#x1B)\[[0-9;]*[A-Za-z]", "", text).strip()
    lines = text.splitlines()
    text = " / ".join(line.strip() for line in lines[:max_lines] if line.strip())
    if len(lines) > max_lines or len(text) > limit:
        text = text[: limit - 3].rstrip() + "..."
    return text


# Grading ------------------------------------------------------------------------------

def grade(submission_path, lab_path=None, *, cell_timeout: float = CELL_TIMEOUT,
          total_timeout: float = TOTAL_TIMEOUT, memory_mb: int = MEMORY_MB,
          verify: bool = False, answer_timeout: float | None = None) -> Report:
    """Grade a submission against its worked lab; see the module docstring.

    ``lab_path`` defaults to ``<root>/labs/<lab>.ipynb`` for the lab the submission names.
    With ``verify`` every cell's output is compared and every exercise is also run without its
    answer (see the module docstring); what fails is noted.  ``answer_timeout`` caps each
    answer's time budget (seconds).
    The submission file is read once and never written.
    """
    report = Report(submission=str(submission_path))
    start = time.monotonic()
    try:
        _grade(report, Path(submission_path), lab_path,
               Limits(cell_timeout, total_timeout, memory_mb, answer_timeout), verify)
    except GradingError as exc:
        report.error, report.error_kind = str(exc), exc.kind
    except Exception as exc:  # a report, never a traceback
        report.error = _shorten(f"internal error in the grader: {type(exc).__name__}: {exc}")
        report.error_kind = NOT_GRADED
    if report.error:
        for ex in report.exercises:
            ex.points, ex.status, ex.reason, ex.verdict = 0.0, report.error_kind, "", report.error_kind
    report.seconds = time.monotonic() - start
    return report


def _grade(report: Report, submission_path: Path, lab_path, limits: Limits, verify: bool = False) -> None:
    lab = exercises = None
    if lab_path:  # known before the submission is read: a broken file still gets a row per exercise
        lab_path = Path(lab_path)
        lab, exercises = _lab_and_exercises(report, lab_path)
    submission = read_submission(submission_path)
    if lab is None:
        lab_path = _lab_path_for(submission)
        lab, exercises = _lab_and_exercises(report, lab_path)
    claimed = lab_name(submission)
    if claimed is None:
        report.notes.append(f"the submission does not say which lab it is for; graded as lab {report.lab}")
    elif claimed != report.lab:
        raise GradingError(f"this submission is for lab {claimed}, not {report.lab}; nothing was graded", WRONG_LAB)
    unattempted = {ex.id for ex in exercises if _is_placeholder(
        submitted_answer(submission, ex.id, lab.cells[ex.answer_cell].get("id"), []),
        strip_solution(lab.cells[ex.answer_cell].source, ex.id))}
    notebook, missing = grading_notebook(lab, submission, exercises, report.notes, verify, limits.cell_timeout,
                                         limits.answer_timeout)
    with tempfile.TemporaryDirectory(prefix="tinylm-grade-") as workdir:
        cells = run_notebook(notebook, Path(workdir), limits, figures=verify)
    _judge_all(report, exercises, lab, notebook, cells, missing, limits, unattempted, verify)
    report.notes.extend(dependency_notes(lab, exercises, report.exercises))


def _lab_and_exercises(report: Report, lab_path: Path):
    lab = _read_lab(lab_path)
    report.lab = lab_name(lab) or lab_path.stem
    exercises = _exercises_of(lab, lab_path)
    report.exercises = [ExerciseResult(ex.id, ex.title, ex.points) for ex in exercises]
    return lab, exercises


PLACEHOLDER_LINE = r"(?:[ \t]*(?:\.\.\.|pass|raise NotImplementedError\b[^#\n]*)?[ \t]*(?:#.*)?\n)*"
"""What may stand where the exercise edition's ``raise NotImplementedError(...)`` stood in an
answer that was not attempted: the line itself, ``...``, ``pass``, comments or nothing."""


def _is_placeholder(answer: str | None, stub_source: str) -> bool:
    """Whether ``answer`` is the exercise edition's answer cell (``stub_source``) with nothing done:
    each placeholder line left, or replaced by ``...``, ``pass``, comments or nothing."""
    if answer is None:
        return False

    def lines(text):
        return [line.rstrip() for line in text.split("\n") if line.strip()]

    pattern = "".join(PLACEHOLDER_LINE if re.fullmatch(r"\s*raise NotImplementedError\(.*\)", line)
                      else re.escape(line) + "\n" for line in lines(stub_source))
    return re.fullmatch(pattern, "".join(line + "\n" for line in lines(answer))) is not None


# Reading notebooks --------------------------------------------------------------------

def read_submission(path: Path):
    """Read a submitted notebook (bytes read once), or raise GradingError saying what is wrong."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise GradingError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise GradingError(f"{path.name} is not a notebook: it is not text "
                           "(a notebook is a JSON text file)", INVALID) from None
    if not text.lstrip().startswith("{"):
        raise GradingError(f"{path.name} is not a notebook: a notebook is JSON text starting with '{{'", INVALID)
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GradingError(f"{path.name} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
                           "was it cut short or edited by hand?", INVALID) from None
    return _as_notebook(raw, path.name)


def _as_notebook(raw, name: str):
    """A version-4 notebook node from parsed JSON, with each cell's source as one string."""
    if not isinstance(raw, dict) or not isinstance(raw.get("cells"), list) or "nbformat" not in raw:
        raise GradingError(f"{name} is JSON but not a Jupyter notebook (no 'nbformat' and 'cells')", INVALID)
    if raw["nbformat"] != 4:
        raise GradingError(f"{name} is a version {raw['nbformat']} notebook; open it in Jupyter and save it "
                           "as a version 4 notebook", INVALID)
    cells = []
    for cell in raw["cells"]:
        if not isinstance(cell, dict):
            raise GradingError(f"{name} is a damaged notebook: a cell is not a JSON object", INVALID)
        source = cell.get("source", "")
        cell = dict(cell, source="".join(source) if isinstance(source, list) else str(source))
        cell.setdefault("cell_type", "raw")
        cell["metadata"] = cell.get("metadata") if isinstance(cell.get("metadata"), dict) else {}
        cells.append(cell)
    metadata = raw.get("metadata") if isinstance(raw.get("metadata"), dict) else {}
    return nbformat.from_dict(dict(raw, cells=cells, metadata=metadata))


def lab_name(nb) -> str | None:
    """The lab a notebook says it is (``metadata.tinylm.lab``), or None."""
    meta = nb.metadata.get("tinylm")
    name = meta.get("lab") if isinstance(meta, dict) else None
    return name if isinstance(name, str) and name else None


def _lab_path_for(submission) -> Path:
    name = lab_name(submission)
    if name is None:
        raise GradingError("the submission does not say which lab it is (no metadata.tinylm.lab); "
                           "pass --lab LAB.ipynb")
    if not re.fullmatch(r"\w[\w.-]*", name):
        raise GradingError(f"the submission names an impossible lab {name!r}")
    try:
        path = course_root() / "labs" / f"{name}.ipynb"
    except FileNotFoundError as exc:
        raise GradingError(f"{exc}; or pass --lab LAB.ipynb") from None
    if not path.is_file():
        raise GradingError(f"the submission is for lab {name}, but there is no worked lab {path}")
    return path


def _read_lab(path: Path):
    try:
        return nbformat.read(path, as_version=4)
    except (OSError, ValueError) as exc:
        raise GradingError(f"cannot read the worked lab {path}: {_shorten(str(exc))}") from None


def _exercises_of(lab, lab_path: Path) -> list[Exercise]:
    """The lab's exercises, once its markup is known to be sound."""
    try:
        make_exercise(lab)
        exercises = list_exercises(lab)
    except ExerciseError as exc:
        raise GradingError(f"the worked lab {lab_path} is broken: {exc}") from None
    if not exercises:
        raise GradingError(f"the worked lab {lab_path} has no exercises")
    return exercises


# The grading notebook -----------------------------------------------------------------

IGNORE_OUTPUT = "nbval-ignore-output"

GRADER_KEY = "tinylm_grader"
"""Cell metadata of the grading notebook: which lab cell a code cell is, or which grader cell."""


def grading_notebook(lab, submission, exercises: list[Exercise], notes: list[str], verify: bool = False,
                     cell_timeout: float = CELL_TIMEOUT, answer_timeout: float | None = None):
    """The worked lab with the grader's cells, and the ids of missing answers.

    Before each answer cell, a *run* cell forks the answer processes (the submission's answer;
    with ``verify``, the stub and each wrong answer); each check cell starts with a line that
    puts the submission's values in place; after an exercise's last check, a *finish* cell ends
    its processes (and, with ``verify``, says which probe its checks failed to catch).  Only check
    cells' outputs are compared, unless ``verify``.  Each code cell's metadata says what it is
    (:data:`GRADER_KEY`).  Appends to ``notes`` what the submission did that the grader ignored.
    """
    nb = copy.deepcopy(lab)
    missing, used, answers = set(), [], {}
    for ex in exercises:
        answer = submitted_answer(submission, ex.id, lab.cells[ex.answer_cell].get("id"), notes)
        if answer is None:
            missing.add(ex.id)
        else:
            used.append(answer)
        answers[ex.id] = answer
    notes.extend(_ignored_cells(lab, submission, exercises, used))
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            cell.metadata[GRADER_KEY] = {"lab_cell": index}
            if tagged_id(cell, CHECK_TAG) is None and not verify:
                _add_tag(cell, IGNORE_OUTPUT)
    for ex in sorted(exercises, key=lambda ex: ex.answer_cell, reverse=True):
        flow = exercise_flow(lab.cells, ex)
        for index in ex.check_cells:
            cell = nb.cells[index]
            cell.source = (f"_tinylm_isolation.before_check({ex.id!r}, {index}, {flow.reads[index]!r}, "
                           f"{lab.cells[index].source!r})\n" + cell.source)
        nb.cells.insert(max(ex.check_cells) + 1, _grader_cell(
            f"_tinylm_isolation.finish({ex.id!r}, {verify!r}, {dict((f'wrong {i}', why) for i, (why, _) in enumerate(ex.wrong, 1))!r})",
            {"finish": ex.id}))
        stub = strip_solution(lab.cells[ex.answer_cell].source, ex.id)
        submitted = stub if answers[ex.id] is None else answers[ex.id]
        variants, display = [("submission", submitted)], "submission"
        if verify:
            if submitted.strip() == lab.cells[ex.answer_cell].source.strip():
                variants, display = [], "self"      # the worked answer: the kernel's own values
            variants += [("missing", stub)] + [(f"wrong {i}", wrong_answer(lab.cells[ex.answer_cell], ex, code))
                                                for i, (_, code) in enumerate(ex.wrong, 1)]
        budget = answer_budget(lab, ex, cell_timeout, len(variants), answer_timeout)
        expected = {str(index): _stdout(lab.cells[index]) for index in ex.check_cells}
        nb.cells.insert(ex.answer_cell, _grader_cell(
            f"# Added by the grader: exercise {ex.id} runs in a copy of the kernel; its checks run here.\n"
            f"_tinylm_isolation.run_exercise({ex.id!r}, {variants!r}, {flow.steps!r}, {budget!r}, {display!r}, "
            f"{sorted(flow.tainted)!r}, {expected!r})", {"run": ex.id}))
    if verify:
        notes.extend(f"exercise {ex.id} has no wrong answer to try (tinylm.wrong in its answer cell's metadata)"
                     for ex in exercises if not ex.wrong)
    cap = nbformat.v4.new_code_cell(CAP_CELL, id="tinylm-grader-cap", metadata={"tags": [IGNORE_OUTPUT]})
    start = _grader_cell("from tinylm_course import isolation as _tinylm_isolation\n_tinylm_isolation.start()",
                         {"start": True})
    nb.cells[:0] = [cap, start]
    return nb, missing


def _grader_cell(source: str, role: dict):
    return nbformat.v4.new_code_cell(source, metadata={"tags": [IGNORE_OUTPUT], GRADER_KEY: role})


def answer_budget(lab, ex: Exercise, cell_timeout: float, variants: int = 1,
                  answer_timeout: float | None = None) -> float:
    """Seconds one answer process may take: :data:`ANSWER_TIME_FACTOR` times what the worked lab
    recorded for the answer and the cells after it up to the last check, plus
    :data:`ANSWER_TIME_MARGIN`; at most what leaves the run cell, which runs ``variants`` of them,
    within ``cell_timeout``, and at most ``answer_timeout`` (``--answer-timeout``) if given."""
    cap = 0.9 * cell_timeout / max(variants, 1)
    if answer_timeout is not None:
        cap = min(cap, answer_timeout)
    recorded = [_recorded_seconds(lab.cells[index]) for index in range(ex.answer_cell, max(ex.check_cells) + 1)
                if lab.cells[index].cell_type == "code" and index not in ex.check_cells]
    if any(seconds is None for seconds in recorded):
        return cap
    return min(cap, ANSWER_TIME_FACTOR * sum(recorded) + ANSWER_TIME_MARGIN)


def _recorded_seconds(cell) -> float | None:
    """How long the worked lab's cell ran when it was last executed (nbclient's timestamps)."""
    from datetime import datetime

    timing = cell.get("metadata", {}).get("execution", {})
    try:
        start = datetime.fromisoformat(timing["iopub.execute_input"].replace("Z", "+00:00"))
        end = datetime.fromisoformat(timing["shell.execute_reply"].replace("Z", "+00:00"))
    except (KeyError, TypeError, ValueError):
        return None
    return max(0.0, (end - start).total_seconds())


def _add_tag(cell, tag: str) -> None:
    tags = cell.metadata.setdefault("tags", [])
    if tag not in tags:
        tags.append(tag)


def _code_cells(nb):
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def submitted_answer(submission, exercise_id: str, cell_id: str | None, notes: list[str]) -> str | None:
    """The submission's code for one exercise: its cells tagged ``answer:ID`` joined in order,
    else the cell with the worked answer cell's id (noted), else None."""
    tagged = [c.source for c in _code_cells(submission) if tagged_id(c, ANSWER_TAG) == exercise_id]
    if tagged:
        return "\n".join(tagged)
    by_id = [c.source for c in _code_cells(submission) if cell_id and c.get("id") == cell_id]
    if by_id:
        notes.append(f"{exercise_id}: the answer cell had lost its tag {ANSWER_TAG}{exercise_id}; "
                     "it was found by its cell id")
        return by_id[0]
    return None


def _ignored_cells(lab, submission, exercises: list[Exercise], answers: list[str]) -> list[str]:
    """Notes on edited check cells and on other cells the student added or changed."""
    notes = []
    for ex in exercises:
        original = [lab.cells[index].source.strip() for index in ex.check_cells]
        submitted = [c.source.strip() for c in _code_cells(submission) if tagged_id(c, CHECK_TAG) == ex.id]
        # a check the lab has and the submission lacks is not noted when others are there: a
        # teacher's private copy of the lab adds checks that no submission has
        if any(source not in original for source in submitted) or (original and not submitted):
            notes.append(f"{ex.id}: the check cells were edited or removed in the submission; "
                         "the worked lab's checks were used")
    known = {c.source.strip() for c in _code_cells(lab)} | {a.strip() for a in answers} | {""}
    extra = [c for c in _code_cells(submission)
             if tagged_id(c, ANSWER_TAG) is None and tagged_id(c, CHECK_TAG) is None
             and c.source.strip() not in known]
    if extra:
        notes.append(f"{len(extra)} added or changed code cell(s) outside the answer cells were ignored")
    return notes


def cap_output(limit: int, note: str) -> None:
    """Let each cell print at most ``limit`` characters per stream, then ``note`` once.

    Runs in the kernel: the grader's first cell holds this function's source (so the
    kernel needs no import from the grader).  A cell printing without end thus cannot fill
    the grader's memory.
    """
    import sys

    from IPython import get_ipython

    class CappedStream:
        def __init__(self, stream):
            self.stream, self.written = stream, 0

        def write(self, text):
            room = limit - self.written
            if room > 0:
                self.stream.write(text[:room] + (note if len(text) > room else ""))
            self.written += len(text)
            return len(text)

        def __getattr__(self, name):
            return getattr(self.stream, name)

    def reset(*args):
        for stream in (sys.stdout, sys.stderr):
            if isinstance(stream, CappedStream):
                stream.written = 0

    sys.stdout, sys.stderr = CappedStream(sys.stdout), CappedStream(sys.stderr)
    get_ipython().events.register("pre_run_cell", reset)


TRUNCATION_NOTE = f"\n{TRUNCATED} by the grader after {OUTPUT_LIMIT} characters]\n"

CAP_CELL = "\n".join([
    f"# Added by the grader: each cell may print {OUTPUT_LIMIT} characters per stream.",
    inspect.getsource(cap_output),
    f"cap_output({OUTPUT_LIMIT}, {TRUNCATION_NOTE!r})",
    "del cap_output",
])

# Running it ---------------------------------------------------------------------------

@dataclass
class CellResult:
    """How one code cell of the grading notebook fared (from the JUnit report)."""

    outcome: str  # "passed", "failed" or "skipped"
    message: str = ""
    error: str | None = None  # "Type: message" if the cell raised
    stdout: str | None = None  # what a failed cell printed
    truncated: bool = False


PORT_CLASH = "Address already in use"
"""What a kernel says when another process took one of its ports before it could bind it (two
kernels started side by side may pick the same free port): the run is tried once more."""


def run_notebook(nb, workdir: Path, limits: Limits, figures: bool = False) -> dict[int, CellResult]:
    """Run ``nb`` with nbval in ``workdir``; return the result of each code cell by number.

    Figures are drawn into the notebook only with ``figures`` (to compare them with the lab's,
    which show as ``<Figure size ...>``); otherwise matplotlib draws nothing (``Agg``).
    A run whose kernel could not start because of a port taken meanwhile is tried again, once.
    """
    results = _run_notebook(nb, workdir, limits, figures)
    first = results.get(0)
    if (first is None or first.outcome != "passed") and PORT_CLASH in (workdir / "pytest.log").read_text(errors="replace"):
        results = _run_notebook(nb, workdir, limits, figures)
    return results


def _run_notebook(nb, workdir: Path, limits: Limits, figures: bool = False) -> dict[int, CellResult]:
    notebook = workdir / "grading.ipynb"
    nbformat.write(nb, notebook)
    (workdir / "pytest.ini").write_text("[pytest]\n")
    junit, log = workdir / "junit.xml", workdir / "pytest.log"
    command = [sys.executable, "-m", "pytest", "-p", "nbval.plugin", "-p", "tinylm_course.nbval_plugin",
               "--nbval", "--nbval-current-env", "--nbval-sanitize-with", str(SANITIZE_FILE),
               "--nbval-cell-timeout", str(limits.cell_timeout), "--junitxml", str(junit),
               "-p", "no:cacheprovider", "-q", "--color=no",
               "-c", str(workdir / "pytest.ini"), "--rootdir", str(workdir), str(notebook)]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=workdir, env=_environment(figures, workdir), stdin=subprocess.DEVNULL,
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                   preexec_fn=_child_limits(limits.memory_mb))
        try:
            code = process.wait(timeout=limits.total_timeout)
        except subprocess.TimeoutExpired:
            raise GradingError(f"grading stopped: the notebook ran longer than {limits.total_timeout:g} s "
                               "in all (--timeout)", TIMEOUT) from None
        finally:
            if process.poll() is None:  # timed out, or the grader itself was interrupted
                kill_tree(process)
    if not junit.is_file():
        tail = log.read_text(errors="replace")[-2000:]
        if PORT_CLASH in tail:
            return {}
        raise GradingError(f"the grading run failed (pytest exit code {code}): {_shorten(tail)}")
    return read_junit(junit)


def _environment(figures: bool = False, workdir: Path | None = None) -> dict[str, str]:
    """The grading run's environment.  With ``workdir``, the kernel's connection file and its
    IPython profile (history, startup files) live there, so gradings running side by side
    (``--jobs``) share no files, and nothing of the grading user's profile runs in the kernel."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}
    env.update(TINYLM_READONLY="1", OMP_NUM_THREADS="1", ATEN_CPU_CAPABILITY="default",
               PYTEST_DISABLE_PLUGIN_AUTOLOAD="1", PYTHONDONTWRITEBYTECODE="1")
    if workdir is not None:
        env.update(IPYTHONDIR=str(workdir / "ipython"), JUPYTER_RUNTIME_DIR=str(workdir / "runtime"))
    if figures:
        env.pop("MPLBACKEND", None)  # the kernel's own inline backend, as when the lab was made
    else:
        env["MPLBACKEND"] = "Agg"
    try:
        env["TINYLM_ROOT"] = str(course_root())
    except FileNotFoundError:
        pass
    here = str(Path(__file__).resolve().parent.parent)      # the kernel imports tinylm_course.isolation
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [here, env.get("PYTHONPATH")]))
    return env


def _child_limits(memory_mb: int):
    """A ``preexec_fn`` for pytest: cap its address space (the kernel inherits it) and have it
    killed when the grader dies, however the grader is stopped (Linux)."""
    limit = int(memory_mb) * 2**20

    def set_limits():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        die_with_parent()
    return set_limits


def read_junit(path: Path) -> dict[int, CellResult]:
    """The results of nbval's test cases ``Cell N``, by N."""
    results = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        match = re.fullmatch(r"Cell (\d+)", case.get("name", ""))
        if not match:
            continue
        result = CellResult("passed")
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                result.outcome = "skipped" if child.tag == "skipped" else "failed"
                result.message = child.get("message") or child.text or ""
        for prop in case.iter("property"):
            name, value = prop.get("name"), prop.get("value")
            if name in ("error", "stdout"):
                setattr(result, name, value)
            elif name == "truncated":
                result.truncated = True
        results[int(match.group(1))] = result
    return results


# Judging ------------------------------------------------------------------------------

def _judge_all(report: Report, exercises: list[Exercise], lab, notebook, cells: dict[int, CellResult],
               missing: set[str], limits: Limits, unattempted: set[str] = frozenset(), verify: bool = False) -> None:
    """Fill in the report from the cell results (code cells 0 and 1 are the grader's own)."""
    for n in (0, 1):
        cell = cells.get(n)
        if cell is None or cell.outcome != "passed":
            raise GradingError("the grader's setup failed: " + _shorten(cell.message if cell else "it did not run"))
    number, runs, finishes = _code_numbers(notebook)
    for ex, result in zip(exercises, report.exercises):
        roles = [("answer", cells.get(runs[ex.id]), "")]
        roles += [("check", cells.get(number[index]), _stdout(lab.cells[index])) for index in ex.check_cells]
        _judge(result, roles, ex.id in missing, limits, ex.id in unattempted)
    owned = {number[index] for ex in exercises for index in ex.check_cells} | set(runs.values())
    index_of = {n: index for index, n in number.items()}
    lab_number = {index: n for n, index in enumerate(
        (index for index, cell in enumerate(lab.cells) if cell.cell_type == "code"), start=1)}
    for n, cell in sorted(cells.items()):
        if n in (0, 1) or n in owned or cell.outcome == "passed":
            continue
        expected = _stdout(lab.cells[index_of[n]]) if n in index_of else ""
        status, why = _cause(cell, expected, limits)
        if status == NOT_RUN:
            continue
        if n in finishes:
            report.notes.append(_shorten(cell.error or why).removeprefix("AssertionError: "))
        elif n in index_of and verify:     # for the lab's authors: which cell
            report.notes.append(f"code cell {lab_number[index_of[n]]} of the lab (not part of an exercise) {why}")
        elif n in index_of:
            report.notes.append(f"the lab's own code {_place(index_of[n], exercises)} (not part of an exercise) {why}")
        else:
            report.notes.append(f"the grader's own code {why}")


def _place(index: int, exercises: list[Exercise]) -> str:
    """Where lab cell ``index`` is, said with the exercises around it."""
    before = [ex for ex in exercises if ex.answer_cell < index]
    if before:
        return f"after exercise {before[-1].id} ({before[-1].title})"
    return f"before exercise {exercises[0].id} ({exercises[0].title})" if exercises else "in the lab"


def _code_numbers(notebook) -> tuple[dict[int, int], dict[str, int], dict[int, str]]:
    """From the grading notebook: each lab cell's index -> its code cell number there, each
    exercise's run cell number, and each finish cell's number -> its exercise id."""
    numbers, runs, finishes = {}, {}, {}
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    for n, cell in enumerate(code):
        role = cell.metadata.get(GRADER_KEY, {})
        if "lab_cell" in role:
            numbers[role["lab_cell"]] = n
        elif "run" in role:
            runs[role["run"]] = n
        elif "finish" in role:
            finishes[n] = role["finish"]
    return numbers, runs, finishes


def _stdout(cell) -> str:
    return "".join(out.get("text", "") for out in cell.get("outputs", []) if out.get("name") == "stdout")


def _judge(result: ExerciseResult, runs: list[tuple[str, CellResult | None, str]], missing: bool,
           limits: Limits, unattempted: bool = False) -> None:
    """Set the points, status, reason and verdict of one exercise from its answer and check cells,
    given as (role, result, the worked lab's stdout).  An answer still holding the exercise
    edition's placeholder (``unattempted``) is not attempted, whatever its run did."""
    if missing:
        result.status, result.reason, result.verdict = MISSING, "answer cell missing", "missing"
        return
    if unattempted:
        result.status, result.verdict = NOT_ATTEMPTED, "not attempted"
        result.reason = "not attempted: the answer cell still holds the exercise edition's placeholder"
        return
    cut = next((role for role, cell, _ in runs if cell and cell.truncated), None)
    note = f"the {cut}'s printed output was too long and was cut" if cut else ""
    for role, cell, expected in runs:
        if cell is None:
            result.status, result.reason, result.verdict = NOT_RUN, f"{role} was not run", "not run"
            return
        if cell.outcome != "passed":
            result.status, why = _cause(cell, expected, limits)
            result.reason = f"{role} {why}" + (f" ({note})" if note else "")
            result.verdict = _verdict(result.status, role, cell)
            return
    result.points, result.status, result.reason, result.verdict = result.max_points, PASSED, note, "passed"


def _verdict(status: str, role: str, cell: CellResult) -> str:
    """The class table's status of an exercise that did not pass (see :data:`VERDICTS`)."""
    if status in (TIMEOUT, NOT_ATTEMPTED, NOT_RUN):
        return status
    if status == WRONG or (role == "check" and status == EXCEPTION and (cell.error or "").startswith("AssertionError")):
        return "failed"     # the answer ran; a check did not pass
    return "error"


def _cause(cell: CellResult, expected: str, limits: Limits) -> tuple[str, str]:
    """The status of a cell that did not pass, and why in words (a verb phrase)."""
    message, error = cell.message, cell.error or ""
    if cell.outcome == "skipped" or "Kernel dead on test start" in message:
        return NOT_RUN, "was not run: the kernel had stopped in an earlier cell"
    if KERNEL_DIED in message:
        return DIED, f"stopped the kernel ({message.split(KERNEL_DIED, 1)[1].strip(': ')})"
    if "Failed to interrupt kernel" in message:
        return TIMEOUT, (f"timed out after {limits.cell_timeout:g} s and could not be interrupted "
                         "(the kernel was stopped)")
    if "Timeout of" in message:
        return TIMEOUT, f"timed out after {limits.cell_timeout:g} s"
    if error.startswith(SUBMISSION_ERROR):
        return _submission_cause(error.removeprefix(SUBMISSION_ERROR), limits)
    if "MemoryError" in error.split(":")[0] or "can't allocate memory" in error:  # Python and numpy; torch
        return MEMORY, f"hit the memory limit of {limits.memory_mb} MB ({_shorten(error, 120)})"
    if "Cell outputs differ" in message and cell.stdout is not None and cell.stdout != expected:
        return WRONG, f"printed {_quote(cell.stdout)} where the worked lab prints {_quote(expected)}"
    if "Cell outputs differ" in message:
        return WRONG, "output differs from the worked lab: " + _shorten(message.split("Traceback:", 1)[-1])
    if re.fullmatch(r"NotImplementedError: Exercise \S+", error):
        return NOT_ATTEMPTED, "raised NotImplementedError: not attempted yet"
    if error:
        return EXCEPTION, "raised " + _shorten(error)
    return EXCEPTION, "failed: " + _shorten(message)


SUBMISSION_ERROR = "SubmissionError: "
"""How an error of the answer process (:class:`tinylm_course.isolation.SubmissionError`) reaches a cell."""

LAB_CELL_AFTER = re.compile(r"^made code cell \d+ of the lab, which uses it, raise ")
"""How the answer process says that the lab's code after the answer failed with it (it names
the cell by number; the report says it in words)."""


def _submission_cause(text: str, limits: Limits) -> tuple[str, str]:
    """Status and words for what the answer process did, from the kernel's message: a verb phrase
    from the run cell ("raised ...", "took longer ..."), a plain clause from a check."""
    text = LAB_CELL_AFTER.sub("made the lab's code that runs after it (and uses it) raise ", text)
    why = text if text.split(" ", 1)[0] in ("raised", "made", "took", "stopped") else "failed: " + text
    if "took longer than" in text:
        return TIMEOUT, why
    if "stopped (it exited" in text or "stopped the process" in text:
        return STOPPED, why
    if "MemoryError" in text or "can't allocate memory" in text:
        return MEMORY, f"hit the memory limit of {limits.memory_mb} MB ({_shorten(text, 120)})"
    if re.search(r"raised? NotImplementedError: Exercise \S+$", text):
        return NOT_ATTEMPTED, why.rsplit("NotImplementedError", 1)[0] + "NotImplementedError: not attempted yet"
    return EXCEPTION, _shorten(why)


def _quote(text: str) -> str:
    return '"' + _shorten(text, limit=120) + '"'


# Dependencies between exercises --------------------------------------------------------

def _defined_names(source: str) -> set[str]:
    """The names a cell defines at its top level: functions, classes and assigned names (not
    imports: a module is the same whoever imported it)."""
    try:
        tree = parse(source)
    except SyntaxError:
        return set()
    names = set()
    for statement in tree.body:
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(statement.name)
        elif isinstance(statement, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
            names |= {n.id for target in targets for n in ast.walk(target)
                      if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    return names


def _loaded_names(source: str) -> set[str]:
    try:
        tree = parse(source)
    except SyntaxError:
        return set()
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def exercise_dependencies(lab, exercises: list[Exercise]) -> dict[str, list[tuple[str, list[str]]]]:
    """For each exercise, the earlier exercises it builds on: ``{later id: [(earlier id, names)]}``,
    where ``names`` are what the earlier exercise's (worked) answer cell defines and the later
    exercise's answer, the lab's cells after it or its checks use (unless a cell of the lab in
    between defines them again)."""
    found: dict[str, list[tuple[str, list[str]]]] = {}
    for later in exercises:
        span = range(later.answer_cell, max(later.check_cells, default=later.answer_cell) + 1)
        used = set().union(*[_loaded_names(lab.cells[i].source) for i in span if lab.cells[i].cell_type == "code"])
        for earlier in exercises:
            if earlier.answer_cell >= later.answer_cell:
                continue
            names = _defined_names(lab.cells[earlier.answer_cell].source)
            for i in range(earlier.answer_cell + 1, later.answer_cell):
                if lab.cells[i].cell_type == "code" and tagged_id(lab.cells[i], ANSWER_TAG) is None:
                    names -= _defined_names(lab.cells[i].source)
            if names & used:
                found.setdefault(later.id, []).append((earlier.id, sorted(names & used)))
    return found


def dependency_notes(lab, exercises: list[Exercise], results: list[ExerciseResult]) -> list[str]:
    """Notes on exercises that build on an earlier one the submission did not get right: the
    grader ran them with the worked lab's answer to the earlier one, so they lose nothing for it."""
    by_id = {result.id: result for result in results}
    notes = []
    for later, uses in exercise_dependencies(lab, exercises).items():
        if by_id[later].verdict in ("not attempted", "missing"):
            continue
        for earlier, names in uses:
            if by_id[earlier].verdict != "passed":
                notes.append(f"{later} ({by_id[later].title}) uses {', '.join(f'`{n}`' for n in names)} from "
                             f"{earlier} ({by_id[earlier].title}), which is {by_id[earlier].verdict}: {later} was "
                             f"graded with the worked lab's answer to {earlier}, so it lost no points for it")
    return notes


# A whole class ------------------------------------------------------------------------

CSV_FIELDS = ("file", "lab", "exercise", "points", "max_points", "status")
"""The columns of ``--csv``: one row per submission and exercise."""


def find_lab(value: str, labs_dir: Path | None = None) -> Path:
    """The worked lab ``--lab`` names: a notebook's path, or a lab in ``<root>/labs`` given as
    ``N``, ``labNN`` or ``labNN_name``.  Raises ``ValueError`` saying what is wrong."""
    path = Path(value)
    if value.endswith(".ipynb") or os.sep in value or path.is_file():
        if not path.is_file():
            raise ValueError(f"--lab {value}: no such notebook")
        return path
    if labs_dir is None:
        try:
            labs_dir = course_root() / "labs"
        except FileNotFoundError as exc:
            raise ValueError(f"--lab {value}: {exc}") from None
    labs = sorted(labs_dir.glob("lab*.ipynb"))
    match = re.fullmatch(r"(?:lab)?(\d+)", value)
    if match:
        number = int(match.group(1))
        found = [lab for lab in labs if re.match(r"lab(\d+)", lab.stem) and int(re.match(r"lab(\d+)", lab.stem).group(1)) == number]
    elif re.fullmatch(r"lab\d+_\w+", value):
        found = [lab for lab in labs if lab.stem == value]
    else:
        raise ValueError(f"--lab {value}: give a lab as N, labNN, labNN_name or a path to LAB.ipynb")
    if len(found) != 1:
        known = ", ".join(lab.stem for lab in labs) or "none"
        raise ValueError(f"--lab {value}: {'no' if not found else 'more than one'} lab in {labs_dir} "
                         f"matches (the labs: {known})")
    return found[0]


def collect_submissions(paths) -> list[Path]:
    """The notebooks to grade: each file as given, and every ``*.ipynb`` in each folder (its
    subfolders too, but not hidden ones such as Jupyter's ``.ipynb_checkpoints``), sorted; each
    file once.  Raises ``ValueError`` for a folder without notebooks."""
    found, seen = [], set()
    for value in paths:
        path = Path(value)
        if path.is_dir():
            inside = sorted(p for p in path.rglob("*.ipynb")
                            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts))
            if not inside:
                raise ValueError(f"{path} holds no notebooks (*.ipynb)")
        else:
            inside = [path]
        for p in inside:
            key = p.resolve()
            if key not in seen:
                seen.add(key)
                found.append(p)
    return found


def _grade_job(job) -> Report:
    path, lab, options = job
    return grade(path, lab, **options)


def _worker(job, connection) -> None:
    """The body of one grading process of ``--jobs``: it dies with the grader, stops as on Ctrl-C
    when terminated (so that its pytest and kernel are killed on the way out), and sends its
    report back."""
    die_with_parent()
    _stop_on_sigterm()
    try:
        connection.send(_grade_job(job))
    except KeyboardInterrupt:  # stopped by the grader: its processes are already killed on the way here
        os._exit(130)
    finally:
        connection.close()


def grade_many(submissions: list[Path], lab: Path | None = None, jobs: int = 1, **options):
    """Grade each submission (``options`` as :func:`grade`'s), ``jobs`` at a time, each in a
    process of its own; yield the reports in the order of ``submissions``.  Gradings share
    nothing: each has its own temporary folder, kernel, ports and IPython profile."""
    work = [(str(path), str(lab) if lab else None, options) for path in submissions]
    if jobs <= 1 or len(work) <= 1:
        for job in work:
            yield _grade_job(job)
        return
    import multiprocessing
    from multiprocessing.connection import wait

    context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    running: dict = {}          # connection -> (index, process)
    done: dict[int, Report] = {}
    queue, following = list(range(len(work))), 0
    try:
        while following < len(work):
            while queue and len(running) < jobs:
                index = queue.pop(0)
                receiver, sender = context.Pipe(duplex=False)
                process = context.Process(target=_worker, args=(work[index], sender), daemon=True)
                process.start()
                sender.close()
                running[receiver] = (index, process)
            for receiver in wait(list(running)):
                index, process = running.pop(receiver)
                try:
                    done[index] = receiver.recv()
                except (EOFError, OSError):  # the process died without a report
                    done[index] = Report(submission=work[index][0], error="the grading process stopped "
                                         f"(exit code {process.join(5) or process.exitcode})", error_kind=NOT_GRADED)
                receiver.close()
                process.join()
            while following in done:
                yield done.pop(following)
                following += 1
    finally:
        for receiver, (_, process) in running.items():   # stopped early: Ctrl-C, SIGTERM
            process.terminate()                           # each kills its pytest and kernel on the way out
        for receiver, (_, process) in running.items():
            process.join(10)
            if process.is_alive():
                process.kill()
            receiver.close()


def csv_rows(report: Report) -> list[dict]:
    """The class table's rows of one report: one per exercise (one row with an empty exercise
    when the submission could not be graded and its lab is unknown)."""
    if not report.exercises:
        return [{"file": report.submission, "lab": report.lab or "", "exercise": "", "points": "0",
                 "max_points": "", "status": report.error_kind or NOT_GRADED}]
    return [{"file": report.submission, "lab": report.lab or "", "exercise": ex.id, "points": f"{ex.points:g}",
             "max_points": f"{ex.max_points:g}", "status": ex.verdict} for ex in report.exercises]


def write_csv(reports: list[Report], path: Path) -> None:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for report in reports:
            writer.writerows(csv_rows(report))


def feedback_names(submissions: list[Path]) -> dict[Path, str]:
    """A feedback file name for each submission: ``<name>.md``, or, when two submissions share a
    name (``alice/lab31.ipynb``, ``bob/lab31.ipynb``), their paths joined with ``__``."""
    stems = [p.stem for p in submissions]
    if len(set(stems)) == len(stems):
        return {p: f"{p.stem}.md" for p in submissions}
    resolved = [p.resolve() for p in submissions]
    common = Path(os.path.commonpath([str(p.parent) for p in resolved]))
    return {p: "__".join(r.relative_to(common).with_suffix("").parts) + ".md" for p, r in zip(submissions, resolved)}


def _cell(text: str) -> str:
    """Text for a Markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|") or " "


EXPLAIN = {
    "passed": "the answer ran and every check passed",
    "failed": "the answer ran, but a check did not pass",
    "not attempted": "the answer cell still holds the exercise edition's placeholder",
    "missing": "the answer cell is not in the notebook (deleted, or its tag removed)",
    "error": "the answer, or the lab's code or a check using it, raised an error",
    "timeout": "the answer ran longer than its time limit and was stopped",
    "not run": "the grader stopped before this exercise",
    INVALID: "the file is not a notebook the grader can read",
    WRONG_LAB: "the notebook is for another lab",
    NOT_GRADED: "the notebook could not be graded",
}
"""What each status of the class table means, for the feedback files."""


def feedback_markdown(report: Report, name: str | None = None) -> str:
    """One submission's feedback as Markdown, for the student."""
    name = name or Path(report.submission).name
    lines = [f"# Feedback on {name}", ""]
    if report.lab:
        lines += [f"Lab: {report.lab}", ""]
    if report.error:
        lines += [f"**This notebook could not be graded** ({report.error_kind or NOT_GRADED}): {report.error}", "",
                  "None of its exercises could earn points.", ""]
    lines += [f"**Score: {report.score:g} / {report.max_score:g}**", ""]
    if report.exercises:
        lines += ["| Exercise | Points | Status | What the grader found |", "|---|---|---|---|"]
        for ex in report.exercises:
            found = ex.reason or EXPLAIN.get(ex.verdict, "")
            lines.append(f"| {_cell(ex.id + ' ' + ex.title if ex.title != ex.id else ex.id)} | "
                         f"{ex.points:g} / {ex.max_points:g} | {_cell(ex.verdict)} | {_cell(found)} |")
        lines.append("")
    if report.notes:
        lines += ["Notes:", ""] + [f"- {note}" for note in report.notes] + [""]
    if not report.error:
        lines += ["How this was graded: each exercise's answer ran in a process of its own, and the worked lab's "
                  "own checks read what it computed. An exercise that builds on an earlier one was run with the "
                  "worked answer to the earlier one, so each exercise counts on its own. Your notebook's own check "
                  "cells and outputs were not used.", ""]
    return "\n".join(lines)


def write_feedback(reports: list[Report], submissions: list[Path], out_dir: Path) -> list[Path]:
    names = feedback_names(submissions)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for report, path in zip(reports, submissions):
        target = out_dir / names[path]
        target.write_text(feedback_markdown(report, path.name), encoding="utf-8")
        written.append(target)
    return written


def _check_outputs(submissions: list[Path], csv_path, feedback_dir) -> None:
    """Refuse outputs that would overwrite a submission or sit next to one."""
    resolved = {p.resolve() for p in submissions}
    if csv_path and Path(csv_path).resolve() in resolved:
        raise ValueError(f"--csv {csv_path} is one of the submissions")
    if feedback_dir:
        folder = Path(feedback_dir).resolve()
        if any(p.parent == folder for p in resolved):
            raise ValueError(f"--feedback {feedback_dir} holds submissions; write the feedback to another folder")


def summary(reports: list[Report]) -> str:
    """One line per submission: its score, or why it could not be graded."""
    width = max(len(r.submission) for r in reports)
    lines = [f"{len(reports)} submissions:"]
    for r in reports:
        counts = {}
        for ex in r.exercises:
            counts[ex.verdict] = counts.get(ex.verdict, 0) + 1
        detail = ", ".join(f"{n} {verdict}" for verdict, n in counts.items())
        result = f"not graded ({r.error_kind})" if r.error else f"{r.score:g}/{r.max_score:g}"
        lines.append(f"  {r.submission:<{width}}  {result}" + (f"  ({detail})" if detail and not r.error else ""))
    return "\n".join(lines)


# Command line -------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("submissions", nargs="+", metavar="SUBMISSION",
                        help="notebooks, or folders: every *.ipynb inside is graded")
    parser.add_argument("--lab", metavar="LAB", help="the worked lab: N, labNN, labNN_name or a path to LAB.ipynb "
                                                     "(default: the lab each notebook's metadata names)")
    parser.add_argument("--jobs", "-j", type=int, default=1, metavar="J",
                        help="grade J submissions at a time (default 1; each uses about one core)")
    parser.add_argument("--csv", metavar="FILE.csv", help="write the class table: "
                        + ",".join(CSV_FIELDS) + ", one row per submission and exercise")
    parser.add_argument("--feedback", metavar="DIR", help="write one Markdown feedback file per submission into DIR")
    parser.add_argument("--json", metavar="OUT.json", help="also write the report as JSON "
                                                           "(a list of reports for several submissions)")
    parser.add_argument("--cell-timeout", type=float, default=CELL_TIMEOUT, metavar="S",
                        help=f"seconds per cell (default {CELL_TIMEOUT:g})")
    parser.add_argument("--timeout", type=float, default=TOTAL_TIMEOUT, metavar="S",
                        help=f"seconds for the whole notebook (default {TOTAL_TIMEOUT:g})")
    parser.add_argument("--answer-timeout", type=float, default=None, metavar="S",
                        help=f"at most S seconds for each exercise's answer (default: {ANSWER_TIME_FACTOR:g} times "
                             f"the worked lab's time plus {ANSWER_TIME_MARGIN:g} s)")
    parser.add_argument("--memory-mb", type=int, default=MEMORY_MB, metavar="M",
                        help=f"memory limit per process in MB (default {MEMORY_MB})")
    parser.add_argument("--verify", action="store_true",
                        help="for the lab's authors, with the worked lab as SUBMISSION: compare every cell's "
                             "output and run each exercise without its answer; what fails is listed as notes")
    parser.set_defaults(run=run)


def _stop_on_sigterm() -> None:
    """A batch script's ``timeout`` sends SIGTERM: stop as on Ctrl-C, so that the grader kills its
    processes on the way out (SIGKILL is covered by each child's parent-death signal)."""
    def stop(signum, frame):
        raise KeyboardInterrupt(f"stopped by signal {signum}")
    signal.signal(signal.SIGTERM, stop)


def run(args) -> int:
    """Grade, print the reports, write the JSON, CSV and feedback; exit code 0 if every submission
    was graded, 2 if one could not be (or the arguments are wrong); with ``--verify``, 1 if a
    worked lab fell short (less than full marks, or any note)."""
    _stop_on_sigterm()
    try:
        lab = find_lab(args.lab) if args.lab else None
        submissions = collect_submissions(args.submissions)
        _check_outputs(submissions, args.csv, args.feedback)
        if args.jobs < 1:
            raise ValueError("--jobs must be at least 1")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    options = dict(cell_timeout=args.cell_timeout, total_timeout=args.timeout, memory_mb=args.memory_mb,
                   verify=args.verify, answer_timeout=args.answer_timeout)
    reports = []
    try:
        for report in grade_many(submissions, lab, args.jobs, **options):
            print(report.format() + ("\n" if len(submissions) > 1 else ""), flush=True)
            reports.append(report)
    except KeyboardInterrupt as exc:
        print(f"Grading stopped ({exc or 'Ctrl-C'}) after {len(reports)} of {len(submissions)} submissions; "
              "nothing was written", file=sys.stderr)
        return 130
    if len(reports) > 1:
        print(summary(reports))
    try:
        if args.json:
            data = reports[0].to_dict() if len(reports) == 1 else [r.to_dict() for r in reports]
            Path(args.json).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        if args.csv:
            write_csv(reports, Path(args.csv))
        if args.feedback:
            write_feedback(reports, submissions, Path(args.feedback))
    except OSError as exc:
        print(f"error: cannot write {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    if any(report.error is not None for report in reports):
        return 2
    if args.verify and any(report.notes or report.score < report.max_score for report in reports):
        return 1  # a worked lab did not pass its own verification
    return 0
