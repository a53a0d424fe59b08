"""Who is calling: a logged-in user, or (auth off) a client known by its ``client_id``."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from server.team.roles import Role

# ``client_id`` values that many machines send alike: the 3D Slicer plugin's default, and none at all
# (the OHIF panel sends no client_id). They never name one annotator.
SHARED_CLIENT_IDS = frozenset({"", "user-xyz"})


@dataclass(frozen=True)
class Actor:
    """The caller of one request. ``user`` is True when the name is a logged-in user's."""

    name: str
    role: Role
    user: bool = False

    @property
    def shared(self) -> bool:
        """A name several people may send (auth off, Slicer's default or no client id)."""
        return not self.user and self.name in SHARED_CLIENT_IDS


ANONYMOUS = Actor("", Role.admin)  # auth off, nothing said: one person at 127.0.0.1 may do anything
NOBODY = Actor("", Role.viewer)  # auth on, an open route called without a login


def client_actor(client_id: object) -> Actor:
    """Auth off: the caller as its ``client_id`` says (a non-string counts as none)."""
    name = client_id.strip() if isinstance(client_id, str) else ""
    return Actor(name[:200], Role.admin)


def lease_key(actor: Actor, address: str | None) -> str:
    """Whom a next-sample lease belongs to. A user's name with auth on, whatever ``client_id`` says; a
    client id of its own with auth off. A shared client id gets a key of its own for every request
    (its address and a nonce): two machines that send Slicer's default never hold the same study,
    and a study one of them skipped comes back when its lease expires."""
    if actor.user or not actor.shared:
        return actor.name
    return f"{actor.name or 'anonymous'}@{address or '?'}#{secrets.token_hex(4)}"
