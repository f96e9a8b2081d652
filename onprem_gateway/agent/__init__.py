"""The gateway's node agent: everything around the data path that keeps it supplied.

- ``lifecycle``: the control-plane WebSocket as a pure, table-driven state machine.
- ``link``: the asyncio loop that executes it (refresh schedule, pushes, keepalive);
  ``policy_sync``: the snapshot and delta fetches into the store.
- ``cloud``: the HTTP client of the control plane's gateway routes.
- ``policy_store`` / ``persist``: the current policy (atomic swap) and last-known-good.
- ``signing_keys_file``: the policy signing keys the node learned, stored as received.
- ``spool`` / ``reporter``: access events batched to the control plane, spooled on disk.
- ``admin`` / ``telemetry`` / ``diagnostics``: the admin port (health, metrics, why).
- ``eas_runner``: how the EAS server is built and run in-process (``workers = 0``).
- ``workers`` / ``worker`` / ``channel``: the multi-process runner and its wire.
- ``node``: the composition root that wires them and runs the process.

May import ``onprem_gateway.core``, ``onprem_gateway.proxy``, ``onprem_gateway.ports``,
``onprem_gateway.config`` and ``seg_contract``; never ``lambdas``. Nothing here runs on
the request path except ``PolicyStore.current`` and ``EventBuffer.record``.
"""
