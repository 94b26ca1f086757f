"""The synthetic source's analytic quantities against Monte Carlo and closed-form checks."""

import numpy as np
import pytest

from scalinglab.data import markov


@pytest.mark.parametrize("vocab,order,branching,alpha", [(32, 2, 4, 1.0), (6, 3, 2, 0.3), (16, 1, 5, 2.0)])
def test_entropy_rate_matches_monte_carlo(vocab, order, branching, alpha):
    src = markov.make_source(vocab, order, branching, alpha, seed=3)
    pi = markov.stationary_distribution(src)
    e = markov.entropy_rate(src, pi)
    x = markov.sample(src, 500, 2500, np.random.default_rng(11), pi)  # 1.25 M tokens
    # Mean -log p along the samples, looked up in a dense table (not the sampler's tables).
    mc = -np.mean([markov.log_probs(src, row) for row in x])
    assert abs(mc - e) / e < 0.01


def test_stationary_distribution_is_fixed_point_and_unique():
    src = markov.make_source(8, 2, 3, 1.0, seed=1)
    pi = markov.stationary_distribution(src)
    p = markov.transition_matrix(src).toarray()
    np.testing.assert_allclose(pi @ p, pi, atol=1e-12)
    assert abs(pi.sum() - 1) < 1e-12 and (pi >= 0).all()
    # Unique: eigenvalue 1 of P has multiplicity one (single closed class), and the
    # chain is aperiodic (no other eigenvalue on the unit circle).
    ev = np.linalg.eigvals(p)
    assert np.sum(np.abs(ev - 1) < 1e-9) == 1
    assert np.sum(np.abs(np.abs(ev) - 1) < 1e-9) == 1


def test_conditional_entropies_match_empirical_ngrams():
    src = markov.make_source(5, 2, 3, 1.0, seed=2)
    pi = markov.stationary_distribution(src)
    cond = markov.conditional_entropies(src, pi)
    assert cond[-1] == pytest.approx(markov.entropy_rate(src, pi), rel=1e-12)
    assert cond[0] >= cond[1] >= cond[2]
    x = markov.sample(src, 400, 500, np.random.default_rng(0), pi)

    def h(counts):
        p = counts[counts > 0] / counts.sum()
        return -(p * np.log(p)).sum()

    uni = np.bincount(x.ravel(), minlength=5).astype(float)
    big = np.bincount((x[:, :-1] * 5 + x[:, 1:]).ravel(), minlength=25).astype(float)
    assert h(uni) == pytest.approx(cond[0], rel=0.01)
    assert h(big) - h(uni) == pytest.approx(cond[1], rel=0.01)


def test_window_entropy_closed_form():
    cond = [3.0, 2.0, 1.5, 1.0]  # order 3
    # targets 0,1 see 1,2 tokens; the rest see >= 3.
    assert markov.window_entropy(cond, 10) == pytest.approx((2.0 + 1.5 + 8 * 1.0) / 10)
    assert markov.window_entropy([2.0, 1.0], 7) == pytest.approx(1.0)


def test_source_is_deterministic_and_sparse():
    a = markov.make_source(10, 2, 3, 1.0, seed=4)
    b = markov.make_source(10, 2, 3, 1.0, seed=4)
    c = markov.make_source(10, 2, 3, 1.0, seed=5)
    np.testing.assert_array_equal(a.successors_SB, b.successors_SB)
    assert not np.array_equal(a.probs_SB, c.probs_SB)
    assert all(len(set(row)) == 3 for row in a.successors_SB)  # distinct successors
    np.testing.assert_allclose(a.probs_SB.sum(axis=1), 1.0)
