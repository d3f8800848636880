"""The package's progress bars (:mod:`ul4m4_gpu.core.progress`): tqdm.auto's where
ipywidgets can draw its widget, tqdm's text bar otherwise, so that Jupyter without ipywidgets
shows bars without tqdm's "IProgress not found" warning."""

import ast
import json
import subprocess
import sys
import types
import warnings
from pathlib import Path

import tqdm.std

import ul4m4_gpu
from ul4m4_gpu.core.progress import progress_class, tqdm as progress_bar

#: A Jupyter kernel as tqdm.autonotebook detects one, without ipywidgets; creates a bar of
#: ul4m4_gpu.core.progress, then imports tqdm.auto as the modules used to; prints the
#: warnings of each step and the bar's class.
KERNEL_WITHOUT_IPYWIDGETS = """
import json, sys, types, warnings
import ul4m4_gpu
assert "tqdm.auto" not in sys.modules
shell = type("ZMQInteractiveShell", (), {})
sys.modules["IPython"] = types.SimpleNamespace(get_ipython=shell)
sys.modules["ipykernel.zmqshell"] = types.ModuleType("ipykernel.zmqshell")
sys.modules["ipywidgets"] = None
from ul4m4_gpu.core.progress import tqdm
report = {}
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    with tqdm(total=2, file=sys.stdout, disable=True) as bar:
        report["class"] = f"{type(bar).__module__}.{type(bar).__qualname__}"
    report["ours"] = [str(w.message) for w in caught]
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import tqdm.auto
    report["tqdm.auto"] = [str(w.message) for w in caught]
print(json.dumps(report))
"""


def test_in_jupyter_without_ipywidgets_the_text_bar_is_used_without_a_warning():
    result = subprocess.run([sys.executable, "-c", KERNEL_WITHOUT_IPYWIDGETS],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["class"] == "tqdm.std.tqdm"
    assert report["ours"] == []
    # what the modules' former ``from tqdm.auto import tqdm`` did there
    assert any("IProgress not found" in message for message in report["tqdm.auto"])


def test_without_ipywidgets_a_bar_is_the_plain_class_and_warns_nothing(monkeypatch):
    monkeypatch.setitem(sys.modules, "ipywidgets", None)
    assert progress_class() is tqdm.std.tqdm
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with progress_bar(range(3), disable=True) as bar:
            assert type(bar) is tqdm.std.tqdm
            assert list(bar) == [0, 1, 2]
    assert caught == []


def test_with_ipywidgets_the_bars_are_tqdm_autos(monkeypatch):
    import tqdm.auto

    monkeypatch.setitem(sys.modules, "ipywidgets",
                        types.SimpleNamespace(FloatProgress=object, __spec__=None))
    assert progress_class() is tqdm.auto.tqdm


def test_the_package_draws_its_bars_only_through_core_progress():
    package = Path(ul4m4_gpu.__file__).parent
    direct = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom) else
                     [alias.name for alias in node.names] if isinstance(node, ast.Import) else [])
            if any(name.split(".")[0] == "tqdm" for name in names):
                direct.append(path.relative_to(package).as_posix())
    assert direct == ["core/progress.py"] * 2
