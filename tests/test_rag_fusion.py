"""RAG-Fusion: cleaning the model's rephrasings, fusing their rankings, scoring the study's way."""

import numpy as np
import pytest

from tinylm.rag import fusion, retrieval

TEXTS = ["the cat sat on the mat", "dogs chase cats in the park", "a language model predicts the next token",
         "tokens are pieces of words", "the model is trained on text", "cats and dogs are pets"]


def test_queries_keep_the_question_first_and_drop_junk_and_repeats():
    raw = ["1. What does a language model predict?", "", "- what does a language model predict",
           "Rephrased question: \"Which token comes next?\"", "How do language models work?",
           "   ", "12345", "How do Language Models work ?!"]
    got = fusion.queries("How do language models work?", raw)
    assert got == ["How do language models work?", "What does a language model predict?", "Which token comes next?"]
    assert fusion.queries("How do language models work?", raw, n=1) == got[:2]
    assert fusion.queries("How do language models work?", raw, n=0) == got[:1]
    assert fusion.queries("q?", ["a\nb\nc", "d"], n=3) == ["q?", "a", "b", "c"]      # several lines in one text
    assert fusion.queries("什么是词元？", ["词元是什么？", "什么是词元?"]) == ["什么是词元？", "词元是什么？"]
    with pytest.raises(ValueError, match="empty"):
        fusion.queries("  ", raw)
    with pytest.raises(ValueError, match="at least 0"):
        fusion.queries("q", raw, n=-1)


def test_rewrite_messages_are_a_few_shot_chat_ending_with_the_question():
    messages = fusion.rewrite_messages("What is BM25?")
    assert messages[0]["role"] == "system" and messages[-1] == {"role": "user", "content": "What is BM25?"}
    assert [m["role"] for m in messages[1:-1]] == ["user", "assistant"] * len(fusion.SHOTS)
    with pytest.raises(ValueError, match="empty"):
        fusion.rewrite_messages("")
    with pytest.raises(ValueError, match="at least one"):
        fusion.rewrite(None, None, "What is BM25?", n=0)


def hand_fused(rankings, k=60):
    """Reciprocal rank fusion written out another way: a score table over all chunks."""
    score = np.zeros(len(TEXTS))
    for ranking in rankings:
        for position, i in enumerate(ranking):
            score[i] += 1 / (k + position + 1)
    order = sorted((i for i in range(len(TEXTS)) if score[i] > 0), key=lambda i: (-score[i], i))
    return order


def test_rag_fusion_fuses_the_rankings_of_the_question_and_its_rephrasings():
    bm25 = retrieval.BM25(TEXTS)
    rewrites = {"cats": ["1. dogs and pets", "cats", "a model of text"]}
    rag = fusion.RagFusion(bm25, rewrites, depth=3)
    assert rag.queries("cats") == ["cats", "dogs and pets", "a model of text"]
    expected = hand_fused([bm25.rank(q, 3) for q in ["cats", "dogs and pets", "a model of text"]])
    assert rag.rank("cats", k=10) == expected
    assert rag.rank("cats", k=2) == expected[:2]
    only_first = fusion.RagFusion(bm25, rewrites, n=1, depth=3)
    assert only_first.rank("cats") == hand_fused([bm25.rank("cats", 3), bm25.rank("dogs and pets", 3)])
    assert fusion.RagFusion(bm25, rewrites, n=0, depth=3).rank("cats") == bm25.rank("cats", 3)
    by_function = fusion.RagFusion(bm25, lambda q: rewrites[q], depth=3)
    assert by_function.rank("cats") == expected
    with pytest.raises(KeyError, match="no rephrasings"):
        rag.rank("dogs")
    with pytest.raises(ValueError, match="depth"):
        fusion.RagFusion(bm25, rewrites, depth=0)


def test_method_rankings_name_every_base_and_fusion_depth():
    class Q:
        def __init__(self, question):
            self.question = question

    bm25 = retrieval.BM25(TEXTS)
    qs = [Q("cats"), Q("language model")]
    rewrites = {"cats": ["pets", "dogs"], "language model": ["next token", "text"]}
    got = fusion.method_rankings({"bm25": bm25}, qs, rewrites, ns=[1, 2])
    assert set(got) == {"bm25", "fusion-bm25-1", "fusion-bm25-2"}
    assert got["bm25"] == [bm25.rank("cats", fusion.DEPTH), bm25.rank("language model", fusion.DEPTH)]
    assert got["fusion-bm25-2"][0] == hand_fused([bm25.rank(q, fusion.DEPTH) for q in ["cats", "pets", "dogs"]])


def test_scores_count_a_question_without_a_relevant_chunk_as_a_miss():
    rankings = [[3, 1, 2], [0, 5, 4], [2, 0, 1]]
    relevant = [{1, 2}, {4}, {-1}]                     # the third: no chunk holds its evidence
    got = fusion.scores(rankings, relevant)
    assert got == {"recall@1": 0.0, "recall@5": pytest.approx(2 / 3), "mrr": pytest.approx((1 / 2 + 1 / 3) / 3),
                   "n_questions": 3}


def test_the_cached_encoder_embeds_each_text_once_and_half_precision_round_trips():
    calls = []

    class Encoder:
        def embed(self, texts):
            calls.append(list(texts))
            return np.array([[len(t), 1.0] for t in texts])

    enc = fusion.CachedEncoder(Encoder())
    assert enc.embed(["ab", "c", "ab"]).tolist() == [[2, 1], [1, 1], [2, 1]]
    assert enc.embed(["c", "def"]).tolist() == [[1, 1], [3, 1]]
    assert calls == [["ab", "c"], ["def"]]
    x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    assert fusion.half(x).dtype == np.float32 and np.abs(fusion.half(x) - x).max() < 1e-2
    assert np.array_equal(fusion.half(fusion.half(x)), fusion.half(x))


def test_language():
    assert fusion.language("什么是 BM25？") == "zh" and fusion.language("What is BM25?") == "en"
