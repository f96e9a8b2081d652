"""Console roles: who may look, who may act on devices, who may change the deployment.

Three roles, each including the one below it:

- ``viewer``: reads everything the console shows (devices, clusters, audit trail).
- ``operator``: also blocks, allows and clears devices, and writes notes on them.
- ``admin``: also registers clusters and changes their settings, sealing key and
  credentials, sets upstream and device passwords, and edits the compliance policy and
  the notices to users.

In AWS a console user's role comes from the Cognito groups of the pool (``viewer``,
``operator``, ``admin``; the highest group wins); locally each role has a static token.
A user in no group has no role and is refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum


class Role(IntEnum):
    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    def may(self, needed: Role) -> bool:
        return self >= needed


# What each role may do, as the console page reads it (``GET /console/v1/whoami``): the
# page hides what the role may not do; the API refuses it regardless.
PERMISSIONS: dict[Role, tuple[str, ...]] = {
    Role.VIEWER: ("read",),
    Role.OPERATOR: ("read", "device.override", "device.note"),
    Role.ADMIN: (
        "read",
        "device.override",
        "device.note",
        "cluster.manage",
        "credentials.manage",
        "settings.manage",
    ),
}

GROUPS: dict[str, Role] = {role.label: role for role in Role}


def parse_groups(claim: object) -> tuple[str, ...]:
    """The group names of a ``cognito:groups`` claim. API Gateway's JWT authorizer hands
    an array claim to the function as one string (``"[admin viewer]"``); a list arrives
    as is from other callers."""
    if isinstance(claim, str):
        text = claim.strip().removeprefix("[").removesuffix("]")
        return tuple(part for part in text.replace(",", " ").split() if part)
    if isinstance(claim, Iterable):
        return tuple(str(part).strip() for part in claim if str(part).strip())
    return ()


def role_of_groups(groups: Iterable[str]) -> Role | None:
    """The highest role among the groups (None: the user is in no console group)."""
    roles = [GROUPS[g.casefold()] for g in groups if g.casefold() in GROUPS]
    return max(roles) if roles else None


def parse_role(text: str) -> Role:
    """``"viewer"`` | ``"operator"`` | ``"admin"`` (ValueError otherwise)."""
    role = GROUPS.get(text.strip().casefold())
    if role is None:
        raise ValueError(f"unknown role {text!r}: use one of {', '.join(GROUPS)}")
    return role
