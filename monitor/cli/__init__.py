"""The command line: `persistence-monitor` and `python -m monitor`."""

from ._app import build_parser, main

__all__ = ["build_parser", "main"]
