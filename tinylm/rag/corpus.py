"""The book as a corpus to search: its chapters as plain text, frozen, and cut into chunks.

Retrieval needs text a reader cares about, and this course has some: its own chapters.  A chapter
is MyST markdown with code cells, directives, glued numbers and citations; :func:`clean` keeps
what a reader sees as prose (headings, paragraphs, tables, math) and drops the machinery.

The chapters change as the book grows, so the labelled questions of :mod:`tinylm.rag.questions`
are written against a **frozen copy**: ``python -m tinylm study rag-book`` cleans the chapters of
:data:`CHAPTERS` at the current commit and writes them to ``checkpoints/study/rag-book/book.json``
(its log records the commit and a hash of the text).  Everything after that reads the frozen copy
(:func:`load_book`), so a changed chapter never silently changes a measured number.

A retriever does not search whole chapters but **chunks**: windows of ``size`` words that overlap
by ``overlap`` words (:func:`chunk`).  Each chunk remembers where it came from (chapter, section,
character offsets), so an answer can cite it and a question's evidence can be located in it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from ..paths import checkpoints_dir, course_root

CHAPTERS = ("what_is_an_llm", "slm", "deep_learning", "tokens", "nlm", "transformer", "plm", "llm",
            "alignment", "using_llms", "ladder")
"""The chapters searched, in book order (their key-terms tables, from which the glossary is made,
are part of them).  The applications chapters are left out: they are about this corpus."""

STUDY = "rag-book"
BOOK_FILE = "book.json"


@dataclass(frozen=True)
class Document:
    """One chapter as plain text; ``sections`` are (character offset, heading) pairs."""

    name: str
    title: str
    text: str
    sections: tuple[tuple[int, str], ...]

    def section_at(self, offset: int) -> str:
        """The heading of the section that holds character ``offset``."""
        title = self.title
        for start, heading in self.sections:
            if start > offset:
                break
            title = heading
        return title


@dataclass(frozen=True)
class Chunk:
    """A window of a document: ``text == document.text[start:end]``."""

    doc: str
    section: str
    start: int
    end: int
    text: str

    @property
    def cite(self) -> str:
        """How an answer names its source: ``chapter § section``."""
        return f"{self.doc} § {self.section}"


# ----------------------------------------------------------------------------- MyST to plain text

_FENCE = re.compile(r"^(`{3,}|~{3,})\s*(\{[^}]*\})?\s*(.*)$")
_ROLE_GLUE = re.compile(r"\{glue(?::\w+)?\}`[^`]*`")
_ROLE_CITE = re.compile(r"\{cite(?::\w+)?\}`([^`]*)`")
_ROLE_OTHER = re.compile(r"\{(?:ref|doc|numref|term|eq|download|math)\}`([^`<]*?)\s*(?:<[^>]*>)?`")
_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_LABEL = re.compile(r"^\([\w.:-]+\)=\s*$")
_OPTION = re.compile(r"^:[\w-]+:.*$")

GLUED = "[n]"
"""What a glued number becomes: the frozen text has no computed values, only prose."""


def clean(markdown: str) -> str:
    """MyST markdown -> the prose a reader sees: code cells, front matter, labels, directive
    options and comments dropped; directive bodies (notes, exercises) kept; roles reduced to their
    text (a glued value to :data:`GLUED`, a citation to its keys in brackets)."""
    text = _COMMENT.sub("", markdown)
    lines = text.split("\n")
    if lines and lines[0].strip() == "---":                       # front matter
        end = next((i for i in range(1, len(lines)) if lines[i].strip() == "---"), 0)
        lines = lines[end + 1:]
    out: list[str] = []
    fences: list[tuple[str, bool]] = []                            # open fences: (marker, kept?)
    for line in lines:
        m = _FENCE.match(line.strip())
        if m:
            marker, directive = m.group(1), m.group(2) or ""
            if fences and line.strip() == fences[-1][0][0] * len(fences[-1][0]) and not directive:
                fences.pop()
                continue
            if not fences or fences[-1][1]:
                keep = directive not in ("", "{code-cell}", "{glue:figure}", "{glue:md}", "{glue}",
                                         "{figure}", "{image}", "{math}", "{bibliography}", "{code}")
                if directive == "{math}":
                    keep = True
                fences.append((marker, keep))
                title = m.group(3).strip()
                if keep and title and directive not in ("{math}",):
                    out.append(title)
                continue
        if fences and not fences[-1][1]:
            continue
        if _LABEL.match(line.strip()) or (fences and _OPTION.match(line.strip())):
            continue
        line = _ROLE_GLUE.sub(GLUED, line)
        line = _ROLE_CITE.sub(lambda c: "[" + c.group(1).replace(",", ", ") + "]", line)
        line = _ROLE_OTHER.sub(lambda r: r.group(1).rsplit("/", 1)[-1], line)
        line = _LINK.sub(lambda l: l.group(1), line)
        out.append(line.rstrip())
    text = "\n".join(out)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def document(name: str, markdown: str) -> Document:
    """A cleaned chapter with its title (the first heading) and the offsets of its headings."""
    text = clean(markdown)
    sections = []
    for m in re.finditer(r"^(#{1,6})\s+(.+)$", text, re.M):
        sections.append((m.start(), m.group(2).strip()))
    if not sections:
        raise ValueError(f"chapter {name!r} has no heading")
    return Document(name, sections[0][1], text, tuple(sections))


def read_chapters(chapters=CHAPTERS, root: Path | None = None) -> list[Document]:
    """The chapters as they are now in ``chapters/`` (the frozen copy is :func:`load_book`)."""
    folder = Path(root or course_root()) / "chapters"
    docs = []
    for name in chapters:
        path = folder / f"{name}.md"
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: the corpus names chapters of the book")
        docs.append(document(name, path.read_text(encoding="utf-8")))
    return docs


def digest(docs: list[Document]) -> str:
    """A short hash of the documents' text, recorded with every measurement on them."""
    h = hashlib.sha256()
    for d in docs:
        h.update(d.name.encode() + b"\0" + d.text.encode("utf-8") + b"\0")
    return h.hexdigest()[:16]


def book_path() -> Path:
    return checkpoints_dir() / "study" / STUDY / BOOK_FILE


def save_book(docs: list[Document], path: Path | None = None) -> Path:
    path = Path(path or book_path())
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"digest": digest(docs), "documents": [asdict(d) for d in docs]}
    path.write_text(json.dumps(data, ensure_ascii=False, indent=0), encoding="utf-8")
    return path


def load_book(path: Path | None = None) -> list[Document]:
    """The frozen chapters; the error names the command that writes them."""
    path = Path(path or book_path())
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: it is written by `python -m tinylm study {STUDY}`")
    data = json.loads(path.read_text(encoding="utf-8"))
    docs = [Document(d["name"], d["title"], d["text"], tuple(tuple(s) for s in d["sections"]))
            for d in data["documents"]]
    if digest(docs) != data["digest"]:
        raise ValueError(f"{path} was changed by hand: its hash is not the one it was written with")
    return docs


def run(out_dir: Path | None = None) -> dict:
    """The study ``rag-book``: freeze the chapters of :data:`CHAPTERS` as they are at this commit."""
    from ..usage import studies

    log = studies.started()
    docs = read_chapters()
    path = save_book(docs, (Path(out_dir) / BOOK_FILE) if out_dir else None)
    log.update({"chapters": list(CHAPTERS), "digest": digest(docs),
                "characters": {d.name: len(d.text) for d in docs},
                "words": sum(len(d.text.split()) for d in docs), "file": path.name})
    return studies.save(STUDY, log)


# ----------------------------------------------------------------------------- chunks

_WORD = re.compile(r"\S+")


def chunk(docs: list[Document], size: int, overlap: int = 0) -> list[Chunk]:
    """Cut every document into windows of ``size`` words, each starting ``size - overlap`` words
    after the one before; the last window of a document may be shorter.  A window never crosses
    from one document into the next."""
    if size < 1:
        raise ValueError(f"a chunk holds at least one word, got size={size}")
    if not 0 <= overlap < size:
        raise ValueError(f"the overlap must be at least 0 and less than the size ({size}), got {overlap}")
    if not docs or not any(d.text.strip() for d in docs):
        raise ValueError("the corpus is empty: there is nothing to cut into chunks")
    step = size - overlap
    chunks = []
    for d in docs:
        words = [(m.start(), m.end()) for m in _WORD.finditer(d.text)]
        for first in range(0, len(words), step):
            last = min(first + size, len(words)) - 1
            a, b = words[first][0], words[last][1]
            chunks.append(Chunk(d.name, d.section_at(a), a, b, d.text[a:b]))
            if last == len(words) - 1:
                break
    return chunks
