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
        └── BudgetExhausted  the (ε, δ) budget cannot cover the request

    VeilBug                  an invariant broke: a defect in Veil, never the user's fault
"""

from __future__ import annotations

import unicodedata

__all__ = [
    "AccessDenied",
    "brief",
    "checked_text",
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

    def __init__(self, *, requested: float, remaining: float, window: str, product: str,
                 delta_requested: float = 0.0, delta_remaining: float | None = None):
        self.requested = requested
        self.remaining = remaining
        self.short_by = requested - remaining
        #: δ asked for and left (Gaussian-noise releases; None when no δ was involved)
        self.delta_requested = delta_requested
        self.delta_remaining = delta_remaining
        self.delta_short_by = (max(delta_requested - delta_remaining, 0.0)
                               if delta_remaining is not None else 0.0)
        loss = (f"requested ε={requested:g}, remaining ε={remaining:g}, "
                f"short by ε={max(self.short_by, 0.0):g}")
        advice = "Choose a stronger privacy level (smaller ε), reuse a published release, "
        if delta_requested > 0 and delta_remaining is not None:
            loss += (f"; requested δ={delta_requested:g}, remaining δ={delta_remaining:g}, "
                     f"short by δ={self.delta_short_by:g}")
            if self.delta_short_by > 0 and self.short_by <= 0:
                # δ is spent once per Gaussian-noise release whatever its ε: a smaller ε
                # does not help
                advice = "Reuse a published or earlier release, "
        super().__init__(
            f"Privacy budget for {product} in {window} cannot cover this query: {loss}. "
            f"{advice}or wait for the budget to refresh."
        )


class VeilBug(Exception):
    """An internal invariant broke. This is a defect in Veil, not a problem with the input."""


#: how much of a caller's input a message or an audit entry repeats
BRIEF = 60


def brief(value: object, limit: int = BRIEF) -> str:
    """``repr(value)`` cut to ``limit`` characters, saying how long the whole was: messages and
    audit entries echo what was asked without repeating a 100 KB input."""
    long = isinstance(value, (str, bytes)) and len(value) > 4 * limit
    shown = repr(value[:4 * limit]) if long else repr(value)
    if len(shown) <= limit:
        return shown
    size = f" ({len(value):,} characters)" if isinstance(value, (str, bytes)) else ""
    return f"{shown[:limit]}…{size}"


def checked_text(name: str, value: object, *, limit: int) -> str:
    """``value`` if it is text of at most ``limit`` characters without control characters or
    lone surrogates (nothing a store or a log could choke on); else InvalidInput naming it."""
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be text, got {type(value).__name__} {brief(value)}")
    if len(value) > limit:
        raise InvalidInput(f"{name} is limited to {limit} characters, got {len(value):,}: "
                           f"{brief(value)}")
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in value):
        raise InvalidInput(f"{name} holds a control character or an unpaired surrogate: "
                           f"{brief(value)}")
    return value
