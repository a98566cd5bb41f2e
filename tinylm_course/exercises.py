"""The exercise edition of a lab.

A worked lab holds its exercises' solutions (see CONTRIBUTING.md).  An exercise is an
**answer cell** tagged ``answer:ID`` whose solution sits between two marker lines,

    ### BEGIN SOLUTION
    ...
    ### END SOLUTION

and one or more **check cells** tagged ``check:ID``.  The answer cell's metadata may list
**wrong answers** (``"tinylm": {"wrong": [{"why": "...", "code": "..."}]}``): plausible mistakes,
each replacing the solution regions as the stub does (``"code"`` may be a list, one piece of code
per region, for a cell with several), which ``grade --verify`` runs to show that
the checks catch them.  The exercise edition is the same
notebook with every solution region replaced by ``raise NotImplementedError("Exercise ID")``
(indented like the markers) and with the outputs of answer and check cells cleared, so
that nothing in it gives the solution away.  Everything else, including the outputs of
the other cells, is kept.

    python -m tinylm_course exercise labs/*.ipynb [-o exercises/]
"""

from __future__ import annotations

import argparse
import copy
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat

from tinylm.paths import course_root

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
ANSWER_TAG = "answer:"
CHECK_TAG = "check:"


class ExerciseError(ValueError):
    """A lab whose exercise markup is broken (unbalanced markers, missing tags...)."""


@dataclass(frozen=True)
class Exercise:
    """One exercise of a lab; cell positions are indices into ``nb.cells``."""

    id: str
    title: str
    points: float
    answer_cell: int
    check_cells: tuple[int, ...]
    wrong: tuple = ()     # (why, code) of each wrong answer; code: a string, or a tuple with one per region


def tagged_id(cell, prefix: str) -> str | None:
    """The ID of the first tag ``prefix + ID`` of a cell, or None."""
    tags = cell.get("metadata", {}).get("tags", [])
    for tag in tags if isinstance(tags, list) else []:
        if isinstance(tag, str) and tag.startswith(prefix):
            return tag[len(prefix):]
    return None


def stub(exercise_id: str) -> str:
    """The line that replaces a solution in the exercise edition."""
    return f'raise NotImplementedError("Exercise {exercise_id}")'


def strip_solution(source: str, exercise_id: str, replacement: str | list[str] | None = None) -> str:
    """Replace each ``BEGIN``/``END SOLUTION`` region of ``source`` by the stub line (or by the
    lines of ``replacement``, indented like the markers; a list gives one replacement per region,
    in order).

    Raises ExerciseError when the markers are unbalanced or absent, or a list of replacements
    does not have one per region.
    """
    if isinstance(replacement, list):
        count = sum(line.strip() == BEGIN for line in source.split("\n"))
        if len(replacement) != count or not all(isinstance(r, str) for r in replacement):
            raise ExerciseError(f"exercise {exercise_id}: a wrong answer gives {len(replacement)} pieces of code "
                                f"for {count} solution regions")
    out: list[str] = []
    indent = None  # the BEGIN marker's indentation while inside a region
    regions = 0
    for number, line in enumerate(source.split("\n"), start=1):
        marker = line.strip()
        if marker == BEGIN:
            if indent is not None:
                raise ExerciseError(f"exercise {exercise_id}: line {number}: {BEGIN} inside a solution")
            indent = line[: len(line) - len(line.lstrip())]
        elif marker == END:
            if indent is None:
                raise ExerciseError(f"exercise {exercise_id}: line {number}: {END} without {BEGIN}")
            if replacement is None:
                lines = [stub(exercise_id)]
            else:
                code = replacement[regions] if isinstance(replacement, list) else replacement
                lines = code.split("\n")
            out.extend(indent + line if line.strip() else "" for line in lines)
            indent = None
            regions += 1
        elif indent is None:
            out.append(line)
    if indent is not None:
        raise ExerciseError(f"exercise {exercise_id}: {BEGIN} without {END}")
    if regions == 0:
        raise ExerciseError(f"exercise {exercise_id}: the answer cell has no {BEGIN} / {END} markers")
    return "\n".join(out)


def _has_markers(source: str) -> bool:
    return any(line.strip() in (BEGIN, END) for line in source.split("\n"))


def list_exercises(nb) -> list[Exercise]:
    """The exercises of a lab, in the order of their answer cells.

    Raises ExerciseError for two answer cells with one ID, a check cell without an answer
    cell, a check cell before its answer or after the next exercise's answer (each exercise's
    answer and checks come together), or solution markers in a cell that is not an answer cell
    (they would leak).
    """
    answers: dict[str, int] = {}
    checks: dict[str, list[int]] = {}
    for index, cell in enumerate(nb.cells):
        answer_id = tagged_id(cell, ANSWER_TAG) if cell.cell_type == "code" else None
        check_id = tagged_id(cell, CHECK_TAG) if cell.cell_type == "code" else None
        if answer_id is not None:
            if answer_id in answers:
                raise ExerciseError(f"cells {answers[answer_id]} and {index} are both tagged "
                                    f"{ANSWER_TAG}{answer_id}")
            answers[answer_id] = index
        elif _has_markers(cell.source):
            raise ExerciseError(f"cell {index} has solution markers but no {ANSWER_TAG}ID tag")
        if check_id is not None:
            checks.setdefault(check_id, []).append(index)
    for check_id, cells in checks.items():
        if check_id not in answers:
            raise ExerciseError(f"cell {cells[0]} is tagged {CHECK_TAG}{check_id} "
                                f"but no cell is tagged {ANSWER_TAG}{check_id}")
    starts = sorted(answers.values())
    for check_id, cells in checks.items():
        start = answers[check_id]
        after = next((other for other in starts if other > start), len(nb.cells))
        if min(cells) < start or max(cells) > after:
            raise ExerciseError(f"the checks of {check_id} (cells {cells}) must come after its answer (cell "
                                f"{start}) and before the next exercise's answer (cell {after})")
    return [_exercise(nb.cells[index], exercise_id, index, checks.get(exercise_id, []))
            for exercise_id, index in answers.items()]


def _exercise(cell, exercise_id: str, index: int, check_cells: list[int]) -> Exercise:
    meta = cell.metadata.get("tinylm", {})
    wrong = meta.get("wrong", [])
    if not isinstance(wrong, list) or not all(isinstance(w, dict) and isinstance(w.get("why"), str) and w["why"]
                                              and (isinstance(w.get("code"), str) or
                                                   isinstance(w.get("code"), list) and w["code"] and
                                                   all(isinstance(c, str) for c in w["code"]))
                                              for w in wrong):
        raise ExerciseError(f"exercise {exercise_id}: metadata tinylm.wrong must be a list of "
                            '{"why": "...", "code": "..."} (or "code": ["...", ...], one per solution region)')
    for w in wrong:
        strip_solution(cell.source, exercise_id, w["code"])      # one piece of code per region, or raise
    return Exercise(id=exercise_id, title=str(meta.get("title", exercise_id)),
                    points=float(meta.get("points", 1)), answer_cell=index, check_cells=tuple(check_cells),
                    wrong=tuple((w["why"], w["code"] if isinstance(w["code"], str) else tuple(w["code"]))
                                for w in wrong))


def wrong_answer(cell, exercise: Exercise, code: str | tuple[str, ...]) -> str:
    """The answer cell with its solution replaced by a wrong answer's ``code`` (one string for
    every region, or one per region)."""
    return strip_solution(cell.source, exercise.id, code if isinstance(code, str) else list(code))


def _clear_outputs(cell) -> None:
    cell.outputs = []
    cell.execution_count = None


def make_exercise(nb):
    """Return the exercise edition of a worked lab (``nb`` itself is not changed)."""
    exercises = list_exercises(nb)
    edition = copy.deepcopy(nb)
    for exercise in exercises:
        answer = edition.cells[exercise.answer_cell]
        answer.source = strip_solution(answer.source, exercise.id)
        answer.metadata.get("tinylm", {}).pop("wrong", None)      # the author's test cases stay with the lab
        _clear_outputs(answer)
        for index in exercise.check_cells:
            _clear_outputs(edition.cells[index])
    return edition


def write_exercise(lab_path, out_dir) -> Path:
    """Write the exercise edition of ``lab_path`` into ``out_dir`` (same file name).

    The file is rewritten only when its content changes.
    """
    lab_path, out_dir = Path(lab_path), Path(out_dir)
    text = nbformat.writes(make_exercise(nbformat.read(lab_path, as_version=4)))
    text += "" if text.endswith("\n") else "\n"  # as nbformat.write does
    out_path = out_dir / lab_path.name
    if not out_path.is_file() or out_path.read_text(encoding="utf-8") != text:
        out_dir.mkdir(parents=True, exist_ok=True)
        out_path.write_text(text, encoding="utf-8")
    return out_path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("labs", nargs="+", metavar="LAB.ipynb", help="worked labs")
    parser.add_argument("-o", "--out-dir", help="where to write them (default: <course root>/exercises)")
    parser.set_defaults(run=run)


def run(args) -> int:
    """Write the exercise edition of each lab; exit code 1 if any lab failed."""
    try:
        out_dir = Path(args.out_dir) if args.out_dir else course_root() / "exercises"
    except FileNotFoundError as exc:
        print(f"error: {exc}; or pass -o DIR", file=sys.stderr)
        return 2
    failed = 0
    for lab in args.labs:
        try:
            print(f"{lab} -> {write_exercise(lab, out_dir)}")
        except (OSError, ValueError) as exc:
            print(f"error: {lab}: {exc}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0
