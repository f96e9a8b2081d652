"""A TCP proxy on 127.0.0.1 that plays a network between one gateway node and the
control plane's WebSocket endpoint: ``pass`` forwards, ``blackhole`` keeps connections
open but drops every byte (a silent partition: the node does not notice), ``refuse``
closes every connection and refuses new ones (a partition the node notices)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable


class TcpProxy:
    def __init__(self, target: Callable[[], tuple[str, int]]) -> None:
        self._target = target  # read at each connection: the control plane may move
        self.mode = "pass"
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    def start(self) -> int:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._accept, "127.0.0.1", 0), self._loop
        ).result(5)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    def set_mode(self, mode: str) -> None:
        assert mode in {"pass", "blackhole", "refuse"}
        self.mode = mode
        if mode == "refuse":
            asyncio.run_coroutine_threadsafe(self._close_all(), self._loop).result(5)

    async def _close_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "refuse":
            writer.transport.abort()
            return
        host, port = self._target()
        try:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update({writer, up_writer})
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if self.mode == "pass":
                    writer.write(data)
                    await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._close_all(), self._loop).result(5)
        if self._server is not None:
            self._server.close()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
