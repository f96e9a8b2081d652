"""The gateway's pure core: EAS request parsing, who is asking (Authorization schemes,
NTLM messages, Bearer tokens, the identity rules), the admission and access decisions
(with routing, as the one value the proxy acts on), a proxied request's lifecycle as a
transition table, the policy index and its freshness, blocked-device answers (WBXML),
reconnect backoff and the gateway-side credential helpers.

Nothing here does I/O or reads the clock: every function takes values (the time as a
parameter) and returns values. This package may import only the standard library,
``seg_contract`` (and PyNaCl through ``seg_contract.crypto``) and PyJWT (``bearer``:
signature checks with keys passed in).
"""
