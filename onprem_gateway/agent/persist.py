"""The last-known-good policy on disk: atomic writes, integrity-checked reads.

File format (``<state_dir>/policy.lkg``): one JSON header line, then the payload::

    {"format": "seg-gateway-policy", "v": 1, "length": N, "sha256": "<hex>",
     "confirmed_at": 1764210000.0, "saved_at": "2026-11-27T02:30:00+00:00"}\\n
    <N bytes: the PolicySnapshot as JSON>

The digest covers the payload bytes exactly as written, so no canonical-JSON rules are
needed. A write goes to a temporary file in the same directory, is fsynced, renamed over
the old file, and the directory is fsynced: a crash leaves the old or the new file, never
a mix. A file that fails any check is moved aside (``policy.lkg.corrupt-<time>``, kept
for the operator) and reported: the node then starts without a policy, i.e. fails
closed, instead of enforcing something it cannot trust or crash-looping on it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from seg_contract import PolicySnapshot

log = logging.getLogger(__name__)

FORMAT = "seg-gateway-policy"
FORMAT_VERSION = 1
FILE_NAME = "policy.lkg"
# A header line is small; a longer first line means the file is not ours.
_MAX_HEADER = 4096


class PolicyFileError(ValueError):
    """A policy file that cannot be trusted (why is in the message)."""


@dataclass(frozen=True)
class SavedPolicy:
    snapshot: PolicySnapshot
    confirmed_at: float  # epoch seconds of the last contact that vouched for it


def encode(snapshot: PolicySnapshot, confirmed_at: float, now: float) -> bytes:
    payload = snapshot.model_dump_json().encode()
    header = {
        "format": FORMAT,
        "v": FORMAT_VERSION,
        "length": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
        "confirmed_at": confirmed_at,
        "saved_at": datetime.fromtimestamp(now, UTC).isoformat(),
    }
    return json.dumps(header, separators=(",", ":")).encode() + b"\n" + payload


def decode(data: bytes) -> SavedPolicy:
    newline = data.find(b"\n", 0, _MAX_HEADER)
    if newline < 0:
        raise PolicyFileError("no header line")
    try:
        header = json.loads(data[:newline])
    except ValueError as exc:
        raise PolicyFileError(f"header is not JSON ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise PolicyFileError("not a seg-gateway policy file")
    if header.get("v") != FORMAT_VERSION:
        raise PolicyFileError(f"unsupported format version {header.get('v')!r}")
    payload = data[newline + 1 :]
    if len(payload) != header.get("length"):
        raise PolicyFileError(
            f"payload is {len(payload)} bytes, header says {header.get('length')} (truncated?)"
        )
    if hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        raise PolicyFileError("sha256 mismatch: the payload was altered or damaged")
    confirmed_at = header.get("confirmed_at")
    if not isinstance(confirmed_at, int | float):
        raise PolicyFileError("header has no confirmed_at")
    try:
        snapshot = PolicySnapshot.model_validate_json(payload)
    except ValidationError as exc:
        raise PolicyFileError(
            f"payload is not a valid policy snapshot ({exc.error_count()} errors)"
        ) from None
    return SavedPolicy(snapshot, float(confirmed_at))


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old or the new content."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class PolicyFile:
    """The last-known-good policy of one node."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FILE_NAME

    def save(self, snapshot: PolicySnapshot, confirmed_at: float) -> None:
        atomic_write(self.path, encode(snapshot, confirmed_at, time.time()))

    def load(self) -> SavedPolicy | None:
        """The saved policy, None when there is none; raises ``PolicyFileError`` after
        moving a damaged file aside."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return decode(data)
        except PolicyFileError as exc:
            aside = self.path.with_name(f"{FILE_NAME}.corrupt-{int(time.time())}")
            os.replace(self.path, aside)
            raise PolicyFileError(f"{self.path}: {exc}; moved aside to {aside.name}") from None


def read_policy_file(path: Path) -> PolicySnapshot:
    """A policy file given on the command line: a plain ``PolicySnapshot`` JSON document
    (what ``GET /gateway/v1/policy`` returns) or a last-known-good file copied from a
    node."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PolicyFileError(f"{path}: cannot read ({exc.strerror})") from None
    if data.startswith(b'{"format":"' + FORMAT.encode()):
        try:
            return decode(data).snapshot
        except PolicyFileError as exc:
            raise PolicyFileError(f"{path}: {exc}") from None
    try:
        return PolicySnapshot.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise PolicyFileError(
            f"{path}: not a valid PolicySnapshot ({exc.error_count()} errors; first at "
            f"{where or 'top level'}: {first.get('msg')})"
        ) from None
