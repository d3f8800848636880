"""The ``ul4m4`` command line (:mod:`ul4m4_gpu.cli.commands`)."""

from .commands import build_parser, main

__all__ = ["build_parser", "main"]
