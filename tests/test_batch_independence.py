"""A row's result does not depend on the rows computed with it (README, "Errors and
guarantees", *Stable*): every row-to-centre product runs on fixed-shape row tiles
(ul4m4_gpu.core.tiled), so distances, completions and fits are bitwise the same for any
batch size, any split of the rows and any BLAS thread count, whatever BLAS the machine has.

Equality is exact (``assert_array_equal``) throughout: the claim is bitwise. The values
themselves are checked against literal loops in test_against_reference.py; here only
:func:`row_tiled_matmul` is, against a float64 dot product, within its round-off bound.
"""

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_limits

from ul4m4_gpu import MultiModalArray, UL4M4Imputer, greedy_complete, lloyd
from ul4m4_gpu.core.completion import COMPLETIONS, CompletionWarning
from ul4m4_gpu.core.distances import masked_sq_sums, squared_norms, zero_missing
from ul4m4_gpu.core.tiled import CPU_ROW_TILE, row_tiled_matmul

#: Batch sizes that cut the rows everywhere: one row, primes, a tile and one more, more
#: rows than there are.
BATCH_SIZES = (1, 2, 7, 13, 97, CPU_ROW_TILE + 1, 100_000)


def split(n, cuts):
    """[start, stop) pieces of range(n) cut at the sorted distinct ``cuts``."""
    bounds = [0, *sorted({c for c in cuts if 0 < c < n}), n]
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


@st.composite
def packed_problems(draw, max_dim=300):
    """Normalised rows zero where missing, their mask, partial centres and dims: up to 80
    rows, 1–4 modalities of 1–``max_dim`` columns, 1–12 centres, float32 or float64."""
    n_modalities = draw(st.integers(1, 4))
    dims = tuple(draw(st.lists(st.integers(1, max_dim), min_size=n_modalities,
                               max_size=n_modalities)))
    n = draw(st.integers(1, 80))
    k = draw(st.integers(1, 12))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    mask = rng.random((n, n_modalities)) < draw(st.floats(0.2, 0.9))
    centers_mask = rng.random((k, n_modalities)) < 0.7
    centers_mask[~centers_mask.any(axis=1), 0] = True
    z = zero_missing(rng.normal(size=(n, sum(dims))).astype(dtype), mask, dims)
    centers = zero_missing(rng.normal(size=(k, sum(dims))).astype(dtype), centers_mask, dims)
    cuts = draw(st.lists(st.integers(1, max(n - 1, 1)), max_size=6))
    return z, mask, centers, centers_mask, dims, split(n, cuts)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 700), st.integers(1, 300), st.integers(1, 40),
       st.sampled_from([np.float32, np.float64]), st.lists(st.integers(1, 699), max_size=5),
       st.integers(0, 2**32 - 1))
def test_a_row_of_the_tiled_product_is_the_same_in_any_batch(n, p, k, dtype, cuts, seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, p)).astype(dtype)
    b = rng.normal(size=(k, p)).astype(dtype).T  # a transposed view, as the callers pass
    whole = row_tiled_matmul(a, b)
    assert whole.dtype == dtype and whole.shape == (n, k)
    pieces = np.concatenate([row_tiled_matmul(a[part], b) for part in split(n, cuts)])
    np.testing.assert_array_equal(pieces, whole)
    # the value: a dot product of p terms is within p·eps·Σ|a_j b_j| of the exact one
    exact = a.astype(np.float64) @ b.astype(np.float64)
    bound = p * np.finfo(dtype).eps * (np.abs(a).astype(np.float64) @ np.abs(b))
    assert (np.abs(whole - exact) <= bound).all()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(packed_problems(), st.booleans())
def test_masked_sq_sums_of_a_row_are_the_same_in_any_batch(problem, given_row_norms):
    """Row norms given (the completion's path) or computed from the rows (the public
    ``partial_distances`` path)."""
    z, mask, centers, centers_mask, dims, parts = problem

    def sums_of(rows):
        norms = squared_norms(z[rows], dims) if given_row_norms else None
        return masked_sq_sums(z[rows], mask[rows], centers, centers_mask, dims, row_norms=norms)

    sums, shared = sums_of(slice(None))
    pieces = [sums_of(part) for part in parts]
    np.testing.assert_array_equal(np.concatenate([s for s, _ in pieces]), sums)
    np.testing.assert_array_equal(np.concatenate([c for _, c in pieces]), shared)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(packed_problems(), st.sampled_from(COMPLETIONS), st.integers(1, 12),
       st.sampled_from([0.003, 0.1, 3.0]), st.sampled_from(BATCH_SIZES))
def test_greedy_complete_is_the_same_for_every_batch_size(problem, completion, n_candidates,
                                                         temperature, batch_size):
    """Every rule, soft fills over up to 12 candidates included; also each row completed on
    its own piece of the rows."""
    z, mask, centers, centers_mask, dims, parts = problem
    rule = dict(completion=completion, n_candidates=n_candidates, temperature=temperature)
    whole, _, sources = greedy_complete(z, mask, centers, centers_mask, dims,
                                        return_sources=True, **rule)
    batched, _, batched_sources = greedy_complete(z, mask, centers, centers_mask, dims,
                                                  batch_size=batch_size, return_sources=True,
                                                  **rule)
    np.testing.assert_array_equal(batched, whole)
    np.testing.assert_array_equal(batched_sources, sources)
    pieces = [greedy_complete(z[part], mask[part], centers, centers_mask, dims, **rule)[0]
              for part in parts]
    np.testing.assert_array_equal(np.concatenate(pieces), whole)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(packed_problems(max_dim=120), st.sampled_from(BATCH_SIZES))
def test_lloyd_is_the_same_for_every_batch_size(problem, batch_size):
    z, mask, centers, centers_mask, dims, _ = problem
    whole = lloyd(z, mask, dims, centers, centers_mask)
    batched = lloyd(z, mask, dims, centers, centers_mask, batch_size=batch_size)
    np.testing.assert_array_equal(batched.centers, whole.centers)
    np.testing.assert_array_equal(batched.centers_mask, whole.centers_mask)
    np.testing.assert_array_equal(batched.labels, whole.labels)
    assert (batched.n_iter, batched.inertia) == (whole.n_iter, whole.inertia)


def wide_data(n=300, dims=(1500, 700, 40, 3), seed=0):
    """Clustered rows of a few thousand dimensions, each observing at least one modality."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(6, sum(dims)))
    x = (centres[rng.integers(6, size=n)] + rng.normal(size=(n, sum(dims)))).astype(np.float32)
    mask = rng.random((n, len(dims))) < 0.5
    mask[~mask.any(axis=1), 1] = True
    offsets = np.cumsum((0, *dims))
    return MultiModalArray.from_modalities(
        [x[:, offsets[m]:offsets[m + 1]] for m in range(len(dims))], mask=mask)


RULES = [("paper", 1), ("nearest", 1), ("paper", 3), ("overlap", 4), ("nearest", 5),
         ("overlap", 12)]


@pytest.fixture(scope="module")
def wide():
    return wide_data()


@pytest.mark.parametrize("completion, n_candidates", RULES)
def test_every_rule_at_thousands_of_dimensions_is_the_same_for_every_batch_size(
        wide, completion, n_candidates):
    """D = 2243: the fit (labels, centres) and the completion, for every batch size and
    for rows completed apart from the others."""
    params = dict(n_clusters=12, random_state=0, completion=completion,
                  n_candidates=n_candidates)
    imp = UL4M4Imputer(**params).fit(wide)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompletionWarning)
        out = imp.transform(wide).values
        for batch_size in BATCH_SIZES:
            np.testing.assert_array_equal(imp.set_params(batch_size=batch_size)
                                          .transform(wide).values, out)
        rows = np.arange(3, len(out), 7)
        np.testing.assert_array_equal(imp.transform(wide.take(rows)).values, out[rows])
    for batch_size in (1, 7, 100_000):
        again = UL4M4Imputer(**params, batch_size=batch_size).fit(wide)
        np.testing.assert_array_equal(again.labels_, imp.labels_)
        np.testing.assert_array_equal(again.cluster_centers_, imp.cluster_centers_)
        assert again.temperature_ == imp.temperature_


@pytest.mark.parametrize("completion, n_candidates", [("nearest", 5), ("paper", 1)])
def test_the_blas_thread_count_changes_nothing(wide, completion, n_candidates):
    """A multi-threaded BLAS splits a product by its shape and thread count; the tiles run
    on one BLAS thread each, so the process's setting does not enter."""
    outputs = []
    for threads in (1, 2, 4):
        with threadpool_limits(limits=threads, user_api="blas"):
            imp = UL4M4Imputer(n_clusters=12, random_state=0, completion=completion,
                               n_candidates=n_candidates).fit(wide)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", CompletionWarning)
                outputs.append((imp.cluster_centers_, imp.transform(wide).values))
    for centers, values in outputs[1:]:
        np.testing.assert_array_equal(centers, outputs[0][0])
        np.testing.assert_array_equal(values, outputs[0][1])
