"""The grader, one test per kind of bad submission, and the repository's labs graded for real.

Every grading test checks that the submission file is left byte for byte as it was.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

from tinylm_course import grading
from tinylm_course.exercises import ANSWER_TAG, CHECK_TAG, list_exercises, make_exercise, tagged_id
from tinylm_course.nbval_plugin import SANITIZE_FILE

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = Path(__file__).parent / "fixtures" / "grading_lab.ipynb"
LABS = sorted((ROOT / "labs").glob("*.ipynb"))
CELL_TIMEOUT = 3  # seconds: the fixture's cells take milliseconds

LAB = nbformat.read(FIXTURE, as_version=4)
SOLUTIONS = {ex.id: LAB.cells[ex.answer_cell].source for ex in list_exercises(LAB)}


def lab_params():
    """The labs, longest first by their measured budget (results/lab_budget.json), so that two
    workers finish together."""
    try:
        measured = json.loads((ROOT / "results" / "lab_budget.json").read_text())["labs"]
    except (OSError, ValueError, KeyError):
        measured = {}
    labs = sorted(LABS, key=lambda lab: -((measured.get(lab.stem) or {}).get("seconds") or 0))
    return [pytest.param(lab, id=lab.stem) for lab in labs] or [
        pytest.param(None, marks=pytest.mark.skip(reason="no labs/*.ipynb in the repository yet"))]


def submission(tmp_path, answers=(), edit=None, name="submission.ipynb"):
    """The fixture's exercise edition with the solutions filled in, except ``answers``
    (id -> code), changed by ``edit(nb)``, written to ``tmp_path / name``."""
    nb = make_exercise(LAB)
    for cell in nb.cells:
        exercise_id = tagged_id(cell, ANSWER_TAG)
        if exercise_id:
            cell.source = dict(SOLUTIONS, **dict(answers))[exercise_id]
    if edit:
        edit(nb)
    path = tmp_path / name
    nbformat.write(nb, path)
    return path


def graded(path, lab=FIXTURE, **limits):
    """Grade ``path``, checking that its bytes are unchanged."""
    before = path.read_bytes()
    report = grading.grade(path, lab, cell_timeout=limits.pop("cell_timeout", CELL_TIMEOUT), **limits)
    assert path.read_bytes() == before, "the grader changed the submission"
    print(report.format())
    return report


def graded_with_ex4(tmp_path, lab, answer, **limits):
    """Grade the exercise edition of ``lab`` (the fixture with an exercise ex4 added), with the
    fixture's solutions and ``answer`` for ex4."""
    nb = make_exercise(nbformat.read(lab, as_version=4))
    for cell in nb.cells:
        exercise_id = tagged_id(cell, ANSWER_TAG)
        if exercise_id:
            cell.source = dict(SOLUTIONS, ex4=answer)[exercise_id]
    path = tmp_path / "submission.ipynb"
    nbformat.write(nb, path)
    return graded(path, lab, **limits)


def outcome(report):
    """{exercise id: (points, status)}"""
    return {ex.id: (ex.points, ex.status) for ex in report.exercises}


def reason(report, exercise_id):
    return next(ex.reason for ex in report.exercises if ex.id == exercise_id)


def cells_tagged(nb, tag):
    return [cell for cell in nb.cells if tag in cell.metadata.get("tags", [])]


def run_cli(*argv):
    parser = argparse.ArgumentParser()
    grading.add_arguments(parser)
    args = parser.parse_args([str(arg) for arg in argv])
    return args.run(args)


class TestFixtureLab:
    """The fixture lab itself, its exercise edition, and where the lab is found."""

    def test_worked_lab_scores_full_marks(self, tmp_path, capsys):
        sub = tmp_path / "worked.ipynb"
        sub.write_bytes(FIXTURE.read_bytes())
        assert run_cli(sub, "--lab", FIXTURE, "--json", tmp_path / "report.json", "--cell-timeout", CELL_TIMEOUT) == 0
        assert sub.read_bytes() == FIXTURE.read_bytes()
        data = json.loads((tmp_path / "report.json").read_text())
        assert (data["graded"], data["score"], data["max_score"], data["notes"]) == (True, 4, 4, [])
        assert [ex["status"] for ex in data["exercises"]] == ["passed"] * 3
        assert "Score: 4/4" in capsys.readouterr().out

    def test_exercise_edition_scores_zero(self, tmp_path):
        path = tmp_path / "edition.ipynb"
        nbformat.write(make_exercise(LAB), path)
        report = graded(path)
        assert report.error is None and report.score == 0 and report.max_score == 4
        assert all("not attempted" in ex.reason for ex in report.exercises)

    def test_lab_found_from_metadata(self, tmp_path, monkeypatch):
        root = tmp_path / "course"
        (root / "labs").mkdir(parents=True)
        (root / "tinylm").mkdir()
        (root / "_toc.yml").write_text("root: intro\n")
        (root / "labs" / "grading_lab.ipynb").write_bytes(FIXTURE.read_bytes())
        monkeypatch.setenv("TINYLM_ROOT", str(root))
        report = graded(submission(tmp_path), lab=None)
        assert (report.lab, report.score) == ("grading_lab", 4)


class TestPrivateChecks:
    """README: a teacher adds check cells to a private copy of the worked lab and grades with
    ``--lab``; an answer that passes the public checks but not the private ones loses the points."""

    MEAN_OF_TWO = "def mean(xs):\n    return (xs[0] + xs[-1]) / 2"     # right on the public checks only

    def private_lab(self, tmp_path):
        lab = nbformat.read(FIXTURE, as_version=4)
        extra = new_code_cell("assert mean([1, 2, 6]) == 3\nprint('private check')", metadata={"tags": ["check:ex1"]},
                              outputs=[new_output("stream", name="stdout", text="private check\n")], execution_count=1)
        lab.cells.insert(5, extra)
        path = tmp_path / "private_copy.ipynb"
        nbformat.write(lab, path)
        return path

    def test_the_public_lab_passes_it_and_the_private_copy_does_not(self, tmp_path):
        sub = submission(tmp_path, {"ex1": self.MEAN_OF_TWO})
        assert outcome(graded(sub))["ex1"] == (2, "passed")
        assert outcome(graded(sub, lab=self.private_lab(tmp_path)))["ex1"][0] == 0

    def test_the_worked_answer_passes_the_private_copy(self, tmp_path):
        report = graded(submission(tmp_path), lab=self.private_lab(tmp_path))
        assert report.score == report.max_score == 4 and report.notes == [], report.format()


class TestUngradable:
    """Files that cannot be graded at all: a report, score 0, exit code 2."""

    @pytest.mark.parametrize("content, words", [
        (b"print('my answers')\n", "not a notebook"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "not a notebook"),
        (b'{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5', "not valid JSON"),
        (b'{"answers": [1, 2, 3]}', "not a Jupyter notebook"),
        (b'{"worksheets": [], "metadata": {}, "nbformat": 3, "nbformat_minor": 0, "cells": []}', "version 3 notebook"),
    ], ids=["python", "binary", "invalid-json", "other-json", "nbformat-3"])
    def test_unreadable_submission(self, tmp_path, capsys, content, words):
        path = tmp_path / "submission.ipynb"
        path.write_bytes(content)
        report = graded(path)
        assert words in report.error and report.score == 0
        assert run_cli(path, "--lab", FIXTURE) == 2
        assert words in capsys.readouterr().out

    def test_missing_file(self, tmp_path):
        report = grading.grade(tmp_path / "nothing.ipynb", FIXTURE)
        assert "cannot read" in report.error

    def test_submission_for_another_lab(self, tmp_path, capsys):
        def other_lab(nb):
            nb.metadata["tinylm"]["lab"] = "lab07_transformers"
        path = submission(tmp_path, edit=other_lab)
        report = graded(path)
        assert "this submission is for lab lab07_transformers, not grading_lab" in report.error
        assert report.score == 0
        assert run_cli(path, "--lab", FIXTURE) == 2

    def test_submission_without_lab_name(self, tmp_path):
        def anonymous(nb):
            del nb.metadata["tinylm"]
        path = submission(tmp_path, edit=anonymous)
        assert "pass --lab" in graded(path, lab=None).error
        report = graded(path)
        assert report.score == 4 and "does not say which lab" in report.notes[0]


class TestAnswerCells:
    """Answer cells deleted, untagged or split."""

    def test_answer_cell_deleted(self, tmp_path):
        def delete_ex2(nb):
            nb.cells = [cell for cell in nb.cells if tagged_id(cell, ANSWER_TAG) != "ex2"]
        report = graded(submission(tmp_path, edit=delete_ex2))
        assert outcome(report) == {"ex1": (2, "passed"), "ex2": (0, "missing"), "ex3": (1, "passed")}
        assert reason(report, "ex2") == "answer cell missing"

    def test_answer_tag_removed_found_by_cell_id(self, tmp_path):
        def untag_ex1(nb):
            cell = next(cell for cell in nb.cells if tagged_id(cell, ANSWER_TAG) == "ex1")
            cell.metadata["tags"] = []
        report = graded(submission(tmp_path, edit=untag_ex1))
        assert report.score == 4
        assert any("ex1" in note and "found by its cell id" in note for note in report.notes)

    def test_answer_split_over_two_tagged_cells(self, tmp_path):
        def split_ex3(nb):
            index = next(i for i, cell in enumerate(nb.cells) if tagged_id(cell, ANSWER_TAG) == "ex3")
            helper = new_code_cell("def pairs(text):\n    return zip(text, text[1:])", metadata={"tags": ["answer:ex3"]})
            nb.cells.insert(index, helper)
        answers = {"ex3": "def count_bigrams(text):\n    counts = {}\n    for a, b in pairs(text):\n"
                          "        counts[a + b] = counts.get(a + b, 0) + 1\n    return counts"}
        assert graded(submission(tmp_path, answers, edit=split_ex3)).score == 4


class TestFailingAnswers:
    """Answers that raise, print wrong, loop, flood, exit or eat memory."""

    def test_answer_raises(self, tmp_path):
        answers = {"ex2": "def softmax(z):\n    raise ValueError('negative temperature')"}
        report = graded(submission(tmp_path, answers))
        assert outcome(report) == {"ex1": (2, "passed"), "ex2": (0, "exception"), "ex3": (1, "passed")}
        assert reason(report, "ex2") == "check failed: softmax() raised ValueError: negative temperature"

    def test_wrong_answer_output_differs(self, tmp_path):
        report = graded(submission(tmp_path, {"ex3": "def count_bigrams(text):\n    return {'ab': 1}"}))
        assert outcome(report)["ex3"] == (0, "wrong output")
        assert reason(report, "ex3") == "check printed \"[('ab', 1)]\" where the worked lab prints \"[('ab', 2), ('ba', 1)]\""

    def test_infinite_loop_times_out_and_later_exercises_are_graded(self, tmp_path):
        report = graded(submission(tmp_path, {"ex1": "while True:\n    pass"}))
        assert outcome(report) == {"ex1": (0, "timeout"), "ex2": (1, "passed"), "ex3": (1, "passed")}
        assert reason(report, "ex1") == f"answer took longer than {0.9 * CELL_TIMEOUT:.0f} s, its budget"

    def test_a_function_that_loops_in_a_check_times_out(self, tmp_path):
        report = graded(submission(tmp_path, {"ex3": "def count_bigrams(text):\n    while True:\n        pass"}))
        assert outcome(report)["ex3"] == (0, "timeout")
        assert reason(report, "ex3").startswith("check failed: count_bigrams() took longer than")

    def test_total_timeout_stops_everything(self, tmp_path):
        report = graded(submission(tmp_path, {"ex1": "while True:\n    pass"}), cell_timeout=60, total_timeout=4)
        assert "ran longer than 4 s in all" in report.error and report.score == 0
        assert report.seconds < 15

    def test_huge_output_is_cut(self, tmp_path):
        """What an answer prints never reaches the grader (its process prints into nothing); a check
        printing a huge value the answer returned is cut."""
        answers = {
            "ex1": SOLUTIONS["ex1"] + "\n\nfor i in range(10**5):\n    print(i)",
            "ex3": "def count_bigrams(text):\n    print('spam ' * 10**7)\n    return {'spam' * 10**6: 1}",
        }
        report = graded(submission(tmp_path, answers))
        assert outcome(report) == {"ex1": (2, "passed"), "ex2": (1, "passed"), "ex3": (0, "wrong output")}
        assert reason(report, "ex1") == ""
        assert "check's printed output was too long" in reason(report, "ex3")

    @pytest.mark.parametrize("code", ["import os\nos._exit(1)", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"],
                             ids=["os._exit", "SIGKILL"])
    def test_code_that_exits_stops_only_its_own_process(self, tmp_path, code):
        report = graded(submission(tmp_path, {"ex2": code}))
        assert outcome(report) == {"ex1": (2, "passed"), "ex2": (0, "stopped"), "ex3": (1, "passed")}
        assert reason(report, "ex2") == "answer stopped (it exited, or was killed)"

    def test_code_that_kills_the_kernel_raises_no_score(self, tmp_path):
        report = graded(submission(tmp_path, {"ex2": "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)"}))
        assert outcome(report) == {"ex1": (2, "passed"), "ex2": (0, "kernel died"), "ex3": (0, "not run")}
        assert "kernel had stopped" in reason(report, "ex3")

    def test_memory_bomb(self, tmp_path):
        answers = {"ex2": "b = bytearray(8 * 2**30)\n" + SOLUTIONS["ex2"]}
        report = graded(submission(tmp_path, answers), memory_mb=2048)
        assert outcome(report) == {"ex1": (2, "passed"), "ex2": (0, "memory"), "ex3": (1, "passed")}
        assert "memory limit of 2048 MB" in reason(report, "ex2")


    def test_later_cells_of_the_lab_run_with_the_worked_answer(self, tmp_path):
        """A wrong answer costs its own exercise and nothing more: the lab goes on with the worked
        answer (here a cell after the exercises that uses mean)."""
        lab = nbformat.read(FIXTURE, as_version=4)
        lab.cells.append(new_code_cell("print(mean([4.0]))", execution_count=10,
                                       outputs=[new_output("stream", name="stdout", text="4.0\n")]))
        nbformat.write(lab, tmp_path / "lab.ipynb")
        report = graded(submission(tmp_path, {"ex1": "def mean(xs):\n    return xs[1]"}), lab=tmp_path / "lab.ipynb")
        assert outcome(report) == {"ex1": (0, "wrong output"), "ex2": (1, "passed"), "ex3": (1, "passed")}
        assert report.notes == []

    def test_a_cell_after_the_answer_that_fails_with_it_is_the_answers_failure(self, tmp_path):
        lab = nbformat.read(FIXTURE, as_version=4)
        lab.cells.insert(4, new_code_cell("first_mean = mean([])"))      # between ex1's answer and its check
        nbformat.write(lab, tmp_path / "lab.ipynb")
        report = graded(submission(tmp_path, {"ex1": "def mean(xs):\n    return xs[0]"}), lab=tmp_path / "lab.ipynb")
        assert outcome(report)["ex1"] == (0, "exception")
        assert reason(report, "ex1") == ("answer made the lab's code that runs after it (and uses it) raise "
                                          "IndexError: list index out of range")


class TestIgnored:
    """What the submission changed that the grader ignores."""

    def test_edited_check_cells_are_ignored(self, tmp_path):
        def cheat(nb):
            for cell in cells_tagged(nb, f"{CHECK_TAG}ex1"):
                cell.source = "print('1.750')"
        report = graded(submission(tmp_path, {"ex1": "def mean(xs):\n    return 0"}, edit=cheat))
        assert outcome(report)["ex1"] == (0, "exception")
        assert reason(report, "ex1").startswith("check raised AssertionError")
        assert any("ex1: the check cells were edited" in note for note in report.notes)

    def test_deleted_check_cells_are_noted_and_the_labs_are_used(self, tmp_path):
        def delete(nb):
            nb.cells = [cell for cell in nb.cells if tagged_id(cell, CHECK_TAG) != "ex2"]
        report = graded(submission(tmp_path, {"ex2": "def softmax(z):\n    return z"}, edit=delete))
        assert outcome(report)["ex2"][0] == 0
        assert any("ex2: the check cells were edited or removed" in note for note in report.notes)

    def test_extra_cells_are_ignored(self, tmp_path):
        def scribble(nb):
            nb.cells.insert(1, new_code_cell("raise SystemExit('my scratch cell')"))
            nb.cells.append(new_code_cell("mean = None"))
        report = graded(submission(tmp_path, edit=scribble))
        assert report.score == 4
        assert report.notes == ["2 added or changed code cell(s) outside the answer cells were ignored"]


class TestNbvalPlugin:
    """The nbval plugin on its own, in a real nbval run."""

    def test_nbval_plugin_on_the_fixture_and_after_a_timeout(self, tmp_path):
        """A real nbval run: the fixture passes; after a timed-out cell, later cells run normally;
        stderr and memory addresses do not count."""
        lab = tmp_path / "grading_lab.ipynb"
        lab.write_bytes(FIXTURE.read_bytes())
        stream = new_output("stream", name="stdout", text="after\n")
        noisy = new_output("stream", name="stderr", text="a warning from another machine\n")
        nbformat.write(new_notebook(cells=[
            new_code_cell("while True:\n    pass", execution_count=1, metadata={"tags": ["nbval-ignore-output"]}),
            new_code_cell("print('after')", execution_count=2, outputs=[stream, noisy]),
            new_code_cell("object()", execution_count=3, outputs=[new_output(
                "execute_result", data={"text/plain": "<object at 0x7f0000000000>"}, execution_count=3)]),
        ]), tmp_path / "loop.ipynb")
        (tmp_path / "pytest.ini").write_text("[pytest]\n")
        env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "nbval.plugin", "-p", "tinylm_course.nbval_plugin",
             "--nbval", "--nbval-current-env", "--nbval-sanitize-with", str(SANITIZE_FILE),
             "--nbval-cell-timeout", "2", "-p", "no:cacheprovider", "-c", str(tmp_path / "pytest.ini"),
             "--rootdir", str(tmp_path), "-q", "-rA", "--color=no", str(lab), str(tmp_path / "loop.ipynb")],
            cwd=tmp_path, env=dict(env, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1"), capture_output=True, text=True,
            timeout=120)
        assert "1 failed, 11 passed" in run.stdout, run.stdout
        assert "FAILED loop.ipynb::Cell 0" in run.stdout


class TestVerify:
    """``--verify``: every cell's output is compared, the checks read the worked answer's values
    through the plain-data crossing, and each exercise is also run, in copies, without its answer
    and with each of its wrong answers; what fails is a note."""

    def lab_with(self, tmp_path, edit):
        """The fixture lab changed by ``edit(nb)``, written to ``tmp_path``."""
        lab = nbformat.read(FIXTURE, as_version=4)
        edit(lab)
        path = tmp_path / "grading_lab.ipynb"
        nbformat.write(lab, path)
        return path

    def verified(self, lab, tmp_path):
        sub = tmp_path / "worked.ipynb"
        sub.write_bytes(lab.read_bytes())
        return graded(sub, lab, verify=True)

    def test_the_fixture_lab_passes(self, tmp_path):
        report = self.verified(FIXTURE, tmp_path)
        assert (report.error, report.score, report.notes) == (None, 4, [])

    def test_a_differing_cell_outside_the_exercises_is_a_note(self, tmp_path):
        def reworded(nb):
            nb.cells[1].outputs = [new_output("stream", name="stdout", text="numpy is ready\n")]
        lab = self.lab_with(tmp_path, reworded)
        report = self.verified(lab, tmp_path)
        assert report.score == 4
        assert report.notes == ['code cell 1 of the lab (not part of an exercise) printed "numpy ready" '
                                'where the worked lab prints "numpy is ready"']
        assert graded(submission(tmp_path), lab).notes == []  # graded as usual: not compared

    def test_a_check_that_passes_without_its_answer_is_a_note(self, tmp_path):
        def free_point(nb):  # a second check of ex2 that checks nothing
            nb.cells.insert(9, new_code_cell("print('softmax checked')", metadata={"tags": ["check:ex2"]}, execution_count=1,
                                             outputs=[new_output("stream", name="stdout", text="softmax checked\n")]))
        report = self.verified(self.lab_with(tmp_path, free_point), tmp_path)
        assert report.score == 4
        assert report.notes == ["check 3 of exercise ex2 passes without its answer"]

    @staticmethod
    def with_wrong(exercise, *wrong):
        def edit(nb):
            cell = next(c for c in nb.cells if f"answer:{exercise}" in c.metadata.get("tags", []))
            cell.metadata["tinylm"]["wrong"] = [{"why": why, "code": code} for why, code in wrong]
        return edit

    def test_a_wrong_answer_that_passes_every_check_is_a_note(self, tmp_path):
        # the checks try two lists: an answer that knows them by their length passes both
        lab = self.lab_with(tmp_path, self.with_wrong("ex1", ("learns the test by heart", "return {3: 2, 2: 1.75}[len(xs)]"),
                                                      ("off by one", "return sum(xs) / (len(xs) + 1)")))
        report = self.verified(lab, tmp_path)
        assert report.score == 4
        assert report.notes == ['the wrong answer of exercise ex1 "learns the test by heart" passes every check']

    def test_a_wrong_answer_must_run(self, tmp_path):
        lab = self.lab_with(tmp_path, self.with_wrong("ex3", ("a typo", "counts[a + b] = count.get(a + b, 0) + 1")))
        report = self.verified(lab, tmp_path)
        assert report.notes == ['the wrong answer of exercise ex3 "a typo" does not run (check: count_bigrams() '
                                "raised NameError: name 'count' is not defined); a wrong answer must run, for the "
                                "checks to catch it"]

    def test_an_exercise_without_a_wrong_answer_is_a_note(self, tmp_path):
        def none(nb):
            for cell in nb.cells:
                cell.metadata.get("tinylm", {}).pop("wrong", None)
        report = self.verified(self.lab_with(tmp_path, none), tmp_path)
        assert report.notes == [f"exercise {ex} has no wrong answer to try (tinylm.wrong in its answer cell's metadata)"
                                for ex in ("ex1", "ex2", "ex3")]

    def test_a_check_that_reads_what_cannot_cross_is_a_note(self, tmp_path):
        def unreadable(nb):  # the answer keeps its result in an object of its own class
            nb.cells[10].source = nb.cells[10].source.replace(
                "    return counts", "    return type('Counts', (), {'items': lambda self: counts.items()})()")
        report = self.verified(self.lab_with(tmp_path, unreadable), tmp_path)
        assert any("which the checks cannot read" in note for note in report.notes), report.notes

    def test_the_copy_leaves_the_kernel_untouched(self, tmp_path):
        # A cell between ex1's answer and its check runs in the copies and again in the kernel:
        # the kernel must see one draw from its generator and one append.
        import numpy as np

        first = int(np.random.default_rng(0).integers(1000))

        def shared_state(nb):
            nb.cells[1].source += "\nrng = np.random.default_rng(0)\nseen = []"
            nb.cells.insert(4, new_code_cell("seen.append(int(rng.integers(1000)))"))
            nb.cells.insert(6, new_code_cell("print(len(seen), seen[0])", execution_count=1,
                                             outputs=[new_output("stream", name="stdout", text=f"1 {first}\n")]))
        report = self.verified(self.lab_with(tmp_path, shared_state), tmp_path)
        assert (report.score, report.notes) == (4, [])

    def test_a_stub_that_hangs_is_stopped_and_noted(self, tmp_path):
        def hangs(nb):  # without the answer, a cell before ex1's check waits for ever
            nb.cells.insert(4, new_code_cell("import time\ntry:\n    mean([1])\nexcept NotImplementedError:\n"
                                             "    time.sleep(100)"))
        report = self.verified(self.lab_with(tmp_path, hangs), tmp_path)
        assert report.score == 4
        assert report.notes == [f"exercise ex1 without its answer took longer than {0.9 * CELL_TIMEOUT / 2:.0f} s, "
                                "its budget: the exercise edition would hang there"]

    def test_the_command_line_flag(self, tmp_path, capsys):
        sub = tmp_path / "worked.ipynb"
        sub.write_bytes(FIXTURE.read_bytes())
        assert run_cli(sub, "--lab", FIXTURE, "--verify", "--cell-timeout", CELL_TIMEOUT) == 0
        out = capsys.readouterr().out
        assert "Score: 4/4" in out and "Note" not in out
        # a lab that falls short of its own verification: exit code 1
        assert run_cli(submission(tmp_path, answers={"ex3": "pass"}), "--lab", FIXTURE, "--verify",
                       "--cell-timeout", CELL_TIMEOUT) == 1
        assert "Score: 3/4" in capsys.readouterr().out


TAMPERING = {
    "a library's function": "import numpy as np\nnp.round = lambda x, decimals=0: np.array([0.09, 0.245, 0.665])",
    "a library function's code": ("import numpy as np\n"
                                  "np.round.__code__ = (lambda a, decimals=0, out=None: "
                                  "__import__('numpy').array([0.09, 0.245, 0.665])).__code__"),
    "the builtins": ("import builtins\n_print = builtins.print\n"
                     "builtins.print = lambda *a, **k: _print('[0.09  0.245 0.665]')\n"
                     "builtins.abs = lambda x: 0"),
    "the interpreter's streams and hooks": ("import sys\nclass Out:\n    def write(self, text):\n"
                                            "        sys.__stdout__.write('[0.09  0.245 0.665]\\nstable\\n')\n"
                                            "    def flush(self):\n        pass\n"
                                            "sys.stdout = Out()\nsys.settrace(lambda *a: None)\n"
                                            "sys.excepthook = lambda *a: None"),
    "IPython's machinery": ("import ast\nfrom IPython import get_ipython\nclass NoAsserts(ast.NodeTransformer):\n"
                            "    def visit_Assert(self, node):\n        return None\n"
                            "shell = get_ipython()\nshell.ast_transformers.append(NoAsserts())\n"
                            "shell.input_transformers_post.append(lambda lines: ['pass\\n'])\n"
                            "shell.events.register('pre_run_cell', lambda *a: None)"),
    "the grader's own code": ("from tinylm_course import isolation\n"
                              "isolation.decode = lambda data: None\nisolation.before_check = lambda *a, **k: None\n"
                              "import gc\n"
                              "for thing in gc.get_objects():\n"
                              "    if isinstance(thing, dict) and 'exercises' in thing:\n"
                              "        thing.clear()"),
}
"""Lines an answer might add to make wrong answers pass: each changes its own process only."""


class TestTampering:
    """Whatever an answer does to libraries, builtins, the interpreter, IPython or the grader's
    code, it does in its own process: no check sees it, and the score does not rise."""

    WRONG_SOFTMAX = "def softmax(z):\n    return z"     # wrong: ex2's two checks fail

    @pytest.mark.parametrize("kind", sorted(TAMPERING))
    def test_tampering_does_not_raise_the_score(self, tmp_path, kind):
        honest = graded(submission(tmp_path, {"ex2": self.WRONG_SOFTMAX}, name="honest.ipynb"))
        tampered = graded(submission(tmp_path, {"ex2": TAMPERING[kind] + "\n" + self.WRONG_SOFTMAX},
                                     name="tampered.ipynb"))
        assert honest.score == 3 and tampered.score == honest.score, tampered.format()
        assert outcome(tampered)["ex2"][0] == 0

    def test_a_value_that_pretends_to_be_equal_does_not_cross(self, tmp_path):
        answer = ("class Anything(float):\n    def __eq__(self, other):\n        return True\n"
                  "    def __format__(self, spec):\n        return '1.750'\n"
                  "def mean(xs):\n    return Anything(0)")
        report = graded(submission(tmp_path, {"ex1": answer}))
        assert outcome(report)["ex1"] == (0, "exception")      # it crossed as the float 0.0

    def test_an_object_of_the_answers_own_class_is_not_read(self, tmp_path):
        answer = ("class Counts:\n    def items(self):\n        return [('ab', 2), ('ba', 1)]\n"
                  "def count_bigrams(text):\n    return Counts()")
        report = graded(submission(tmp_path, {"ex3": answer}))
        assert outcome(report)["ex3"] == (0, "exception")
        assert "returned a __main__.Counts, which the checks cannot read" in reason(report, "ex3")

    def test_wrong_gradients_with_a_patched_allclose_still_fail(self, tmp_path):
        """The issue's case: Lab 4 with wrong gradients, and np.allclose made always true."""
        lab = ROOT / "labs" / "lab04_autograd.ipynb"
        worked = nbformat.read(lab, as_version=4)
        nb = make_exercise(worked)
        ex1 = next(c for c in nb.cells if tagged_id(c, ANSWER_TAG) == "ex1")
        ex1.source = ("import numpy as np\nnp.allclose = lambda *a, **k: True\n"
                      "def linear_backward(X, W, b, dY):\n    return dY @ W.T, 2 * X.T @ dY, dY.sum(axis=0)")
        for ex in list_exercises(worked)[1:]:
            cell = next(c for c in nb.cells if tagged_id(c, ANSWER_TAG) == ex.id)
            cell.source = worked.cells[ex.answer_cell].source
        path = tmp_path / "lab04.ipynb"
        nbformat.write(nb, path)
        report = graded(path, lab, cell_timeout=grading.CELL_TIMEOUT)
        assert outcome(report)["ex1"] == (0, "exception") and report.score == report.max_score - 1
        assert "dW differs from torch.autograd" in reason(report, "ex1")


class TestCallbacks:
    """A check may pass its own function (a lambda, a model's method, numpy's) to the submission's:
    the answer process gets a stand-in that asks the kernel to run it on plain data."""

    ANSWER = "def apply_twice(f, x):\n    ### BEGIN SOLUTION\n    return f(f(x))\n    ### END SOLUTION"
    CHECK = "assert apply_twice(lambda v: v * 3, 2) == 18\nassert apply_twice(np.sqrt, 16.0) == 2.0\nprint('twice')"

    def lab(self, tmp_path):
        lab = nbformat.read(FIXTURE, as_version=4)
        lab.cells.append(new_code_cell(self.ANSWER, metadata={"tags": ["answer:ex4", "hide-input"], "tinylm": {
            "wrong": [{"why": "applies it once", "code": "return f(x)"}]}}))
        lab.cells.append(new_code_cell(self.CHECK, metadata={"tags": ["check:ex4"]}, execution_count=1,
                                       outputs=[new_output("stream", name="stdout", text="twice\n")]))
        path = tmp_path / "grading_lab.ipynb"
        nbformat.write(lab, path)
        return path

    def graded_with(self, tmp_path, answer):
        return graded_with_ex4(tmp_path, self.lab(tmp_path), answer)

    def test_verify_passes_the_checks_functions_and_tries_the_wrong_answer(self, tmp_path):
        lab = self.lab(tmp_path)
        sub = tmp_path / "worked.ipynb"
        sub.write_bytes(lab.read_bytes())
        report = graded(sub, lab, verify=True)
        assert (report.error, report.score, report.notes) == (None, 5, [])

    def test_the_submissions_function_calls_the_checks_function_in_the_kernel(self, tmp_path):
        report = self.graded_with(tmp_path, "def apply_twice(f, x):\n    for _ in range(2):\n        x = f(x)\n"
                                            "    return x")
        assert report.score == 5, report.format()

    def test_a_wrong_answer_with_a_callback_fails(self, tmp_path):
        report = self.graded_with(tmp_path, "def apply_twice(f, x):\n    return f(x)")
        assert outcome(report)["ex4"] == (0, "exception")

    def test_the_checks_function_accepts_only_plain_data(self, tmp_path):
        answer = "def apply_twice(f, x):\n    return f(f(type('Sneaky', (), {})()))"
        report = self.graded_with(tmp_path, answer)
        assert outcome(report)["ex4"] == (0, "exception")
        assert "apply_twice() raised" in reason(report, "ex4"), reason(report, "ex4")


class TestTorchModules:
    """A check may read a torch model the submission's code filled: it arrives as numbers, loaded
    into a copy of the kernel's own model of the same class, so none of the submission's code
    (nor its torch) runs in the check."""

    SETUP = "import torch\n\ntorch.manual_seed(0)\nmodel = torch.nn.Linear(2, 2)"
    ANSWER = ("def fill(layer):\n    with torch.no_grad():\n        ### BEGIN SOLUTION\n"
              "        layer.weight.fill_(1.0)\n        layer.bias.zero_()\n        ### END SOLUTION")
    CHECK = ("assert torch.equal(model.weight, torch.ones(2, 2)) and torch.equal(model.bias, torch.zeros(2))\n"
             "print('filled')")

    def lab(self, tmp_path):
        lab = nbformat.read(FIXTURE, as_version=4)
        lab.cells.append(new_code_cell(self.SETUP))
        lab.cells.append(new_code_cell(self.ANSWER, metadata={"tags": ["answer:ex4", "hide-input"], "tinylm": {
            "wrong": [{"why": "forgets the bias", "code": "layer.weight.fill_(1.0)"}]}}))
        lab.cells.append(new_code_cell("fill(model)"))
        lab.cells.append(new_code_cell(self.CHECK, metadata={"tags": ["check:ex4"]}, execution_count=1,
                                       outputs=[new_output("stream", name="stdout", text="filled\n")]))
        path = tmp_path / "grading_lab.ipynb"
        nbformat.write(lab, path)
        return path

    def graded_with(self, tmp_path, answer):
        return graded_with_ex4(tmp_path, self.lab(tmp_path), answer, cell_timeout=30)

    def test_verify_reads_the_model_of_each_variant(self, tmp_path):
        lab = self.lab(tmp_path)
        sub = tmp_path / "worked.ipynb"
        sub.write_bytes(lab.read_bytes())
        report = graded(sub, lab, verify=True, cell_timeout=30)
        assert (report.error, report.score, report.notes) == (None, 5, [])

    def test_a_model_filled_another_way_passes(self, tmp_path):
        answer = "def fill(layer):\n    layer.load_state_dict({'weight': torch.ones(2, 2), 'bias': torch.zeros(2)})"
        assert self.graded_with(tmp_path, answer).score == 5

    def test_a_wrong_model_fails_even_with_torch_patched(self, tmp_path):
        answer = ("torch.equal = lambda *args: True\ntorch.Tensor.__eq__ = lambda *args: True\n"
                  "def fill(layer):\n    with torch.no_grad():\n        layer.weight.fill_(1.0)")
        report = self.graded_with(tmp_path, answer)
        assert outcome(report)["ex4"] == (0, "exception")

    def test_a_model_of_another_class_is_refused(self, tmp_path):
        answer = "def fill(layer):\n    global model\n    model = torch.nn.Identity()"
        report = self.graded_with(tmp_path, answer)
        assert outcome(report)["ex4"] == (0, "exception")
        assert "is a torch.nn.modules.linear.Identity where the lab has a torch.nn.modules.linear.Linear" in reason(
            report, "ex4"), reason(report, "ex4")


class TestLimits:
    """An answer's time budget comes from the worked lab; the grader's processes end with it."""

    def test_the_budget_is_a_multiple_of_the_recorded_time(self):
        lab = nbformat.read(FIXTURE, as_version=4)
        ex1 = list_exercises(lab)[0]
        lab.cells[ex1.answer_cell].metadata["execution"] = {"iopub.execute_input": "2026-01-01T00:00:00.000Z",
                                                           "shell.execute_reply": "2026-01-01T00:00:02.000Z"}
        budget = grading.ANSWER_TIME_FACTOR * 2 + grading.ANSWER_TIME_MARGIN
        assert grading.answer_budget(lab, ex1, cell_timeout=300) == pytest.approx(budget)
        assert grading.answer_budget(lab, ex1, cell_timeout=20) == pytest.approx(18)         # within the cell's time
        assert grading.answer_budget(lab, ex1, cell_timeout=300, variants=3) == pytest.approx(min(budget, 90))
        del lab.cells[ex1.answer_cell].metadata["execution"]
        assert grading.answer_budget(lab, ex1, cell_timeout=300) == pytest.approx(270)       # nothing recorded

    def test_a_looping_answer_is_stopped_at_its_budget_not_at_the_cell_timeout(self, tmp_path, monkeypatch):
        monkeypatch.setattr(grading, "ANSWER_TIME_MARGIN", 2.0)
        lab = nbformat.read(FIXTURE, as_version=4)
        for cell in lab.cells:
            cell.metadata["execution"] = {"iopub.execute_input": "2026-01-01T00:00:00.000Z",
                                          "shell.execute_reply": "2026-01-01T00:00:00.010Z"}
        nbformat.write(lab, tmp_path / "lab.ipynb")
        report = graded(submission(tmp_path, {"ex1": "while True:\n    pass"}), lab=tmp_path / "lab.ipynb",
                        cell_timeout=120)
        assert outcome(report)["ex1"] == (0, "timeout") and report.seconds < 60
        assert reason(report, "ex1") == "answer took longer than 2 s, its budget"

    @pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
    def test_the_graders_processes_end_with_it(self, tmp_path, how):
        import psutil

        path = submission(tmp_path, {"ex1": "while True:\n    pass"})
        grader = subprocess.Popen([sys.executable, "-m", "tinylm_course", "grade", str(path), "--lab", str(FIXTURE),
                                   "--cell-timeout", "120"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        family: set = set()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:       # until pytest, the kernel and the answer process run
            try:
                family |= {p.pid for p in psutil.Process(grader.pid).children(recursive=True)}
            except psutil.Error:
                break
            if len(family) >= 3:
                break
            time.sleep(0.2)
        assert len(family) >= 3, "the grader did not get as far as the answer process"
        grader.send_signal(how)
        grader.wait(timeout=30)
        deadline = time.monotonic() + 15
        alive = family
        while alive and time.monotonic() < deadline:
            alive = {pid for pid in alive if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"}
            time.sleep(0.2)
        assert alive == set(), f"left running: {[psutil.Process(p).cmdline()[:3] for p in alive]}"


class TestRepositoryLabs:
    """Every labs/*.ipynb, verified: graded against itself with ``--verify``, in one run it
    reproduces all its stored outputs (this is nbval on every lab, under the grader's limits,
    with one thread and ATen's generic kernels, while the committed outputs were made with the
    defaults, so no checked number depends on the CPU), scores full marks, and none of its
    checks passes without its answer."""

    @pytest.mark.parametrize("lab", lab_params())
    def test_worked_lab_reproduces_scores_full_marks_and_no_check_is_free(self, lab, tmp_path):
        sub = tmp_path / lab.name
        sub.write_bytes(lab.read_bytes())
        report = graded(sub, lab, cell_timeout=grading.CELL_TIMEOUT, verify=True)
        assert report.error is None, report.format()
        assert report.score == report.max_score > 0, report.format()
        assert report.notes == [], report.format()


def test_values_keep_their_shape_between_the_answer_and_the_checks():
    """A 0-dim tensor, a 0-d array and a numpy scalar cross the process boundary unchanged in shape
    and type (a check asserting ``loss.dim() == 0`` must see what the student's code returned)."""
    import numpy as np
    import torch

    from tinylm_course import isolation

    values = {"loss": torch.tensor(1.5), "grid": torch.zeros(2, 3), "zero_d": np.array(2.0),
              "mean": np.float64(0.25), "vector": np.arange(3)}
    back = isolation.decode(isolation.encode(values))
    assert back["loss"].dim() == 0 and back["loss"].item() == 1.5
    assert tuple(back["grid"].shape) == (2, 3)
    assert back["zero_d"].shape == () and back["mean"] == 0.25 and np.ndim(back["mean"]) == 0
    assert back["vector"].tolist() == [0, 1, 2]
