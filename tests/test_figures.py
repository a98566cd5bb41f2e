"""Every figure teaches: a numbered caption, a name, alt text a reader can use, and a sharp image.

Static checks, nothing is executed:

- **labs**: every cell with an image output carries myst-nb metadata
  (``"mystnb": {"figure": {"caption": ..., "name": "fig-labNN-..."}, "image": {"alt": ...}}``),
  and its images are SVG, or PNG at twice their displayed size ("retina": the output's metadata gives
  a width and height half the pixel size);
- **chapters** (every chapter of ``_toc.yml`` but the reference pages): every code cell that shows a
  figure has the same metadata in its header, the setup cell asks for SVG figures, and at least one
  figure is a conceptual diagram (its name contains ``diagram``);
- ``tinylm.analysis.plots.attention_map`` writes token labels that do not overlap, at a readable size.
"""

from __future__ import annotations

import base64
import json
import re
import struct
from pathlib import Path

import pytest
import yaml
from test_book import REFERENCE_PAGES      # the pages that are not chapters: one list for every test

ROOT = Path(__file__).resolve().parent.parent
LABS = sorted(p.stem for p in (ROOT / "labs").glob("*.ipynb"))

PNG_LABS: dict[str, str] = {}
"""Labs whose figures are still plain PNGs, and why (they could not be re-executed with
``%config InlineBackend.figure_formats = ["svg"]``).  Empty the entry when the lab is re-executed;
the test below fails on an entry that is no longer needed, so the list stays honest."""

SVG_MAX_BYTES = 400_000
"""Largest SVG figure a lab may hold: beyond it a figure has too many points to be vector art."""

SVG_CONFIG = re.compile(r"""^%config\s+InlineBackend\.figure_formats\s*=\s*\[?\s*["'](svg|retina)["']""", re.M)
SHOWS_FIGURE = re.compile(r"\bplt\.(show|subplots|figure)\(|\bfig\w*\.show\(\)|\bdisplay\(\s*fig"
                          r"|\b(diagrams\.)?(pipeline|diagram)\(|\bladder\.plot\(")
"""A cell that shows a figure: it calls ``plt.show()``, or makes a figure that Jupyter shows at its end."""


def shows_figure(source: str) -> bool:
    """Whether a chapter's code cell shows a figure (one it closes unshown does not count)."""
    if "plt.show()" in source:
        return True
    return bool(SHOWS_FIGURE.search(source)) and "plt.close(" not in source


# ----------------------------------------------------------------------------------------------
# what a caption, a name and alt text must be

def caption_problems(meta: dict, prefix: str) -> list[str]:
    """What is missing or wrong in a cell's ``mystnb`` figure metadata (empty if nothing)."""
    mystnb = meta.get("mystnb") or {}
    figure, image = mystnb.get("figure") or {}, mystnb.get("image") or {}
    caption, name, alt = figure.get("caption"), figure.get("name"), image.get("alt")
    problems = []
    if not isinstance(caption, str) or len(caption.split()) < 6:
        problems.append(f"caption {caption!r} (want one or two sentences: what it shows, what to notice)")
    if not isinstance(name, str) or not re.fullmatch(re.escape(prefix) + r"[a-z0-9][a-z0-9_-]*", name):
        problems.append(f"name {name!r} (want {prefix}<short-name>)")
    if not is_sentence(alt):
        problems.append(f"alt text {alt!r} (want a sentence saying what the figure shows)")
    return problems


def is_sentence(alt) -> bool:
    """Alt text that describes: several words ending in a full stop, not a file name or a hash."""
    if not isinstance(alt, str):
        return False
    text = alt.strip()
    return (len(text.split()) >= 6 and text.endswith((".", ".)")) and text[0].isupper()
            and not re.search(r"\.(png|svg|jpe?g)\b|\b[0-9a-f]{16,}\b", text))


def test_is_sentence_refuses_file_names_and_hashes():
    assert is_sentence("A line chart of loss against steps, falling steadily.")
    assert not is_sentence("d285bafee07e24dc0142ec833bd3efe7ea65d4d0bbdaffa6cf76a5947ab51e5c.png")
    assert not is_sentence("figure")
    assert not is_sentence(None)
    assert caption_problems({}, "fig-lab01-") and not caption_problems(
        {"mystnb": {"figure": {"caption": "What it shows, and what to notice in it.", "name": "fig-lab01-x"},
                    "image": {"alt": "A chart of one thing against another, rising."}}}, "fig-lab01-")


# ----------------------------------------------------------------------------------------------
# labs

def load_lab(lab: str) -> dict:
    return json.loads((ROOT / "labs" / f"{lab}.ipynb").read_text(encoding="utf-8"))


def image_outputs(cell: dict) -> list[tuple[str, dict, dict]]:
    """(mime type, data, metadata) of every image in a cell's outputs."""
    found = []
    for output in cell.get("outputs", []):
        for mime, data in output.get("data", {}).items():
            if mime.startswith("image/"):
                found.append((mime, data, output.get("metadata", {})))
    return found


def png_size(data) -> tuple[int, int]:
    """Pixel width and height of a base64 PNG (from its IHDR chunk)."""
    raw = base64.b64decode("".join(data) if isinstance(data, list) else data)
    assert raw[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", raw[16:24])


def lab_prefix(lab: str) -> str:
    return f"fig-{lab[:5]}-"           # lab07_word2vec -> fig-lab07-


@pytest.mark.parametrize("lab", LABS)
def test_every_lab_figure_has_a_caption_a_name_and_alt_text(lab):
    problems = []
    for index, cell in enumerate(load_lab(lab)["cells"]):
        if cell["cell_type"] == "code" and image_outputs(cell):
            problems += [f"{lab}, cell {index} ({cell.get('id')}): {p}"
                         for p in caption_problems(cell.get("metadata", {}), lab_prefix(lab))]
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize("lab", LABS)
def test_figure_metadata_only_on_cells_with_a_figure(lab):
    stale = [f"{lab}, cell {i}" for i, cell in enumerate(load_lab(lab)["cells"])
             if "figure" in (cell.get("metadata", {}).get("mystnb") or {}) and not image_outputs(cell)]
    assert stale == [], f"figure metadata on cells that show no figure: {stale}"


@pytest.mark.parametrize("lab", LABS)
def test_lab_images_are_svg_or_retina_png(lab):
    problems, plain = [], 0
    for index, cell in enumerate(load_lab(lab)["cells"]):
        for mime, data, meta in image_outputs(cell):
            if mime == "image/svg+xml":
                size = len("".join(data) if isinstance(data, list) else data)
                if size > SVG_MAX_BYTES:
                    problems.append(f"cell {index}: an SVG of {size:,} bytes (rasterise its dense layer, or use retina PNG)")
                continue
            if mime != "image/png":
                problems.append(f"cell {index}: {mime}")
                continue
            width, height = png_size(data)
            shown = meta.get("image/png", {})
            if shown.get("width") == width // 2 and shown.get("height") == height // 2:
                continue                                  # a 2x ("retina") PNG
            plain += 1
            problems.append(f"cell {index}: a {width}x{height} PNG shown at its own size (want SVG or 2x PNG)")
    if lab in PNG_LABS:
        assert plain, f"{lab} has no plain PNG left: remove it from PNG_LABS"
        return
    assert problems == [], f"{lab}: " + "; ".join(problems)


@pytest.mark.parametrize("lab", LABS)
def test_lab_with_figures_asks_for_svg_in_its_first_code_cell(lab):
    cells = load_lab(lab)["cells"]
    if lab in PNG_LABS or not any(image_outputs(c) for c in cells):
        return
    first = next(c for c in cells if c["cell_type"] == "code")
    source = "".join(first["source"])
    if not SVG_CONFIG.search(source):
        pytest.fail(f"{lab}: the first code cell should set %config InlineBackend.figure_formats = [\"svg\"]")


def test_png_labs_are_labs():
    assert set(PNG_LABS) <= set(LABS)


# ----------------------------------------------------------------------------------------------
# chapters

def toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    files = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections"))
    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return files


CHAPTERS = [f for f in toc_files() if f.startswith("chapters/") and f not in REFERENCE_PAGES]


def code_cells(text: str) -> list[tuple[int, dict, str]]:
    """(line number, options, source) of every ``{code-cell}`` of a MyST notebook.

    Options are either a YAML block between two ``---`` lines at the top of the cell or
    ``:key: value`` lines.
    """
    lines = text.split("\n")
    cells, i = [], 0
    while i < len(lines):
        fence = re.match(r"^(`{3,}|~{3,})\{code-cell\}", lines[i])
        if not fence:
            i += 1
            continue
        start, marker = i + 1, fence.group(1)
        j = i + 1
        while j < len(lines) and lines[j].rstrip() != marker:
            j += 1
        body = lines[i + 1:j]
        options: dict = {}
        if body and body[0].strip() == "---":
            end = next(k for k in range(1, len(body)) if body[k].strip() == "---")
            options = yaml.safe_load("\n".join(body[1:end])) or {}
            body = body[end + 1:]
        else:
            while body and re.match(r"^:[\w-]+:", body[0]):
                key, _, value = body[0][1:].partition(":")
                options[key] = yaml.safe_load(value.strip()) if value.strip() else None
                body = body[1:]
        cells.append((start, options, "\n".join(body)))
        i = j + 1
    return cells


def test_code_cells_reads_both_kinds_of_header():
    text = ("```{code-cell} python\n:tags: [remove-cell]\n%config X\n```\n\n"
            "````{code-cell} python\n---\ntags: [remove-input]\nmystnb:\n  figure:\n    name: fig-a\n---\n"
            "plt.show()\n````\n")
    (l1, o1, s1), (l2, o2, s2) = code_cells(text)
    assert (l1, o1, s1) == (1, {"tags": ["remove-cell"]}, "%config X")
    assert o2["mystnb"]["figure"]["name"] == "fig-a" and s2 == "plt.show()" and l2 == 6


def chapter_cells(chapter: str):
    return code_cells((ROOT / f"{chapter}.md").read_text(encoding="utf-8"))


def where(chapter: str, line: int, source: str) -> str:
    first = next((s for s in source.split("\n") if s.strip()), "")
    return f"{chapter}.md, the code cell at line {line} ({first.strip()[:60]!r})"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_every_chapter_figure_has_a_caption_a_name_and_alt_text(chapter):
    problems = []
    for line, options, source in chapter_cells(chapter):
        if shows_figure(source):
            problems += [f"{where(chapter, line, source)}: {p}" for p in caption_problems(options, "fig-")]
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_every_chapter_asks_for_svg_figures(chapter):
    cells = chapter_cells(chapter)
    assert cells, f"{chapter}.md has no code cell"
    line, _, source = cells[0]
    if not SVG_CONFIG.search(source):
        pytest.fail(f"{where(chapter, line, source)}: the setup cell should set "
                    '%config InlineBackend.figure_formats = ["svg"]')


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_every_chapter_has_a_conceptual_diagram(chapter):
    names = [((options.get("mystnb") or {}).get("figure") or {}).get("name") for _, options, _ in chapter_cells(chapter)]
    if not any(isinstance(n, str) and "diagram" in n for n in names):
        pytest.fail(f"{chapter}.md: no figure whose name contains 'diagram' (its figures: {[n for n in names if n]})")


def test_figure_names_are_unique_in_the_book():
    names = []
    for chapter in CHAPTERS:
        names += [((o.get("mystnb") or {}).get("figure") or {}).get("name") for _, o, _ in chapter_cells(chapter)]
    for lab in LABS:
        names += [((c.get("metadata", {}).get("mystnb") or {}).get("figure") or {}).get("name")
                  for c in load_lab(lab)["cells"]]
    names = [n for n in names if n]
    assert sorted({n for n in names if names.count(n) > 1}) == []


# ----------------------------------------------------------------------------------------------
# attention maps

def draw_attention(rows: int, cols: int, figsize, queries, keys=None):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from tinylm.analysis import plots

    keys = queries if keys is None else keys
    fig, axes = plt.subplots(rows, cols, figsize=figsize, squeeze=False)
    weights = np.random.default_rng(0).random((len(queries), len(keys)))
    for ax in axes.flat:
        plots.attention_map(ax, weights, queries, keys, title="layer 1, head 1")
    fig.tight_layout()
    fig.canvas.draw()
    return fig, axes[0, 0]


def overlapping(labels, along: str) -> list[tuple[str, str]]:
    """Pairs of neighbouring visible tick labels whose boxes overlap along the axis."""
    boxes = [(t.get_text(), t.get_window_extent()) for t in labels if t.get_visible() and t.get_text()]
    key = (lambda b: b[1].x0) if along == "x" else (lambda b: b[1].y0)
    boxes.sort(key=key)
    hits = []
    for (a, box_a), (b, box_b) in zip(boxes, boxes[1:]):
        if (box_a.x1 > box_b.x0 + 0.5) if along == "x" else (box_a.y1 > box_b.y0 + 0.5):
            hits.append((a, b))
    return hits


@pytest.mark.parametrize("rows, cols, figsize, text", [
    (2, 4, (16, 8.2), "The instruments of darkness tell us truths;"),    # Lab 10's grid of heads
    (1, 1, (5.5, 5.5), "The instruments of darkness tell us truths;"),
    (1, 1, (4, 4), "x" * 150),                                             # too many tokens: thinned
])
def test_attention_map_labels_are_readable_and_do_not_overlap(rows, cols, figsize, text):
    import matplotlib.pyplot as plt

    from tinylm.analysis import plots

    fig, ax = draw_attention(rows, cols, figsize, list(text))
    try:
        for along, labels in (("x", ax.get_xticklabels()), ("y", ax.get_yticklabels())):
            assert overlapping(labels, along) == [], f"{along} labels overlap"
            assert min(t.get_fontsize() for t in labels) >= plots.LABEL_FONT_MIN
        shown = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
        assert 0 < len(shown) <= len(text)
    finally:
        plt.close(fig)


def test_attention_map_font_follows_the_number_of_tokens_and_rotates_long_keys():
    import matplotlib.pyplot as plt

    few, ax_few = draw_attention(1, 1, (5, 5), list("abcdefgh"))
    many, ax_many = draw_attention(1, 1, (5, 5), list("abcdefgh" * 5))
    words, ax_words = draw_attention(1, 1, (5, 5), ["the", "cat", "sat", "[EOS]"])
    try:
        size = lambda ax: ax.get_yticklabels()[0].get_fontsize()
        assert size(ax_few) > size(ax_many)
        assert {t.get_rotation() for t in ax_words.get_xticklabels()} == {90.0}
        assert {t.get_rotation() for t in ax_few.get_xticklabels()} == {0.0}      # single characters stay upright
        assert [t.get_text() for t in ax_words.get_xticklabels()] == ["the", "cat", "sat", "[EOS]"]
    finally:
        for fig in (few, many, words):
            plt.close(fig)
