"""Files the node keeps in its state directory: atomic writes, and the policy journal's
file of signed records (``policy_journal`` decides what goes in it).

``<state_dir>/policy.journal`` is a sequence of records, each a signed payload exactly
as the control plane sent it (``seg_contract.signing.encode_record``: a JSON header line
with the statement, the signature and the length, then the payload bytes). Nothing else
is stored, in particular no time: at start every record is verified again and the
policy's freshness is the newest signed issue time among them.

A whole journal is written atomically (temporary file in the same directory, fsync,
rename, fsync of the directory): a crash leaves the old or the new file. Records added
later are appended and fsynced; a crash in the middle of an append leaves a truncated
last record, which is dropped at the next start (cutting records off the end can only
take the node back to a state it verified earlier, which anyone able to write the file
could do anyway by putting an older copy back). A file that fails any other check is
moved aside (``policy.journal.corrupt-<time>``, kept for the operator) and reported.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from seg_contract.signing import RejectReason, SignatureRejected, SignedPayload, decode_record

log = logging.getLogger(__name__)

JOURNAL_FILE = "policy.journal"
LEGACY_FILE = "policy.lkg"  # an unsigned last-known-good file of an earlier release
MAX_RECORDS = 100_000  # far beyond any journal the node writes (it compacts long before)


def atomic_write(path: Path, data: bytes | Iterable[bytes]) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old or the new content."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            for part in [data] if isinstance(data, bytes) else data:
                fh.write(part)
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


def move_aside(path: Path, suffix: str) -> Path:
    """Rename ``path`` to ``<name>.<suffix>-<time>`` (for the operator) and return it."""
    aside = path.with_name(f"{path.name}.{suffix}-{int(time.time())}")
    os.replace(path, aside)
    return aside


@dataclass(frozen=True)
class Read:
    records: list[SignedPayload]
    sizes: list[int]  # each record's length on disk
    torn: bool  # a truncated last record was dropped (an append cut short by a crash)


def decode_records(data: bytes, *, allow_torn: bool) -> Read:
    """Every record in ``data`` (``SignatureRejected(malformed)`` when it is not a
    sequence of records). Nothing is verified here."""
    records: list[SignedPayload] = []
    sizes: list[int] = []
    offset = 0
    while offset < len(data):
        try:
            signed, used = decode_record(data, offset)
        except SignatureRejected as exc:
            truncated = exc.detail in ("record is truncated", "no record header")
            if allow_torn and records and truncated and b"\n" not in _after_header(data, offset):
                log.warning("the policy journal ends in a partly written record: dropped")
                return Read(records, sizes, torn=True)
            raise SignatureRejected(
                exc.reason, f"record {len(records) + 1}: {exc.detail}"
            ) from None
        records.append(signed)
        sizes.append(used)
        offset += used
        if len(records) > MAX_RECORDS:
            raise SignatureRejected(RejectReason.MALFORMED, f"more than {MAX_RECORDS} records")
    return Read(records, sizes, torn=False)


def _after_header(data: bytes, offset: int) -> bytes:
    """What follows the header line of the record at ``offset`` (a truncated record's
    payload has no newline after it that could start another record... unless the
    payload itself holds one; JSON payloads written by pydantic never do)."""
    newline = data.find(b"\n", offset)
    return b"" if newline < 0 else data[newline + 1 :]


class JournalFile:
    """The journal's bytes on disk (``policy_journal.PolicyJournal`` owns the content)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / JOURNAL_FILE

    def read(self) -> Read | None:
        """The records on disk (None: no journal). ``SignatureRejected`` when the file
        is not a journal."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        return decode_records(data, allow_torn=True)

    def rewrite(self, parts: Iterable[bytes]) -> None:
        atomic_write(self.path, parts)

    def head(self, length: int) -> bytes:
        """The first ``length`` bytes (the base snapshot's record, kept on compaction)."""
        with self.path.open("rb") as fh:
            data = fh.read(length)
        if len(data) != length:
            raise OSError(f"{self.path}: shorter than its first record")
        return data

    def append(self, parts: Iterable[bytes]) -> None:
        with self.path.open("ab") as fh:
            for part in parts:
                fh.write(part)
            fh.flush()
            os.fsync(fh.fileno())

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    def move_aside(self) -> Path:
        return move_aside(self.path, "corrupt")
