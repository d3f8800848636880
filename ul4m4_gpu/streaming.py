"""Entry point kept for ``ul4m4_gpu.streaming``: the streamed fit and transform live in
:mod:`ul4m4_gpu.scale.streaming`."""

from .scale.streaming import DEFAULT_BATCH_ROWS, ParquetSource, fit_parquet, transform_parquet

__all__ = ["DEFAULT_BATCH_ROWS", "ParquetSource", "fit_parquet", "transform_parquet"]
