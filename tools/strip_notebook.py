"""Strip outputs from Jupyter notebooks before committing them.

    python tools/strip_notebook.py notebooks/*.ipynb           # rewrite in place
    python tools/strip_notebook.py --check notebooks/*.ipynb   # exit 1 if any has outputs

Clears every code cell's outputs and execution count, and drops per-cell execution
timing and the notebook's widget state. Cell sources, tags (e.g. ``parameters``) and the
kernelspec are kept. Needs ``nbformat`` (in the ``test`` extra).
"""

from __future__ import annotations

import argparse
import sys

import nbformat

CELL_METADATA_DROPPED = ("execution", "collapsed", "scrolled", "ExecuteTime")
NOTEBOOK_METADATA_DROPPED = ("widgets",)


def strip(nb) -> bool:
    """Strip ``nb`` (a ``NotebookNode``) in place; return True when anything changed."""
    changed = False
    for cell in nb.cells:
        for key in CELL_METADATA_DROPPED:
            changed |= cell.metadata.pop(key, None) is not None
        if cell.cell_type != "code":
            continue
        if cell.outputs or cell.execution_count is not None:
            cell.outputs, cell.execution_count = [], None
            changed = True
    for key in NOTEBOOK_METADATA_DROPPED:
        changed |= nb.metadata.pop(key, None) is not None
    return changed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="notebooks to strip")
    parser.add_argument("--check", action="store_true",
                        help="only report notebooks with outputs; exit 1 if there are any")
    args = parser.parse_args(argv)
    dirty = []
    for path in args.paths:
        nb = nbformat.read(path, as_version=4)
        if strip(nb):
            dirty.append(path)
            if not args.check:
                nbformat.write(nb, path)
    for path in dirty:
        print(f"{'has outputs' if args.check else 'stripped'}: {path}")
    return 1 if args.check and dirty else 0


if __name__ == "__main__":
    sys.exit(main())
