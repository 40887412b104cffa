"""An ASGI app served by uvicorn on loopback from a background thread, for end-to-end tests."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable
from types import TracebackType

import uvicorn
from starlette.types import ASGIApp

HOST = "127.0.0.1"
STARTUP_TIMEOUT = 10.0


class _Server(uvicorn.Server):
    """Tells the test thread when it is serving, or that it gave up trying."""

    def __init__(self, config: uvicorn.Config, ready: threading.Event) -> None:
        super().__init__(config)
        self.ready = ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets)
        finally:
            self.ready.set()


class ServerThread:
    """`with ServerThread(make_app) as server:` serves `make_app(server.url)` until the block ends.

    The socket is bound (port 0) before the app is built, so the app can know its own URL (the
    demo's default redirect URLs point at the gateway). Entering returns once uvicorn has run the
    app's lifespan startup and accepts connections; leaving asks it to exit and joins the thread.
    """

    def __init__(self, make_app: Callable[[str], ASGIApp]) -> None:
        self._make_app = make_app
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._server: _Server | None = None
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    def __enter__(self) -> ServerThread:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted connections inherit it: without it each response waits ~40 ms on Nagle's
        # algorithm and the client's delayed ACK (see gateway/sandbox/server.py).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((HOST, 0))
        sock.listen(128)
        self._socket = sock
        self.url = f"http://{HOST}:{sock.getsockname()[1]}"
        config = uvicorn.Config(
            self._make_app(self.url),
            log_level="warning",
            lifespan="on",
            ws="none",
            timeout_graceful_shutdown=2,
        )
        self._server = _Server(config, self._ready)
        self._thread = threading.Thread(target=self._run, name="gateway", daemon=True)
        self._thread.start()
        if not self._ready.wait(STARTUP_TIMEOUT) or not self._server.started:
            self._stop()
            raise RuntimeError("the server did not start") from self._error
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop()
        if self._error is not None and exc is None:
            raise RuntimeError("the server failed") from self._error

    def _run(self) -> None:
        assert self._server is not None
        assert self._socket is not None
        try:
            asyncio.run(self._server.serve(sockets=[self._socket]))
        except BaseException as exc:
            self._error = exc
        finally:
            self._ready.set()

    def _stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(STARTUP_TIMEOUT)
        if self._socket is not None:
            self._socket.close()
