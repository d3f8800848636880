"""Packaging stays in step: environment.yml names every core dependency of pyproject.toml,
and the README's first two commands are the ones CI runs."""

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"torch": {"pytorch", "pytorch-gpu"}}


def core_dependencies():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [re.split(r"[<>=!~\[ ;]", spec, maxsplit=1)[0].lower() for spec in project["dependencies"]]


def test_environment_yml_names_every_core_dependency():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert {"rapidsai", "conda-forge", "nvidia"} <= set(env["channels"])
    conda = {re.split(r"[<>=! ]", d, maxsplit=1)[0].lower()
             for d in env["dependencies"] if isinstance(d, str)}
    missing = [dep for dep in core_dependencies() if not (CONDA_NAMES.get(dep, {dep}) & conda)]
    assert not missing, f"environment.yml lacks {missing}"
    assert {"cupy", "cudf", "cuml", "dask-cuda"} <= conda


def test_readme_starts_with_the_demo_and_test_commands_and_ci_runs_the_latter():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^pip install .*$", readme, flags=re.M)
    assert commands[:2] == ['pip install -e ".[test]" && ul4m4 demo',
                            'pip install -e ".[test]" && pytest']
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[1] in ci.splitlines()


def readme_example(*markers) -> str:
    """The one ```python block of README.md that contains every one of ``markers``."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    (example,) = [b for b in blocks if all(marker in b for marker in markers)]
    return example


def run_readme_example(*markers) -> dict:
    """Run that block here, its warnings silenced; returns its namespace."""
    namespace = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile(readme_example(*markers), "README.md", "exec"), namespace)
    return namespace


def test_readme_dask_example_runs(tmp_path):
    pytest.importorskip("distributed")
    import subprocess
    import sys

    example = readme_example("DaskUL4M4Imputer", "LocalCluster")
    script = tmp_path / "example.py"
    script.write_text(example + "        assert completed.mask.all() and local.n_clusters == 32\n")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]


def test_readme_dask_dataframe_example_runs():
    """The README's dask DataFrame of numeric columns: same columns back, every slot filled,
    the passthrough column and the observed values unchanged."""
    pytest.importorskip("distributed")
    namespace = run_readme_example("modalities=groups")
    wide, completed = namespace["wide"], namespace["completed"]
    assert list(completed.columns) == list(wide.columns)
    assert (completed["label"] == wide["label"]).all()
    values, filled = wide.drop(columns="label").to_numpy(), completed.drop(columns="label")
    assert not filled.isna().any().any()
    observed = ~np.isnan(values)
    np.testing.assert_array_equal(filled.to_numpy()[observed], values[observed])


def test_readme_read_table_example_runs(tmp_path, monkeypatch):
    """The README's ``read_table`` / ``write_table`` example, on a directory of two Parquet
    files (one in a hive partition): every row back, filled, with its imputed flags."""
    import pyarrow.parquet as pq

    from ul4m4_gpu import load_mfeat, simulate_missing, hide_modalities

    data, _ = load_mfeat(device="cpu")
    data = hide_modalities(data, simulate_missing(len(data), data.names, "missing_50",
                                                  random_state=0))
    table = data.to_arrow()
    (tmp_path / "data" / "part=1").mkdir(parents=True)
    pq.write_table(table.slice(0, 1200), tmp_path / "data" / "a.parquet")
    pq.write_table(table.slice(1200), tmp_path / "data" / "part=1" / "b.parquet")
    monkeypatch.chdir(tmp_path)
    run_readme_example("read_table")
    out = pq.read_table(tmp_path / "completed.parquet")
    assert out.num_rows == len(data)
    assert out.column_names == [*data.names, "part", *(f"imputed_{n}" for n in data.names)]
    for m, name in enumerate(data.names):
        np.testing.assert_array_equal(out.column(f"imputed_{name}").to_numpy(),
                                      ~data.mask[:, m])


def test_readme_scikit_learn_example_runs():
    namespace = run_readme_example("GridSearchCV")
    # a floor well above chance (0.1), not a promise: a fold's accuracy moves by a few of
    # its 667 rows with the round-off of the fit (random_state 0-3: folds from 0.78 to 0.83)
    assert namespace["scores"].min() > 0.75
    assert namespace["search"].best_params_["impute__n_clusters"] in (8, 16)


def test_readme_python_api_example_runs(tmp_path, monkeypatch):
    example = readme_example("UL4M4Imputer.load")
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(example, "README.md", "exec"), namespace)
    assert namespace["completed"].mask.all()
    assert namespace["tensor"].data_ptr() == namespace["completed"].values.ctypes.data
    assert (tmp_path / "model.npz").exists()
