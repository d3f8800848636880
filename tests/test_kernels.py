"""Every CUDA kernel against its CPU twin, and both against plain NumPy/loop references, on
tiny shapes. Without a GPU the CUDA kernels run in Numba's simulator (see conftest.py)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reference
from ul4m4_gpu.core.distances import column_scale, roundoff_rtol, squared_norms, zero_missing
from ul4m4_gpu.kernels import assign, complete, update


@st.composite
def partial_problem(draw):
    n_mod = draw(st.integers(1, 4))
    dims = draw(st.lists(st.integers(1, 5), min_size=n_mod, max_size=n_mod))
    n, k = draw(st.integers(1, 9)), draw(st.integers(1, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    mask = rng.random((n, n_mod)) < 0.6
    centers_mask = rng.random((k, n_mod)) < 0.7
    z = zero_missing(rng.normal(size=(n, sum(dims))), mask, dims)
    centers = zero_missing(rng.normal(size=(k, sum(dims))), centers_mask, dims)
    return z, mask, centers, centers_mask, dims


def assign_inputs(z, mask, centers, centers_mask, dims):
    cross = z @ (centers * column_scale(dims, np, z.dtype)).T
    return (cross, squared_norms(z, dims), mask, squared_norms(centers, dims), centers_mask,
            roundoff_rtol(z.dtype))


@settings(max_examples=25, deadline=None)
@given(partial_problem())
def test_assign_cuda_matches_cpu_and_the_reference(problem):
    z, mask, centers, centers_mask, dims = problem
    inputs = assign_inputs(*problem)
    n = z.shape[0]
    outputs = []
    for run in ("cpu", "cuda"):
        labels, nearest = np.empty(n, np.int64), np.empty(n)
        if run == "cpu":
            assign.nearest_centers_cpu(*inputs, labels, nearest)
        else:
            assign.launch(*inputs, labels, nearest)
        outputs.append((labels, nearest))
    np.testing.assert_array_equal(outputs[0][0], outputs[1][0])
    np.testing.assert_allclose(outputs[0][1], outputs[1][1], rtol=1e-12)
    ref_labels, ref_nearest = reference.assign(z, mask, centers, centers_mask, dims)
    np.testing.assert_array_equal(outputs[0][0], ref_labels)
    np.testing.assert_allclose(outputs[0][1], ref_nearest, rtol=1e-9, atol=1e-7)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 30), st.integers(1, 5), st.integers(1, 4), st.integers(1, 7),
       st.integers(0, 2**32 - 1))
def test_chunk_sums_cuda_matches_cpu_and_add_at(n, k, p, rows_per_chunk, seed):
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n, p))
    labels = rng.integers(-1, k, size=n)
    expected = np.zeros((k, p))
    keep = labels >= 0
    np.add.at(expected, labels[keep], values[keep])
    n_chunks = -(-n // rows_per_chunk)
    for run in ("cpu", "cuda"):
        partials = np.zeros((n_chunks, k, p))
        if run == "cpu":
            update.chunk_sums_cpu(values, labels, rows_per_chunk, partials)
        else:
            update.launch(values, labels, rows_per_chunk, partials)
        np.testing.assert_allclose(partials.sum(axis=0), expected, atol=1e-12)


def test_rows_per_chunk_bounds_the_chunk_count():
    assert update.rows_per_chunk(10, 8) == update.MIN_ROWS_PER_CHUNK
    assert update.rows_per_chunk(10**6, 8) == 125_000


def loop_scores(sums, which, inv, base, blind):
    """Literal triple loop of the scoring formula (docs/method.md, "Completion")."""
    n, k = sums.shape
    out = np.empty((n, k))
    for i in range(n):
        q = which[i]
        for j in range(k):
            terms = [sums[i, l] * inv[q, l, j] + base[q, l, j] for l in range(k)]
            out[i, j] = np.sqrt(min([blind[q, j], *terms]))
    return out


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 6), st.integers(1, 4), st.integers(1, 12),
       st.sampled_from([np.float32, np.float64]), st.integers(0, 2**32 - 1))
def test_pattern_sums_cuda_matches_cpu_and_the_ascending_loop(n_patterns, n_mod, n_cols, dtype,
                                                               seed):
    """B^Q = Σ_{m∈Q} P_m added in ascending m: bit for bit a loop of scalar additions in
    the same dtype, on both twins."""
    rng = np.random.default_rng(seed)
    patterns = (rng.random((n_patterns, n_mod)) < 0.5).astype(dtype)
    pair_sums = rng.random((n_mod, n_cols)).astype(dtype)
    expected = np.empty((n_patterns, n_cols), dtype=dtype)
    for u in range(n_patterns):
        for c in range(n_cols):
            total = dtype(0)
            for m in range(n_mod):
                if patterns[u, m]:
                    total = dtype(total + pair_sums[m, c])
            expected[u, c] = total
    for run in ("cpu", "cuda"):
        out = np.empty((n_patterns, n_cols), dtype=dtype)
        if run == "cpu":
            complete.pattern_sums_cpu(patterns, pair_sums, out)
        else:
            complete.launch_2d(complete.pattern_sums_cuda, out.shape[::-1], patterns, pair_sums,
                               out)
        np.testing.assert_array_equal(out, expected)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 6), st.integers(1, 5), st.integers(1, 3), st.integers(0, 2**32 - 1))
def test_candidate_scores_cuda_matches_cpu_and_loop(n, k, n_patterns, seed):
    rng = np.random.default_rng(seed)
    sums = rng.random((n, k))
    overlap = rng.random((n_patterns, k, 1)) < 0.7
    inv = np.where(overlap, 1.0 / rng.integers(1, 5, size=(n_patterns, k, k)), 0.0)
    base = np.where(overlap, rng.random((n_patterns, k, k)), np.inf)
    blind = np.where(rng.random((n_patterns, k)) < 0.5, rng.random((n_patterns, k)), np.inf)
    which = rng.integers(0, n_patterns, size=n)
    args = (sums, which, inv, base, blind)
    expected = loop_scores(*args)
    for run in ("cpu", "cuda"):
        out = np.empty((n, k))
        if run == "cpu":
            complete.candidate_scores_cpu(*args, out)
        else:
            complete.launch_2d(complete.candidate_scores_cuda, out.shape, *args, out)
        np.testing.assert_allclose(out, expected, rtol=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(1, 6), st.integers(1, 4), st.integers(1, 4),
       st.integers(0, 2**32 - 1))
def test_choose_candidates_cuda_matches_cpu_and_the_sorted_rule(n, k, n_mod, r, seed):
    rng = np.random.default_rng(seed)
    scores = rng.choice([0.0, 0.5, 1.0, 2.0, np.inf], size=(n, k))  # many ties, some +inf
    missing = rng.random((n, n_mod)) < 0.6
    centers_mask = rng.random((k, n_mod)) < 0.6
    expected = np.full((n, n_mod, r), -1)
    for i in range(n):
        for m in range(n_mod):
            ranked = sorted((scores[i, j], j) for j in range(k) if centers_mask[j, m])[:r]
            if ranked and np.isfinite(ranked[0][0]):
                ranked = [(s, j) for s, j in ranked if np.isfinite(s)]
            if missing[i, m]:
                expected[i, m, :len(ranked)] = [j for _, j in ranked]
    for run in ("cpu", "cuda"):
        chosen, chosen_scores = np.empty((n, n_mod, r), np.int64), np.empty((n, n_mod, r))
        args = (scores, missing, centers_mask, chosen, chosen_scores)
        if run == "cpu":
            complete.choose_candidates_cpu(*args)
        else:
            complete.launch_2d(complete.choose_candidates_cuda, missing.shape, *args)
        np.testing.assert_array_equal(chosen, expected)
        rows = np.arange(n)[:, None, None]
        np.testing.assert_array_equal(chosen_scores[chosen >= 0],
                                      scores[np.broadcast_to(rows, chosen.shape), chosen][chosen >= 0])
        assert np.isinf(chosen_scores[chosen < 0]).all()


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 5), st.integers(1, 4), st.lists(st.integers(1, 3), min_size=1, max_size=3),
       st.integers(1, 3), st.integers(0, 2**32 - 1))
def test_weighted_fill_cuda_matches_cpu_and_loop(n, k, dims, r, seed):
    rng = np.random.default_rng(seed)
    n_mod, d = len(dims), sum(dims)
    column_modality = np.repeat(np.arange(n_mod), dims)
    rows = rng.permutation(n + 2)[:n]
    missing = rng.random((n, n_mod)) < 0.6
    chosen = np.where(rng.random((n, n_mod, r)) < 0.8, rng.integers(0, k, (n, n_mod, r)), -1)
    weights = rng.random((n, n_mod, r))
    values, default = rng.normal(size=(k, d)), rng.normal(size=d)
    start = rng.normal(size=(n + 2, d))
    expected = start.copy()
    for t in range(n):
        for c in range(d):
            m = column_modality[c]
            if missing[t, m]:
                expected[rows[t], c] = (default[c] if chosen[t, m, 0] < 0 else
                                        sum(weights[t, m, s] * values[chosen[t, m, s], c]
                                            for s in range(r) if chosen[t, m, s] >= 0))
    for run in ("cpu", "cuda"):
        out = start.copy()
        offsets = np.concatenate([[0], np.cumsum(dims)])
        args = (out, rows, missing, chosen, weights, values, default, column_modality, offsets,
                np.finfo(np.float64).max)
        if run == "cpu":
            complete.weighted_fill_cpu(*args)
        else:
            complete.launch_2d(complete.weighted_fill_cuda, (n, d), *args)
        np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-15)


def test_cuda_kernels_run_in_the_simulator_without_a_gpu():
    import numba
    from conftest import HAS_GPU

    if HAS_GPU:
        pytest.skip("a real GPU is present")
    assert numba.config.ENABLE_CUDASIM


@settings(max_examples=25, deadline=None)
@given(partial_problem(), st.sampled_from([np.float32, np.float64]), st.integers(1, 4))
def test_fused_assign_and_statistics_match_the_separate_steps(problem, dtype, chunk):
    from ul4m4_gpu.core.kmeans import (PackedRows, assign, assign_with_statistics,
                                  cluster_statistics)

    z, mask, centers, centers_mask, dims = problem
    rows = PackedRows.build(z.astype(dtype), mask, dims)
    centers = centers.astype(dtype)
    labels, nearest, (sums, counts, members) = assign_with_statistics(
        rows, centers, centers_mask, batch_size=chunk)
    ref_labels, ref_nearest = assign(rows, centers, centers_mask)
    np.testing.assert_array_equal(labels, ref_labels)
    np.testing.assert_array_equal(nearest, ref_nearest)  # the same tiles and BLAS calls
    ref_sums, ref_counts, ref_members = cluster_statistics(rows, ref_labels, centers.shape[0])
    np.testing.assert_allclose(sums, ref_sums, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(counts, ref_counts)
    np.testing.assert_array_equal(members, ref_members)


def test_launch_skips_an_empty_grid():
    """CUDA rejects zero-block grids: an empty launch must not reach the kernel."""
    from ul4m4_gpu.kernels import launching

    class NeverLaunched:
        def __getitem__(self, config):
            raise AssertionError(f"launched with {config}")

    assert launching.blocks_for((0, 300), (16, 16)) == (0, 19)
    launching.launch(NeverLaunched(), launching.blocks_for((0, 300), (16, 16)), (16, 16))
    with pytest.raises(AssertionError, match="launched"):
        launching.launch(NeverLaunched(), (1, 19), (16, 16))
