"""The package's progress bars: ``tqdm.auto``'s (the widget bar in Jupyter, the text bar
elsewhere) where ipywidgets can draw the widget, tqdm's text bar otherwise. Importing
``tqdm.auto`` in Jupyter without ipywidgets warns "IProgress not found. Please update
jupyter and ipywidgets"; this module never imports it then."""

from __future__ import annotations


def progress_class() -> type:
    """The tqdm class the bars use, chosen when called: ``tqdm.auto.tqdm`` when ipywidgets'
    ``FloatProgress`` (the widget ``tqdm.notebook`` draws) imports, else ``tqdm.std.tqdm``."""
    try:
        from ipywidgets import FloatProgress  # noqa: F401
    except ImportError:
        from tqdm.std import tqdm as bar
    else:
        from tqdm.auto import tqdm as bar
    return bar


def tqdm(*args, **kwargs):
    """A progress bar of :func:`progress_class`, with ``tqdm``'s arguments."""
    return progress_class()(*args, **kwargs)
