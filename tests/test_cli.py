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
            (["fit", path, "-o", tmp_path / "m.npz", "--n-init", "0"], "--n-init must be >= 1, got 0"),
            (["fit", path, "-o", tmp_path / "m.npz", "--batch-size", "0"],
             "--batch-size must be >= 1, got 0"),
            (["fit", path, "-o", tmp_path / "m.npz", "--tol", "-1"],
             "--tol must be a float >= 0, got -1.0"),
            (["impute", path, "-o", out, "--tol", "nan"], "--tol must be a float >= 0, got nan"),
            (["impute", path, "-o", out, "--model", path, "--k", "5"],
             "--k: options of a fit on INPUT; they do not apply with --model"),
            (["impute", path, "-o", out, "--model", path, "--max-iter", "5", "--n-init", "2",
              "--tol", "0.1"], "--max-iter, --n-init, --tol: options of a fit on INPUT"),
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
    (tmp_path / "parts" / "year=2024").mkdir()  # a hive partition, empty so far
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
    (["impute", "parts", "-o", "parts/year=2024/c.parquet"], "inside the INPUT directory"),
    (["fit", "parts", "-o", "parts/year=2024/../a.parquet", "--workers", "2"],
     "inside the INPUT directory"),
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


def test_version_is_the_installed_distributions(monkeypatch):
    """``ul4m4 --version`` prints ``ul4m4_gpu.__version__``, read from the installed
    distribution's metadata (pyproject.toml's version); a never-installed source tree says
    0+unknown rather than a second copy of the number."""
    from importlib.metadata import PackageNotFoundError, version

    import ul4m4_gpu
    from ul4m4_gpu.core import version as version_module

    result = run_cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"ul4m4 {ul4m4_gpu.__version__}\n"
    assert ul4m4_gpu.__version__ == version("ul4m4-gpu")

    def not_installed(name):
        raise PackageNotFoundError(name)

    monkeypatch.setattr(version_module, "version", not_installed)
    assert version_module.installed_version() == "0+unknown"


class Stderr:
    """A stand-in for sys.stderr that says whether it is a terminal (``tty``), as tqdm and
    :func:`~ul4m4_gpu.cli.common.progress_enabled` see it."""

    def __init__(self, tty=True):
        self.text, self.tty = "", tty

    def write(self, text):
        self.text += text
        return len(text)

    def flush(self):
        pass

    def isatty(self):
        return self.tty


@pytest.mark.parametrize("command", ["fit", "impute"])
def test_quiet_silences_the_progress_bars_not_the_summary(tmp_path, npz_input, monkeypatch,
                                                         capsys, command):
    path, _, _ = npz_input
    bars = {}
    for extra in ([], ["--quiet"]):
        terminal = Stderr()
        monkeypatch.setattr(sys, "stderr", terminal)
        out = tmp_path / f"out{len(extra)}.npz"
        assert main([command, str(path), "-o", str(out), "--k", "3", *extra]) == 0
        bars[bool(extra)] = terminal.text
        summary = capsys.readouterr().out
        assert summary.startswith("fitted K=3" if command == "fit" else "filled ")
    assert "k-means run 1/1" in bars[False]
    assert bars[True] == ""


@pytest.mark.parametrize("command, module, function", [
    ("demo", "ul4m4_gpu.evaluation.demo", "run_demo"),
    ("bench-quality", "ul4m4_gpu.evaluation.harness", "evaluate"),
])
def test_demo_and_bench_quality_take_quiet(tmp_path, monkeypatch, capsys, command, module,
                                           function):
    """Both draw bars only when stderr is a terminal and never with --quiet (demo drew its
    bar whatever stderr was)."""
    import importlib

    seen = []

    def record(*args, progress, **kwargs):
        seen.append(progress)
        raise RuntimeError("recorded")

    monkeypatch.setattr(importlib.import_module(module), function, record)
    arguments = [command] + (["--out", str(tmp_path / "q"), "--quick"]
                             if command == "bench-quality" else [])
    for terminal, extra in ((False, []), (True, []), (True, ["--quiet"])):
        monkeypatch.setattr(sys, "stderr", Stderr(tty=terminal))
        assert main([*arguments, *extra]) == 1
    assert seen == [False, True, False]


FIT_OPTION_VALUES = {"max_iter": 2, "n_init": 3, "tol": 0.25, "batch_size": 7}
FIT_ARGS = ["--max-iter", "2", "--n-init", "3", "--tol", "0.25", "--batch-size", "7"]
MODES = {"memory": [], "stream": ["--stream", "--batch-rows", "40"], "workers": ["--workers", "1"]}


@pytest.fixture(scope="module")
def parquet_input(tmp_path_factory):
    from synthetic import make_data
    from test_streaming import write_dataset

    x, mask = make_data(n=200)
    return write_dataset(tmp_path_factory.mktemp("options") / "ds", x, mask, [(0, 120), (120, 200)])


def fit_params(params) -> dict:
    return {name: params[name] for name in FIT_OPTION_VALUES}


@pytest.mark.parametrize("mode", MODES)
def test_fit_options_reach_the_saved_model(parquet_input, tmp_path, mode):
    model = tmp_path / "model.npz"
    assert fit_params(UL4M4Imputer().get_params()) != FIT_OPTION_VALUES
    assert main(["fit", str(parquet_input), "-o", str(model), "--k", "4", *FIT_ARGS,
                 *MODES[mode]]) == 0
    fitted = UL4M4Imputer.load(model)
    assert fit_params(fitted.get_params()) == FIT_OPTION_VALUES
    assert 1 <= fitted.n_iter_ <= 2


@pytest.mark.parametrize("mode", MODES)
def test_impute_fit_options_reach_the_fit(parquet_input, tmp_path, monkeypatch, mode):
    """Without --model, impute fits with them (the estimator FitParams.of reads, in every
    mode); with --model, --batch-size overrides the model's."""
    from ul4m4_gpu.cli.commands import build_parser
    from ul4m4_gpu.cli.common import load_model
    from ul4m4_gpu.core.fit import FitParams

    seen, of = [], FitParams.of
    monkeypatch.setattr(FitParams, "of", lambda estimator, **sizes: (
        seen.append(estimator.get_params()), of(estimator, **sizes))[1])
    out = tmp_path / "out.parquet"
    assert main(["impute", str(parquet_input), "-o", str(out), "--k", "4", *FIT_ARGS,
                 *MODES[mode]]) == 0
    assert [fit_params(params) for params in seen] == [FIT_OPTION_VALUES]
    assert pq.read_table(out).column("img").null_count == 0

    model = tmp_path / "model.npz"
    assert main(["fit", str(parquet_input), "-o", str(model), "--k", "4"]) == 0
    args = build_parser().parse_args(["impute", str(parquet_input), "-o", str(out),
                                      "--model", str(model), "--batch-size", "9"])
    assert load_model(args).batch_size == 9
