"""The errors of the data files (:mod:`ul4m4_gpu.io.files`, :mod:`ul4m4_gpu.io.parquet`):
what reading a file may raise, and the one-line errors they become, naming the file."""

from __future__ import annotations

import zipfile
import zlib

# What a malformed or unreadable file raises while it is read; pyarrow's errors derive
# from these too (ArrowInvalid from ValueError, ArrowIOError from OSError, ...).
READ_ERRORS = (OSError, EOFError, ValueError, TypeError, KeyError, NotImplementedError,
               zipfile.BadZipFile, zlib.error)


class InputFileError(ValueError):
    """An input data file cannot be read; the message is one line naming the file."""


class OutputFileError(ValueError):
    """An output data file cannot be written as asked; the message is one line naming it."""


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` with its whitespace (newlines included) collapsed."""
    return " ".join(str(exc).split()) or type(exc).__name__
