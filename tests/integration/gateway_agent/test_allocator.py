"""A worker's large buffers keep mappings of their own after others were freed
(``agent.allocator``), checked in a fresh interpreter through glibc's own counters."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

# Frees one 256 KiB block (a closed TLS connection's read buffer), then takes four more
# and prints how many of them glibc mapped on their own (mallinfo2's ``hblks``).
PROBE = """
import ctypes, sys
from onprem_gateway.agent.allocator import map_large_buffers

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd",
        "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "held":
    assert map_large_buffers()
SIZE = 256 * 1024
libc.free(libc.malloc(SIZE))
before = libc.mallinfo2().hblks
taken = [libc.malloc(SIZE) for _ in range(4)]
print(libc.mallinfo2().hblks - before)
"""

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")


def mapped_after_a_free(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")},
            "PYTHONPATH": str(ROOT),
        },
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return int(out.stdout)


def test_large_buffers_are_mapped_on_their_own_although_one_was_freed() -> None:
    assert mapped_after_a_free("held") == 4


def test_without_it_glibc_raises_its_threshold_and_takes_them_from_the_heap() -> None:
    # What the module exists for: the dynamic threshold, seen on this very C library.
    assert mapped_after_a_free("default") == 0
