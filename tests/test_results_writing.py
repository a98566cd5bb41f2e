"""Results are written when asked (``TINYLM_WRITE_RESULTS=1``: ``python -m tinylm_course execute``
and ``python -m tinylm`` commands), never while grading (``TINYLM_READONLY=1``), and a lab run for
practice leaves ``results/`` as committed, saying so in one line on stdout."""

from __future__ import annotations

import json
import os

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from tinylm import results
from tinylm.evaluation import ladder


@pytest.fixture
def course(tmp_path, monkeypatch):
    """An empty course root; neither variable set."""
    (tmp_path / "_toc.yml").write_text("root: intro\n")
    (tmp_path / "tinylm").mkdir()
    monkeypatch.setenv("TINYLM_ROOT", str(tmp_path))
    for variable in (results.READONLY_ENV, results.WRITE_ENV, ladder.UPDATE_TIMINGS_ENV):
        monkeypatch.delenv(variable, raising=False)
    return tmp_path


def test_a_practice_run_writes_nothing_and_says_how_to_save(course, capsys):
    assert results.save("x", {"a": 1}) is False
    out, err = capsys.readouterr()
    assert not (course / "results" / "x.json").exists()
    assert err == "" and len(out.splitlines()) == 1
    assert "results/x.json" in out and "TINYLM_WRITE_RESULTS=1" in out and "tinylm_course execute" in out


def test_asked_for_it_writes_and_unchanged_numbers_say_nothing(course, monkeypatch, capsys):
    monkeypatch.setenv(results.WRITE_ENV, "1")
    assert results.save("x", {"a": 1}) is True
    assert results.load("x") == {"a": 1}
    monkeypatch.delenv(results.WRITE_ENV)
    assert results.save("x", {"a": 1}) is False            # the same numbers: nothing to say
    assert capsys.readouterr() == ("", "")
    assert results.save("x", {"a": 2}) is False            # different: not written, one line
    assert results.load("x") == {"a": 1} and "Not saved" in capsys.readouterr().out


@pytest.mark.parametrize("write", ["", "1"])
def test_grading_never_writes_and_prints_nothing(course, monkeypatch, capsys, write):
    monkeypatch.setenv(results.READONLY_ENV, "1")
    monkeypatch.setenv(results.WRITE_ENV, write)
    assert results.save("x", {"a": 1}) is False
    assert not (course / "results" / "x.json").exists()
    assert capsys.readouterr() == ("", "")               # nbval compares the grader's outputs


def test_the_ladder_is_written_only_when_asked(course, monkeypatch):
    rung = ladder.Rung(name="m", stage="SLM", corpus="c", test_bpc=2.5, parameters=10, train_cpu_seconds=1.0, lab="lab")
    ladder.record(rung)
    assert ladder.load() == []
    monkeypatch.setenv(results.WRITE_ENV, "1")
    ladder.record(rung)
    assert ladder.load() == [rung]


def test_the_library_commands_ask_for_writing(monkeypatch, capsys):
    from tinylm.__main__ import main

    monkeypatch.setenv(results.WRITE_ENV, "unset")   # so that the test's end restores "not set"
    monkeypatch.delenv(results.WRITE_ENV)
    assert main(["recipes"]) == 0
    assert os.environ.get(results.WRITE_ENV) == "1"
    monkeypatch.setenv(results.WRITE_ENV, "0")       # an explicit no is kept
    assert main(["recipes"]) == 0 and os.environ[results.WRITE_ENV] == "0"


SAVE = "from tinylm import results\nresults.save('lab99_tiny', {'answer': 42})\nprint('done')"


def lab(course):
    (course / "labs").mkdir()
    path = course / "labs" / "lab99_tiny.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell(SAVE)], metadata={"tinylm": {"lab": "lab99_tiny"}}), path)
    return path


def test_execute_writes_the_labs_results_and_no_kernel_warning(course, capfd):
    from tinylm_course.__main__ import main

    path = lab(course)
    assert main(["execute", str(path)]) == 0
    assert json.loads((course / "results" / "lab99_tiny.json").read_text()) == {"answer": 42}
    outputs = nbformat.read(path, as_version=4).cells[0].outputs
    assert [(o.name, o.text) for o in outputs] == [("stdout", "done\n")]
    assert "encryption" not in capfd.readouterr().err       # the kernel's own stderr, too


def test_a_lab_run_in_a_kernel_for_practice_leaves_results_alone(course):
    from tinylm_course.execute import client

    path = lab(course)
    nb = nbformat.read(path, as_version=4)
    client(nb, path).execute()                              # as Jupyter runs it: no variable set
    assert not (course / "results").exists()
    text = "".join(o.get("text", "") for o in nb.cells[0].outputs if o.name == "stdout")
    assert "Not saved" in text and text.endswith("done\n")
    assert all(o.name == "stdout" for o in nb.cells[0].outputs)
