"""What a flow (``flow.py``) and its admission (``admission.py``) need of the
client connection that carries them (``connection.ClientConnection``).

A structural type, so neither imports ``connection.py`` (which creates flows): the
proxy's modules import one another in one direction only
(``tests/unit/test_layering.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from onprem_gateway.core.identity import Binding
    from onprem_gateway.proxy.state import ServerState
    from onprem_gateway.proxy.upstream import UpstreamConnection


class ClientSide(Protocol):
    # Reasons reading from the device is paused (``pause_reading_for``).
    @property
    def PAUSE_UPSTREAM(self) -> int: ...
    @property
    def PAUSE_PENDING(self) -> int: ...

    @property
    def state(self) -> ServerState: ...
    @property
    def peer_ip(self) -> str: ...
    @property
    def peer_trusted(self) -> bool: ...
    @property
    def closed(self) -> bool: ...
    @property
    def write_paused(self) -> bool: ...

    # Written by the flow: the idle timeout and activity the sweeper reads, the NTLM
    # identity proved on this connection and the upstream connection that carries it.
    timeout: float
    last_active: float
    binding: Binding | None
    private_upstream: UpstreamConnection | None

    def write(self, data: bytes) -> None: ...
    def touch(self) -> None: ...
    def pause_reading_for(self, reason: int) -> None: ...
    def resume_reading_for(self, reason: int) -> None: ...
    def flow_finished(self, flow: object, *, close: bool) -> None: ...
    def abort(self) -> None: ...
    def private_upstream_lost(self, conn: UpstreamConnection) -> None: ...
