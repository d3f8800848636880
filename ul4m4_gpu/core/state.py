"""``FittedState``: everything a fit learns, as one value that the estimators, the model file,
the streamed and Dask transforms and the command line pass around."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .backend import is_cupy_array, to_device
from .completion import CompletionRule


@dataclass(frozen=True)
class FittedState:
    """A fitted UL4M4 model (docs/method.md).

    centers : (K, D) float32/float64 normalised centres, zero on modalities they lack;
    centers_mask : (K, M) bool; mean, scale : (D,) float64 normalisation statistics;
    dims : M ints; names : M strings; n_iter : Lloyd updates of the kept run; inertia :
    its Σ squared partial distances; labels : (N,) int64 training-row clusters (−1: no
    shared modality with any centre) in the type the row source keeps them (an array, a
    dask array), or None; rule : the completion settings of the fit, ``rule.temperature``
    the τ chosen for them (``temperature="auto"``) or given; ridge : the
    :class:`~ul4m4_gpu.core.ridge.RidgeCompletion` (``completion`` "ridge" or "auto"),
    donors : the :class:`~ul4m4_gpu.core.knn.Donors` ("knn" or "auto"), weights : (M, 4)
    float64 NumPy blend weights ("auto"; :mod:`ul4m4_gpu.core.rules`), None otherwise.
    """

    centers: object
    centers_mask: object
    mean: object
    scale: object
    dims: tuple
    names: tuple
    n_iter: int
    inertia: float
    labels: object
    rule: CompletionRule
    ridge: object = None
    donors: object = None
    weights: object = None

    @property
    def n_clusters(self) -> int:
        return int(self.centers.shape[0])

    @property
    def device(self) -> str:
        """Where the centres are: "cpu" or "cuda"."""
        return "cuda" if is_cupy_array(self.centers) else "cpu"

    def to(self, device: str, labels: bool = True) -> "FittedState":
        """The same state with its arrays on ``device``; ``labels=False`` drops the labels
        (what a transform needs has no O(N) part). Labels that are not an array (a dask
        array) are kept as they are."""
        kept = None
        if labels and self.labels is not None:
            is_array = isinstance(self.labels, np.ndarray) or is_cupy_array(self.labels)
            kept = to_device(self.labels, device) if is_array else self.labels
        return dataclasses.replace(
            self, centers=to_device(self.centers, device),
            centers_mask=to_device(self.centers_mask, device),
            mean=to_device(self.mean, device), scale=to_device(self.scale, device),
            labels=kept, ridge=None if self.ridge is None else self.ridge.to(device),
            donors=None if self.donors is None else self.donors.to(device))

    def uncarried(self) -> list[str]:
        """The modalities no centre carries (filled with the training mean)."""
        carried = np.asarray(self.centers_mask.any(axis=0).tolist(), dtype=bool)
        return [self.names[m] for m in np.flatnonzero(~carried)]
