"""Questions about the book, each with the passage that answers it: the labelled set that
retrieval and retrieval-augmented generation are measured on.

The questions live in ``book_questions.json`` beside this module, written for this course.
Each has

- ``question``: what a reader might ask, in their own words (not copied from the book);
- ``answers``: short key phrases; a generated answer is right when it contains one of them
  (case and spacing ignored; :func:`answered`);
- ``doc`` and ``evidence``: the chapter and a passage of the frozen book
  (:func:`tinylm.rag.corpus.load_book`) that answers it, copied exactly.  It must occur exactly
  once in that chapter (:func:`locate` checks).

A chunk is **relevant** to a question when it holds at least half of the evidence's characters
(:func:`relevant`): so relevance is defined for every chunk size and overlap, and a question whose
evidence straddles two chunks has both.

The set is split once, by a hash of each question's id, into a **development** half (for
choosing chunk sizes, fusion depths, prompts) and a **test** half, reported once.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .corpus import Chunk, Document

QUESTIONS_FILE = Path(__file__).with_name("book_questions.json")
SPLITS = ("dev", "test")
MIN_COVER = 0.5
"""The fraction of the evidence's characters a chunk must hold to count as relevant."""


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    answers: tuple[str, ...]
    doc: str
    evidence: str

    @property
    def split(self) -> str:
        """``dev`` or ``test``, fixed by the id alone (see :func:`split_of`)."""
        return split_of(self.id)


def split_of(qid: str) -> str:
    """Half the ids, by the parity of the first byte of their SHA-256, are development questions."""
    return SPLITS[hashlib.sha256(qid.encode()).digest()[0] % 2]


def load(split: str | None = None, path: Path | None = None) -> list[Question]:
    """The questions (of one split if given), in file order."""
    if split is not None and split not in SPLITS:
        raise ValueError(f"the splits are {SPLITS}, got {split!r}")
    data = json.loads(Path(path or QUESTIONS_FILE).read_text(encoding="utf-8"))
    out = [Question(q["id"], q["question"], tuple(q["answers"]), q["doc"], q["evidence"]) for q in data["questions"]]
    ids = [q.id for q in out]
    if len(set(ids)) != len(ids):
        raise ValueError("two questions share an id")
    return [q for q in out if split is None or q.split == split]


def locate(question: Question, docs: Sequence[Document]) -> tuple[int, int]:
    """The character span of the question's evidence in its chapter; a clear error if it is not
    there exactly once (the book changed, or the evidence was not copied exactly)."""
    doc = next((d for d in docs if d.name == question.doc), None)
    if doc is None:
        raise ValueError(f"{question.id}: no chapter {question.doc!r} in the corpus")
    start = doc.text.find(question.evidence)
    if start < 0:
        raise ValueError(f"{question.id}: its evidence is not in chapter {question.doc!r}: {question.evidence[:60]!r}")
    if doc.text.find(question.evidence, start + 1) >= 0:
        raise ValueError(f"{question.id}: its evidence occurs more than once in {question.doc!r}; quote more of it")
    return start, start + len(question.evidence)


def relevant(question: Question, docs: Sequence[Document], chunks: Sequence[Chunk]) -> set[int]:
    """Indices of the chunks that hold at least :data:`MIN_COVER` of the evidence's characters."""
    a, b = locate(question, docs)
    need = MIN_COVER * (b - a)
    return {i for i, c in enumerate(chunks)
            if c.doc == question.doc and min(b, c.end) - max(a, c.start) >= need}


def _normal(text: str) -> str:
    return re.sub(r"\s+", " ", text.lower()).strip()


def answered(text: str, question: Question) -> bool:
    """The scoring rule for generated answers: one of the key phrases appears in ``text``
    (lower-cased, runs of white space made one space)."""
    t = _normal(text)
    return any(_normal(a) in t for a in question.answers)
