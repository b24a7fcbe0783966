"""Who a client is and what it may see: API keys, JWTs, anonymous access and entitlements.

Pure apart from reading the key file: the WebSocket session and the REST routes ask
``Authenticator.authenticate(token)`` and ``Entitlements.check(...)``, both testable without a
server.

* **API keys** look like ``fiml_<id>_<secret>``. The key file (``fiml keys create | list |
  revoke``) stores only a SHA-256 of each key: keys are 256-bit random secrets, so a fast hash
  is enough (a slow password hash such as bcrypt protects low-entropy passwords, and would cost
  every connection ~100 ms). The file is read again when it changes, so a revocation applies
  to the next connection without a restart.
* **JWTs** (HS256 with a shared secret, or ES256 / EdDSA with public keys from a JWKS file):
  ``exp``, ``nbf``, ``aud`` and ``iss`` are checked; the token's ``fiml`` claim carries its
  entitlements.
* **Anonymous** access is allowed when the operator allows it; by default only when the gateway
  listens on loopback (the demo, seed clients on the same machine).
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import ipaddress
import json
import os
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schemas.errors import ProtocolError
from schemas.protocol import ErrorCode, StreamType

__all__ = [
    "ANONYMOUS",
    "Authenticator",
    "Entitlements",
    "KeyFile",
    "Principal",
    "anonymous_allowed",
]

KEY_PREFIX = "fiml_"


@dataclass(frozen=True, slots=True)
class Entitlements:
    """What one key or token may subscribe to. A refusal names what was asked, never what is
    granted (nothing about other symbols or other keys leaks)."""

    streams: frozenset[str] | None = None  # stream types; None: every one
    symbols: tuple[str, ...] = ("*",)  # shell patterns over canonical symbols ("BTC/*")
    replay: bool = True
    replay_max_age_ms: int | None = None  # how far back a replay may start; None: any
    # Raw provider ticks (``params.source: "raw"``): only when granted, since a provider's
    # terms may allow redistributing derived prices but not its own quotes.
    raw: bool = False
    admin: bool = False  # /ws/connections?details=true, /metrics, /docs

    def check(
        self,
        stream_type: StreamType,
        symbols: Iterable[str],
        raw: bool,
        replay_from_ms: int | None,
        now_ms: int,
    ) -> None:
        """Raises: ProtocolError: FORBIDDEN, naming the first thing asked and not granted."""
        if self.streams is not None and stream_type.value not in self.streams:
            raise _forbidden(f"stream_type {stream_type.value!r}", "stream_type")
        for symbol in symbols:
            if not any(fnmatch.fnmatchcase(symbol, p) for p in self.symbols):
                raise _forbidden(f"symbol {symbol!r}", "symbols")
        if raw and not self.raw:
            raise _forbidden("raw provider ticks", "params.source")
        if replay_from_ms is not None:
            if not self.replay:
                raise _forbidden("replay", "replay_from")
            age = self.replay_max_age_ms
            if age is not None and replay_from_ms < now_ms - age:
                raise _forbidden(f"replay from more than {age // 1000:,} s ago", "replay_from")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Entitlements:
        """From a key file entry or a JWT's ``fiml`` claim.

        Raises:
            ValueError: a field has the wrong type.
        """
        streams = data.get("streams")
        symbols = data.get("symbols", ["*"])
        age = data.get("replay_max_age_ms")
        if streams is not None and not _strings(streams):
            raise ValueError("streams must be a list of stream types")
        if not _strings(symbols):
            raise ValueError("symbols must be a list of patterns")
        if age is not None and (type(age) is not int or age < 0):
            raise ValueError("replay_max_age_ms must be a non-negative integer")
        flags = {k: data.get(k, d) for k, d in (("replay", True), ("raw", False), ("admin", False))}
        if any(type(v) is not bool for v in flags.values()):
            raise ValueError("replay, raw and admin must be true or false")
        return cls(
            streams=None if streams is None else frozenset(streams),
            symbols=tuple(symbols),
            replay_max_age_ms=age,
            **flags,
        )

    def to_mapping(self) -> dict[str, Any]:
        return {
            "streams": None if self.streams is None else sorted(self.streams),
            "symbols": list(self.symbols),
            "replay": self.replay,
            "replay_max_age_ms": self.replay_max_age_ms,
            "raw": self.raw,
            "admin": self.admin,
        }


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _forbidden(what: str, field_name: str) -> ProtocolError:
    return ProtocolError(ErrorCode.FORBIDDEN, f"not entitled to {what}", field_name)


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated key or token, or the anonymous client."""

    name: str
    #: Binds resumable subscriptions to their owner: the key id or the token's subject.
    owner: str
    entitlements: Entitlements
    authenticated: bool = True
    expires_at_ms: int | None = None


#: Where anonymous clients are allowed (loopback by default), they may do everything.
ANONYMOUS = Principal(
    "anonymous", "anonymous", Entitlements(raw=True, admin=True), authenticated=False
)


def anonymous_allowed(policy: str, host: str) -> bool:
    """``policy``: ``allow``, ``deny`` or ``auto`` (allowed when ``host`` is a loopback
    address or ``localhost``).

    Raises:
        ValueError: an unknown policy.
    """
    if policy == "allow":
        return True
    if policy == "deny":
        return False
    if policy != "auto":
        raise ValueError(f"FIML_GATEWAY_ANONYMOUS must be auto, allow or deny, not {policy!r}")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass
class KeyFile:
    """The API keys of a gateway: a JSON file of hashed keys and their entitlements."""

    path: Path
    _mtime: float = -1.0
    _keys: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> entry

    def entries(self) -> dict[str, dict[str, Any]]:
        """Every key entry by id (read again if the file changed; none if it is missing).

        Raises:
            ValueError: the file is not a key file.
        """
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            self._keys, self._mtime = {}, -1.0
            return self._keys
        if mtime != self._mtime:
            data = json.loads(self.path.read_text())
            if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
                raise ValueError(f"{self.path} is not a FIML key file")
            self._keys = {e["id"]: e for e in data["keys"]}
            self._mtime = mtime
        return self._keys

    def _write(self, keys: dict[str, dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"keys": list(keys.values())}, indent=2) + "\n")
        os.chmod(tmp, 0o600)  # hashes only, but nobody else needs to read them
        tmp.replace(self.path)

    def create(self, name: str, entitlements: Entitlements) -> tuple[str, dict[str, Any]]:
        """A new key: returns the key (shown once, never stored) and its entry."""
        key_id = secrets.token_hex(4)
        while key_id in self.entries():
            key_id = secrets.token_hex(4)
        key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        entry = {
            "id": key_id,
            "name": name,
            "sha256": hash_key(key),
            "created_ms": int(time.time() * 1000),
            "revoked": False,
            "entitlements": entitlements.to_mapping(),
        }
        keys = dict(self.entries())
        keys[key_id] = entry
        self._write(keys)
        return key, entry

    def revoke(self, key_id: str) -> bool:
        """False if there is no such key."""
        keys = dict(self.entries())
        if key_id not in keys:
            return False
        keys[key_id] = {**keys[key_id], "revoked": True}
        self._write(keys)
        return True

    def authenticate(self, key: str) -> Principal | None:
        """The key's principal, or None if it is unknown, revoked or malformed."""
        parts = key.split("_", 2)
        if len(parts) != 3 or f"{parts[0]}_" != KEY_PREFIX:
            return None
        entry = self.entries().get(parts[1])
        if entry is None or entry.get("revoked"):
            return None
        if not hmac.compare_digest(str(entry.get("sha256", "")), hash_key(key)):
            return None
        try:
            entitlements = Entitlements.from_mapping(entry.get("entitlements") or {})
        except ValueError:
            return None
        return Principal(str(entry.get("name") or entry["id"]), f"key:{entry['id']}", entitlements)


class Authenticator:
    """API keys first (their prefix tells them apart), then JWTs when configured."""

    def __init__(self, keys: KeyFile, jwt: Any | None = None) -> None:
        self.keys = keys
        self.jwt = jwt  # a gateway.jwt.JwtVerifier, when FIML_GATEWAY_JWT_* are set

    def authenticate(self, token: str) -> Principal | None:
        """The principal of ``token``, or None (never says why: unknown, revoked, expired)."""
        if token.startswith(KEY_PREFIX):
            return self.keys.authenticate(token)
        if self.jwt is not None:
            principal: Principal | None = self.jwt.verify(token)
            return principal
        return None
