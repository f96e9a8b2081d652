"""Normalisation of the identifiers that key the access list.

The gateway and the control plane must agree byte for byte on how a user name and an
EAS DeviceId are spelled before either is used as a key, so the one definition lives
here, in the contract.

- DeviceId (MS-ASHTTP 2.2.1.1.1.2.3): an opaque client-chosen string; clients are not
  consistent about its case (some iOS builds upper-case it, some MDMs report it
  lower-case), so it is case-folded and stripped.
- User: a device may present ``DOMAIN\\user``, ``user@domain`` or ``user`` (in the query,
  the base64 query's tag 8, or Basic auth), and the MDM may report any of them. All
  three resolve to the case-folded bare account name. Within one tenant the account
  name is unique (sAMAccountName / UPN prefix); a forest with the same account name in
  two domains would need domain-qualified keys, which this contract does not do yet.
"""

from __future__ import annotations


def normalize_user(raw: str) -> str:
    """Return the canonical key form of a user name (``EXAMPLE\\Alice`` -> ``alice``)."""
    name = raw.strip()
    if "\\" in name:
        name = name.rsplit("\\", 1)[1]
    if "@" in name:
        name = name.split("@", 1)[0]
    return name.strip().casefold()


def normalize_device_id(raw: str) -> str:
    """Return the canonical key form of an EAS DeviceId (case-folded, stripped)."""
    return raw.strip().casefold()
