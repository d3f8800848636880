"""The package's version, written in one place: pyproject.toml, read back from the installed
distribution's metadata."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

#: The version reported when the package runs from a source tree that was never installed
#: (no distribution metadata to read): a PEP 440 local version that claims no release.
UNKNOWN_VERSION = "0+unknown"


def installed_version(distribution: str = "ul4m4-gpu") -> str:
    """The version of the installed ``distribution``, or :data:`UNKNOWN_VERSION`."""
    try:
        return version(distribution)
    except PackageNotFoundError:
        return UNKNOWN_VERSION


__version__ = installed_version()
