"""Where the C allocator of a process that serves EAS (a worker, or a node with
``workers = 0``) puts large buffers: in their own mappings, always.

Every TLS connection a worker holds owns a 256 KiB read buffer from uvloop's
``SSLProtocol`` (``SSL_READ_MAX_SIZE``), taken with ``malloc``. The kernel only writes
the bytes it receives into it, so a held Ping touches one or two of its pages, and only
those count as resident, as long as the buffer is a mapping of its own.

glibc does map blocks above its mmap threshold (128 KiB at start), but it raises the
threshold to the size of each mapped block that is freed ("dynamic threshold",
mallopt(3)). After the first closed TLS connection, the buffers come from the heap
instead, whose recycled pages are already dirty from earlier use. Setting the threshold
explicitly turns the dynamic adjustment off. With it, and with TLS reads into a lent
buffer (``proxy/tls_reads.py``), 20,000 held TLS Pings over 3 workers cost 32.2 KiB each
instead of 47.2-47.6 (``bench/held_pings.py``, docs/gateway.md).

The cost is a ``mmap``/``munmap`` pair per TLS connection, small beside its handshake.
On a C library other than glibc (musl's ``mallopt`` does nothing) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

# glibc's <malloc.h>.
M_MMAP_THRESHOLD = -3
# glibc's own starting value: blocks of 128 KiB and more get a mapping of their own.
MMAP_THRESHOLD = 128 * 1024


def map_large_buffers() -> bool:
    """Hold glibc's mmap threshold at ``MMAP_THRESHOLD`` for this process (one that
    serves EAS: a worker, or a node in-process); whether the C library took it."""
    if not _mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD):
        log.info("the C library keeps its own mmap threshold: held TLS connections cost more")
        return False
    return True


def _mallopt(param: int, value: int) -> bool:
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(param, value))
