"""One fit behind every front end: the in-memory, streamed and Dask fits give the same
FittedState, and a toy fourth row source (a plain Python list of row blocks, written here
from the interface alone) fits through the same code."""

import dataclasses
import warnings

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ul4m4_gpu import MultiModalArray, UL4M4Imputer
from ul4m4_gpu.core.backend import to_numpy
from ul4m4_gpu.core.fit import FitParams, fit
from ul4m4_gpu.core.kmeans import ClusterStats, PackedRows, assign_rows
from ul4m4_gpu.core.normalise import Moments, normalise
from ul4m4_gpu.scale.streaming import fit_parquet
from synthetic import explicit_init, make_data

distributed = pytest.importorskip("distributed")
da = pytest.importorskip("dask.array")

from ul4m4_gpu.scale.dask_imputer import DaskUL4M4Imputer  # noqa: E402

#: (rows, dims, clusters, batch rows of the streamed fit, row chunks of the Dask fit)
SHAPES = [(300, (4, 3, 5), 5, 64, 70), (450, (2, 6), 4, 100, 200), (200, (3, 3, 3, 2), 6, 33, 50)]


@pytest.fixture(scope="module")
def client():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Port .* is already in use")
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                           dashboard_address=None)
    with cluster, distributed.Client(cluster, set_as_default=False) as client:
        yield client


def names_of(dims):
    return tuple(f"mod{m}" for m in range(len(dims)))


def assert_same_state(state, reference):
    """Equal FittedStates: everything discrete exactly; the centres, statistics and inertia
    to float round-off (the front ends sum the same float64 terms in other orders)."""
    for field in ("dims", "names", "n_iter", "rule"):
        assert getattr(state, field) == getattr(reference, field), field
    np.testing.assert_array_equal(to_numpy(state.centers_mask), to_numpy(reference.centers_mask))
    np.testing.assert_array_equal(to_numpy(state.labels), to_numpy(reference.labels))
    for field in ("centers", "mean", "scale"):
        np.testing.assert_allclose(to_numpy(getattr(state, field)),
                                   to_numpy(getattr(reference, field)), rtol=1e-6, atol=1e-6,
                                   err_msg=field)
    assert state.inertia == pytest.approx(reference.inertia, rel=1e-6)


@pytest.mark.filterwarnings("ignore:.*rows observe no modality")
@pytest.mark.parametrize("init", ["explicit", "k-means++"])
@pytest.mark.parametrize("n, dims, k, batch_rows, chunks", SHAPES)
def test_in_memory_streamed_and_dask_fits_give_the_same_state(client, tmp_path, init, n, dims,
                                                              k, batch_rows, chunks):
    x, mask = make_data(seed=n, n=n, dims=dims, k=k)
    names = names_of(dims)
    params = dict(n_clusters=k, random_state=3, completion="overlap", n_candidates=2,
                  init=explicit_init(x, mask, slice(10, 10 + k), dims) if init == "explicit"
                  else "k-means++")
    data = MultiModalArray(x, mask, dims, names)
    reference = UL4M4Imputer(**params, device="cpu").fit(data).fitted_state()

    path = tmp_path / "rows.parquet"
    pq.write_table(data.to_arrow(), path, row_group_size=batch_rows * 2)
    streamed = fit_parquet(path, UL4M4Imputer(**params, device="cpu"), batch_rows=batch_rows)

    dask_input = (da.from_array(x, chunks=(chunks, -1)), da.from_array(mask, chunks=(chunks, -1)),
                  dims, names)
    on_dask = DaskUL4M4Imputer(**params, client=client, timeout=60).fit(dask_input)
    dask_state = on_dask.fitted_state()
    dask_state = dataclasses.replace(
        dask_state, labels=client.compute(dask_state.labels).result(timeout=60))

    assert reference.n_iter >= 2
    assert_same_state(streamed.fitted_state(), reference)
    assert_same_state(dask_state, reference)


class ListRows:
    """A row source over a plain Python list of (values, mask) blocks, written from the
    interface of ul4m4_gpu.core.sources alone (not from its implementations)."""

    def __init__(self, blocks, dims, names):
        self.blocks, self.dims, self.names = blocks, tuple(dims), tuple(names)
        self.n_rows = sum(len(values) for values, _ in blocks)
        self.where, self.device, self.dtype = "the list", "cpu", np.dtype(np.float32)
        self.packed, self.previous = None, None

    def moments(self):
        parts = [Moments.of(values, mask, self.dims) for values, mask in self.blocks]
        total = parts[0]
        for part in parts[1:]:
            total = total + part
        return total

    def normalise(self, mean, scale):
        self.packed = [PackedRows.build(normalise(values, mask, mean, scale, self.dims), mask,
                                        self.dims) for values, mask in self.blocks]

    def sample(self, index):
        z = np.concatenate([rows.z for rows in self.packed])
        mask = np.concatenate([rows.mask for rows in self.packed])
        if index is not None:
            z, mask = z[index], mask[index]
        return PackedRows.build(z, mask, self.dims)

    def start_run(self, label):
        self.previous = None

    def assign(self, centers, centers_mask):
        labels, total = [], None
        for rows in self.packed:
            block_labels, stats = assign_rows(rows, centers, centers_mask)
            labels.append(block_labels)
            total = stats if total is None else total + stats
        labels = np.concatenate(labels)
        changed = len(labels) if self.previous is None else int((labels != self.previous).sum())
        self.previous = labels
        return ClusterStats(total.sums, total.counts, total.members, changed, total.inertia)

    def labels(self):
        return self.previous


@pytest.mark.filterwarnings("ignore:.*rows observe no modality")
@pytest.mark.parametrize("cuts", [(600,), (100, 250, 600), (1, 2, 3, 599, 600)])
@pytest.mark.parametrize("init", ["explicit", "k-means++"])
def test_a_toy_list_source_fits_through_the_same_code(cuts, init):
    x, mask = make_data()
    dims = (4, 3, 5)
    bounds = (0, *cuts)
    blocks = [(x[a:b], mask[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    params = dict(n_clusters=5, random_state=1, n_init=1 if init == "explicit" else 3,
                  init=explicit_init(x, mask) if init == "explicit" else "k-means++")
    state = fit(ListRows(blocks, dims, names_of(dims)), FitParams(**params))
    reference = UL4M4Imputer(**params, device="cpu").fit(
        MultiModalArray(x, mask, dims, names_of(dims))).fitted_state()
    assert reference.n_iter >= 2
    assert_same_state(state, reference)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.lists(st.integers(0, 60), min_size=1, max_size=4),
       st.lists(st.integers(1, 4), min_size=1, max_size=4))
def test_moments_of_blocks_add_up_to_the_moments_of_the_whole(seed, sizes, dims):
    """Chan's combination against a literal two-pass mean and M2 per modality."""
    rng = np.random.default_rng(seed)
    n = sum(sizes)
    values = rng.normal(loc=3.0, scale=2.0, size=(n, sum(dims)))
    mask = rng.random((n, len(dims))) < 0.6
    bounds = np.cumsum([0, *sizes])
    total = Moments.empty(dims)
    for a, b in zip(bounds[:-1], bounds[1:]):
        total = total + Moments.of(values[a:b], mask[a:b], dims)
    assert total.n_rows == n and total.n_empty == int((~mask.any(axis=1)).sum())
    columns = np.cumsum([0, *dims])
    for m in range(len(dims)):
        observed = values[mask[:, m], columns[m]:columns[m + 1]]
        assert total.counts[m] == observed.shape[0]
        expected_mean = observed.mean(axis=0) if len(observed) else np.zeros(dims[m])
        expected_m2 = ((observed - expected_mean) ** 2).sum(axis=0)
        np.testing.assert_allclose(total.mean[columns[m]:columns[m + 1]], expected_mean,
                                   rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(total.m2[columns[m]:columns[m + 1]], expected_m2,
                                   rtol=1e-9, atol=1e-9)
