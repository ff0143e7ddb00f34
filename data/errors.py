"""Veil's one error hierarchy.

Every error a person can act on derives from ``VeilError`` and carries a message that says
what went wrong and what to do. Internal invariant violations raise ``VeilBug`` instead: it
is deliberately *not* a ``VeilError`` so that no handler mistakes a bug for bad input.

    VeilError
    ├── ConfigError          misconfiguration: names the file or setting and the key
    ├── StoreError           the database is unreachable or refused an operation
    ├── InvalidInput         a row, file or argument is malformed
    ├── AccessDenied         role or tenant does not permit the action
    └── QueryRefused         the gate will not answer (k, window, field, level)
        └── BudgetExhausted  the ε budget cannot cover the request

    VeilBug                  an invariant broke: a defect in Veil, never the user's fault
"""

from __future__ import annotations

__all__ = [
    "AccessDenied",
    "BudgetExhausted",
    "ConfigError",
    "InvalidInput",
    "QueryRefused",
    "StoreError",
    "VeilBug",
    "VeilError",
]


class VeilError(Exception):
    """Base of every error that a user or operator can act on."""


class ConfigError(VeilError):
    """Configuration is missing or malformed; Veil refuses to start rather than guess."""


class StoreError(VeilError):
    """The store could not be reached or rejected an operation."""


class InvalidInput(VeilError):
    """Input (a file, a row, an argument) does not meet its declared schema."""


class AccessDenied(VeilError):
    """The principal's role or tenant does not permit this."""


class QueryRefused(VeilError):
    """The privacy gate declined to answer; nothing was spent."""


class BudgetExhausted(QueryRefused):
    """The privacy budget cannot cover the request; nothing was spent."""

    def __init__(self, *, requested: float, remaining: float, window: str, product: str):
        self.requested = requested
        self.remaining = remaining
        self.short_by = requested - remaining
        super().__init__(
            f"Privacy budget for {product} in {window} cannot cover this query: "
            f"requested ε={requested:g}, remaining ε={remaining:g}, short by ε={self.short_by:g}. "
            f"Choose a stronger privacy level (smaller ε), reuse a published release, "
            f"or wait for the budget to refresh."
        )


class VeilBug(Exception):
    """An internal invariant broke. This is a defect in Veil, not a problem with the input."""
