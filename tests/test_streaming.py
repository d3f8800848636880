"""Out-of-core fit/transform of Parquet datasets (ul4m4_gpu.scale.streaming): same results as the
in-memory path whatever the batch size, and memory bounded independently of N."""

import gc
import tracemalloc
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ul4m4_gpu import UL4M4Imputer
from ul4m4_gpu.core.completion import CompletionWarning
from ul4m4_gpu.io.files import InputFileError, OutputFileError, read_table, write_table
from ul4m4_gpu.scale.streaming import ParquetSource, fit_parquet, transform_parquet
from synthetic import DIMS, K, explicit_init, make_data

NAMES = ("img", "txt", "aud")
#: The output's flag columns of NAMES.
FLAGS = ("imputed_img", "imputed_txt", "imputed_aud")


def list_column(block, observed, value_type=pa.float32()):
    """A list column of the rows of ``block``, null where not observed."""
    n, d = block.shape
    offsets = pa.array(np.arange(0, n * d + 1, d, dtype=np.int32))
    flat = pa.array(np.ascontiguousarray(block).reshape(-1)).cast(value_type)
    return pa.ListArray.from_arrays(offsets, flat, mask=pa.array(~observed))


def write_dataset(directory, x, mask, bounds, dims=DIMS, names=NAMES, row_group_size=None):
    """One Parquet file per [start, stop) of ``bounds``: passthrough ``id`` (int) and ``tag``
    (string) columns around the modality columns; ``txt`` stored as list<double>."""
    directory.mkdir(parents=True)
    offsets = np.concatenate([[0], np.cumsum(dims)])
    for i, (start, stop) in enumerate(bounds):
        rows = slice(start, stop)
        columns = {"id": pa.array(np.arange(start, stop) * 3)}
        for m, name in enumerate(names):
            kind = pa.float64() if name == "txt" else pa.float32()
            columns[name] = list_column(x[rows, offsets[m]:offsets[m + 1]], mask[rows, m], kind)
            if m == 0:
                columns["tag"] = pa.array([f"row{j}" for j in range(start, stop)])
        pq.write_table(pa.table(columns), directory / f"part-{i:03d}.parquet",
                       row_group_size=row_group_size)
    return directory


#: A hive-partitioned layout of the 600 rows of make_data: {directory: rows [start, stop)}.
HIVE_PARTS = {"split=train/day=2": (0, 150), "split=train/day=10": (150, 151),
              "split=test/day=1": (151, 420), "split=test/day=3": (420, 600)}
#: Its directories in row order: sorted relative paths (strings: day=10 before day=2).
HIVE_ORDER = ("split=test/day=1", "split=test/day=3", "split=train/day=10", "split=train/day=2")


def write_hive_dataset(directory, x, mask, row_group_size=None):
    """:data:`HIVE_PARTS` as ``directory/split=.../day=.../part-000.parquet`` files."""
    for subdirectory, bounds in HIVE_PARTS.items():
        write_dataset(directory / subdirectory, x, mask, [bounds], row_group_size=row_group_size)
    return directory


def hive_rows(directory) -> pa.Table:
    """Every row of a :func:`write_hive_dataset` directory, read by pyarrow file by file in
    :data:`HIVE_ORDER`, with the keys ``split`` (string) and ``day`` (int32) appended."""
    tables = []
    for subdirectory in HIVE_ORDER:
        table = pq.ParquetFile(directory / subdirectory / "part-000.parquet").read()
        split, day = (part.split("=")[1] for part in subdirectory.split("/"))
        tables.append(table.append_column("split", pa.array([split] * table.num_rows))
                      .append_column("day", pa.array([int(day)] * table.num_rows, pa.int32())))
    return pa.concat_tables(tables)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    x, mask = make_data()
    path = write_dataset(tmp_path_factory.mktemp("data") / "ds", x, mask,
                         [(0, 150), (150, 151), (151, 420), (420, 600)])
    return path, x, mask


def assert_same_fit(streamed, reference):
    assert streamed.n_iter_ == reference.n_iter_
    np.testing.assert_array_equal(streamed.labels_, reference.labels_)
    np.testing.assert_array_equal(streamed.centers_mask_, reference.centers_mask_)
    np.testing.assert_allclose(streamed.cluster_centers_, reference.cluster_centers_,
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(streamed.mean_, reference.mean_, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(streamed.scale_, reference.scale_, rtol=1e-12)
    assert streamed.inertia_ == pytest.approx(reference.inertia_, rel=1e-5)
    assert streamed.dims_ == reference.dims_
    assert streamed.modality_names_ == reference.modality_names_


@pytest.mark.parametrize("batch_rows", [65536, 37])
def test_streamed_fit_equals_in_memory_fit_from_explicit_init(dataset, batch_rows):
    path, x, mask = dataset
    init = explicit_init(x, mask)
    reference = UL4M4Imputer(n_clusters=K, init=init, device="cpu").fit(read_table(path).data)
    assert reference.n_iter_ > 2 and (reference.labels_ == -1).sum() >= 5
    streamed = fit_parquet(path, UL4M4Imputer(n_clusters=K, init=init, device="cpu"),
                           batch_rows=batch_rows)
    assert isinstance(streamed, UL4M4Imputer)
    assert_same_fit(streamed, reference)


@pytest.mark.parametrize("batch_rows", [65536, 37])
def test_streamed_kmeanspp_equals_in_memory_when_the_sample_holds_every_row(dataset, batch_rows):
    path, _, _ = dataset
    params = dict(n_clusters=K, n_init=2, random_state=7, device="cpu")
    reference = UL4M4Imputer(**params).fit(read_table(path).data)
    streamed = fit_parquet(path, UL4M4Imputer(**params), batch_rows=batch_rows)
    assert_same_fit(streamed, reference)


def test_sampled_seeding_finds_the_clusters(tmp_path):
    x, mask = make_data(seed=3, n=3000, observed=0.9, spread=8.0)
    path = write_dataset(tmp_path / "ds", x, mask, [(0, 1000), (1000, 3000)])
    imputer = fit_parquet(path, UL4M4Imputer(n_clusters=K, random_state=0, device="cpu"),
                          batch_rows=500, seed_sample_size=400)
    reference = UL4M4Imputer(n_clusters=K, random_state=0, device="cpu").fit(
        read_table(path).data)
    assert imputer.labels_.shape == (3000,)
    assert imputer.inertia_ <= 1.05 * reference.inertia_


@pytest.mark.parametrize("batch_rows", [65536, 37])
def test_streamed_transform_writes_what_the_in_memory_path_writes(dataset, tmp_path, batch_rows):
    path, x, mask = dataset
    table = read_table(path)
    imputer = UL4M4Imputer(n_clusters=K, init=explicit_init(x, mask), device="cpu",
                           completion="paper", n_candidates=1).fit(table.data)  # a hard pick
    write_table(table, imputer.transform(table.data), tmp_path / "memory.parquet")
    filled = transform_parquet(path, tmp_path / "streamed.parquet", imputer,
                               batch_rows=batch_rows)
    assert filled == int((~mask).sum())
    expected = pq.read_table(tmp_path / "memory.parquet")
    got = pq.read_table(tmp_path / "streamed.parquet")
    assert got.schema.equals(expected.schema, check_metadata=True)
    assert got.equals(expected)  # values bit-identical, passthrough and flags too
    assert got.column_names == ["id", "img", "tag", "txt", "aud", *FLAGS]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["memory.parquet", "streamed.parquet"]


def test_streamed_fit_then_transform_matches_fit_transform(dataset, tmp_path):
    path, x, mask = dataset
    streamed = fit_parquet(path, UL4M4Imputer(n_clusters=K, random_state=1, device="cpu"),
                           batch_rows=100)
    transform_parquet(path, tmp_path / "out.parquet", streamed, batch_rows=100)
    table = read_table(path)
    reference = UL4M4Imputer(n_clusters=K, random_state=1, device="cpu")
    write_table(table, reference.fit_transform(table.data), tmp_path / "ref.parquet")
    got, expected = pq.read_table(tmp_path / "out.parquet"), pq.read_table(tmp_path / "ref.parquet")
    assert got.schema.equals(expected.schema, check_metadata=True)
    for name in ("id", "tag", *FLAGS):
        assert got.column(name).equals(expected.column(name))
    for name in NAMES:  # centres agree to round-off (float64 vs float32 centre sums)
        np.testing.assert_allclose(np.stack(got.column(name).to_numpy(zero_copy_only=False)),
                                   np.stack(expected.column(name).to_numpy(zero_copy_only=False)),
                                   rtol=1e-5, atol=1e-5)


def test_transform_matches_modality_columns_by_name(dataset, tmp_path):
    """A file whose modality columns come in another order is completed as the fitted
    order says (once it was read by position, silently wrong); other names are refused."""
    path, x, mask = dataset
    imputer = UL4M4Imputer(n_clusters=K, init=explicit_init(x, mask), device="cpu")
    fitted = imputer.fit(read_table(path).data)
    transform_parquet(path, tmp_path / "in_order.parquet", fitted)
    table = pq.read_table(path)
    pq.write_table(table.select(["id", "aud", "tag", "img", "txt"]), tmp_path / "shuffled.parquet")
    transform_parquet(tmp_path / "shuffled.parquet", tmp_path / "out.parquet", fitted)
    expected, got = pq.read_table(tmp_path / "in_order.parquet"), pq.read_table(tmp_path / "out.parquet")
    for name in ("id", "tag", *NAMES, *FLAGS):
        assert got.column(name).equals(expected.column(name)), name
    assert got.column_names[-3:] == ["imputed_aud", "imputed_img", "imputed_txt"]  # file order
    for m, name in enumerate(FLAGS):
        np.testing.assert_array_equal(got.column(name).to_numpy(), ~mask[:, m])
    pq.write_table(table.rename_columns(["id", "image", "tag", "txt", "aud"]),
                   tmp_path / "renamed.parquet")
    with pytest.raises(ValueError, match=r"missing: \['img'\], unexpected: \['image'\]"):
        transform_parquet(tmp_path / "renamed.parquet", tmp_path / "out2.parquet", fitted)
    assert not (tmp_path / "out2.parquet").exists()


def test_errors(dataset, tmp_path):
    path, x, mask = dataset
    imputer = UL4M4Imputer(n_clusters=K, random_state=0, device="cpu")
    with pytest.raises(InputFileError, match="nope"):
        fit_parquet(tmp_path / "nope", imputer)
    with pytest.raises(ValueError, match="batch_rows"):
        fit_parquet(path, imputer, batch_rows=0)
    with pytest.raises(ValueError, match="n_clusters=601"):
        fit_parquet(path, UL4M4Imputer(n_clusters=601, device="cpu"))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.parquet").write_bytes(b"garbage")
    with pytest.raises(InputFileError, match="a.parquet"):
        fit_parquet(bad, imputer)
    fitted = fit_parquet(path, imputer)
    with pytest.raises(OutputFileError):
        transform_parquet(path, tmp_path / "out.npz", fitted)
    mismatched = write_dataset(tmp_path / "mismatch", x[:, :9], mask[:, :2], [(0, 50)],
                               dims=(4, 5), names=("img", "txt"))
    with pytest.raises(ValueError):
        transform_parquet(mismatched, tmp_path / "out.parquet", fitted)
    assert not (tmp_path / "out.parquet").exists()
    assert not list(tmp_path.glob("*.ul4m4-partial-*.tmp"))


def test_unobserved_modality_in_some_batches_and_schema_check(tmp_path):
    x, mask = make_data(n=200)
    mask[:120, 2] = False  # 'aud' null in every row of the first file and several batches
    path = write_dataset(tmp_path / "ds", x, mask, [(0, 100), (100, 200)])
    reference = UL4M4Imputer(n_clusters=3, random_state=0, device="cpu").fit(
        read_table(path).data)
    streamed = fit_parquet(path, UL4M4Imputer(n_clusters=3, random_state=0, device="cpu"),
                           batch_rows=30)
    assert_same_fit(streamed, reference)
    source = ParquetSource.open(path)
    assert source.modalities == NAMES and source.n_rows == 200
    pq.write_table(pa.table({"other": [1, 2]}), path / "zz.parquet")
    with pytest.raises(InputFileError, match="zz.parquet"):
        ParquetSource.open(path)


def _peak_bytes(func):
    gc.collect()
    tracemalloc.start()
    try:
        result = func()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_streaming_memory_is_bounded_below_the_dataset_size(tmp_path):
    """A 40 MB (float32) dataset streamed in 2048-row batches stays under a 10 MB budget
    (NumPy allocations are traced by tracemalloc), where the in-memory path goes far above."""
    budget = 10 * 2**20
    n, dims = 100_000, (60, 40)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, sum(dims))).astype(np.float32)
    x[: n // 2] += 3.0
    mask = rng.random((n, 2)) < 0.8
    path = write_dataset(tmp_path / "ds", x, mask, [(0, n // 2), (n // 2, n)], dims=dims,
                         names=("a", "b"), row_group_size=4096)
    assert x.nbytes >= 40e6
    del x, mask
    params = dict(n_clusters=4, max_iter=3, random_state=0, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # compile the kernels first: Numba's JIT allocations are not the data's memory
        small = write_dataset(tmp_path / "small", rng.normal(size=(50, sum(dims))).astype(
            np.float32), rng.random((50, 2)) < 0.8, [(0, 50)], dims=dims, names=("a", "b"))
        transform_parquet(small, tmp_path / "small.parquet",
                          fit_parquet(small, UL4M4Imputer(**params), batch_rows=2048))
        fitted, peak_fit = _peak_bytes(lambda: fit_parquet(
            path, UL4M4Imputer(**params), batch_rows=2048, seed_sample_size=2000))
        _, peak_transform = _peak_bytes(lambda: transform_parquet(
            path, tmp_path / "out.parquet", fitted, batch_rows=2048))
        _, peak_memory = _peak_bytes(lambda: UL4M4Imputer(**params).fit(read_table(path).data))
    assert fitted.labels_.shape == (n,)
    assert peak_fit < budget, peak_fit
    assert peak_transform < budget, peak_transform
    assert peak_memory > 4 * budget, peak_memory  # the check can fail: in memory it does


@pytest.mark.parametrize("completion, n_candidates", [("overlap", 3), ("nearest", 4)])
def test_streamed_fit_and_transform_of_a_soft_rule_equal_the_in_memory_ones(
        dataset, tmp_path, completion, n_candidates):
    """With fewer rows than the temperature sample, the streamed fit holds out the same
    modalities as the in-memory one: the same temperature, and the same completion."""
    path, x, mask = dataset
    params = dict(n_clusters=K, init=explicit_init(x, mask), device="cpu",
                  completion=completion, n_candidates=n_candidates, random_state=3)
    table = read_table(path)
    reference = UL4M4Imputer(**params).fit(table.data)
    streamed = fit_parquet(path, UL4M4Imputer(**params), batch_rows=37)
    assert streamed.temperature_ == reference.temperature_
    write_table(table, reference.transform(table.data), tmp_path / "memory.parquet")
    filled, whole = transform_parquet(path, tmp_path / "streamed.parquet", reference,
                                      batch_rows=37, return_report=True)
    assert filled == int((~mask).sum())
    got, expected = pq.read_table(tmp_path / "streamed.parquet"), pq.read_table(tmp_path / "memory.parquet")
    assert got.equals(expected)  # soft weights too: bit for bit, whatever the batches
    np.testing.assert_array_equal(whole.filled, (~mask).sum(axis=0))


@pytest.mark.parametrize("completion, n_candidates", [("paper", 1), ("overlap", 3),
                                                      ("nearest", 5)])
def test_streamed_transform_at_thousands_of_dimensions_is_bitwise_the_in_memory_one(
        tmp_path, completion, n_candidates):
    """D = 2305: the products whose blocking a BLAS picks by their shape are large enough
    to differ with the batch, unless they run on fixed-shape tiles; batches of 1, 7 and
    64 rows and the whole file write the in-memory output bit for bit."""
    dims = (2000, 300, 5)
    x, mask = make_data(seed=4, n=150, dims=dims)
    path = write_dataset(tmp_path / "ds", x, mask, [(0, 70), (70, 150)], dims=dims)
    table = read_table(path)
    imputer = UL4M4Imputer(n_clusters=16, random_state=0, device="cpu", completion=completion,
                           n_candidates=n_candidates).fit(table.data)
    write_table(table, imputer.transform(table.data), tmp_path / "memory.parquet")
    expected = pq.read_table(tmp_path / "memory.parquet")
    for batch_rows in (1, 7, 64, 65536):
        out = tmp_path / f"streamed-{batch_rows}.parquet"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CompletionWarning)
            transform_parquet(path, out, imputer, batch_rows=batch_rows)
        assert pq.read_table(out).equals(expected)


def test_hive_batches_come_in_sorted_path_order_at_their_global_offsets(tmp_path):
    """Batches of a hive-partitioned directory (row groups of 7 rows, batches of 5) are the
    rows pyarrow reads file by file in sorted relative path order, keys included, each at
    its global row offset; the whole-table read agrees."""
    x, mask = make_data()
    path = write_hive_dataset(tmp_path / "hive", x, mask, row_group_size=7)
    expected = hive_rows(path)
    source = ParquetSource.open(path)
    assert source.files == [path / d / "part-000.parquet" for d in HIVE_ORDER]
    assert source.modalities == NAMES and source.keys == ("split", "day")
    assert source.order == ("id", "img", "tag", "txt", "aud", "split", "day")
    assert source.n_rows == 600
    n_batches = 0
    for offset, batch in source.batches(5):
        assert 0 < batch.num_rows <= 5
        assert batch.equals(expected.slice(offset, batch.num_rows))
        n_batches += 1
    assert n_batches >= 600 // 5 and offset + batch.num_rows == 600
    assert source.read().equals(expected)
    assert source.read(["day", "id"]).equals(expected.select(["day", "id"]))


def test_streamed_fit_and_transform_of_a_hive_dataset_equal_the_in_memory_ones(tmp_path):
    """fit_parquet / transform_parquet on a hive-partitioned directory: the in-memory fit and
    output (bit for bit with a hard pick), the keys written as passthrough columns; the
    output read again has its flags replaced, not doubled."""
    x, mask = make_data()
    path = write_hive_dataset(tmp_path / "hive", x, mask)
    table = read_table(path)
    params = dict(n_clusters=K, init=explicit_init(x, mask), device="cpu", completion="paper",
                  n_candidates=1)
    reference = UL4M4Imputer(**params).fit(table.data)
    streamed = fit_parquet(path, UL4M4Imputer(**params), batch_rows=37)
    assert_same_fit(streamed, reference)
    write_table(table, reference.transform(table.data), tmp_path / "memory.parquet")
    filled, whole = transform_parquet(path, tmp_path / "streamed.parquet", reference,
                                      batch_rows=37, return_report=True)
    assert filled == int((~mask).sum())
    got, expected = pq.read_table(tmp_path / "streamed.parquet"), pq.read_table(tmp_path / "memory.parquet")
    assert got.schema.equals(expected.schema, check_metadata=True) and got.equals(expected)
    assert got.column_names == ["id", "img", "tag", "txt", "aud", "split", "day", *FLAGS]
    direct = hive_rows(path)
    for name in ("id", "split", "day"):
        assert got.column(name).equals(direct.column(name))
    for m, name in enumerate(FLAGS):
        assert got.column(name).to_pylist() == direct.column(NAMES[m]).is_null().to_pylist()

    transform_parquet(tmp_path / "streamed.parquet", tmp_path / "again.parquet", reference)
    again = pq.read_table(tmp_path / "again.parquet")
    assert again.column_names == got.column_names
    assert not any(any(again.column(name).to_pylist()) for name in FLAGS)  # all observed


def test_a_stale_auto_temperature_is_said_once_by_the_streamed_transform(dataset, tmp_path):
    """The batches' CompletionWarnings are gathered into one for the whole file; the
    warning that temperature_ was chosen for another rule must not be lost among them."""
    path, x, mask = dataset
    fitted = UL4M4Imputer(n_clusters=K, random_state=0, device="cpu").fit(read_table(path).data)
    fitted.set_params(n_candidates=3)
    with pytest.warns(CompletionWarning) as caught:
        transform_parquet(path, tmp_path / "out.parquet", fitted, batch_rows=40)
    stale = [w for w in caught if "was chosen at fit for" in str(w.message)]
    assert len(stale) == 1
