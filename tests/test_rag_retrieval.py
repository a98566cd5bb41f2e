"""The book as a corpus, chunks, labelled questions and the retrievers' arithmetic."""

import numpy as np
import pytest

from tinylm.rag import corpus, questions, retrieval
from tinylm.rag.corpus import Document

CHAPTER = """---
jupytext: {}
---

# A chapter

Prose with a glued {glue:text}`some_number` value and a citation {cite:p}`lewis2020,yao2023`.

```{code-cell} python
:tags: [remove-cell]
secret_code = 1
```

(a-label)=
## A section

A [link to a lab](../labs/lab01.ipynb) and {doc}`../labs/lab02_chinese`.

```{note}
:class: dropdown
Kept: a note's body.
```

<!-- a comment -->
"""


def test_clean_keeps_the_prose_and_drops_the_machinery():
    text = corpus.clean(CHAPTER)
    assert "secret_code" not in text and "jupytext" not in text and "a comment" not in text
    assert "(a-label)=" not in text and ":class:" not in text and "```" not in text
    assert f"glued {corpus.GLUED} value" in text and "[lewis2020, yao2023]" in text
    assert "A link to a lab and lab02_chinese." in text and "Kept: a note's body." in text
    doc = corpus.document("c", CHAPTER)
    assert doc.title == "A chapter" and [h for _, h in doc.sections] == ["A chapter", "A section"]
    assert doc.section_at(doc.text.index("Kept")) == "A section"


def doc_of(n_words: int, name: str = "d") -> Document:
    text = "# T\n" + " ".join(f"w{i}" for i in range(n_words))
    return Document(name, "T", text, ((0, "T"),))


@pytest.mark.parametrize("size,overlap", [(5, 0), (5, 2), (7, 6), (1, 0), (200, 10)])
def test_chunks_cover_every_word_in_order_with_the_overlap_asked(size, overlap):
    docs = [doc_of(53), doc_of(8, "e")]
    chunks = corpus.chunk(docs, size, overlap)
    for c in chunks:
        d = next(d for d in docs if d.name == c.doc)
        assert d.text[c.start:c.end] == c.text and len(c.text.split()) <= size
    for d in docs:
        mine = [c for c in chunks if c.doc == d.name]
        assert mine[0].start == 0 and mine[-1].end == len(d.text)          # nothing lost at either end
        for a, b in zip(mine, mine[1:]):
            shared = len(set(a.text.split()) & set(b.text.split()))
            assert shared == min(overlap, len(b.text.split()))


def test_bad_chunking_and_empty_corpora_are_refused_clearly():
    with pytest.raises(ValueError, match="empty"):
        corpus.chunk([], 10)
    with pytest.raises(ValueError, match="overlap"):
        corpus.chunk([doc_of(5)], 4, 4)
    with pytest.raises(ValueError, match="at least one word"):
        corpus.chunk([doc_of(5)], 0)
    with pytest.raises(ValueError, match="empty"):
        retrieval.BM25([])
    with pytest.raises(ValueError, match="query is empty"):
        retrieval.BM25(["a text"]).rank("   ")


TEXTS = ["the cat sat on the mat", "dogs chase cats in the park", "a language model predicts the next token",
         "the next word is predicted by counting", "猫坐在垫子上", "retrieval finds the chunk that answers"]


@pytest.mark.parametrize("query", ["cat mat", "next token model", "counting word", "猫 垫子", "park dogs chase retrieval"])
def test_our_bm25_gives_the_scores_of_rank_bm25(query):
    rank_bm25 = pytest.importorskip("rank_bm25")
    ours = retrieval.BM25(TEXTS)
    theirs = rank_bm25.BM25Okapi([retrieval.words(t) for t in TEXTS])
    np.testing.assert_allclose(ours.scores(query), theirs.get_scores(retrieval.words(query)), rtol=1e-12)


def test_bm25_ranks_the_chunk_with_the_rare_words_first():
    bm25 = retrieval.BM25(TEXTS)
    assert bm25.rank("which chunk answers retrieval", 1) == [5]
    assert bm25.rank("predicts next token", 2)[0] == 2


def test_reciprocal_rank_fusion_by_hand():
    # chunk 7: ranks 1 and 3 -> 1/61 + 1/63; chunk 3: ranks 2 and 1 -> 1/62 + 1/61 (more)
    fused = retrieval.reciprocal_rank_fusion([[7, 3, 5], [3, 9, 7]])
    assert fused == [3, 7, 9, 5]
    assert retrieval.reciprocal_rank_fusion([[1, 2]], top=1) == [1]
    with pytest.raises(ValueError):
        retrieval.reciprocal_rank_fusion([])


def test_recall_and_mrr_by_hand():
    rankings = [[4, 1, 2], [0, 3, 5], [9, 8, 7]]
    relevant = [{1}, {0, 5}, {2}]
    assert retrieval.recall_at(rankings, relevant, 1) == pytest.approx(1 / 3)
    assert retrieval.recall_at(rankings, relevant, 2) == pytest.approx(2 / 3)
    assert retrieval.mean_reciprocal_rank(rankings, relevant) == pytest.approx((1 / 2 + 1 + 0) / 3)
    with pytest.raises(ValueError, match="no relevant"):
        retrieval.first_relevant_rank([1], set())


def test_a_chunk_is_relevant_when_it_holds_half_the_evidence():
    doc = doc_of(40)
    q = questions.Question("x", "?", ("w10",), "d", " ".join(f"w{i}" for i in range(10, 16)))
    chunks = corpus.chunk([doc], 12, 0)          # w0..w11, w12..w23, ...: the evidence w10..w15 straddles two
    rel = questions.relevant(q, [doc], chunks)
    a, b = questions.locate(q, [doc])
    covers = {i: min(b, c.end) - max(a, c.start) for i, c in enumerate(chunks)}
    assert rel == {i for i, v in covers.items() if v >= (b - a) / 2} and rel == {1}
    bad = questions.Question("y", "?", ("z",), "d", "w5 w7")
    with pytest.raises(ValueError, match="not in chapter"):
        questions.locate(bad, [doc])


def test_answers_are_matched_ignoring_case_and_spacing():
    q = questions.Question("x", "?", ("Kneser-Ney", "absolute  discounting"), "d", "e")
    assert questions.answered("It is kneser-ney smoothing.", q)
    assert questions.answered("Absolute\ndiscounting, I think", q)
    assert not questions.answered("Laplace smoothing", q)


def test_the_split_is_fixed_by_the_id_and_roughly_even():
    ids = [f"q{i:03d}" for i in range(200)]
    assert [questions.split_of(i) for i in ids] == [questions.split_of(i) for i in ids]
    assert 70 < sum(questions.split_of(i) == "dev" for i in ids) < 130


def test_a_query_longer_than_the_encoders_window_says_what_is_cut():
    from tinylm.pretrained import minilm

    encoder = minilm.sentence_encoder()
    dense = retrieval.Dense(encoder, ["a chunk about attention", "a chunk about counting"])
    short = "what does attention compute"
    assert dense.cut(short) == ""
    long = " ".join(["attention"] * 300) + " THE TAIL THAT IS CUT"
    cut = dense.cut(long)
    assert cut.endswith("THE TAIL THAT IS CUT") and 0 < len(cut.split()) < 60
    with pytest.warns(retrieval.TruncatedQuery, match=f"its last {len(cut.split())} words are ignored"):
        dense.rank(long, 1)
    import warnings as w
    with w.catch_warnings():
        w.simplefilter("error")
        assert dense.rank(short, 2)[0] == 0
