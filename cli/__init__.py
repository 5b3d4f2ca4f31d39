"""The command line: composes the cloud app and the local relay (which never import each other)."""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
