"""The library's vectorised UL4M4 pieces against the literal loop reference (tests/reference.py).

Hypothesis draws small problems (M in 1..6, d_m in 1..50, N <= 40, K <= 8, float64) with
random masks, single-modality rows, empty rows, partial centres (some carrying nothing) and a
modality that no centre carries; unobserved slots of rows *and* centres hold garbage (NaN,
+-1e300, or a plain number) to prove that no function reads them.

Two families:
- ``test_*_matches_reference``: continuous random values, no two distinct vectors equal, so
  float64 round-off of the library's GEMM expansion cannot flip a comparison; exact labels,
  seeds, n_iter and sources are required.
- ``*_with_duplicates`` / ``*_exact_ties`` / ``*_zero_branch`` / ``*_exactly_zero``:
  duplicate rows, duplicate centres, centres equal to a row. docs/method.md resolves these
  exactly (ties -> lowest index; k-means++ ``total == 0`` -> uniform candidate draw), so
  they are strict too, except where a tie is only a float64 near-tie of distinct centres
  (Lloyd: the mean of three copies of x need not be x), which is checked for consistency.

A few hand-computed cases pin down both the reference and the library.
"""

from __future__ import annotations

import functools
import math
import os
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, assume, event, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference as ref  # noqa: E402  (tests/reference.py, the literal loop implementation)
from ul4m4_gpu.core.completion import greedy_complete

#: The paper's rule, which ``ref.greedy_complete`` implements literally.
paper_complete = functools.partial(greedy_complete, completion="paper", n_candidates=1)
from ul4m4_gpu.core.distances import partial_distances
from ul4m4_gpu.core.fit import lloyd
from ul4m4_gpu.core.kmeans import kmeans_plusplus
from ul4m4_gpu.core.normalise import fit_modality_stats, normalise

SETTINGS = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# The exact-tie tests draw large structured problems whose failures the shrinker grinds on for
# minutes; they print a reproducible Problem(...) summary instead of shrinking.
NO_SHRINK = dict(SETTINGS, phases=[Phase.explicit, Phase.reuse, Phase.generate])

GARBAGE = [np.nan, 1e300, -1e300, 7.5]


# --------------------------------------------------------------------------- helpers


def expand(mask, dims):
    """(N, M) modality mask -> (N, D) column mask."""
    return np.repeat(np.asarray(mask, dtype=bool), dims, axis=1)


def with_garbage(values, mask, dims, garbage):
    out = np.array(values, dtype=np.float64, copy=True)
    out[~expand(mask, dims)] = garbage
    return out


def np_(x):
    """Library output -> NumPy (outputs follow the input's device; inputs here are NumPy)."""
    return np.asarray(x)


def assert_distances_close(lib, expected, scale):
    """Same +inf pattern; finite squared distances agree to round-off of a GEMM expansion."""
    lib = np_(lib)
    assert lib.shape == expected.shape
    assert lib.dtype == np.float64
    np.testing.assert_array_equal(np.isposinf(lib), np.isposinf(expected))
    fin = np.isfinite(expected)
    assert np.isfinite(lib[fin]).all()
    np.testing.assert_allclose(lib[fin] ** 2, expected[fin] ** 2, rtol=1e-9, atol=1e-9 * scale**2)


# --------------------------------------------------------------------------- strategies


ROW_KINDS = ("random", "random", "single", "full")


@st.composite
def mask_rows(draw, n, n_mod, kinds):
    rows = []
    for _ in range(n):
        kind = draw(st.sampled_from(kinds))
        if kind == "full":
            row = [True] * n_mod
        elif kind == "empty":
            row = [False] * n_mod
        elif kind == "single":
            m = draw(st.integers(0, n_mod - 1))
            row = [j == m for j in range(n_mod)]
        else:
            row = draw(st.lists(st.booleans(), min_size=n_mod, max_size=n_mod))
        rows.append(row)
    return np.array(rows, dtype=bool).reshape(n, n_mod)


class Problem:
    """One drawn problem. A plain class (not a dataclass) so that Hypothesis prints the short
    ``__repr__`` below, which is enough to rebuild the example by hand: the values are
    ``default_rng(seed).standard_normal(...) * scale`` followed by the listed ``edits``."""

    def __init__(self, dims, z, mask, centers, centers_mask, scale, seed, garbage, edits):
        self.dims, self.z, self.mask = dims, z, mask  # z: garbage at unobserved slots
        self.centers, self.centers_mask = centers, centers_mask  # garbage where not carried
        self.scale, self.seed, self.garbage, self.edits = scale, seed, garbage, edits

    def __repr__(self):
        return (
            f"Problem(dims={self.dims}, seed={self.seed}, scale={self.scale}, "
            f"garbage={self.garbage}, edits={self.edits}, "
            f"mask={self.mask.astype(int).tolist()}, "
            f"centers_mask={self.centers_mask.astype(int).tolist()})"
        )


@st.composite
def problems(
    draw,
    *,
    row_kinds=ROW_KINDS,
    center_kinds=ROW_KINDS,
    min_rows=1,
    max_rows=40,
    min_k=1,
    max_k=8,
    orphan=False,
    ties=False,
):
    """``ties=False``: continuous random values, so no two distinct (row | centre) vectors
    coincide and no float64 round-off of a GEMM expansion can flip a comparison.
    ``ties=True``: also duplicate rows, duplicate centres and centres equal to a row -- exact
    ties that the spec resolves by "lowest index" and exact zeros (total == 0)."""
    dims = tuple(draw(st.lists(st.integers(1, 50), min_size=1, max_size=6)))
    n_mod = len(dims)
    n = draw(st.integers(min_rows, max_rows))
    k = draw(st.integers(min_k, max_k))
    mask = draw(mask_rows(n, n_mod, row_kinds))
    cmask = draw(mask_rows(k, n_mod, center_kinds))
    seed = draw(st.integers(0, 2**32 - 1))
    scale = draw(st.sampled_from([1e-2, 1.0, 1e2]))
    garbage = draw(st.sampled_from(GARBAGE))
    rng = np.random.default_rng(seed)
    d_total = sum(dims)
    z = rng.standard_normal((n, d_total)) * scale
    centers = rng.standard_normal((k, d_total)) * scale

    # exact ties: duplicate rows, duplicate centres, centres equal to a row
    edits = []
    for _ in range(draw(st.integers(0, min(3, n - 1))) if ties else 0):
        src, dst = draw(st.integers(0, n - 1)), draw(st.integers(0, n - 1))
        z[dst], mask[dst] = z[src], mask[src]
        edits.append(f"row {dst} := row {src}")
    for _ in range(draw(st.integers(0, min(2, k - 1))) if ties else 0):
        src, dst = draw(st.integers(0, k - 1)), draw(st.integers(0, k - 1))
        centers[dst], cmask[dst] = centers[src], cmask[src]
        edits.append(f"centre {dst} := centre {src}")
    if ties and draw(st.booleans()):
        r, c = draw(st.integers(0, n - 1)), draw(st.integers(0, k - 1))
        centers[c] = z[r]
        edits.append(f"centre {c} values := row {r} values")

    if orphan and draw(st.booleans()):
        m = draw(st.integers(0, n_mod - 1))
        cmask[:, m] = False
        edits.append(f"no centre carries modality {m}")

    return Problem(
        dims=dims,
        z=with_garbage(z, mask, dims, garbage),
        mask=mask,
        centers=with_garbage(centers, cmask, dims, garbage),
        centers_mask=cmask,
        scale=scale,
        seed=seed,
        garbage=garbage,
        edits=edits,
    )


def assert_centers(lib_c, lib_m, exp_c, exp_m, dims, scale, exact=False):
    """Masks equal; values equal (or close) where the expected mask is True."""
    lib_c, lib_m = np_(lib_c), np_(lib_m)
    assert lib_c.shape == exp_c.shape and lib_m.shape == exp_m.shape
    assert lib_m.dtype == bool
    np.testing.assert_array_equal(lib_m, exp_m)
    cols = expand(exp_m, dims)
    if exact:
        np.testing.assert_array_equal(lib_c[cols], exp_c[cols])
    else:
        np.testing.assert_allclose(lib_c[cols], exp_c[cols], rtol=1e-9, atol=1e-12 * scale)


# --------------------------------------------------------------------------- 1. distances


def _check_distances(p):
    z0, c0 = p.z.copy(), p.centers.copy()
    got = partial_distances(p.z, p.mask, p.centers, p.centers_mask, p.dims)
    expected = ref.partial_distances(p.z, p.mask, p.centers, p.centers_mask, p.dims)
    assert_distances_close(got, expected, p.scale)
    assert np.array_equal(p.z, z0, equal_nan=True) and np.array_equal(p.centers, c0, equal_nan=True)


@settings(max_examples=200, **SETTINGS)
@given(problems(row_kinds=ROW_KINDS + ("empty",), center_kinds=ROW_KINDS + ("empty",),
                orphan=True))
def test_partial_distances_match_reference(p):
    _check_distances(p)


@settings(max_examples=60, **NO_SHRINK)
@given(problems(row_kinds=ROW_KINDS + ("empty",), center_kinds=ROW_KINDS + ("empty",),
                orphan=True, ties=True))
def test_partial_distances_match_reference_with_duplicates(p):
    _check_distances(p)


@settings(max_examples=60, **SETTINGS)
@given(
    dims=st.lists(st.integers(1, 50), min_size=1, max_size=6).map(tuple),
    seed=st.integers(0, 2**32 - 1),
    scale=st.sampled_from([1e-2, 1.0, 1e2]),
    data=st.data(),
)
def test_identical_row_and_centre_are_at_distance_exactly_zero(dims, seed, scale, data):
    """d(x, x) = 0 exactly (docs/method.md: the partial distance is an exact formula). Everything that the
    spec resolves by exact comparison depends on it: the k-means++ ``total == 0`` branch
    (all remaining rows duplicate a seed) and greedy-completion ties at score 0 (a row equal
    to a centre on its observed part, e.g. the only member of a cluster)."""
    mask = data.draw(mask_rows(1, len(dims), ("random", "single", "full")), label="mask")
    assume(mask.any())
    x = np.random.default_rng(seed).standard_normal((1, sum(dims))) * scale
    d = np_(partial_distances(with_garbage(x, mask, dims, np.nan), mask,
                              with_garbage(x, mask, dims, 1e300), mask, dims))
    assert d[0, 0] == 0.0, f"d(x, x) = {d[0, 0]!r}, expected exactly 0"


# --------------------------------------------------------------------------- 2. k-means++


def _check_kmeans_plusplus(p, random_state, data):
    n_candidates = int(p.mask.any(axis=1).sum())
    if n_candidates == 0:
        n_clusters = 1
    else:
        n_clusters = data.draw(st.integers(1, min(8, n_candidates + 1)), label="n_clusters")
    if n_clusters > n_candidates:
        with pytest.raises(ValueError):
            ref.kmeans_plusplus(p.z, p.mask, p.dims, n_clusters, random_state)
        with pytest.raises(ValueError):
            kmeans_plusplus(p.z, p.mask, p.dims, n_clusters, random_state)
        return
    exp_c, exp_m, exp_seeds = ref.kmeans_plusplus(p.z, p.mask, p.dims, n_clusters, random_state)
    got_c, got_m, got_seeds = kmeans_plusplus(p.z, p.mask, p.dims, n_clusters, random_state)
    got_seeds = np_(got_seeds)
    assert got_seeds.shape == (n_clusters,) and got_seeds.dtype.kind == "i"
    np.testing.assert_array_equal(got_seeds, exp_seeds)
    assert p.mask[got_seeds].any(axis=1).all(), "an empty row became a seed"
    # a centre is a copy of its seed row: bit-for-bit, and 0 where the row is unobserved
    assert_centers(got_c, got_m, exp_c, exp_m, p.dims, p.scale, exact=True)
    got_c = np_(got_c)
    assert (got_c[~expand(exp_m, p.dims)] == 0).all()


@settings(max_examples=200, **SETTINGS)
@given(problems(row_kinds=ROW_KINDS + ("empty",)), st.integers(0, 2**31 - 1), st.data())
def test_kmeans_plusplus_matches_reference(p, random_state, data):
    _check_kmeans_plusplus(p, random_state, data)


@settings(max_examples=100, **NO_SHRINK)
@given(problems(row_kinds=ROW_KINDS + ("empty",), ties=True), st.integers(0, 2**31 - 1),
       st.data())
def test_kmeans_plusplus_matches_reference_with_duplicates(p, random_state, data):
    _check_kmeans_plusplus(p, random_state, data)


@settings(max_examples=100, **SETTINGS)
@given(
    dims=st.lists(st.integers(1, 50), min_size=1, max_size=6).map(tuple),
    n_distinct=st.integers(1, 3),
    copies=st.integers(1, 6),
    extra_clusters=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
    random_state=st.integers(0, 2**31 - 1),
    data=st.data(),
)
def test_kmeans_plusplus_all_weights_zero_branch(dims, n_distinct, copies, extra_clusters,
                                                 seed, random_state, data):
    """Duplicate rows only, more clusters than distinct rows: once every distinct row is a
    seed, every D is exactly 0, total == 0 and the next seed is a uniform candidate draw
    (rng.randint) -- the library must see those zeros exactly, or the RNG stream diverges."""
    n_mod = len(dims)
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n_distinct, sum(dims)))
    base_mask = data.draw(mask_rows(n_distinct, n_mod, ("random", "single", "full")))
    assume(base_mask.any(axis=1).all())
    z = np.repeat(base, copies, axis=0)
    mask = np.repeat(base_mask, copies, axis=0)
    perm = rng.permutation(z.shape[0])
    z, mask = with_garbage(z[perm], mask[perm], dims, np.nan), mask[perm]
    n_clusters = min(n_distinct + extra_clusters, z.shape[0])
    exp_c, exp_m, exp_seeds = ref.kmeans_plusplus(z, mask, dims, n_clusters, random_state)
    got_c, got_m, got_seeds = kmeans_plusplus(z, mask, dims, n_clusters, random_state)
    np.testing.assert_array_equal(np_(got_seeds), exp_seeds)
    assert_centers(got_c, got_m, exp_c, exp_m, dims, 1.0, exact=True)


# --------------------------------------------------------------------------- 3. Lloyd


def _initial_centers(p, init, random_state, ties):
    k = p.centers.shape[0]
    if init == "kmeans++":
        n_candidates = int(p.mask.any(axis=1).sum())
        assume(n_candidates >= 1)
        centers, cmask, _ = ref.kmeans_plusplus(p.z, p.mask, p.dims, min(k, n_candidates),
                                                random_state)
        return centers, cmask
    if init == "rows":
        # with ties, rows may repeat: bit-identical centres, an exact tie (lowest index wins)
        rng = np.random.default_rng(random_state)
        if ties:
            rows = rng.integers(0, p.z.shape[0], size=k)
        else:
            rows = rng.choice(p.z.shape[0], size=min(k, p.z.shape[0]), replace=False)
        return p.z[rows].copy(), p.mask[rows].copy()
    return p.centers.copy(), p.centers_mask.copy()  # partial, garbage where not carried


def _near_tie(p, trace):
    """True when some reference assignment step had a runner-up centre within float64
    round-off of the winner (d² gap <= 1e-9 scale²) that is not bit-identical to it: then
    the label is decided by the last bits of the arithmetic, which a GEMM expansion cannot
    reproduce (e.g. the mean of three copies of x is not always exactly x)."""
    for centers, cmask in trace:
        d = ref.partial_distances(p.z, p.mask, centers, cmask, p.dims)
        cols = [expand(cmask[j:j + 1], p.dims)[0] for j in range(len(centers))]
        for i in range(d.shape[0]):
            if not np.isfinite(d[i]).any():
                continue
            b = int(np.argmin(d[i]))
            for j in range(d.shape[1]):
                if j == b or not np.isfinite(d[i, j]):
                    continue
                identical = np.array_equal(cmask[j], cmask[b]) and np.array_equal(
                    centers[j][cols[j]], centers[b][cols[b]])
                if not identical and abs(d[i, j] ** 2 - d[i, b] ** 2) <= 1e-9 * p.scale**2:
                    return True
    return False


def _check_lloyd(p, init, max_iter, tol, batch_size, random_state, allow_near_ties):
    centers, cmask = _initial_centers(p, init, random_state, ties=allow_near_ties)
    z0, c0, m0 = p.z.copy(), centers.copy(), cmask.copy()
    trace = []
    exp = ref.lloyd(p.z, p.mask, p.dims, centers, cmask, max_iter=max_iter, tol=tol,
                    trace=trace if allow_near_ties else None)
    got = lloyd(p.z, p.mask, p.dims, centers, cmask, max_iter=max_iter, tol=tol,
                batch_size=batch_size)
    labels = np_(got.labels)
    assert labels.shape == (p.z.shape[0],) and labels.dtype == np.int64
    # inputs untouched
    assert np.array_equal(p.z, z0, equal_nan=True)
    assert np.array_equal(centers, c0, equal_nan=True) and np.array_equal(cmask, m0)

    if allow_near_ties and _near_tie(p, trace):
        # Only self-consistency: every label is (up to round-off) the nearest centre among
        # the library's own final centres, -1 exactly where no centre shares a modality.
        event("near tie: exact comparison skipped")
        d = ref.partial_distances(p.z, p.mask, np_(got.centers), np_(got.centers_mask), p.dims)
        unreachable = ~np.isfinite(d).any(axis=1)
        np.testing.assert_array_equal(labels == -1, unreachable)
        rows = np.flatnonzero(~unreachable)
        assert (d[rows, labels[rows]] ** 2 <= d[rows].min(axis=1) ** 2 + 1e-9 * p.scale**2).all()
        return

    np.testing.assert_array_equal(labels, exp.labels)
    assert int(got.n_iter) == exp.n_iter
    assert_centers(got.centers, got.centers_mask, exp.centers, exp.centers_mask, p.dims, p.scale)
    assert math.isclose(float(got.inertia), exp.inertia, rel_tol=1e-9,
                        abs_tol=1e-9 * p.scale**2 * p.z.shape[0])


LLOYD_ARGS = dict(
    init=st.sampled_from(["kmeans++", "random", "rows"]),
    max_iter=st.sampled_from([1, 2, 3, 100]),
    tol=st.sampled_from([0.0, 1e-6, 1e-2]),
    batch_size=st.sampled_from([None, 1, 3, 7]),
    random_state=st.integers(0, 2**31 - 1),
)


@settings(max_examples=200, **SETTINGS)
@given(p=problems(row_kinds=ROW_KINDS + ("empty",), center_kinds=ROW_KINDS + ("empty",)),
       **LLOYD_ARGS)
def test_lloyd_matches_reference(p, init, max_iter, tol, batch_size, random_state):
    _check_lloyd(p, init, max_iter, tol, batch_size, random_state, allow_near_ties=False)


@settings(max_examples=60, **NO_SHRINK)
@given(p=problems(row_kinds=ROW_KINDS + ("empty",), center_kinds=ROW_KINDS + ("empty",),
                  ties=True), **LLOYD_ARGS)
def test_lloyd_matches_reference_with_duplicates(p, init, max_iter, tol, batch_size,
                                                 random_state):
    _check_lloyd(p, init, max_iter, tol, batch_size, random_state, allow_near_ties=True)


# --------------------------------------------------------------------------- 4. completion


def _check_completion(p, batch_size):
    z0, c0 = p.z.copy(), p.centers.copy()
    exp_z, exp_imp, exp_src = ref.greedy_complete(
        p.z, p.mask, p.centers, p.centers_mask, p.dims, return_sources=True
    )
    got_z, got_imp, got_src = paper_complete(
        p.z, p.mask, p.centers, p.centers_mask, p.dims, batch_size=batch_size,
        return_sources=True,
    )
    got_z, got_imp, got_src = np_(got_z), np_(got_imp), np_(got_src)
    assert got_z.shape == p.z.shape and got_z.dtype == np.float64
    np.testing.assert_array_equal(got_imp, ~p.mask)
    np.testing.assert_array_equal(exp_imp, ~p.mask)
    assert got_src.dtype == np.int64
    np.testing.assert_array_equal(got_src, exp_src)
    obs = expand(p.mask, p.dims)
    assert np.array_equal(got_z[obs], p.z[obs]), "observed values must come back bit-for-bit"
    # imputed slots are copies of centre values (or 0): exact equality
    np.testing.assert_array_equal(got_z[~obs], exp_z[~obs])
    assert np.isfinite(got_z).all()
    # without return_sources: a pair, same values
    got_z2, got_imp2 = paper_complete(p.z, p.mask, p.centers, p.centers_mask, p.dims,
                                       batch_size=batch_size)
    np.testing.assert_array_equal(np_(got_z2), got_z)
    np.testing.assert_array_equal(np_(got_imp2), got_imp)
    assert np.array_equal(p.z, z0, equal_nan=True) and np.array_equal(p.centers, c0, equal_nan=True)


@settings(max_examples=200, **SETTINGS)
@given(
    p=problems(center_kinds=ROW_KINDS + ("empty",), orphan=True),
    batch_size=st.sampled_from([None, 1, 4]),
)
def test_greedy_complete_matches_reference(p, batch_size):
    _check_completion(p, batch_size)


@settings(max_examples=75, **SETTINGS)
@given(problems(row_kinds=("empty", "random", "single"), orphan=True))
def test_greedy_complete_rows_with_no_modality(p):
    """Kept separate so that a failure here is visibly about empty rows (every candidate
    is then a bare centre, all at score 0: ties resolved by lowest index)."""
    _check_completion(p, None)


@settings(max_examples=100, **NO_SHRINK)
@given(
    p=problems(row_kinds=ROW_KINDS + ("empty",), center_kinds=ROW_KINDS + ("empty",),
               orphan=True, ties=True),
    batch_size=st.sampled_from([None, 1, 4]),
)
def test_greedy_complete_exact_ties(p, batch_size):
    """Duplicate centres and centres equal to a row: candidates whose score is exactly 0
    (or exactly equal) must be taken lowest index first, as the literal loop does."""
    _check_completion(p, batch_size)


@settings(max_examples=10, **SETTINGS)
@given(seed=st.integers(0, 2**32 - 1), n_modalities=st.integers(63, 70))
def test_greedy_complete_matches_reference_beyond_64_modalities(seed, n_modalities):
    """Rows whose missing patterns differ only in modalities 64 and up must not share a
    pattern (a 64-bit key per pattern once merged them)."""
    rng = np.random.default_rng(seed)
    dims = (1,) * n_modalities
    z = rng.normal(size=(4, n_modalities))
    mask = np.ones((4, n_modalities), dtype=bool)
    mask[:, 0] = False
    mask[1:, n_modalities - 1] = False
    mask[2:, n_modalities - 2] = False
    mask[3, 5] = False
    centers = 3 * rng.normal(size=(6, n_modalities))
    centers_mask = rng.random((6, n_modalities)) < 0.5
    centers_mask[:, 1] = True
    expected = ref.greedy_complete(z, mask, centers, centers_mask, dims, return_sources=True)
    got = paper_complete(z, mask, centers, centers_mask, dims, return_sources=True)
    np.testing.assert_array_equal(got[2], expected[2])
    np.testing.assert_allclose(got[0], expected[0])


RULES = st.sampled_from([("paper", 1), ("overlap", 1), ("nearest", 1), ("paper", 3),
                         ("overlap", 2), ("overlap", 5), ("nearest", 3)])


def _check_rule(p, rule, temperature, batch_size, exact_sources):
    completion, n_candidates = rule
    exp_z, exp_src = ref.complete(p.z, p.mask, p.centers, p.centers_mask, p.dims, completion,
                                  n_candidates, temperature)
    z0 = p.z.copy()
    got_z, got_imp, got_src = greedy_complete(
        p.z, p.mask, p.centers, p.centers_mask, p.dims, batch_size=batch_size,
        return_sources=True, completion=completion, n_candidates=n_candidates,
        temperature=temperature)
    got_z, got_imp, got_src = np_(got_z), np_(got_imp), np_(got_src)
    np.testing.assert_array_equal(got_imp, ~p.mask)
    obs = expand(p.mask, p.dims)
    assert np.array_equal(got_z[obs], p.z[obs]), "observed values must come back bit-for-bit"
    assert np.isfinite(got_z).all()
    np.testing.assert_allclose(got_z[~obs], exp_z[~obs], rtol=1e-9, atol=1e-12 * p.scale)
    if exact_sources:
        np.testing.assert_array_equal(got_src, exp_src)
    else:  # duplicate centres may swap places: the same values must be filled from
        np.testing.assert_array_equal(got_src < 0, exp_src < 0)
        off = ref.offsets_of(p.dims)
        for i, m in zip(*np.nonzero(got_src >= 0)):
            block = slice(off[m], off[m + 1])
            np.testing.assert_array_equal(p.centers[got_src[i, m], block],
                                          p.centers[exp_src[i, m], block])
    assert np.array_equal(p.z, z0, equal_nan=True)


@settings(max_examples=200, **SETTINGS)
@given(p=problems(center_kinds=ROW_KINDS + ("empty",), orphan=True), rule=RULES,
       temperature=st.sampled_from([0.05, 0.5, 3.0]), batch_size=st.sampled_from([None, 1, 4]))
def test_every_completion_rule_matches_reference(p, rule, temperature, batch_size):
    _check_rule(p, rule, temperature, batch_size, exact_sources=True)


@settings(max_examples=100, **NO_SHRINK)
@given(p=problems(row_kinds=ROW_KINDS + ("empty",), center_kinds=ROW_KINDS + ("empty",),
                  orphan=True, ties=True),
       rule=RULES, temperature=st.sampled_from([0.05, 3.0]), batch_size=st.sampled_from([None, 1]))
def test_every_completion_rule_matches_reference_with_ties(p, rule, temperature, batch_size):
    """Exact ties resolve by lowest index under every rule whose scores compare the same
    numbers (paper, overlap); the nearest rule scores duplicate centres from separate GEMM
    columns, so there they may swap, with the same values filled."""
    _check_rule(p, rule, temperature, batch_size, exact_sources=rule[0] != "nearest")


@settings(max_examples=50, **SETTINGS)
@given(p=problems(center_kinds=ROW_KINDS + ("empty",), orphan=True))
def test_reference_slot_rule_is_the_greedy_loop_for_the_paper_hard_pick(p):
    """The statement the library is built on: the paper's greedy loop equals, per missing
    modality, the best-scoring candidate carrying it (candidates never change)."""
    loop_z, _, loop_src = ref.greedy_complete(p.z, p.mask, p.centers, p.centers_mask, p.dims,
                                              return_sources=True)
    slot_z, slot_src = ref.complete(p.z, p.mask, p.centers, p.centers_mask, p.dims, "paper", 1,
                                    1.0)
    np.testing.assert_array_equal(slot_src, loop_src)
    obs = expand(p.mask, p.dims)
    np.testing.assert_array_equal(slot_z[~obs], loop_z[~obs])


# --------------------------------------------------------------------------- 5. normalisation


@settings(max_examples=150, **SETTINGS)
@given(
    dims=st.lists(st.integers(1, 50), min_size=1, max_size=6).map(tuple),
    n=st.integers(1, 40),
    ddof=st.sampled_from([0, 1]),
    seed=st.integers(0, 2**32 - 1),
    garbage=st.sampled_from(GARBAGE),
    offset=st.sampled_from([0.0, 3.0, -1e3]),
    data=st.data(),
)
def test_normalisation_matches_reference(dims, n, ddof, seed, garbage, offset, data):
    n_mod = len(dims)
    mask = data.draw(mask_rows(n, n_mod, ROW_KINDS + ("empty",)), label="mask")
    # make every modality observed at least once (the unobserved case is tested below);
    # sometimes by exactly one row, so that count <= ddof is exercised
    for m in range(n_mod):
        if not mask[:, m].any():
            mask[data.draw(st.integers(0, n - 1), label=f"row for modality {m}"), m] = True
    rng = np.random.default_rng(seed)
    values = rng.standard_normal((n, sum(dims))) * rng.uniform(0.1, 10, size=sum(dims)) + offset
    # constant columns (std 0 -> 1) and near-constant ones
    off = ref.offsets_of(dims)
    for c in data.draw(st.lists(st.integers(0, sum(dims) - 1), max_size=4), label="const cols"):
        values[:, c] = offset + 0.1
    values = with_garbage(values, mask, dims, garbage)
    v0 = values.copy()

    exp_mean, exp_scale = ref.fit_modality_stats(values, mask, dims, ddof=ddof)
    got_mean, got_scale = fit_modality_stats(values, mask, dims, ddof=ddof)
    got_mean, got_scale = np_(got_mean), np_(got_scale)
    assert got_mean.shape == (off[-1],) and got_scale.shape == (off[-1],)
    np.testing.assert_allclose(got_mean, exp_mean, rtol=1e-12, atol=1e-12 * (1 + abs(offset)))
    np.testing.assert_allclose(got_scale, exp_scale, rtol=1e-9, atol=0)

    exp_z = ref.normalise(values, mask, exp_mean, exp_scale, dims)
    got_z = np_(normalise(values, mask, exp_mean, exp_scale, dims))
    assert got_z.shape == values.shape and got_z.dtype == np.float64
    obs = expand(mask, dims)
    assert (got_z[~obs] == 0).all(), "missing slots must be exactly 0"
    np.testing.assert_allclose(got_z[obs], exp_z[obs], rtol=1e-12, atol=1e-12)
    assert np.array_equal(values, v0, equal_nan=True)


@settings(max_examples=30, **SETTINGS)
@given(
    dims=st.lists(st.integers(1, 5), min_size=2, max_size=6).map(tuple),
    n=st.integers(1, 10),
    data=st.data(),
)
def test_unobserved_modality_raises_naming_it(dims, n, data):
    n_mod = len(dims)
    mask = data.draw(mask_rows(n, n_mod, ROW_KINDS), label="mask")
    for m in range(n_mod):
        mask[0, m] = True
    dead = data.draw(st.integers(0, n_mod - 1), label="dead modality")
    mask[:, dead] = False
    values = with_garbage(np.ones((n, sum(dims))), mask, dims, np.nan)
    for impl in (ref.fit_modality_stats, fit_modality_stats):
        with pytest.raises(ValueError, match=rf"(?<![\d.]){dead}(?![\d.])"):
            impl(values, mask, dims)


# --------------------------------------------------------------------------- hand-checked


IMPLS = {
    "reference": ref,
    "library": type("lib", (), dict(
        partial_distances=staticmethod(partial_distances),
        kmeans_plusplus=staticmethod(kmeans_plusplus),
        lloyd=staticmethod(lloyd),
        greedy_complete=staticmethod(paper_complete),
        fit_modality_stats=staticmethod(fit_modality_stats),
        normalise=staticmethod(normalise),
    )),
}
impls = pytest.mark.parametrize("impl", list(IMPLS.values()), ids=list(IMPLS))
NaN = np.nan


@impls
def test_hand_distance_two_modalities(impl):
    # dims (1, 2).  a = [1 | 0, 0], b = [4 | 1, 2], both complete:
    #   m0: (4-1)^2 / 1 = 9;  m1: ((1-0)^2 + (2-0)^2) / 2 = 2.5
    #   d = sqrt((9 + 2.5) / 2) = sqrt(5.75) = 2.3979...
    # b observing only m1:  d = sqrt(2.5 / 1) = 1.5811...
    # b observing only m0 while a observes only m1: S empty -> +inf
    dims = (1, 2)
    z = np.array([[1.0, 0.0, 0.0], [1.0, NaN, NaN]])
    mask = np.array([[True, True], [True, False]])
    c = np.array([[4.0, 1.0, 2.0], [NaN, 1.0, 2.0], [4.0, 1e300, NaN]])
    cm = np.array([[True, True], [False, True], [True, False]])
    d = np_(impl.partial_distances(z, mask, c, cm, dims))
    expected = np.array([
        [math.sqrt(5.75), math.sqrt(2.5), 3.0],
        [3.0, math.inf, 3.0],
    ])
    np.testing.assert_allclose(d, expected, rtol=1e-12)
    assert np.isposinf(d[1, 1])


@impls
def test_hand_distance_divides_by_dim_and_count(impl):
    # dims (4, 1): a = [1,1,1,1 | 0], b = [0,0,0,0 | 0]
    #   m0: 4 / 4 = 1;  m1: 0 -> d = sqrt((1 + 0) / 2) = sqrt(0.5)
    d = np_(impl.partial_distances(np.array([[1.0, 1, 1, 1, 0]]), np.ones((1, 2), bool),
                                   np.zeros((1, 5)), np.ones((1, 2), bool), (4, 1)))
    assert d[0, 0] == pytest.approx(math.sqrt(0.5), rel=1e-12)


@impls
def test_hand_kmeans_plusplus_skips_empty_rows(impl):
    # rows 0 and 2 observe something, row 1 nothing. candidates = [0, 2].
    # RandomState(0).randint(2) == 0 -> first seed 0; weights [0, 0, d(2,0)^2] with
    # d > 0, so the second draw can only land on row 2.
    assert np.random.RandomState(0).randint(2) == 0
    dims = (1, 1)
    z = np.array([[0.0, 5.0], [NaN, NaN], [3.0, NaN]])
    mask = np.array([[True, True], [False, False], [True, False]])
    c, cm, seeds = impl.kmeans_plusplus(z, mask, dims, 2, 0)
    np.testing.assert_array_equal(np_(seeds), [0, 2])
    np.testing.assert_array_equal(np_(cm), [[True, True], [True, False]])
    np.testing.assert_array_equal(np_(c), [[0.0, 5.0], [3.0, 0.0]])
    with pytest.raises(ValueError):
        impl.kmeans_plusplus(z, mask, dims, 3, 0)


@impls
def test_hand_kmeans_plusplus_prefers_rows_sharing_nothing(impl):
    # After seed 0 (observes m0 only), row 1 (m1 only) shares nothing -> D = 1e9, w = 1e18,
    # against w = 1 for row 2: the draw lands on row 1 unless u < 1 (probability 1e-18).
    assert np.random.RandomState(0).randint(3) == 0
    z = np.array([[0.0, NaN], [NaN, 0.0], [1.0, NaN]])
    mask = np.array([[True, False], [False, True], [True, False]])
    _, _, seeds = impl.kmeans_plusplus(z, mask, (1, 1), 2, 0)
    np.testing.assert_array_equal(np_(seeds), [0, 1])


@impls
def test_hand_lloyd_two_blobs(impl):
    # 1-D, one modality: rows 0, 1, 10, 11; centres start at 0 and 10.
    # iteration 1: means 0.5 and 10.5; labels unchanged -> stop, n_iter = 1.
    # inertia = 4 * 0.5^2 = 1.0.  Row 4 observes nothing: label -1, excluded.
    z = np.array([[0.0], [1.0], [10.0], [11.0], [NaN]])
    mask = np.array([[True], [True], [True], [True], [False]])
    res = impl.lloyd(z, mask, (1,), np.array([[0.0], [10.0]]), np.ones((2, 1), bool))
    np.testing.assert_array_equal(np_(res.labels), [0, 0, 1, 1, -1])
    np.testing.assert_allclose(np_(res.centers), [[0.5], [10.5]])
    assert int(res.n_iter) == 1
    assert float(res.inertia) == pytest.approx(1.0)


@impls
def test_hand_lloyd_drops_modality_and_keeps_empty_cluster(impl):
    # dims (1, 1). Rows observe m0 only. Centre 0 = [0 | 0] (both), centre 1 = [100 | -]
    # far away -> no members, kept as is. Centre 0's members observe no m1 -> dropped.
    # iteration 1: c0 = [mean(1, 3) = 2 | dropped]; shift = +inf (mask changed); labels the
    # same -> stop. inertia = (2-1)^2 + (3-2)^2 = 2.
    z = np.array([[1.0, NaN], [3.0, NaN]])
    mask = np.array([[True, False], [True, False]])
    c = np.array([[0.0, 0.0], [100.0, NaN]])
    cm = np.array([[True, True], [True, False]])
    res = impl.lloyd(z, mask, (1, 1), c, cm)
    np.testing.assert_array_equal(np_(res.labels), [0, 0])
    np.testing.assert_array_equal(np_(res.centers_mask), [[True, False], [True, False]])
    assert np_(res.centers)[0, 0] == pytest.approx(2.0)
    assert np_(res.centers)[1, 0] == 100.0
    assert int(res.n_iter) == 1
    assert float(res.inertia) == pytest.approx(2.0)


@impls
def test_hand_greedy_complete(impl):
    # dims (1, 1, 1); centres: c0 = [0, 0, -] (m0, m1), c1 = [9, -, 7] (m0, m2),
    # c2 = [9, 5, 6] (all).  Row observes m0 = 9, misses m1 and m2.
    # cand0 = [9, 0, -]: d(.,c0) = sqrt((81 + 0)/2) = 6.36; d(.,c1) = sqrt(0/1) = 0 -> score 0
    # cand1 = [9, -, 7]: d(.,c1) = 0 -> score 0
    # cand2 = [9, 5, 6]: d(.,c2) = 0 -> score 0
    # all tie at 0 -> lowest j first: cand0 gives m1 = 0; then cand1 gives m2 = 7.
    dims = (1, 1, 1)
    c = np.array([[0.0, 0.0, NaN], [9.0, NaN, 7.0], [9.0, 5.0, 6.0]])
    cm = np.array([[True, True, False], [True, False, True], [True, True, True]])
    z = np.array([[9.0, NaN, NaN]])
    mask = np.array([[True, False, False]])
    out, imp, src = impl.greedy_complete(z, mask, c, cm, dims, return_sources=True)
    np.testing.assert_array_equal(np_(out), [[9.0, 0.0, 7.0]])
    np.testing.assert_array_equal(np_(imp), [[False, True, True]])
    np.testing.assert_array_equal(np_(src), [[-1, 0, 1]])
    # Move the row to m0 = 1: cand0 = [1, 0, -] -> d(.,c0) = sqrt(1/2) = 0.707,
    # cand1 = [1, -, 7] -> d(.,c1) = sqrt(64/2) = 5.66, d(.,c2) = sqrt((64 + 1)/2) = 5.70,
    #   d(.,c0) = sqrt(1/1) = 1 -> score 1;
    # cand2 = [1, 5, 6] -> d(.,c0) = sqrt((1 + 25)/2) = 3.61, d(.,c1) = sqrt((64+1)/2) = 5.70,
    #   d(.,c2) = sqrt(64/3) = 4.62 -> score 3.61.
    # order: cand0 (m1 = 0), cand1 (m2 = 7).
    z = np.array([[1.0, NaN, NaN]])
    out, _, src = impl.greedy_complete(z, mask, c, cm, dims, return_sources=True)
    np.testing.assert_array_equal(np_(out), [[1.0, 0.0, 7.0]])
    np.testing.assert_array_equal(np_(src), [[-1, 0, 1]])


@impls
def test_hand_greedy_complete_orphan_modality_and_complete_rows(impl):
    # dims (2, 1); no centre carries m1 -> filled with 0, source -1, still reported imputed.
    # c0 = [0, 0 | -], c1 = [10, 10 | -]. Row 0 misses m0 and m1 (no modality at all): it
    # has nothing to compare a candidate with -> the training mean (0), sources -1.
    # Row 1 observes m1 = 3, misses m0: cand0 = [0, 0 | 3], cand1 = [10, 10 | 3]; both at
    # distance 0 from their own centre -> tie -> c0.  Row 2 is complete and untouched.
    dims = (2, 1)
    c = np.array([[0.0, 0.0, NaN], [10.0, 10.0, 1e300]])
    cm = np.array([[True, False], [True, False]])
    z = np.array([[NaN, NaN, NaN], [NaN, NaN, 3.0], [0.1, 0.2, 0.3]])
    mask = np.array([[False, False], [False, True], [True, True]])
    out, imp, src = impl.greedy_complete(z, mask, c, cm, dims, return_sources=True)
    np.testing.assert_array_equal(np_(out), [[0.0, 0.0, 0.0], [0.0, 0.0, 3.0], [0.1, 0.2, 0.3]])
    np.testing.assert_array_equal(np_(imp), ~mask)
    np.testing.assert_array_equal(np_(src), [[-1, -1], [0, -1], [-1, -1]])


@impls
def test_hand_greedy_prefers_better_scoring_candidate(impl):
    # dims (1, 1): c0 = [0 | 0], c1 = [10 | 10]. Row observes m0 = 9.
    # cand0 = [9 | 0]: d(.,c0) = sqrt(81/2) = 6.36, d(.,c1) = sqrt((1 + 100)/2) = 7.11
    # cand1 = [9 | 10]: d(.,c1) = sqrt((1 + 0)/2) = 0.71 -> wins: m1 = 10.
    c = np.array([[0.0, 0.0], [10.0, 10.0]])
    out, _, src = impl.greedy_complete(np.array([[9.0, NaN]]), np.array([[True, False]]), c,
                                       np.ones((2, 2), bool), (1, 1), return_sources=True)
    np.testing.assert_array_equal(np_(out), [[9.0, 10.0]])
    np.testing.assert_array_equal(np_(src), [[-1, 1]])


def test_hand_completion_rules_and_the_blind_spot():
    # dims (1, 1): c0 = [- | 5] (carries m1 only), c1 = [0 | 1]. Row observes m0 = 0.
    # paper: cand0 = [0 | 5] is at distance 0 from c0 (they share only m1, equal there),
    #   cand1 = [0 | 1] at 0 from c1: a tie at 0 -> c0, m1 = 5 (the blind spot).
    # overlap: only c1 shares the observed m0: cand0 -> sqrt((0 + 16)/2) = 2.828, cand1 -> 0
    #   -> c1, m1 = 1. nearest: d(row, c0) = inf, d(row, c1) = 0 -> c1.
    # overlap, r = 2, tau = 1: weights 1 (c1) and exp(-2.828) (c0):
    #   m1 = (1 + 5 e^-2.828) / (1 + e^-2.828). nearest, r = 2: c0's +inf is dropped -> 1.
    c = np.array([[NaN, 5.0], [0.0, 1.0]])
    cm = np.array([[False, True], [True, True]])
    z, mask = np.array([[0.0, NaN]]), np.array([[True, False]])
    w = math.exp(-math.sqrt(8.0))
    expected = {("paper", 1): (5.0, 0), ("overlap", 1): (1.0, 1), ("nearest", 1): (1.0, 1),
                ("overlap", 2): ((1 + 5 * w) / (1 + w), 1), ("nearest", 2): (1.0, 1)}
    for (completion, r), (value, source) in expected.items():
        for impl in ("reference", "library"):
            if impl == "reference":
                out, src = ref.complete(z, mask, c, cm, (1, 1), completion, r, 1.0)
            else:
                out, _, src = greedy_complete(z, mask, c, cm, (1, 1), return_sources=True,
                                              completion=completion, n_candidates=r,
                                              temperature=1.0)
            assert np_(out)[0, 1] == pytest.approx(value, rel=1e-12), (completion, r, impl)
            assert np_(src)[0, 1] == source, (completion, r, impl)


@impls
def test_hand_normalisation(impl):
    # dims (1, 2). m0 observed by rows 0, 1 with values 1, 3 -> mean 2, std 1 (ddof 0),
    # sqrt(2) (ddof 1). m1 observed by row 2 only: mean = the row, std 0 -> 1 (ddof 0);
    # count 1 <= ddof 1 -> 1 as well.
    dims = (1, 2)
    values = np.array([[1.0, NaN, NaN], [3.0, NaN, NaN], [NaN, 4.0, -2.0]])
    mask = np.array([[True, False], [True, False], [False, True]])
    mean, scale = impl.fit_modality_stats(values, mask, dims)
    np.testing.assert_allclose(np_(mean), [2.0, 4.0, -2.0])
    np.testing.assert_allclose(np_(scale), [1.0, 1.0, 1.0])
    mean, scale = impl.fit_modality_stats(values, mask, dims, ddof=1)
    np.testing.assert_allclose(np_(scale), [math.sqrt(2.0), 1.0, 1.0])
    z = np_(impl.normalise(values, mask, np.array([2.0, 4.0, -2.0]),
                           np.array([2.0, 1.0, 1.0]), dims))
    np.testing.assert_allclose(z, [[-0.5, 0, 0], [0.5, 0, 0], [0, 0, 0]])


@impls
def test_hand_greedy_singleton_cluster_ties(impl):
    # A row equal to a centre on its observed part, that centre carrying nothing else (the
    # row was the only member of its cluster): d(candidate_j, c_own) = 0 for *every* j, so
    # all candidates tie at 0 and the spec takes candidate 0 first.
    # dims (2, 1): c0 = [- - | 5], c1 = [0.3, -0.7 | -], c2 = [1, 1 | 9].
    # Row = [0.3, -0.7 | ?]. Scores all 0 -> candidate 0 fills m1 = 5 (not c2's 9).
    c = np.array([[NaN, NaN, 5.0], [0.3, -0.7, NaN], [1.0, 1.0, 9.0]])
    cm = np.array([[False, True], [True, False], [True, True]])
    out, _, src = impl.greedy_complete(np.array([[0.3, -0.7, NaN]]), np.array([[True, False]]),
                                       c, cm, (2, 1), return_sources=True)
    np.testing.assert_array_equal(np_(src), [[-1, 0]])
    np.testing.assert_array_equal(np_(out), [[0.3, -0.7, 5.0]])
