"""Log-in, roles and CSRF for the dashboard (docs/dashboard.md, "Security").

Passwords are stored as argon2id hashes (argon2-cffi; bcrypt hashes made elsewhere are
accepted when the ``bcrypt`` package is installed). A log-in creates a server-side session:
a random cookie (HttpOnly, SameSite=Strict) and a CSRF token of its own that every command
must carry in the ``X-CSRF-Token`` header. Sessions live in memory: a restart logs everyone
out, which is fine for a front desk.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass, field

from treadctl.dashboard.config import ROLES, User

#: What each role may do, cumulative: viewer < staff < admin.
#: Stopping is never held back by a role: every logged-in user may stop and e-stop.
PERMISSIONS = {
    "stop": "viewer",
    "estop": "viewer",
    "pause": "staff",
    "resume": "staff",
    "start": "staff",
    "reset": "staff",
    "audit": "admin",
}


def allowed(role: str, action: str) -> bool:
    need = PERMISSIONS.get(action, "admin")
    return ROLES.index(role) >= ROLES.index(need)


def hash_password(password: str) -> str:
    from argon2 import PasswordHasher

    return PasswordHasher().hash(password)


def verify_password(stored: str, password: str) -> bool:
    if stored.startswith("$argon2"):
        from argon2 import PasswordHasher
        from argon2.exceptions import InvalidHashError, VerificationError

        try:
            return bool(PasswordHasher().verify(stored, password))
        except (VerificationError, InvalidHashError):
            return False
    try:
        import bcrypt
    except ImportError:  # a bcrypt hash without the bcrypt package: nobody gets in
        return False
    try:
        return bool(bcrypt.checkpw(password.encode(), stored.encode()))
    except ValueError:
        return False


@dataclass
class Session:
    user: str
    role: str
    csrf: str
    expires: float


@dataclass
class Auth:
    users: dict[str, User]
    ttl_s: float
    sessions: dict[str, Session] = field(default_factory=dict)
    _failures: dict[str, list[float]] = field(default_factory=dict)
    _dummy: str | None = None

    MAX_FAILURES = 5
    FAILURE_WINDOW_S = 60.0

    def throttled(self, client: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        recent = [t for t in self._failures.get(client, []) if now - t < self.FAILURE_WINDOW_S]
        self._failures[client] = recent
        return len(recent) >= self.MAX_FAILURES

    def login(self, name: str, password: str, client: str) -> tuple[str, Session] | None:
        """A new session for a right password; ``None`` otherwise (also when throttled)."""
        if self.throttled(client):
            return None
        user = self.users.get(name)
        if user is None:
            # The same argon2 work for an unknown name: the timing does not tell names apart.
            if self._dummy is None:
                self._dummy = hash_password(secrets.token_hex(8))
            verify_password(self._dummy, password)
            ok = False
        else:
            ok = verify_password(user.password_hash, password)
        if not ok or user is None:
            self._failures.setdefault(client, []).append(time.monotonic())
            return None
        self._expire()
        token = secrets.token_urlsafe(32)
        session = Session(user.name, user.role, secrets.token_urlsafe(32),
                          time.monotonic() + self.ttl_s)
        self.sessions[token] = session
        return token, session

    def session(self, token: str | None) -> Session | None:
        if not token:
            return None
        s = self.sessions.get(token)
        if s is None:
            return None
        if s.expires < time.monotonic():
            self.sessions.pop(token, None)
            return None
        return s

    def logout(self, token: str | None) -> None:
        if token:
            self.sessions.pop(token, None)

    @staticmethod
    def csrf_ok(session: Session, header: str | None) -> bool:
        return bool(header) and hmac.compare_digest(session.csrf, header or "")

    def _expire(self) -> None:
        now = time.monotonic()
        for token in [t for t, s in self.sessions.items() if s.expires < now]:
            del self.sessions[token]
