"""The public signing keys of a token issuer, as the cluster settings carry them.

An issuer publishes its keys as a JWK Set (RFC 7517 5) at its ``jwks_uri``. The gateway
needs only the public members of its signing keys, so ``signing_keys`` keeps exactly
those (the contract's ``Jwk``) and refuses a set that would make the policy carry a
secret (a private or symmetric key) or nothing usable.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from seg_contract import Jwk

# Members that only a private or symmetric key has (RFC 7518 6.2.2, 6.3.2, 6.4).
_PRIVATE = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_PUBLIC_MEMBERS = tuple(Jwk.model_fields)
MAX_KEYS = 20  # BearerIssuer.keys' bound


class JwksError(ValueError):
    """A key set the cluster cannot use; the message says why (never a key)."""


def signing_keys(document: Mapping[str, Any]) -> tuple[Jwk, ...]:
    """The public signing keys of a JWK Set document."""
    keys = document.get("keys") if isinstance(document, Mapping) else None
    if not isinstance(keys, list):
        raise JwksError("not a JWK Set (no 'keys' list)")
    out: list[Jwk] = []
    for raw in keys:
        if not isinstance(raw, Mapping):
            raise JwksError("a key of the set is not an object")
        if _PRIVATE & raw.keys():
            raise JwksError(
                f"key {str(raw.get('kid', ''))[:64]!r} has private or symmetric members: "
                "a JWKS endpoint must publish public keys only"
            )
        if raw.get("use", "sig") != "sig" or raw.get("kty") not in ("RSA", "EC", "OKP"):
            continue  # encryption keys and key types a gateway cannot verify with
        try:
            out.append(Jwk(**{k: raw[k] for k in _PUBLIC_MEMBERS if k in raw}))
        except ValidationError as exc:
            first = exc.errors()[0]
            raise JwksError(
                f"key {str(raw.get('kid', ''))[:64]!r} is malformed ({first['msg']})"
            ) from None
    if not out:
        raise JwksError("the set has no signing key (RSA, EC or OKP with use 'sig')")
    if len(out) > MAX_KEYS:
        raise JwksError(f"more than {MAX_KEYS} signing keys")
    return tuple(out)
