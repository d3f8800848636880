"""Faults from outside the program, made for real: signals sent to a running ``ul4m4``
process, and a file system that is full (README, "Errors and guarantees").

* SIGINT (Ctrl-C) and SIGTERM while ``impute`` writes its output, in each mode (npz and
  Parquet in memory, ``--stream``, ``--workers``): exit status 130 / 143, the one line
  ``ul4m4: error: interrupted`` on stderr, no ``*.ul4m4-partial-*`` file left, the previous
  output unchanged, and the Dask workers started for the command gone. The signal is sent
  while the command is demonstrably writing: its temporary output exists (the process is
  stopped with SIGSTOP while that is checked, then continued), not after a fixed sleep.
* A full file system (a small tmpfs, mounted when the tests run as root and may mount;
  skipped otherwise): ``UL4M4Imputer.save``, ``write_table`` and the command line fail
  with one line naming the output, leave no file and keep a previous one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from test_io import snapshot
from ul4m4_gpu import MultiModalArray, UL4M4Imputer, read_table, write_table
from ul4m4_gpu.io.files import OutputFileError

#: Rows of the signal tests' data: enough that writing the output takes a while (tens of
#: milliseconds at least), so that the command is caught writing.
SIGNAL_ROWS, SIGNAL_DIMS = 50_000, 32
PARTIAL = "*.ul4m4-partial-*"
MODES = {"npz": ("in.npz", "out.npz", []), "parquet": ("in.parquet", "out.parquet", []),
         "stream": ("in.parquet", "out.parquet", ["--stream", "--batch-rows", "5000"]),
         "workers": ("in.parquet", "out.parquet", ["--workers", "1"])}


def _data(n: int, d: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    blocks = [rng.normal(size=(n, d)).astype(np.float32) for _ in range(2)]
    mask = rng.random((n, 2)) < 0.7
    mask[~mask.any(axis=1), 0] = True
    return blocks, mask


def _list_column(block, observed):
    offsets = pa.array(np.arange(0, block.size + 1, block.shape[1], dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(block.ravel()), mask=pa.array(~observed))


def _write_inputs(folder: Path, n: int, d: int) -> None:
    blocks, mask = _data(n, d)
    np.savez(folder / "in.npz", **{name: np.where(mask[:, [m]], block, np.nan)
                                   for m, (name, block) in enumerate(zip("ab", blocks))})
    pq.write_table(pa.table({name: _list_column(block, mask[:, m])
                             for m, (name, block) in enumerate(zip("ab", blocks))}),
                   folder / "in.parquet", row_group_size=10_000)


@pytest.fixture(scope="module")
def big_inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("signals")
    _write_inputs(folder, SIGNAL_ROWS, SIGNAL_DIMS)
    blocks, mask = _data(2_000, SIGNAL_DIMS)
    UL4M4Imputer(n_clusters=8, max_iter=3, random_state=0).fit(
        MultiModalArray.from_modalities(blocks, mask=mask, names=["a", "b"])).save(
        folder / "model.npz")
    return folder


def _children(pid: int) -> list:
    """The processes ``pid`` started (``psutil``, a dependency of distributed; [] without
    it)."""
    try:
        import psutil
    except ImportError:
        return []
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:  # it ended meanwhile
        return []


def interrupt_while_writing(argv, signum: int, folder: Path, timeout: float = 120):
    """Run ``ul4m4 argv`` and send it ``signum`` once its temporary output exists (checked
    with the process stopped, so that it cannot finish meanwhile). Returns (the
    completed process, the processes it had started by then), or None when it finished
    before it was caught writing."""
    process = subprocess.Popen([sys.executable, "-m", "ul4m4_gpu.cli", *map(str, argv)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline, children, sent = time.monotonic() + timeout, [], False
    try:
        while not sent and process.poll() is None and time.monotonic() < deadline:
            if any(folder.glob(PARTIAL)):
                os.kill(process.pid, signal.SIGSTOP)
                if any(folder.glob(PARTIAL)):
                    children = _children(process.pid)
                    os.kill(process.pid, signum)
                    sent = True
                os.kill(process.pid, signal.SIGCONT)
            time.sleep(0.001)
        out, err = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert time.monotonic() < deadline, "the command neither wrote nor finished in time"
    if not sent:
        return None
    return subprocess.CompletedProcess(process.args, process.returncode, out, err), children


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("mode", list(MODES))
def test_a_signal_while_writing_removes_the_partial_output(big_inputs, mode, signum):
    if mode == "workers":
        pytest.importorskip("distributed")
    source, output, options = MODES[mode]
    output = big_inputs / output
    output.write_bytes(b"the previous output")
    before = snapshot(big_inputs)
    argv = ["impute", big_inputs / source, "-o", output, "--model",
            big_inputs / "model.npz", "--quiet", *options]
    for _ in range(3):  # a run that finished before it was caught is run again
        caught = interrupt_while_writing(argv, signum, big_inputs)
        if caught is not None:
            break
        output.write_bytes(b"the previous output")
    assert caught is not None, "three runs finished before they were caught writing"
    result, children = caught
    assert result.returncode == 128 + signum, (result.returncode, result.stderr)
    assert result.stderr.splitlines() == ["ul4m4: error: interrupted"], result.stderr
    assert result.stdout == ""
    assert snapshot(big_inputs) == before  # no partial file, the previous output kept
    if mode == "workers":
        psutil = pytest.importorskip("psutil")
        assert children, "the LocalCluster's processes were not seen"
        _, alive = psutil.wait_procs(children, timeout=20)
        for process in alive:
            process.kill()
        assert not alive, f"{len(alive)} Dask processes outlived the command"


# ---------------------------------------------------------------------------- a full disk
@pytest.fixture(scope="module")
def full_disk(tmp_path_factory):
    """A 64 KiB tmpfs, filled but for a few KiB, or a skip saying why there is none."""
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("a full file system needs a tmpfs mount: Linux and root only")
    mount = tmp_path_factory.mktemp("full-disk")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
    try:
        (mount / "previous.npz").write_bytes(b"a previous model")
        (mount / "previous.parquet").write_bytes(b"a previous output")
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


@pytest.fixture(scope="module")
def small_inputs(tmp_path_factory):
    """Inputs (20,000 rows) and a model (its labels: 160 KiB) whose outputs cannot fit in
    64 KiB."""
    folder = tmp_path_factory.mktemp("disk-inputs")
    _write_inputs(folder, 20_000, 8)
    blocks, mask = _data(20_000, 8)
    UL4M4Imputer(n_clusters=4, max_iter=2, random_state=0).fit(
        MultiModalArray.from_modalities(blocks, mask=mask, names=["a", "b"])).save(
        folder / "model.npz")
    return folder


def _assert_disk_full(message: str, output: Path) -> None:
    assert "\n" not in message and f"cannot write {output}" in message, message
    assert os.strerror(28) in message, message  # ENOSPC: No space left on device


def test_save_on_a_full_disk_names_the_file_and_leaves_the_previous_one(full_disk,
                                                                         small_inputs):
    before = snapshot(full_disk)
    model = UL4M4Imputer.load(small_inputs / "model.npz")
    for name in ("model.npz", "previous.npz"):
        with pytest.raises(OutputFileError) as info:
            model.save(full_disk / name)
        _assert_disk_full(str(info.value), full_disk / name)
        assert snapshot(full_disk) == before


@pytest.mark.parametrize("source", ["in.npz", "in.parquet"])
def test_write_table_on_a_full_disk_names_the_file(full_disk, small_inputs, source):
    before = snapshot(full_disk)
    table = read_table(small_inputs / source)
    completed = UL4M4Imputer.load(small_inputs / "model.npz").transform(table.data)
    output = full_disk / f"previous{Path(source).suffix}"
    with pytest.raises(OutputFileError) as info:
        write_table(table, completed, output)
    _assert_disk_full(str(info.value), output)
    assert snapshot(full_disk) == before


@pytest.mark.parametrize("command", [
    ["fit", "in.npz", "-o", "previous.npz", "--k", "4"],
    ["impute", "in.npz", "-o", "out.npz", "--model", "model.npz"],
    ["impute", "in.parquet", "-o", "previous.parquet", "--model", "model.npz"],
    ["impute", "in.parquet", "-o", "out.parquet", "--model", "model.npz", "--stream"],
], ids=["fit", "impute npz", "impute parquet", "impute --stream"])
def test_the_command_line_on_a_full_disk_is_one_line_naming_the_output(full_disk,
                                                                        small_inputs, command):
    from test_fuzz import _run

    before = snapshot(full_disk)
    output = full_disk / command[3]
    argv = [small_inputs / a if a.startswith(("in.", "model")) else a for a in command]
    argv[3] = output
    status, lines = _run(argv)
    assert status == 1 and len(lines) == 1 and lines[0].startswith("ul4m4: error:"), lines
    _assert_disk_full(lines[0], output)
    assert snapshot(full_disk) == before
