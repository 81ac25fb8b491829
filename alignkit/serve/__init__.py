"""An OpenAI-compatible chat server for any alignkit model (``alignkit serve MODEL``)."""

from alignkit.serve.app import create_app
from alignkit.serve.server import BackgroundServer, build_app, read_api_key, run

__all__ = ["BackgroundServer", "build_app", "create_app", "read_api_key", "run"]
