"""The ``ul4m4`` command line, run as a user runs it (a subprocess on the installed entry
point) for the contract cases, and in-process for the rest."""

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ul4m4_gpu import UL4M4Imputer
from ul4m4_gpu.cli import main


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
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and all(e.startswith("ul4m4: error:") for e in errors)
    assert "nope.npz" in errors[0] and "UL4M4Imputer model" in errors[1]
    assert not out.exists()


def test_fit_with_too_many_clusters_fails_cleanly(tmp_path, npz_input, capsys):
    path, _, _ = npz_input
    model = tmp_path / "model.npz"
    assert main(["fit", str(path), "-o", str(model), "--k", "500"]) == 1
    assert "n_clusters=500" in capsys.readouterr().err
    assert not model.exists()
