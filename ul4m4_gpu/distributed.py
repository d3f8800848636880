"""Entry point kept for ``ul4m4_gpu.distributed``: the Dask imputer lives in
:mod:`ul4m4_gpu.scale.dask_imputer`."""

from .scale.dask_imputer import DaskMultiModalArray, DaskUL4M4Imputer

__all__ = ["DaskMultiModalArray", "DaskUL4M4Imputer"]
