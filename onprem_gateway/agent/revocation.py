"""Policy changes end the in-flight requests they no longer admit.

``follow_policy`` subscribes an EAS server to the ``PolicyStore`` that feeds it (the
agent's own store in in-process mode, each worker's replica in worker mode): right
after every change is applied, the server decides again the requests the change may
affect (``core.revocation.affected``) and ends those now refused, so a device blocked
while its Ping is held gets its blocked answer at once, not at its heartbeat.
"""

from __future__ import annotations

from onprem_gateway.agent.policy_store import PolicyOp, PolicyStore
from onprem_gateway.core.policy_index import PolicyIndex
from onprem_gateway.core.revocation import EVERYONE, affected
from onprem_gateway.proxy import EasServer


def follow_policy(store: PolicyStore, server: EasServer) -> None:
    def on_change(op: PolicyOp, index: PolicyIndex) -> None:
        # A whole new policy may change any decision, with or without a body to look at.
        whole = op.kind in ("snapshot", "replace")
        server.policy_changed(EVERYONE if whole else affected(op.body))

    store.subscribe(on_change)
