"""The ``device="cuda"`` path against the CPU path: on a GPU machine with real CuPy and CUDA;
everywhere else with CuPy served by tests/cupy_sim.py and the CUDA kernels by Numba's
simulator (the ``device_cupy`` fixture). Checks that the CuPy orchestration runs end to end
(estimator, low-level functions, save/load, Dask, streaming, cuDF reading), gives the NumPy
path's results and keeps data on the device; on the simulator also that a Lloyd iteration
syncs with the host once (``cupy_sim``-only tests).
"""

import numpy as np
import pytest

from ul4m4_gpu import (
    MultiModalArray,
    UL4M4Imputer,
    greedy_complete,
    kmeans_plusplus,
    lloyd,
    partial_distances,
)
from ul4m4_gpu.core.backend import to_numpy

DIMS = (6, 4, 3)


def clustered(n=60, seed=0, spread=20.0, observed=0.6, k=4):
    """(N, D) float64 rows around k centres with random missing modalities (NaN) and mask."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=spread, size=(k, sum(DIMS)))
    x = centres[rng.integers(k, size=n)] + rng.normal(size=(n, sum(DIMS)))
    mask = rng.random((n, len(DIMS))) < observed
    mask[~mask.any(axis=1), rng.integers(len(DIMS))] = True
    x[~np.repeat(mask, DIMS, axis=1)] = np.nan
    return x, mask


def same_partition(labels, reference):
    """Assert that ``labels`` split the rows as ``reference`` does (up to numbering); return
    ``order``, with ``labels`` = ``order[reference]``."""
    order = np.full(reference.max() + 1, -1)
    order[reference] = labels
    np.testing.assert_array_equal(order[reference], labels)
    assert len(set(order.tolist())) == order.size
    return order


def on_both_devices(x, mask, **params):
    """Fit + transform the same data with device="cpu" and device="cuda"."""
    out = {}
    for device in ("cpu", "cuda"):
        data = MultiModalArray(x, mask, DIMS).to(device)
        imputer = UL4M4Imputer(device=device, **params).fit(data)
        out[device] = imputer, imputer.transform(data)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cuda_fit_and_transform_match_cpu(device_cupy, seed):
    x, mask = clustered(seed=seed)
    fits = on_both_devices(x, mask, n_clusters=4, random_state=seed)
    (cpu, cpu_out), (gpu, gpu_out) = fits["cpu"], fits["cuda"]
    assert isinstance(gpu.cluster_centers_, device_cupy.ndarray)
    assert isinstance(gpu_out.values, device_cupy.ndarray)
    assert isinstance(gpu_out.imputed, device_cupy.ndarray)
    # the same clusters; numbered alike on the simulator, maybe not on a GPU, whose
    # round-off can pick other k-means++ seeds from the same clusters
    order = same_partition(to_numpy(gpu.labels_), cpu.labels_)
    np.testing.assert_array_equal(to_numpy(gpu.centers_mask_)[order], cpu.centers_mask_)
    np.testing.assert_allclose(to_numpy(gpu.cluster_centers_)[order], cpu.cluster_centers_,
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(to_numpy(gpu_out.values), cpu_out.values, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(to_numpy(gpu_out.imputed), cpu_out.imputed)
    observed = np.repeat(mask, DIMS, axis=1)
    np.testing.assert_array_equal(to_numpy(gpu_out.values)[observed], x[observed])


def test_one_host_transfer_per_lloyd_iteration(cupy_sim):
    """Fits from the same seeds that stop after 1 and after several updates differ in host
    transfers by exactly one per extra iteration (the convergence flag)."""
    x, mask = clustered(n=120, seed=3, spread=1.0, k=6)
    data = MultiModalArray(x, mask, DIMS).to("cuda")
    transfers = {}
    for max_iter in (1, 8):
        cupy_sim.reset_transfers()
        imputer = UL4M4Imputer(n_clusters=6, random_state=0, device="cuda", max_iter=max_iter,
                               tol=0.0).fit(data)
        transfers[imputer.n_iter_] = sum(cupy_sim.transfers.values())
    (short, few), (long, many) = sorted(transfers.items())
    assert long >= short + 2, "the data should need several Lloyd updates"
    assert many - few == long - short


def test_low_level_functions_on_device_arrays_match_numpy(device_cupy):
    rng = np.random.default_rng(1)
    dims = [3, 5]
    z = rng.normal(size=(40, 8))
    mask = rng.random((40, 2)) < 0.7
    mask[~mask.any(axis=1), 0] = True
    centers = rng.normal(size=(6, 8))
    centers_mask = rng.random((6, 2)) < 0.8
    centers_mask[~centers_mask.any(axis=1), 1] = True
    host = (z, mask, centers, centers_mask)
    device = [device_cupy.asarray(a) for a in host]

    distances = partial_distances(*device, dims)
    assert isinstance(distances, device_cupy.ndarray)
    np.testing.assert_allclose(to_numpy(distances), partial_distances(*host, dims), rtol=1e-10)

    done, sources = greedy_complete(*device, dims)
    expected_done, expected_sources = greedy_complete(*host, dims)
    np.testing.assert_allclose(to_numpy(done), expected_done, rtol=1e-10)
    np.testing.assert_array_equal(to_numpy(sources), expected_sources)

    seeds = kmeans_plusplus(device[0], device[1], dims, 4, random_state=5)
    expected_seeds = kmeans_plusplus(z, mask, dims, 4, random_state=5)
    for got, expected in zip(seeds, expected_seeds):
        np.testing.assert_allclose(to_numpy(got), expected)

    result = lloyd(device[0], device[1], dims, seeds[0], seeds[1])
    expected = lloyd(z, mask, dims, expected_seeds[0], expected_seeds[1])
    np.testing.assert_array_equal(to_numpy(result.labels), expected.labels)
    np.testing.assert_allclose(to_numpy(result.centers), expected.centers, rtol=1e-10)
    assert result.n_iter == expected.n_iter


@pytest.mark.parametrize("tile_rows", [None, 16])
def test_device_fit_and_every_rule_are_the_same_for_every_batch_size(device_cupy, monkeypatch,
                                                                     tile_rows):
    """The device's row tiles (ul4m4_gpu.core.tiled): the fit and every rule's completion
    bitwise the same for any ``batch_size``, and rows completed apart from the others as
    in the whole. With 16-row tiles (instead of GPU_ROW_TILE) the 60 rows span several
    tiles, the last one padded. (A fixed temperature: "auto" would complete the rows seven
    more times in the simulator.)"""
    from ul4m4_gpu.core import tiled

    if tile_rows is not None:
        monkeypatch.setattr(tiled, "GPU_ROW_TILE", tile_rows)
    x, mask = clustered(n=60)
    data = MultiModalArray(x, mask, DIMS).to("cuda")
    params = dict(n_clusters=4, random_state=0, device="cuda", temperature=0.3)
    imp = UL4M4Imputer(**params).fit(data)
    again = UL4M4Imputer(**params, batch_size=7).fit(data)
    np.testing.assert_array_equal(to_numpy(again.cluster_centers_), to_numpy(imp.cluster_centers_))
    np.testing.assert_array_equal(to_numpy(again.labels_), to_numpy(imp.labels_))
    rows = np.arange(1, 60, 3)
    for completion, n_candidates in (("paper", 1), ("overlap", 3), ("nearest", 4)):
        imp.set_params(completion=completion, n_candidates=n_candidates, batch_size=None)
        out = to_numpy(imp.transform(data).values)
        for batch_size in (7, 1000):
            imp.set_params(batch_size=batch_size)
            np.testing.assert_array_equal(to_numpy(imp.transform(data).values), out)
        np.testing.assert_array_equal(to_numpy(imp.transform(data.take(rows)).values), out[rows])


def test_host_centres_with_device_rows_are_refused_up_front(device_cupy):
    x, mask = clustered(n=20)
    cupy = device_cupy
    z, device_mask = cupy.asarray(np.nan_to_num(x)), cupy.asarray(mask)
    centers, centers_mask = np.zeros((2, sum(DIMS))), np.ones((2, len(DIMS)), dtype=bool)
    with pytest.raises(TypeError, match="mix NumPy and CuPy"):
        lloyd(z, device_mask, DIMS, centers, centers_mask)
    with pytest.raises(TypeError, match="mix NumPy and CuPy"):
        greedy_complete(z, device_mask, centers, centers_mask, DIMS)


def test_saved_cuda_model_loads_on_either_device(device_cupy, tmp_path):
    x, mask = clustered(seed=4)
    data = MultiModalArray(x, mask, DIMS).to("cuda")
    imputer = UL4M4Imputer(n_clusters=4, random_state=0, device="cuda").fit(data)
    imputer.save(tmp_path / "model.npz")
    on_cpu = UL4M4Imputer.load(tmp_path / "model.npz", device="cpu")
    on_gpu = UL4M4Imputer.load(tmp_path / "model.npz")
    assert isinstance(on_gpu.cluster_centers_, device_cupy.ndarray)
    expected = to_numpy(imputer.transform(data).values)
    np.testing.assert_array_equal(to_numpy(on_gpu.transform(data).values), expected)
    np.testing.assert_allclose(on_cpu.transform(MultiModalArray(x, mask, DIMS)).values,
                               expected, rtol=1e-6)


def test_to_torch_shares_the_device_buffer(cupy_sim):
    x, mask = clustered(n=20)
    data = MultiModalArray(x, mask, DIMS).to("cuda")
    tensor = data.to_torch()
    assert tensor.data_ptr() == data.values.ctypes.data
    assert tuple(tensor.shape) == data.values.shape


def test_simulator_refuses_what_cupy_refuses(cupy_sim):
    """The simulator's own rules, so that the tests above can fail: no implicit host arrays
    in arithmetic or array functions, no names CuPy lacks, reductions stay on the device."""
    cupy = cupy_sim.build_module()
    device, host = cupy.asarray(np.ones(3)), np.ones(3)
    with pytest.raises(TypeError, match="NumPy array"):
        device + host
    with pytest.raises(TypeError, match="NumPy array"):
        cupy.concatenate([device, host])
    with pytest.raises(AttributeError, match="cupy.nanpercentile"):
        cupy.nanpercentile
    total = device.sum()
    assert isinstance(total, cupy_sim.ndarray) and total.ndim == 0
    cupy_sim.reset_transfers()
    assert float(total) == 3.0 and cupy_sim.transfers["float"] == 1
    with pytest.raises(TypeError, match="quicksort"):  # CuPy has it, but it would hang
        cupy.unique(cupy.asarray(np.ones((4, 2))), axis=0)


def test_completion_on_device_does_not_use_row_wise_unique(device_cupy):
    """Missing patterns are grouped through 1-D int64 keys on the device (the simulator
    refuses ``unique(axis=...)``, which real CuPy runs as a host-synchronising quicksort),
    with the same sources as on the CPU, up to 63 modalities and beyond."""
    rng = np.random.default_rng(5)
    for n_modalities in (3, 63, 65):
        dims = (1,) * n_modalities
        z = rng.normal(size=(40, n_modalities))
        mask = rng.random((40, n_modalities)) < 0.6
        mask[:, 0] = True
        centers = rng.normal(size=(5, n_modalities))
        centers_mask = rng.random((5, n_modalities)) < 0.7
        centers_mask[:, 0] = True
        expected = greedy_complete(z, mask, centers, centers_mask, dims, return_sources=True)[2]
        got = greedy_complete(*(device_cupy.asarray(a) for a in (z, mask, centers, centers_mask)),
                              dims, return_sources=True)[2]
        np.testing.assert_array_equal(to_numpy(got), expected)


def test_dask_fit_on_device_partitions_matches_cpu(device_cupy):
    """DaskUL4M4Imputer with device="cuda" (CuPy partitions, as on dask-cuda workers) gives
    the CPU fit's centres and imputations. One in-process worker thread: the simulated
    kernels cannot run concurrently and worker processes would not see the simulator."""
    distributed = pytest.importorskip("distributed")
    da = pytest.importorskip("dask.array")
    from ul4m4_gpu.scale.dask_imputer import DaskUL4M4Imputer

    x, mask = clustered(n=90, seed=5)
    X = (da.from_array(x, chunks=(40, -1)), da.from_array(mask, chunks=(40, -1)), DIMS)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:
        fits = {device: DaskUL4M4Imputer(n_clusters=4, random_state=0, device=device,
                                         client=client).fit(X)
                for device in ("cpu", "cuda")}
        assert fits["cuda"].device_ == "cuda"
        completed = {device: fit.transform(X).compute(client) for device, fit in fits.items()}
    np.testing.assert_allclose(fits["cuda"].cluster_centers_, fits["cpu"].cluster_centers_,
                               rtol=1e-5, atol=1e-5)
    assert isinstance(completed["cuda"].values, device_cupy.ndarray)
    np.testing.assert_allclose(to_numpy(completed["cuda"].values), completed["cpu"].values,
                               rtol=1e-5, atol=1e-5)


def test_streamed_parquet_fit_and_transform_on_device(device_cupy, tmp_path):
    """fit_parquet / transform_parquet with a device="cuda" imputer: batches move to the
    device, the output file equals the CPU run's."""
    import pyarrow.parquet as pq

    from ul4m4_gpu.io.files import read_table
    from ul4m4_gpu.scale.streaming import fit_parquet, transform_parquet

    x, mask = clustered(n=80, seed=6)
    pq.write_table(MultiModalArray(x, mask, DIMS).to_arrow(), tmp_path / "in.parquet")
    outputs = {}
    for device in ("cpu", "cuda"):
        imputer = fit_parquet(tmp_path / "in.parquet",
                              UL4M4Imputer(n_clusters=4, random_state=0, device=device),
                              batch_rows=32)
        assert imputer.device_ == device
        transform_parquet(tmp_path / "in.parquet", tmp_path / f"{device}.parquet", imputer,
                          batch_rows=32)
        outputs[device] = read_table(tmp_path / f"{device}.parquet", device="cpu").data
    np.testing.assert_allclose(outputs["cuda"].values, outputs["cpu"].values, rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_array_equal(outputs["cuda"].mask, outputs["cpu"].mask)


# ---------------------------------------------------------------- cuDF, straight to device
def list_table(seed=0, n=30, dims=DIMS, observed=0.6):
    """An Arrow table of list<double> modality columns (null where missing) but one
    list<int64>, and a passthrough string column ``tag``; and the dense blocks and mask."""
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    columns, blocks, masks = {"tag": pa.array([f"r{i}" for i in range(n)])}, [], []
    for m, d in enumerate(dims):
        block = rng.integers(-50, 50, size=(n, d)) if m == 1 else rng.normal(size=(n, d))
        seen = rng.random(n) < observed
        seen[m] = True
        columns[f"m{m}"] = pa.array([list(row) if s else None for row, s in zip(block, seen)])
        blocks.append(block)
        masks.append(seen)
    return pa.table(columns), blocks, np.stack(masks, axis=1)


def test_cudf_columns_unpack_on_device_like_arrow_columns(device_cudf, device_cupy):
    from ul4m4_gpu.io.list_columns import arrow_list_to_dense, cudf_list_to_dense

    table, blocks, mask = list_table()
    frame = device_cudf.DataFrame.from_arrow(table)
    for m in range(len(DIMS)):
        values, observed = cudf_list_to_dense(frame[f"m{m}"], f"m{m}")
        expected_values, expected_observed = arrow_list_to_dense(table.column(f"m{m}"), f"m{m}")
        assert isinstance(values, device_cupy.ndarray) and isinstance(observed, device_cupy.ndarray)
        np.testing.assert_array_equal(to_numpy(observed), expected_observed)
        np.testing.assert_array_equal(to_numpy(values), expected_values)
        np.testing.assert_array_equal(expected_observed, mask[:, m])

    data = MultiModalArray.from_dataframe(frame)
    assert data.device == "cuda" and list(data.names) == ["m0", "m1", "m2"]
    expected = MultiModalArray.from_arrow(table, device="cpu")
    np.testing.assert_array_equal(to_numpy(data.values), expected.values)
    np.testing.assert_array_equal(to_numpy(data.mask), expected.mask)


@pytest.mark.parametrize("cells, message", [
    ([[1.0, 2.0], [3.0], None], r"same non-zero length, found lengths \[1, 2\]"),
    ([[1.0, None], [3.0, 4.0]], r"rows \[0\] \(1 in all\) have null .*inside a non-null cell"),
    ([["a", "b"], ["c", "d"]], "holds"),
    ([[[1.0], [2.0]], [[3.0], [4.0]]], "holds"),
    ([None, None], "null in every row"),
    ([1.0, 2.0], "holds double, expected lists of numbers|holds float64, expected lists"),
])
def test_cudf_and_arrow_columns_refuse_the_same_cells(device_cudf, cells, message):
    import pyarrow as pa

    from ul4m4_gpu.io.list_columns import arrow_list_to_dense, cudf_list_to_dense

    column = pa.array(cells, type=pa.list_(pa.float64()) if cells[0] is None else None)
    for unpack, given in ((arrow_list_to_dense, column),
                          (cudf_list_to_dense, device_cudf.Series.from_arrow(column))):
        with pytest.raises((ValueError, TypeError), match=message) as error:
            unpack(given, "img")
        assert "'img'" in str(error.value)


def test_all_null_arrow_column_is_named():
    """An explicit all-None column (Arrow null type) is refused with the column's name."""
    import pyarrow as pa

    table = pa.table({"img": pa.array([[1.0, 2.0], [3.0, 4.0]]), "txt": pa.nulls(2)})
    with pytest.raises(ValueError, match="modality column 'txt' is null in every row"):
        MultiModalArray.from_arrow(table, columns=["img", "txt"])


def test_streamed_fit_reads_row_groups_with_cudf(device_cudf, tmp_path):
    """With cuDF installed, a device run reads row groups with cuDF (sliced into
    batch_rows) and gives the CPU run's model and output."""
    import pyarrow.parquet as pq

    from ul4m4_gpu.io.files import read_table
    from ul4m4_gpu.scale.streaming import fit_parquet, transform_parquet

    table, _, _ = list_table(seed=7, n=90)
    pq.write_table(table, tmp_path / "in.parquet", row_group_size=40)
    results = {}
    for device in ("cpu", "cuda"):
        imputer = fit_parquet(tmp_path / "in.parquet",
                              UL4M4Imputer(n_clusters=3, random_state=0, device=device),
                              batch_rows=25)
        transform_parquet(tmp_path / "in.parquet", tmp_path / f"{device}.parquet", imputer,
                          batch_rows=25)
        results[device] = imputer, read_table(tmp_path / f"{device}.parquet")
    if hasattr(device_cudf, "row_groups_read"):  # the simulator logs what cuDF was asked for
        assert sorted(set(device_cudf.row_groups_read)) == [0, 1, 2]
    (cpu, cpu_out), (gpu, gpu_out) = results["cpu"], results["cuda"]
    np.testing.assert_array_equal(to_numpy(gpu.labels_), cpu.labels_)
    np.testing.assert_allclose(to_numpy(gpu.cluster_centers_), cpu.cluster_centers_,
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gpu_out.data.values, cpu_out.data.values, rtol=1e-5, atol=1e-5)
    assert gpu_out.passthrough.equals(cpu_out.passthrough)


def test_cudf_batches_of_a_hive_dataset_come_in_dataset_order(device_cudf, tmp_path):
    """With cuDF, a device read of a hive-partitioned directory goes row group by row group
    in data set order (sorted relative paths: k=a before k=b), the modality columns read by
    cuDF, the others (the key included) by pyarrow; expected: pyarrow reading each file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ul4m4_gpu.io.parquet import GpuBatch, ParquetDataset

    table, _, _ = list_table(seed=3, n=50)
    folder = tmp_path / "hive"
    for key, rows in (("b", table.slice(0, 20)), ("a", table.slice(20))):
        (folder / f"k={key}").mkdir(parents=True)
        pq.write_table(rows, folder / f"k={key}" / "part.parquet", row_group_size=8)
    expected = pa.concat_tables(
        pq.ParquetFile(folder / f"k={key}" / "part.parquet").read().append_column(
            "k", pa.array([key] * n)) for key, n in (("a", 30), ("b", 20)))
    n_rows = 0
    for offset, batch in ParquetDataset.open(folder).batches(5, device="cuda"):
        assert isinstance(batch, GpuBatch) and offset == n_rows
        rows = expected.slice(offset, len(batch))
        assert (batch.modalities.to_arrow().to_pylist()
                == rows.select(["m0", "m1", "m2"]).to_pylist())
        assert batch.passthrough.equals(rows.select(["tag", "k"]))
        n_rows += len(batch)
    assert n_rows == 50


def test_dask_cudf_partitions_are_read_and_completed_like_pandas_ones(device_cudf, device_cupy):
    """The per-partition steps of DaskUL4M4Imputer on a cuDF partition (as on dask-cuda
    workers) agree with the same partition as pandas: layout, device unpacking, completion."""
    from ul4m4_gpu.scale.dask_imputer import _complete_frame
    from ul4m4_gpu.scale.dask_partitions import _frame_block, _frame_layout

    table, _, _ = list_table(seed=8, n=40)
    table = table.append_column("blank", pa_nulls(40))
    frames = {"cpu": table.to_pandas(types_mapper=arrow_dtypes),
              "cuda": device_cudf.DataFrame.from_arrow(table)}
    assert _frame_layout(frames["cuda"]) == _frame_layout(frames["cpu"])
    columns = ["m0", "m1", "m2", "blank"]
    dims = DIMS + (2,)
    blocks = {device: _frame_block(frame, columns, dims, "auto", 0)
              for device, frame in frames.items()}
    assert isinstance(blocks["cuda"][0], device_cupy.ndarray)
    for got, expected in zip(blocks["cuda"], blocks["cpu"]):
        np.testing.assert_array_equal(to_numpy(got), expected)

    values, mask = blocks["cpu"]  # fit where "blank" is observed: it is filled in the partition
    values[:, -2:] = np.random.default_rng(0).normal(size=(len(values), 2))
    mask[:, -1] = True
    model = UL4M4Imputer(n_clusters=3, random_state=0, device="cpu").fit(
        MultiModalArray(values, mask, dims, columns))
    shipped = (model.fitted_state(labels=False), model.get_params(), {})  # what is shipped
    completed = {device: _complete_frame(frame, shipped, columns, dims, "auto", True)
                 for device, frame in frames.items()}
    for name in columns:
        np.testing.assert_allclose(
            np.stack(completed["cuda"][name].to_arrow().to_pylist()),
            np.stack(completed["cpu"][name].to_list()), rtol=1e-6)
        flags = f"missingindicator_{name}"
        np.testing.assert_array_equal(to_numpy(completed["cuda"][flags].values),
                                      completed["cpu"][flags].to_numpy())


def pa_nulls(n):
    import pyarrow as pa

    return pa.nulls(n, type=pa.list_(pa.float32()))


def arrow_dtypes(arrow_type):
    import pandas as pd

    return pd.ArrowDtype(arrow_type)


def test_gpu_benchmark_runs_end_to_end(cupy_sim, tmp_path):
    """benchmarks/bench_gpu.py on tiny shapes through the simulators, so that the first GPU
    loan does not spend its minutes on a crash (the figures here mean nothing)."""
    import importlib.util
    import json
    import math
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"
    spec = importlib.util.spec_from_file_location("bench_gpu", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "figures.json"
    bench.main(["--n", "96", "--k", "3", "--iters", "1", "--dims", "4,3,5", "--json", str(out)])
    figures = json.loads(out.read_text())
    for key in ("s_per_iter", "gemm_fraction", "completion_rows_per_s", "ours_complete_s_per_iter"):
        assert math.isfinite(figures[key]) and figures[key] > 0, key


def test_a_cupy_array_comes_back_as_cupy_in_memory_and_from_dask(device_cupy):
    """Output follows the input on the device too: an (N, D) CuPy array with NaN gives a
    CuPy array, and a dask array of CuPy chunks a dask array of CuPy chunks, holding the
    NumPy input's completion; observed values bit for bit."""
    distributed = pytest.importorskip("distributed")
    da = pytest.importorskip("dask.array")
    from ul4m4_gpu.scale.dask_imputer import DaskUL4M4Imputer

    x, _ = clustered(n=90, seed=6)  # NaN where a modality is missing
    params = dict(n_clusters=4, random_state=0, modalities=list(DIMS))
    cpu = UL4M4Imputer(**params, device="cpu").fit(x)
    expected = cpu.transform(x)
    gpu_x = device_cupy.asarray(x)
    out = UL4M4Imputer(**params, device="auto").fit(gpu_x).transform(gpu_x)
    assert isinstance(out, device_cupy.ndarray) and out.dtype == x.dtype
    np.testing.assert_allclose(to_numpy(out), expected, rtol=1e-5, atol=1e-5)
    observed = ~np.isnan(x)
    np.testing.assert_array_equal(to_numpy(out)[observed], x[observed])
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:
        X = da.from_array(gpu_x, chunks=(40, -1), asarray=False)
        imp = DaskUL4M4Imputer(**params, seed_sample_size=len(x), client=client).fit(X)
        result = imp.transform(X)
        assert isinstance(result._meta, device_cupy.ndarray)
        gathered = client.compute(result).result(timeout=60)
    assert isinstance(gathered, device_cupy.ndarray)
    np.testing.assert_allclose(to_numpy(gathered), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(to_numpy(gathered)[observed], x[observed])
