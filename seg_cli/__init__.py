"""The ``seg`` admin command line: ``seg up`` / ``seg demo`` (the whole system on one
machine, through ``seg_local.stack``) and console commands over the control plane's
HTTP API (``seg cluster ...``, ``seg devices ...``, ``seg device ...``).

It may import ``seg_local`` (to start the system) and ``seg_contract``; it talks to the
control plane only over HTTP, like any other console client.
"""
