"""Compliance reads (SPEC D7): audit and release logs, export records, budgets, policies.

Reached as ``gate.compliance``. (Being built: issue 7.)
"""

from __future__ import annotations

__all__ = ["Compliance"]


class Compliance:
    def __init__(self, gate, store, catalog, *, clock):
        self._gate, self._store, self._catalog, self._clock = gate, store, catalog, clock
