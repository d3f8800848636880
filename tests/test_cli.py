"""The ``ul4m4`` command line, run as a user runs it (a subprocess on the installed entry
point) for the contract cases, and in-process for the rest."""

import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from test_io import crafted_npz, read_only_directory, snapshot
from ul4m4_gpu import UL4M4Imputer
from ul4m4_gpu.cli.commands import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "ul4m4_gpu.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def npz_input(tmp_path):
    rng = np.random.default_rng(0)
    n = 120
    img = rng.normal(size=(n, 5))
    txt = rng.normal(size=(n, 3))
    txt[rng.random(n) < 0.4] = np.nan
    path = tmp_path / "in.npz"
    np.savez(path, img=img, txt=txt, ids=np.arange(n) * 7, label=rng.integers(0, 3, n))
    return path, img, txt


def test_demo_prints_the_table():
    result = run_cli("demo", "--k", "8", "--quiet")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for row in ("UL4M4 (K=8)", "mean fill", "KNNImputer", "complete data"):
        assert row in out
    assert "% of modality slots missing" in out
    missing = float(out.split("(")[1].split("%")[0])
    assert missing > 50.0


@pytest.mark.parametrize("command", ["demo", "fit", "impute"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "--device" in capsys.readouterr().out


def test_fit_then_impute_with_model(tmp_path, npz_input):
    path, img, txt = npz_input
    model, out = tmp_path / "model.npz", tmp_path / "out.npz"
    assert main(["fit", str(path), "-o", str(model), "--k", "4"]) == 0
    assert UL4M4Imputer.load(model).n_clusters == 4
    assert main(["impute", str(path), "-o", str(out), "--model", str(model)]) == 0
    with np.load(out) as result:
        assert np.isfinite(result["txt"]).all()
        np.testing.assert_array_equal(result["img"], img.astype(np.float32))
        np.testing.assert_array_equal(result["ids"], np.arange(120) * 7)
        observed = ~np.isnan(txt).any(axis=1)
        np.testing.assert_array_equal(result["txt"][observed], txt[observed].astype(np.float32))
        np.testing.assert_array_equal(result["imputed"][:, 1], ~observed)


def test_impute_parquet_without_model_fits_first(tmp_path):
    rng = np.random.default_rng(1)
    n = 60
    img = [list(map(float, r)) for r in rng.normal(size=(n, 4))]
    txt = [None if i % 3 == 0 else list(map(float, r)) for i, r in enumerate(rng.normal(size=(n, 2)))]
    table = pa.table({"id": pa.array([f"s{i}" for i in range(n)]), "img": img, "txt": txt})
    pq.write_table(table, tmp_path / "in.parquet")
    assert main(["impute", str(tmp_path / "in.parquet"), "-o", str(tmp_path / "out.parquet"),
                 "--k", "3"]) == 0
    out = pq.read_table(tmp_path / "out.parquet")
    assert out.column("id").to_pylist() == [f"s{i}" for i in range(n)]
    assert out.column("txt").null_count == 0
    assert out.column("img").to_pylist() == pa.array(img, pa.list_(pa.float32())).to_pylist()


@pytest.mark.parametrize("content", [b"garbage", b""])
def test_impute_bad_file_one_line_error_and_no_output(tmp_path, content):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(content)
    out = tmp_path / "out.npz"
    result = run_cli("impute", bad, "-o", out)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ul4m4: error:") and "bad.npz" in lines[0]
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [bad]


def test_impute_missing_file_and_bad_model(tmp_path, npz_input, capsys):
    path, _, _ = npz_input
    out = tmp_path / "out.npz"
    assert main(["impute", str(tmp_path / "nope.npz"), "-o", str(out)]) == 1
    assert main(["impute", str(path), "-o", str(out), "--model", str(path)]) == 1
    assert main(["impute", str(path), "-o", str(out), "--model", str(tmp_path / "no.npz")]) == 1
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(e.startswith("ul4m4: error:") for e in errors)
    assert "nope.npz" in errors[0]
    assert "UL4M4Imputer model from" in errors[1] and "in.npz: it is not a ul4m4 model" in errors[1]
    assert errors[2].endswith("no.npz: no such file")
    assert not out.exists()


def test_fit_with_too_many_clusters_fails_cleanly(tmp_path, npz_input, capsys):
    path, _, _ = npz_input
    model = tmp_path / "model.npz"
    assert main(["fit", str(path), "-o", str(model), "--k", "500"]) == 1
    assert "n_clusters=500" in capsys.readouterr().err
    assert not model.exists()


def one_error_line(capsys) -> str:
    """The single ``ul4m4: error:`` line the last failed command printed."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ul4m4: error:"), lines
    return lines[0]


def test_bad_model_files_give_one_line_naming_them(tmp_path, npz_input, capsys):
    path, _, _ = npz_input
    model, out = tmp_path / "model.npz", tmp_path / "out.npz"
    assert main(["fit", str(path), "-o", str(model), "--k", "3"]) == 0
    capsys.readouterr()
    empty, truncated = tmp_path / "empty.npz", tmp_path / "truncated.npz"
    empty.write_bytes(b"")
    truncated.write_bytes(model.read_bytes()[:300])
    for bad in (empty, truncated):
        assert main(["impute", str(path), "-o", str(out), "--model", str(bad)]) == 1
        assert str(bad) in one_error_line(capsys)
    assert not out.exists()


def test_output_is_checked_before_reading_and_fitting(tmp_path, capsys):
    absent = tmp_path / "absent.npz"  # the output error comes first: nothing was read
    cases = [
        (["fit", absent, "-o", tmp_path / "nodir" / "m.npz"], "directory"),
        (["fit", absent, "-o", tmp_path], "is a directory"),
        (["impute", absent, "-o", tmp_path / "out.parquet"], "must be a .npz file"),
        (["impute", absent, "-o", tmp_path / "nodir" / "out.npz", "--workers", "2"],
         "does not exist"),
    ]
    for args, message in cases:
        assert main([str(a) for a in args]) == 1
        line = one_error_line(capsys)
        assert message in line and "cannot read" not in line and ".tmp" not in line
    assert list(tmp_path.iterdir()) == []


def test_int_options_and_model_options_are_checked(tmp_path, npz_input, capsys):
    path, _, _ = npz_input
    out = tmp_path / "out.npz"
    for args, message in (
            (["fit", path, "-o", tmp_path / "m.npz", "--seed", "-1"], "--seed must be >= 0, got -1"),
            (["fit", path, "-o", tmp_path / "m.npz", "--k", "0"], "--k must be >= 1, got 0"),
            (["fit", path, "-o", tmp_path / "m.npz", "--max-iter", "0"], "--max-iter must be >= 1"),
            (["impute", path, "-o", out, "--model", path, "--k", "5"], "do not apply with --model"),
            (["bench-quality", "--out", path, "--quick"], "it is a file"),
            (["bench-quality", "--out", tmp_path / "q", "--seeds", "0"], "--seeds must be >= 1"),
            (["bench-quality", "--out", tmp_path / "q", "--k", "8", "0"], "--k must be >= 1, got 0")):
        assert main([str(a) for a in args]) == 1
        assert message in one_error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npz"]


def test_impute_with_a_model_accepts_a_modality_missing_in_every_row(tmp_path, capsys):
    rng = np.random.default_rng(2)
    n = 40
    img = [list(map(float, r)) for r in rng.normal(size=(n, 4))]
    txt = [None if i % 4 == 0 else list(map(float, r)) for i, r in enumerate(rng.normal(size=(n, 2)))]
    pq.write_table(pa.table({"img": img, "txt": txt}), tmp_path / "train.parquet")
    model = tmp_path / "model.npz"
    assert main(["fit", str(tmp_path / "train.parquet"), "-o", str(model), "--k", "3"]) == 0
    new = pa.table({"img": img[:2], "txt": pa.array([None, None], pa.list_(pa.float64()))})
    pq.write_table(new, tmp_path / "new.parquet")
    out = tmp_path / "out.parquet"
    assert main(["impute", str(tmp_path / "new.parquet"), "-o", str(out), "--model", str(model)]) == 0
    completed = pq.read_table(out)
    assert completed.column("txt").null_count == 0
    assert [len(cell) for cell in completed.column("txt").to_pylist()] == [2, 2]
    pq.write_table(new.slice(0, 0), tmp_path / "empty.parquet")
    assert main(["impute", str(tmp_path / "empty.parquet"), "-o", str(tmp_path / "o2.parquet"),
                 "--model", str(model)]) == 1
    assert "0 rows" in one_error_line(capsys)


def test_streamed_fit_errors_are_one_line_with_global_rows(tmp_path, capsys):
    rng = np.random.default_rng(3)
    img = rng.normal(size=(30, 3))
    img[23, 1] = np.inf
    pq.write_table(pa.table({"img": [list(map(float, r)) for r in img],
                             "txt": [list(map(float, r)) for r in rng.normal(size=(30, 2))]}),
                   tmp_path / "inf.parquet", row_group_size=10)
    assert main(["fit", str(tmp_path / "inf.parquet"), "-o", str(tmp_path / "m.npz"), "--k", "2",
                 "--stream", "--batch-rows", "10"]) == 1
    assert "modality 'img': rows [23] (1 in all) have NaN or inf" in one_error_line(capsys)
    table = pa.table({"a": [[1.0, 2.0]] * 5})
    dup = pa.Table.from_arrays([table.column("a"), table.column("a")], names=["a", "a"])
    pq.write_table(dup, tmp_path / "dup.parquet")
    assert main(["fit", str(tmp_path / "dup.parquet"), "-o", str(tmp_path / "m.npz"), "--k", "2",
                 "--stream"]) == 1
    assert "column names ['a'] appear more than once" in one_error_line(capsys)


@pytest.fixture
def user_files(tmp_path, npz_input):
    """An npz input, a model fitted on it, a Parquet file and a Parquet directory, plus a
    symbolic and a hard link to the input."""
    path, img, txt = npz_input
    assert main(["fit", str(path), "-o", str(tmp_path / "model.npz"), "--k", "2"]) == 0
    table = pa.table({"img": [list(map(float, r)) for r in img],
                      "txt": [None if np.isnan(r).any() else list(map(float, r)) for r in txt]})
    pq.write_table(table, tmp_path / "in.parquet")
    (tmp_path / "parts").mkdir()
    pq.write_table(table.slice(0, 60), tmp_path / "parts" / "a.parquet")
    pq.write_table(table.slice(60), tmp_path / "parts" / "b.parquet")
    (tmp_path / "link.npz").symlink_to(path)
    os.link(path, tmp_path / "hard.npz")
    return tmp_path


SAME_PATH_CASES = [
    (["fit", "in.npz", "-o", "in.npz", "--k", "2"], "it is the INPUT in.npz"),
    (["fit", "in.npz", "-o", "./../{d}/in.npz"], "it is the INPUT"),
    (["fit", "in.parquet", "-o", "in.parquet", "--stream"], "it is the INPUT"),
    (["fit", "in.parquet", "-o", "in.parquet", "--workers", "2"], "it is the INPUT"),
    (["fit", "parts", "-o", "parts/a.parquet"], "it is inside the INPUT directory parts"),
    (["impute", "in.npz", "-o", "in.npz"], "it is the INPUT"),
    (["impute", "in.npz", "-o", "link.npz"], "it is the INPUT in.npz"),
    (["impute", "in.npz", "-o", "hard.npz"], "it is the INPUT in.npz"),
    (["impute", "in.npz", "-o", "model.npz", "--model", "model.npz"], "it is the --model"),
    (["impute", "in.npz", "-o", "model.npz", "--model", "model.npz", "--workers", "2"],
     "it is the --model"),
    (["impute", "in.parquet", "-o", "in.parquet", "--stream"], "it is the INPUT"),
    (["impute", "in.parquet", "-o", "in.parquet", "--workers", "2"], "it is the INPUT"),
    (["impute", "parts", "-o", "parts/c.parquet", "--stream"], "inside the INPUT directory"),
]


@pytest.mark.parametrize("args, message", SAME_PATH_CASES)
def test_an_output_that_is_an_input_is_refused_and_nothing_is_touched(user_files, capsys,
                                                                     monkeypatch, args,
                                                                     message):
    monkeypatch.chdir(user_files)
    capsys.readouterr()
    before = snapshot(user_files)
    assert main([a.format(d=user_files.name) for a in args]) == 1
    line = one_error_line(capsys)
    assert message in line and "choose another output path" in line
    assert snapshot(user_files) == before


def test_crafted_npy_header_is_one_line_as_input_and_as_model(tmp_path, npz_input, capsys):
    path, _, _ = npz_input
    huge = crafted_npz(tmp_path / "huge.npz", (10**12,))
    out = tmp_path / "out.npz"
    for args in (["impute", huge, "-o", out], ["impute", path, "-o", out, "--model", huge]):
        assert main([str(a) for a in args]) == 1
        line = one_error_line(capsys)
        assert "huge.npz" in line and "header claims shape (1000000000000,)" in line
    assert not out.exists()


def test_an_unwritable_output_directory_is_named(tmp_path, npz_input, capsys):
    path, _, _ = npz_input
    folder = read_only_directory(tmp_path)
    for command in (["fit", str(path), "--k", "2"], ["impute", str(path)]):
        assert main([*command, "-o", str(folder / "out.npz")]) == 1
        line = one_error_line(capsys)
        assert f"cannot write {folder / 'out.npz'}" in line and "partial" not in line
    assert not (folder / "out.npz").exists()
