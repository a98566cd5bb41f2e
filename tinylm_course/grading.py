"""Grading a student's lab with nbval.

    python -m tinylm_course grade SUBMISSION.ipynb [--lab LAB.ipynb] [--json OUT.json]

A submission is graded against its **worked lab** (``labs/<lab>.ipynb``, named by the
submission's ``metadata.tinylm.lab``).  The grader builds a *grading notebook*: the worked
lab, with each answer cell's code replaced by the student's, and a first cell that caps
printed output.  nbval runs it in a separate, limited process:

- answer cells and the lab's other cells run, but their output is not compared;
- check cells come from the worked lab, and their output must match the lab's;
- an exercise earns its points when its answer ran without error and all its checks passed.

The student's checks and extra cells are ignored, so a submission cannot change what is
checked.

For the lab's authors, ``--verify`` grades a worked lab against itself more strictly, in one
run of the lab:

- every cell's output is compared, as plain nbval does (the lab's own ``nbval-ignore-output``
  tags still hold), and each cell outside the exercises that differs becomes a note;
- just before each answer cell the kernel forks, and the copy runs the exercise *without* its
  answer (the exercise edition's stub, then the cells up to the exercise's last check); a check
  that still passes there would give points for nothing, and becomes a note.

So one execution proves that the worked lab reproduces its outputs, that it earns full marks
under the grader's limits, and that none of its checks passes without its answer.  (Grading
the exercise edition proves the last point too, at the cost of a second run of the lab.)

Whatever happens, :func:`grade` returns a :class:`Report` and never raises.

The run is limited: each cell by ``--cell-timeout``, the whole run by ``--timeout`` (then
pytest and the kernel are killed), each process's address space by ``--memory-mb``, and
each cell's printed output by :data:`OUTPUT_LIMIT`; with ``TINYLM_READONLY=1`` labs write
no results.  It is not a sandbox: the student's code runs as the grading user, so run
untrusted submissions inside a container.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat

from tinylm.paths import course_root

from .exercises import (ANSWER_TAG, CHECK_TAG, Exercise, ExerciseError, list_exercises, make_exercise,
                        strip_solution, tagged_id)
from .nbval_plugin import KERNEL_DIED, SANITIZE_FILE, TRUNCATED
from .processes import kill_tree

CELL_TIMEOUT = 300.0
"""Seconds one cell may run."""
TOTAL_TIMEOUT = 1800.0
"""Seconds the whole grading run may take."""
MEMORY_MB = 4096
"""Address space of each grading process (the kernel and pytest) in MB."""
OUTPUT_LIMIT = 100_000
"""Characters one cell may print on stdout and on stderr; the rest is dropped."""
MESSAGE_LIMIT = 300
"""Characters of a reason in the report."""

PASSED, MISSING, EXCEPTION, MEMORY, TIMEOUT, DIED, WRONG, NOT_RUN = (
    "passed", "missing", "exception", "memory", "timeout", "kernel died", "wrong output", "not run")
"""The status of an exercise."""


class GradingError(Exception):
    """The submission could not be graded at all; the message says why in plain words."""


@dataclass(frozen=True)
class Limits:
    """What the grading run may use."""

    cell_timeout: float = CELL_TIMEOUT
    total_timeout: float = TOTAL_TIMEOUT
    memory_mb: int = MEMORY_MB


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


@dataclass
class Report:
    """What the grader found.  ``error`` is set when nothing could be graded."""

    submission: str
    lab: str | None = None
    exercises: list[ExerciseResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    @property
    def score(self) -> float:
        return sum(ex.points for ex in self.exercises)

    @property
    def max_score(self) -> float:
        return sum(ex.max_points for ex in self.exercises)

    def to_dict(self) -> dict:
        return {"submission": self.submission, "lab": self.lab, "graded": self.error is None,
                "score": self.score, "max_score": self.max_score, "error": self.error,
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
            lines.append(f"  {name:<{width}}  {points:>7}  {ex.status:<12}  {ex.reason}".rstrip())
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
          verify: bool = False) -> Report:
    """Grade a submission against its worked lab; see the module docstring.

    ``lab_path`` defaults to ``<root>/labs/<lab>.ipynb`` for the lab the submission names.
    With ``verify`` every cell's output is compared and every exercise is also run without its
    answer (see the module docstring); what fails is noted.
    The submission file is read once and never written.
    """
    report = Report(submission=str(submission_path))
    start = time.monotonic()
    try:
        _grade(report, Path(submission_path), lab_path, Limits(cell_timeout, total_timeout, memory_mb),
               verify)
    except GradingError as exc:
        report.error = str(exc)
    except Exception as exc:  # a report, never a traceback
        report.error = _shorten(f"internal error in the grader: {type(exc).__name__}: {exc}")
    if report.error:
        for ex in report.exercises:
            ex.points, ex.status, ex.reason = 0.0, NOT_RUN, ""
    report.seconds = time.monotonic() - start
    return report


def _grade(report: Report, submission_path: Path, lab_path, limits: Limits, verify: bool = False) -> None:
    submission = read_submission(submission_path)
    lab_path = Path(lab_path) if lab_path else _lab_path_for(submission)
    lab = _read_lab(lab_path)
    report.lab = lab_name(lab) or lab_path.stem
    claimed = lab_name(submission)
    if claimed is None:
        report.notes.append(f"the submission does not say which lab it is for; graded as lab {report.lab}")
    elif claimed != report.lab:
        raise GradingError(f"this submission is for lab {claimed}, not {report.lab}; nothing was graded")
    exercises = _exercises_of(lab, lab_path)
    report.exercises = [ExerciseResult(ex.id, ex.title, ex.points) for ex in exercises]
    notebook, missing = grading_notebook(lab, submission, exercises, report.notes, verify, limits.cell_timeout)
    with tempfile.TemporaryDirectory(prefix="tinylm-grade-") as workdir:
        cells = run_notebook(notebook, Path(workdir), limits, figures=verify)
    _judge_all(report, exercises, lab, notebook, cells, missing, limits)


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
                           "(a notebook is a JSON text file)") from None
    if not text.lstrip().startswith("{"):
        raise GradingError(f"{path.name} is not a notebook: a notebook is JSON text starting with '{{'")
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GradingError(f"{path.name} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
                           "was it cut short or edited by hand?") from None
    return _as_notebook(raw, path.name)


def _as_notebook(raw, name: str):
    """A version-4 notebook node from parsed JSON, with each cell's source as one string."""
    if not isinstance(raw, dict) or not isinstance(raw.get("cells"), list) or "nbformat" not in raw:
        raise GradingError(f"{name} is JSON but not a Jupyter notebook (no 'nbformat' and 'cells')")
    if raw["nbformat"] != 4:
        raise GradingError(f"{name} is a version {raw['nbformat']} notebook; open it in Jupyter and save it "
                           "as a version 4 notebook")
    cells = []
    for cell in raw["cells"]:
        if not isinstance(cell, dict):
            raise GradingError(f"{name} is a damaged notebook: a cell is not a JSON object")
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
"""Cell metadata of the grading notebook: which lab cell a code cell is, or which probe."""


def grading_notebook(lab, submission, exercises: list[Exercise], notes: list[str], verify: bool = False,
                     cell_timeout: float = CELL_TIMEOUT):
    """The worked lab with the submission's answers in it, and the ids of missing answers.

    Only check cells' outputs are compared, unless ``verify``, which also puts a probe cell
    before each answer cell (see :func:`probe_without_answer`).  Each code cell's metadata
    says what it is (:data:`GRADER_KEY`).  Appends to ``notes`` what the submission did that
    the grader ignored.
    """
    nb = copy.deepcopy(lab)
    missing = set()
    used = []
    for ex in exercises:
        cell = nb.cells[ex.answer_cell]
        answer = submitted_answer(submission, ex.id, cell.get("id"), notes)
        if answer is None:
            missing.add(ex.id)
            cell.source = strip_solution(cell.source, ex.id)
        else:
            cell.source = answer
            used.append(answer)
    notes.extend(_ignored_cells(lab, submission, exercises, used))
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            cell.metadata[GRADER_KEY] = {"lab_cell": index}
            if tagged_id(cell, CHECK_TAG) is None and not verify:
                _add_tag(cell, IGNORE_OUTPUT)
    cap = nbformat.v4.new_code_cell(CAP_CELL, id="tinylm-grader-cap", metadata={"tags": [IGNORE_OUTPUT]})
    front = [cap]
    if verify:
        front.append(nbformat.v4.new_code_cell(PROBE_CELL, id="tinylm-grader-probe",
                                               metadata={"tags": [IGNORE_OUTPUT]}))
        for ex in sorted(exercises, key=lambda ex: ex.answer_cell, reverse=True):
            nb.cells.insert(ex.answer_cell, _probe_cell(lab, ex, cell_timeout))
    nb.cells[:0] = front
    return nb, missing


def _probe_cell(lab, ex: Exercise, cell_timeout: float):
    """The cell that runs exercise ``ex`` without its answer, in a fork of the kernel."""
    last = max(ex.check_cells)
    steps = [(strip_solution(lab.cells[ex.answer_cell].source, ex.id), "answer", "")]
    for index in range(ex.answer_cell + 1, last + 1):
        cell = lab.cells[index]
        if cell.cell_type == "code":
            role = "check" if index in ex.check_cells else "cell"
            steps.append((cell.source, role, _stdout(cell) if role == "check" else ""))
    timeout = 0.9 * cell_timeout  # within the cell's own timeout, so that the probe reports it
    source = (f"# Added by the grader (--verify): exercise {ex.id} without its answer, in a fork of the kernel.\n"
              f"_tinylm_probe({ex.id!r}, {steps!r}, {timeout!r})")
    return nbformat.v4.new_code_cell(source, metadata={"tags": [IGNORE_OUTPUT], GRADER_KEY: {"probe": ex.id}})


def probe_without_answer(exercise_id: str, steps: list, timeout: float) -> None:
    """Run an exercise without its answer in a fork of the kernel; raise if a check passes.

    Runs in the kernel (the grader's second cell holds this function's source, renamed
    ``_tinylm_probe``).  ``steps`` are ``(source, role, expected stdout)``: the answer cell
    as the exercise edition has it, then every code cell up to the exercise's last check.  The
    child process has a copy of everything the lab computed so far, runs the steps with its
    output captured and sent nowhere, reports through a pipe which checks passed (ran without
    error and printed what the worked lab prints), and exits; the kernel itself is untouched.
    """
    import io
    import json
    import os
    import select
    import signal
    import sys

    from IPython import get_ipython

    shell = get_ipython()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the copy: nothing it does reaches the notebook
        os.close(read_end)
        passed = []
        try:
            shell.display_pub.publish = lambda *args, **kwargs: None
            sys.stderr = io.StringIO()
            for source, role, expected in steps:
                sys.stdout = out = io.StringIO()
                try:
                    exec(compile(shell.transform_cell(source), f"<{role} of {exercise_id}>", "exec"), shell.user_ns)
                    ok = True
                except BaseException:
                    ok = False
                if role == "check":
                    passed.append(ok and out.getvalue() == expected)
            os.write(write_end, json.dumps(passed).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    report = b""
    try:
        ready, _, _ = select.select([read_end], [], [], timeout)
        report = os.read(read_end, 1 << 16) if ready else b""
    finally:  # also when the cell is interrupted: no copy of the kernel is left behind
        os.close(read_end)
        if not report:
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    if not report:
        raise RuntimeError(f"exercise {exercise_id} could not be run without its answer: "
                           + ("the forked kernel stopped" if ready else f"it took longer than {timeout:g} s"))
    passing = [number for number, ok in enumerate(json.loads(report), start=1) if ok]
    if passing:
        raise AssertionError(f"check {', '.join(map(str, passing))} of exercise {exercise_id} "
                             "passes without its answer")


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
        if submitted != original:
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

PROBE_CELL = "\n".join([
    "# Added by the grader (--verify): runs an exercise without its answer in a fork of the kernel.",
    inspect.getsource(probe_without_answer).replace("def probe_without_answer(", "def _tinylm_probe(", 1),
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


def run_notebook(nb, workdir: Path, limits: Limits, figures: bool = False) -> dict[int, CellResult]:
    """Run ``nb`` with nbval in ``workdir``; return the result of each code cell by number.

    Figures are drawn into the notebook only with ``figures`` (to compare them with the lab's,
    which show as ``<Figure size ...>``); otherwise matplotlib draws nothing (``Agg``).
    """
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
        process = subprocess.Popen(command, cwd=workdir, env=_environment(figures), stdin=subprocess.DEVNULL,
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                   preexec_fn=_memory_limit(limits.memory_mb))
        try:
            code = process.wait(timeout=limits.total_timeout)
        except subprocess.TimeoutExpired:
            raise GradingError(f"grading stopped: the notebook ran longer than {limits.total_timeout:g} s "
                               "in all (--timeout)") from None
        finally:
            if process.poll() is None:  # timed out, or the grader itself was interrupted
                kill_tree(process)
    if not junit.is_file():
        tail = log.read_text(errors="replace")[-2000:]
        raise GradingError(f"the grading run failed (pytest exit code {code}): {_shorten(tail)}")
    return read_junit(junit)


def _environment(figures: bool = False) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}
    env.update(TINYLM_READONLY="1", OMP_NUM_THREADS="1", ATEN_CPU_CAPABILITY="default",
               PYTEST_DISABLE_PLUGIN_AUTOLOAD="1", PYTHONDONTWRITEBYTECODE="1")
    if figures:
        env.pop("MPLBACKEND", None)  # the kernel's own inline backend, as when the lab was made
    else:
        env["MPLBACKEND"] = "Agg"
    try:
        env["TINYLM_ROOT"] = str(course_root())
    except FileNotFoundError:
        pass
    return env


def _memory_limit(memory_mb: int):
    """A ``preexec_fn`` capping the address space of the child (inherited by the kernel)."""
    limit = int(memory_mb) * 2**20

    def limit_memory():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return limit_memory


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
               missing: set[str], limits: Limits) -> None:
    """Fill in the report from the cell results (code cell 0 is the grader's cap cell)."""
    cap = cells.get(0)
    if cap is None or cap.outcome != "passed":
        raise GradingError("the grader's first cell failed: " + _shorten(cap.message if cap else "it did not run"))
    number, probes = _code_numbers(notebook)
    for ex, result in zip(exercises, report.exercises):
        roles = [("answer", ex.answer_cell)] + [("check", index) for index in ex.check_cells]
        runs = [(role, cells.get(number[index]), _stdout(lab.cells[index])) for role, index in roles]
        _judge(result, runs, ex.id in missing, limits)
    owned = {number[index] for ex in exercises for index in (ex.answer_cell, *ex.check_cells)}
    index_of = {n: index for index, n in number.items()}
    lab_number = {index: n for n, index in enumerate(
        (index for index, cell in enumerate(lab.cells) if cell.cell_type == "code"), start=1)}
    for n, cell in sorted(cells.items()):
        if n == 0 or n in owned or cell.outcome == "passed":
            continue
        expected = _stdout(lab.cells[index_of[n]]) if n in index_of else ""
        status, why = _cause(cell, expected, limits)
        if status == NOT_RUN:
            continue
        if n in probes:
            report.notes.append(f"{probes[n]} without its answer: {cell.error or why}")
        elif n in index_of:
            report.notes.append(f"code cell {lab_number[index_of[n]]} of the lab (not part of an exercise) {why}")
        else:
            report.notes.append(f"the grader's cell {n} {why}")


def _code_numbers(notebook) -> tuple[dict[int, int], dict[int, str]]:
    """From the grading notebook: each lab cell's index -> its code cell number there, and each
    probe cell's number -> its exercise id."""
    numbers, probes = {}, {}
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    for n, cell in enumerate(code):
        role = cell.metadata.get(GRADER_KEY, {})
        if "lab_cell" in role:
            numbers[role["lab_cell"]] = n
        elif "probe" in role:
            probes[n] = role["probe"]
    return numbers, probes


def _stdout(cell) -> str:
    return "".join(out.get("text", "") for out in cell.get("outputs", []) if out.get("name") == "stdout")


def _judge(result: ExerciseResult, runs: list[tuple[str, CellResult | None, str]], missing: bool,
           limits: Limits) -> None:
    """Set the points, status and reason of one exercise from its answer and check cells,
    given as (role, result, the worked lab's stdout)."""
    if missing:
        result.status, result.reason = MISSING, "answer cell missing"
        return
    cut = next((role for role, cell, _ in runs if cell and cell.truncated), None)
    note = f"the {cut}'s printed output was too long and was cut" if cut else ""
    for role, cell, expected in runs:
        if cell is None:
            result.status, result.reason = NOT_RUN, f"{role} was not run"
            return
        if cell.outcome != "passed":
            result.status, why = _cause(cell, expected, limits)
            result.reason = f"{role} {why}" + (f" ({note})" if note else "")
            return
    result.points, result.status, result.reason = result.max_points, PASSED, note


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
    if "MemoryError" in error.split(":")[0] or "can't allocate memory" in error:  # Python and numpy; torch
        return MEMORY, f"hit the memory limit of {limits.memory_mb} MB ({_shorten(error, 120)})"
    if "Cell outputs differ" in message and cell.stdout is not None and cell.stdout != expected:
        return WRONG, f"printed {_quote(cell.stdout)} where the worked lab prints {_quote(expected)}"
    if "Cell outputs differ" in message:
        return WRONG, "output differs from the worked lab: " + _shorten(message.split("Traceback:", 1)[-1])
    if re.fullmatch(r"NotImplementedError: Exercise \S+", error):
        return EXCEPTION, "raised NotImplementedError: not attempted yet"
    if error:
        return EXCEPTION, "raised " + _shorten(error)
    return EXCEPTION, "failed: " + _shorten(message)


def _quote(text: str) -> str:
    return '"' + _shorten(text, limit=120) + '"'


# Command line -------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("submission", metavar="SUBMISSION.ipynb")
    parser.add_argument("--lab", metavar="LAB.ipynb", help="worked lab (default: from the submission's metadata)")
    parser.add_argument("--json", metavar="OUT.json", help="also write the report as JSON")
    parser.add_argument("--cell-timeout", type=float, default=CELL_TIMEOUT, metavar="S",
                        help=f"seconds per cell (default {CELL_TIMEOUT:g})")
    parser.add_argument("--timeout", type=float, default=TOTAL_TIMEOUT, metavar="S",
                        help=f"seconds for the whole notebook (default {TOTAL_TIMEOUT:g})")
    parser.add_argument("--memory-mb", type=int, default=MEMORY_MB, metavar="M",
                        help=f"memory limit per process in MB (default {MEMORY_MB})")
    parser.add_argument("--verify", action="store_true",
                        help="for the lab's authors, with the worked lab as SUBMISSION: compare every cell's "
                             "output and run each exercise without its answer; what fails is listed as notes")
    parser.set_defaults(run=run)


def run(args) -> int:
    """Grade, print the report, write the JSON; exit code 0 if graded, 2 if not (with
    ``--verify``, 1 if the worked lab fell short: less than full marks, or any note)."""
    report = grade(args.submission, args.lab, cell_timeout=args.cell_timeout,
                   total_timeout=args.timeout, memory_mb=args.memory_mb, verify=args.verify)
    print(report.format())
    if args.json:
        try:
            Path(args.json).write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            print(f"error: cannot write {args.json}: {exc}", file=sys.stderr)
            return 2
    if report.error is not None:
        return 2
    if args.verify and (report.notes or report.score < report.max_score):
        return 1  # the worked lab did not pass its own verification
    return 0
