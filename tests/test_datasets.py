"""Tests for the packaged UCI Multiple Features dataset and its loader."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from ul4m4_gpu.io.data import MultiModalArray
from ul4m4_gpu.datasets import MFEAT_DIMS, MFEAT_MODALITIES, load_mfeat
from ul4m4_gpu.evaluation.missing import hide_modalities, simulate_missing

SOURCE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "uci-mfeat"
DIMS = {"fou": 76, "fac": 216, "kar": 64, "pix": 240, "zer": 47, "mor": 6}


@pytest.fixture(scope="module")
def mfeat():
    return load_mfeat(device="cpu")


def test_load_mfeat_shapes_and_dtypes(mfeat):
    data, labels = mfeat
    assert isinstance(data, MultiModalArray)
    assert data.names == MFEAT_MODALITIES == ("fou", "fac", "kar", "pix", "zer", "mor")
    assert dict(zip(data.names, data.dims)) == DIMS == MFEAT_DIMS
    assert data.values.shape == (2000, sum(DIMS.values()))
    assert data.values.dtype == np.float32
    assert data.mask.shape == (2000, 6) and data.mask.dtype == bool and data.mask.all()
    assert np.isfinite(data.values).all()
    assert data.device == "cpu"


def test_load_mfeat_labels(mfeat):
    _, labels = mfeat
    assert isinstance(labels, np.ndarray)
    assert labels.dtype == np.int64 and labels.shape == (2000,)
    assert np.bincount(labels).tolist() == [200] * 10


def test_load_mfeat_subset_keeps_given_order(mfeat):
    full, labels = mfeat
    data, subset_labels = load_mfeat(device="cpu", modalities=["mor", "fou"])
    assert data.names == ("mor", "fou") and data.dims == (6, 76)
    np.testing.assert_array_equal(data.modality("mor"), full.modality("mor"))
    np.testing.assert_array_equal(data.modality("fou"), full.modality("fou"))
    np.testing.assert_array_equal(subset_labels, labels)
    single, _ = load_mfeat(device="cpu", modalities="zer")
    assert single.names == ("zer",) and single.dims == (47,)


@pytest.mark.parametrize(
    "modalities, error, match",
    [
        (["fou", "image"], ValueError, r"\['image'\].*'fou', 'fac', 'kar', 'pix', 'zer', 'mor'"),
        ([], ValueError, "empty"),
        (["fou", "fou"], ValueError, "twice"),
        (3, TypeError, "modalities"),
    ],
)
def test_load_mfeat_rejects_bad_modalities(modalities, error, match):
    with pytest.raises(error, match=match):
        load_mfeat(device="cpu", modalities=modalities)


def test_load_mfeat_rejects_bad_device():
    with pytest.raises(ValueError, match="device"):
        load_mfeat(device="tpu")


def test_packaged_file_is_small():
    size = resources.files("ul4m4_gpu.datasets").joinpath("mfeat.npz").stat().st_size
    assert size <= 3 * 1024 * 1024


def test_packaged_file_layout():
    with resources.files("ul4m4_gpu.datasets").joinpath("mfeat.npz").open("rb") as handle:
        with np.load(handle) as archive:
            assert sorted(archive.files) == sorted([*DIMS, "labels"])
            assert archive["labels"].dtype == np.int8
            for name, d in DIMS.items():
                assert archive[name].dtype == np.float32 and archive[name].shape == (2000, d)


@pytest.mark.skipif(not SOURCE.is_dir(), reason=f"source CSVs not present at {SOURCE}")
def test_load_mfeat_equals_source_csvs(mfeat):
    data, labels = mfeat
    for name in MFEAT_MODALITIES:
        table = np.loadtxt(SOURCE / f"mfeat-{name}.csv", delimiter=",", skiprows=1)
        np.testing.assert_array_equal(data.modality(name), table[:, :-1].astype(np.float32))
        np.testing.assert_array_equal(labels, table[:, -1].astype(np.int64))


def test_mfeat_with_simulated_missing(mfeat):
    data, _ = mfeat
    mask = simulate_missing(data.n_samples, data.names, "complex_40_10_10_10_10_10_10", random_state=0)
    hidden = hide_modalities(data, mask)
    assert data.mask.all()
    np.testing.assert_array_equal(hidden.mask, mask)
    assert hidden.mask.all(axis=1).sum() == 800
