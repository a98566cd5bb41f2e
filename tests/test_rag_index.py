"""Vector indexes (tinylm.rag.index): faiss's flat index agrees with our NumPy brute force,
HNSW finds more of the true neighbours as efSearch grows, recall@k counts what it should, and bad
input gets a clear error."""

from __future__ import annotations

import numpy as np
import pytest

from tinylm.rag import index as vi

vi.single_thread()


def unit(n, d=32, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_exact_top_k_is_a_sort_of_all_scores():
    x, q = unit(300), unit(20, seed=1)
    scores, ids = vi.exact_top_k(x, q, 7, block=6)          # several blocks
    full = q @ x.T
    for row in range(len(q)):
        order = sorted(range(len(x)), key=lambda i: (-full[row, i], i))[:7]
        assert ids[row].tolist() == order
        np.testing.assert_allclose(scores[row], full[row, order], rtol=0, atol=1e-6)


def test_exact_top_k_breaks_ties_by_lower_index():
    x = unit(5, d=4)
    x = np.concatenate([x, x])                               # row i and row i + 5 are equal
    scores, ids = vi.exact_top_k(x, x[:2], 4)
    assert ids[0].tolist()[:2] == [0, 5] and ids[1].tolist()[:2] == [1, 6]
    assert scores[0, 0] == scores[0, 1]


def test_faiss_flat_returns_the_same_top_k_as_numpy():
    x, q = unit(2000, d=64), unit(50, d=64, seed=1)
    exact_scores, exact_ids = vi.exact_top_k(x, q, 10)
    for queries in (q, q[:5]):                               # faiss's BLAS path (>= 20 queries) and its direct path
        scores, ids = vi.search(vi.flat(x), queries, 10)
        np.testing.assert_array_equal(ids, exact_ids[:len(queries)])
        np.testing.assert_allclose(scores, exact_scores[:len(queries)], rtol=0, atol=1e-5)


def test_faiss_flat_with_ties_agrees_up_to_the_order_of_equal_scores():
    base = unit(60, d=16)
    x = np.concatenate([base, base[::-1], base])             # every vector three times
    q = unit(30, d=16, seed=1)
    k = 8                                                    # a group of three equal scores straddles rank 8
    exact_scores, exact_ids = vi.exact_top_k(x, q, k)
    scores, ids = vi.search(vi.flat(x), q, k)
    np.testing.assert_allclose(scores, exact_scores, rtol=0, atol=1e-5)
    full = q @ x.T
    for row in range(len(q)):
        # every id faiss returns really has the score at its rank
        np.testing.assert_allclose(full[row, ids[row]], exact_scores[row], rtol=0, atol=1e-5)
        # above the k-th score the lists are the same, in the same order (lower id first among equals)
        above = exact_scores[row] > exact_scores[row, -1] + 1e-5
        assert ids[row][above].tolist() == exact_ids[row][above].tolist()


def test_hnsw_recall_rises_with_ef_search():
    x, q = unit(3000, d=16), unit(100, d=16, seed=1)
    _, exact = vi.exact_top_k(x, q, 10)
    index = vi.hnsw(x, M=8, ef_construction=40)
    recalls = [vi.recall_at_k(vi.search(index, q, 10, ef_search=ef)[1], exact) for ef in (8, 20, 160)]
    assert recalls[0] < recalls[1] < recalls[2]
    assert recalls[0] < 0.9 and recalls[2] > 0.99


def test_ivf_recall_rises_with_nprobe_and_pq_codes_are_m_bytes():
    x, q = unit(4000, d=32), unit(100, d=32, seed=1)
    _, exact = vi.exact_top_k(x, q, 10)
    ivf = vi.ivf_flat(x, nlist=64)
    recalls = [vi.recall_at_k(vi.search(ivf, q, 10, nprobe=p)[1], exact) for p in (1, 8, 64)]
    assert recalls[0] < recalls[1] < recalls[2] == 1.0       # all 64 cells scanned: exact
    pq = vi.ivf_pq(x, nlist=16, m=8, nbits=8)
    assert pq.code_size == 8
    assert vi.index_bytes(pq) < vi.index_bytes(ivf) / 4      # 8 bytes a vector instead of 128


def test_recall_at_k_ignores_order_and_counts_misses():
    exact = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    assert vi.recall_at_k(exact[:, ::-1], exact) == 1.0
    assert vi.recall_at_k(np.array([[1, 2, 9, -1], [8, 0, 0, 0]]), exact) == pytest.approx((2 / 4 + 1 / 4) / 2)
    assert vi.recall_at_k(np.array([[4, 3, 2, 1, 0], [5, 6, 7, 8, 9]]), exact) == 1.0   # only the first k count


def test_cpu_ms_per_query_is_positive():
    x, q = unit(500), unit(30, seed=1)
    index = vi.flat(x)
    assert vi.cpu_ms_per_query(index, q, 5, repeats=1) > 0
    assert vi.cpu_ms_per_query(index, q, 5, repeats=1, one_at_a_time=True) > 0


def test_bad_input_gets_a_clear_error():
    x, q = unit(50), unit(3, seed=1)
    with pytest.raises(ValueError, match="empty"):
        vi.search(_empty(), q, 1)
    with pytest.raises(ValueError, match="dimension"):
        vi.search(vi.flat(x), unit(3, d=16), 1)
    with pytest.raises(ValueError, match="larger than the index"):
        vi.search(vi.flat(x), q, 51)
    with pytest.raises(ValueError, match="larger than the index"):
        vi.exact_top_k(x, q, 51)
    with pytest.raises(ValueError, match="positive"):
        vi.exact_top_k(x, q, 0)
    with pytest.raises(ValueError, match="empty"):
        vi.exact_top_k(x[:0], q, 1)
    with pytest.raises(ValueError, match="dimension"):
        vi.exact_top_k(x, unit(3, d=16), 1)
    with pytest.raises(ValueError, match="not unit vectors"):
        vi.exact_top_k(3 * x, q, 1)
    with pytest.raises(ValueError, match="matrix"):
        vi.exact_top_k(x, q[0], 1)
    with pytest.raises(ValueError, match="ef_search"):
        vi.search(vi.flat(x), q, 1, ef_search=10)
    with pytest.raises(ValueError, match="nprobe"):
        vi.search(vi.ivf_flat(x, nlist=4), q, 1, nprobe=5)
    with pytest.raises(ValueError, match="m=5 does not divide"):
        vi.ivf_pq(x, nlist=4, m=5)
    with pytest.raises(ValueError, match="zero vector"):
        vi.unit_rows(np.zeros((2, 3)))


def _empty():
    import faiss

    return faiss.IndexFlatIP(32)
