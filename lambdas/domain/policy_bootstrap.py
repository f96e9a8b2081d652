"""The first watermark of a cluster created before committed versions existed, as a
value (``lambdas.usecases.policy_bootstrap`` has the protocol).

Such a cluster item has a version counter but no ``committed_version``, and its
versions have no log records: its entries were written without the log. Its first W is
the counter's value C at a *mark* (the moment the control plane first met the item),
taken once a grace has passed since then, so that every version <= C is final (no
writer still holds one). Its digest is that of the policy *as of C*, computed from one
read of every entry and the log records after C, key by key:

- a key read at a version <= C: that entry is the key's value at C (every version
  <= C is final, so nothing <= C can still replace it);
- a key read at a version > C: it was changed after the mark by committed versions,
  which are logged; the earliest of their changes to the key replaced the key's value
  at C, and its ``old_term`` is that value's term (None: the key was absent at C);
- a key not read: absent at C (entries are never deleted).

This holds although the read is no snapshot (writers commit while it runs): each key is
judged by the version it was read at. A key read above C with no logged change is an
entry written after the mark by a writer that does not log (code from before this
protocol, still running during an upgrade): its value at C is lost, so there is no
watermark, and the bootstrap begins again with a new mark.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from lambdas.domain.policy_log import SETTINGS_KEY, ChangeKind, LogRecord, LogState, Watermark
from seg_contract import ClusterSettings, DeviceEntry, UserCredential
from seg_contract.digest import MODULUS, credential_term, entry_term, settings_term


@dataclass(frozen=True)
class BootstrapMark:
    """When the control plane first met a cluster item without a committed version,
    and the counter's value then: every version up to ``counter`` was handed out
    before ``at``."""

    counter: int
    at: datetime

    def due(self, now: datetime, grace: timedelta) -> bool:
        """Whether every version up to the counter is final: its writer had a whole
        grace (three Lambda timeouts, ``policy_log.ABANDON_GRACE``) to finish."""
        return now - self.at >= grace


def _earliest_old_terms(
    counter: int, records: Iterable[LogRecord]
) -> dict[tuple[ChangeKind, str], int | None]:
    """For every key a committed version after ``counter`` changed: the old term of
    the earliest such change (the term of the key's value at ``counter``)."""
    earliest: dict[tuple[ChangeKind, str], int | None] = {}
    for record in sorted(records, key=lambda r: r.version):
        if record.version <= counter or record.state is not LogState.COMMITTED:
            continue
        for change in record.changes:
            earliest.setdefault((change.kind, change.key), change.old_term)
    return earliest


def first_watermark(
    counter: int,
    *,
    devices: Iterable[DeviceEntry],
    credentials: Iterable[UserCredential],
    settings: ClusterSettings,
    settings_version: int,
    records: Iterable[LogRecord],
) -> Watermark | None:
    """W = ``counter`` with the digest of the policy as of ``counter`` (see the module
    doc), from every stored entry and credential, the stored settings with the version
    that wrote them, and the log records of the versions after ``counter`` (read after
    the entries). None: an entry newer than ``counter`` has no logged change (begin
    again)."""
    earliest = _earliest_old_terms(counter, records)
    missing = object()
    total = 0
    items: list[tuple[ChangeKind, str, int, int]] = [
        (ChangeKind.DEVICE, e.key, e.version, entry_term(e)) for e in devices
    ]
    items += [(ChangeKind.CREDENTIAL, c.user, c.version, credential_term(c)) for c in credentials]
    settings_now = settings_term(settings, settings_version)
    items.append((ChangeKind.SETTINGS, SETTINGS_KEY, settings_version, settings_now))
    for kind, key, version, term in items:
        if version <= counter:
            total += term
            continue
        old = earliest.get((kind, key), missing)
        if old is missing:
            return None
        if isinstance(old, int):
            total += old
    digest = total % MODULUS
    return Watermark(counter, digest, ((counter, digest),))
