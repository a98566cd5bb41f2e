"""``python -m tinylm_course execute``: a lab is run in a fresh kernel, saved with its outputs and its
exercise edition written; a lab whose cell raises is left as it was."""

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

from tinylm_course.__main__ import main

SOLVED = "def double(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION\n"


def course(tmp_path, monkeypatch, cells):
    """A course root in ``tmp_path`` holding one lab made of ``cells``; the lab's path."""
    (tmp_path / "tinylm").mkdir()
    (tmp_path / "_toc.yml").write_text("root: intro\n")
    (tmp_path / "labs").mkdir()
    monkeypatch.setenv("TINYLM_ROOT", str(tmp_path))
    lab = tmp_path / "labs" / "lab99_tiny.ipynb"
    nb = new_notebook(cells=cells, metadata={"tinylm": {"lab": "lab99_tiny"}})
    nbformat.write(nb, lab)
    return lab


def test_execute_saves_outputs_and_writes_the_edition(tmp_path, monkeypatch, capsys):
    lab = course(tmp_path, monkeypatch, [
        new_code_cell("import os\nprint(os.path.basename(os.getcwd()))"),
        new_code_cell(SOLVED, metadata={"tags": ["answer:ex1"]}),
        new_code_cell("assert double(21) == 42\nprint('double works')", metadata={"tags": ["check:ex1"]}),
    ])
    assert main(["execute", str(lab)]) == 0
    assert "executed in" in capsys.readouterr().out
    cells = nbformat.read(lab, as_version=4).cells
    assert cells[0].outputs[0].text == "labs\n"            # it runs from the labs folder
    assert cells[2].outputs[0].text == "double works\n"
    assert [cell.execution_count for cell in cells] == [1, 2, 3]
    edition = nbformat.read(tmp_path / "exercises" / lab.name, as_version=4)
    assert 'raise NotImplementedError("Exercise ex1")' in edition.cells[1].source
    assert edition.cells[2].outputs == []


def test_a_failing_lab_is_not_saved(tmp_path, monkeypatch, capsys):
    lab = course(tmp_path, monkeypatch, [new_code_cell("print('before')"), new_code_cell("1 / 0")])
    before = lab.read_bytes()
    assert main(["execute", str(lab)]) == 1
    err = capsys.readouterr().err
    assert "was not saved" in err and "ZeroDivisionError" in err
    assert lab.read_bytes() == before
    assert not (tmp_path / "exercises").exists()


def test_not_a_notebook(tmp_path, capsys):
    assert main(["execute", str(tmp_path / "missing.ipynb")]) == 1
    assert "is not a notebook file" in capsys.readouterr().err
