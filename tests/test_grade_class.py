"""Grading a whole class: several notebooks or a folder, side by side, into a CSV and feedback files.

The class is Lab 31 (the fastest lab with three exercises) as five students might hand it in:
``full`` (the worked lab), ``empty`` (the exercise edition untouched), ``partial`` (only exercise 2
answered), ``broken`` (a notebook cut short: not valid JSON) and ``loop`` (exercise 1 loops
forever, the others answered).  :func:`make_class` makes them from the lab as it is now, so they
never go stale; ``python tests/test_grade_class.py DIR`` writes them into DIR, to try the grader
by hand (chapters/teaching.md shows a run on them).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from tinylm_course import grading
from tinylm_course.exercises import ANSWER_TAG, list_exercises, make_exercise, tagged_id

ROOT = Path(__file__).resolve().parent.parent
LAB = ROOT / "labs" / "lab31_vector_index.ipynb"
LOOP = "def cosine_top_k(vectors, queries, k):\n    while True:      # never returns\n        pass"
ANSWER_TIMEOUT = 5
"""Seconds each answer may run in the class test: Lab 31's answers and the lab's cells after them
take milliseconds (results/lab_budget.json: the whole lab runs in about 3 s), so 5 s is ample for
an honest answer and stops the looping one quickly."""


def make_class(lab_path: Path = LAB) -> dict[str, bytes]:
    """The five submissions, by file name (outputs cleared: the grader never reads them)."""
    worked = nbformat.read(lab_path, as_version=4)
    solutions = {ex.id: worked.cells[ex.answer_cell].source for ex in list_exercises(worked)}

    def edition(answers: dict[str, str]) -> bytes:
        nb = make_exercise(worked)
        for cell in nb.cells:
            exercise_id = tagged_id(cell, ANSWER_TAG)
            if exercise_id in answers:
                cell.source = answers[exercise_id]
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
            cell.metadata.pop("execution", None)
        return nbformat.writes(nb).encode() + b"\n"

    full = edition(solutions)
    return {"full.ipynb": full,
            "empty.ipynb": edition({}),
            "partial.ipynb": edition({"ex2": solutions["ex2"]}),
            "broken.ipynb": full[: len(full) // 2],          # a file cut short in the upload
            "loop.ipynb": edition(dict(solutions, ex1=LOOP))}


# The whole class, graded by the command ----------------------------------------------------

EXPECTED = {
    # file: [(exercise, points, max_points, status)]
    "broken.ipynb": [("ex1", "0", "1", "invalid notebook"), ("ex2", "0", "1", "invalid notebook"),
                     ("ex3", "0", "1", "invalid notebook")],
    "empty.ipynb": [("ex1", "0", "1", "not attempted"), ("ex2", "0", "1", "not attempted"),
                    ("ex3", "0", "1", "not attempted")],
    "full.ipynb": [("ex1", "1", "1", "passed"), ("ex2", "1", "1", "passed"), ("ex3", "1", "1", "passed")],
    "loop.ipynb": [("ex1", "0", "1", "timeout"), ("ex2", "1", "1", "passed"), ("ex3", "1", "1", "passed")],
    "partial.ipynb": [("ex1", "0", "1", "not attempted"), ("ex2", "1", "1", "passed"),
                      ("ex3", "0", "1", "not attempted")],
}


@pytest.fixture(scope="module")
def graded_class(tmp_path_factory):
    """The five submissions copied into a folder, graded by the command with --jobs 2."""
    work = tmp_path_factory.mktemp("class")
    folder = work / "submissions"
    folder.mkdir()
    for name, data in make_class().items():
        (folder / name).write_bytes(data)
    before = {path.name: path.read_bytes() for path in folder.iterdir()}
    command = [sys.executable, "-m", "tinylm_course", "grade", str(folder), "--lab", "31", "--jobs", "2",
               "--answer-timeout", str(ANSWER_TIMEOUT), "--csv", str(work / "grades.csv"),
               "--feedback", str(work / "feedback"), "--json", str(work / "reports.json")]
    start = time.monotonic()
    done = subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    seconds = time.monotonic() - start
    print(done.stdout, done.stderr, f"graded in {seconds:.1f} s", sep="\n")
    return {"work": work, "folder": folder, "before": before, "done": done, "seconds": seconds}


def rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_the_csv_has_one_row_per_submission_and_exercise(graded_class):
    table = rows(graded_class["work"] / "grades.csv")
    assert list(table[0]) == ["file", "lab", "exercise", "points", "max_points", "status"]
    folder = graded_class["folder"]
    expected = [{"file": str(folder / name), "lab": "lab31_vector_index", "exercise": ex, "points": points,
                 "max_points": most, "status": status}
                for name in sorted(EXPECTED) for ex, points, most, status in EXPECTED[name]]
    assert table == expected, graded_class["done"].stdout


def test_the_command_says_one_could_not_be_graded(graded_class):
    done = graded_class["done"]
    assert done.returncode == 2, done.stderr          # broken.ipynb could not be graded
    assert "broken.ipynb is not valid JSON" in done.stdout
    assert "5 submissions:" in done.stdout and "not graded (invalid notebook)" in done.stdout


def test_the_loop_was_stopped_at_its_answer_time_limit(graded_class):
    reports = {Path(r["submission"]).name: r for r in json.loads((graded_class["work"] / "reports.json").read_text())}
    ex1 = reports["loop.ipynb"]["exercises"][0]
    assert ex1["reason"] == f"answer took longer than {ANSWER_TIMEOUT} s, its budget"
    assert reports["loop.ipynb"]["seconds"] < 60


def test_no_cascade_from_an_exercise_not_attempted(graded_class):
    """partial.ipynb: ex1 not attempted costs ex1's point only; the reasons name no cell numbers."""
    reports = {Path(r["submission"]).name: r for r in json.loads((graded_class["work"] / "reports.json").read_text())}
    for name in ("empty.ipynb", "partial.ipynb"):
        for ex in reports[name]["exercises"]:
            assert "NameError" not in ex["reason"] and "cell" not in ex["reason"].replace("answer cell", "")
    assert [ex["status"] for ex in reports["partial.ipynb"]["exercises"]] == ["not attempted", "passed",
                                                                                 "not attempted"]


def test_each_submission_gets_its_feedback_and_the_submissions_are_untouched(graded_class):
    folder, feedback = graded_class["folder"], graded_class["work"] / "feedback"
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == graded_class["before"]
    assert sorted(path.name for path in feedback.iterdir()) == [
        "broken.md", "empty.md", "full.md", "loop.md", "partial.md"]
    full = (feedback / "full.md").read_text(encoding="utf-8")
    assert "# Feedback on full.ipynb" in full and "**Score: 3 / 3**" in full
    assert "| ex1 Exact top-k by cosine similarity | 1 / 1 | passed |" in full
    empty = (feedback / "empty.md").read_text(encoding="utf-8")
    assert "**Score: 0 / 3**" in empty
    assert "| not attempted | not attempted: the answer cell still holds the exercise edition's placeholder |" in empty
    loop = (feedback / "loop.md").read_text(encoding="utf-8")
    assert f"| 0 / 1 | timeout | answer took longer than {ANSWER_TIMEOUT} s, its budget |" in loop
    assert "**Score: 2 / 3**" in loop
    broken = (feedback / "broken.md").read_text(encoding="utf-8")
    assert "**This notebook could not be graded** (invalid notebook): broken.ipynb is not valid JSON" in broken


def test_the_class_grades_in_reasonable_time(graded_class):
    assert graded_class["seconds"] < 120, graded_class["seconds"]


# The pieces, cheaply -------------------------------------------------------------------------

def labs_dir(tmp_path) -> Path:
    folder = tmp_path / "labs"
    folder.mkdir()
    for name in ("lab03_ladder", "lab09_ladder", "lab31_vector_index", "lab31_other"):
        (folder / f"{name}.ipynb").write_text("{}")
    return folder


@pytest.mark.parametrize("value, found", [("31", None), ("9", "lab09_ladder"), ("lab09", "lab09_ladder"),
                                          ("lab9", "lab09_ladder"), ("lab03_ladder", "lab03_ladder"),
                                          ("3", "lab03_ladder")])
def test_lab_names(tmp_path, value, found):
    folder = labs_dir(tmp_path)
    if found is None:
        with pytest.raises(ValueError, match="more than one lab"):
            grading.find_lab(value, folder)
    else:
        assert grading.find_lab(value, folder) == folder / f"{found}.ipynb"


@pytest.mark.parametrize("value, words", [("12", "no lab"), ("lab12_nothing", "no lab"), ("ladder", "give a lab as"),
                                          ("missing/lab.ipynb", "no such notebook")])
def test_lab_names_that_do_not_fit(tmp_path, value, words):
    with pytest.raises(ValueError, match=words):
        grading.find_lab(value, labs_dir(tmp_path))


def test_the_real_labs_by_number():
    assert grading.find_lab("31") == ROOT / "labs" / "lab31_vector_index.ipynb"
    assert grading.find_lab("lab31") == grading.find_lab("lab31_vector_index") == grading.find_lab("31")
    assert grading.find_lab(str(LAB)) == LAB


def test_submissions_from_folders_and_files(tmp_path):
    (tmp_path / "class" / "alice").mkdir(parents=True)
    (tmp_path / "class" / ".ipynb_checkpoints").mkdir()
    for name in ("class/b.ipynb", "class/a.ipynb", "class/alice/lab.ipynb", "class/.ipynb_checkpoints/a-checkpoint.ipynb",
                 "class/notes.txt", "late.ipynb"):
        (tmp_path / name).write_text("{}")
    found = grading.collect_submissions([tmp_path / "class", tmp_path / "late.ipynb", tmp_path / "class" / "a.ipynb"])
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "class/a.ipynb", "class/alice/lab.ipynb", "class/b.ipynb", "late.ipynb"]
    (tmp_path / "none").mkdir()
    with pytest.raises(ValueError, match="holds no notebooks"):
        grading.collect_submissions([tmp_path / "none"])


def report(name="s.ipynb", statuses=("passed", "failed"), error=None, kind=None, lab="lab31_vector_index"):
    r = grading.Report(submission=name, lab=lab, error=error, error_kind=kind)
    for n, verdict in enumerate(statuses, start=1):
        points = 1.0 if verdict == "passed" else 0.0
        r.exercises.append(grading.ExerciseResult(f"ex{n}", f"Title {n}", 1.0, points, verdict, "", verdict))
    return r


def test_csv_rows_and_writing(tmp_path):
    reports = [report("a.ipynb"), report("b.ipynb", ("invalid notebook",) * 2, "b.ipynb is not valid JSON", "invalid notebook"),
               report("c.txt", (), "c.txt is not a notebook", "invalid notebook", lab=None)]
    grading.write_csv(reports, tmp_path / "grades.csv")
    assert (tmp_path / "grades.csv").read_text(encoding="utf-8").splitlines() == [
        "file,lab,exercise,points,max_points,status",
        "a.ipynb,lab31_vector_index,ex1,1,1,passed",
        "a.ipynb,lab31_vector_index,ex2,0,1,failed",
        "b.ipynb,lab31_vector_index,ex1,0,1,invalid notebook",
        "b.ipynb,lab31_vector_index,ex2,0,1,invalid notebook",
        "c.txt,,,0,,invalid notebook"]


def cell(outcome="failed", error=None, message=""):
    return grading.CellResult(outcome, message=message, error=error)


@pytest.mark.parametrize("role, result, verdict", [
    ("check", cell(error="AssertionError: not the exact top-10"), "failed"),
    ("check", cell(error="SubmissionError: recall() raised ZeroDivisionError: division by zero"), "error"),
    ("answer", cell(error="SubmissionError: raised SyntaxError: invalid syntax (line 1)"), "error"),
    ("answer", cell(error="SubmissionError: took longer than 5 s, its budget"), "timeout"),
    ("answer", cell(error="SubmissionError: made code cell 5 of the lab, which uses it, raise "
                          "NotImplementedError: Exercise ex1"), "not attempted"),
    ("check", cell(error="NotImplementedError: Exercise ex1"), "not attempted"),
    ("check", cell(message="Cell outputs differ"), "failed"),
    ("answer", cell(outcome="skipped"), "not run"),
    ("answer", cell(error="SubmissionError: stopped (it exited, or was killed)"), "error"),
], ids=["assertion", "answer-raised-in-check", "syntax", "timeout", "stub-in-lab-code", "stub", "output", "skipped",
        "exited"])
def test_status_mapping(role, result, verdict):
    ex = grading.ExerciseResult("ex1", "Title", 1.0)
    runs = [("answer", cell("passed"), "")] if role == "check" else []
    grading._judge(ex, runs + [(role, result, "")], False, grading.Limits())
    assert ex.verdict == verdict, ex
    assert verdict in grading.VERDICTS and "code cell" not in ex.reason


def test_missing_and_unattempted_answers():
    ex = grading.ExerciseResult("ex1", "Title", 1.0)
    grading._judge(ex, [], True, grading.Limits())
    assert (ex.status, ex.verdict) == ("missing", "missing")
    ex = grading.ExerciseResult("ex1", "Title", 1.0)
    grading._judge(ex, [("answer", cell("passed"), ""), ("check", cell("passed"), "")], False, grading.Limits(),
                   unattempted=True)       # a check that passes without the answer gives no point
    assert (ex.points, ex.status) == (0.0, "not attempted")


STUB = 'def f(x):\n    """Doc."""\n    raise NotImplementedError("Exercise ex1")\n\n\nprint(f(2))'


@pytest.mark.parametrize("answer, placeholder", [
    (STUB, True),
    (STUB.replace('raise NotImplementedError("Exercise ex1")', "..."), True),
    (STUB.replace('raise NotImplementedError("Exercise ex1")', "pass  # TODO"), True),
    (STUB.replace('raise NotImplementedError("Exercise ex1")', "# later"), True),
    (STUB + "\n\n", True),
    (STUB.replace('raise NotImplementedError("Exercise ex1")', "return x + 1"), False),
    (STUB.replace('raise NotImplementedError("Exercise ex1")', "...\n    return 0"), False),
    ("print('hello')", False),
    (None, False),
], ids=["stub", "ellipsis", "pass", "comment", "blank-lines", "answered", "half", "other", "deleted"])
def test_placeholder_answers(answer, placeholder):
    assert grading._is_placeholder(answer, STUB) is placeholder


def test_dependencies_between_exercises():
    lab = new_notebook(cells=[
        new_code_cell("import numpy as np"),
        new_code_cell("def unit(v):\n    ### BEGIN SOLUTION\n    return v / np.linalg.norm(v)\n    ### END SOLUTION",
                      metadata={"tags": ["answer:ex1"], "tinylm": {"title": "Unit vectors"}}),
        new_code_cell("assert unit(np.ones(4)).sum() == 2", metadata={"tags": ["check:ex1"]}),
        new_markdown_cell("Now cosine."),
        new_code_cell("def cosine(a, b):\n    ### BEGIN SOLUTION\n    return unit(a) @ unit(b)\n    ### END SOLUTION",
                      metadata={"tags": ["answer:ex2"], "tinylm": {"title": "Cosine"}}),
        new_code_cell("assert cosine(np.ones(2), np.ones(2)) == 1", metadata={"tags": ["check:ex2"]}),
        new_code_cell("def mean(x):\n    ### BEGIN SOLUTION\n    return sum(x) / len(x)\n    ### END SOLUTION",
                      metadata={"tags": ["answer:ex3"], "tinylm": {"title": "Mean"}}),
        new_code_cell("assert mean([1, 3]) == 2", metadata={"tags": ["check:ex3"]}),
    ])
    exercises = list_exercises(lab)
    assert grading.exercise_dependencies(lab, exercises) == {"ex2": [("ex1", ["unit"])]}
    results = [grading.ExerciseResult("ex1", "Unit vectors", 1, 0, "not attempted", "", "not attempted"),
               grading.ExerciseResult("ex2", "Cosine", 1, 1, "passed", "", "passed"),
               grading.ExerciseResult("ex3", "Mean", 1, 1, "passed", "", "passed")]
    assert grading.dependency_notes(lab, exercises, results) == [
        "ex2 (Cosine) uses `unit` from ex1 (Unit vectors), which is not attempted: ex2 was graded with the "
        "worked lab's answer to ex1, so it lost no points for it"]


def test_feedback_names_never_collide(tmp_path):
    alice, bob = tmp_path / "alice" / "lab31.ipynb", tmp_path / "bob" / "lab31.ipynb"
    assert grading.feedback_names([alice, tmp_path / "x.ipynb"]) == {alice: "lab31.md", tmp_path / "x.ipynb": "x.md"}
    assert grading.feedback_names([alice, bob]) == {alice: "alice__lab31.md", bob: "bob__lab31.md"}


def test_outputs_never_land_on_or_next_to_submissions(tmp_path, capsys):
    folder = tmp_path / "class"
    folder.mkdir()
    (folder / "a.ipynb").write_text("{}")
    assert grading_cli(folder, "--lab", "31", "--feedback", folder) == 2
    assert "holds submissions" in capsys.readouterr().err
    assert grading_cli(folder / "a.ipynb", "--lab", "31", "--csv", folder / "a.ipynb") == 2
    assert "is one of the submissions" in capsys.readouterr().err
    assert [p.name for p in folder.iterdir()] == ["a.ipynb"] and (folder / "a.ipynb").read_text() == "{}"


def test_broken_submissions_get_rows_without_running_anything(tmp_path, capsys):
    """Not a notebook, not JSON, the wrong lab: a row per exercise, a feedback file, no kernel."""
    folder = tmp_path / "class"
    folder.mkdir()
    (folder / "essay.ipynb").write_text("My answers are in the e-mail.")
    (folder / "cut.ipynb").write_text('{"cells": [')
    other = make_exercise(nbformat.read(ROOT / "labs" / "lab30_retrieval.ipynb", as_version=4))
    nbformat.write(other, folder / "other_lab.ipynb")
    start = time.monotonic()
    assert grading_cli(folder, "--lab", "lab31_vector_index", "--csv", tmp_path / "g.csv",
                       "--feedback", tmp_path / "fb") == 2
    assert time.monotonic() - start < 20
    statuses = {(row["file"].rsplit("/", 1)[-1], row["exercise"]): row["status"] for row in rows(tmp_path / "g.csv")}
    assert statuses == {(name, ex): status for name, status in [("cut.ipynb", "invalid notebook"),
                                                                ("essay.ipynb", "invalid notebook"),
                                                                ("other_lab.ipynb", "wrong lab")]
                        for ex in ("ex1", "ex2", "ex3")}
    wrong = (tmp_path / "fb" / "other_lab.md").read_text(encoding="utf-8")
    assert "this submission is for lab lab30_retrieval, not lab31_vector_index" in wrong
    assert "3 submissions:" in capsys.readouterr().out


def test_bad_arguments(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert grading_cli(tmp_path / "empty", "--lab", "31") == 2
    assert "holds no notebooks" in capsys.readouterr().err
    assert grading_cli(tmp_path / "x.ipynb", "--lab", "99") == 2
    assert "no lab in" in capsys.readouterr().err


def grading_cli(*argv):
    import argparse

    parser = argparse.ArgumentParser()
    grading.add_arguments(parser)
    args = parser.parse_args([str(arg) for arg in argv])
    return args.run(args)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/test_grade_class.py DIR   (writes the five example submissions into DIR)")
    folder = Path(sys.argv[1])
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in make_class().items():
        (folder / name).write_bytes(data)
        print(folder / name)
