"""Fuzzing the promises of README's "Errors and guarantees" section.

Three families, each drawn by hypothesis:

* valid inputs (every row observes at least one modality, every modality is observed
  somewhere; values from 1e-20 to float32's maximum, ties, constant columns, four input
  forms): finite output, observed values bit-identical, ``imputed == ~mask``, determinism,
  save/load identity, a subset's output = those rows of the whole, ``batch_size``
  independence;
* bad inputs to the estimator and the low-level functions: a ``ValueError`` / ``TypeError``
  naming the argument, modality or column;
* files and command lines with a mistake in them (an output that is an input, a crafted,
  truncated, corrupted or misplaced file, a model with a bad entry): exit status 1, one
  ``ul4m4: error:`` line naming the file, nothing written, the inputs untouched;
* the flag-column rule: of the columns named like the output's flags, only those the
  writers write are dropped on read (io/flags.py);
* extreme accepted parameters: temperatures down to 1e-300 and subnormals (the τ → 0
  limit, never NaN), ``n_candidates`` far above K (capped), model files whose ``mean_`` or
  ``scale_`` would overflow float32 (refused at load) or whose ``modalities`` is garbage.

Signals and a full disk, made for real, are in tests/test_faults.py.

Profiles: by default ``ul4m4-fuzz-ci`` — derandomised (the same examples on every run), no
example database, a fixed number of examples (about 30 s on two shared cores). ``UL4M4_FUZZ=long``
selects ``ul4m4-fuzz-long``: random, ten times the examples.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_io import crafted_npz, snapshot
from ul4m4_gpu import (MultiModalArray, UL4M4Imputer, greedy_complete, kmeans_plusplus, lloyd,
                       read_table, write_table)
from ul4m4_gpu.cli.commands import main

settings.register_profile("ul4m4-fuzz-ci", derandomize=True, database=None, deadline=None,
                          print_blob=True, suppress_health_check=list(HealthCheck))
settings.register_profile("ul4m4-fuzz-long", deadline=None, print_blob=True,
                          suppress_health_check=list(HealthCheck))
LONG = os.environ.get("UL4M4_FUZZ") == "long"
PROFILE = settings.get_profile("ul4m4-fuzz-long" if LONG else "ul4m4-fuzz-ci")


def examples(n: int) -> settings:
    """The profile with ``n`` examples (ten times as many with ``UL4M4_FUZZ=long``)."""
    return settings(PROFILE, max_examples=n * (10 if LONG else 1))


TOP = float(np.finfo(np.float32).max)


# --------------------------------------------------------------------------- valid inputs
@st.composite
def valid_data(draw):
    """(modalities: list of (n, d_m) float32, mask (n, M) bool, names, k, seed): every row
    observes a modality and every modality is observed by some row."""
    n_mod = draw(st.integers(1, 4))
    dims = draw(st.lists(st.integers(1, 6), min_size=n_mod, max_size=n_mod))
    n = draw(st.integers(max(2, n_mod), 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    mask = rng.random((n, n_mod)) < draw(st.floats(0.2, 1.0))
    scale = draw(st.sampled_from([1e-20, 1.0, 1e20, 2e37]))  # 2e37: clipped at ±float32 max
    blocks = []
    for d in dims:
        centres = rng.normal(scale=4.0, size=(3, d))
        x = (centres[rng.integers(3, size=n)] + rng.normal(size=(n, d))) * scale
        if draw(st.booleans()):
            x += draw(st.sampled_from([-2.0, 2.0])) * scale * 10  # off-centre
        if draw(st.booleans()):
            x[:, 0] = x[0, 0]  # a constant column
        blocks.append(np.clip(x, -TOP, TOP).astype(np.float32))
    if draw(st.booleans()):  # exact ties: repeated rows
        for block in blocks:
            block[n // 2:] = block[0]
        mask[n // 2:] = mask[0]
    mask[np.arange(n_mod), np.arange(n_mod)] = True  # each modality observed somewhere
    mask[~mask.any(axis=1), 0] = True  # each row observes one
    names = [f"mod{m}" for m in range(n_mod)]
    k = draw(st.integers(1, min(5, n)))
    return blocks, mask, names, k, draw(st.integers(0, 2**32 - 1))


def as_form(form: str, blocks, mask, names):
    """The same data in one of the input forms the estimator takes."""
    if form == "packed":
        return MultiModalArray.from_modalities(blocks, mask=mask, names=names)
    if form == "nan rows":  # no mask: a missing modality is NaN throughout
        return {name: np.where(mask[:, [m]], block, np.nan)
                for m, (name, block) in enumerate(zip(names, blocks))}
    columns = {name: pa.array([list(map(float, row)) if seen else None
                               for row, seen in zip(block, mask[:, m])], pa.list_(pa.float32()))
               for m, (name, block) in enumerate(zip(names, blocks))}
    table = pa.table({"id": np.arange(len(mask)), **columns})
    return table if form == "arrow" else table.to_pandas()


@examples(300)
@given(valid_data(), st.sampled_from(["packed", "nan rows", "arrow", "pandas"]), st.data())
def test_valid_inputs_keep_every_promise(case, form, draw):
    blocks, mask, names, k, seed = case
    X = as_form(form, blocks, mask, names)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no overflow or invalid value, ever
        warnings.filterwarnings("ignore", ".*(no centre carries|filled with the training mean)")
        # the container back whatever the input (each type's own output: test_sklearn.py)
        imputer = UL4M4Imputer(n_clusters=k, random_state=seed, output_type="multimodal").fit(X)
        out = imputer.transform(X)
        assert np.isfinite(out.values).all() and out.mask.all()
        np.testing.assert_array_equal(out.imputed, ~mask)
        assert out.names == tuple(names)
        for m, block in enumerate(blocks):
            observed = mask[:, m]
            assert out.modality(m)[observed].tobytes() == block[observed].tobytes()

        again = UL4M4Imputer(n_clusters=k, random_state=seed,
                             output_type="multimodal").fit(X).transform(X)
        assert again.values.tobytes() == out.values.tobytes()
        with tempfile.TemporaryDirectory() as folder:
            imputer.save(Path(folder) / "model.npz")
            loaded = UL4M4Imputer.load(Path(folder) / "model.npz")
        assert loaded.transform(X).values.tobytes() == out.values.tobytes()

        data = MultiModalArray.from_modalities(blocks, mask=mask, names=names)
        rows = np.flatnonzero(draw.draw(st.lists(st.booleans(), min_size=len(mask),
                                                 max_size=len(mask))))
        # another batching of the same rows: bit for bit, the default soft fill too
        if rows.size:
            np.testing.assert_array_equal(imputer.transform(data.take(rows)).values,
                                          out.values[rows])
        imputer.set_params(batch_size=draw.draw(st.integers(1, len(mask))))
        np.testing.assert_array_equal(imputer.transform(data).values, out.values)


# --------------------------------------------------------------------------- bad inputs
def _small(seed: int = 0, n: int = 12):
    rng = np.random.default_rng(seed)
    blocks = [rng.normal(size=(n, 3)), rng.normal(size=(n, 2))]
    mask = np.ones((n, 2), dtype=bool)
    mask[1::3, 1] = False
    return blocks, mask


def _fit(**params):
    blocks, mask = _small()
    return UL4M4Imputer(**{"n_clusters": 2, **params}).fit(
        MultiModalArray.from_modalities(blocks, mask=mask, names=["img", "txt"]))


def _with(row: int, column: int, value):
    blocks, mask = _small()
    blocks[1][row, column] = value
    mask[row, 1] = True
    return MultiModalArray.from_modalities(blocks, mask=mask, names=["img", "txt"])


def _ragged(row: int):
    cells = [[1.0, 2.0]] * 12
    cells[row] = [1.0]
    return MultiModalArray.from_modalities([np.ones((12, 1)), cells], names=["img", "txt"])


def _frame(cells):
    return MultiModalArray.from_dataframe(pd.DataFrame({"img": [[1.0]] * len(cells),
                                                        "txt": cells}))


def _lowlevel(call: str, value):
    z = np.random.default_rng(1).normal(size=(10, 3))
    mask = np.ones((10, 2), dtype=bool)
    centers, centers_mask, _ = kmeans_plusplus(z, mask, (2, 1), 2, random_state=0)
    if call == "kmeans_plusplus n_clusters":
        return kmeans_plusplus(z, mask, (2, 1), value)
    if call == "kmeans_plusplus random_state":
        return kmeans_plusplus(z, mask, (2, 1), 2, random_state=value)
    if call == "lloyd max_iter":
        return lloyd(z, mask, (2, 1), centers, centers_mask, max_iter=value)
    if call == "lloyd tol":
        return lloyd(z, mask, (2, 1), centers, centers_mask, tol=value)
    return greedy_complete(z, mask, centers[:value], centers_mask[:value], (2, 1))


#: name: (strategy of arguments, call(argument), exception types, fragments the message holds)
BAD_INPUTS = {
    "NaN or inf observed": (
        st.tuples(st.integers(0, 11), st.integers(0, 1), st.sampled_from([np.nan, np.inf])),
        lambda a: _with(*a), ValueError, ["modality 'txt'", "rows [", "NaN or inf"]),
    "beyond float32": (
        st.tuples(st.integers(0, 11), st.integers(0, 1), st.floats(3.5e38, 1e300)),
        lambda a: _with(*a), ValueError, ["modality 'txt'", "beyond the range of float32"]),
    "ragged rows": (st.integers(1, 11), _ragged, ValueError, ["modality 'txt' is ragged"]),
    "strings": (st.just(None), lambda _: MultiModalArray.from_modalities([np.array([["a"]])]),
                TypeError, ["modality 'm0'", "non-numeric"]),
    "mask shape": (st.integers(3, 5), lambda m: MultiModalArray.from_modalities(
        _small()[0], mask=np.ones((12, m), bool)), ValueError, ["mask has shape"]),
    "mask values": (st.floats(0.1, 0.9), lambda v: MultiModalArray.from_modalities(
        _small()[0], mask=np.full((12, 2), v)), TypeError, ["mask must be boolean"]),
    "rows differ": (st.integers(1, 5), lambda cut: MultiModalArray.from_modalities(
        [_small()[0][0], _small()[0][1][cut:]]), ValueError, ["different numbers of rows"]),
    "mixed list column": (st.integers(0, 11), lambda row: _frame(
        [[1.0, 2.0] if i != row else "n/a" for i in range(12)]), TypeError,
        ["column 'txt' cannot be read", "holds a list"]),
    "NaN in a list cell": (st.integers(0, 11), lambda row: _frame(
        [[1.0, 2.0] if i != row else [np.nan, 2.0] for i in range(12)]), ValueError,
        ["modality column 'txt'", "entries inside a non-null cell"]),
    "n_clusters": (st.sampled_from([0, -1, 2.5, True, 13, "4"]),
                   lambda v: _fit(n_clusters=v), ValueError, ["n_clusters"]),
    "max_iter": (st.sampled_from([0, -1, 1.5, None]), lambda v: _fit(max_iter=v), ValueError,
                 ["max_iter must be an int >= 1"]),
    "tol": (st.sampled_from([-1.0, float("nan"), "0", None]), lambda v: _fit(tol=v),
            ValueError, ["tol must be a float >= 0"]),
    "random_state": (st.sampled_from(["abc", -1, 2**32, True, 1.5]),
                     lambda v: _fit(random_state=v), ValueError, ["random_state must be"]),
    "batch_size": (st.sampled_from([0, -3, 2.0]), lambda v: _fit(batch_size=v), ValueError,
                   ["batch_size must be"]),
    "init": (st.sampled_from(["random", None]), lambda v: _fit(init=v), ValueError, ["init"]),
    "low-level arguments": (
        st.sampled_from([("kmeans_plusplus n_clusters", 0), ("kmeans_plusplus n_clusters", -1),
                         ("kmeans_plusplus random_state", "abc"), ("lloyd max_iter", 0),
                         ("lloyd max_iter", -1), ("lloyd tol", -1.0), ("greedy_complete", 0)]),
        lambda a: _lowlevel(*a), ValueError,
        ["n_clusters|random_state|max_iter|tol|at least one centre"]),
}


@examples(200)
@given(st.data())
def test_bad_inputs_raise_a_clear_error_naming_the_problem(draw):
    name = draw.draw(st.sampled_from(sorted(BAD_INPUTS)))
    arguments, call, kinds, fragments = BAD_INPUTS[name]
    with pytest.raises(kinds) as info:
        call(draw.draw(arguments))
    message = str(info.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert any(part in message for part in fragment.split("|")), (name, message)


# --------------------------------------------------------------------------- files and CLI
@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A folder with an npz input, a model fitted on it, and the same data as a Parquet file
    and a Parquet directory."""
    folder = tmp_path_factory.mktemp("fuzz-files")
    blocks, mask = _small(3, n=30)
    np.savez(folder / "in.npz", img=np.where(mask[:, [0]], blocks[0], np.nan),
             txt=np.where(mask[:, [1]], blocks[1], np.nan), ids=np.arange(30))
    assert main(["fit", str(folder / "in.npz"), "-o", str(folder / "model.npz"), "--k", "3"]) == 0
    table = pa.table({"img": [list(r) for r in blocks[0]],
                      "txt": [list(r) if seen else None for r, seen in zip(blocks[1], mask[:, 1])]})
    pq.write_table(table, folder / "in.parquet")
    (folder / "parts").mkdir()
    pq.write_table(table.slice(0, 15), folder / "parts" / "a.parquet")
    pq.write_table(table.slice(15), folder / "parts" / "b.parquet")
    return folder


def _run(argv) -> tuple[int, list[str]]:
    """``main(argv)``'s exit status and the lines it printed on stderr."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        status = main([str(a) for a in argv])
    return status, err.getvalue().strip().splitlines()


MODES = {"": [], "stream": ["--stream"], "workers": ["--workers", "2"]}


@st.composite
def same_path_mistakes(draw, folder: Path):
    """(argv, what the error names) for an output that is one of the inputs."""
    command = draw(st.sampled_from(["fit", "impute"]))
    source = draw(st.sampled_from(["in.npz", "in.parquet", "parts"]))
    mode = draw(st.sampled_from([""] + (["stream", "workers"] if source != "in.npz" else
                                        ["workers"])))
    model = command == "impute" and draw(st.booleans())
    extra = ["--model", folder / "model.npz"] if model else []
    if source == "parts":
        output = folder / "parts" / draw(st.sampled_from(["a.parquet", "b.parquet", "new.parquet"]))
    elif model and draw(st.booleans()):
        output = folder / draw(st.sampled_from(["model.npz", "./model.npz", "../" + folder.name
                                                 + "/model.npz"]))
    else:
        output = folder / draw(st.sampled_from(["", "./", "parts/../"])) / source
    return [command, folder / source, "-o", output, *extra, *MODES[mode]], output


def _corrupt_model(folder: Path, draw) -> Path:
    """A copy of the workspace's model with one entry spoiled."""
    with np.load(folder / "model.npz", allow_pickle=False) as archive:
        entries = {key: archive[key] for key in archive.files}
    entry = draw(st.sampled_from(["cluster_centers_", "mean_", "scale_", "centers_mask_",
                                  "labels_", "meta"]))
    if entry == "meta":
        meta = json.loads(str(entries["meta"]))
        key = draw(st.sampled_from(["n_clusters", "tol", "max_iter", "dims", "inertia"]))
        value = draw(st.sampled_from([-1, 0, "x", None, [0], 1e400]))
        (meta["params"] if key in meta["params"] else meta)[key] = value
        entries["meta"] = np.array(json.dumps(meta))
    else:
        array = entries[entry]
        defect = draw(st.sampled_from(["nan", "negative", "shape", "dtype"]))
        if defect == "shape":
            array = array[..., :-1] if array.ndim else array
        elif defect == "dtype":
            array = array.astype(np.complex64 if array.dtype != bool else np.int8)
        elif entry == "centers_mask_":
            array = array.astype(np.float32)
        else:
            array = array.astype(np.float64)
            array.flat[draw(st.integers(0, array.size - 1))] = np.nan if defect == "nan" else -1e9
        entries[entry] = array
    path = folder / "spoiled.npz"
    np.savez(path, **entries)
    return path


@st.composite
def file_mistakes(draw, folder: Path):
    """(argv, the file the error must name) for a damaged or misplaced file."""
    out = folder / "out.npz"
    kind = draw(st.sampled_from(["crafted input", "crafted model", "truncated input",
                                 "truncated model", "flipped input", "random bytes",
                                 "missing model", "data file as model", "spoiled model",
                                 "truncated parquet"]))
    if kind.startswith("crafted"):
        shape = tuple(draw(st.lists(st.integers(1, 10**7), min_size=1, max_size=3)))
        bad = crafted_npz(folder / "crafted.npz", shape,  # 701 bytes: never what it claims
                          draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])), 701)
    elif kind.startswith("truncated") or kind == "flipped input":
        source = {"truncated input": "in.npz", "truncated model": "model.npz",
                  "flipped input": "in.npz", "truncated parquet": "in.parquet"}[kind]
        content = bytearray((folder / source).read_bytes())
        at = draw(st.integers(0, len(content) - 1))
        if kind == "flipped input":
            content[at] ^= draw(st.integers(1, 255))
        else:
            del content[at:]
        bad = folder / f"damaged{Path(source).suffix}"
        bad.write_bytes(bytes(content))
    elif kind == "random bytes":
        bad = folder / "noise.npz"
        bad.write_bytes(np.random.default_rng(draw(st.integers(0, 2**16))).bytes(
            draw(st.integers(0, 2000))))
    elif kind == "missing model":
        bad = folder / "absent.npz"
    elif kind == "data file as model":
        bad = folder / "in.npz"
    else:
        bad = _corrupt_model(folder, draw)
    if "model" in kind:
        return ["impute", folder / "in.npz", "-o", out, "--model", bad], bad
    command = draw(st.sampled_from(["fit", "impute"]))
    if command == "impute" and bad.suffix == ".parquet":
        out = folder / "out.parquet"
    # these never read as data, so --workers fails before a cluster starts
    modes = ["", "stream", "workers"] if kind in ALWAYS_REFUSED else [""]
    return [command, bad, "-o", out, "--k", "2", *MODES[draw(st.sampled_from(modes))]], bad


#: The kinds of :func:`file_mistakes` that no byte of luck turns into valid data.
ALWAYS_REFUSED = ("crafted input", "truncated input", "random bytes", "truncated parquet")


def _scratch(folder: Path) -> None:
    for name in ("crafted.npz", "damaged.npz", "damaged.parquet", "noise.npz", "spoiled.npz",
                 "out.npz", "out.parquet"):
        (folder / name).unlink(missing_ok=True)


@examples(100)
@given(st.data())
def test_an_output_that_is_an_input_is_one_line_and_touches_nothing(workspace, draw):
    argv, output = draw.draw(same_path_mistakes(workspace))
    before = snapshot(workspace)
    status, lines = _run(argv)
    assert status == 1 and len(lines) == 1 and lines[0].startswith("ul4m4: error:"), lines
    assert f"cannot write {output}" in lines[0] and "choose another output path" in lines[0]
    assert snapshot(workspace) == before


@examples(300)
@given(st.data())
def test_a_damaged_or_misplaced_file_is_one_line_and_writes_nothing(workspace, draw):
    _scratch(workspace)
    argv, bad = draw.draw(file_mistakes(workspace))
    before = snapshot(workspace)
    status, lines = _run(argv)
    after = snapshot(workspace)
    output = str(Path(argv[argv.index("-o") + 1]).relative_to(workspace))
    if status == 0:  # a flipped byte or a benign spoil can leave a usable file
        assert set(after) - set(before) == {output} and not lines, lines
        assert {name: after[name] for name in before} == before
        return
    assert status == 1 and len(lines) == 1 and lines[0].startswith("ul4m4: error:"), lines
    assert str(bad) in lines[0], lines[0]
    assert after == before


# --------------------------------------------------------------------------- flag columns
#: Columns an input may hold, as (name, Arrow type, dropped on read): only the flags the
#: writers write (io/flags.py) are dropped; a user's column of that name of another type
#: passes through, or is refused where the output writes that name (imputed_<modality>).
FLAG_LIKE = [("imputed", pa.list_(pa.bool_()), "dropped"),
             ("imputed", pa.large_list(pa.bool_()), "dropped"),
             ("imputed", pa.string(), "kept"), ("imputed", pa.int64(), "kept"),
             ("imputed", pa.bool_(), "kept"), ("imputed", pa.list_(pa.string()), "kept"),
             ("imputed_img", pa.bool_(), "dropped"), ("imputed_img", pa.string(), "refused"),
             ("imputed_img", pa.int8(), "refused"), ("imputed_other", pa.bool_(), "kept"),
             ("imputed_other", pa.string(), "kept"), ("imputedimg", pa.bool_(), "kept")]


def _cells(kind: pa.DataType, n: int, rng) -> pa.Array:
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        value = (lambda: [bool(rng.integers(2))]) if pa.types.is_boolean(kind.value_type) \
            else (lambda: ["x"])
        return pa.array([value() for _ in range(n)], kind)
    if pa.types.is_string(kind):
        return pa.array([f"s{i}" for i in range(n)], kind)
    if pa.types.is_boolean(kind):
        return pa.array(rng.integers(2, size=n).astype(bool), kind)
    return pa.array(rng.integers(0, 9, size=n), kind)


@examples(40)
@given(st.lists(st.sampled_from(range(len(FLAG_LIKE))), min_size=1, max_size=3, unique=True),
       st.integers(0, 2**16))
def test_only_the_flags_the_writers_write_are_dropped_on_read(picks, seed):
    chosen = {}
    for i in picks:  # one column per name
        chosen.setdefault(FLAG_LIKE[i][0], FLAG_LIKE[i])
    rng = np.random.default_rng(seed)
    blocks, mask = _small(seed, n=10)
    columns = {"img": pa.array([list(map(float, r)) for r in blocks[0]], pa.list_(pa.float32())),
               "txt": pa.array([list(map(float, r)) if seen else None
                                for r, seen in zip(blocks[1], mask[:, 1])],
                               pa.list_(pa.float32()))}
    columns.update({name: _cells(kind, 10, rng) for name, kind, _ in chosen.values()})
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "in.parquet"
        pq.write_table(pa.table(columns), path)
        refused = [name for name, _, fate in chosen.values() if fate == "refused"]
        if refused:
            with pytest.raises(ValueError) as info:
                read_table(path)
            assert f"column {refused[0]!r}" in str(info.value) and "\n" not in str(info.value)
            return
        table = read_table(path)
        kept = [name for name, _, fate in chosen.values() if fate == "kept"]
        assert table.passthrough.column_names == kept
        for name in kept:
            assert table.passthrough.column(name).equals(pa.chunked_array([columns[name]]))
        write_table(table, UL4M4Imputer(n_clusters=2, random_state=0).fit(table.data)
                    .transform(table.data), Path(folder) / "out.parquet")
        written = pq.read_table(Path(folder) / "out.parquet")
        assert written.column_names == ["img", "txt", *kept, "imputed_img", "imputed_txt"]
        again = read_table(Path(folder) / "out.parquet")  # an output read back: flags dropped
        assert again.passthrough.column_names == kept


@examples(20)
@given(st.sampled_from(["(N, M) bool", "1-D bool", "float (N, M)", "strings"]),
       st.integers(0, 2**16))
def test_an_npz_imputed_array_is_dropped_only_when_it_is_the_flags(kind, seed):
    blocks, mask = _small(seed % 97, n=10)
    arrays = {"img": blocks[0], "txt": np.where(mask[:, [1]], blocks[1], np.nan)}
    arrays["imputed"] = {"(N, M) bool": ~mask, "1-D bool": mask[:, 0],
                         "float (N, M)": mask.astype(np.float32),
                         "strings": np.array(["a"] * 10)}[kind]
    with tempfile.TemporaryDirectory() as folder:
        np.savez(Path(folder) / "in.npz", **arrays)
        if kind != "(N, M) bool":
            with pytest.raises(ValueError, match="array 'imputed' holds .* rename it"):
                read_table(Path(folder) / "in.npz")
            return
        table = read_table(Path(folder) / "in.npz")
        assert table.data.names == ("img", "txt") and table.passthrough == {}


# --------------------------------------------------------------------------- extreme params
TINY_TEMPERATURES = [1e-300, 5e-324, 1e-320, 2e-308, 1e-45, 1e-40, float(np.finfo(np.float32).tiny)]


@examples(30)
@given(valid_data(), st.sampled_from(TINY_TEMPERATURES), st.integers(2, 6),
       st.sampled_from(["paper", "overlap", "nearest"]))
def test_tiny_temperatures_give_the_limit_of_the_soft_fill_never_nan(case, temperature,
                                                                     n_candidates, completion):
    """Any finite τ > 0 is accepted; one too small for the scores' dtype is the τ → 0
    limit: the fill equals that of τ = 1e-300 bit for bit, observed values untouched."""
    blocks, mask, names, k, seed = case
    data = MultiModalArray.from_modalities(blocks, mask=mask, names=names)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        warnings.filterwarnings("ignore", ".*(no centre carries|filled with the training mean"
                                          "|share no observed modality)")
        imputer = UL4M4Imputer(n_clusters=k, random_state=seed, n_candidates=n_candidates,
                               completion=completion, temperature=temperature).fit(data)
        out = imputer.transform(data)
        assert np.isfinite(out.values).all()
        for m, block in enumerate(blocks):
            assert out.modality(m)[mask[:, m]].tobytes() == block[mask[:, m]].tobytes()
        if temperature < 1e-100:  # below every nonzero float32 gap / 746: the limit itself
            limit = imputer.set_params(temperature=1e-300).transform(data)
            assert limit.values.tobytes() == out.values.tobytes()


def test_candidate_weights_match_the_formula_for_any_temperature():
    """The vectorised weights against exp(−(s − s_best)/τ) / Σ evaluated slot by slot in
    Python floats (where 0/τ = 0 and a nonzero gap over a tiny τ is inf, exp(−inf) = 0)."""
    from ul4m4_gpu.core.completion import candidate_weights

    rng = np.random.default_rng(0)
    scores = rng.random((50, 2, 4)).astype(np.float32)
    scores.sort(axis=2)
    scores[:10, :, 1] = scores[:10, :, 0]  # ties with the best
    scores[10:15, :, 2:] = np.inf          # +inf behind a finite best
    scores[15:18] = np.inf                 # every chosen score +inf
    chosen = np.tile(np.arange(4), (50, 2, 1))
    chosen[20:25, :, 3] = -1               # padding
    for temperature in [*TINY_TEMPERATURES, 0.1, 1.0, 1e30, 1e308]:
        weights = candidate_weights(chosen, scores, temperature)
        for i, m in np.ndindex(50, 2):
            valid = [t for t in range(4) if chosen[i, m, t] >= 0]
            best = float(scores[i, m, 0])
            raw = [1.0 if not np.isfinite(best) else
                   0.0 if not np.isfinite(scores[i, m, t]) else
                   np.exp(-((float(scores[i, m, t]) - best) / temperature)) for t in valid]
            expected = np.zeros(4)
            expected[valid] = np.array(raw) / sum(raw)
            np.testing.assert_allclose(weights[i, m], expected, rtol=1e-6, atol=1e-7,
                                       err_msg=f"tau={temperature}, slot {(i, m)}")


@examples(10)
@given(st.sampled_from([10, 10**6, 10**12, 2**62, 10**30]))
def test_n_candidates_beyond_the_centres_is_capped(n_candidates):
    """r above K allocates nothing more and fills as r = K does (there are K candidates)."""
    blocks, mask = _small(5, n=30)
    data = MultiModalArray.from_modalities(blocks, mask=mask, names=["img", "txt"])
    imputer = UL4M4Imputer(n_clusters=3, random_state=0, temperature=0.5,
                           n_candidates=n_candidates).fit(data)
    out = imputer.transform(data)
    assert out.values.tobytes() == imputer.set_params(n_candidates=3).transform(data) \
        .values.tobytes()


@examples(40)
@given(st.sampled_from(["mean_", "scale_"]), st.floats(3.5e38, 1e300), st.booleans(),
       st.integers(0, 4))
def test_a_model_whose_fills_overflow_float32_is_refused_at_load(workspace, entry, value,
                                                                 negative, column):
    """A mean_ beyond float32, or a scale_ carrying a centre beyond it, is refused naming
    the file and the entry; the command line says so in one line and writes nothing."""
    with np.load(workspace / "model.npz", allow_pickle=False) as archive:
        entries = {key: archive[key] for key in archive.files}
    entries[entry] = entries[entry].astype(np.float64)
    if entry == "scale_":  # the centres' value there times the scale overflows
        value = value / max(float(np.abs(entries["cluster_centers_"][:, column]).max()), 1e-30)
        value = min(value, 1e308)
    entries[entry][column] = -value if negative and entry == "mean_" else value
    path = workspace / "spoiled.npz"
    np.savez(path, **entries)
    with pytest.raises(ValueError) as info:
        UL4M4Imputer.load(path)
    message = str(info.value)
    assert str(path) in message and f"entry {entry!r}" in message and "\n" not in message
    assert "beyond float32's range" in message
    _scratch(workspace)
    np.savez(path, **entries)
    before = snapshot(workspace)
    status, lines = _run(["impute", workspace / "in.npz", "-o", workspace / "out.npz",
                          "--model", path])
    assert status == 1 and len(lines) == 1 and str(path) in lines[0], lines
    assert snapshot(workspace) == before
    _scratch(workspace)


def test_a_model_at_the_edge_of_float32_still_loads(tmp_path):
    """A model fitted on values near float32's maximum has a mean_ near it (3e38): it is
    no edited model, and loads and completes to finite values."""
    rng = np.random.default_rng(0)
    top = float(np.finfo(np.float32).max)
    blocks = [np.float32(top * 0.9) - rng.random((20, 2)).astype(np.float32) * np.float32(1e37),
              rng.normal(size=(20, 1)).astype(np.float32)]
    mask = np.ones((20, 2), dtype=bool)
    mask[::3, 0] = False
    data = MultiModalArray.from_modalities(blocks, mask=mask, names=["a", "b"])
    UL4M4Imputer(n_clusters=2, random_state=0).fit(data).save(tmp_path / "m.npz")
    loaded = UL4M4Imputer.load(tmp_path / "m.npz")
    assert float(loaded.mean_[0]) > 3e38
    assert np.isfinite(loaded.transform(data).values).all()


def test_garbage_modalities_in_a_model_file_is_refused_at_load(workspace):
    with np.load(workspace / "model.npz", allow_pickle=False) as archive:
        entries = {key: archive[key] for key in archive.files}
    meta = json.loads(str(entries["meta"]))
    for garbage in ["garbage", 7, [["a"], 2], [{"x": 1}], []]:
        meta["params"]["modalities"] = garbage
        entries["meta"] = np.array(json.dumps(meta))
        np.savez(workspace / "spoiled.npz", **entries)
        with pytest.raises(ValueError) as info:
            UL4M4Imputer.load(workspace / "spoiled.npz")
        message = str(info.value)
        assert str(workspace / "spoiled.npz") in message and "entry 'meta'" in message
        assert "modalities must be" in message, message
    _scratch(workspace)
