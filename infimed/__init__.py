"""The ``infimed`` command line: the composition root that wires the packages together."""

from __future__ import annotations

__all__ = ["__version__"]

try:  # installed distribution
    from importlib.metadata import PackageNotFoundError, version

    __version__ = version("infimed")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+source"
