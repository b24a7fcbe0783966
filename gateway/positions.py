"""Resume tokens: a position in the derived topics that any gateway can resume from. Pure.

Every data message of a live subscription carries a ``resume_token``: the subscription's seq
and the Kafka offsets its topic had reached when the message was made (every record before them
was sent or superseded by a newer value of its symbol), plus the topics' *epoch*, signed with
an HMAC for the subscription's owner. A client that reconnects, to this gateway or any other
sharing the secret, after any restart, presents the token of the last message it received;
the gateway checks the signature for that client (only the owner's verifies), and sends every
record of the subscription after those offsets, numbered from the next seq, then live data.
Nothing about the subscription is kept in any gateway's memory after it ends.

The token is text: ``1.<epoch>.<seq>.<offset>-<offset>-...<mac>`` with the offsets per
partition, and the MAC (HMAC-SHA256, 128 bits, base64url) over the rest, the owner, the
subscription id and its spec (stream type, topic, variant and symbols), so that a token is
good for nothing but resuming that one subscription for its owner.

The epoch names one incarnation of the topic: a hash of the Kafka cluster id and the topic's
physical name. It changes when the derived topics are rebuilt under another prefix or the
broker's storage is started afresh (``fiml up --fresh``), when old offsets would point at other
records.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

__all__ = ["MAX_TOKEN_LENGTH", "Position", "ResumeRefused", "ResumeTokens", "epoch_of"]

#: The longest token accepted (characters; about 160 partitions of 11-digit offsets).
MAX_TOKEN_LENGTH = 2_048
_VERSION = "1"
_MAC_BYTES = 16


class ResumeRefused(Exception):
    """A resume token that cannot be used; the message says why, for the client."""


@dataclass(frozen=True, slots=True)
class Position:
    seq: int
    offsets: tuple[int, ...]  # next offset per partition of the subscription's topic


def epoch_of(cluster_id: str, physical_topic: str) -> str:
    """The epoch of one topic in one cluster (8 hex digits)."""
    return hashlib.sha256(f"{cluster_id}/{physical_topic}".encode()).hexdigest()[:8]


class ResumeTokens:
    """Makes and opens the resume tokens of one gateway (and of every gateway sharing its
    secret)."""

    def __init__(self, secret: bytes) -> None:
        """Raises: ValueError: a secret under 32 bytes (guessable offline)."""
        if len(secret) < 32:
            raise ValueError("a resume secret must be at least 32 bytes")
        self._secret = secret

    def make(self, owner: str, sub_id: str, spec: str, epoch: str, position: Position) -> str:
        """The token of ``position`` for subscription ``sub_id`` of ``owner``; ``spec``
        identifies what it streams (``Session`` builds it from the subscription's spec)."""
        offsets = "-".join(str(o) for o in position.offsets)
        body = f"{_VERSION}.{epoch}.{position.seq}.{offsets}"
        return f"{body}.{self._mac(body, owner, sub_id, spec)}"

    def open(self, token: str, owner: str, sub_id: str, spec: str, epoch: str) -> Position:
        """The position in ``token``.

        Raises:
            ResumeRefused: malformed, not signed for this owner and subscription, or of
                another epoch of the topics.
        """
        body, _, mac = token.rpartition(".")
        parts = body.split(".")
        if len(token) > MAX_TOKEN_LENGTH or len(parts) != 4 or parts[0] != _VERSION:
            raise ResumeRefused("the resume_token is not one this gateway issues")
        if not hmac.compare_digest(mac, self._mac(body, owner, sub_id, spec)):
            raise ResumeRefused(
                "the resume_token is not this subscription's (another id, other symbols or "
                "stream, or another owner), or was altered"
            )
        _, token_epoch, seq, offsets = parts
        if token_epoch != epoch:
            raise ResumeRefused(
                "the topics were rebuilt or the broker started afresh since this position "
                f"(epoch {token_epoch}, now {epoch}): its offsets point at other records"
            )
        # signed by us: well formed (a gateway only signs what it made)
        return Position(int(seq), tuple(int(o) for o in offsets.split("-") if o))

    def _mac(self, body: str, owner: str, sub_id: str, spec: str) -> str:
        message = "\x00".join((body, owner, sub_id, spec)).encode()
        digest = hmac.new(self._secret, message, hashlib.sha256).digest()[:_MAC_BYTES]
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
