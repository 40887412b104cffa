"""A throwaway `redis-server` on loopback, for tests of the shared idempotency store.

Tests skip when `redis-server` is not installed, unless GATEWAY_REDIS_TESTS=required (as CI sets
it: .ci/run installs Debian's redis-server), which turns the skip into a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import pytest

HOST = "127.0.0.1"
START_TIMEOUT = 10.0


def redis_server_binary() -> str:
    """The `redis-server` to run, or a skip (a failure when the tests are required)."""
    binary = shutil.which("redis-server")
    if binary is None:
        reason = "redis-server is not installed (apt-get install redis-server)"
        if os.environ.get("GATEWAY_REDIS_TESTS") == "required":
            pytest.fail(f"GATEWAY_REDIS_TESTS=required, but {reason}")
        pytest.skip(reason)
    return binary


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _ping(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """`with RedisServer() as redis:` runs a Redis without persistence in a temporary directory
    on a free loopback port (`redis.url`) until the block ends; `stop()` ends it sooner."""

    def __init__(self) -> None:
        self.binary = redis_server_binary()
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._directory: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
        if self._directory is not None:
            self._directory.cleanup()
            self._directory = None

    def start(self) -> None:
        """Start it (again on the same port, after `stop`), once it answers PING."""
        if self._directory is None:
            self._directory = tempfile.TemporaryDirectory(prefix="gateway-redis-")
        directory = Path(self._directory.name)
        # A free port can be taken between choosing it and binding it: on a first start, choose
        # again then. A restart keeps its port: clients were given the URL.
        restart = bool(self.port)
        for _ in range(1 if restart else 3):
            self.port = self.port or _free_port()
            options = {"port": self.port, "bind": HOST, "save": "", "appendonly": "no"}
            options |= {"dir": directory, "logfile": directory / "redis.log"}
            command = [self.binary]
            for name, value in options.items():
                command += [f"--{name}", str(value)]
            self._process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline and self._process.poll() is None:
                if _ping(self.port):
                    return
                time.sleep(0.02)
            self.stop()
            self.port = self.port if restart else 0
        log = directory / "redis.log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise RuntimeError(f"redis-server did not start:\n{tail}")

    def stop(self) -> None:
        """Stop it, and wait until it has exited."""
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
