"""The quickstart notebook: committed without outputs, and it runs top to bottom.

The run injects small settings after the notebook's ``parameters`` cell (papermill's
convention) so it takes seconds; it needs ``nbclient``, ``ipykernel`` and ``matplotlib``
(the ``test`` extra) and skips cleanly without them. The ``python3`` kernelspec ships in
ipykernel's package data (``sys.prefix/share/jupyter/kernels/python3``), and jupyter_client
also falls back to ipykernel's bundled spec, so no ``ipykernel install`` step is needed;
``"python"`` in the spec's argv is replaced by ``sys.executable``, so the kernel runs in
the interpreter running the tests.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"
STRIP_TOOL = ROOT / "tools" / "strip_notebook.py"
KERNEL = "python3"

# A smoke run: tiny K, two epochs, on the CPU whatever the machine has.
SMALL_SETTINGS = {"N_CLUSTERS": 6, "EPOCHS": 2, "SEED": 0, "DEVICE": "cpu", "QUICK": True}


def _read():
    return nbformat.read(NOTEBOOK, as_version=4)


def _parameter_cells(nb):
    return [i for i, cell in enumerate(nb.cells)
            if "parameters" in cell.get("metadata", {}).get("tags", [])]


def test_committed_notebook_has_no_outputs():
    nb = _read()
    nbformat.validate(nb)
    dirty = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
             and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty, (f"cells {dirty} of {NOTEBOOK.name} hold outputs or execution counts; "
                       f"run: python tools/strip_notebook.py notebooks/{NOTEBOOK.name}")
    assert "widgets" not in nb.metadata
    assert nb.metadata.kernelspec.name == KERNEL


def test_one_parameters_cell_defines_the_injected_settings():
    nb = _read()
    cells = _parameter_cells(nb)
    assert len(cells) == 1, f"expected one cell tagged 'parameters', found {len(cells)}"
    first_code = next(i for i, cell in enumerate(nb.cells) if cell.cell_type == "code")
    assert cells[0] == first_code, "the parameters cell must be the first code cell"
    source = nb.cells[cells[0]].source
    for name in SMALL_SETTINGS:
        assert f"\n{name} = " in f"\n{source}", f"the parameters cell does not set {name}"


def _kernel_or_skip():
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("matplotlib")
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(KERNEL)
    except NoSuchKernel:
        pytest.skip(f"no Jupyter kernelspec {KERNEL!r}; `python -m ipykernel install --user` "
                    "provides one")


def _stream_text(cell) -> str:
    return "".join(out.get("text", "") for out in cell.get("outputs", [])
                   if out.output_type == "stream" and out.name == "stdout")


def test_quickstart_runs_with_small_settings(tmp_path):
    _kernel_or_skip()
    from nbclient import NotebookClient

    nb = _read()
    (at,) = _parameter_cells(nb)
    injected = "\n".join(f"{name} = {value!r}" for name, value in SMALL_SETTINGS.items())
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell(
        f"# injected by tests/test_notebooks.py\n{injected}",
        metadata={"tags": ["injected-parameters"]}))
    client = NotebookClient(nb, kernel_name=KERNEL, timeout=120,
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, with the traceback, if any cell fails

    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    errors = [out for cell in code for out in cell.outputs if out.output_type == "error"]
    assert not errors
    images = [out for cell in code for out in cell.outputs if "image/png" in out.get("data", {})]
    assert len(images) >= 2, "expected the cluster and PCA figures"

    table = _stream_text(code[-1])
    header, *rows = [line for line in table.splitlines() if line.strip()]
    assert "RMSE (test, normalised)" in header and "F1-macro" in header, table
    by_method = {line.split("  ")[0].strip(): line for line in rows if "  " in line}
    assert set(by_method) >= {"UL4M4 (K=6)", "mean fill"}, table
    for method in ("UL4M4 (K=6)", "mean fill"):
        values = [float(v) for v in by_method[method][len(method):].split()]
        assert len(values) == 5 and all(v == v for v in values), table  # 5 finite numbers
        assert 0.0 <= min(values[1:4]) and max(values[1:4]) <= 1.0, table  # F1s, accuracy

    # the strip tool turns the executed notebook back into an output-free one
    spec = importlib.util.spec_from_file_location("strip_notebook", STRIP_TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.strip(nb)
    assert not any(cell.outputs or cell.execution_count is not None for cell in code)
    assert not tool.strip(nb)
