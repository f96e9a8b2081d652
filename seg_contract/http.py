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

# The control plane sets this header (value "rejected") on every 401/403 that refuses a
# gateway's cluster credential (HTTP routes and the WebSocket $connect). A 401/403 without
# it came from something else in the path (a proxy, a WAF, a captive portal): the node
# backs off and retries instead of treating its credential as revoked.
CREDENTIAL_REJECTED_HEADER = "X-SEG-Credential"
CREDENTIAL_REJECTED_VALUE = "rejected"

# Signed policy (``seg_contract.signing``): every policy answer carries the control
# plane's statement and signature in these two headers (base64url, no padding); the body
# is the signed payload, unchanged. A 304 carries a ``confirm`` statement (empty payload).
POLICY_STATEMENT_HEADER = "X-SEG-Policy-Statement"
POLICY_SIGNATURE_HEADER = "X-SEG-Policy-Signature"
# GET: the signed set of keys the control plane signs with (``SigningKeySet``).
SIGNING_KEYS_PATH = f"{GATEWAY_PREFIX}/signing-keys"
