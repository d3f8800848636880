"""``ul4m4 fit`` / ``impute`` scaled out: ``--stream`` (bounded memory, same output as the
in-memory path) and ``--workers`` (a dask LocalCluster started for the command)."""

import re
import socket
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from synthetic import K, make_data
from test_streaming import FLAGS, hive_rows, write_dataset, write_hive_dataset
from ul4m4_gpu import UL4M4Imputer
from ul4m4_gpu.core.backend import gpu_available
from ul4m4_gpu.cli.commands import main


@pytest.fixture(scope="module")
def parquet_dir(tmp_path_factory):
    x, mask = make_data(n=600)
    return write_dataset(tmp_path_factory.mktemp("in") / "ds", x, mask,
                         [(0, 200), (200, 201), (201, 450), (450, 600)])


def modality_values(table, name):
    return np.stack(table.column(name).to_numpy(zero_copy_only=False))


def assert_same_output(got, expected, exact):
    """Same schema, passthrough and flags; modality values bit-identical when ``exact``,
    else equal to float round-off (fits that accumulate sums differently)."""
    assert got.schema.equals(expected.schema, check_metadata=True)
    for name in ("id", "tag", *FLAGS):
        assert got.column(name).equals(expected.column(name))
    for name in ("img", "txt", "aud"):
        if exact:
            assert got.column(name).equals(expected.column(name))
        else:
            np.testing.assert_allclose(modality_values(got, name),
                                       modality_values(expected, name), rtol=1e-5, atol=1e-5)


def test_stream_fit_and_impute_equal_the_in_memory_commands(parquet_dir, tmp_path):
    memory_model, stream_model = tmp_path / "memory.npz", tmp_path / "stream.npz"
    assert main(["fit", str(parquet_dir), "-o", str(memory_model), "--k", str(K)]) == 0
    assert main(["fit", str(parquet_dir), "-o", str(stream_model), "--k", str(K), "--stream",
                 "--batch-rows", "37"]) == 0
    memory, stream = UL4M4Imputer.load(memory_model), UL4M4Imputer.load(stream_model)
    assert stream.n_iter_ == memory.n_iter_
    np.testing.assert_array_equal(stream.labels_, memory.labels_)
    np.testing.assert_array_equal(stream.centers_mask_, memory.centers_mask_)
    np.testing.assert_allclose(stream.cluster_centers_, memory.cluster_centers_, atol=1e-5)

    # the same model: streamed output bit for bit the in-memory output (the default soft
    # fill too: its scores come from fixed-shape row tiles, whatever the batches)
    outputs = {}
    for name, extra in (("memory", []), ("stream", ["--stream", "--batch-rows", "37"])):
        outputs[name] = tmp_path / f"{name}.parquet"
        assert main(["impute", str(parquet_dir), "-o", str(outputs[name]), "--model",
                     str(memory_model), *extra]) == 0
    assert_same_output(pq.read_table(outputs["stream"]), pq.read_table(outputs["memory"]),
                       exact=True)
    # impute --stream without a model fits first (streamed)
    fitted = tmp_path / "fitted.parquet"
    assert main(["impute", str(parquet_dir), "-o", str(fitted), "--k", str(K), "--stream"]) == 0
    assert_same_output(pq.read_table(fitted), pq.read_table(outputs["memory"]), exact=False)


def test_workers_fit_then_impute_on_a_parquet_dir(parquet_dir, tmp_path):
    model, out, reference = tmp_path / "model.npz", tmp_path / "out.parquet", tmp_path / "ref.parquet"
    result = subprocess.run(
        [sys.executable, "-m", "ul4m4_gpu.cli", "fit", str(parquet_dir), "-o", str(model),
         "--k", str(K), "--workers", "2"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "fitted K=5 on 600 rows" in result.stdout
    assert main(["impute", str(parquet_dir), "-o", str(out), "--model", str(model),
                 "--workers", "2"]) == 0
    assert main(["impute", str(parquet_dir), "-o", str(reference), "--k", str(K)]) == 0
    local = UL4M4Imputer.load(model)
    assert local.labels_.shape == (600,)
    assert_same_output(pq.read_table(out), pq.read_table(reference), exact=False)


@pytest.mark.parametrize("writer", ["pandas", "dask"])
@pytest.mark.filterwarnings("ignore:The inplace keyword:DeprecationWarning")  # dask's writer
def test_workers_pass_a_stored_pandas_index_through(parquet_dir, tmp_path, writer):
    """Parquet written by pandas with a non-Range index (stored as the column
    ``__index_level_0__``) or by dask's to_parquet (``__null_dask_index__``): --workers reads
    that column as passthrough, like the in-memory path, and writes the same file."""
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    frame = pq.read_table(parquet_dir).to_pandas(types_mapper=pd.ArrowDtype)
    if writer == "pandas":
        source = tmp_path / "in.parquet"
        frame.index = [f"k{i}" for i in range(len(frame))]
        frame.to_parquet(source)
    else:
        source = tmp_path / "in"
        dd.from_pandas(frame, npartitions=3).to_parquet(source)
    model, out, reference = (tmp_path / name for name in ("m.npz", "out.parquet", "ref.parquet"))
    assert main(["fit", str(parquet_dir), "-o", str(model), "--k", str(K)]) == 0
    assert main(["impute", str(source), "-o", str(out), "--model", str(model),
                 "--workers", "1"]) == 0
    assert main(["impute", str(source), "-o", str(reference), "--model", str(model)]) == 0
    got, expected = pq.read_table(out), pq.read_table(reference)
    assert {"__index_level_0__", "__null_dask_index__"} & set(got.column_names)
    assert got.schema.equals(expected.schema, check_metadata=True) and got.equals(expected)


def test_parquet_partitions_are_runs_of_row_groups(tmp_path, monkeypatch):
    """--workers reads a Parquet dataset in partitions of consecutive row groups of one file
    holding PARTITION_BYTES at least (here three 10-row groups), every column included."""
    pytest.importorskip("dask.dataframe")
    from ul4m4_gpu.cli import dask_commands as cli_dask
    from ul4m4_gpu.io.parquet import ParquetDataset

    x, mask = make_data(n=130)
    data = write_dataset(tmp_path / "ds", x, mask, [(0, 100), (100, 130)], row_group_size=10)
    group_bytes = pq.ParquetFile(data / "part-000.parquet").metadata.row_group(0).total_byte_size
    monkeypatch.setattr(cli_dask, "PARTITION_BYTES", 3 * group_bytes)
    source = ParquetDataset.open(data)
    runs = source.row_group_runs(3 * group_bytes)
    assert [(run.fragment.path.rsplit("/", 1)[1], run.groups) for run in runs] == [
        ("part-000.parquet", [0, 1, 2]), ("part-000.parquet", [3, 4, 5]),
        ("part-000.parquet", [6, 7, 8]), ("part-000.parquet", [9]),
        ("part-001.parquet", [0, 1, 2])]
    frame = cli_dask._parquet_frame(source)
    assert frame.npartitions == 4 + 1  # part-000: 4 runs; part-001: 3 groups, 1 run
    got = pa.Table.from_pandas(frame.compute(scheduler="sync"), preserve_index=False)
    assert got.equals(pq.read_table(data).replace_schema_metadata())


def test_hive_dataset_in_memory_streamed_and_on_workers(tmp_path):
    """A hive-partitioned directory: ``impute --workers 1`` reads partitions of it with the
    keys as columns, in sorted relative path order, and writes what the in-memory command
    writes, and so does --stream (other batches, the same bits)."""
    pytest.importorskip("distributed")
    x, mask = make_data(n=600)
    data = write_hive_dataset(tmp_path / "hive", x, mask, row_group_size=100)
    model = tmp_path / "model.npz"
    assert main(["fit", str(data), "-o", str(model), "--k", str(K)]) == 0
    outputs = {}
    for mode, extra in (("memory", []), ("stream", ["--stream"]), ("dask", ["--workers", "1"])):
        outputs[mode] = tmp_path / f"{mode}.parquet"
        assert main(["impute", str(data), "-o", str(outputs[mode]), "--model", str(model),
                     *extra]) == 0
    memory, stream, dask = (pq.read_table(outputs[m]) for m in ("memory", "stream", "dask"))
    assert dask.schema.equals(memory.schema, check_metadata=True) and dask.equals(memory)
    assert stream.schema.equals(memory.schema, check_metadata=True) and stream.equals(memory)
    direct = hive_rows(data)
    assert memory.column_names == [*direct.column_names, *FLAGS]
    for name in ("id", "tag", "split", "day"):
        assert memory.column(name).equals(direct.column(name))


@pytest.fixture
def busy_http_port():
    """Port 8787 (the default of the scheduler's HTTP server) held by another listener."""
    with socket.socket() as holder:
        try:
            holder.bind(("127.0.0.1", 8787))
            holder.listen()
        except OSError:  # something else holds it already
            pass
        yield


@pytest.mark.parametrize("args, message", [
    pytest.param([], r"partition 1 \(global rows from 20\): modality 'img': rows \[33\]",
                 id="nan-cell"),
    pytest.param(["--device", "cuda"], r"device='cuda' was requested but no CUDA GPU is usable",
                 marks=pytest.mark.skipif(gpu_available(), reason="needs a machine without GPU"),
                 id="cuda-without-gpu"),
])
def test_worker_errors_are_one_line(tmp_path, busy_http_port, args, message):
    """A task failing on a worker (a NaN in an observed cell of global row 33; device="cuda"
    on workers without a GPU): exit 1, no model file and one line on stderr, without the
    worker's "Compute Failed" traceback or a "Port 8787 is already in use" warning."""
    x, mask = make_data(n=60)
    mask[33, 0] = True
    x[33, :4] = [1.0, np.nan, 2.0, 3.0]
    data = write_dataset(tmp_path / "ds", x, mask, [(0, 20), (20, 40), (40, 60)])
    model = tmp_path / "model.npz"
    result = subprocess.run(
        [sys.executable, "-m", "ul4m4_gpu.cli", "fit", str(data), "-o", str(model), "--k",
         str(K), "--workers", "1", *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("ul4m4: error:"), result.stderr
    assert re.search(message, errors[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


@pytest.mark.parametrize("address", ["tcp://localhost", "foo"])
def test_scheduler_address_without_a_port_is_one_line(parquet_dir, tmp_path, address):
    """Refused before a Client is built (a half-built one printed a 'Client.__del__'
    traceback after waiting out its timeout)."""
    out = tmp_path / "out.parquet"
    result = subprocess.run(
        [sys.executable, "-m", "ul4m4_gpu.cli", "impute", str(parquet_dir), "-o", str(out),
         "--scheduler", address], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"ul4m4: error: --scheduler {address!r}: missing port number in address "
        f"{address.removeprefix('tcp://')!r}"]
    assert not out.exists()


def test_workers_refuse_a_modality_null_in_every_row(tmp_path, capsys):
    """As the in-memory and streamed fits do (the Dask fit dropped the modality, and impute
    then reported its null cells as filled)."""
    x, mask = make_data(n=40)
    mask[:, 1] = False
    data = write_dataset(tmp_path / "ds", x, mask, [(0, 20), (20, 40)])
    model = tmp_path / "model.npz"
    assert main(["fit", str(data), "-o", str(model), "--k", "3", "--workers", "1"]) == 1
    errors = capsys.readouterr().err.strip().splitlines()
    assert errors == ["ul4m4: error: modalities ['txt'] are observed in no training row"]
    assert not model.exists()


def test_scheduler_address_of_a_running_cluster(parquet_dir, tmp_path):
    distributed = pytest.importorskip("distributed")
    out, reference = tmp_path / "out.parquet", tmp_path / "ref.parquet"
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster:
        assert main(["impute", str(parquet_dir), "-o", str(out), "--k", str(K),
                     "--scheduler", cluster.scheduler_address]) == 0
    assert main(["impute", str(parquet_dir), "-o", str(reference), "--k", str(K)]) == 0
    assert_same_output(pq.read_table(out), pq.read_table(reference), exact=False)


def test_workers_impute_npz_fits_first(tmp_path):
    x, mask = make_data(n=300)
    full = np.where(np.repeat(mask, (4, 3, 5), axis=1), x, np.nan)
    path = tmp_path / "in.npz"
    np.savez(path, a=full[:, :4], ids=np.arange(300), b=full[:, 4:7], c=full[:, 7:])
    out, reference = tmp_path / "out.npz", tmp_path / "ref.npz"
    assert main(["impute", str(path), "-o", str(out), "--k", str(K), "--workers", "2",
                 "--batch-rows", "70"]) == 0
    assert main(["impute", str(path), "-o", str(reference), "--k", str(K)]) == 0
    with np.load(out) as got, np.load(reference) as expected:
        assert list(got.keys()) == list(expected.keys()) == ["a", "ids", "b", "c", "imputed"]
        for key in expected:
            np.testing.assert_allclose(got[key], expected[key], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("args, message", [
    (["--stream", "--workers", "2"], "excludes --workers"),
    (["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "exclude each other"),
    (["--batch-rows", "10"], "--batch-rows needs"),
    (["--stream", "--batch-rows", "0"], "--batch-rows must be >= 1"),
    (["--workers", "0"], "--workers must be >= 1"),
])
def test_option_errors_are_one_line(parquet_dir, tmp_path, capsys, args, message):
    out = tmp_path / "out.parquet"
    assert main(["impute", str(parquet_dir), "-o", str(out), *args]) == 1
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("ul4m4: error:") and message in errors[0]
    assert not out.exists()


def test_stream_errors_leave_no_output(parquet_dir, tmp_path, capsys):
    npz = tmp_path / "in.npz"
    np.savez(npz, a=np.ones((5, 2)))
    assert main(["fit", str(npz), "-o", str(tmp_path / "m.npz"), "--stream"]) == 1
    assert main(["impute", str(parquet_dir), "-o", str(tmp_path / "out.npz"), "--stream"]) == 1
    assert main(["impute", str(parquet_dir), "-o", str(tmp_path / "out.parquet"), "--stream",
                 "--k", "601"]) == 1
    assert main(["impute", str(parquet_dir), "-o", str(tmp_path / "w.npz"), "--workers", "2"]) == 1
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 4 and all(e.startswith("ul4m4: error:") for e in errors)
    assert "Parquet only" in errors[0] and ".parquet file" in errors[1]
    assert "n_clusters=601" in errors[2] and ".parquet file" in errors[3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npz"]


def test_help_lists_the_scaling_options(capsys):
    for command in ("fit", "impute"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = capsys.readouterr().out
        for option in ("--stream", "--batch-rows", "--workers", "--scheduler"):
            assert option in out
