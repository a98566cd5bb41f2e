"""Launch and download buttons that fit the page (run with tests/browser, after ``./course book``).

A lab page shows the worked lab, solutions folded.  Its launch (Binder) and download (.ipynb)
buttons give the *exercise edition* that a student fills in and hands in, and a note at the top
of the page links the worked lab for self-study and the teachers' page.  Chapters are MyST
Markdown notebooks that Binder would open as text, so they show no launch button, but keep
their download buttons.  The buttons come from sphinx-book-theme and are fitted to the page
by ``tinylm_course/book.py``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

REPO = Path(__file__).resolve().parents[2]
LABS = sorted(path.stem for path in (REPO / "labs").glob("*.ipynb"))
TOC = re.findall(r"^\s*(?:root|- file):\s*(\S+)", (REPO / "_toc.yml").read_text(encoding="utf-8"), re.M)
CHAPTERS = [f"{entry}.html" for entry in TOC if entry.startswith("chapters/")]
SOLUTION_MARKER = "### BEGIN SOLUTION"


def served(page_visit, path: str):
    assert page_visit.status == 200, f"{path} answered HTTP {page_visit.status}, not 200 (rebuild the book?)"
    return page_visit.page


def header_links(page, group: str) -> list[dict]:
    """The links of a header button group (``launch`` or ``download``): text, title and address."""
    return page.eval_on_selector_all(
        f".article-header-buttons .dropdown-{group}-buttons a",
        "links => links.map(a => ({text: a.innerText.trim(), title: a.getAttribute('title') || "
        "a.getAttribute('data-bs-original-title') || '', href: a.href}))")


def fetch(page, url: str) -> tuple[int, bytes]:
    response = page.request.get(url)
    return response.status, response.body()


def notebook(data: bytes) -> dict:
    return json.loads(data.decode("utf-8"))


@pytest.mark.parametrize("lab", LABS)
def test_lab_launches_and_downloads_the_exercise_edition(visit, lab, book_config):
    path = f"labs/{lab}.html"
    page = served(visit(path), path)
    launch = [unquote(link["href"]) for link in header_links(page, "launch")]
    assert launch == [book_config.binder_url(f"exercises/{lab}.ipynb")], (
        f"{path}: the launch buttons should open exercises/{lab}.ipynb in Binder, and only it; they open {launch}")

    downloads = [link for link in header_links(page, "download") if ".ipynb" in link["text"]]
    assert len(downloads) == 1, f"{path}: expected one .ipynb download button, found {downloads}"
    status, data = fetch(page, downloads[0]["href"])
    assert status == 200, f"{path}: the .ipynb download {downloads[0]['href']} answered HTTP {status}"
    served_edition = notebook(data)
    assert served_edition == notebook((REPO / "exercises" / f"{lab}.ipynb").read_bytes()), (
        f"{path}: the .ipynb download is not exercises/{lab}.ipynb (rebuild the book?)")
    assert SOLUTION_MARKER not in data.decode("utf-8")
    assert "exercise edition" in downloads[0]["text"] and "exercise edition" in downloads[0]["title"], downloads[0]


@pytest.mark.parametrize("lab", LABS)
def test_lab_note_links_the_worked_lab_and_says_how_to_hand_in(visit, lab, book_config):
    path = f"labs/{lab}.html"
    page = served(visit(path), path)
    note = page.locator("section .lab-edition-note")
    assert note.count() == 1, f"{path} has no note about the exercise edition and the worked lab"
    first_block = page.evaluate("() => document.querySelector('article section h1').nextElementSibling.className")
    assert "lab-edition-note" in first_block, f"{path}: the note is not the first thing under the title"
    text = " ".join(note.inner_text().split())
    number = int(re.match(r"lab(\d+)", lab).group(1))
    assert f"./course lab {number}" in text and "teacher" in text, text

    links = {a["text"]: a["href"] for a in note.locator("a").evaluate_all(
        "links => links.map(a => ({text: a.innerText.trim(), href: a.href}))")}
    worked = links.get(f"{lab}.ipynb")
    assert worked, f"{path}: the note does not link the worked lab for download: {links}"
    status, data = fetch(page, worked)
    assert status == 200 and notebook(data) == notebook((REPO / "labs" / f"{lab}.ipynb").read_bytes()), (
        f"{path}: the worked lab's download {worked} is not labs/{lab}.ipynb (HTTP {status})")
    assert links.get("see it on GitHub") == f"{book_config.repository_url}/blob/{book_config.branch}/labs/{lab}.ipynb"

    teaching = links.get("setting and grading a lab", "")
    assert urlsplit(teaching).path.endswith("/chapters/teaching.html"), links
    status, _ = fetch(page, teaching)
    assert status == 200, f"{path}: the teachers' page {teaching} answered HTTP {status} (is chapters/teaching in _toc.yml?)"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_has_no_launch_button_but_downloads(visit, chapter):
    page = served(visit(chapter), chapter)
    assert page.locator(".dropdown-launch-buttons").count() == 0, (
        f"{chapter} shows a launch button, but Binder would open its Markdown source as text")
    downloads = header_links(page, "download")
    assert downloads, f"{chapter} lost its download buttons"
    for link in downloads:
        status, _ = fetch(page, link["href"])
        assert status == 200, f"{chapter}: the download {link['href']} answered HTTP {status}"
