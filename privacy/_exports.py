"""Safe exports (SPEC D6): requests with a coded purpose, a background worker, signed links.

Reached as ``gate.exports``. (Being built: issue 7.)
"""

from __future__ import annotations

__all__ = ["Exports"]


class Exports:
    def __init__(self, gate, store, catalog, *, ledger, secret: str, clock):
        self._gate, self._store, self._catalog = gate, store, catalog
        self._ledger, self._secret, self._clock = ledger, secret, clock
