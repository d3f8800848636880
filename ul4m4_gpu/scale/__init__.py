"""Beyond one machine's memory (layer 4): the streamed fit and transform of Parquet datasets
and the Dask imputer, both front ends of the one fit of :mod:`ul4m4_gpu.core.fit`."""
