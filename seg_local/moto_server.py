"""The moto server that plays DynamoDB and SQS locally, made fit to run for days.

moto (5.2) appends every model instance it ever creates to a class-level list
(``BaseModel.instances_tracked``) that only feeds its ``/moto-api/data.json`` dashboard,
and DynamoDB makes such an instance for every item copy a Scan, Query, GetItem or
UpdateItem returns. In server mode nothing ever clears those lists, so a long-running
local system grew by ~220 MB/h under a steady trickle of changes (bench/soak.py) while
its data stayed small. ``reset_model_data()`` drops only those references (the backends'
tables and queues are untouched); a trimmer thread calls it periodically.
"""

from __future__ import annotations

import logging
import threading

from moto.core.model_instances import model_data, reset_model_data
from moto.server import ThreadedMotoServer

log = logging.getLogger(__name__)

TRIM_INTERVAL_S = 30.0  # ~100 KB of tracked copies per busy second: bounded to a few MB


def tracked_instances() -> int:
    """How many model instances moto is holding on to for its dashboard."""
    return sum(
        len(getattr(model, "instances_tracked", ()))
        for models in model_data.values()
        for model in models.values()
    )


class LocalMotoServer:
    """A ``ThreadedMotoServer`` on ``host:port`` (0: ephemeral) plus its trimmer."""

    def __init__(self, host: str, port: int = 0, trim_interval_s: float = TRIM_INTERVAL_S):
        self._server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
        self._interval_s = trim_interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="moto-trimmer", daemon=True)

    def start(self) -> str:
        """Start serving; returns the endpoint URL. Raises OSError if the port is taken."""
        self._server.start()
        self._thread.start()
        host, port = self._server.get_host_and_port()
        return f"http://{host}:{port}"

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5.0)
        self._server.stop()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            reset_model_data()
            log.debug("moto tracked instances trimmed")
