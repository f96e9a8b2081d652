"""One record of the audit trail, as a value (``lambdas.usecases.audit`` writes and
searches them).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class AuditEvent:
    seq: str  # "<format_instant(at)>#<random>": unique, sorts by time
    at: str  # format_instant()
    actor: str
    role: str
    action: str
    target: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    reason: str

    @property
    def month(self) -> str:
        return self.at[:7]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
