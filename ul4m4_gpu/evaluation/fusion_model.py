"""The fusion network and its tasks: :class:`FusionModel` (one token per modality, self-attention,
a pooled MLP head), the tasks it trains for (:data:`TASKS`), their losses and their metrics
(:data:`TASK_SCORERS`)."""

from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F
from torch import nn

from ..core.validation import check_int
from .metrics import classification_scores, multilabel_scores, regression_scores

#: The tasks the model trains for (its loss, the estimators' targets and predictions).
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


def check_fraction(name: str, value) -> float:
    """``value`` as a float in [0, 1), or a ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a float in [0, 1), got {value!r}")
    return float(value)


def check_task(task) -> str:
    """``task`` if it is one of :data:`TASKS`, else a ``ValueError``."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    return task


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
        dropout = check_fraction("dropout", dropout)
        if width % n_heads:
            raise ValueError(f"width ({width}) must be divisible by n_heads ({n_heads})")
        dim_feedforward = 4 * width if dim_feedforward is None else check_int(
            "dim_feedforward", dim_feedforward, 1)
        self.task = check_task(task)
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
