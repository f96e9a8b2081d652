"""ASGI apps served by uvicorn on an event loop of their own (a background thread), so
the runtime's ``start()`` and ``stop()`` are plain calls from a CLI, a test or a script.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import uvicorn


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket (port 0: ephemeral). SO_REUSEADDR lets a restarted
    control plane take its old port back at once."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    return sock


@dataclass
class Served:
    name: str
    server: uvicorn.Server
    sock: socket.socket

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])


class ServerThread:
    """One event loop thread serving several uvicorn servers."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="seg-local-servers", daemon=True)
        self._served: list[Served] = []
        self._done: Future[None] = Future()

    def add(
        self,
        name: str,
        app: Any,
        sock: socket.socket,
        *,
        ws_max_size: int = 16 * 1024 * 1024,
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
    ) -> Served:
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="on" if name == "api" else "off",
            ws_max_size=ws_max_size,
            ws_ping_interval=None,  # API Gateway does not ping clients; the gateway does
            timeout_graceful_shutdown=5,
            ssl_certfile=ssl_certfile,
            ssl_keyfile=ssl_keyfile,
        )
        served = Served(name, uvicorn.Server(config), sock)
        self._served.append(served)
        return served

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(
                asyncio.gather(*(s.server.serve(sockets=[s.sock]) for s in self._served))
            )
            self._done.set_result(None)
        except BaseException as exc:  # report start-up failures to start()
            self._done.set_exception(exc)
        finally:
            self.loop.close()

    def start(self, timeout: float = 20.0) -> None:
        self._thread.start()
        deadline = timeout
        step = 0.01
        while not all(s.server.started for s in self._served):
            if self._done.done():
                self._done.result()  # raises the start-up error
                raise RuntimeError("a local server stopped during start-up")
            if deadline <= 0:
                raise TimeoutError("local servers did not start in time")
            threading.Event().wait(step)
            deadline -= step

    def call(self, coro_fn: Callable[[], Awaitable[Any]], timeout: float = 10.0) -> Any:
        """Run a coroutine on the servers' loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro_fn(), self.loop).result(timeout)  # type: ignore[arg-type]

    def stop(self, timeout: float = 15.0) -> None:
        for served in self._served:
            served.server.should_exit = True
        self._thread.join(timeout)
        for served in self._served:
            served.sock.close()
