"""The gateway's data path: the streaming EAS reverse proxy (uvloop + httptools on raw
asyncio Protocols).

Public entry: ``start_eas_server(settings, policy, sink, sock=...) -> EasServer``
(``server.py``), ``ProxySettings`` (``settings.py``), ``ProxyMetrics`` (``metrics.py``).
May import ``onprem_gateway.core``, ``onprem_gateway.ports`` and ``seg_contract``; never
the node agent (``onprem_gateway.agent``) and never anything that talks to the cloud.
"""

from onprem_gateway.proxy.metrics import ProxyMetrics
from onprem_gateway.proxy.server import EasServer, start_eas_server
from onprem_gateway.proxy.settings import Limits, ProxySettings, Timeouts, Upstream

__all__ = [
    "EasServer",
    "Limits",
    "ProxyMetrics",
    "ProxySettings",
    "Timeouts",
    "Upstream",
    "start_eas_server",
]
