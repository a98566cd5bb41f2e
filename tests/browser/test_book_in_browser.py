"""The course's browser check: the built book, opened in a real (headless) chromium.

Run after building the book::

    ./course book
    .venv/bin/python -m pytest -q tests/browser

For every page (the home page, the chapters and every lab in ``labs/``) it checks that the page
loads, logs no JavaScript error, loads nothing from outside localhost (the book must work
offline), shows all its images, has its math typeset by MathJax and its Chinese drawn with real
glyphs (this needs a CJK font on the machine: apt-get install fonts-noto-cjk). It then checks the links a
reader follows from the chapter to the labs and to Binder, what the lab pages show, and saves
screenshots in ``_build/screenshots/`` for a human to look at.

The fixtures (server, browser, ``visit``) are in ``conftest.py``.
"""

from __future__ import annotations

import json
import posixpath
import re
from pathlib import Path
from urllib.parse import parse_qs, unquote, urldefrag, urlsplit

import pytest

REPO = Path(__file__).resolve().parents[2]
LOCAL_HOST = "127.0.0.1"  # where conftest.py serves the book
LABS = sorted(path.stem for path in (REPO / "labs").glob("*.ipynb"))
TOC = re.findall(r"^\s*(?:root|- file):\s*(\S+)", (REPO / "_toc.yml").read_text(encoding="utf-8"), re.M)
PAGES = [f"{entry}.html" for entry in TOC]  # every page of the book: home, chapters, labs, reference
REFERENCE_PAGES = {"chapters/ladder", "chapters/bibliography", "chapters/glossary", "chapters/teaching"}
CHAPTERS = [f"{entry}.html" for entry in TOC if entry.startswith("chapters/") and entry not in REFERENCE_PAGES]
SCREENSHOT_PAGES = ["chapters/slm.html", "labs/lab01_ngrams.html"]


def listing(items) -> str:
    return "".join(f"\n  - {item}" for item in items)


def loaded(visit, path: str):
    """The page's :class:`Visit`, after checking it was served (a failure here names the page)."""
    page_visit = visit(path)
    hint = " (is the page in _toc.yml, and was the book rebuilt?)" if path.startswith("labs/") else ""
    assert page_visit.status == 200, f"{path} answered HTTP {page_visit.status}, not 200{hint}"
    return page_visit


def with_problems(page_visit) -> str:
    return f"\nWhile loading: {listing(page_visit.problems)}" if page_visit.problems else ""


# --------------------------------------------------------------------------- every page


@pytest.mark.parametrize("path", PAGES)
def test_page_loads(visit, path):
    loaded(visit, path)


@pytest.mark.parametrize("path", PAGES)
def test_no_console_errors(visit, path):
    errors = loaded(visit, path).console_errors
    assert not errors, f"{path} logged errors in the console:{listing(errors)}"


@pytest.mark.parametrize("path", PAGES)
def test_no_failed_requests(visit, path):
    page_visit = loaded(visit, path)
    failed = page_visit.failed_requests
    assert not failed, f"{path}: these requests failed:{listing(failed)}{with_problems(page_visit)}"


@pytest.mark.parametrize("path", PAGES)
def test_works_offline(visit, path):
    external = loaded(visit, path).external_requests
    assert not external, (
        f"{path} requested resources from outside {LOCAL_HOST} (blocked; the book must work offline):"
        f"{listing(external)}")


@pytest.mark.parametrize("path", PAGES)
def test_images_are_shown(visit, path):
    page_visit = loaded(visit, path)
    broken = page_visit.page.evaluate("""() => Array.from(document.images)
        .filter(img => !(img.complete && img.naturalWidth > 0))
        .map(img => img.currentSrc || img.getAttribute('src') || img.outerHTML)""")
    assert not broken, f"{path}: these images did not load:{listing(broken)}{with_problems(page_visit)}"


@pytest.mark.parametrize("path", PAGES)
def test_math_is_rendered(visit, path):
    page_visit = loaded(visit, path)
    math = page_visit.page.evaluate("""() => {
        const maths = Array.from(document.querySelectorAll('.math'));
        return {
            count: maths.length,
            containers: document.querySelectorAll('mjx-container').length,
            unrendered: maths.filter(m => !m.querySelector('mjx-container'))
                             .map(m => m.textContent.trim().replace(/\\s+/g, ' ').slice(0, 100)),
            // TeX errors show as <mjx-merror>; undefined macros (MathJax's noundefined package)
            // as a red backslash-name in the formula: report the TeX source of both.
            errors: Array.from(window.MathJax?.startup?.document?.math || [])
                .filter(item => item.typesetRoot && item.typesetRoot.querySelector(
                    'mjx-merror, mjx-mtext[style*="color: red"] > mjx-c.mjx-c5C:first-child'))
                .map(item => item.math.trim().replace(/\\s+/g, ' ').slice(0, 100)),
            merrors: document.querySelectorAll('mjx-merror').length,
        };
    }""")
    if not math["count"]:
        return  # no math on this page
    assert math["containers"] > 0, (
        f"{path} has {math['count']} math elements but MathJax rendered none of them{with_problems(page_visit)}")
    assert not math["unrendered"], (
        f"{path}: MathJax left these formulas as raw TeX:{listing(math['unrendered'])}{with_problems(page_visit)}")
    assert not math["errors"] and not math["merrors"], (
        f"{path}: MathJax could not typeset these formulas (TeX errors or undefined macros):"
        f"{listing(math['errors']) or ' (' + str(math['merrors']) + ' mjx-merror elements)'}")


_CHINESE_WITHOUT_GLYPHS = """() => {
    // Chinese characters this browser cannot draw: drawn on a canvas in the page's font (and in
    // the font MathJax uses for non-TeX text), they look exactly like an unassigned code point,
    // i.e. a blank or a box. Happens on machines without any CJK font.
    const chars = [...new Set(document.body.innerText.match(/[\\u3400-\\u9fff]/g) || [])].slice(0, 60);
    const canvas = document.createElement('canvas');
    canvas.width = canvas.height = 48;
    const ctx = canvas.getContext('2d', {willReadFrequently: true});
    const draw = (text, family) => {
        ctx.clearRect(0, 0, 48, 48);
        ctx.font = `32px ${family}`;
        ctx.fillText(text, 4, 38);
        return ctx.getImageData(0, 0, 48, 48).data.join();
    };
    const families = [getComputedStyle(document.body).fontFamily];
    if (document.querySelector('mjx-utext')) families.push(getComputedStyle(document.querySelector('mjx-utext')).fontFamily);
    const missing = [];
    for (const family of families) {
        const notdef = draw('\\u{10FFFD}', family);
        const bad = chars.filter(ch => draw(ch, family) === notdef);
        if (bad.length) missing.push(`${bad.join('')} in font ${family}`);
    }
    return missing;
}"""


@pytest.mark.parametrize("path", PAGES)
def test_chinese_text_is_drawn(visit, path):
    """The course quotes Chinese, also inside formulas; a machine without a CJK font shows boxes
    in the text and blanks in the math (and in the screenshots), so say so instead."""
    missing = loaded(visit, path).page.evaluate(_CHINESE_WITHOUT_GLYPHS)
    assert not missing, (
        f"{path}: this browser has no glyphs for these Chinese characters:{listing(missing)}\n"
        f"Install a CJK font on this machine: apt-get install fonts-noto-cjk")


@pytest.mark.parametrize("path", SCREENSHOT_PAGES)
def test_screenshot(visit, path, screenshot_dir):
    """Saves a full-page screenshot in ``_build/screenshots/`` for a human to look at."""
    page_visit = loaded(visit, path)
    target = screenshot_dir / (path.removesuffix(".html").replace("/", "_") + ".png")
    page_visit.page.screenshot(path=str(target), full_page=True)
    assert target.stat().st_size > 10_000, f"the screenshot of {path} ({target}) is suspiciously small"


# --------------------------------------------------------------------------- the chapter


def roles_in(markdown: Path, role: str) -> list[str]:
    """The targets of ``{role}`target``` (or ``{role}`title <target>```) in a MyST file."""
    targets = []
    for text in re.findall(r"\{" + re.escape(role) + r"\}`([^`]+)`", markdown.read_text(encoding="utf-8")):
        match = re.search(r"<([^<>]+)>\s*$", text)
        targets.append((match.group(1) if match else text).strip())
    return targets


def labs_referenced_by(markdown: Path) -> set[str]:
    """The labs of ``labs/`` that a chapter references with ``{doc}``."""
    folder = markdown.parent.relative_to(REPO).as_posix()
    labs = set()
    for target in roles_in(markdown, "doc"):
        doc = target.lstrip("/") if target.startswith("/") else posixpath.normpath(posixpath.join(folder, target))
        if doc.startswith("labs/") and (REPO / f"{doc}.ipynb").is_file():
            labs.add(doc.removeprefix("labs/"))
    return labs


def hrefs(page, selector: str) -> list[str]:
    """The absolute addresses of the links matching ``selector``."""
    return page.eval_on_selector_all(selector, "links => links.map(link => link.href)")


def local_lab_links(page) -> dict[str, str]:
    """``{url: lab}`` for the chapter's links into ``labs/`` of the served book."""
    links = {}
    for href in hrefs(page, "a[href*='labs/']"):
        url = urldefrag(href).url
        parts = urlsplit(url)
        if parts.hostname == LOCAL_HOST and "/labs/" in parts.path:
            links[url] = posixpath.basename(parts.path).removesuffix(".html")
    return links


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_lab_links_resolve(chapter, visit):
    page_visit = loaded(visit, chapter)
    links = local_lab_links(page_visit.page)
    assert links, f"{chapter} has no link to a lab"
    broken = []
    for url in sorted(links):
        response = page_visit.page.context.request.get(url)
        if response.status != 200:
            broken.append(f"{url} (HTTP {response.status})")
    assert not broken, f"{chapter}: these links to labs are broken:{listing(broken)}"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_links_every_lab_it_references(chapter, visit):
    page_visit = loaded(visit, chapter)
    source = REPO / chapter.replace(".html", ".md")
    referenced = labs_referenced_by(source)
    assert referenced, f"{source.name} references no lab of labs/ with {{doc}}: did the lab folder move?"
    linked = set(local_lab_links(page_visit.page).values())
    missing = sorted(referenced - linked)
    assert not missing, (
        f"{source.name} references these labs with {{doc}}, but {chapter} has no link to them:{listing(missing)}"
        f"\nLinked labs: {sorted(linked)}")


def binder_path(url: str) -> str:
    """The repository path a (decoded) Binder URL opens: ``...?urlpath=lab/tree/PATH`` -> PATH."""
    urlpath = parse_qs(urlsplit(url).query).get("urlpath", [""])[0]
    return urlpath.removeprefix("lab/tree/")


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_exercise_binder_links(chapter, visit, book_config):
    page_visit = loaded(visit, chapter)
    links = [unquote(href) for href in hrefs(page_visit.page, "a.exercise-binder")]
    source = REPO / chapter.replace(".html", ".md")
    expected_labs = set(roles_in(source, "exercise-binder"))
    assert links or not expected_labs, f"{chapter} shows no exercise-edition link (class exercise-binder)"

    wrong, missing_files, labs = [], [], set()
    for link in links:
        path = binder_path(link)
        lab = posixpath.basename(path).removesuffix(".ipynb")
        labs.add(lab)
        if link != book_config.binder_url(f"exercises/{lab}.ipynb"):
            wrong.append(f"{link}\n    expected {book_config.binder_url(f'exercises/{lab}.ipynb')}")
        if not (REPO / path).is_file():
            missing_files.append(f"{link} opens {path}, which is not in the repository")
    assert not wrong, f"{chapter}: these exercise-edition links do not match _config.yml:{listing(wrong)}"
    assert not missing_files, f"{chapter}: these exercise-edition links open missing files:{listing(missing_files)}"
    assert labs == expected_labs, (
        f"{chapter} links the exercise editions of {sorted(labs)}, "
        f"but {source.name} uses {{exercise-binder}} for {sorted(expected_labs)}")


# --------------------------------------------------------------------------- the labs


def stored_outputs(lab: str) -> dict:
    """What ``labs/LAB.ipynb`` stores and the book shows: cells with outputs, image outputs, and
    the stream lines."""
    notebook = json.loads((REPO / "labs" / f"{lab}.ipynb").read_text(encoding="utf-8"))
    shown = [cell for cell in notebook["cells"]
             if cell["cell_type"] == "code" and cell.get("outputs")
             and not {"remove-output", "remove-cell"} & set(cell.get("metadata", {}).get("tags", []))]
    # A cell tagged remove-stderr shows its other outputs but not its stderr (the book hides it).
    outputs = [output for cell in shown for output in cell["outputs"]
               if not (output.get("name") == "stderr"
                       and "remove-stderr" in cell.get("metadata", {}).get("tags", []))]
    stream_lines = []
    for output in outputs:
        if output.get("output_type") == "stream":
            text = "".join(output.get("text", ""))
            line = next((line.strip() for line in text.splitlines() if line.strip()), None)
            if line:
                stream_lines.append(" ".join(line.split()))
    return {
        "cells": len(shown),
        "images": sum(any(key.startswith("image/") for key in output.get("data", {})) for output in outputs),
        "stream_lines": stream_lines,
    }


@pytest.mark.parametrize("lab", LABS)
def test_lab_shows_its_stored_outputs(visit, lab):
    path = f"labs/{lab}.html"
    page_visit = loaded(visit, path)
    stored = stored_outputs(lab)
    assert stored["cells"], f"labs/{lab}.ipynb has no stored outputs: run it and save it with its outputs"
    shown = page_visit.page.evaluate("""() => {
        const outputs = Array.from(document.querySelectorAll('.cell_output'));
        return {
            count: outputs.length,
            texts: outputs.map(o => o.innerText.replace(/\\s+/g, ' ').trim()).filter(Boolean),
            images: document.querySelectorAll('.cell_output img').length,
        };
    }""")
    assert shown["count"] == stored["cells"], (
        f"{path} shows {shown['count']} cell outputs, but labs/{lab}.ipynb stores outputs for {stored['cells']} cells")
    assert shown["texts"], f"{path}: every cell output is empty"
    page_text = " ".join(shown["texts"])
    not_shown = [line for line in stored["stream_lines"] if line not in page_text]
    assert not not_shown, f"{path} does not show these printed outputs of labs/{lab}.ipynb:{listing(not_shown)}"
    if stored["images"]:
        assert shown["images"] >= 1, (
            f"{path} shows no output image, but labs/{lab}.ipynb stores {stored['images']} image output(s)")


@pytest.mark.parametrize("lab", LABS)
def test_lab_binder_button(visit, lab, book_config):
    path = f"labs/{lab}.html"
    page_visit = loaded(visit, path)
    hub_host = urlsplit(book_config.binderhub_url).netloc
    links = [unquote(href) for href in hrefs(page_visit.page, f"a[href*='{hub_host}']")]
    expected = book_config.binder_url(f"exercises/{lab}.ipynb")  # the edition a student fills in
    assert expected in links, (
        f"{path} has no Binder launch button opening exercises/{lab}.ipynb.\n  expected {expected}"
        f"\nBinder links on the page:{listing(links) or ' none'}")
    worked = book_config.binder_url(f"labs/{lab}.ipynb")
    assert worked not in links, f"{path} launches the worked lab (the solutions) in Binder: {worked}"
    missing = [f"{link} opens {binder_path(link)!r}" for link in links if not (REPO / binder_path(link)).is_file()]
    assert not missing, f"{path}: these Binder links open files that are not in the repository:{listing(missing)}"
