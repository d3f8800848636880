"""Downstream fusion model: completed (frozen) embeddings → a small Torch transformer.

One linear projection per modality to a common width gives M tokens; a learned modality
embedding is added to each; multi-head self-attention blocks (residual + LayerNorm,
dropout, feed-forward) mix them; the tokens are mean-pooled and an MLP head gives the
outputs. Tasks: ``"multiclass"`` (cross-entropy), ``"multilabel"`` (BCE with logits) and
``"regression"`` (MSE). :class:`FusionClassifier` (multiclass, multilabel) and
:class:`FusionRegressor` fit it as scikit-learn estimators (``score``: accuracy, R²) with
Adam, mini-batches and early stopping on a validation split, on inputs they standardise per
dimension with the training rows' statistics; they take a complete ``MultiModalArray`` or a
plain 2-D array / DataFrame / tensor whose modalities ``modalities`` names.
:class:`FusionTrainer` is their deprecated predecessor (all three tasks, ``score`` a dict).
"""

from __future__ import annotations

import math
import numbers
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import NotFittedError
from sklearn.utils.multiclass import type_of_target
from torch import nn
from ..core.progress import tqdm

from ..core.backend import DEVICES, to_numpy
from ..io.data import MultiModalArray
from .metrics import classification_scores, multilabel_scores, regression_scores
from ..core.normalise import MIN_SCALE
from ..core.validation import check_dims, check_int
from ..io.columns import as_widths, modality_columns, string_labels

TASKS = ("multiclass", "multilabel", "regression")
_LOSSES = {
    "multiclass": F.cross_entropy,
    "multilabel": F.binary_cross_entropy_with_logits,
    "regression": F.mse_loss,
}
#: The metrics of each task: ``TASK_SCORERS[task](y_true, y_pred)`` gives a dict of floats
#: (F1-micro, F1-macro, accuracy; MSE, MAE, Pearson r); what ``FusionTrainer.score`` returned.
TASK_SCORERS = {
    "multiclass": classification_scores,
    "multilabel": multilabel_scores,
    "regression": regression_scores,
}
_IMPUTE_HINT = "impute the missing modalities first, e.g. UL4M4Imputer().fit(X).transform(X)"


def _check_fraction(name: str, value) -> float:
    """``value`` as a float in [0, 1), or a ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a float in [0, 1), got {value!r}")
    return float(value)


def _check_task(task) -> str:
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    return task


def _labels(y, n_rows: int, y_name: str, x_name: str) -> np.ndarray:
    """``y`` as a NumPy array with ``n_rows`` rows, or a ``ValueError`` naming both lengths."""
    y = np.atleast_1d(to_numpy(y))
    if len(y) != n_rows:
        raise ValueError(f"{y_name} has {len(y)} rows but {x_name} has {n_rows} rows")
    return y


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


class FusionModel(nn.Module):
    """Attention fusion over M modality tokens.

    Parameters
    ----------
    dims : sequence of M positive ints, the modality widths d_m (D = Σ d_m).
    n_outputs : int, number of classes / labels / regression targets.
    task : "multiclass", "multilabel" or "regression"; selects :meth:`loss`.
    width : int, token width; must be divisible by ``n_heads``.
    n_layers : int >= 0, number of ``nn.TransformerEncoderLayer`` blocks (post-LN).
    n_heads : int, attention heads.
    dropout : float in [0, 1), in the attention blocks and the head.
    dim_feedforward : int or None, hidden width of each block's feed-forward (default
        ``4 * width``).

    ``forward`` maps a packed (B, D) float32 tensor to (B, n_outputs) raw outputs (logits
    for the classification tasks).
    """

    def __init__(self, dims, n_outputs: int, task: str = "multiclass", width: int = 64,
                 n_layers: int = 1, n_heads: int = 4, dropout: float = 0.1,
                 dim_feedforward: int | None = None):
        super().__init__()
        dims = tuple(dims)
        if not dims:
            raise ValueError("dims must be a non-empty sequence of positive ints, got ()")
        dims = tuple(check_int(f"dims[{m}]", d, 1) for m, d in enumerate(dims))
        n_outputs = check_int("n_outputs", n_outputs, 1)
        width = check_int("width", width, 1)
        n_layers = check_int("n_layers", n_layers, 0)
        n_heads = check_int("n_heads", n_heads, 1)
        dropout = _check_fraction("dropout", dropout)
        if width % n_heads:
            raise ValueError(f"width ({width}) must be divisible by n_heads ({n_heads})")
        dim_feedforward = 4 * width if dim_feedforward is None else check_int(
            "dim_feedforward", dim_feedforward, 1)
        self.task = _check_task(task)
        self.dims = dims
        self.projections = nn.ModuleList(nn.Linear(d, width) for d in self.dims)
        self.modality_embeddings = nn.Parameter(torch.empty(len(self.dims), width))
        nn.init.normal_(self.modality_embeddings, std=0.02)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(width, n_heads, dim_feedforward, dropout, batch_first=True)
            for _ in range(n_layers)
        )
        self.head = nn.Sequential(
            nn.Linear(width, width), nn.ReLU(), nn.Dropout(dropout), nn.Linear(width, n_outputs)
        )

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) packed inputs → (B, M, width) tokens: token m is ``projections[m]`` of
        modality m's columns only, plus the modality embedding m."""
        if x.ndim != 2 or x.shape[1] != sum(self.dims):
            raise ValueError(
                f"expected a (B, {sum(self.dims)}) tensor for dims {self.dims}, "
                f"got {tuple(x.shape)}"
            )
        parts = torch.split(x, self.dims, dim=1)
        projected = torch.stack([proj(part) for proj, part in zip(self.projections, parts)], dim=1)
        return projected + self.modality_embeddings

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) float32 → (B, n_outputs) raw outputs."""
        h = self.tokens(x)
        for block in self.blocks:
            h = block(h)
        return self.head(h.mean(dim=1))

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean task loss: ``targets`` are (B,) int64 class codes (multiclass), (B, L)
        float 0/1 (multilabel) or (B, k) float (regression)."""
        return _LOSSES[self.task](outputs, targets)


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


class _FusionEstimator(BaseEstimator):
    """The training and inference machinery shared by :class:`FusionClassifier`,
    :class:`FusionRegressor` and :class:`FusionTrainer`: one implementation, whose task
    comes from the subclass (``task``: a parameter, or the regressor's class attribute).
    Its parameters are described in :class:`FusionClassifier`."""

    def __init__(self, width=64, n_layers=1, n_heads=4, dropout=0.1, lr=1e-3, weight_decay=0.0,
                 epochs=100, batch_size=128, patience=10, validation_fraction=0.15,
                 random_state=0, device="auto", verbose=0, standardize=True, modalities=None):
        self.width = width
        self.n_layers = n_layers
        self.n_heads = n_heads
        self.dropout = dropout
        self.lr = lr
        self.weight_decay = weight_decay
        self.epochs = epochs
        self.batch_size = batch_size
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.random_state = random_state
        self.device = device
        self.verbose = verbose
        self.standardize = standardize
        self.modalities = modalities

    # ------------------------------------------------------------------ validation
    def _check_params(self) -> None:
        _check_task(self.task)
        for name in ("epochs", "batch_size", "patience"):
            check_int(name, getattr(self, name), 1)
        check_int("random_state", self.random_state, 0)
        _check_fraction("validation_fraction", self.validation_fraction)
        if not isinstance(self.standardize, (bool, np.bool_)):
            raise ValueError(f"standardize must be True or False, got {self.standardize!r}")
        for name in ("lr", "weight_decay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or value < 0:
                raise ValueError(f"{name} must be a float >= 0, got {value!r}")

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet; call fit(X, y) first"
            )

    def _check_targets(self, y: np.ndarray, name: str) -> np.ndarray:
        """``y`` if it suits the task, else a ``ValueError`` naming ``name``: (N,) finite
        class labels (multiclass), an (N, L) 0/1 matrix (multilabel) or numbers (regression;
        their shape and finiteness are checked against the fit in :meth:`_encode_targets`)."""
        if self.task == "multiclass":
            if y.ndim != 1:
                raise ValueError(f"{name} must be 1-D class labels for task='multiclass', got "
                                 f"shape {y.shape}; use task='multilabel' for an (N, L) "
                                 "indicator matrix")
            if y.dtype.kind == "f" and not np.isfinite(y).all():
                raise ValueError(f"{name} contains NaN or inf; class labels must be finite")
            try:
                kind = type_of_target(y, input_name=name)
            except TypeError as error:  # labels of types that do not sort together
                raise ValueError(f"{name} mixes label types ({error}); missing labels as "
                                 "None or NaN?") from None
            if kind not in ("binary", "multiclass"):
                raise ValueError(f"{name} holds {kind} values, not class labels; use "
                                 "task='regression' for continuous targets")
        elif self.task == "multilabel":
            if y.ndim != 2 or not np.isin(y, (0, 1)).all():
                raise ValueError(f"{name} must be an (N, L) 0/1 label-indicator matrix for "
                                 f"task='multilabel', got shape {y.shape}")
        elif y.dtype.kind not in "biuf":
            raise ValueError(f"{name} must hold numbers for task='regression', got dtype "
                             f"{y.dtype}")
        return y

    def _fit_outputs(self, y: np.ndarray) -> None:
        """Set ``n_outputs_`` (and ``classes_`` for the classification tasks) from the checked
        training targets."""
        if self.task == "multiclass":
            self.classes_ = np.unique(y)
            if self.classes_.size < 2:
                raise ValueError(f"y has {self.classes_.size} class; multiclass needs at least 2")
            self.n_outputs_ = int(self.classes_.size)
        else:
            self.n_outputs_ = 1 if y.ndim == 1 else int(y.shape[1])
            self._flat_targets = y.ndim == 1
            if self.task == "multilabel":
                self.classes_ = np.arange(self.n_outputs_)

    def _encode_targets(self, y: np.ndarray, name: str) -> torch.Tensor:
        """Checked targets on the device as the model's loss wants them: (N,) int64 class
        codes, (N, L) float32 0/1 or (N, k) float32; ``ValueError`` naming ``name`` on a
        mismatch with the fit."""
        if self.task == "multiclass":
            codes = np.searchsorted(self.classes_, y).clip(0, self.classes_.size - 1)
            unseen = self.classes_[codes] != y
            if unseen.any():
                raise ValueError(f"{name} holds labels unseen in training, e.g. {y[unseen][0]!r}; "
                                 f"classes are {self.classes_.tolist()}")
            return torch.as_tensor(codes, dtype=torch.int64, device=self.device_)
        target = np.asarray(y, dtype=np.float32).reshape(len(y), -1)
        if target.shape[1] != self.n_outputs_ or y.ndim > 2 or not np.isfinite(target).all():
            raise ValueError(f"{name} must hold finite targets of {self.n_outputs_} columns, "
                             f"got shape {y.shape}")
        return torch.as_tensor(target, device=self.device_)

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

    def _inputs(self, X, name: str) -> torch.Tensor:
        """``X`` as the fitted model's input: (N, D) float32 on the device, in the fitted
        layout (see :meth:`_packed`), checked and standardised."""
        return self._standardised(self._packed(X, name))

    def _standardised(self, inputs: torch.Tensor) -> torch.Tensor:
        """(N, D) inputs in the fitted standard units (a new tensor), or unchanged."""
        return inputs if self.mean_ is None else (inputs - self.mean_) / self.scale_

    def _dataset(self, X, y, x_name: str, y_name: str):
        """(inputs (N, D) float32, targets) on the device for the fit, lengths checked."""
        inputs = self._inputs(X, x_name)
        y = self._check_targets(_labels(y, len(inputs), y_name, x_name), y_name)
        return inputs, self._encode_targets(y, y_name)

    def _split(self, n: int, generator: torch.Generator):
        """(train, validation) row indices on the device, shuffled by ``generator``."""
        n_val = max(1, round(self.validation_fraction * n))
        if n_val >= n:
            raise ValueError(f"validation_fraction={self.validation_fraction} leaves no training "
                             f"rows out of {n}")
        order = torch.randperm(n, generator=generator).to(self.device_)
        return order[n_val:], order[:n_val]

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y, X_val=None, y_val=None, dims=None):
        """Train the fusion model; keep the weights of the epoch with the lowest monitored loss.

        Parameters
        ----------
        X : a complete ``MultiModalArray`` (its own modalities), or a plain 2-D input whose
            modalities ``modalities`` gives: an (N, D) NumPy array, a pandas DataFrame of
            numeric columns or a Torch tensor; N >= 1, every value finite. Any numeric
            dtype; the model computes in float32.
        y : (N,) discrete class labels (multiclass: ints, strings or integral floats, at
            least 2 classes, no NaN), (N, L) 0/1 indicator matrix (multilabel) or (N,) /
            (N, k) numbers (regression).
        X_val, y_val : optional validation data for early stopping (replaces the
            ``validation_fraction`` split); given together or not at all. ``X_val`` takes
            the forms ``predict`` takes (its modalities matched to ``X``'s by name, or its
            columns laid out like ``X``'s) and is standardised with ``X``'s statistics;
            ``y_val`` holds only classes seen in ``y``.
        dims : deprecated (``FutureWarning``); the modality widths of a plain ``X``, as
            ``modalities=dims`` would give them.

        Returns
        -------
        self
        """
        self._check_params()
        if (X_val is None) != (y_val is None):
            raise ValueError("X_val and y_val must be given together")
        self.device_ = resolve_torch_device(self.device)
        inputs = self._packed(self._fit_layout(X, dims), "X")
        y = self._check_targets(_labels(y, len(inputs), "y", "X"), "y")
        self._fit_outputs(y)
        self.mean_ = self.scale_ = None
        if self.standardize:
            scale, self.mean_ = torch.std_mean(inputs, dim=0, correction=0)
            self.scale_ = torch.where(scale <= MIN_SCALE, 1.0, scale)
            inputs = self._standardised(inputs)
        targets = self._encode_targets(y, "y")
        generator = torch.Generator().manual_seed(self.random_state)
        if X_val is not None:
            validation = self._dataset(X_val, y_val, "X_val", "y_val")
        elif self.validation_fraction > 0:
            train_rows, val_rows = self._split(len(inputs), generator)
            validation = (inputs[val_rows], targets[val_rows])
            inputs, targets = inputs[train_rows], targets[train_rows]
        else:
            validation = None
        cuda = [self.device_] if self.device_.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(self.random_state)
            self.model_ = self._new_model()
            self._train(inputs, targets, validation, generator)
        return self

    def _new_model(self) -> FusionModel:
        return FusionModel(self.dims_, self.n_outputs_, self.task, self.width, self.n_layers,
                           self.n_heads, self.dropout).to(self.device_)

    def _train(self, inputs, targets, validation, generator) -> None:
        """Adam over shuffled mini-batches with early stopping; restores the best weights."""
        optimizer = torch.optim.Adam(self.model_.parameters(), lr=self.lr,
                                     weight_decay=self.weight_decay)
        self.history_, self.best_loss_, best_state, stale = [], float("inf"), None, 0
        epochs = tqdm(range(self.epochs), desc="fusion", unit="epoch",
                      disable=not self.verbose, leave=False)
        for epoch in epochs:
            train_loss = self._train_epoch(optimizer, inputs, targets, generator)
            val_loss = None if validation is None else self._loss(*validation)
            self.history_.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss})
            epochs.set_postfix(train_loss=train_loss, val_loss=val_loss)
            monitored = train_loss if val_loss is None else val_loss
            if not math.isfinite(monitored):
                raise FloatingPointError(f"the loss became {monitored} at epoch {epoch}; "
                                         "lower lr or check the inputs' scale")
            if monitored < self.best_loss_:
                self.best_loss_, self.best_epoch_, stale = monitored, epoch, 0
                best_state = {k: v.detach().clone() for k, v in self.model_.state_dict().items()}
            else:
                stale += 1
                if stale >= self.patience:
                    break
        self.n_epochs_ = len(self.history_)
        self.model_.load_state_dict(best_state)
        self.model_.eval()

    def _train_epoch(self, optimizer, inputs, targets, generator) -> float:
        """One pass over shuffled mini-batches; returns the row-weighted mean training loss."""
        self.model_.train()
        order = torch.randperm(len(inputs), generator=generator).to(self.device_)
        total = 0.0
        for rows in torch.split(order, self.batch_size):
            optimizer.zero_grad(set_to_none=True)
            loss = self.model_.loss(self.model_(inputs[rows]), targets[rows])
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(rows)
        return total / len(inputs)

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def _outputs(self, inputs: torch.Tensor) -> torch.Tensor:
        """(N, D) → (N, n_outputs) raw outputs in eval mode, batch by batch."""
        self.model_.eval()
        return torch.cat([self.model_(batch) for batch in torch.split(inputs, self.batch_size)])

    def _loss(self, inputs, targets) -> float:
        return float(self.model_.loss(self._outputs(inputs), targets))

    def _predict_outputs(self, X) -> torch.Tensor:
        self._check_fitted()
        return self._outputs(self._inputs(X, "X"))

    def loss(self, X, y) -> float:
        """The task loss (mean over rows) of the fitted model on ``(X, y)``, as monitored
        for early stopping."""
        self._check_fitted()
        return self._loss(*self._dataset(X, y, "X", "y"))

    def predict(self, X) -> np.ndarray:
        """(N,) class labels (multiclass, of ``classes_``' dtype), (N, L) int64 0/1
        indicators (multilabel, probability > 0.5) or (N,) / (N, k) float32 values
        (regression, shaped like y). ``X`` is a complete ``MultiModalArray`` (modalities
        matched by name) or a plain input with ``fit``'s columns."""
        outputs = self._predict_outputs(X).cpu().numpy()
        if self.task == "multiclass":
            return self.classes_[outputs.argmax(axis=1)]
        if self.task == "multilabel":
            return (outputs > 0).astype(np.int64)
        return outputs[:, 0] if self._flat_targets else outputs


class _FusionTaskEstimator(_FusionEstimator):
    """A fusion estimator whose ``task`` is a parameter (the classifier, the deprecated
    trainer); adds ``predict_proba``."""

    def __init__(self, task="multiclass", width=64, n_layers=1, n_heads=4, dropout=0.1, lr=1e-3,
                 weight_decay=0.0, epochs=100, batch_size=128, patience=10,
                 validation_fraction=0.15, random_state=0, device="auto", verbose=0,
                 standardize=True, modalities=None):
        self.task = task
        super().__init__(width, n_layers, n_heads, dropout, lr, weight_decay, epochs, batch_size,
                         patience, validation_fraction, random_state, device, verbose, standardize,
                         modalities)

    def predict_proba(self, X) -> np.ndarray:
        """(N, C) float32 class probabilities (multiclass, columns in ``classes_`` order) or
        (N, L) float32 per-label probabilities (multilabel); ``X`` as for ``predict``."""
        if self.task == "regression":
            raise ValueError("predict_proba is only defined for task='multiclass' or 'multilabel'")
        outputs = self._predict_outputs(X)
        probs = outputs.softmax(dim=1) if self.task == "multiclass" else outputs.sigmoid()
        return probs.cpu().numpy()


class FusionClassifier(ClassifierMixin, _FusionTaskEstimator):
    """Fusion-model classifier on completed embeddings, a scikit-learn classifier.

    ``score`` is the accuracy (subset accuracy for multilabel), ``is_classifier`` holds, so
    ``cross_val_score`` and ``GridSearchCV`` use stratified folds; the F1 scores are one call
    away: ``classification_scores(y, clf.predict(X))`` (multilabel: ``multilabel_scores``)
    from :mod:`ul4m4_gpu.evaluation.metrics`. Inputs are a complete ``MultiModalArray``
    (what ``UL4M4Imputer.transform`` returns, so the classifier can follow the imputer in a
    ``Pipeline``) or a plain (N, D) array / DataFrame / tensor split into modalities by
    ``modalities``. Trains exactly as :class:`FusionTrainer` did with the same parameters.

    Parameters
    ----------
    task : "multiclass" (cross-entropy; y holds (N,) labels) or "multilabel" (BCE with
        logits; y is an (N, L) 0/1 indicator matrix).
    width, n_layers, n_heads, dropout : architecture, see :class:`FusionModel`.
    lr, weight_decay : Adam settings.
    epochs : int, maximum number of passes over the training rows.
    batch_size : int, mini-batch size (also the inference batch size).
    patience : int, stop after this many epochs without a lower monitored loss.
    validation_fraction : float in [0, 1); the share of the training rows held out for
        early stopping when ``fit`` gets no ``X_val``. With 0 and no ``X_val`` the
        training loss is monitored instead.
    random_state : int; seeds the weights, dropout, the split and the shuffling. On the
        CPU the same seed gives identical predictions (CUDA kernels may not be bit-exact).
    device : "auto", "cpu" or "cuda".
    verbose : int; > 0 shows a tqdm progress bar over the epochs.
    standardize : bool, default True; standardise every input dimension with the mean and
        standard deviation of ``fit``'s ``X`` (kept in ``mean_`` and ``scale_``), so raw
        embeddings of very different scales train well. Inputs already in z-scores may
        pass False.
    modalities : None, a list of M widths, a list of M column-position lists or a dict
        name → columns; which columns of a plain 2-D input form each modality (see
        :func:`modality_columns`): e.g. ``[76, 216, 64]`` (consecutive blocks),
        ``[[0, 2], [1, 3, 4]]``, or ``{"img": ["i0", "i1"], "txt": ["t0"]}`` (column labels
        of a DataFrame; column positions for an array or tensor). Every column belongs to
        exactly one modality. Required for a plain input; with a ``MultiModalArray`` it is
        None (the array's own modalities) or the array's widths.

    Attributes
    ----------
    model_ : the fitted ``FusionModel``, holding the best checkpoint (lowest monitored loss).
    classes_ : (C,) the sorted class labels (multiclass; predictions are mapped back to
        them), or ``arange(L)``, the label indices (multilabel).
    n_outputs_ : int, C or L. dims_ : tuple of M ints. device_ : torch.device.
    modality_names_ : tuple of M strings: ``X``'s own (``MultiModalArray``), the keys of a
        ``modalities`` dict, else ``m0``, ``m1``, ... Later ``MultiModalArray`` inputs are
        matched to them by name (see :func:`~ul4m4_gpu.core.validation.in_fitted_order`).
    modality_columns_ : tuple of M (d_m,) int64 arrays, the positions of each modality's
        columns in a plain 2-D input (consecutive blocks after a ``MultiModalArray`` fit).
    n_features_in_ : int, D, the number of columns every plain input must have.
    feature_names_in_ : (D,) object array of column labels; only when ``fit``'s ``X`` was a
        DataFrame with string column labels; a DataFrame given later must have the same.
    mean_, scale_ : (D,) float32 tensors on ``device_``, the per-dimension mean and standard
        deviation (population; ≤ 1e-8 becomes 1) of ``fit``'s ``X`` in the model's column
        order, including the rows ``validation_fraction`` holds out; None when
        ``standardize`` is False.
    history_ : list of dicts ``{"epoch", "train_loss", "val_loss"}`` (``val_loss`` None
        without validation data).
    best_epoch_ : int, the epoch whose weights were restored; best_loss_ : float, its
        monitored loss; n_epochs_ : int, epochs run.
    """

    def _check_params(self) -> None:
        if self.task == "regression":
            raise ValueError("FusionClassifier takes task='multiclass' or 'multilabel', got "
                             "'regression'; use FusionRegressor for regression")
        super()._check_params()


class FusionRegressor(RegressorMixin, _FusionEstimator):
    """Fusion-model regressor (MSE) on completed embeddings, a scikit-learn regressor.

    ``score`` is R² (averaged over the targets of an (N, k) y), ``is_regressor`` holds; MSE,
    MAE and Pearson r are ``regression_scores(y, reg.predict(X))`` from
    :mod:`ul4m4_gpu.evaluation.metrics`. ``y`` holds (N,) or (N, k) finite numbers;
    ``predict`` returns float32 values of y's shape. Inputs as :class:`FusionClassifier`.

    Parameters
    ----------
    width, n_layers, n_heads, dropout : architecture, see :class:`FusionModel`.
    lr, weight_decay, epochs, batch_size, patience, validation_fraction, random_state,
    device, verbose, standardize, modalities : as in :class:`FusionClassifier`.

    Attributes
    ----------
    task : "regression", a class attribute (not a parameter).
    model_, dims_, device_, modality_names_, modality_columns_, n_features_in_,
    feature_names_in_, mean_, scale_, history_, best_epoch_, best_loss_, n_epochs_ : as in
        :class:`FusionClassifier`.
    n_outputs_ : int, k (1 for an (N,) y).
    """

    task = "regression"


class FusionTrainer(_FusionTaskEstimator):
    """Deprecated (``FutureWarning`` when constructed): use :class:`FusionClassifier`
    (``task="multiclass"`` or ``"multilabel"``) or :class:`FusionRegressor`.

    The same model and training; the differences: ``task`` may also be "regression",
    :func:`~sklearn.base.is_classifier` is False, and :meth:`score` returns a dict of
    metrics rather than a number. Parameters and attributes as in
    :class:`FusionClassifier` (``classes_`` only for the classification tasks).
    """

    def __new__(cls, *args, **kwargs):
        warnings.warn("FusionTrainer is deprecated; use FusionClassifier (task='multiclass' or "
                      "'multilabel') or FusionRegressor, whose score is a number (accuracy, R²); "
                      "FusionTrainer.score's metrics are ul4m4_gpu.classification_scores(y, "
                      "estimator.predict(X)) (multilabel_scores, regression_scores for the "
                      "other tasks)", FutureWarning, stacklevel=2)
        return super().__new__(cls)

    def score(self, X, y) -> dict[str, float]:
        """Metrics of ``predict(X)`` against ``y``: F1-micro, F1-macro and accuracy
        (multiclass; multilabel on the indicator matrix, subset accuracy), or MSE, MAE and
        Pearson r (regression); see :data:`TASK_SCORERS`."""
        return TASK_SCORERS[self.task](np.asarray(to_numpy(y)), self.predict(X))
