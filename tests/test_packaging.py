"""Packaging stays in step: environment.yml names every core dependency of pyproject.toml,
CI runs the README's quick start in a new environment, and the test extra stays small. The
README's code blocks themselves run in tests/test_readme.py."""

import re
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


def test_ci_builds_a_new_environment_and_runs_the_readme_quick_start():
    """.ci/run makes a virtual environment of its own and runs the quick-start block taken
    from README.md (tools/readme_blocks.py), replacing only its CPU-torch line."""
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python3 -m venv" in ci and 'source "$work/venv/bin/activate"' in ci
    assert "python tools/readme_blocks.py quick-start" in ci
    assert 'tail -n +2 "$work/quick-start.sh"' in ci
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Quick start.*?```bash\n(.*?)```", readme, flags=re.S)[1].splitlines()
    assert block[0].startswith("pip install torch --index-url https://download.pytorch.org/whl/cpu")
    assert block[1:] == ['pip install -e ".[test]" && ul4m4 demo', "pytest"]


def test_the_test_extra_pulls_no_nvidia_wheels_and_ptx_adds_the_compiler():
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert not [spec for spec in extras["test"] if "[cu" in spec or "nvidia" in spec]
    assert any(spec.startswith("numba-cuda>=") for spec in extras["test"])
    assert any(spec.startswith("numba-cuda[cu12]") for spec in extras["ptx"])
