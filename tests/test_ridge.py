"""The ridge completion's core (ul4m4_gpu/core/ridge.py) against the literal loops of
tests/reference.py ("ridge completion") and exact invariants.

Tolerances: the moments are float64 sums, so the library's GEMM and the reference's
row-by-row loop differ by summation round-off only (1e-12 relative). Predictions go through
one eigendecomposition (the projection) and one float64 solve each side; those differ by
about cond(C_OO + λI) · ε, at most ~1e-11 for the α ≥ 0.1 used here, so 1e-9 (relative to
the largest prediction) is a bound with room, not a fit to the numbers seen.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference as ref  # noqa: E402  (tests/reference.py, the literal loop implementation)
from ul4m4_gpu.core import ridge  # noqa: E402
from ul4m4_gpu.core.ridge import (  # noqa: E402
    CrossMoments,
    RidgeCompletion,
    cross_validation_errors,
    fit_ridge,
    fold_moments,
    fold_second_moments,
    row_folds,
)
from ul4m4_gpu.core.completion import held_out_sample  # noqa: E402

#: Relative agreement of float64 sums in another order (see the module docstring).
SUM_RTOL = 1e-12
#: Agreement of a prediction with the direct per-row solve, relative to the largest one.
SOLVE_RTOL = 1e-9


def problem(seed, n=60, dims=(3, 5, 2, 4), observe=0.6, dtype=np.float64, garbage=np.nan):
    """Random rows (N, D) with a random mask; missing slots hold ``garbage``. Modality 1
    depends linearly on modality 0 so that the fills have something to find."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, sum(dims)))
    z[:, dims[0]:dims[0] + dims[1]] += z[:, :dims[0]] @ rng.standard_normal((dims[0], dims[1]))
    mask = rng.random((n, len(dims))) < observe
    z[~np.repeat(mask, dims, axis=1)] = garbage
    return z.astype(dtype), mask


def reference_model(z, mask, dims):
    """The reference C: loop moments, block division, projection one eigenpair at a time."""
    products, counts = ref.ridge_cross_moments(z, mask, dims)
    return ref.psd_projection(ref.ridge_second_moments(products, counts, dims))


def assert_predictions_match(actual, expected):
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=SOLVE_RTOL * scale)


# --------------------------------------------------------------------------- moments (a)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_moments_equal_a_literal_loop_over_rows_and_pairs(dtype):
    dims = (3, 5, 2, 4)
    z, mask = problem(0, dims=dims, dtype=dtype)
    moments = CrossMoments.of(z, mask, dims)
    products, counts = ref.ridge_cross_moments(z, mask, dims)
    np.testing.assert_array_equal(moments.pair_counts, counts)
    np.testing.assert_allclose(moments.products, products, rtol=SUM_RTOL,
                               atol=SUM_RTOL * np.abs(products).max())
    block, count = moments.block(1, 3)
    np.testing.assert_array_equal(block, moments.products[3:8, 10:14])
    assert count == counts[1, 3]
    np.testing.assert_allclose(moments.second_moments(),
                               ref.ridge_second_moments(products, counts, dims),
                               rtol=SUM_RTOL, atol=SUM_RTOL)


def test_cross_moments_of_batches_add_up_to_those_of_all_rows():
    dims = (3, 5, 2, 4)
    z, mask = problem(1, n=101, dims=dims)
    whole = CrossMoments.of(z, mask, dims)
    parts = CrossMoments.of(z[:37], mask[:37], dims) + CrossMoments.of(z[37:], mask[37:], dims)
    assert parts.n_rows == whole.n_rows == 101
    np.testing.assert_array_equal(parts.pair_counts, whole.pair_counts)
    np.testing.assert_allclose(parts.products, whole.products, rtol=SUM_RTOL,
                               atol=SUM_RTOL * np.abs(whole.products).max())
    rest = whole - CrossMoments.of(z[:37], mask[:37], dims)
    np.testing.assert_array_equal(rest.pair_counts, CrossMoments.of(z[37:], mask[37:], dims)
                                  .pair_counts)
    empty = CrossMoments.empty(dims)
    np.testing.assert_array_equal((empty + whole).products, whole.products)


def test_cross_moments_refuse_nan_in_observed_slots():
    dims = (3, 5, 2, 4)
    z, mask = problem(2, dims=dims)
    row = int(np.flatnonzero(mask[:, 2])[0])
    z[row, 8] = np.inf
    with pytest.raises(ValueError, match=f"modality 2: rows \\[{row}\\]"):
        CrossMoments.of(z, mask, dims)


def test_a_width_beyond_the_limit_is_refused_in_one_line():
    width = ridge.MAX_RIDGE_DIMENSION + 1
    z = np.zeros((1, width))
    with pytest.raises(ValueError, match=f"D = {width} would take 2.0 GiB") as info:
        CrossMoments.of(z, np.ones((1, 1), dtype=bool), (width,))
    assert "\n" not in str(info.value) and "completion='nearest'" in str(info.value)
    with pytest.raises(ValueError, match=f"D = {width}"):
        CrossMoments.empty((width,))


# --------------------------------------------------------------------------- predict (b, c)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("alpha", [0.1, 1.0])
def test_predict_equals_a_direct_solve_per_row(dtype, alpha):
    dims = (3, 5, 2, 4)
    z, mask = problem(3, n=80, dims=dims, dtype=dtype)
    model = RidgeCompletion.from_moments(CrossMoments.of(z, mask, dims), alpha)
    c = reference_model(z, mask, dims)
    np.testing.assert_allclose(model.second_moments, c, rtol=0, atol=1e-12)
    predicted = model.predict(z, mask)
    assert predicted.dtype == dtype and predicted.shape == z.shape
    expected = ref.ridge_predict(c, np.where(np.repeat(mask, dims, axis=1), z, 0), mask, dims,
                                 alpha)
    if dtype == np.float32:  # the library rounds its float64 result once to float32
        np.testing.assert_allclose(predicted, expected, rtol=1e-6, atol=1e-6)
    else:
        assert_predictions_match(predicted, expected)
    assert not predicted[np.repeat(mask, dims, axis=1)].any()  # 0 on observed slots


def test_predict_is_bitwise_independent_of_the_batch():
    dims = (3, 5, 2, 4)
    z, mask = problem(4, n=300, dims=dims)
    mask[:5] = False                                        # rows observing nothing
    model = RidgeCompletion.from_moments(CrossMoments.of(z, mask, dims), 0.3)
    whole = model.predict(z, mask)
    assert not whole[:5].any()
    for size in (1, 7):
        parts = np.concatenate([model.predict(z[s:s + size], mask[s:s + size])
                                for s in range(0, len(z), size)])
        np.testing.assert_array_equal(parts, whole)
    order = np.random.default_rng(0).permutation(len(z))
    fresh = RidgeCompletion.from_moments(CrossMoments.of(z, mask, dims), 0.3)  # empty cache
    np.testing.assert_array_equal(fresh.predict(z[order], mask[order]), whole[order])


def test_the_pattern_cache_is_bounded_and_does_not_change_results(monkeypatch):
    dims = (3, 5, 2, 4)
    z, mask = problem(5, n=200, dims=dims)
    model = RidgeCompletion.from_moments(CrossMoments.of(z, mask, dims), 0.3)
    unbounded = model.predict(z, mask)
    monkeypatch.setattr(ridge, "PATTERN_CACHE_BYTES", 1)
    small = RidgeCompletion.from_moments(CrossMoments.of(z, mask, dims), 0.3)
    np.testing.assert_array_equal(small.predict(z, mask), unbounded)
    assert len(small._cache) == 1


def test_predict_refuses_other_shapes_and_nan():
    dims = (3, 5, 2, 4)
    z, mask = problem(6, dims=dims)
    model = RidgeCompletion.from_moments(CrossMoments.of(z, mask, dims), 0.3)
    with pytest.raises(ValueError, match=r"z has 13 columns but dims \(3, 5, 2, 4\) sum to 14"):
        model.predict(z[:, :13], mask)
    with pytest.raises(ValueError, match=r"mask has shape \(60, 3\), expected \(60, 4\)"):
        model.predict(z, mask[:, :3])
    bad = z.copy()
    row = int(np.flatnonzero(mask[:, 0])[0])
    bad[row, 0] = np.nan
    with pytest.raises(ValueError, match=f"modality 0: rows \\[{row}\\]"):
        model.predict(bad, mask)


def test_a_modality_no_row_pairs_with_the_observed_ones_is_predicted_as_the_mean():
    """Modality 2 is observed only in rows observing nothing else, and modalities 0 and 1
    only together: C is block diagonal and PSD, so the projection keeps it (up to
    round-off) and modality 2's prediction from modalities 0 and 1 is 0, and vice versa."""
    dims = (3, 4, 2)
    rng = np.random.default_rng(7)
    z = rng.standard_normal((50, 9))
    mask = np.zeros((50, 3), dtype=bool)
    mask[:30, :2] = True
    mask[30:, 2] = True
    model = RidgeCompletion.from_moments(CrossMoments.of(z, mask, dims), 0.01)
    predicted = model.predict(z, mask)
    np.testing.assert_allclose(predicted[:30, 7:], 0, atol=1e-12)
    np.testing.assert_allclose(predicted[30:, :7], 0, atol=1e-12)


@st.composite
def ridge_problems(draw):
    n_modalities = draw(st.integers(1, 5))
    dims = tuple(draw(st.lists(st.integers(1, 60), min_size=n_modalities,
                               max_size=n_modalities)))
    n = draw(st.integers(1, 40))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    mask = rng.random((n, n_modalities)) < draw(st.floats(0.2, 0.9))
    if n_modalities > 1 and draw(st.booleans()):          # a modality no row pairs with
        loner = int(rng.integers(n_modalities))
        alone = mask[:, loner].copy()
        mask[alone] = False
        mask[alone, loner] = True
    if draw(st.booleans()):                                # single-modality rows
        single = rng.random(n) < 0.3
        mask[single] = False
        mask[single, rng.integers(n_modalities, size=n)[single]] = True
    z = rng.standard_normal((n, sum(dims))) * draw(st.sampled_from([1e-3, 1.0, 30.0]))
    z[~np.repeat(mask, dims, axis=1)] = draw(st.sampled_from([np.nan, 1e300, 7.5]))
    return z, mask, dims, draw(st.sampled_from([0.1, 1.0, 10.0]))


@given(ridge_problems())
@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
def test_predict_matches_the_reference_on_random_problems(case):
    z, mask, dims, alpha = case
    model = RidgeCompletion.from_moments(CrossMoments.of(z, mask, dims), alpha)
    c = reference_model(z, mask, dims)
    np.testing.assert_allclose(model.second_moments, c, rtol=0,
                               atol=1e-12 * max(1.0, np.abs(c).max()))
    clean = np.where(np.repeat(mask, dims, axis=1), z, 0)
    assert_predictions_match(model.predict(z, mask), ref.ridge_predict(c, clean, mask, dims,
                                                                      alpha))


# --------------------------------------------------------------------------- exactness (e)


def test_an_exact_linear_relation_is_recovered_as_the_penalty_vanishes():
    """z_2 = A z_0 + B z_1 on every row: with λ → 0 the ridge fill of modality 2 from the
    other two is the relation itself, so its error shrinks with α (an invariant: ~α)."""
    rng = np.random.default_rng(8)
    dims = (4, 6, 3)
    n = 400
    z0, z1 = rng.standard_normal((n, 4)), rng.standard_normal((n, 6))
    z2 = z0 @ rng.standard_normal((4, 3)) + z1 @ rng.standard_normal((6, 3))
    z = np.hstack([z0, z1, z2])
    mask = np.ones((n, 3), dtype=bool)
    moments = CrossMoments.of(z, mask, dims)
    hidden = mask.copy()
    hidden[:, 2] = False
    errors = []
    for alpha in (1e-4, 1e-6, 1e-8):
        predicted = RidgeCompletion.from_moments(moments, alpha).predict(z, hidden)[:, 10:]
        errors.append(np.abs(predicted - z2).max() / np.abs(z2).max())
    assert errors[2] < 1e-6
    assert errors[0] > errors[1] > errors[2]


# --------------------------------------------------------------------------- the penalty (f)


def test_row_folds_do_not_depend_on_batching_and_are_balanced():
    folds = row_folds(np.arange(10000), 5, 123)
    pieces = np.concatenate([row_folds(np.arange(s, min(s + 333, 10000)), 5, 123)
                             for s in range(0, 10000, 333)])
    np.testing.assert_array_equal(pieces, folds)
    counts = np.bincount(folds, minlength=5)
    assert counts.min() > 2000 - 4 * 40 and counts.max() < 2000 + 4 * 40  # 4σ of a binomial
    assert not np.array_equal(row_folds(np.arange(100), 5, 124), folds[:100])


def test_cross_validation_picks_the_alpha_with_the_lowest_held_out_error_by_hand():
    dims = (3, 5, 2, 4)
    z, mask = problem(9, n=90, dims=dims)
    alphas = (1e-3, 0.1, 1.0, 10.0)
    model = fit_ridge(z, mask, dims, random_state=11, alphas=alphas, n_folds=3,
                      sample_rows=40)
    # the same draws as fit_ridge: the fold seed, then the held-out sample
    rng = np.random.RandomState(11)
    folds = row_folds(np.arange(len(z)), 3, int(rng.randint(2 ** 32, dtype=np.int64)))
    rows, held = held_out_sample(mask, rng, 40)
    assert rows.size == 40 and (mask[rows].sum(axis=1) >= 2).all() and mask[rows, held].all()
    clean = np.where(np.repeat(mask, dims, axis=1), z, 0)
    off = np.concatenate([[0], np.cumsum(dims)])
    total_products, total_counts = ref.ridge_cross_moments(z, mask, dims)
    squared, slots = np.zeros(len(alphas)), 0
    for f in range(3):
        in_fold = folds == f
        products, counts = ref.ridge_cross_moments(z[in_fold], mask[in_fold], dims)
        c = ref.psd_projection(ref.ridge_second_moments(total_products - products,
                                                        total_counts - counts, dims))
        for i, h in zip(rows, held):
            if folds[i] != f:
                continue
            hidden = mask[i:i + 1].copy()
            hidden[0, h] = False
            truth = clean[i, off[h]:off[h + 1]]
            slots += dims[h]
            for a, alpha in enumerate(alphas):
                predicted = ref.ridge_predict(c, clean[i:i + 1], hidden, dims, alpha)[0]
                squared[a] += ((predicted[off[h]:off[h + 1]] - truth) ** 2).sum()
    by_hand = squared / slots
    np.testing.assert_allclose([model.alpha_errors[a] for a in alphas], by_hand, rtol=1e-8)
    assert model.alpha == alphas[int(np.argmin(by_hand))]
    assert len(set(np.round(by_hand, 6))) == len(alphas)  # the choice is not a tie
    np.testing.assert_allclose(model.second_moments, reference_model(z, mask, dims), atol=1e-12)


def test_cross_validation_errors_add_up_over_batches_of_fold_moments():
    """Fold moments accumulated batch by batch give the in-memory errors (round-off)."""
    dims = (3, 5, 2, 4)
    z, mask = problem(10, n=120, dims=dims)
    folds = row_folds(np.arange(120), 4, 5)
    whole = fold_moments(z, mask, dims, folds, 4)
    batched = [a + b for a, b in zip(fold_moments(z[:50], mask[:50], dims, folds[:50], 4),
                                     fold_moments(z[50:], mask[50:], dims, folds[50:], 4))]
    rows, held = held_out_sample(mask, np.random.RandomState(0), 30)
    args = (z[rows], mask[rows], dims, held, folds[rows])
    np.testing.assert_allclose(cross_validation_errors(fold_second_moments(batched), *args),
                               cross_validation_errors(fold_second_moments(whole), *args),
                               rtol=1e-9)


def test_fit_without_a_row_observing_two_modalities_warns_and_uses_the_default():
    dims = (3, 5)
    z = np.random.default_rng(12).standard_normal((20, 8))
    mask = np.zeros((20, 2), dtype=bool)
    mask[:10, 0] = mask[10:, 1] = True
    with pytest.warns(UserWarning, match="no training row observes two modalities"):
        model = fit_ridge(z, mask, dims, random_state=0)
    assert model.alpha == ridge.DEFAULT_ALPHA and model.alpha_errors == {}
    assert not model.predict(z, mask).any()  # nothing pairs: every fill is the mean


@pytest.mark.parametrize("argument, value", [("n_folds", 1), ("sample_rows", 0)])
def test_fit_refuses_bad_arguments(argument, value):
    z, mask = problem(13)
    with pytest.raises(ValueError, match=argument):
        fit_ridge(z, mask, (3, 5, 2, 4), **{argument: value})


# --------------------------------------------------------------------------- device


def test_fit_and_predict_run_on_cupy(device_cupy):
    dims = (3, 5, 2, 4)
    z, mask = problem(14, n=150, dims=dims, dtype=np.float32)
    host = fit_ridge(z, mask, dims, random_state=3, alphas=(0.1, 1.0), n_folds=3)
    device = fit_ridge(device_cupy.asarray(z), device_cupy.asarray(mask), dims, random_state=3,
                       alphas=(0.1, 1.0), n_folds=3)
    assert device.alpha == host.alpha
    predicted = device.predict(device_cupy.asarray(z), device_cupy.asarray(mask))
    assert isinstance(predicted, device_cupy.ndarray)
    np.testing.assert_allclose(device_cupy.asnumpy(predicted), host.predict(z, mask),
                               rtol=1e-5, atol=1e-5)
