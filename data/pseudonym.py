"""Keyed pseudonyms: the only form in which a subject (or a source's event id) is ever stored.

Owns turning a raw identifier into a keyed hash of 32 hex characters (128 bits): subjects as
``hmac-sha256(secret, raw)`` (the demo data uses the same function, so its subjects and ingested
ones match), a source's event ids as keyed BLAKE2b-128 scoped to tenant and product (the
idempotency key; cheaper per row, and never compared with anything but itself). The secret is
the deployment secret (``Settings.secret``); without it the mapping cannot be recomputed or
reversed, and ``data.config`` refuses to run outside demo mode without one. This module never
stores, logs or returns a raw identifier, and never falls back to an unkeyed hash.
"""

from __future__ import annotations

import hashlib
import hmac

from data.errors import ConfigError

__all__ = ["EventKeys", "Pseudonymizer", "pseudonym"]

#: Hex characters kept: 128 bits, the width of the ``pseudonym`` columns.
LENGTH = 32


def pseudonym(secret: str, raw_id: str) -> str:
    """The keyed pseudonym of a raw subject id: hmac-sha256(secret, raw_id), 32 hex chars."""
    return hmac.new(secret.encode(), raw_id.encode(), hashlib.sha256).hexdigest()[:LENGTH]


class Pseudonymizer:
    """``pseudonym(secret, raw)`` prepared once for hot loops: copying a keyed HMAC skips
    re-deriving the key pads for every row."""

    def __init__(self, secret: str):
        if not secret:
            raise ConfigError("a deployment secret is required to key pseudonyms (VEIL_SECRET)")
        self._base = hmac.new(secret.encode(), digestmod=hashlib.sha256)

    def of(self, raw_id: str) -> str:
        h = self._base.copy()
        h.update(raw_id.encode("utf-8", "surrogatepass"))
        return h.hexdigest()[:LENGTH]


class EventKeys:
    """Idempotency keys for one tenant and product: keyed BLAKE2b-128 of the source's event id.

    The key is derived from the deployment secret (``sha256("veil event keys" + secret)``), so
    keys of one deployment cannot be linked to another's, nor to subject pseudonyms.
    """

    def __init__(self, secret: str, *, tenant: str, product: str):
        if not secret:
            raise ConfigError("a deployment secret is required to key event ids (VEIL_SECRET)")
        key = hashlib.sha256(b"veil event keys\x00" + secret.encode()).digest()
        self._base = hashlib.blake2b(key=key, digest_size=16,
                                     person=b"veil-event-key", salt=b"")
        self._base.update(f"{tenant}\x1f{product}\x1f".encode())

    def of(self, event_id: str) -> str:
        h = self._base.copy()
        h.update(event_id.encode("utf-8", "surrogatepass"))
        return h.hexdigest()
