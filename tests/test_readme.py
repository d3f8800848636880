"""Every code block of README.md runs verbatim, in order, in one temporary directory, as a
reader would paste it: a block that needs files gets them from an earlier block.

- ``python`` blocks run as scripts, each in a new interpreter, with ``UserWarning`` and
  ``RuntimeWarning`` as errors (a README example runs clean: no convergence warning, no
  NaN); a few get checks appended (``CHECKS``), after the verbatim code;
- ``bash`` blocks run under ``bash -euo pipefail`` with this interpreter's ``bin`` first on
  ``PATH`` (its ``ul4m4``);
- ``text`` blocks (output, synopses, the layout) are not code;
- blocks that install (``pip``/``conda``) set an environment up instead of using one: the
  quick start's is run by ``.ci/run`` in a new virtual environment
  (tests/test_packaging.py checks that), the conda one needs conda and a GPU.
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("readme_blocks", ROOT / "tools" / "readme_blocks.py")
readme_blocks = sys.modules["readme_blocks"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(readme_blocks)

BLOCKS = readme_blocks.readme_blocks()
RUNNABLE = [b for b in BLOCKS if b.language in ("python", "bash") and not b.installs]

#: Checks appended to the block containing the key, run in the block's own namespace.
CHECKS = {
    "UL4M4Imputer.load": "assert completed.mask.all()\n"
                         "assert tensor.data_ptr() == completed.values.ctypes.data\n",
    "GridSearchCV": "assert scores.min() > 0.75, scores\n"
                    "assert search.best_params_['impute__n_clusters'] in (8, 16)\n",
    "LocalCluster": "        assert completed.mask.all() and local.n_clusters == 32\n",
    "modalities=groups": (
        "import numpy as np\n"
        "assert list(completed.columns) == list(wide.columns)\n"
        "assert (completed['label'] == wide['label']).all()\n"
        "values, filled = wide.drop(columns='label').to_numpy(), completed.drop(columns='label')\n"
        "assert not filled.isna().any().any()\n"
        "observed = ~np.isnan(values)\n"
        "np.testing.assert_array_equal(filled.to_numpy()[observed], values[observed])\n"),
    "read_table": (
        "import numpy as np, pyarrow.parquet as pq\n"
        "out = pq.read_table('completed.parquet')\n"
        "names = table.data.names\n"
        "assert out.num_rows == len(table.data)\n"
        "assert out.column_names == [*names, *(f'imputed_{n}' for n in names)]\n"
        "for m, name in enumerate(names):\n"
        "    np.testing.assert_array_equal(out.column(f'imputed_{name}').to_numpy(),\n"
        "                                  ~table.data.mask[:, m])\n"),
}


def block_id(block) -> str:
    return f"line{block.line}-{block.language}"


def test_every_block_has_a_language_and_only_install_blocks_are_left_out():
    assert {b.language for b in BLOCKS} <= set(readme_blocks.LANGUAGES), \
        [(b.line, b.language) for b in BLOCKS if b.language not in readme_blocks.LANGUAGES]
    left_out = [b for b in BLOCKS if b.language != "text" and b not in RUNNABLE]
    assert [b.heading for b in left_out] == [
        "Quick start (a fresh Python 3.11 machine, no GPU needed)", "GPU (conda, RAPIDS)"]
    for key in CHECKS:
        assert sum(key in b.code for b in RUNNABLE if b.language == "python") == 1, key


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """The directory every block runs in, and the set of blocks run there so far."""
    return tmp_path_factory.mktemp("readme"), set()


def run_block(block, directory: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    if block.language == "bash":
        command = ["bash", "-euo", "pipefail", "-c", block.code]
    else:
        script = directory / f"readme_line{block.line}.py"
        checks = "".join(check for key, check in CHECKS.items() if key in block.code)
        script.write_text(block.code + checks)
        command = [sys.executable, "-W", "error::UserWarning", "-W", "error::RuntimeWarning",
                   str(script)]
    return subprocess.run(command, cwd=directory, env=env, capture_output=True, text=True,
                          timeout=600, check=False)


@pytest.mark.parametrize("index", range(len(RUNNABLE)),
                         ids=[block_id(b) for b in RUNNABLE])
def test_readme_block_runs_verbatim(index, workdir):
    directory, done = workdir
    for earlier in range(index + 1):
        if earlier in done:
            continue
        block = RUNNABLE[earlier]
        result = run_block(block, directory)
        assert result.returncode == 0, (f"README.md line {block.line} ({block.language}) "
                                        f"failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
        done.add(earlier)
