"""Where the contract's messages travel: the control plane's gateway routes and the
header a gateway node names itself with. The control plane serves these paths
(``lambdas.api.routes_gateway``) and the gateway calls them (``onprem_gateway.agent``),
both from here."""

from __future__ import annotations

GATEWAY_PREFIX = "/gateway/v1"
POLICY_PATH = f"{GATEWAY_PREFIX}/policy"  # GET: PolicySnapshot (ETag, 304)
DELTA_PATH = f"{GATEWAY_PREFIX}/policy/delta"  # GET ?since=N: PolicyDelta (410: too old)
EVENTS_PATH = f"{GATEWAY_PREFIX}/access-events"  # POST: AccessEventBatch (202)

# Every gateway call and the WebSocket $connect carry the node's id in this header (the
# WebSocket also accepts it as the query parameter ``node_id``).
NODE_ID_HEADER = "X-SEG-Node-Id"
NODE_ID_QUERY = "node_id"
