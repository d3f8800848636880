"""Data in and out (layer 2): the :class:`~ul4m4_gpu.io.data.MultiModalArray` container, list
columns, the ``.npz`` / Parquet files of the command line and the model file."""
