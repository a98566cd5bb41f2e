"""The n-gram models: proper distributions, hand counts, and Kneser-Ney against a slow reference."""

from collections import Counter

import numpy as np
import pytest

import tinylm
from tinylm.evaluation import metrics
from tinylm.models.ngram import METHODS, NGramModel


def random_text(seed=0, size=400, vocab=6):
    return np.random.default_rng(seed).integers(0, vocab, size=size)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("order", [1, 2, 3, 5])
def test_every_context_gets_a_distribution(method, order):
    model = NGramModel(order, 6, method).fit(random_text())
    for context in ([], [1], [5, 5], [0, 1, 2, 3, 4], [2, 2, 2, 2, 2, 2, 2]):
        p = model.next_distribution(context)
        assert p.shape == (6,)
        assert p.min() >= 0
        assert p.sum() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_log2probs_agree_with_next_distribution(method):
    model = NGramModel(4, 6, method).fit(random_text())
    test = random_text(seed=1, size=30)
    log2p = model.log2probs(test)
    assert log2p.shape == (len(test) - 1,), "position 0 has no context and is not scored"
    probs = 2.0 ** log2p
    for i in range(1, len(test)):
        assert probs[i - 1] == pytest.approx(model.next_distribution(test[:i])[test[i]], rel=1e-12)
    np.testing.assert_array_equal(tinylm.score(model, test), log2p)


@pytest.mark.parametrize("method", ["kneser-ney", "interpolated"])
def test_forward_gives_the_next_distribution_and_carries_the_last_tokens(method):
    model = NGramModel(3, 6, method).fit(random_text())
    ids = np.stack([random_text(seed=2, size=12), random_text(seed=3, size=12)])
    logits, state = model(ids)
    assert logits.shape == (2, 12, 6)
    for b in range(2):
        for t in range(12):
            np.testing.assert_allclose(logits[b, t].exp().numpy(), model.next_distribution(ids[b, :t + 1]), rtol=1e-12)
    assert state == [ids[0, -2:].tolist(), ids[1, -2:].tolist()], "the state is the last n - 1 tokens"
    first, state = model(ids[:, :5])
    rest, _ = model(ids[:, 5:], state)
    np.testing.assert_array_equal(np.concatenate([first.numpy(), rest.numpy()], axis=1), logits.numpy())


def test_bigram_mle_is_the_hand_count():
    # text "abab c": counts c(a)=2, c(ab)=2, c(b)=2, c(ba)=1, c(bc)=1
    text = np.array([0, 1, 0, 1, 2])
    model = NGramModel(2, 3, "mle").fit(text)
    assert model.next_distribution([0]).tolist() == [0.0, 1.0, 0.0]
    assert model.next_distribution([1]).tolist() == [0.5, 0.0, 0.5]
    assert model.num_parameters() == 3 + 3          # unigrams a b c, bigrams ab ba bc


def test_add_k_formula():
    text = np.array([0, 1, 0, 1, 2])
    model = NGramModel(2, 3, "add-k", k=0.5).fit(text)
    # P(a | b) = (c(ba) + k) / (c(b .) + k V) = (1 + 0.5) / (2 + 1.5)
    assert model.next_distribution([1])[0] == pytest.approx(1.5 / 3.5)
    # an unseen context is uniform
    model = NGramModel(3, 3, "add-k", k=0.5).fit(text)
    assert model.next_distribution([2, 2]).tolist() == pytest.approx([1 / 3] * 3)


def test_interpolation_formula():
    text = np.array([0, 1, 0, 1, 2])
    model = NGramModel(2, 3, "interpolated", lambdas=[0.6, 0.8]).fit(text)
    unigram = 0.6 * np.array([2, 2, 1]) / 5 + 0.4 / 3
    assert model.next_distribution([1]) == pytest.approx(0.8 * np.array([0.5, 0, 0.5]) + 0.2 * unigram)


def reference_kneser_ney(train, vocab, order):
    """Interpolated modified Kneser-Ney written straight from its definition, with dicts."""
    seq = tuple(int(t) for t in train)
    counts = {k: Counter(seq[i - k + 1:i + 1] for i in range(k - 1, len(seq))) for k in range(1, order + 1)}
    used = {order: counts[order]}
    for k in range(1, order):
        used[k] = Counter({g: sum(1 for h in counts[k + 1] if h[1:] == g) for g in counts[k]})
    discounts = {k: NGramModel._discounts(np.array(list(used[k].values()))) for k in used}

    def discount(k, c):
        return 0.0 if c == 0 else discounts[k][min(c, 3) - 1]

    def prob(k, history, w):
        if k == 0:
            return 1.0 / vocab
        lower = prob(k - 1, history[1:], w)
        continuations = {g[-1]: c for g, c in used[k].items() if g[:-1] == history}
        total = sum(continuations.values())
        if total == 0:
            return lower
        gamma = sum(discount(k, c) for c in continuations.values())
        c = continuations.get(w, 0)
        return (max(c - discount(k, c), 0) + gamma * lower) / total

    def log2probs(test):
        out = []
        for i, w in enumerate(int(t) for t in test):
            k = min(order, i + 1)
            out.append(np.log2(prob(k, tuple(int(t) for t in test[i - k + 1:i]), w)))
        return np.array(out)

    return log2probs


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("seed", [0, 1])
def test_kneser_ney_matches_the_definition(order, seed):
    train, test = random_text(seed, 300, 5), random_text(seed + 10, 40, 5)
    fast = NGramModel(order, 5, "kneser-ney").fit(train).log2probs(test)
    slow = reference_kneser_ney(train, 5, order)(test)
    np.testing.assert_allclose(fast, slow[1:], rtol=1e-12)   # log2probs leaves out position 0


def test_kneser_ney_beats_add_k_on_real_text():
    from tinylm import data
    from tinylm.tokenizers import CharTokenizer

    corpus = data.shakespeare()
    tok = CharTokenizer(corpus.alphabet)
    train, valid = tok.encode(corpus.train[:400_000]), tok.encode(corpus.valid[:50_000])
    kn_model = NGramModel(4, len(tok), "kneser-ney").fit(train)
    kn = metrics.bits_per_char(tinylm.score(kn_model, valid))
    addk = metrics.bits_per_char(tinylm.score(NGramModel(4, len(tok), "add-k", k=0.01).fit(train), valid))
    assert kn < addk < 4.0
    assert metrics.perplexity(tinylm.score(kn_model, valid)) == pytest.approx(2.0 ** kn)


def test_seen_fraction_counts_known_grams():
    model = NGramModel(3, 4, "mle").fit(np.array([0, 1, 2, 0, 1, 2]))
    # test 0 1 3 : unigrams 0,1 seen, 3 not; bigram 01 seen, 13 not; trigram 013 not
    assert model.seen_fraction([0, 1, 3]) == [2 / 3, 1 / 2, 0.0]


def test_sampling_is_seeded_and_in_vocabulary():
    model = NGramModel(3, 6, "kneser-ney").fit(random_text())
    a = tinylm.generate(model, [1, 2], 50, tinylm.Sampler(seed=3))
    b = tinylm.generate(model, [1, 2], 50, tinylm.Sampler(seed=3))
    c = tinylm.generate(model, [1, 2], 50, tinylm.Sampler(seed=4))
    assert a == b and len(a) == 50 and set(a) <= set(range(6))
    assert a != c, "another seed draws another text"


def old_sample(model, length, context, rng, temperature=1.0):
    """What the n-gram's own ``sample`` method did: draw from next_distribution ** (1 / T)."""
    out = [int(t) for t in context]
    for _ in range(length):
        p = model.next_distribution(out) ** (1.0 / temperature)
        out.append(int(rng.choice(model.V, p=p / p.sum())))
    return out[len(context):]


@pytest.mark.parametrize("temperature", [1.0, 0.5])
@pytest.mark.parametrize("use_cache", [True, False])
def test_generate_reproduces_the_old_samples(temperature, use_cache):
    model = NGramModel(3, 6, "kneser-ney").fit(random_text())
    new = tinylm.generate(model, [1, 2], 60, tinylm.Sampler(temperature=temperature, seed=7), use_cache=use_cache)
    assert new == old_sample(model, 60, [1, 2], np.random.default_rng(7), temperature)


def test_greedy_generation_follows_the_most_likely_token():
    model = NGramModel(2, 3, "mle").fit(np.array([0, 1, 0, 1, 2, 0, 1, 2]))
    # after 0 always 1; after 1: 2 (twice) beats 0 (once); after 2 always 0
    assert tinylm.generate(model, [0], 6, tinylm.GREEDY) == [1, 2, 0, 1, 2, 0]


def test_clear_errors():
    with pytest.raises(ValueError, match="order"):
        NGramModel(0, 5)
    with pytest.raises(ValueError, match="method"):
        NGramModel(2, 5, "good-turing")
    with pytest.raises(RuntimeError, match="not fitted"):
        NGramModel(2, 5).log2probs([1, 2])
    with pytest.raises(ValueError, match="token ids"):
        NGramModel(2, 5).fit([0, 1, 7])
    with pytest.raises(ValueError, match="empty"):
        NGramModel(2, 5).fit([])
