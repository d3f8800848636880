"""DaskUL4M4Imputer on a real dask.distributed LocalCluster (2 worker processes, loopback):
same results as UL4M4Imputer whatever the partitioning, seeding quality, fault tolerance and
bounded waits."""

import importlib
import os
import signal
import time
import warnings

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")
da = pytest.importorskip("dask.array")
dd = pytest.importorskip("dask.dataframe")
pd = pytest.importorskip("pandas")
pa = pytest.importorskip("pyarrow")

from ul4m4_gpu import MultiModalArray, UL4M4Imputer  # noqa: E402
from ul4m4_gpu.core.completion import CompletionWarning  # noqa: E402
from ul4m4_gpu.core.backend import gpu_available  # noqa: E402
from ul4m4_gpu.scale.dask_imputer import DaskMultiModalArray, DaskUL4M4Imputer  # noqa: E402
from ul4m4_gpu.core.normalise import fit_modality_stats  # noqa: E402
from synthetic import DIMS, K, explicit_init, make_data  # noqa: E402
from test_streaming import NAMES, list_column  # noqa: E402


def _cluster(n_workers):
    with warnings.catch_warnings():  # a second cluster's HTTP server: "port 8787 in use"
        warnings.filterwarnings("ignore", message="Port .* is already in use")
        return distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1,
                                        processes=True, dashboard_address=None,
                                        host="127.0.0.1")


@pytest.fixture(scope="module")
def client():
    with _cluster(2) as cluster, distributed.Client(cluster, set_as_default=False) as client:
        yield client


def as_dask(x, mask, chunks):
    return (da.from_array(x, chunks=(chunks, -1)), da.from_array(mask, chunks=(chunks, -1)), DIMS)


def gather(client, array):
    return client.compute(array).result(timeout=60)


def list_table(x, mask):
    """An Arrow table with one list<float32> column per modality (NAMES), null where
    missing, for (N, D) ``x`` and (N, M) ``mask``."""
    offsets = np.cumsum((0,) + DIMS)
    return pa.table({name: list_column(x[:, offsets[m]:offsets[m + 1]], mask[:, m])
                     for m, name in enumerate(NAMES)})


def dask_frame(table, npartitions):
    """A dask DataFrame of pyarrow-backed columns holding ``table``."""
    return dd.from_pandas(table.to_pandas(types_mapper=pd.ArrowDtype), npartitions=npartitions)


@pytest.fixture(scope="module")
def data():
    x, mask = make_data()
    init = explicit_init(x, mask)
    # random_state seeds the rows held out to choose temperature="auto"
    reference = UL4M4Imputer(n_clusters=K, init=init, device="cpu", random_state=0)
    reference.fit(MultiModalArray(x, mask, DIMS))
    assert reference.n_iter_ >= 4  # so that the fault test kills a worker mid-fit
    return x, mask, init, reference


def assert_same_fit(imp, reference, client):
    np.testing.assert_allclose(imp.cluster_centers_, reference.cluster_centers_, atol=2e-6)
    np.testing.assert_array_equal(imp.centers_mask_, reference.centers_mask_)
    np.testing.assert_array_equal(gather(client, imp.labels_), reference.labels_)
    assert imp.n_iter_ == reference.n_iter_
    assert imp.inertia_ == pytest.approx(reference.inertia_, rel=1e-5)


@pytest.mark.parametrize("chunks", [600, 200, 90, (50, 250, 100, 200)])
def test_fit_from_explicit_init_matches_single_machine(client, data, chunks):
    """1, 3 and 7 partitions, and irregular ones: same centres, masks, labels, n_iter."""
    x, mask, init, reference = data
    values, mask_d, dims = as_dask(x, mask, chunks if isinstance(chunks, int) else 600)
    if not isinstance(chunks, int):
        values, mask_d = values.rechunk({0: chunks}), mask_d.rechunk({0: chunks[::-1]})
    imp = DaskUL4M4Imputer(n_clusters=K, init=init, client=client, timeout=60)
    imp.fit((values, mask_d, dims))
    assert_same_fit(imp, reference, client)
    assert imp.labels_.chunks[0] == values.chunks[0]
    assert imp.dims_ == DIMS and imp.modality_names_ == ("m0", "m1", "m2")
    assert imp.device_ == "cpu" and imp.n_samples_fit_ == len(x)
    assert (gather(client, imp.labels_)[:5] == -1).all()  # rows observing nothing


def test_column_chunked_values_are_rechunked(client, data):
    x, mask, init, reference = data
    values = da.from_array(x, chunks=(150, 4))
    imp = DaskUL4M4Imputer(n_clusters=K, init=init, client=client, timeout=60)
    imp.fit((values, da.from_array(mask, chunks=(200, 2)), DIMS, ["a", "b", "c"]))
    assert_same_fit(imp, reference, client)
    assert imp.modality_names_ == ("a", "b", "c")


@pytest.mark.parametrize("ddof", [0, 1])
def test_normalisation_statistics_match(client, ddof):
    x, mask = make_data(seed=3, n=500)
    x[:, 4:7] *= 1e4  # large offset/spread: sums of squares would lose digits, M2 does not
    x[:, 4:7] += 1e6
    mean, scale = fit_modality_stats(x, mask, DIMS, ddof=ddof)
    for chunks in (500, 170, 73):
        imp = DaskUL4M4Imputer(n_clusters=2, max_iter=1, random_state=0, ddof=ddof,
                               client=client, timeout=60).fit(as_dask(x, mask, chunks))
        np.testing.assert_allclose(imp.mean_, mean, rtol=1e-12)
        np.testing.assert_allclose(imp.scale_, scale, rtol=1e-9)
        if chunks == 500:  # one partition: bit-identical
            np.testing.assert_array_equal(imp.mean_, mean)
            np.testing.assert_array_equal(imp.scale_, scale)


def test_transform_equals_single_machine(client, data, tmp_path):
    x, mask, init, reference = data
    X = as_dask(x, mask, 90)
    imp = DaskUL4M4Imputer(n_clusters=K, init=init, random_state=0, client=client,
                           timeout=60).fit(X)
    out = imp.transform(X)
    assert isinstance(out, DaskMultiModalArray) and out.values.chunks == X[0].chunks
    completed = out.compute(client=client, timeout=60)
    local = imp.to_local(device="cpu")
    expected = local.transform(MultiModalArray(x, mask, DIMS))
    np.testing.assert_array_equal(completed.values, expected.values)  # identical imputations
    np.testing.assert_array_equal(completed.imputed, ~mask)
    assert completed.mask.all()
    observed = np.repeat(mask, DIMS, axis=1)
    np.testing.assert_array_equal(completed.values[observed], x[observed])
    # against the independently fitted single-machine model: same sources, values to round-off
    data_local = MultiModalArray(x, mask, DIMS)
    np.testing.assert_array_equal(local.imputation_sources(data_local),
                                  reference.imputation_sources(data_local))
    np.testing.assert_allclose(completed.values, reference.transform(data_local).values,
                               rtol=1e-5, atol=1e-5)
    # the local model is a complete UL4M4Imputer: labels, save / load
    np.testing.assert_array_equal(local.labels_, reference.labels_)
    local.save(tmp_path / "model.npz")
    loaded = UL4M4Imputer.load(tmp_path / "model.npz", device="cpu")
    np.testing.assert_array_equal(loaded.transform(data_local).values, expected.values)


def test_kmeanspp_on_small_data_is_the_single_machine_seeding(client, data):
    """With N ≤ seed_sample_size the sample is every row: same seeds, same whole fit."""
    x, mask, _, _ = data
    for n_init in (1, 2):
        reference = UL4M4Imputer(n_clusters=K, n_init=n_init, random_state=7,
                                 device="cpu").fit(MultiModalArray(x, mask, DIMS))
        imp = DaskUL4M4Imputer(n_clusters=K, n_init=n_init, random_state=7, client=client,
                               timeout=60).fit(as_dask(x, mask, 200))
        assert_same_fit(imp, reference, client)


def test_sampled_seeding_quality(client):
    """Sampled k-means++ (10 % of the rows) then Lloyd, against the single-machine k-means++
    on all rows, over several seeds (k-means++ itself lands in local optima at times, so
    the distributions are compared): median and mean inertia within 5 % (or better)."""
    x, mask = make_data(seed=11, n=3000, k=8, observed=0.7)
    dask_inertia, local_inertia = [], []
    for seed in range(5):
        local = UL4M4Imputer(n_clusters=8, random_state=seed, device="cpu")
        local_inertia.append(local.fit(MultiModalArray(x, mask, DIMS)).inertia_)
        imp = DaskUL4M4Imputer(n_clusters=8, random_state=seed, seed_sample_size=300,
                               client=client, timeout=60).fit(as_dask(x, mask, 700))
        dask_inertia.append(imp.inertia_)
    print("inertia, single machine:", np.round(local_inertia, 1), "sampled:",
          np.round(dask_inertia, 1))
    assert np.median(dask_inertia) <= 1.05 * np.median(local_inertia)
    assert np.mean(dask_inertia) <= 1.05 * np.mean(local_inertia)


def test_dataframe_input_matches_array_input(client, data):
    """A dask DataFrame with list columns (null = missing; one partition lacks a modality
    entirely) gives the array result; transform completes the columns in place."""
    x, mask, _, _ = data
    mask = mask.copy()
    mask[:200, 2] = False
    observed = np.repeat(mask, DIMS, axis=1)
    x = np.where(observed, np.nan_to_num(x, nan=0.0), np.nan).astype(np.float32)
    init = explicit_init(x, mask)
    names = list(NAMES)
    frame = list_table(x, mask).to_pandas(types_mapper=pd.ArrowDtype)
    frame["label"] = np.arange(len(x)) % 3
    ddf = dd.from_pandas(frame, npartitions=3)
    imp = DaskUL4M4Imputer(n_clusters=K, init=init, client=client, timeout=60).fit(ddf)
    reference = DaskUL4M4Imputer(n_clusters=K, init=init, client=client, timeout=60)
    reference.fit(as_dask(x, mask, 200))
    assert imp.dims_ == DIMS and imp.modality_names_ == tuple(names)
    np.testing.assert_array_equal(imp.cluster_centers_, reference.cluster_centers_)
    np.testing.assert_array_equal(imp.centers_mask_, reference.centers_mask_)
    np.testing.assert_array_equal(gather(client, imp.labels_), gather(client, reference.labels_))
    import dask

    with dask.config.set({"dataframe.convert-string": False}):  # object columns of lists
        objects = dd.from_pandas(frame.astype({n: object for n in names}), npartitions=4)
        assert (objects.dtypes[names] == object).all()
    fitted = DaskUL4M4Imputer(n_clusters=K, init=init, client=client, timeout=60).fit(objects)
    np.testing.assert_array_equal(fitted.cluster_centers_, imp.cluster_centers_)
    out = gather(client, imp.transform(ddf))
    assert list(out.columns) == list(frame.columns) and (out.index == frame.index).all()
    np.testing.assert_array_equal(out["label"], frame["label"])
    expected = imp.to_local(device="cpu", labels=False).transform(MultiModalArray(x, mask, DIMS))
    for m, name in enumerate(names):
        assert out[name].dtype == frame[name].dtype and out[name].notna().all()
        cells = pa.array(out[name]).flatten().to_numpy().reshape(len(x), DIMS[m])
        np.testing.assert_array_equal(cells, expected.modality(m))


def test_completed_modality_columns_are_float32_lists(client):
    """Whatever a modality column's list and number types, transform returns it as
    list<float32>, the type of the Parquet outputs: the values are those of the
    single-machine transform (observed cells: the input as float32, never float32-rounded
    values typed as float64), and the declared meta is what the partitions return."""
    rng = np.random.default_rng(3)
    n = 60
    ints = rng.integers(-9, 9, size=(n, 2))
    seen = rng.random(n) < 0.5
    floats = rng.normal(size=(n, 3))  # float64 values that float32 cannot hold
    table = pa.table({
        "counts": pa.array([r.tolist() if s else None for r, s in zip(ints, seen)],
                           pa.list_(pa.int64())),
        "emb": pa.array(floats.tolist(), pa.list_(pa.float64())),
        "large": pa.array(floats[:, :2].tolist(), pa.large_list(pa.float64())),
        "fixed": pa.array(floats[:, 1:].tolist(), pa.list_(pa.float64(), 2)),
    })
    ddf = dask_frame(table, 2)
    imp = DaskUL4M4Imputer(n_clusters=3, random_state=0, client=client, timeout=60).fit(ddf)
    lazy = imp.transform(ddf)
    out = gather(client, lazy)
    assert (lazy.dtypes == out.dtypes).all()  # the declared meta is what partitions return
    assert (out.dtypes == pd.ArrowDtype(pa.list_(pa.float32()))).all()
    expected = imp.to_local(device="cpu", labels=False).transform(
        MultiModalArray.from_arrow(table))
    for m, name in enumerate(table.column_names):
        np.testing.assert_array_equal(np.stack(out[name].to_list()), expected.modality(m))
    np.testing.assert_array_equal(np.stack(out["counts"].to_list())[seen], ints[seen])
    np.testing.assert_array_equal(np.stack(out["emb"].to_list()), floats.astype(np.float32))


def test_only_lists_of_numbers_are_modalities(client):
    """As in Parquet files, list<string> columns and list<bool> ones (an earlier output's
    ``imputed`` flags) are not modalities: fit ignores them, transform passes them through."""
    x, mask = make_data(n=60)
    table = list_table(x, mask).append_column("tags", pa.array([["a", "b"]] * 60))
    table = table.append_column("imputed", pa.array([[True, False, True]] * 60))
    ddf = dask_frame(table, 3)
    imp = DaskUL4M4Imputer(n_clusters=K, random_state=0, client=client, timeout=60).fit(ddf)
    assert imp.modality_names_ == NAMES
    out = gather(client, imp.transform(ddf))
    assert list(out.columns) == table.column_names
    for name in ("tags", "imputed"):
        assert pa.array(out[name]).equals(table.column(name).combine_chunks())


def test_empty_and_unobserved_dataframes_are_named(client):
    x, mask = make_data(n=60)
    table = list_table(x, mask)
    imp = DaskUL4M4Imputer(n_clusters=K, random_state=0, client=client, timeout=60)
    with pytest.raises(ValueError, match="empty input: the DataFrame has 0 rows"):
        imp.fit(dask_frame(table.slice(0, 0), 1))
    unobserved = table.set_column(1, "txt", pa.nulls(60, table.schema.field("txt").type))
    with pytest.raises(ValueError, match=r"modalities \['txt'\] are observed in no training row"):
        imp.fit(dask_frame(unobserved, 3))


def test_clone_shares_the_client(client):
    from sklearn.base import clone

    imp = DaskUL4M4Imputer(n_clusters=3, init=(np.zeros((3, 12)), np.ones((3, 3), bool)),
                           client=client, timeout=60)
    twin = clone(imp)
    assert twin is not imp and twin.client is client
    assert twin.get_params()["n_clusters"] == 3 and twin.init is not imp.init
    np.testing.assert_array_equal(twin.init[0], imp.init[0])


def test_dataframe_column_labels_must_be_strings(client):
    """Modality names are strings: fit and transform refuse other column labels alike."""
    x, mask = make_data(n=60)
    frame = list_table(x, mask).to_pandas(types_mapper=pd.ArrowDtype)
    imp = DaskUL4M4Imputer(n_clusters=K, random_state=0, client=client, timeout=60)
    imp.fit(dd.from_pandas(frame, npartitions=2))
    frame.columns = [0, 1, 2]
    numbered = dd.from_pandas(frame, npartitions=2)
    for call in (DaskUL4M4Imputer(n_clusters=K, client=client, timeout=60).fit, imp.transform):
        with pytest.raises(TypeError, match=r"column labels must be strings .*got \[0, 1, 2\]"):
            call(numbered)


def test_dataframe_errors_name_the_partition_and_its_rows(client):
    """A NaN in an observed cell of global row 33 (row 13 of the second 20-row partition):
    fit names the partition and the global row; transform, where the partitions' global rows
    are not known, names the partition and the row within it."""
    x, mask = make_data(n=60)
    imp = DaskUL4M4Imputer(n_clusters=K, random_state=0, client=client, timeout=60)
    imp.fit(dask_frame(list_table(x, mask), 3))
    mask[33, 0] = True
    x[33, :4] = [1.0, np.nan, 2.0, 3.0]
    bad = dask_frame(list_table(x, mask), 3)
    assert bad.map_partitions(len).compute().tolist() == [20, 20, 20]
    nan = r"modality 'img': rows \[{}\] \(1 in all\) have NaN or inf in observed values"
    with pytest.raises(ValueError, match=r"^partition 1 \(global rows from 20\): "
                                         + nan.format(33)):
        DaskUL4M4Imputer(n_clusters=K, client=client, timeout=60).fit(bad)
    with pytest.raises(ValueError, match=r"^partition 1 \(rows numbered within the "
                                         r"partition\): " + nan.format(13)):
        gather(client, imp.transform(bad))


@pytest.mark.skipif(gpu_available(), reason="needs workers without a usable GPU")
def test_cuda_on_workers_without_a_gpu_is_the_single_machine_error(client, data):
    x, mask, _, _ = data
    for X in (as_dask(x, mask, 200), dask_frame(list_table(x, mask), 2)):
        with pytest.raises(RuntimeError, match="device='cuda' was requested but no CUDA GPU "
                                               "is usable: install CuPy"):
            DaskUL4M4Imputer(n_clusters=K, device="cuda", client=client, timeout=60).fit(X)


def test_worker_killed_mid_fit_finishes_with_the_same_result(client, data):
    """SIGKILL one worker process after the 2nd update: its partitions are recomputed from
    lineage (the nanny restarts the process) and the fit ends with the undisturbed result."""
    x, mask, init, reference = data
    victim = sorted(client.scheduler_info(n_workers=-1)["workers"])[0]
    old_pid = client.run(os.getpid, workers=[victim])[victim]
    killed = []

    def kill_after_second_update(n_iter, inertia):
        if n_iter == 2:
            held = [key for key, where in client.who_has().items() if victim in where]
            assert any(str(key).startswith("_normalise_block") for key in held)  # partitions lost
            os.kill(old_pid, signal.SIGKILL)
            killed.append(n_iter)

    imp = DaskUL4M4Imputer(n_clusters=K, init=init, client=client, timeout=120)
    imp.fit(as_dask(x, mask, 90), on_iteration=kill_after_second_update)
    assert killed == [2]
    assert_same_fit(imp, reference, client)
    client.wait_for_workers(2, timeout=60)
    assert old_pid not in client.run(os.getpid).values()


def test_worker_that_never_comes_back_times_out_clearly(data):
    x, mask, init, _ = data
    with _cluster(1) as cluster, distributed.Client(cluster, set_as_default=False) as lonely:
        (nanny,) = cluster.workers.values()

        def kill_for_good(n_iter, inertia):
            if n_iter == 1:
                nanny.close_gracefully()  # no restart
                os.kill(nanny.pid, signal.SIGKILL)

        lonely.run(importlib.import_module, "ul4m4_gpu.scale.dask_imputer")  # warm: imports done
        imp = DaskUL4M4Imputer(n_clusters=K, init=init, client=lonely, timeout=4)
        start = time.monotonic()
        with pytest.raises(TimeoutError, match=r"iteration 2 did not finish within timeout=4") \
                as error:
            imp.fit(as_dask(x, mask, 200), on_iteration=kill_for_good)
        assert time.monotonic() - start < 20
        assert "0 worker(s) connected" in str(error.value)


def test_errors(client, data):
    x, mask, init, _ = data
    X = as_dask(x, mask, 200)
    with pytest.raises(ValueError, match="needs a dask.distributed Client"):
        DaskUL4M4Imputer(n_clusters=K).fit(X)
    with pytest.raises(ValueError, match="timeout"):
        DaskUL4M4Imputer(n_clusters=K, client=client, timeout=0).fit(X)
    with pytest.raises(TypeError, match="dask arrays"):
        DaskUL4M4Imputer(n_clusters=K, client=client).fit((x, mask, DIMS))
    with pytest.raises(Exception, match="not fitted"):
        DaskUL4M4Imputer(client=client).transform(X)
    bad = x.copy()
    bad[450, 0] = np.inf
    bad_mask = mask.copy()
    bad_mask[450, 0] = True
    located = r"^partition 2 \(global rows from 400\): modality 'm0': rows \[450\]"
    with pytest.raises(ValueError, match=located):
        DaskUL4M4Imputer(n_clusters=K, client=client, timeout=60).fit(as_dask(bad, bad_mask, 200))
    with pytest.raises(ValueError, match="n_clusters=700 is larger"):
        DaskUL4M4Imputer(n_clusters=700, client=client, timeout=60).fit(X)
    with client.as_current():  # client=None: the current client
        imp = DaskUL4M4Imputer(n_clusters=K, init=init, max_iter=1, timeout=60).fit(X)
    assert imp.client_ is client
    with pytest.raises(ValueError, match=located):
        gather(client, imp.transform(as_dask(bad, bad_mask, 200)).values)


def test_a_soft_rule_fits_its_temperature_and_completes_as_the_single_machine(client, data):
    x, mask, init, _ = data
    params = dict(n_clusters=K, init=init, completion="overlap", n_candidates=3,
                  random_state=5)
    reference = UL4M4Imputer(**params, device="cpu").fit(MultiModalArray(x, mask, DIMS))
    X = as_dask(x, mask, 90)
    imp = DaskUL4M4Imputer(**params, client=client, timeout=60).fit(X)
    assert imp.temperature_ == reference.temperature_
    completed = imp.transform(X).compute(client=client, timeout=60)
    local = imp.to_local(device="cpu", labels=False)
    assert local.temperature_ == imp.temperature_
    # the gathered model's completion bit for bit; the independently fitted one's centres
    # come from other sums of the same terms: values to round-off
    np.testing.assert_array_equal(completed.values,
                                  local.transform(MultiModalArray(x, mask, DIMS)).values)
    np.testing.assert_allclose(completed.values,
                               reference.transform(MultiModalArray(x, mask, DIMS)).values,
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("completion, n_candidates", [("paper", 1), ("nearest", 5)])
def test_one_row_partitions_complete_bitwise_as_the_gathered_model(client, completion,
                                                                  n_candidates):
    """D = 2305, a soft rule too: each worker completes one row per task (BLAS on one
    thread in the worker processes, two here), and gets the local transform's bits."""
    dims = (2000, 300, 5)
    x, mask = make_data(seed=4, n=150, dims=dims)
    local = UL4M4Imputer(n_clusters=16, random_state=0, device="cpu", completion=completion,
                         n_candidates=n_candidates).fit(MultiModalArray(x, mask, dims))
    imp = DaskUL4M4Imputer.from_local(local, client)
    rows = slice(5, 47)  # 42 rows, each observing a modality
    X = (da.from_array(x[rows], chunks=(1, -1)), da.from_array(mask[rows], chunks=(1, -1)), dims)
    completed = imp.transform(X).compute(client=client, timeout=60)
    expected = local.transform(MultiModalArray(x[rows], mask[rows], dims))
    np.testing.assert_array_equal(completed.values, expected.values)


# ---------------------------------------------------------------------------- 2-D inputs
# A 2-D dask array or a dask DataFrame of numeric columns, split by ``modalities`` as the
# single-machine imputer splits them; the output follows the input's type.
COLUMN_GROUPS = [list(DIMS), [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9, 10, 11]],
                 [[7, 8, 9, 10, 11], [2, 0, 1, 3], [6, 4, 5]]]


@pytest.mark.parametrize("modalities", COLUMN_GROUPS)
@pytest.mark.parametrize("add_indicator", [False, True])
def test_a_2d_dask_array_fits_and_completes_as_the_single_machine(client, data, modalities,
                                                                   add_indicator):
    """k-means++ on a seed sample holding every row is the single-machine seeding: the same
    fit; every block completes as the gathered model does, in a dask array of the input's
    row chunks, observed values bit for bit."""
    x = data[0].astype(np.float64)  # NaN where a modality is missing
    params = dict(n_clusters=K, random_state=3, modalities=modalities,
                  add_indicator=add_indicator)
    reference = UL4M4Imputer(**params, device="cpu").fit(x)
    imp = DaskUL4M4Imputer(**params, seed_sample_size=len(x), client=client, timeout=60)
    imp.fit(da.from_array(x, chunks=(150, 5)))  # column chunks are merged
    np.testing.assert_allclose(imp.cluster_centers_, reference.cluster_centers_, atol=2e-6)
    np.testing.assert_array_equal(gather(client, imp.labels_), reference.labels_)
    assert imp.n_iter_ == reference.n_iter_ and imp.dims_ == reference.dims_
    assert imp.n_features_in_ == reference.n_features_in_ == x.shape[1]
    np.testing.assert_array_equal(imp.get_feature_names_out(),
                                  reference.get_feature_names_out())

    out = imp.transform(da.from_array(x, chunks=(200, -1)))
    assert isinstance(out, da.Array) and out.chunks[0] == (200, 200, 200)
    assert out.shape == (len(x), x.shape[1] + add_indicator * len(DIMS))
    assert out.dtype == np.float64
    completed = gather(client, out)
    assert isinstance(completed, np.ndarray) and completed.dtype == np.float64
    np.testing.assert_array_equal(completed, imp.to_local().transform(x))
    np.testing.assert_allclose(completed, reference.transform(x), atol=1e-5)
    observed = ~np.isnan(x)
    np.testing.assert_array_equal(completed[:, :x.shape[1]][observed], x[observed])


def test_a_2d_dask_array_without_modalities_has_a_modality_per_column(client):
    x = make_data(n=120)[0]
    imp = DaskUL4M4Imputer(n_clusters=3, random_state=0, client=client, timeout=60)
    imp.fit(da.from_array(x, chunks=(40, -1)))
    assert imp.dims_ == (1,) * x.shape[1]
    assert imp.modality_names_ == tuple(f"x{j}" for j in range(x.shape[1]))
    completed = gather(client, imp.transform(da.from_array(x, chunks=(50, -1))))
    assert completed.dtype == np.float32 and not np.isnan(completed).any()
    np.testing.assert_array_equal(completed, imp.to_local().transform(x))


def test_empty_row_blocks_are_skipped(client, data):
    x = data[0]
    X = da.from_array(x, chunks=((0, 300, 0, 300), (12,)))
    imp = DaskUL4M4Imputer(n_clusters=K, random_state=1, modalities=list(DIMS),
                           seed_sample_size=len(x), client=client, timeout=60).fit(X)
    reference = UL4M4Imputer(n_clusters=K, random_state=1, modalities=list(DIMS),
                             device="cpu").fit(x)
    assert imp.n_iter_ == reference.n_iter_
    completed = gather(client, imp.transform(X))
    assert completed.shape == x.shape
    np.testing.assert_array_equal(completed, imp.to_local().transform(x))


def wide_frame(x):
    """A pandas DataFrame of x's 12 columns, labelled c0..c11, a string passthrough column
    between them and a non-default index."""
    frame = pd.DataFrame(x, columns=[f"c{j}" for j in range(x.shape[1])],
                         index=pd.Index(np.arange(len(x)) * 3 + 7, name="row"))
    frame.insert(5, "tag", [f"t{i % 4}" for i in range(len(x))])
    return frame


@pytest.mark.parametrize("modalities", [
    {"img": ["c0", "c1", "c2", "c3"], "txt": ["c4", "c5", "c6"],
     "aud": ["c7", "c8", "c9", "c10", "c11"]},
    None])
def test_a_dask_frame_of_numeric_columns_completes_in_its_own_type(client, data, modalities):
    """Index, column order, dtypes and the passthrough column kept; the fills of the
    gathered model; the names of the modalities' columns recorded as scikit-learn does."""
    frame = wide_frame(data[0])
    ddf = dd.from_pandas(frame, npartitions=3)
    imp = DaskUL4M4Imputer(n_clusters=K, random_state=2, modalities=modalities,
                           add_indicator=True, seed_sample_size=len(frame), client=client,
                           timeout=60).fit(ddf)
    local_frame = ddf.compute()  # as dask holds it (its string dtype)
    reference = UL4M4Imputer(n_clusters=K, random_state=2, modalities=modalities,
                             add_indicator=True, device="cpu").fit(local_frame)
    np.testing.assert_allclose(imp.cluster_centers_, reference.cluster_centers_, atol=2e-6)
    assert imp.modality_names_ == reference.modality_names_
    np.testing.assert_array_equal(imp.feature_names_in_, reference.feature_names_in_)
    np.testing.assert_array_equal(imp.get_feature_names_out(),
                                  reference.get_feature_names_out())

    out = imp.transform(ddf)
    assert isinstance(out, dd.DataFrame)
    completed = out.compute()
    pd.testing.assert_frame_equal(completed, imp.to_local().transform(local_frame))
    assert list(completed.columns) == list(frame.columns) + [
        f"missingindicator_{name}" for name in imp.modality_names_]
    pd.testing.assert_index_equal(completed.index, frame.index)
    assert (completed["tag"] == frame["tag"]).all()
    values = frame.drop(columns="tag").to_numpy()
    filled = completed[frame.columns.drop("tag")].to_numpy()
    assert not np.isnan(filled).any()
    np.testing.assert_array_equal(filled[~np.isnan(values)], values[~np.isnan(values)])


def test_list_frame_output_gains_the_indicators(client, data):
    x, mask, _, _ = data
    imp = DaskUL4M4Imputer(n_clusters=K, random_state=0, add_indicator=True, client=client,
                           timeout=60)
    ddf = dask_frame(list_table(x, mask), 2)
    completed = imp.fit(ddf).transform(ddf).compute()
    for m, name in enumerate(NAMES):
        assert completed[f"missingindicator_{name}"].dtype == bool
        np.testing.assert_array_equal(completed[f"missingindicator_{name}"], ~mask[:, m])


def test_2d_input_errors_are_named(client, data):
    x = data[0].copy()
    X = da.from_array(x, chunks=(150, -1))
    imp = DaskUL4M4Imputer(n_clusters=K, modalities=list(DIMS), random_state=0,
                           client=client, timeout=60).fit(X)
    with pytest.raises(ValueError, match=r"modalities \[4, 3, 5\] sum to 12 but X has 11 "
                                         "columns"):
        imp.transform(X[:, :11])
    per_column = DaskUL4M4Imputer(n_clusters=K, random_state=0, client=client,
                                  timeout=60).fit(X)
    with pytest.raises(ValueError, match="X has 11 features, but DaskUL4M4Imputer is "
                                         "expecting 12 features"):
        per_column.transform(X[:, :11])
    x[160, 1] = np.nan  # row 10 of the second block partly NaN in modality m0
    x[160, 0] = 1.0
    with pytest.raises(ValueError, match=r"^partition 1 \(rows numbered within the "
                                         r"partition, which starts at global row 150\): "
                                         r"modality 'm0': rows \[10\] \(1 in all\) are "
                                         "partly NaN"):
        DaskUL4M4Imputer(n_clusters=K, modalities=list(DIMS), client=client,
                         timeout=60).fit(da.from_array(x, chunks=(150, -1)))
    with pytest.raises(ValueError, match="carries its own modalities"):
        DaskUL4M4Imputer(n_clusters=K, modalities=[2, 2, 8], client=client).fit(
            as_dask(data[0], data[1], 200))
    with pytest.raises(ValueError, match="Expected a 2-D dask array, got 1-D"):
        DaskUL4M4Imputer(n_clusters=K, client=client).fit(da.zeros(10, chunks=5))
    with pytest.raises(ValueError, match=r"modalities \[4, 4\] sum to 8 but X has 12 "
                                         "columns"):
        DaskUL4M4Imputer(n_clusters=K, modalities=[4, 4], client=client).fit(X)
    with pytest.raises(TypeError, match="must hold numbers"):
        DaskUL4M4Imputer(n_clusters=K, client=client).fit(
            da.from_array(np.full((8, 2), "a")))


def test_a_stale_auto_temperature_is_said_on_the_client(client, data):
    x, mask, init, _ = data
    X = as_dask(x, mask, 200)
    imp = DaskUL4M4Imputer(n_clusters=K, init=init, random_state=0, client=client,
                           timeout=60).fit(X)
    imp.set_params(n_candidates=3)
    with pytest.warns(CompletionWarning, match="was chosen at fit for completion='nearest', "
                                               "n_candidates=5"):
        imp.transform(X)
