"""WEAT: associations, effect size and permutation p-values checked against hand computations."""

from __future__ import annotations

import itertools
import math
import statistics

import numpy as np
import pytest

from tinylm.usage import fairness as F


def at(*degrees):
    """Unit vectors in the plane at the given angles (degrees), scaled by 1, 2, 3... (cosines ignore length)."""
    return np.array([[(i + 1) * math.cos(math.radians(a)), (i + 1) * math.sin(math.radians(a))]
                     for i, a in enumerate(degrees)])


def s_by_angles(w, As, Bs):
    """s(w, A, B) from angles alone: cos of the angle between two directions."""
    return (sum(math.cos(math.radians(w - a)) for a in As) / len(As)
            - sum(math.cos(math.radians(w - b)) for b in Bs) / len(Bs))


X_ANGLES, Y_ANGLES, A_ANGLES, B_ANGLES = (10, 25, 40), (70, 80, 55), (0, 15), (90, 120, 100)


def test_associations_on_vectors_in_the_plane():
    assert F.associations([[1.0, 0.0]], [[2.0, 0.0]], [[0.0, 3.0]]) == pytest.approx([1.0])
    got = F.associations(at(*X_ANGLES), at(*A_ANGLES), at(*B_ANGLES))
    assert got == pytest.approx([s_by_angles(x, A_ANGLES, B_ANGLES) for x in X_ANGLES])


def test_effect_size_against_angles():
    sx = [s_by_angles(x, A_ANGLES, B_ANGLES) for x in X_ANGLES]
    sy = [s_by_angles(y, A_ANGLES, B_ANGLES) for y in Y_ANGLES]
    expected = (statistics.mean(sx) - statistics.mean(sy)) / statistics.stdev(sx + sy)   # sample std
    d = F.effect_size(at(*X_ANGLES), at(*Y_ANGLES), at(*A_ANGLES), at(*B_ANGLES))
    assert d == pytest.approx(expected)
    assert d > 0      # X (near A) is closer to A than Y is
    # swapping the targets, or the attributes, flips the sign
    assert F.effect_size(at(*Y_ANGLES), at(*X_ANGLES), at(*A_ANGLES), at(*B_ANGLES)) == pytest.approx(-d)
    assert F.effect_size(at(*X_ANGLES), at(*Y_ANGLES), at(*B_ANGLES), at(*A_ANGLES)) == pytest.approx(-d)
    assert F.statistic(at(*X_ANGLES), at(*Y_ANGLES), at(*A_ANGLES), at(*B_ANGLES)) == pytest.approx(sum(sx) - sum(sy))


def test_effect_size_refuses_targets_it_cannot_tell_apart():
    same = np.ones((4, 3))
    with pytest.raises(ValueError, match="cannot be told apart"):
        F.effect_size(same[:2], same[2:], np.eye(3)[:1], np.eye(3)[1:2])
    with pytest.raises(ValueError, match="non-empty"):
        F.effect_size(np.zeros((0, 3)), same, same, same)
    with pytest.raises(ValueError, match="dimension"):
        F.associations(np.ones((2, 3)), np.ones((2, 2)), np.ones((2, 3)))


def p_by_enumeration(s_x, s_y):
    """The share of all orderings of the targets whose first |X| have a statistic >= the observed one."""
    s = list(s_x) + list(s_y)
    m, observed = len(s_x), sum(s_x) - sum(s_y)
    hits = total = 0
    for order in itertools.permutations(range(len(s))):        # every ordering: each split m!(n-m)! times
        xs = [s[i] for i in order[:m]]
        ys = [s[i] for i in order[m:]]
        total += 1
        hits += sum(xs) - sum(ys) >= observed - 1e-12
    return hits / total


def test_exact_permutation_p_against_enumerating_orderings():
    X, Y, A, B = at(*X_ANGLES), at(*Y_ANGLES), at(*A_ANGLES), at(*B_ANGLES)
    test = F.permutation_p(X, Y, A, B)
    assert test.exact and test.splits == math.comb(6, 3) == 20
    sx, sy = F.associations(X, A, B), F.associations(Y, A, B)
    assert test.p == pytest.approx(p_by_enumeration(sx, sy))
    assert test.p == pytest.approx(1 / 20)        # every x is closer to A than every y: only the observed split
    # a mixed case, unequal sizes
    X2, Y2 = at(10, 75, 40, 95), at(30, 60)
    test2 = F.permutation_p(X2, Y2, A, B)
    assert test2.splits == 15
    assert test2.p == pytest.approx(p_by_enumeration(F.associations(X2, A, B), F.associations(Y2, A, B)))
    assert 1 / 15 < test2.p < 1
    # from associations directly; the observed split alone when X is all above Y
    assert F.permutation_p_from([3.0, 2.0], [1.0, 0.0, -1.0]).p == pytest.approx(1 / 10)
    assert F.permutation_p_from([-1.0], [0.0, 1.0]).p == 1.0
    with pytest.raises(ValueError, match="non-empty"):
        F.permutation_p_from([], [1.0])


def test_sampled_p_approaches_the_exact_one():
    g = np.random.default_rng(0)
    X, Y, A, B = g.normal(size=(6, 5)) + 0.3, g.normal(size=(6, 5)), g.normal(size=(4, 5)) + 0.3, g.normal(size=(4, 5))
    exact = F.permutation_p(X, Y, A, B)
    assert exact.exact and exact.splits == 924
    sampled = F.permutation_p(X, Y, A, B, exact_limit=100, samples=20_000, seed=1)
    assert not sampled.exact and sampled.splits == 20_000
    assert abs(sampled.p - exact.p) < 4 * math.sqrt(exact.p * (1 - exact.p) / 20_000) + 1e-4
    assert F.permutation_p(X, Y, A, B, exact_limit=100, samples=2000, seed=5) == \
        F.permutation_p(X, Y, A, B, exact_limit=100, samples=2000, seed=5)


def test_word_sets_are_well_formed():
    for name, test in F.TESTS.items():
        assert test.language in F.TEMPLATES
        for part in "XYAB":
            words = getattr(test, part)
            assert len(words) >= 8 and len(set(words)) == len(words), (name, part)
        assert len(test.X) == len(test.Y) and len(test.A) == len(test.B)
        assert not set(test.X + test.Y) & set(test.A + test.B), name
