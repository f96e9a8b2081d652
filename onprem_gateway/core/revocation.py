"""Which in-flight requests a policy change may affect.

When a node applies a change, every request it is still serving (a held Ping, a
long-poll Sync, a slow download) must be decided again, so that a block ends it at once
instead of at its heartbeat. ``affected`` names whose requests: the users whose device
entries or credentials the change carries, or everyone when the change can touch any
request (new settings: blocked users, rules, the unknown-device action, the fail mode;
a whole snapshot). Deciding again is cheap (a dict lookup per request), so the answer
errs on the side of "more".
"""

from __future__ import annotations

from dataclasses import dataclass

from seg_contract import PolicyDelta, PolicySnapshot, PushChange, normalize_user


@dataclass(frozen=True, slots=True)
class Affected:
    everyone: bool
    users: frozenset[str] = frozenset()  # normalised

    def __bool__(self) -> bool:
        return self.everyone or bool(self.users)


NOTHING = Affected(False)
EVERYONE = Affected(True)


def affected(change: object) -> Affected:
    """The requests a snapshot, delta or push may change the decision of (anything
    else, e.g. a pong or a confirmation, changes no decision)."""
    if isinstance(change, PolicySnapshot):
        return EVERYONE
    if isinstance(change, PolicyDelta | PushChange):
        if change.settings is not None:
            return EVERYONE
        users = {normalize_user(e.user) for e in change.devices}
        users.update(normalize_user(c.user) for c in change.credentials)
        return Affected(False, frozenset(users)) if users else NOTHING
    return NOTHING
