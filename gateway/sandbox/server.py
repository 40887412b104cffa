"""Both simulators served by uvicorn on loopback: in the running event loop or in a thread."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from types import TracebackType

import uvicorn
from starlette.applications import Starlette

from gateway.sandbox.almanac import create_almanac_app
from gateway.sandbox.autoposting import create_autoposting_app
from gateway.sandbox.state import SandboxState

DEFAULT_HOST = "127.0.0.1"
STARTUP_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class RunningSandbox:
    almanac_url: str
    autoposting_url: str
    state: SandboxState


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The sandbox runs inside someone else's process: signals are the host's business (and two
        # servers saving and restoring each other's handlers would leak one).
        yield


@contextlib.asynccontextmanager
async def start_sandbox(
    state: SandboxState | None = None,
    *,
    host: str = DEFAULT_HOST,
    almanac_port: int = 0,
    autoposting_port: int = 0,
) -> AsyncIterator[RunningSandbox]:
    """Serve both simulators in the running event loop until the block exits."""
    state = SandboxState() if state is None else state
    async with contextlib.AsyncExitStack() as stack:
        almanac_url = await stack.enter_async_context(
            _serving(create_almanac_app(state), host, almanac_port)
        )
        autoposting_url = await stack.enter_async_context(
            _serving(create_autoposting_app(state), host, autoposting_port)
        )
        yield RunningSandbox(almanac_url, autoposting_url, state)


@contextlib.asynccontextmanager
async def _serving(app: Starlette, host: str, port: int) -> AsyncIterator[str]:
    # Binding here, not in uvicorn, makes port 0 work and tells us the real port.
    sock = _bind(host, port)
    config = uvicorn.Config(
        app, log_level="warning", lifespan="off", ws="none", timeout_graceful_shutdown=2
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(STARTUP_TIMEOUT):
            while not server.started:
                if task.done():
                    task.result()  # raises the startup error
                    raise RuntimeError("sandbox server exited during startup")
                await asyncio.sleep(0.01)
        real_host, real_port = sock.getsockname()[:2]
        # A host name stays a name ("localhost"): clients treat a name and its address apart
        # (cookies, for one, are kept for names only).
        yield f"http://{_url_host(real_host if _is_address(host) else host)}:{real_port}"
    finally:
        server.should_exit = True
        try:
            await task
        finally:
            sock.close()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted connections inherit this: without it every response waits ~40 ms on Nagle's
        # algorithm and the client's delayed ACK (seen on loopback: 44 ms -> 2 ms per request).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class SandboxThread:
    """`with SandboxThread() as sandbox:` serves both simulators from a daemon thread.

    Entering blocks until both accept connections; leaving stops them and joins the thread.
    """

    def __init__(
        self,
        state: SandboxState | None = None,
        *,
        host: str = DEFAULT_HOST,
        almanac_port: int = 0,
        autoposting_port: int = 0,
    ) -> None:
        self.state = SandboxState() if state is None else state
        self._options = (host, almanac_port, autoposting_port)
        self._running: RunningSandbox | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="sandbox", daemon=True)

    @property
    def almanac_url(self) -> str:
        return self._started().almanac_url

    @property
    def autoposting_url(self) -> str:
        return self._started().autoposting_url

    def __enter__(self) -> SandboxThread:
        self._thread.start()
        if not self._ready.wait(STARTUP_TIMEOUT + 5):
            raise RuntimeError("sandbox servers did not start in time")
        if self._error is not None:
            self._thread.join()
            raise RuntimeError("sandbox servers failed to start") from self._error
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join()
        self._running = None
        if self._error is not None and exc is None:
            raise RuntimeError("sandbox servers failed to stop cleanly") from self._error

    def _started(self) -> RunningSandbox:
        if self._running is None:
            raise RuntimeError("the sandbox is not running")
        return self._running

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:
            self._error = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        host, almanac_port, autoposting_port = self._options
        self._stop = asyncio.Event()
        async with start_sandbox(
            self.state, host=host, almanac_port=almanac_port, autoposting_port=autoposting_port
        ) as running:
            self._running = running
            self._loop = asyncio.get_running_loop()
            self._ready.set()
            await self._stop.wait()
