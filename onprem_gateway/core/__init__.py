"""The gateway's pure core: EAS request parsing, the access decision, the policy index
and its freshness, blocked-device answers (WBXML), reconnect backoff and the
gateway-side credential helpers.

Nothing here does I/O or reads the clock: every function takes values (the time as a
parameter) and returns values. This package may import only the standard library and
``seg_contract`` (and PyNaCl through ``seg_contract.crypto``).
"""
