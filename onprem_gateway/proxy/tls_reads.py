"""TLS reads decrypted into one buffer lent to each connection in turn.

A protocol that is not buffered gets each TLS read as a new bytes object. uvloop's
``SSLProtocol`` allocates 256 KiB for it (``SSL_READ_MAX_SIZE``), has the decrypted bytes
copied in and shrinks it. Once large blocks are mapped (``agent/allocator.py``), glibc
serves that with an ``mmap``, an ``mremap`` and a ``munmap`` per read. A buffered protocol
(``asyncio.BufferedProtocol``) is asked for a buffer instead. Both legs of the proxy
answer with one buffer per server and leg, so nothing is allocated per read.

Lending one buffer to every connection is safe because a read is synchronous. The TLS
layer calls ``get_buffer``, decrypts into it and calls ``buffer_updated``. The HTTP
parser copies whatever it hands on (httptools' callbacks receive ``bytes``) before that
returns. The TLS layer never reads for another connection within that call: a reader
that is resumed is scheduled with ``call_soon``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

# One read's decrypted bytes at most (uvloop's ``SSL_READ_MAX_SIZE``); what is left
# pending is read in the next turn.
TLS_READ_BUFFER = 256 * 1024


def tls_read_buffer() -> memoryview:
    """A buffer for one server's connections on one leg."""
    return memoryview(bytearray(TLS_READ_BUFFER))


class BufferedReads(asyncio.BufferedProtocol):
    """Mixed into a protocol with ``data_received``: each read is handed to it as a view
    of ``_read_buffer``, which the concrete class holds (in a slot)."""

    __slots__ = ()
    _read_buffer: memoryview
    data_received: Callable[[bytes | memoryview], None]  # the protocol's own

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self._read_buffer[:nbytes])
