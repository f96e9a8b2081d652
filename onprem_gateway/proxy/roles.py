"""What the shared server state (``state.py``) needs of the objects it holds: the open
client connections (the sweeper and shutdown walk them) and the in-flight flows
(revocation decides them again).

Structural types, so ``state.py`` imports neither ``connection.py`` nor ``flow.py``
(both import the state): the proxy's modules import one another in one direction only
(``tests/unit/test_layering.py``)."""

from __future__ import annotations

from typing import Protocol

from onprem_gateway.core.policy_index import PolicyIndex


class OpenConnection(Protocol):
    """A client connection (``connection.ClientConnection``) as the state sees it."""

    @property
    def current(self) -> object | None:
        """The flow being answered, if any."""

    @property
    def last_active(self) -> float: ...
    @property
    def timeout(self) -> float: ...
    @property
    def head_deadline(self) -> float: ...
    def idle_expired(self, now: float) -> bool: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


class InFlight(Protocol):
    """An admitted request still in flight (``flow.RequestFlow``): what a policy change
    decides again."""

    def recheck(self, policy: PolicyIndex, now: float) -> int: ...
