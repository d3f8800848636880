"""Downstream fusion model: completed (frozen) embeddings → a small Torch transformer.

One linear projection per modality to a common width gives M tokens; a learned modality
embedding is added to each; multi-head self-attention blocks (residual + LayerNorm,
dropout, feed-forward) mix them; the tokens are mean-pooled and an MLP head gives the
outputs. Tasks: ``"multiclass"`` (cross-entropy), ``"multilabel"`` (BCE with logits) and
``"regression"`` (MSE). :class:`FusionTrainer` fits it scikit-learn style with Adam,
mini-batches and early stopping on a validation split, on inputs it standardises per
dimension with the training rows' statistics.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError
from sklearn.utils.multiclass import type_of_target
from torch import nn
from ..core.progress import tqdm

from ..core.backend import DEVICES, to_numpy
from ..io.data import MultiModalArray
from .metrics import classification_scores, multilabel_scores, regression_scores
from ..core.normalise import MIN_SCALE
from ..core.validation import check_dims, check_int, default_modality_names

TASKS = ("multiclass", "multilabel", "regression")
_LOSSES = {
    "multiclass": F.cross_entropy,
    "multilabel": F.binary_cross_entropy_with_logits,
    "regression": F.mse_loss,
}
_SCORERS = {
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


class FusionTrainer(BaseEstimator):
    """Fit a :class:`FusionModel` on completed embeddings, scikit-learn style.

    Parameters
    ----------
    task : "multiclass", "multilabel" or "regression".
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

    Attributes
    ----------
    model_ : the fitted ``FusionModel``, holding the best checkpoint (lowest monitored loss).
    dims_ : tuple of M ints; n_outputs_ : int; device_ : torch.device.
    modality_names_ : tuple of M strings, the modality names of ``fit``'s ``X`` (``m0``,
        ``m1``, ... for a packed array). Later inputs are matched to them by name (see
        :func:`~ul4m4_gpu.core.validation.in_fitted_order`); a packed array matches by position.
    mean_, scale_ : (D,) float32 tensors on ``device_``, the per-dimension mean and standard
        deviation (population; ≤ 1e-8 becomes 1) of ``fit``'s ``X``, including the rows
        ``validation_fraction`` holds out; None when ``standardize`` is False.
    classes_ : (C,) the sorted class labels (multiclass only); predictions are mapped back.
    history_ : list of dicts ``{"epoch", "train_loss", "val_loss"}`` (``val_loss`` None
        without validation data).
    best_epoch_ : int, the epoch whose weights were restored; best_loss_ : float, its
        monitored loss; n_epochs_ : int, epochs run.
    """

    def __init__(self, task="multiclass", width=64, n_layers=1, n_heads=4, dropout=0.1,
                 lr=1e-3, weight_decay=0.0, epochs=100, batch_size=128, patience=10,
                 validation_fraction=0.15, random_state=0, device="auto", verbose=0,
                 standardize=True):
        self.task = task
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
                "This FusionTrainer instance is not fitted yet; call fit(X, y) first"
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
        """Set ``n_outputs_`` (and ``classes_`` for multiclass) from the checked training
        targets."""
        if self.task == "multiclass":
            self.classes_ = np.unique(y)
            if self.classes_.size < 2:
                raise ValueError(f"y has {self.classes_.size} class; multiclass needs at least 2")
            self.n_outputs_ = int(self.classes_.size)
        else:
            self.n_outputs_ = 1 if y.ndim == 1 else int(y.shape[1])
            self._flat_targets = y.ndim == 1

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

    def _inputs(self, X, name: str) -> torch.Tensor:
        """``X`` as the fitted model's input: (N, D) float32 on the device, modalities matched
        to the fitted ones by name, checked and standardised."""
        if isinstance(X, MultiModalArray):
            X = X.matched_to(self.modality_names_, self.dims_, name)
        inputs, _ = as_fusion_input(X, self.dims_, self.device_, name)
        return self._standardised(inputs)

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
    def fit(self, X, y, X_val=None, y_val=None, dims=None) -> "FusionTrainer":
        """Train the fusion model; keep the weights of the epoch with the lowest monitored loss.

        Parameters
        ----------
        X : a complete ``MultiModalArray`` or a packed (N, D) tensor/array (then ``dims``),
            N >= 1.
        y : (N,) discrete class labels (multiclass: ints, strings or integral floats, at
            least 2 classes, no NaN), (N, L) 0/1 indicator matrix (multilabel) or (N,) /
            (N, k) numbers (regression).
        X_val, y_val : optional validation data for early stopping (replaces the
            ``validation_fraction`` split); given together or not at all. ``X_val``'s
            modalities are matched to ``X``'s by name and standardised with ``X``'s
            statistics; ``y_val`` holds only classes seen in ``y``.
        dims : the modality widths when ``X`` is a packed tensor/array.
        """
        self._check_params()
        if (X_val is None) != (y_val is None):
            raise ValueError("X_val and y_val must be given together")
        self.device_ = resolve_torch_device(self.device)
        inputs, self.dims_ = as_fusion_input(X, dims, self.device_)
        self.modality_names_ = (X.names if isinstance(X, MultiModalArray)
                                else default_modality_names(len(self.dims_)))
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

    def predict_proba(self, X) -> np.ndarray:
        """(N, C) class probabilities (multiclass, columns in ``classes_`` order) or (N, L)
        per-label probabilities (multilabel), float32."""
        if self.task == "regression":
            raise ValueError("predict_proba is only defined for task='multiclass' or 'multilabel'")
        outputs = self._predict_outputs(X)
        probs = outputs.softmax(dim=1) if self.task == "multiclass" else outputs.sigmoid()
        return probs.cpu().numpy()

    def predict(self, X) -> np.ndarray:
        """(N,) class labels (multiclass), (N, L) int64 0/1 indicators (multilabel,
        probability > 0.5) or (N,) / (N, k) float32 values (regression, shaped like y)."""
        outputs = self._predict_outputs(X).cpu().numpy()
        if self.task == "multiclass":
            return self.classes_[outputs.argmax(axis=1)]
        if self.task == "multilabel":
            return (outputs > 0).astype(np.int64)
        return outputs[:, 0] if self._flat_targets else outputs

    def score(self, X, y) -> dict[str, float]:
        """Metrics of ``predict(X)`` against ``y``: F1-micro, F1-macro and accuracy
        (multiclass; multilabel on the indicator matrix, subset accuracy), or MSE, MAE and
        Pearson r (regression)."""
        return _SCORERS[self.task](np.asarray(to_numpy(y)), self.predict(X))
