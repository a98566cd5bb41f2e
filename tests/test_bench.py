"""The lab bench: the README region, the table, and one real measurement of a tiny notebook."""

import argparse
import os

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from tinylm_course import bench
from tinylm_course.bench import END, START, Measurement

README = f"# Course\n\n## Lab budgets\n\nSome prose.\n\n{START}\nold table\n{END}\n\n## Layout\n"


def test_replace_region_replaces_only_between_the_markers():
    text = bench.replace_region(README, "| lab |\n|---|\n")
    assert text == f"# Course\n\n## Lab budgets\n\nSome prose.\n\n{START}\n| lab |\n|---|\n{END}\n\n## Layout\n"
    assert bench.replace_region(text, "| lab |\n|---|") == text  # running twice changes nothing


@pytest.mark.parametrize("text, message", [
    ("# no markers\n", "is missing"),
    (f"{START}\n", f"{END} is missing"),
    (f"{START}\n{END}\n{END}\n", "appears 2 times"),
    (f"{END}\n{START}\n", "comes before"),
])
def test_replace_region_says_what_is_wrong_with_the_markers(text, message):
    with pytest.raises(ValueError, match=message):
        bench.replace_region(text, "table")


def test_table_and_verdicts():
    rows = [Measurement("lab01_ngrams", 41.26, 512.4),
            Measurement("slow", bench.BUDGET_SECONDS + 1, 100.0),
            Measurement("big", 10.0, bench.BUDGET_MB + 1),
            Measurement("broken", 3.0, 60.0, error="code cell 2 (`1/0`): ZeroDivisionError: division by zero")]
    assert bench.format_table(rows).splitlines() == [
        "| lab | seconds | peak MB | within budget |",
        "|---|---:|---:|---|",
        "| lab01_ngrams | 41.3 | 512 | yes |",
        f"| slow | {bench.BUDGET_SECONDS + 1:.1f} | 100 | no: time |",
        f"| big | 10.0 | {bench.BUDGET_MB + 1} | no: memory |",
        "| broken | 3.0 | 60 | no: failed |",
    ]
    assert [m.within_budget for m in rows] == [True, False, False, False]
    assert bench.format_table([Measurement("killed", error="killed")]).endswith("| killed | – | – | no: failed |")


def test_report_names_the_machine_and_the_failures():
    info = {"cpu": "Some CPU", "python": "3.11.7", "torch": "2.5.1+cpu", "date": "2025-01-02"}
    text = bench.report_text([Measurement("lab", 1.0, 2.0), Measurement("bad", error="code cell 1: boom")], info)
    assert "- bad failed: code cell 1: boom" in text
    assert text.endswith("Measured on one core of Some CPU (Python 3.11.7, torch 2.5.1+cpu) on 2025-01-02; "
                         f"budget: {bench.BUDGET_SECONDS} s and {bench.BUDGET_MB} MB per lab.")
    data = bench.to_json([Measurement("lab", 1.04, 2.6)], info)
    assert data["labs"] == {"lab": {"seconds": 1.0, "peak_mb": 3, "error": None, "within_budget": True}}
    assert data["budget"] == {"seconds": bench.BUDGET_SECONDS, "peak_mb": bench.BUDGET_MB}
    assert set(bench.machine()) >= {"cpu", "python", "date"}


def _args(*labs, write=False, cores=1):
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return parser.parse_args([*labs, *(["--write"] if write else []), "--cores", str(cores)])


def test_command_line_mistakes_exit_2(tmp_path, capsys):
    assert bench.run(_args(str(tmp_path / "missing.ipynb"))) == 2
    assert "no such lab" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("hi")
    assert bench.run(_args(str(tmp_path / "notes.txt"))) == 2
    assert "not a notebook" in capsys.readouterr().err
    assert bench.run(_args(cores=0)) == 2
    assert "--cores" in capsys.readouterr().err
    assert bench.run(_args(str(tmp_path / "notes.txt"), write=True)) == 2
    assert "--write" in capsys.readouterr().err


def test_a_real_measurement(tmp_path):
    """A notebook holding 200 MB for half a second: the bench sees both, and leaves the file alone."""
    lab = tmp_path / "tiny.ipynb"
    nb = new_notebook(cells=[
        new_markdown_cell("# A tiny lab"),
        new_code_cell("import os, time\nimport numpy as np\n"
                      "assert len(os.sched_getaffinity(0)) == 1 and os.environ['TINYLM_READONLY'] == '1'\n"
                      "assert os.path.samefile(os.getcwd(), " + repr(str(tmp_path)) + ")"),
        new_code_cell("a = np.ones(200 * 2**20 // 8)\ntime.sleep(0.5)\nprint(a.sum())"),
    ])
    nbformat.write(nb, lab)
    before = lab.read_bytes()

    result = bench.measure(lab, core=min(os.sched_getaffinity(0)))

    assert result.error is None
    assert result.lab == "tiny"
    assert result.seconds >= 0.5
    assert result.peak_mb >= 200
    assert result.within_budget
    assert lab.read_bytes() == before


def test_a_failing_cell_is_reported_not_raised(tmp_path, capsys):
    lab = tmp_path / "broken.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell("x = 1"), new_code_cell("1 / 0")]), lab)
    assert bench.run(_args(str(lab))) == 1
    out = capsys.readouterr().out
    assert "| broken |" in out and "no: failed" in out
    assert "code cell 2 (`1 / 0`): ZeroDivisionError: division by zero" in out
