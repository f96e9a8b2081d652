"""The on-prem data plane: an Exchange ActiveSync reverse proxy that lets a device sync
only while the control plane's policy allows it.

- ``core``: pure code (EAS parsing, the access decision, the policy index, backoff,
  freshness); no I/O.
- ``proxy``: the streaming HTTP data path (the EAS listener and the upstream client).
- ``agent``: the node agent (control-plane link, policy store, reporter and spool, admin
  port, multi-process runner); never on the request path.
- ``ports``: the two seams between ``proxy`` and ``agent``.
- ``config``: the node's configuration, parsed once; ``__main__``: the ``seg-gateway``
  command.

It imports ``seg_contract`` and never ``lambdas``.
"""
