"""Build ``ul4m4_gpu/datasets/mfeat.npz`` from the UCI Multiple Features CSVs.

Usage::

    python tools/build_mfeat.py [SOURCE_DIR] [OUTPUT]

SOURCE_DIR defaults to ``../shared/data/uci-mfeat`` next to the repository; it holds
``mfeat-{fou,fac,kar,pix,zer,mor}.csv`` (a header line of column indices, then 2,000 rows,
the last column the class label). OUTPUT defaults to ``ul4m4_gpu/datasets/mfeat.npz``.

The archive (``np.savez_compressed``) holds one float32 (2000, d_m) array per modality,
keyed ``fou, fac, kar, pix, zer, mor``, and ``labels``, int8 (2000,). The script checks
that row r carries the same label in every file.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

MODALITIES = ("fou", "fac", "kar", "pix", "zer", "mor")
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO_ROOT.parent / "shared" / "data" / "uci-mfeat"
DEFAULT_OUTPUT = REPO_ROOT / "ul4m4_gpu" / "datasets" / "mfeat.npz"


def read_modality(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Features (N, d) float32 and labels (N,) int64 of one ``mfeat-*.csv`` file."""
    table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)
    raw_labels = table[:, -1]
    labels = raw_labels.astype(np.int64)
    if not np.array_equal(labels, raw_labels):
        raise ValueError(f"{path}: the last column holds non-integer labels")
    return table[:, :-1].astype(np.float32), labels


def read_all(source: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """All six modalities ``{name: (N, d_m) float32}`` and the shared (N,) int8 labels."""
    features, labels = {}, None
    for name in MODALITIES:
        path = source / f"mfeat-{name}.csv"
        features[name], file_labels = read_modality(path)
        if labels is None:
            labels = file_labels
        elif not np.array_equal(labels, file_labels):
            bad = np.flatnonzero(labels != file_labels) if labels.shape == file_labels.shape else []
            raise ValueError(
                f"{path}: labels disagree with mfeat-{MODALITIES[0]}.csv "
                f"(shape {file_labels.shape} vs {labels.shape}; rows {list(bad[:5])})"
            )
    if labels.min() < np.iinfo(np.int8).min or labels.max() > np.iinfo(np.int8).max:
        raise ValueError(f"labels out of int8 range: {labels.min()}..{labels.max()}")
    return features, labels.astype(np.int8)


def main(argv: list[str]) -> None:
    """Read the CSVs, write the compressed archive and print its size and shapes."""
    source = Path(argv[0]) if argv else DEFAULT_SOURCE
    output = Path(argv[1]) if len(argv) > 1 else DEFAULT_OUTPUT
    features, labels = read_all(source)
    output.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(output, labels=labels, **features)
    shapes = ", ".join(f"{n}={x.shape[1]}" for n, x in features.items())
    print(f"wrote {output} ({output.stat().st_size / 1e6:.2f} MB): "
          f"{labels.shape[0]} rows, dims {shapes}, classes {np.bincount(labels).tolist()}")


if __name__ == "__main__":
    main(sys.argv[1:])
