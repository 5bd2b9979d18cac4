"""Running the app with uvicorn: in the foreground (``paretoalign serve``) or in a background thread (tests,
benchmarks, notebooks)."""

from __future__ import annotations

import threading
import time

import uvicorn
from fastapi import FastAPI

from ...core.errors import ParetoAlignError

STARTUP_TIMEOUT_S = 60.0


def run_server(app: FastAPI, host: str, port: int, log_level: str = "info") -> None:
    """Serve ``app`` until interrupted (Ctrl-C finishes open requests first)."""
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=10)


class BackgroundServer:
    """``app`` on a real socket in a daemon thread; ``port=0`` takes a free port. Use as a context manager:
    ``with BackgroundServer(app) as server: OpenAI(base_url=server.url + "/v1")``."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning") -> None:
        self.host = host
        self.port = port
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> "BackgroundServer":
        self.thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise ParetoAlignError(f"the server did not start on {self.host}:{self.port}; is the port in use?")
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc_info) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=STARTUP_TIMEOUT_S)
