"""Handing completed data over to the fusion model: the Torch device, the packed (N, D)
float32 tensor (:func:`as_fusion_input`), plain 2-D inputs (arrays, DataFrames, tensors) and
the layout, learnt at fit, of which columns form each modality (:class:`ModalityLayout`)."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from ..core.backend import DEVICES, to_numpy
from ..core.validation import check_dims
from ..io.columns import as_widths, modality_columns, string_labels
from ..io.data import MultiModalArray

_IMPUTE_HINT = "impute the missing modalities first, e.g. UL4M4Imputer().fit(X).transform(X)"


def resolve_torch_device(device: str) -> torch.device:
    """Map ``"auto" | "cpu" | "cuda"`` to a ``torch.device``; ``"auto"`` uses CUDA when
    Torch sees a GPU. ``"cuda"`` without one raises ``RuntimeError``."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was requested but Torch sees no CUDA GPU; "
                           "use device='cpu' or 'auto'")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    return torch.device("cuda" if use_cuda else "cpu")


def as_fusion_input(X, dims=None, device="cpu", name: str = "X"):
    """Hand completed data over to Torch as a packed (N, D) float32 tensor on ``device``.

    Parameters
    ----------
    X : a complete ``MultiModalArray`` (every slot observed or imputed), or a packed
        (N, D) Torch tensor / array. A ``MultiModalArray`` goes through DLPack
        (:meth:`MultiModalArray.to_torch`), so on the CPU the tensor shares memory with
        ``X.values``; it is only copied when it changes device or dtype.
    dims : the M modality widths; required for a plain tensor/array, checked against
        ``X.dims`` for a ``MultiModalArray``.
    device : a ``torch.device`` or its name.
    name : the argument's name, for error messages.

    Returns
    -------
    tensor : (N, D) float32 on ``device``, detached (frozen embeddings).
    dims : tuple of M ints.

    Raises ``ValueError`` when ``X`` has no rows, missing slots or non-finite values.
    """
    if isinstance(X, MultiModalArray):
        if dims is not None and tuple(dims) != X.dims:
            raise ValueError(f"{name} has modality dims {X.dims}, expected {tuple(dims)}")
        missing = int((~to_numpy(X.mask)).sum())
        if missing:
            raise ValueError(
                f"{name} is incomplete: {missing} missing modality slots; {_IMPUTE_HINT}"
            )
        tensor, dims = X.to_torch(), X.dims
    else:
        if dims is None:
            raise ValueError(f"dims is required when {name} is a packed (N, D) array or tensor "
                             "rather than a MultiModalArray")
        tensor = X if isinstance(X, torch.Tensor) else torch.as_tensor(to_numpy(X))
        if tensor.ndim != 2:
            raise ValueError(f"{name} must be 2-D (n_samples, D), got shape {tuple(tensor.shape)}")
        dims = check_dims(dims, tensor.shape[1], name)
    if tensor.shape[0] == 0:
        raise ValueError(f"{name} has 0 rows")
    tensor = tensor.detach().to(device=device, dtype=torch.float32)
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{name} holds NaN or inf values (missing modalities?); {_IMPUTE_HINT}")
    return tensor, dims


def _plain_matrix(X, name: str):
    """A plain 2-D input as ``(matrix, labels)``.

    ``matrix`` is ``X`` as an (N, D) NumPy array or Torch tensor (a pandas DataFrame becomes
    a float32 copy with its missing values NaN, a CuPy array is copied to the host);
    ``labels`` is a DataFrame's (D,) column labels (a ``pandas.Index``), else None. Raises
    ``ValueError`` naming ``name`` for non-numeric values or a shape other than 2-D.
    """
    labels = None
    if isinstance(X, torch.Tensor):
        matrix = X
    elif hasattr(X, "columns") and type(X).__module__.startswith("pandas"):
        from pandas.api.types import is_numeric_dtype

        for label, dtype in X.dtypes.items():
            if not is_numeric_dtype(dtype):
                raise ValueError(f"{name} must hold numbers; column {label!r} has dtype {dtype}")
        # a copy: without one pandas may hand out a read-only view, which Torch warns about
        labels, matrix = X.columns, X.to_numpy(dtype=np.float32, na_value=np.nan, copy=True)
    else:
        matrix = to_numpy(X)
        if matrix.dtype.kind not in "biuf":
            raise ValueError(f"{name} must hold numbers, got dtype {matrix.dtype}")
    if matrix.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape "
                         f"{tuple(matrix.shape)}")
    return matrix, labels


class ModalityLayout:
    """Which columns of the fusion estimators' inputs form each modality: learnt from
    ``fit``'s ``X`` (:meth:`_fit_layout`) and applied to every later input (:meth:`_packed`).
    A mixin of the estimators; it reads their ``modalities`` parameter and ``device_``."""

    def _fit_layout(self, X, dims):
        """Learn from ``fit``'s ``X`` which columns form each modality (``modalities``, or
        the deprecated ``dims``): sets ``modality_columns_``, ``modality_names_``,
        ``dims_``, ``n_features_in_`` and ``feature_names_in_``. Returns ``X``, a plain
        input as an (N, D) array or tensor (see :func:`_plain_matrix`)."""
        spec, argument = self.modalities, "modalities"
        if dims is not None:
            warnings.warn("fit's dims argument is deprecated; give the modality widths as "
                          "modalities=[...] when constructing the estimator",
                          FutureWarning, stacklevel=3)
            if spec is not None:
                raise ValueError("give the modalities once: modalities or fit's dims, not both")
            spec, argument = dims, "dims"
        labels = None
        if isinstance(X, MultiModalArray):
            if spec is not None and as_widths(spec) is None:
                raise ValueError(f"X is a MultiModalArray, which carries its own modalities; "
                                 f"{argument} may only repeat their widths {list(X.dims)}, got "
                                 f"{spec!r}")
            if spec is not None and tuple(spec) != X.dims:
                raise ValueError(f"X has modality dims {X.dims}, expected {tuple(spec)}")
            columns, _ = modality_columns(X.dims, sum(X.dims))
            names = X.names
        else:
            X, labels = _plain_matrix(X, "X")
            if spec is None:
                raise ValueError("modalities or dims is required when X is a plain (N, D) array, "
                                 "DataFrame or tensor rather than a MultiModalArray: e.g. "
                                 "modalities=[3, 2] for two modalities of 3 and 2 columns")
            columns, names = modality_columns(spec, X.shape[1], labels, argument)
        self.modality_columns_, self.modality_names_ = columns, names
        self.dims_ = tuple(len(cols) for cols in columns)
        self.n_features_in_ = sum(self.dims_)
        feature_names = string_labels(labels)
        if feature_names is not None:
            self.feature_names_in_ = feature_names
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        return X

    def _packed(self, X, name: str) -> torch.Tensor:
        """``X`` in the fitted layout: (N, D) float32 on the device, checked, not standardised.
        A ``MultiModalArray``'s modalities are matched to the fitted ones by name; a plain
        input must have ``n_features_in_`` columns (and, as a DataFrame, the column labels of
        ``feature_names_in_``), which are gathered by ``modality_columns_``."""
        if isinstance(X, MultiModalArray):
            X = X.matched_to(self.modality_names_, self.dims_, name)
        else:
            X, labels = _plain_matrix(X, name)
            if X.shape[1] != self.n_features_in_:
                raise ValueError(f"{name} has {X.shape[1]} features, but {type(self).__name__} "
                                 f"was fitted on {self.n_features_in_}")
            fitted, given = getattr(self, "feature_names_in_", None), string_labels(labels)
            if fitted is not None and given is not None and not np.array_equal(fitted, given):
                raise ValueError(f"{name}'s column labels {given.tolist()} differ from those seen "
                                 f"in fit, {fitted.tolist()}")
            order = np.concatenate(self.modality_columns_)
            if not np.array_equal(order, np.arange(order.size)):
                X = X[:, torch.as_tensor(order, device=X.device) if isinstance(X, torch.Tensor)
                      else order]
        inputs, _ = as_fusion_input(X, self.dims_, self.device_, name)
        return inputs
