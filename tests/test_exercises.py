"""The exercise edition: solution markers, indentation, errors, and the committed editions."""

import argparse
import copy
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from tinylm_course import exercises
from tinylm_course.exercises import ExerciseError, list_exercises, make_exercise, strip_solution, write_exercise

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = Path(__file__).parent / "fixtures" / "grading_lab.ipynb"
LABS = sorted((ROOT / "labs").glob("*.ipynb"))
NO_LABS = pytest.param(None, marks=pytest.mark.skip(reason="no labs/*.ipynb in the repository yet"))


def lab_params():
    return [pytest.param(lab, id=lab.stem) for lab in LABS] or [NO_LABS]


def answer(source, exercise_id="ex1", **meta):
    cell = new_code_cell(source, metadata={"tags": [f"answer:{exercise_id}", "hide-input"]}, execution_count=1,
                         outputs=[new_output("stream", name="stdout", text="solution output\n")])
    if meta:
        cell.metadata["tinylm"] = meta
    return cell


def check(source, exercise_id="ex1"):
    return new_code_cell(source, metadata={"tags": [f"check:{exercise_id}"]}, execution_count=2,
                         outputs=[new_output("stream", name="stdout", text="ok\n")])


# strip_solution -----------------------------------------------------------------------

def test_solution_becomes_stub_at_marker_indentation():
    source = ("def f(x):\n"
              "    y = 2\n"
              "    ### BEGIN SOLUTION\n"
              "    return x * y\n"
              "    ### END SOLUTION\n"
              "\n"
              "f(1)")
    assert strip_solution(source, "ex1") == ('def f(x):\n'
                                             '    y = 2\n'
                                             '    raise NotImplementedError("Exercise ex1")\n'
                                             '\n'
                                             'f(1)')


def test_nested_and_several_regions():
    source = ("### BEGIN SOLUTION\nimport math\n### END SOLUTION\n"
              "for a in range(3):\n"
              "    if a:\n"
              "        ### BEGIN SOLUTION\n"
              "        print(a)\n"
              "        ### END SOLUTION")
    assert strip_solution(source, "e") == ('raise NotImplementedError("Exercise e")\n'
                                           'for a in range(3):\n'
                                           '    if a:\n'
                                           '        raise NotImplementedError("Exercise e")')


def test_a_wrong_answer_may_give_one_piece_of_code_per_region():
    source = ("def f(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION\n\n"
              "def g(x):\n    ### BEGIN SOLUTION\n    return -x\n    ### END SOLUTION")
    assert strip_solution(source, "e", ["return 1", "return 2"]) == \
        "def f(x):\n    return 1\n\ndef g(x):\n    return 2"
    assert strip_solution(source, "e", "return 0") == "def f(x):\n    return 0\n\ndef g(x):\n    return 0"
    with pytest.raises(ExerciseError, match="3 pieces of code for 2 solution regions"):
        strip_solution(source, "e", ["return 1", "return 2", "return 3"])


def test_wrong_answers_with_too_few_pieces_of_code_are_refused_when_the_lab_is_read():
    source = "### BEGIN SOLUTION\na = 1\n### END SOLUTION\n### BEGIN SOLUTION\nb = 2\n### END SOLUTION"
    nb = new_notebook(cells=[answer(source, wrong=[{"why": "one piece only", "code": ["a = 0"]}]), check("assert a")])
    with pytest.raises(ExerciseError, match="1 pieces of code for 2 solution regions"):
        list_exercises(nb)
    nb.cells[0].metadata["tinylm"]["wrong"][0]["code"] = ["a = 0", "b = 0"]
    assert list_exercises(nb)[0].wrong == (("one piece only", ("a = 0", "b = 0")),)


@pytest.mark.parametrize("source, words", [
    ("x = 1", "no ### BEGIN SOLUTION"),
    ("### BEGIN SOLUTION\nx = 1", "without ### END"),
    ("x = 1\n### END SOLUTION", "line 2: ### END SOLUTION without"),
    ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION", "line 2: ### BEGIN SOLUTION inside"),
])
def test_unbalanced_or_missing_markers(source, words):
    with pytest.raises(ExerciseError, match=words):
        strip_solution(source, "ex1")


# list_exercises and make_exercise -----------------------------------------------------

def small_lab():
    return new_notebook(metadata={"tinylm": {"lab": "lab00_small"}}, cells=[
        new_markdown_cell("# Lab 0"),
        new_code_cell("import math", execution_count=1,
                      outputs=[new_output("stream", name="stdout", text="kept\n")]),
        answer("def f():\n    ### BEGIN SOLUTION\n    return 42\n    ### END SOLUTION", points=2, title="Answer"),
        check("assert f() == 42\nprint('ok')"),
        answer("### BEGIN SOLUTION\ng = 1\n### END SOLUTION", "ex2"),
        check("print(g)", "ex2"),
        check("print(g + 1)", "ex2"),
    ])


def test_list_exercises():
    ex1, ex2 = list_exercises(small_lab())
    assert (ex1.id, ex1.title, ex1.points, ex1.answer_cell, ex1.check_cells) == ("ex1", "Answer", 2.0, 2, (3,))
    assert (ex2.id, ex2.title, ex2.points, ex2.answer_cell, ex2.check_cells) == ("ex2", "ex2", 1.0, 4, (5, 6))


def test_make_exercise_clears_answers_and_checks_only():
    lab = small_lab()
    before = copy.deepcopy(lab)
    edition = make_exercise(lab)
    assert lab == before, "make_exercise must not change its argument"
    assert edition.cells[2].source == 'def f():\n    raise NotImplementedError("Exercise ex1")'
    for index in (2, 3, 4, 5, 6):
        assert edition.cells[index].outputs == [] and edition.cells[index].execution_count is None
    assert edition.cells[1] == lab.cells[1], "other cells keep their outputs"
    assert edition.cells[2].metadata == lab.cells[2].metadata
    assert edition.metadata == lab.metadata


@pytest.mark.parametrize("cells, words", [
    ([answer("x = 1")], "no ### BEGIN SOLUTION"),
    ([new_code_cell("### BEGIN SOLUTION\nx = 1\n### END SOLUTION")], "no answer:ID tag"),
    ([answer("### BEGIN SOLUTION\n### END SOLUTION"), answer("### BEGIN SOLUTION\n### END SOLUTION")],
     "both tagged answer:ex1"),
    ([check("print(1)", "ex9")], "no cell is tagged answer:ex9"),
])
def test_broken_labs_are_refused(cells, words):
    with pytest.raises(ExerciseError, match=words):
        make_exercise(new_notebook(cells=cells))


def test_fixture_edition_gives_nothing_away():
    lab = nbformat.read(FIXTURE, as_version=4)
    edition = make_exercise(lab)
    text = nbformat.writes(edition)
    for solution in ("sum(xs) / len(xs)", "np.exp(z - np.max(z))", "counts.get(a + b, 0) + 1"):
        assert solution not in text
    assert [ex.id for ex in list_exercises(edition)] == ["ex1", "ex2", "ex3"]


# writing ------------------------------------------------------------------------------

def test_write_exercise_and_command_line(tmp_path):
    out = write_exercise(FIXTURE, tmp_path / "exercises")
    assert nbformat.read(out, as_version=4) == make_exercise(nbformat.read(FIXTURE, as_version=4))
    stamp = out.stat().st_mtime_ns
    parser = argparse.ArgumentParser()
    exercises.add_arguments(parser)
    args = parser.parse_args([str(FIXTURE), "-o", str(tmp_path / "exercises")])
    assert args.run(args) == 0
    assert out.stat().st_mtime_ns == stamp, "an unchanged edition is not rewritten"


def test_command_line_reports_a_broken_lab(tmp_path, capsys):
    broken = tmp_path / "broken.ipynb"
    nbformat.write(new_notebook(cells=[answer("x = 1")]), broken)
    parser = argparse.ArgumentParser()
    exercises.add_arguments(parser)
    args = parser.parse_args([str(broken), "-o", str(tmp_path)])
    assert args.run(args) == 1
    assert "no ### BEGIN SOLUTION" in capsys.readouterr().err


# the repository's labs ----------------------------------------------------------------

@pytest.mark.parametrize("lab", lab_params())
def test_lab_has_checked_exercises(lab):
    nb = nbformat.read(lab, as_version=4)
    found = list_exercises(nb)
    assert len(found) >= 3, f"{lab.name} has {len(found)} exercises; a lab needs at least 3"
    assert nb.metadata.get("tinylm", {}).get("lab") == lab.stem
    for ex in found:
        assert ex.check_cells, f"{lab.name}: exercise {ex.id} has no check cell"
        for index in ex.check_cells:
            assert nb.cells[index].execution_count is not None, f"{lab.name}: check cell {index} was not run"


@pytest.mark.parametrize("lab", lab_params())
def test_committed_exercise_edition_is_in_sync(lab):
    committed = ROOT / "exercises" / lab.name
    assert committed.is_file(), f"missing {committed.relative_to(ROOT)}: run python -m tinylm_course exercise labs/{lab.name}"
    expected = make_exercise(nbformat.read(lab, as_version=4))
    actual = nbformat.read(committed, as_version=4)

    def content(nb):
        return [(cell.cell_type, cell.source, cell.get("outputs")) for cell in nb.cells]
    assert content(actual) == content(expected), f"exercises/{lab.name} is stale: run python -m tinylm_course exercise labs/{lab.name}"
