"""The ladder and result files: in sync with the labs' stored outputs, and written carefully."""

import json
from pathlib import Path

import nbformat
import pytest

from tinylm import results
from tinylm.evaluation import ladder
from tinylm.paths import course_root

ROOT = course_root(Path(__file__).parent)


def stored_text(notebook: Path) -> str:
    nb = nbformat.read(notebook, as_version=4)
    return "\n".join(
        "".join(out.get("text", "")) if out.output_type == "stream" else "".join(out.get("data", {}).get("text/plain", ""))
        for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
    )


def test_every_rung_is_what_its_lab_printed():
    rungs = json.loads((ROOT / "results" / "ladder.json").read_text())["rungs"]
    assert rungs, "the ladder is empty"
    by_lab = {}
    for r in rungs:
        by_lab.setdefault(r["lab"], []).append(ladder.Rung(**r))
    for lab, lab_rungs in by_lab.items():
        notebook = ROOT / "labs" / f"{lab}.ipynb"
        assert notebook.exists(), f"rung from unknown lab {lab}"
        assert ladder.format_table(lab_rungs) in stored_text(notebook), (
            f"results/ladder.json disagrees with the stored output of {notebook.name}: "
            "re-run the lab top to bottom and commit both")


def test_labs_that_record_rungs_have_them_on_file():
    on_file = {r.lab for r in ladder.load()}
    for notebook in sorted((ROOT / "labs").glob("*.ipynb")):
        source = "\n".join(c.source for c in nbformat.read(notebook, as_version=4).cells)
        if "ladder.record(" in source:
            assert notebook.stem in on_file, f"{notebook.name} records rungs but none are on file"


WRITTEN_BY_COMMANDS = {"ladder": "python -m tinylm_course execute (labs call ladder.record)",
                       "lab_budget": "python -m tinylm_course bench", "gpt_speed": "python -m tinylm speed",
                       "scaling_laws": "python -m tinylm scaling", "speedrun": "python -m tinylm speedrun",
                       "score-": "python -m tinylm score", "ablate-": "python -m tinylm ablate",
                       "alignment": "python -m tinylm align", "study-": "python -m tinylm study",
                       "rag": "python -m tinylm study rag-retrieval",
                       "quantisation": "python -m tinylm study quantisation", "serving": "python -m tinylm study serving"}
"""Results that a command writes (a name, or a prefix ending in -), and the command."""


def test_every_results_file_is_saved_by_a_lab_or_a_command():
    sources = "\n".join(p.read_text() for p in (ROOT / "labs").glob("*.ipynb"))
    commands = (ROOT / "tinylm" / "__main__.py").read_text() + (ROOT / "tinylm_course" / "__main__.py").read_text()
    for path in (ROOT / "results").glob("*.json"):
        command = next((c for key, c in WRITTEN_BY_COMMANDS.items()
                        if path.stem == key or (key.endswith("-") and path.stem.startswith(key))), None)
        if command:
            assert command.split()[3] in commands, f"{path.name}: no command {command!r}"
            continue
        assert f'results.save(\\"{path.stem}\\"' in sources, f"no lab or command saves {path.name}"


@pytest.fixture
def course(tmp_path, monkeypatch):
    (tmp_path / "_toc.yml").write_text("root: intro\n")
    (tmp_path / "tinylm").mkdir()
    monkeypatch.setenv("TINYLM_ROOT", str(tmp_path))
    monkeypatch.delenv("TINYLM_READONLY", raising=False)
    monkeypatch.delenv("TINYLM_UPDATE_TIMINGS", raising=False)
    monkeypatch.setenv("TINYLM_WRITE_RESULTS", "1")   # as python -m tinylm_course execute runs labs
    return tmp_path


def rung(bpc=2.5, seconds=1.0, name="m"):
    return ladder.Rung(name=name, stage="SLM", corpus="c", test_bpc=bpc, parameters=10,
                       train_cpu_seconds=seconds, lab="lab")


def test_record_keeps_timing_when_results_are_unchanged(course, monkeypatch):
    ladder.record(rung(seconds=1.0))
    ladder.record(rung(seconds=9.0))
    assert ladder.load()[0].train_cpu_seconds == 1.0
    ladder.record(rung(bpc=2.4, seconds=9.0))
    assert ladder.load()[0].train_cpu_seconds == 9.0 and ladder.load()[0].test_bpc == 2.4
    monkeypatch.setenv("TINYLM_UPDATE_TIMINGS", "1")
    ladder.record(rung(bpc=2.4, seconds=3.0))
    assert ladder.load()[0].train_cpu_seconds == 3.0
    ladder.record(rung(name="other"))
    assert [r.name for r in ladder.load()] == ["m", "other"]


def test_results_are_not_written_while_grading(course, monkeypatch):
    assert results.save("x", {"a": 1}) is True
    assert results.save("x", {"a": 1}) is False          # unchanged: left alone
    monkeypatch.setenv("TINYLM_READONLY", "1")
    assert results.save("x", {"a": 2}) is False
    assert results.load("x") == {"a": 1}
    with pytest.raises(FileNotFoundError, match="run the lab"):
        results.load("missing")
    with pytest.raises(ValueError):
        results.save("../escape", {})


def test_rung_validation():
    with pytest.raises(ValueError, match="stage"):
        ladder.Rung(name="m", stage="GPT", corpus="c", test_bpc=1, parameters=1, train_cpu_seconds=1, lab="l")
    with pytest.raises(ValueError, match="positive"):
        rung(bpc=0)


def test_names_of_neighbouring_rungs_do_not_overlap_and_stay_inside():
    def rung(name, bpc, seconds):
        return ladder.Rung(name=name, stage="NLM", corpus="c", test_bpc=bpc, parameters=1,
                           train_cpu_seconds=seconds, lab="lab")
    rungs = [rung("a", 2.16, 3.1), rung("b", 2.14, 2.2), rung("c", 2.01, 1600), rung("d", 1.97, 1300),
             rung("e", 3.19, 0.6)]
    places = ladder._label_places({r: r.train_cpu_seconds for r in rungs})
    gap = 0.055 * (3.19 - 1.97)
    assert places[rungs[3]][1] == 1.97 and places[rungs[2]][1] >= 1.97 + gap - 1e-12   # pushed apart
    assert places[rungs[1]][1] == 2.14 and places[rungs[0]][1] >= 2.14 + gap - 1e-12
    assert places[rungs[4]][1] == 3.19                                              # alone: left as is
    assert [places[r][2] for r in rungs] == [False, False, True, True, False]       # right end: to the left
    assert places[rungs[2]][0] < 1600 and places[rungs[0]][0] > 3.1


def test_the_ladder_pages_table_lists_every_rung_its_figure_shows():
    """chapters/ladder.md draws its table and its figure from one list, ``ladder_rungs()``; the
    table's rows are the rungs on file, and so are the figure's markers and labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tinylm_course.book import ladder_markdown, ladder_rungs

    page = (ROOT / "chapters" / "ladder.md").read_text(encoding="utf-8")
    assert "rungs = ladder_rungs()" in page and "ladder_markdown(rungs)" in page and "ladder.plot(rungs)" in page
    rungs = ladder_rungs()
    assert {r.stage for r in rungs} == set(ladder.STAGES), "a stage of the ladder has no rung on the page"
    rows = [line.split("|")[1].strip() for line in ladder_markdown(rungs).splitlines()[2:]]
    ax = ladder.plot(rungs)
    try:
        labels = [text.get_text() for text in ax.texts]
        markers = sum(len(collection.get_offsets()) for collection in ax.collections)
    finally:
        plt.close(ax.figure)
    assert sorted(rows) == sorted(labels) == sorted(r.name for r in rungs)
    assert markers == len(rows)
    on_file = [r for r in ladder.load() if r.corpus == "shakespeare"]
    assert sorted(rows) == sorted(r.name for r in on_file)
