"""The cluster-indexed KNN completion (ul4m4_gpu/core/knn.py) against the literal
brute-force KNN of tests/reference.py.

Ties. Most problems here hold small integers with modality widths that are powers of two:
then every step of the library's GEMM expansion (norms, cross terms, 1/d_m) is exact in
float32 and float64, each distance is bit-identical to the reference's loop, and exact ties
(duplicate donors, equal distances) are decided by the documented rule, lowest donor
index, on both sides, so whole neighbour sets must agree. The one continuous-valued
comparison (float64) skips slots whose k-th and (k+1)-th reference distances lie within
1e-6 of each other: the expansion's round-off, up to 64 ulps of the norm terms
(README, "Errors and guarantees"), is ~1e-13 here, so only such near-ties could flip.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference as ref  # noqa: E402
from ul4m4_gpu.core.backend import to_numpy
from ul4m4_gpu.core.kmeans import PackedRows
from ul4m4_gpu.core.knn import DONOR_TILE, ROW_TILE, Donors, knn_fill

#: The fill's own round-off: a uniform mean of k values as Σ (1/k)·v against Σ v / k.
MEAN_RTOL = {np.float64: 1e-12, np.float32: 1e-5}


def expand(mask, dims):
    return np.repeat(mask, dims, axis=1)


def random_problem(rng, n_rows, n_donors, dims, n_clusters, dtype, integer=True):
    """Rows, donors and centres (zero on what they lack) with random masks: some rows and
    donors observe one modality, some rows nothing; labels drawn in [−1, K)."""
    def values(n):
        if integer:
            return rng.integers(-3, 4, size=(n, sum(dims))).astype(dtype)
        return rng.standard_normal((n, sum(dims))).astype(dtype)

    def masks(n, p):
        mask = rng.random((n, len(dims))) < p
        single = rng.random(n) < 0.2
        mask[single] = False
        mask[single, rng.integers(0, len(dims), size=int(single.sum()))] = True
        return mask

    mask, donor_mask = masks(n_rows, 0.5), masks(n_donors, 0.6)
    mask[rng.random(n_rows) < 0.05] = False
    centers_mask = masks(n_clusters, 0.7)
    z = np.where(expand(mask, dims), values(n_rows), 0).astype(dtype)
    donor_z = np.where(expand(donor_mask, dims), values(n_donors), 0).astype(dtype)
    centers = np.where(expand(centers_mask, dims), values(n_clusters), 0).astype(dtype)
    labels = rng.integers(-1, n_clusters, size=n_donors)
    return z, mask, donor_z, donor_mask, labels, centers, centers_mask


def library_fill(xp, z, mask, donor_z, donor_mask, labels, centers, centers_mask, dims,
                 n_neighbors, n_probe, batch_size=None):
    """(completed (N, D) NumPy, mean_filled (M,), donors in their inverted-file order)."""
    rows = PackedRows.build(xp.asarray(z), xp.asarray(mask), dims)
    donors = Donors.build(PackedRows.build(xp.asarray(donor_z), xp.asarray(donor_mask), dims),
                          labels, centers.shape[0])
    out = rows.z.copy()
    mean_filled = knn_fill(rows, donors, xp.asarray(centers), xp.asarray(centers_mask), out,
                           n_neighbors=n_neighbors, n_probe=n_probe, batch_size=batch_size)
    return to_numpy(out), mean_filled, donors


def reference_fill(z, mask, donors, centers, centers_mask, dims, n_neighbors, n_probe):
    """ref.knn_complete over the donors in the library's order, restricted to each row's
    probed clusters (and the unplaced donors) when n_probe < K."""
    donor_z, donor_mask = to_numpy(donors.z), to_numpy(donors.mask)
    labels = to_numpy(donors.labels)
    allowed = None
    if n_probe < centers.shape[0]:
        allowed = []
        for i in range(z.shape[0]):
            probed = set(ref.nearest_centers(z[i], mask[i], centers, centers_mask, dims,
                                             n_probe)) | {-1}
            allowed.append([j for j in range(len(labels)) if labels[j] in probed])
    return ref.knn_complete(z, mask, donor_z, donor_mask, dims, n_neighbors, allowed)


def expected_mean_filled(mask, margins):
    return (~mask & np.isnan(margins)).sum(axis=0)


# The CuPy path runs its kernels in Numba's CUDA simulator (a Python thread per CUDA
# thread): it gets small problems, the NumPy path the full-size ones.
@pytest.fixture(params=["numpy", "cupy"])
def xp(request):
    if request.param == "numpy":
        return np
    return request.getfixturevalue("device_cupy")


def size(xp, numpy_size, device_size):
    return numpy_size if xp is np else device_size


#: (device, dtype, n_neighbors, n_probe) of the literal comparison; K = 6.
LITERAL_CASES = [
    *[("numpy", dtype, k, n_probe) for dtype in (np.float64, np.float32)
      for k, n_probe in ((1, 6), (5, 6), (3, 99), (5, 2), (2, 1))],
    ("cupy", np.float32, 5, 6), ("cupy", np.float32, 5, 2),
]


@pytest.mark.parametrize("xp, dtype, n_neighbors, n_probe", LITERAL_CASES, indirect=["xp"])
def test_knn_fill_equals_the_literal_knn(xp, dtype, n_neighbors, n_probe):
    """n_probe ≥ K (6): brute-force KNN over every donor; n_probe < K: the same KNN over
    the donors of the row's probed clusters and the unplaced ones. Integer data: exact."""
    dims = (1, 2, 4, 8) if xp is np else (1, 2, 4)
    problem = random_problem(np.random.default_rng(n_neighbors * 10 + n_probe),
                             size(xp, 40, 12), size(xp, 60, 20), dims, 6, dtype)
    z, mask, _, _, _, centers, centers_mask = problem
    got, mean_filled, donors = library_fill(xp, *problem, dims, n_neighbors, n_probe)
    want, margins = reference_fill(z, mask, donors, centers, centers_mask, dims,
                                   n_neighbors, n_probe)
    np.testing.assert_allclose(got, want, rtol=MEAN_RTOL[dtype], atol=MEAN_RTOL[dtype])
    np.testing.assert_array_equal(mean_filled, expected_mean_filled(mask, margins))


def test_knn_fill_equals_the_literal_knn_on_continuous_values():
    """float64 normal values over several donor tiles: equal wherever the neighbour set is
    not a near-tie (the k-th and (k+1)-th distances ≥ 1e-6 apart), which is nearly every
    slot."""
    dims = (3, 5, 7)
    rng = np.random.default_rng(3)
    problem = random_problem(rng, 30, DONOR_TILE["cpu"] + 300, dims, 5, np.float64,
                             integer=False)
    z, mask, _, _, _, centers, centers_mask = problem
    for n_probe in (5, 2):
        got, mean_filled, donors = library_fill(np, *problem, dims, 4, n_probe)
        want, margins = reference_fill(z, mask, donors, centers, centers_mask, dims, 4,
                                       n_probe)
        decided = ~(margins < 1e-6)  # nan (observed, mean-filled) and +inf count as decided
        assert decided.mean() > 0.95
        columns = expand(decided, dims)
        np.testing.assert_allclose(got[columns], want[columns], rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(mean_filled, expected_mean_filled(mask, margins))


@pytest.mark.parametrize("n_probe", [3, 8])
def test_a_rows_fill_does_not_depend_on_its_batch(xp, n_probe):
    """Bitwise: batch sizes 1, 7 and all rows, continuous float32 values; on NumPy the rows
    span two row tiles and the donors two donor tiles."""
    dims = (16, 40, 64) if xp is np else (3, 5)
    n_rows = size(xp, ROW_TILE["cpu"] + 44, 16)
    problem = random_problem(np.random.default_rng(5), n_rows,
                             size(xp, DONOR_TILE["cpu"] + 200, 40), dims, 8, np.float32,
                             integer=False)
    results = [library_fill(xp, *problem, dims, 5, n_probe, batch_size=size)[:2]
               for size in (1, 7, n_rows)]
    for got, mean_filled in results[1:]:
        np.testing.assert_array_equal(got, results[0][0])
        np.testing.assert_array_equal(mean_filled, results[0][1])


def test_observed_slots_are_untouched_and_every_missing_slot_is_written():
    dims = (2, 3, 4)
    rng = np.random.default_rng(7)
    z, mask, donor_z, donor_mask, labels, centers, centers_mask = random_problem(
        rng, 50, 80, dims, 4, np.float64, integer=False)
    rows = PackedRows.build(z, mask, dims)
    donors = Donors.build(PackedRows.build(donor_z, donor_mask, dims), labels, 4)
    observed = expand(mask, dims)
    out = np.where(observed, rng.standard_normal(z.shape), np.nan)
    before = out.copy()
    knn_fill(rows, donors, centers, centers_mask, out, n_neighbors=3, n_probe=2)
    np.testing.assert_array_equal(out[observed].view(np.int64), before[observed].view(np.int64))
    assert np.isfinite(out[~observed]).all()


@st.composite
def problems(draw):
    n_mod = draw(st.integers(1, 4))
    dims = tuple(draw(st.sampled_from([1, 2, 4, 8])) for _ in range(n_mod))
    n_rows, n_donors, k = draw(st.integers(1, 15)), draw(st.integers(0, 25)), draw(st.integers(1, 5))
    bools = lambda n: np.array(draw(st.lists(st.booleans(), min_size=n * n_mod,  # noqa: E731
                                             max_size=n * n_mod)), bool).reshape(n, n_mod)
    ints = lambda n: np.array(draw(st.lists(st.integers(-2, 2), min_size=n * sum(dims),  # noqa: E731
                                            max_size=n * sum(dims))), float).reshape(n, sum(dims))
    mask, donor_mask, centers_mask = bools(n_rows), bools(n_donors), bools(k)
    unobserved = draw(st.integers(0, n_mod - 1))
    if draw(st.booleans()):
        donor_mask[:, unobserved] = False  # a modality no donor observes
    z = np.where(expand(mask, dims), ints(n_rows), 0)
    donor_z = np.where(expand(donor_mask, dims), ints(n_donors), 0)
    centers = np.where(expand(centers_mask, dims), ints(k), 0)
    labels = np.array(draw(st.lists(st.integers(-1, k - 1), min_size=n_donors,
                                    max_size=n_donors)), np.int64)
    return (dims, z, mask, donor_z, donor_mask, labels, centers, centers_mask,
            draw(st.integers(1, 4)), draw(st.integers(1, k + 1)))


@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_knn_fill_matches_the_reference_on_any_shape(problem):
    """Partial and empty centres, modalities no donor observes, rows observing one modality
    or none, no donors at all, duplicate donors (small integers): exact neighbour sets."""
    dims, z, mask, donor_z, donor_mask, labels, centers, centers_mask, k, n_probe = problem
    got, mean_filled, donors = library_fill(np, z, mask, donor_z, donor_mask, labels, centers,
                                            centers_mask, dims, k, n_probe)
    want, margins = reference_fill(z, mask, donors, centers, centers_mask, dims, k, n_probe)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(mean_filled, expected_mean_filled(mask, margins))


def test_donors_sample_is_seeded_bounded_and_keeps_rows_observing_something():
    dims = (2, 3)
    rng = np.random.default_rng(11)
    z = rng.standard_normal((200, 5))
    mask = rng.random((200, 2)) < 0.6
    z = np.where(expand(mask, dims), z, 0)
    labels = rng.integers(-1, 4, size=200)
    rows = PackedRows.build(z, mask, dims)
    eligible = np.flatnonzero(mask.any(axis=1))
    everyone = Donors.sample(rows, labels, 4, max_donors=500, random_state=0)
    np.testing.assert_array_equal(np.sort(everyone.source), eligible)

    first = Donors.sample(rows, labels, 4, max_donors=50, random_state=1)
    again = Donors.sample(rows, labels, 4, max_donors=50, random_state=1)
    other = Donors.sample(rows, labels, 4, max_donors=50, random_state=2)
    assert len(first) == 50
    np.testing.assert_array_equal(first.source, again.source)
    assert set(first.source) != set(other.source)
    assert set(first.source) <= set(eligible)
    for donors in (everyone, first):  # the inverted file: sorted by label, rows intact
        np.testing.assert_array_equal(donors.labels, labels[donors.source])
        np.testing.assert_array_equal(donors.z, z[donors.source])
        np.testing.assert_array_equal(donors.mask, mask[donors.source])
        for bucket in range(-1, 4):
            members = donors.labels[donors.offsets[bucket + 1]:donors.offsets[bucket + 2]]
            assert (members == bucket).all()
        assert donors.offsets[-1] == len(donors)
        order = np.lexsort((donors.source, donors.labels))
        np.testing.assert_array_equal(order, np.arange(len(donors)))


def test_bad_arguments_are_named():
    dims = (2,)
    rows = PackedRows.build(np.zeros((3, 2)), np.ones((3, 1), bool), dims)
    with pytest.raises(ValueError, match=r"labels must lie in \[-1, 2\), got \[2\] at rows \[1\]"):
        Donors.build(rows, np.array([0, 2, -1]), 2)
    with pytest.raises(ValueError, match="labels has 2 entries for 3 rows"):
        Donors.sample(rows, np.array([0, 1]), 2)
    with pytest.raises(ValueError, match="max_donors must be an int >= 1"):
        Donors.sample(rows, np.array([0, 1, 1]), 2, max_donors=0)
    donors = Donors.build(rows, np.array([0, 1, 1]), 2)
    centers, centers_mask = np.zeros((2, 2)), np.ones((2, 1), bool)
    for name in ("n_neighbors", "n_probe"):
        arguments = {"n_neighbors": 1, "n_probe": 1, name: 0}
        with pytest.raises(ValueError, match=f"{name} must be an int >= 1"):
            knn_fill(rows, donors, centers, centers_mask, rows.z.copy(), **arguments)
    narrow = Donors.build(PackedRows.build(np.zeros((3, 2), np.float32), np.ones((3, 1), bool),
                                           dims), np.array([0, 1, 1]), 2)
    with pytest.raises(ValueError, match=r"donors have dims \(2,\) and dtype float32, the "
                                         r"rows \(2,\) and float64"):
        knn_fill(rows, narrow, centers, centers_mask, rows.z.copy(), n_neighbors=1, n_probe=1)
    with pytest.raises(ValueError, match="donors are labelled for 2 clusters, centers has 3"):
        knn_fill(rows, donors, np.zeros((3, 2)), np.ones((3, 1), bool), rows.z.copy(),
                 n_neighbors=1, n_probe=1)
