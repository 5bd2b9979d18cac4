"""The OpenAI-compatible server and the web playground (``paretoalign serve``): routes (``app``) over one engine
per served model (``engine``), whose scheduler batches concurrent requests (``scheduler``)."""

from .app import ServerSettings, create_app
from .engine import Engine, ServedModel, describe_policy
from .runner import BackgroundServer, run_server

__all__ = ["BackgroundServer", "Engine", "ServedModel", "ServerSettings", "create_app", "describe_policy", "run_server"]
