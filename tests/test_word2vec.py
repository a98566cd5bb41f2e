"""word2vec and PPMI + SVD: gradients against torch and finite differences, hand-computed PPMI,
the window and sampling helpers, the vector utilities on toy vectors, and determinism."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tinylm.analysis.embeddings import pca_2d, unit_rows
from tinylm.autograd import numerical_grad
from tinylm.models import word2vec as w2v
from tinylm.tokenizers import WordTokenizer, words


# --------------------------------------------------------------------------- text to ids

def test_tokenize_keeps_inner_apostrophes_only():
    text = "KING. O'er the hills, 'tis I'll go -- to-morrow; Romeo's DOG!  'Hence'"
    assert words(text) == ["king", "o'er", "the", "hills", "tis", "i'll", "go", "to", "morrow",
                                  "romeo's", "dog", "hence"]


def test_vocabulary_is_most_frequent_first_with_alphabetical_ties():
    vocab, counts = w2v.build_vocabulary("c b a b c d".split(), size=3)
    assert isinstance(vocab, WordTokenizer) and vocab.unk is None and vocab.drop_unknown
    assert vocab.symbols == ["b", "c", "a"] and counts.tolist() == [2, 2, 1] and counts.dtype == np.int64
    with pytest.raises(ValueError):
        w2v.build_vocabulary(["a"], size=0)


def test_encode_drops_words_outside_the_vocabulary():
    vocab, _ = w2v.build_vocabulary("to be to be".split(), size=2)
    assert vocab.symbols == ["be", "to"]
    assert vocab.encode("to be or not to be".split()) == [1, 0, 1, 0]
    assert vocab.encode("To be, or not to be!") == [1, 0, 1, 0], "a text is cut into words first"
    assert vocab.encode([]) == [] and vocab.encode(["or", "not"]) == []
    with pytest.raises(KeyError, match="'or' is not in the vocabulary"):
        WordTokenizer(["be", "to"]).encode(["or"])


def test_keep_probabilities():
    counts = np.array([1000, 100, 10, 1])                    # frequencies 0.9001, 0.09, 0.009, 0.0009
    keep = w2v.keep_probabilities(counts, threshold=0.009)
    f = counts / counts.sum()
    assert np.allclose(keep[:2], np.sqrt(0.009 / f[:2]))
    assert keep[2] == pytest.approx(min(1, np.sqrt(0.009 / f[2]))) and keep[3] == 1.0


def test_subsample_keeps_each_word_at_its_rate():
    rng = np.random.default_rng(0)
    ids = np.repeat([0, 1], 20_000)
    kept = w2v.subsample(ids, np.array([0.25, 1.0]), rng)
    assert np.sum(kept == 1) == 20_000
    assert abs(np.sum(kept == 0) / 20_000 - 0.25) < 0.02


# --------------------------------------------------------------------------- windows

def brute_force_pairs(n, window):
    return [(i, j) for i in range(n) for j in range(max(0, i - window), min(n, i + window + 1)) if j != i]


@given(st.integers(0, 30), st.integers(1, 6))
@settings(max_examples=60, deadline=None)
def test_fixed_window_positions_match_brute_force(n, window):
    centers, contexts = w2v.window_positions(n, window)
    assert list(zip(centers.tolist(), contexts.tolist())) == brute_force_pairs(n, window)


def test_skipgram_pairs_of_a_sentence():
    ids = np.array([5, 6, 7, 8])
    c, o = w2v.skipgram_pairs(ids, window=2)
    assert list(zip(c.tolist(), o.tolist())) == [(5, 6), (5, 7), (6, 5), (6, 7), (6, 8), (7, 5), (7, 6),
                                                 (7, 8), (8, 6), (8, 7)]
    with pytest.raises(ValueError):
        w2v.skipgram_pairs(ids, window=0)


def test_dynamic_window_uses_distance_d_with_probability_w_minus_d_plus_1_over_w():
    n, window = 200_000, 4
    centers, contexts = w2v.window_positions(n, window, np.random.default_rng(1))
    assert set(zip(centers[:500].tolist(), contexts[:500].tolist())) <= set(brute_force_pairs(n, window))
    distance = np.abs(contexts - centers)
    per_center = np.bincount(distance, minlength=window + 1)[1:] / (2 * n)
    assert np.allclose(per_center, [(window - d + 1) / window for d in range(1, window + 1)], atol=0.01)


# --------------------------------------------------------------------------- sampling

def test_noise_distribution_and_negatives():
    counts = np.array([81, 16, 1])
    noise = w2v.noise_distribution(counts)
    assert np.allclose(noise, np.array([27, 8, 1]) / 36)
    draws = w2v.sample_negatives(noise, (300_000,), np.random.default_rng(0))
    assert draws.min() >= 0 and draws.max() <= 2
    assert np.allclose(np.bincount(draws, minlength=3) / len(draws), noise, atol=0.005)


# --------------------------------------------------------------------------- the loss and its gradients

def test_sigmoid_and_log_sigmoid_are_stable():
    x = np.array([-800.0, -30.0, 0.0, 30.0, 800.0])
    assert np.all(np.isfinite(w2v.sigmoid(x))) and np.all(np.isfinite(w2v.log_sigmoid(x)))
    assert w2v.sigmoid(np.array(0.0)) == 0.5
    assert np.allclose(w2v.log_sigmoid(x[1:4]), np.log(1 / (1 + np.exp(-x[1:4]))))
    assert w2v.log_sigmoid(np.array(-800.0)) == -800.0


def torch_sgns(v, u_pos, u_neg):
    tensors = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (v, u_pos, u_neg)]
    tv, tp, tn = tensors
    s_pos = (tv * tp).sum(-1)
    s_neg = (tv.unsqueeze(-2) * tn).sum(-1)
    loss = -(torch.nn.functional.logsigmoid(s_pos).sum() + torch.nn.functional.logsigmoid(-s_neg).sum())
    loss.backward()
    return loss.item(), *(t.grad.numpy() for t in tensors)


@pytest.mark.parametrize("batch", [None, 7])
def test_sgns_gradients_match_torch_autograd(batch):
    rng = np.random.default_rng(3)
    lead = () if batch is None else (batch,)
    v, u_pos, u_neg = rng.normal(size=lead + (6,)), rng.normal(size=lead + (6,)), rng.normal(size=lead + (4, 6))
    ours = w2v.sgns_loss_and_grads(v, u_pos, u_neg)
    reference = torch_sgns(v, u_pos, u_neg)
    assert ours[0] == pytest.approx(reference[0], rel=1e-12)
    for a, b in zip(ours[1:], reference[1:]):
        assert a.shape == b.shape and np.allclose(a, b, atol=1e-12)


def test_sgns_gradients_match_finite_differences():
    rng = np.random.default_rng(4)
    v, u_pos, u_neg = rng.normal(size=5), rng.normal(size=5), rng.normal(size=(3, 5))
    _, g_v, g_pos, g_neg = w2v.sgns_loss_and_grads(v, u_pos, u_neg)
    assert np.allclose(g_v, numerical_grad(lambda x: w2v.sgns_loss_and_grads(x, u_pos, u_neg)[0], v), atol=1e-6)
    assert np.allclose(g_pos, numerical_grad(lambda x: w2v.sgns_loss_and_grads(v, x, u_neg)[0], u_pos), atol=1e-6)
    assert np.allclose(g_neg, numerical_grad(lambda x: w2v.sgns_loss_and_grads(v, u_pos, x)[0], u_neg), atol=1e-6)


def test_sgns_loss_at_zero_vectors_is_k_plus_one_log_two():
    loss, *_ = w2v.sgns_loss_and_grads(np.zeros(3), np.zeros(3), np.zeros((5, 3)))
    assert loss == pytest.approx(6 * np.log(2))


def test_scatter_add_adds_repeated_rows():
    table = np.zeros((3, 2))
    w2v._scatter_add(table, np.array([2, 0, 2]), np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
    assert table.tolist() == [[3.0, 4.0], [0.0, 0.0], [6.0, 8.0]]


# --------------------------------------------------------------------------- training

def topic_text(seed=0, n=6000):
    """Words 0-4 occur only among themselves, and so do words 5-9: two topics."""
    rng = np.random.default_rng(seed)
    blocks = [rng.integers(0, 5, 30) + 5 * (i % 2) for i in range(n // 30)]
    return np.concatenate(blocks)


@pytest.mark.parametrize("architecture", ["skipgram", "cbow"])
def test_training_is_deterministic_and_learns_the_two_topics(architecture):
    ids = topic_text()
    counts = np.bincount(ids, minlength=10)
    kwargs = dict(dim=8, window=3, epochs=3, batch_size=64, subsample_threshold=None, architecture=architecture)
    W1, U1, log1 = w2v.train(ids, counts, seed=5, **kwargs)
    W2, U2, log2 = w2v.train(ids, counts, seed=5, **kwargs)
    W3, _, _ = w2v.train(ids, counts, seed=6, **kwargs)
    assert np.array_equal(W1, W2) and np.array_equal(U1, U2) and log1 == log2
    assert not np.array_equal(W1, W3)
    assert log1.losses[-1] < log1.losses[0] < 6 * np.log(2) + 0.01
    unit = unit_rows(W1)
    sims = unit @ unit.T
    same = np.mean([sims[i, j] for i in range(10) for j in range(10) if i != j and i // 5 == j // 5])
    other = np.mean([sims[i, j] for i in range(10) for j in range(10) if i // 5 != j // 5])
    assert same > other + 0.5


def test_training_rejects_an_unknown_architecture():
    with pytest.raises(ValueError):
        w2v.train(np.array([0, 1]), np.array([1, 1]), architecture="glove")


# --------------------------------------------------------------------------- counting

def test_cooccurrence_by_hand():
    ids = np.array([0, 1, 2, 0])
    plain = w2v.cooccurrence(ids, 3, window=2, weighted=False)
    assert plain.tolist() == [[0, 2, 2], [2, 0, 1], [2, 1, 0]]
    weighted = w2v.cooccurrence(ids, 3, window=2)           # distance 2 counts 1/2
    assert weighted.tolist() == [[0, 1.5, 1.5], [1.5, 0, 1], [1.5, 1, 0]]


def test_ppmi_by_hand():
    n = np.array([[2.0, 1.0], [1.0, 0.0]])                 # N = 4; row and column sums 3, 1
    expected = np.array([[max(0, np.log((2 / 4) / (3 / 4 * 3 / 4))), max(0, np.log((1 / 4) / (3 / 4 * 1 / 4)))],
                         [max(0, np.log((1 / 4) / (1 / 4 * 3 / 4))), 0.0]])
    assert np.allclose(w2v.ppmi(n, alpha=1.0), expected)
    # with alpha = 0.75 the context distribution is (3^.75, 1^.75) / (3^.75 + 1)
    p_c = np.array([3 ** 0.75, 1.0]) / (3 ** 0.75 + 1)
    assert w2v.ppmi(n, alpha=0.75)[0, 1] == pytest.approx(np.log((1 / 4) / (3 / 4 * p_c[1])))
    assert w2v.ppmi(n, alpha=0.75)[1, 1] == 0.0
    assert (w2v.ppmi(n) >= 0).all()


def test_truncated_svd_matches_full_svd():
    rng = np.random.default_rng(0)
    M = rng.normal(size=(300, 8)) @ rng.normal(size=(8, 250)) * np.linspace(3, 0.3, 250) + 0.01 * rng.normal(size=(300, 250))
    U, S, Vt = w2v.truncated_svd(M, 5)
    U0, S0, Vt0 = np.linalg.svd(M, full_matrices=False)
    assert np.allclose(S, S0[:5], rtol=1e-8)
    assert np.allclose(np.abs(U.T @ U0[:, :5]), np.eye(5), atol=1e-6)          # the same vectors up to sign
    assert np.allclose(U * S @ Vt, U0[:, :5] * S0[:5] @ Vt0[:5], atol=1e-8)
    assert (U[np.argmax(np.abs(U), axis=0), np.arange(5)] > 0).all()
    vectors = w2v.svd_vectors(M, 5, power=0.5)
    assert np.allclose(vectors, U * np.sqrt(S))


# --------------------------------------------------------------------------- using the vectors

@pytest.fixture
def toy():
    words = ["king", "queen", "man", "woman", "apple"]
    vectors = np.array([[1.0, 1.0, 0.0], [1.0, -1.0, 0.0], [0.2, 1.0, 0.1], [0.2, -1.0, 0.1], [0.0, 0.0, 1.0]])
    return w2v.WordVectors(WordTokenizer(words), vectors)


def test_neighbours_and_similarity(toy):
    assert toy.similarity("king", "king") == pytest.approx(1.0)
    assert toy.similarity("king", "queen") == pytest.approx(0.0)
    ranked = toy.neighbours("king", k=4)
    assert [w for w, _ in ranked][::3] == ["man", "woman"] and "king" not in [w for w, _ in ranked]
    assert [s for _, s in ranked] == sorted((s for _, s in ranked), reverse=True)
    assert ranked[0][1] == pytest.approx(1.2 / (np.sqrt(2) * np.sqrt(1.05)))
    with pytest.raises(KeyError, match="'prince' is not in the vocabulary"):
        toy.neighbours("prince")


def test_analogy_3cosadd_excludes_the_query_words(toy):
    assert toy.analogy("man", "woman", "king") == "queen"
    assert toy.analogy("king", "queen", "man") == "woman"
    ranked = toy.analogy("man", "woman", "king", k=2)
    assert [w for w, _ in ranked] == ["queen", "apple"]
    target = toy.unit[1] - toy.unit[0] + toy.unit[2]            # queen - king + man ≈ woman
    assert toy.analogy("king", "queen", "man", k=2)[0][1] == pytest.approx(
        toy.unit[3] @ target / np.linalg.norm(target))
    accuracy, answers = toy.analogy_accuracy([("man", "woman", "king", "queen"), ("king", "man", "queen", "apple")])
    assert answers == ["queen", "woman"] and accuracy == 0.5


def test_pca_projection(toy):
    xy = toy.project(["king", "queen", "man", "woman"])
    assert xy.shape == (4, 2)
    assert np.allclose(xy.mean(axis=0), 0)
    assert np.var(xy[:, 0]) >= np.var(xy[:, 1])
    X = np.random.default_rng(0).normal(size=(20, 5)) * [5, 3, 1, 0.1, 0.1]
    xy = pca_2d(X)
    top = np.linalg.eigvalsh(np.cov(X.T, bias=True))[::-1][:2]
    assert np.allclose(xy.var(axis=0), top), "the two directions of largest variance"
    assert abs(np.corrcoef(xy.T)[0, 1]) < 1e-9
    assert np.allclose(xy, -pca_2d(-X)), "the signs are fixed by the components, not by the data's sign"


def test_word_vectors_need_one_vector_per_word():
    with pytest.raises(ValueError):
        w2v.WordVectors(WordTokenizer(["a", "b"]), np.zeros((3, 2)))


def test_plot_words_places_every_label_without_overlaps():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    xy = np.concatenate([rng.normal(0, 0.02, (6, 2)), rng.normal(1, 0.3, (6, 2))])   # one tight cluster
    words = [f"word{i}" for i in range(12)]
    fig, ax = plt.subplots(figsize=(5, 4))
    w2v.plot_words(ax, xy, words, ["a"] * 6 + ["b"] * 6)
    texts = [t for t in ax.texts if t.get_text() in words]
    assert sorted(t.get_text() for t in texts) == sorted(words)
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in texts]
    overlaps = sum(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    assert overlaps == 0
    assert len(ax.collections) == 2
    plt.close(fig)
