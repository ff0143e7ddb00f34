"""Administration (SPEC D8): tenant privacy settings (versioned, audited, two-admin loosening),
role mappings, the approvals queue.

Reached as ``gate.admin``. (Being built: issue 7.)
"""

from __future__ import annotations

__all__ = ["Admin"]


class Admin:
    def __init__(self, gate, store, catalog, *, clock):
        self._gate, self._store, self._catalog, self._clock = gate, store, catalog, clock
