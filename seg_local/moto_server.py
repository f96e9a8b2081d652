"""The moto server that plays DynamoDB and SQS locally, made fit to run for days.

moto (5.2) appends every model instance it ever creates to a class-level list
(``BaseModel.instances_tracked``) that only feeds its ``/moto-api/data.json`` dashboard,
and DynamoDB makes such an instance for every item copy a Scan, Query, GetItem or
UpdateItem returns. In server mode nothing ever clears those lists, so a long-running
local system grew by ~220 MB/h under a steady trickle of changes (bench/soak.py) while
its data stayed small. ``reset_model_data()`` drops only those references (the backends'
tables and queues are untouched); a trimmer thread calls it periodically.

moto's DynamoDB does not lock: two concurrent requests on one item (two conditional
``UpdateItem`` ADDs, a transaction and a put) can interleave and lose a write, which
DynamoDB itself never does. The local runtime's functions do run concurrently (one
poller per queue, the API, the WebSocket routes), so DynamoDB requests are served one at
a time here: each is then atomic, as the product's conditional writes and transactions
assume. SQS requests are not serialised (a long-polling receive would hold everyone).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from moto.core.model_instances import model_data, reset_model_data
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import BaseWSGIServer, make_server

log = logging.getLogger(__name__)

TRIM_INTERVAL_S = 30.0  # ~100 KB of tracked copies per busy second: bounded to a few MB


def tracked_instances() -> int:
    """How many model instances moto is holding on to for its dashboard."""
    return sum(
        len(getattr(model, "instances_tracked", ()))
        for models in model_data.values()
        for model in models.values()
    )


WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def serialise_dynamodb(app: WsgiApp) -> WsgiApp:
    """Serve DynamoDB requests (``X-Amz-Target: DynamoDB_20120810.*``) one at a time."""
    lock = threading.Lock()

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB"):
            return app(environ, start_response)
        with lock:
            # Materialise the body under the lock: the handler's work happens here.
            return list(app(environ, start_response))

    return wrapped


class LocalMotoServer:
    """moto's server (threaded, as ``ThreadedMotoServer``) on ``host:port`` (0:
    ephemeral), with DynamoDB requests serialised, plus its trimmer. Raises OSError when
    the port is taken."""

    def __init__(self, host: str, port: int = 0, trim_interval_s: float = TRIM_INTERVAL_S):
        self._server: BaseWSGIServer = make_server(
            host,
            port,
            serialise_dynamodb(DomainDispatcherApplication(create_backend_app)),
            threaded=True,
            request_handler=MotoRequestHandler,
        )
        self._serving = threading.Thread(
            target=self._server.serve_forever, name="moto-server", daemon=True
        )
        self._interval_s = trim_interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="moto-trimmer", daemon=True)

    def start(self) -> str:
        """Start serving; returns the endpoint URL."""
        self._serving.start()
        self._thread.start()
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5.0)
        self._server.shutdown()
        self._serving.join(5.0)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            reset_model_data()
            log.debug("moto tracked instances trimmed")
