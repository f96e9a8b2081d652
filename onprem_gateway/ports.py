"""The seams between the gateway's data path (``onprem_gateway.proxy``) and its node
agent (``onprem_gateway.agent``).

The data path reads the current policy and records access events through these two
protocols and knows nothing else of the control plane: whether the policy arrives by
snapshot, delta, push or from disk, and whether events are sent, spooled or handed to
another process, is the agent's business. Both calls are synchronous, cheap and never
block or raise: they run on the request path.
"""

from __future__ import annotations

from typing import Protocol

from onprem_gateway.core.policy_index import PolicyIndex
from seg_contract import AccessEvent


class PolicyView(Protocol):
    def current(self) -> PolicyIndex:
        """The policy to decide with now (an immutable index; swapped atomically)."""
        ...


class EventSink(Protocol):
    def record(self, event: AccessEvent) -> None:
        """Queue one access event for reporting. Never blocks, never raises."""
        ...
