"""Users, passwords and bearer tokens in the database (no Keycloak).

Passwords are hashed with Argon2id (argon2-cffi). A login returns an opaque random token; only its
SHA-256 is stored, with an expiry, so a database copy logs nobody in. Disabling a user or resetting a
password drops the user's tokens.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from server.database import Database
from server.errors import BadRequest, NotFound
from server.models import ApiToken, User
from server.team.actor import Actor
from server.team.roles import Role

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
ENABLED_CHECK_SECONDS = 5.0  # how often "are there users?" is asked again (a CLI may add the first)
BASIC_CACHE_SECONDS = 60.0  # a verified HTTP Basic password is trusted this long (Argon2 is slow on purpose)


@dataclass(frozen=True)
class UserInfo:
    name: str
    role: str
    disabled: bool
    created_ts: float

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "role": self.role,
            "disabled": self.disabled,
            "created_ts": self.created_ts,
        }


class Users:
    """Kept in ``Services.users``."""

    def __init__(self, db: Database, token_seconds: float) -> None:
        self.db = db
        self.token_seconds = token_seconds
        self.hasher = PasswordHasher()
        self._lock = threading.Lock()
        self._any: tuple[float, bool] = (0.0, False)
        self._basic: dict[str, tuple[float, Actor]] = {}  # sha256(name:password) -> (until, actor)

    # ---- management (the CLI) ----------------------------------------------------------------
    def add(self, name: str, role: str, password: str | None = None) -> str:
        """Create a user; returns the password (a generated one when none is given)."""
        if not NAME.match(name):
            raise BadRequest("a user name is 1-64 letters, digits, '.', '_', '@' or '-'")
        parsed = _role(role)
        password = password or secrets.token_urlsafe(12)
        _check_password(password)
        with self.db.session() as s:
            if s.get(User, name) is not None:
                raise BadRequest(f"user {name} exists")
            s.add(
                User(
                    name=name,
                    role=parsed.name,
                    password_hash=self.hasher.hash(password),
                    created_ts=time.time(),
                )
            )
        self._forget()
        return password

    def list(self) -> list[UserInfo]:
        with self.db.session() as s:
            rows = s.scalars(select(User).order_by(User.name))
            return [UserInfo(u.name, u.role, u.disabled, u.created_ts) for u in rows]

    def set_disabled(self, name: str, disabled: bool = True) -> None:
        with self.db.session() as s:
            self._user(s, name).disabled = disabled
            s.execute(delete(ApiToken).where(ApiToken.user == name))
        self._forget()

    def reset(self, name: str, password: str | None = None, role: str | None = None) -> str:
        """A new password (generated when none is given) and optionally a new role; tokens dropped."""
        password = password or secrets.token_urlsafe(12)
        _check_password(password)
        with self.db.session() as s:
            user = self._user(s, name)
            user.password_hash = self.hasher.hash(password)
            if role is not None:
                user.role = _role(role).name
            s.execute(delete(ApiToken).where(ApiToken.user == name))
        self._forget()
        return password

    # ---- login -------------------------------------------------------------------------------
    def any(self) -> bool:
        """Whether any user exists (then auth is on), asked at most every few seconds."""
        now = time.monotonic()
        with self._lock:
            checked, found = self._any
        if now - checked < ENABLED_CHECK_SECONDS:
            return found
        with self.db.session() as s:
            found = s.scalar(select(func.count()).select_from(User)) != 0
        with self._lock:
            self._any = (now, found)
        return found

    def verify(self, name: str, password: str) -> Actor | None:
        """The user when the password is right and the user enabled; None otherwise."""
        with self.db.session() as s:
            user = s.get(User, name) if NAME.match(name or "") else None
            if user is None or user.disabled:
                return None
            stored, role = user.password_hash, user.role
        try:
            self.hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return None
        return Actor(name, Role[role], user=True)

    def verify_basic(self, name: str, password: str) -> Actor | None:
        """``verify`` for HTTP Basic, where every request carries the password: a success is kept
        for a minute under a digest of name and password (in this object, not in a module global)."""
        key = hashlib.sha256(f"{name}\0{password}".encode()).hexdigest()
        now = time.monotonic()
        with self._lock:
            hit = self._basic.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        actor = self.verify(name, password)
        if actor is not None:
            with self._lock:
                if len(self._basic) > 1000:
                    self._basic.clear()
                self._basic[key] = (now + BASIC_CACHE_SECONDS, actor)
        return actor

    def issue(self, actor: Actor) -> tuple[str, int]:
        """A new bearer token for ``actor`` and its lifetime in seconds."""
        token = secrets.token_urlsafe(32)
        now = time.time()
        with self.db.session() as s:
            s.execute(delete(ApiToken).where(ApiToken.expires_ts < now))
            s.add(
                ApiToken(
                    digest=_digest(token),
                    user=actor.name,
                    created_ts=now,
                    expires_ts=now + self.token_seconds,
                )
            )
        return token, int(self.token_seconds)

    def revoke(self, token: str) -> None:
        """End one login (the session cookie's, at logout)."""
        with self.db.session() as s:
            s.execute(delete(ApiToken).where(ApiToken.digest == _digest(token)))

    def resolve(self, token: str) -> Actor | None:
        """The user a bearer token belongs to, while it is valid and the user enabled."""
        with self.db.session() as s:
            row = s.execute(
                select(User.name, User.role, User.disabled, ApiToken.expires_ts)
                .join(ApiToken, ApiToken.user == User.name)
                .where(ApiToken.digest == _digest(token))
            ).first()
        if row is None or row.disabled or row.expires_ts < time.time():
            return None
        return Actor(row.name, Role[row.role], user=True)

    # ---- helpers -----------------------------------------------------------------------------
    def _user(self, s: Session, name: str) -> User:
        user = s.get(User, name)
        if user is None:
            raise NotFound(f"no user {name}")
        return user

    def _forget(self) -> None:
        with self._lock:
            self._any = (0.0, False)
            self._basic.clear()


def _role(name: str) -> Role:
    try:
        return Role.parse(name)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def _check_password(password: str) -> None:
    if len(password) < 8:
        raise BadRequest("a password has at least 8 characters")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
