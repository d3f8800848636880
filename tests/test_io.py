"""Reading and writing user data files (ul4m4_gpu.io.files)."""

import io
import os
import re
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ul4m4_gpu.io.data import MultiModalArray
from ul4m4_gpu.io.files import (
    InputFileError,
    OutputFileError,
    atomic_write,
    load_npz_arrays,
    read_table,
    write_table,
)

N = 6


def _complete(data: MultiModalArray) -> MultiModalArray:
    """What an imputer returns: missing slots filled with 0.5, all observed, flagged."""
    values = np.where(np.isnan(data.values), np.float32(0.5), data.values)
    return MultiModalArray(values, np.ones_like(data.mask), data.dims, data.names,
                           imputed=~data.mask)


def _assert_same_array(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes()


def test_npz_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.normal(size=(N, 3))
    img[[1, 4]] = np.nan
    txt = rng.normal(size=(N, 2)).astype(np.float32)
    mask = np.ones((N, 2), dtype=bool)
    mask[[1, 4], 0] = False
    mask[2, 1] = False  # txt row 2 is finite but masked out
    ids = np.arange(100, 100 + N, dtype=np.int64)
    labels = np.array([f"label-{i}" for i in range(N)])
    path = tmp_path / "data.npz"
    np.savez(path, ids=ids, img=img, mask=mask, labels=labels, txt=txt)

    table = read_table(path)
    assert table.fmt == "npz" and table.data.names == ("img", "txt")
    np.testing.assert_array_equal(table.data.mask, mask)
    assert list(table.passthrough) == ["ids", "labels"]
    assert table.order == ("ids", "img", "labels", "txt")

    completed = _complete(table.data)
    out = tmp_path / "out.npz"
    write_table(table, completed, out)
    with np.load(out, allow_pickle=False) as npz:
        assert npz.files == ["ids", "img", "labels", "txt", "imputed"]
        _assert_same_array(npz["ids"], ids)
        _assert_same_array(npz["labels"], labels)
        for m, name in enumerate(table.data.names):
            assert npz[name].dtype == np.float32
            np.testing.assert_array_equal(npz[name], completed.to_numpy()[m])
        np.testing.assert_array_equal(npz["imputed"], ~mask)

    again = read_table(out)
    assert again.data.names == ("img", "txt") and again.data.mask.all()
    assert list(again.passthrough) == ["ids", "labels"]


def test_npz_key_named_file_passes_through(tmp_path):
    """``np.savez(path, file=...)`` is impossible; the writer takes any key."""
    path = tmp_path / "in.npz"
    np.savez(path, x=np.ones((N, 2)))
    table = read_table(path)
    files = np.array([f"img/{i}.png" for i in range(N)])
    table.passthrough["file"] = files
    table.order = ("file", *table.order)
    write_table(table, _complete(table.data), tmp_path / "out.npz")
    back = read_table(tmp_path / "out.npz")
    assert back.order == ("file", "x")
    _assert_same_array(back.passthrough["file"], files)


def test_npz_nan_rows_mean_missing_without_mask(tmp_path):
    a = np.arange(N * 2, dtype=np.float64).reshape(N, 2)
    a[[0, 3]] = np.nan
    counts = np.arange(N * 4, dtype=np.int32).reshape(N, 4)  # 2-D int: a modality too
    path = tmp_path / "nan.npz"
    np.savez(path, a=a, counts=counts, flags=np.ones((N, 2), dtype=bool))
    table = read_table(path)
    assert table.data.names == ("a", "counts")
    np.testing.assert_array_equal(table.data.mask[:, 0], [False, True, True, False, True, True])
    assert table.data.mask[:, 1].all()
    assert list(table.passthrough) == ["flags"]  # 2-D bool is not numeric data


def test_npz_modalities_key_selects_and_orders(tmp_path):
    rng = np.random.default_rng(1)
    a, b, c = (rng.normal(size=(N, d)) for d in (2, 3, 4))
    path = tmp_path / "sel.npz"
    np.savez(path, a=a, b=b, c=c, modalities=np.array(["c", "a"]))
    table = read_table(path)
    assert table.data.names == ("c", "a") and table.data.dims == (4, 2)
    assert list(table.passthrough) == ["b", "modalities"]

    out = tmp_path / "sel_out.npz"
    write_table(table, _complete(table.data), out)
    with np.load(out) as npz:
        _assert_same_array(npz["b"], b)
        assert npz["imputed"].shape == (N, 2)
    assert read_table(out).data.names == ("c", "a")


def _parquet_input() -> pa.Table:
    emb = [[float(i), float(i) + 0.5] if i % 3 else None for i in range(N)]
    txt = pa.array([[1.0 * i, 2.0, 3.0] if i != 4 else None for i in range(N)],
                   type=pa.list_(pa.float32(), 3))
    return pa.table({
        "id": pa.array(range(10, 10 + N), type=pa.int64()),
        "emb": pa.array(emb, type=pa.list_(pa.float64())),
        "label": pa.array([f"row {i}" if i != 2 else None for i in range(N)]),
        "txt": txt,
        "tags": pa.array([["x", "y"]] * N),  # lists of strings pass through
        "score": pa.array(np.linspace(0, 1, N)),
    })


def test_parquet_round_trip(tmp_path):
    source = _parquet_input()
    path = tmp_path / "data.parquet"
    pq.write_table(source, path)

    table = read_table(path)
    assert table.fmt == "parquet" and table.data.names == ("emb", "txt")
    expected_mask = np.stack([np.arange(N) % 3 != 0, np.arange(N) != 4], axis=1)
    np.testing.assert_array_equal(table.data.mask, expected_mask)
    assert table.passthrough.column_names == ["id", "label", "tags", "score"]

    completed = _complete(table.data)
    out = tmp_path / "out.parquet"
    write_table(table, completed, out)
    written = pq.read_table(out)
    assert written.column_names == ["id", "emb", "label", "txt", "tags", "score",
                                    "imputed_emb", "imputed_txt"]
    for name in ("id", "label", "tags", "score"):
        assert written.schema.field(name) == source.schema.field(name)
        assert written.column(name).equals(source.column(name))
    for m, name in enumerate(completed.names):
        assert written.schema.field(name).type == pa.list_(pa.float32())
        assert written.column(name).null_count == 0
        np.testing.assert_array_equal(np.array(written.column(name).to_pylist()),
                                      completed.to_numpy()[m])
    for m, name in enumerate(("imputed_emb", "imputed_txt")):
        assert written.schema.field(name).type == pa.bool_()
        assert written.column(name).to_pylist() == (~expected_mask[:, m]).tolist()

    again = read_table(out)
    assert again.data.names == ("emb", "txt") and again.data.mask.all()
    assert again.passthrough.column_names == ["id", "label", "tags", "score"]


def test_parquet_directory_reads_files_in_sorted_order(tmp_path):
    source = _parquet_input()
    folder = tmp_path / "parts"
    folder.mkdir()
    pq.write_table(source.slice(3), folder / "part-1.parquet")  # written first, read second
    pq.write_table(source.slice(0, 3), folder / "part-0.parquet")
    (folder / "notes.txt").write_text("ignored")
    table = read_table(folder)
    assert table.data.n_samples == N
    assert table.passthrough.column("id").to_pylist() == list(range(10, 10 + N))
    direct = read_table(_write(tmp_path / "whole.parquet", source))
    np.testing.assert_array_equal(table.data.values, direct.data.values)


def _with_keys(table: pa.Table, **keys) -> pa.Table:
    """``table`` with a constant int32 column per key, as hive partitioning reads them."""
    for key, value in keys.items():
        table = table.append_column(key, pa.array([value] * table.num_rows, pa.int32()))
    return table


def test_hive_partitioned_directory_reads_its_keys_as_passthrough_columns(tmp_path):
    """Files below KEY=VALUE directories, nested, in sorted relative path order (compared as
    strings: month=10 before month=2), their keys int32 columns after the files' own; other
    subdirectories and files are not read. Expected: pyarrow reading each file."""
    source = _parquet_input()
    folder = _hive(tmp_path / "hive", {"year=2024/month=1/part-0.parquet": source.slice(5),
                                       "year=2023/month=2/part-0.parquet": source.slice(3, 2),
                                       "year=2023/month=10/part-1.parquet": source.slice(1, 2),
                                       "year=2023/month=10/part-0.parquet": source.slice(0, 1)})
    _hive(folder / "backup", {"old.parquet": source})  # not KEY=VALUE: not read
    (folder / "year=2023" / "notes.txt").write_text("ignored")
    expected = pa.concat_tables(
        _with_keys(pq.ParquetFile(folder / name).read(), year=year, month=month)
        for name, year, month in [("year=2023/month=10/part-0.parquet", 2023, 10),
                                  ("year=2023/month=10/part-1.parquet", 2023, 10),
                                  ("year=2023/month=2/part-0.parquet", 2023, 2),
                                  ("year=2024/month=1/part-0.parquet", 2024, 1)])
    table = read_table(folder)
    assert table.data.names == ("emb", "txt")
    assert table.order == ("id", "emb", "label", "txt", "tags", "score", "year", "month")
    assert table.passthrough.equals(expected.drop_columns(["emb", "txt"]))
    whole = MultiModalArray.from_arrow(expected, columns=["emb", "txt"])
    np.testing.assert_array_equal(table.data.values, whole.values)
    np.testing.assert_array_equal(table.data.mask, whole.mask)

    write_table(table, _complete(table.data), tmp_path / "out.parquet")
    written = pq.read_table(tmp_path / "out.parquet")
    assert written.column_names == [*table.order, "imputed_emb", "imputed_txt"]
    for name in ("year", "month"):
        assert written.column(name).equals(expected.column(name))


def test_flags_of_earlier_outputs_are_dropped_on_read(tmp_path):
    """The ``imputed`` list<bool> column of older versions and the bool ``imputed_<m>`` of a
    modality m are an earlier output's flags: not passthrough, replaced by new ones. A bool
    ``imputed_<name>`` for a name that is no modality is passthrough."""
    source = _parquet_input()
    earlier = (source.append_column("imputed", pa.array([[True, False]] * N))
               .append_column("imputed_txt", pa.array([True] * N))
               .append_column("imputed_label", pa.array([False] * N)))
    path = _write(tmp_path / "earlier.parquet", earlier)
    table = read_table(path)
    assert table.passthrough.column_names == ["id", "label", "tags", "score", "imputed_label"]
    write_table(table, _complete(table.data), tmp_path / "out.parquet")
    written = pq.read_table(tmp_path / "out.parquet")
    assert written.column_names == ["id", "emb", "label", "txt", "tags", "score",
                                    "imputed_label", "imputed_emb", "imputed_txt"]
    assert written.column("imputed_txt").to_pylist() == [i == 4 for i in range(N)]


def test_read_table_and_write_table_are_public():
    import ul4m4_gpu

    assert ul4m4_gpu.read_table is read_table and ul4m4_gpu.write_table is write_table
    assert {"read_table", "write_table"} <= set(ul4m4_gpu.__all__)


def _write(path, table: pa.Table):
    pq.write_table(table, path)
    return path


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def _zip(path, members: dict):
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return path


def crafted_npz(path, shape, compression=zipfile.ZIP_STORED, data_bytes: int = 700):
    """A small ``.npz`` whose one member ``x.npy`` has a valid float32 header claiming
    ``shape`` but only ``data_bytes`` bytes of data (the outside fuzz run's 900-byte file
    claimed (10**12,): 3.6 TiB)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w", compression) as archive:
        archive.writestr("x.npy", header.getvalue() + bytes(data_bytes))
    return path


def snapshot(folder) -> dict:
    """{relative path: bytes} of every file under ``folder``."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def _bytes(path, content: bytes):
    path.write_bytes(content)
    return path


def _two_part_dir(folder):
    folder.mkdir()
    pq.write_table(pa.table({"x": pa.array([[1.0]])}), folder / "a.parquet")
    pq.write_table(pa.table({"x": pa.array([[1.0]]), "y": pa.array([1])}), folder / "b.parquet")
    return folder


def _hive(folder, files: dict):
    """A directory holding ``{relative path: table}`` as Parquet files, subdirectories made."""
    for name, table in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, folder / name)
    return folder


ONES = np.ones((N, 2))
PARTLY_NAN = np.where(np.eye(N, 2, dtype=bool), np.nan, 1.0)

BAD_INPUTS = {
    "missing file": (lambda d: d / "nope.npz", "no such file"),
    "unknown suffix": (lambda d: _bytes(d / "data.csv", b"a,b\n1,2\n"), "unknown format '.csv'"),
    "corrupt npz": (lambda d: _bytes(d / "junk.npz", os.urandom(64)), "not an .npz"),
    "truncated npz": (lambda d: _bytes(d / "cut.npz", _npz(d / "ok.npz", x=ONES).read_bytes()[:99]),
                      "not an .npz"),
    "bad npz member": (lambda d: _zip(d / "member.npz", {"x.npy": b"garbage", "y.npy": b""}),
                       "member 'x' is not a NumPy .npy array"),
    "no 2-D array": (lambda d: _npz(d / "flat.npz", ids=np.arange(N)), "no 2-D numeric array"),
    "object array": (lambda d: _npz(d / "obj.npz", x=ONES, meta=np.array([{}], dtype=object)),
                     "array 'meta'"),
    "mask shape": (lambda d: _npz(d / "m.npz", x=ONES, mask=np.ones((N, 3), bool)),
                   "mask has shape"),
    "mask rows": (lambda d: _npz(d / "r.npz", x=ONES, mask=np.ones((N + 1, 1), bool)),
                  "mask has shape"),
    "modality rows": (lambda d: _npz(d / "rows.npz", x=ONES, y=np.ones((N + 1, 2))),
                      "different numbers of rows"),
    "NaN observed": (lambda d: _npz(d / "nan.npz", x=ONES, img=PARTLY_NAN,
                                    mask=np.ones((N, 2), bool)), "modality 'img'"),
    "partly NaN row": (lambda d: _npz(d / "part.npz", img=PARTLY_NAN), "partly NaN"),
    "bad modalities": (lambda d: _npz(d / "sel.npz", x=ONES, modalities=np.array(["y"])),
                       "lists 'y'"),
    "header claims 3.6 TiB": (lambda d: crafted_npz(d / "huge.npz", (10**12,)),
                              "its header claims shape (1000000000000,) of float32 (3.6 TiB), "
                              "but the file (936 bytes) can hold at most 828 bytes for it"),
    "deflated header claims 3.6 TiB": (
        lambda d: crafted_npz(d / "zipped.npz", (10**12,), zipfile.ZIP_DEFLATED),
        "(3.6 TiB), but the file (185 bytes) can hold at most 77.6 KiB for it"),
    "header claims more than the member": (
        lambda d: crafted_npz(d / "short.npz", (10, 20), zipfile.ZIP_DEFLATED),
        "claims shape (10, 20) of float32 (800 bytes), but the member holds 700 bytes of data"),
    "corrupt parquet": (lambda d: _bytes(d / "junk.parquet", os.urandom(64)), "magic bytes"),
    "no list column": (lambda d: _write(d / "flat.parquet", pa.table({"a": [1, 2]})),
                       "no column of lists of numbers"),
    "ragged lists": (lambda d: _write(d / "rag.parquet", pa.table({"a": [[1.0], [1.0, 2.0]]})),
                     "same non-zero length"),
    "empty directory": (lambda d: (d / "empty").mkdir() or d / "empty", "no .parquet files"),
    "schema mismatch": (lambda d: _two_part_dir(d / "parts"),
                        "b.parquet: its schema (x: list<element: double>, y: int64) differs "
                        "from that of a.parquet (x: list<element: double>)"),
    "unreadable part": (lambda d: _bytes(_two_part_dir(d / "parts") / "b.parquet",
                                         b"junk").parent, "parts: b.parquet: Could not open"),
    "flag name taken": (lambda d: _write(d / "taken.parquet", pa.table({
        "x": [[1.0]], "imputed_x": [1]})), "column 'imputed_x' holds int64, but the output "
                                           "writes the bool imputed flags of modality 'x'"),
    "partition key is a column": (lambda d: _hive(d / "hive", {"id=3/a.parquet": pa.table(
        {"x": [[1.0]], "id": [1]})}), "partition keys ['id'] are also columns of the files"),
    "hive files of different schemas": (lambda d: _hive(d / "hive", {
        "k=1/a.parquet": pa.table({"x": [[1.0]]}), "k=2/a.parquet": pa.table({"x": [[1]]})}),
        "k=2/a.parquet: its schema (x: list<element: int64>) differs from that of "
        "k=1/a.parquet"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_raises_one_line_error_naming_the_file(tmp_path, case):
    make, expected = BAD_INPUTS[case]
    path = make(tmp_path)
    with pytest.raises(InputFileError) as info:
        read_table(path)
    message = str(info.value)
    assert "\n" not in message
    assert path.name in message and expected in message
    assert isinstance(info.value, ValueError)


def test_output_suffix_must_match_input(tmp_path):
    table = read_table(_npz(tmp_path / "in.npz", x=ONES))
    with pytest.raises(OutputFileError, match="must be a .npz file"):
        write_table(table, _complete(table.data), tmp_path / "out.parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npz"]


def test_failed_npz_write_leaves_no_file(tmp_path, monkeypatch):
    table = read_table(_npz(tmp_path / "in.npz", x=ONES, ids=np.arange(N)))
    out = tmp_path / "out.npz"
    out.write_bytes(b"previous")

    def write_then_fail(member, array, **kwargs):
        member.write(b"partial bytes")
        raise OSError("disk full")

    monkeypatch.setattr(np.lib.format, "write_array", write_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_table(table, _complete(table.data), out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npz", "out.npz"]
    assert out.read_bytes() == b"previous"


def test_failed_parquet_write_leaves_no_file(tmp_path, monkeypatch):
    table = read_table(_write(tmp_path / "in.parquet", _parquet_input()))

    def write_then_fail(data, where, **kwargs):
        with open(where, "wb") as f:
            f.write(b"PAR1 partial")
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", write_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_table(table, _complete(table.data), tmp_path / "out.parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet"]


def test_an_array_too_large_for_memory_is_a_value_error(tmp_path, monkeypatch):
    path = _npz(tmp_path / "big.npz", x=np.ones((4, 3)))

    def out_of_memory(*args, **kwargs):  # what NumPy raises for a real, too large array
        raise MemoryError("Unable to allocate 3.64 TiB")

    monkeypatch.setattr(np.lib.format, "read_array", out_of_memory)
    with pytest.raises(ValueError, match=r"array 'x' of shape \(4, 3\) and dtype float64 "
                                         r"\(96 bytes\) does not fit in memory"):
        load_npz_arrays(path)


def test_list_bool_and_string_columns_are_passthrough_in_every_reader(tmp_path):
    table = pa.table({"img": pa.array([[1.0, 2.0], None, [0.5, 1.5]]),
                      "flags": pa.array([[True], [False], [True]]),
                      "tags": pa.array([["a"], [], None])})
    assert MultiModalArray.from_arrow(table).names == ("img",)
    assert MultiModalArray.from_dataframe(table.to_pandas()).names == ("img",)
    read = read_table(_write(tmp_path / "t.parquet", table))
    assert read.data.names == ("img",)
    assert read.passthrough.column_names == ["flags", "tags"]
    with pytest.raises(TypeError, match="modality column 'flags' holds bool, expected numbers"):
        MultiModalArray.from_arrow(table, columns=["img", "flags"])  # named: refused


def test_outputs_are_written_under_a_recognisable_temporary_name(tmp_path):
    seen = []
    atomic_write(tmp_path / "out.npz", lambda tmp: (seen.append(tmp.name),
                                                     tmp.write_bytes(b"done")))
    assert re.fullmatch(r"out\.npz\.ul4m4-partial-[0-9a-f]{8}\.tmp", seen[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.npz"]


def read_only_directory(tmp_path):
    """A directory this process cannot create files in: ``tmp_path/ro`` made read-only,
    or, for root (whom permissions do not stop), ``/sys``; skips when there is none."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    for candidate in (folder, Path("/sys")):
        probe = candidate / "probe.tmp"
        try:
            probe.touch()
        except OSError:
            return candidate
        probe.unlink()
    pytest.skip("no read-only directory to write to")


def test_an_unwritable_directory_is_named_not_the_temporary_file(tmp_path):
    folder = read_only_directory(tmp_path)
    out = folder / "out.npz"
    with pytest.raises(OutputFileError, match=rf"^cannot write {out}: (Permission denied|"
                                              rf".*is not writable)$"):
        atomic_write(out, lambda tmp: tmp.write_bytes(b"never"))
    table = read_table(_npz(tmp_path / "in.npz", x=ONES))
    with pytest.raises(OutputFileError) as info:
        write_table(table, _complete(table.data), out)
    assert str(out) in str(info.value) and "ul4m4-partial" not in str(info.value)
