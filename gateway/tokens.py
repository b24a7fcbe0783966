"""JWT verification (PyJWT): HS256 with a shared secret, ES256 or EdDSA with a JWKS.

A token's ``sub`` names its owner (its resumable subscriptions are bound to it), ``exp`` ends
the connection unless the client sends a fresh token in band (an ``auth`` message) before then,
and its ``fiml`` claim holds its entitlements (``gateway.auth.Entitlements``; none: everything
but raw ticks and admin). ``aud`` and ``iss`` are checked when the gateway is configured with
them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jwt
from jwt import PyJWKClient, PyJWKSet

from gateway.auth import Entitlements, Principal

__all__ = ["JwtVerifier"]

_ASYMMETRIC = ["ES256", "EdDSA"]


#: Clock skew tolerated on exp and nbf, in seconds (between the issuer and this gateway).
LEEWAY_S = 5.0


class JwtVerifier:
    """Verifies tokens against one secret and/or one JWKS (a file, or a URL fetched lazily and
    cached by PyJWT)."""

    def __init__(
        self,
        secret: str | None = None,
        jwks_file: str | None = None,
        jwks_url: str | None = None,
        audience: str | None = None,
        issuer: str | None = None,
    ) -> None:
        """Raises: ValueError: nothing to verify with, a secret under 32 bytes, or a JWKS file
        that is not one."""
        if not (secret or jwks_file or jwks_url):
            raise ValueError("a JWT verifier needs a secret, a JWKS file or a JWKS URL")
        if secret is not None and len(secret.encode()) < 32:
            # RFC 7518 3.2: an HS256 key shorter than the hash is guessable offline
            raise ValueError("FIML_GATEWAY_JWT_SECRET must be at least 32 bytes")
        self._secret = secret
        self._jwks: PyJWKSet | None = None
        if jwks_file:
            self._jwks = PyJWKSet.from_dict(json.loads(Path(jwks_file).read_text()))
        self._client = PyJWKClient(jwks_url) if jwks_url else None
        self._audience = audience
        self._issuer = issuer

    def _key(self, token: str) -> tuple[Any, list[str]]:
        header = jwt.get_unverified_header(token)
        alg = header.get("alg")
        if alg == "HS256" and self._secret:
            return self._secret, ["HS256"]
        if alg in _ASYMMETRIC:
            kid = header.get("kid")
            if self._jwks is not None:
                for key in self._jwks.keys:
                    if kid is None or key.key_id == kid:
                        return key.key, _ASYMMETRIC
            if self._client is not None:
                return self._client.get_signing_key_from_jwt(token).key, _ASYMMETRIC
        raise jwt.InvalidTokenError(f"no key for alg {alg!r}")

    def verify(self, token: str) -> Principal | None:
        """The token's principal, or None if it does not verify (signature, exp, nbf, aud, iss)
        or its ``fiml`` claim is malformed."""
        try:
            key, algorithms = self._key(token)
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=LEEWAY_S,
                options={"require": ["exp", "sub"], "verify_aud": self._audience is not None},
            )
            granted = claims.get("fiml") or {}
            if not isinstance(granted, dict):
                return None
            entitlements = Entitlements.from_mapping(granted)
        except (jwt.PyJWTError, ValueError, KeyError, TypeError):
            return None
        sub = str(claims["sub"])
        return Principal(sub, f"jwt:{sub}", entitlements, expires_at_ms=int(claims["exp"]) * 1000)
