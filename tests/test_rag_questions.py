"""The labelled questions about the book (tinylm/rag/book_questions.json): every one is located in
the frozen book, answered by its evidence and not by its own wording, and findable by chunks of
any size the labs use."""

import re

import pytest

from tinylm.rag import corpus, questions


@pytest.fixture(scope="module")
def book():
    return corpus.load_book()


@pytest.fixture(scope="module")
def qs():
    return questions.load()


def chinese(text: str) -> bool:
    """A question asked in Chinese: at least four Chinese characters (an English question may
    name one Chinese term, but not write a sentence)."""
    return len(re.findall(r"[\u4e00-\u9fff]", text)) >= 4


def test_ids_unique_numbered_in_order(qs):
    ids = [q.id for q in qs]
    assert len(set(ids)) == len(ids)
    assert ids == [f"q{i:03d}" for i in range(1, len(ids) + 1)]


def test_enough_questions_in_each_split_and_language(qs):
    assert len(qs) >= 90
    for split in questions.SPLITS:
        part = questions.load(split)
        assert len(part) >= 40, split
        assert sum(chinese(q.question) for q in part) >= 5, split
    assert sum(chinese(q.question) for q in qs) >= 10
    assert {q.doc for q in qs} == set(corpus.CHAPTERS)


def test_every_evidence_located_once_and_in_book_order(qs, book):
    order = {name: i for i, name in enumerate(corpus.CHAPTERS)}
    places = []
    for q in qs:
        a, b = questions.locate(q, book)                 # raises unless exactly once
        doc = next(d for d in book if d.name == q.doc)
        assert doc.text[a:b] == q.evidence
        assert 10 <= len(q.evidence.split()) <= 40, q.id
        places.append((order[q.doc], a))
    assert places == sorted(places)


def test_evidence_answers_and_question_does_not_give_it_away(qs):
    for q in qs:
        assert 1 <= len(q.answers) <= 5 and all(a.strip() for a in q.answers), q.id
        assert questions.answered(q.evidence, q), q.id
        assert not questions.answered(q.question, q), q.id
        assert corpus.GLUED not in " ".join(q.answers), q.id


def test_locate_rejects_evidence_not_copied_exactly(qs, book):
    q = qs[0]
    bad = questions.Question(q.id, q.question, q.answers, q.doc, q.evidence.replace(" ", "  ", 1))
    with pytest.raises(ValueError, match="not in chapter"):
        questions.locate(bad, book)


@pytest.mark.parametrize("size", [64, 128, 256])
@pytest.mark.parametrize("overlap_fraction", [0.0, 0.25])
def test_every_question_has_a_relevant_chunk(qs, book, size, overlap_fraction):
    chunks = corpus.chunk(book, size, int(size * overlap_fraction))
    for q in qs:
        rel = questions.relevant(q, book, chunks)
        assert rel, (q.id, size, overlap_fraction)
        assert all(chunks[i].doc == q.doc for i in rel)
