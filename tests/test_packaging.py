"""Packaging stays in step: environment.yml names every core dependency of pyproject.toml,
and the README's first two commands are the ones CI runs."""

import re
import warnings
from pathlib import Path

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


def test_readme_dask_example_runs(tmp_path):
    pytest.importorskip("distributed")
    import subprocess
    import sys

    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    (example,) = [b for b in blocks if "DaskUL4M4Imputer" in b]
    script = tmp_path / "example.py"
    script.write_text(example + "        assert completed.mask.all() and local.n_clusters == 32\n")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]


def test_readme_scikit_learn_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    (example,) = [b for b in blocks if "GridSearchCV" in b]
    namespace = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile(example, "README.md", "exec"), namespace)
    assert namespace["scores"].min() > 0.8
    assert namespace["search"].best_params_["impute__n_clusters"] in (8, 16)


def test_readme_python_api_example_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    (example,) = [b for b in blocks if "UL4M4Imputer.load" in b]
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(example, "README.md", "exec"), namespace)
    assert namespace["completed"].mask.all()
    assert namespace["tensor"].data_ptr() == namespace["completed"].values.ctypes.data
    assert (tmp_path / "model.npz").exists()
