"""The book's structure: table of contents, links between chapters and labs, Binder pins,
and the repository URL kept in one place."""

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tinylm_course.book import binder_url

ROOT = Path(__file__).resolve().parent.parent
LABS = sorted(p.stem for p in (ROOT / "labs").glob("*.ipynb"))
REFERENCE_PAGES = {"chapters/ladder", "chapters/bibliography", "chapters/glossary", "chapters/teaching"}
"""Pages in chapters/ that are not chapters: they need not link a lab."""
BOOK_ONLY = {"jupyter-book", "sphinx", "myst-nb", "myst-parser", "sphinx-book-theme", "sphinx-exercise",
             "sphinxcontrib-bibtex", "pyyaml", "playwright", "hypothesis", "trl", "jupyterlab",
             "jieba", "axe-playwright-python"}
"""Pinned in requirements.txt for building and testing the book (and JupyterLab for ``./course lab``),
not needed in Binder (which brings its own JupyterLab)."""


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


def chapters() -> list[str]:
    return [f for f in toc_files() if f.startswith("chapters/") and f not in REFERENCE_PAGES]


def title(page: str) -> str:
    text = (ROOT / f"{page}.md").read_text(encoding="utf-8")
    return re.search(r"^# (.+)$", text, re.M).group(1).strip()


def test_home_page_links_every_chapter_and_names_none_without_a_link():
    """The home page links every page of chapters/ in the table of contents (the bibliography
    aside), and a section of it that names a chapter (by its title, or the part of it after
    "Stage N:" or a colon) links that chapter in the same section."""
    intro = (ROOT / "intro.md").read_text(encoding="utf-8")
    pages = [f for f in toc_files() if f.startswith("chapters/")]
    doc_link = r"\{doc\}`(?:[^`<]*<)?(chapters/\w+)>?`"
    missing = [page for page in pages if page not in set(re.findall(doc_link, intro)) and page != "chapters/bibliography"]
    assert not missing, f"intro.md does not link: {missing}"
    unlinked = []
    body = re.sub(r"^# .*$", "", intro, count=1, flags=re.M)     # the book's title names no chapter
    for section in re.split(r"^#+ ", body, flags=re.M):
        linked = set(re.findall(doc_link, section))
        words = " ".join(re.sub(doc_link, " ", section).split()).lower()
        for page in pages:
            names = [part.strip() for part in re.split(r"[:·]", title(page))]
            names = [n for n in names if len(n.split()) >= 2 and not re.fullmatch(r"(Stage \d+|Applications [IV]+)", n)]
            if page not in linked and any(n.lower() in words for n in names):
                unlinked.append(f"{page} ({title(page)!r}) in the section {section.splitlines()[0]!r}")
    assert not unlinked, f"intro.md names chapters without linking them: {unlinked}"


def linked_labs(page: str) -> set[str]:
    text = (ROOT / f"{page}.md").read_text(encoding="utf-8")
    return set(re.findall(r"\{doc\}`(?:[^`<]*<)?\.\./labs/(\w+)>?`", text))


def test_every_toc_entry_exists():
    for entry in toc_files():
        assert any((ROOT / f"{entry}{ext}").is_file() for ext in (".md", ".ipynb")), f"_toc.yml lists missing {entry}"


def test_every_lab_is_in_the_toc():
    assert LABS, "no labs"
    listed = set(toc_files())
    assert [lab for lab in LABS if f"labs/{lab}" not in listed] == []


@pytest.mark.parametrize("chapter", chapters())
def test_every_chapter_links_a_lab_and_its_exercise_edition(chapter):
    labs = linked_labs(chapter)
    assert labs, f"{chapter} links no lab"
    assert labs <= set(LABS), f"{chapter} links labs that do not exist: {labs - set(LABS)}"
    text = (ROOT / f"{chapter}.md").read_text(encoding="utf-8")
    for lab in labs:
        assert f"{{exercise-binder}}`{lab}`" in text, f"{chapter} links {lab} but not its exercise edition"


def test_every_lab_is_linked_from_a_chapter():
    linked = set().union(*(linked_labs(c) for c in chapters()))
    assert [lab for lab in LABS if lab not in linked] == []


def test_every_lab_links_back_to_a_chapter():
    import nbformat
    for lab in LABS:
        first = nbformat.read(ROOT / "labs" / f"{lab}.ipynb", as_version=4).cells[0]
        assert first.cell_type == "markdown" and re.search(r"\]\(\.\./chapters/\w+\.md\)", first.source), (
            f"the first cell of {lab} should link its chapter, e.g. [Chapter](../chapters/slm.md)")


# Binder --------------------------------------------------------------------------------

def pins(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            name, sep, version = line.partition("==")
            assert sep, f"{path.name}: {line!r} is not pinned with =="
            out[name.strip().lower()] = version.strip()
    return out


def test_binder_pins_the_same_versions_as_requirements():
    course, binder = pins(ROOT / "requirements.txt"), pins(ROOT / "binder" / "requirements.txt")
    assert {name: v for name, v in binder.items() if course.get(name) != v} == {}, "binder/ and requirements.txt disagree"
    assert set(course) - set(binder) == BOOK_ONLY, "Binder lacks a package the labs need (or BOOK_ONLY is stale)"
    assert binder["torch"] == "2.13.0"


def test_binder_uses_the_cpu_torch_and_installs_the_data():
    text = (ROOT / "binder" / "requirements.txt").read_text(encoding="utf-8")
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in text
    assert (ROOT / "binder" / "runtime.txt").read_text().strip() == "python-3.11"
    post = (ROOT / "binder" / "postBuild").read_text(encoding="utf-8")
    assert "set -euo pipefail" in post and "requirements-data.txt" in post and "-e ." in post
    commands = [line.strip() for line in post.splitlines() if line.strip() and not line.startswith("#")]
    assert post.startswith("#!/usr/bin/env bash\n") and commands[0] == "set -euo pipefail", (
        "binder/postBuild must be a bash script whose first command is: set -euo pipefail")
    assert (ROOT / "binder" / "postBuild").stat().st_mode & 0o111, "postBuild must be executable"


# The repository URL --------------------------------------------------------------------

def config() -> dict:
    return yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))


def test_repository_url_lives_in_one_place():
    url = config()["repository"]["url"]
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    holders = [f for f in tracked if (ROOT / f).is_file() and f.endswith((".md", ".yml", ".py", ".txt", ".ipynb", ".cfg", ".toml"))
               and url.removeprefix("https://") in (ROOT / f).read_text(encoding="utf-8", errors="replace")]
    assert holders == ["_config.yml"]


def test_binder_url_for_the_exercise_edition():
    cfg = config()
    theme = {"repository_url": cfg["repository"]["url"], "repository_branch": cfg["repository"]["branch"],
             "launch_buttons": cfg["launch_buttons"]}
    org_repo = cfg["repository"]["url"].removeprefix("https://github.com/")
    assert binder_url(theme, "exercises/lab01_ngrams.ipynb") == (
        f"https://mybinder.org/v2/gh/{org_repo}/main?urlpath=lab/tree/exercises/lab01_ngrams.ipynb")
    with pytest.raises(ValueError, match="repository.url"):
        binder_url({}, "x.ipynb")


def test_every_lab_has_an_exercise_edition():
    assert [lab for lab in LABS if not (ROOT / "exercises" / f"{lab}.ipynb").is_file()] == []


def test_constraints_agree_with_requirements():
    locked = pins(ROOT / "constraints.txt")
    course = pins(ROOT / "requirements.txt")
    assert {name: (v, locked.get(name)) for name, v in course.items() if locked.get(name) != v} == {}, (
        "constraints.txt and requirements.txt disagree: regenerate constraints.txt (see its header)")
    assert "-c ../constraints.txt" in (ROOT / "binder" / "requirements.txt").read_text(encoding="utf-8")


# The glossary --------------------------------------------------------------------------

@pytest.mark.parametrize("chapter", chapters())
def test_every_chapter_ends_with_key_terms(chapter):
    from tinylm_course.book import key_terms
    terms = key_terms(ROOT / f"{chapter}.md")
    assert len(terms) >= 5, f"{chapter} needs a '## Key terms' table (| English | 中文 |) of at least five terms"
    assert all(en and zh for en, zh in terms), f"{chapter}: a key term lacks its English or Chinese name"


def test_glossary_terms_agree_across_chapters():
    from tinylm_course.book import book_chapters, key_terms
    seen, conflicts = {}, []
    for chapter in book_chapters(ROOT):
        for english, chinese in key_terms(ROOT / f"{chapter}.md"):
            if english in seen and seen[english][0] != chinese:
                conflicts.append(f"{english}: {seen[english][0]} ({seen[english][1]}) vs {chinese} ({chapter})")
            seen.setdefault(english, (chinese, chapter))
    assert conflicts == []


def test_glossary_lists_every_term_once():
    from tinylm_course.book import glossary_markdown
    table = glossary_markdown(ROOT).splitlines()
    assert table[0].startswith("| English | 中文 |") and len(table) > 10
    english = [row.split("|")[1].strip() for row in table[2:]]
    assert english == sorted(set(english), key=str.lower)
