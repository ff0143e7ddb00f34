"""The one error display. A VeilError shows its message; anything else shows a reference id
and goes to the server log with its traceback — never to the page."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st

from privacy import AccessDenied, BudgetExhausted, QueryRefused, VeilError

__all__ = ["guarded", "show_error"]

_log = logging.getLogger("veil.dashboard")


def show_error(exc: BaseException) -> None:
    if isinstance(exc, BudgetExhausted):
        st.error(str(exc), icon=":material/savings:")
    elif isinstance(exc, AccessDenied):
        st.error(str(exc), icon=":material/block:")
    elif isinstance(exc, QueryRefused):
        st.warning(f"Query refused, nothing was spent: {exc}", icon=":material/shield:")
    elif isinstance(exc, VeilError):
        st.error(str(exc))
    else:
        reference = uuid.uuid4().hex[:8]
        _log.exception("unexpected error (reference %s)", reference, exc_info=exc)
        st.error(f"Something went wrong on our side (reference {reference}). Nothing was spent; "
                 f"please try again or report the reference.")


@contextmanager
def guarded() -> Iterator[None]:
    """Run a block; on any error show it through ``show_error`` and stop the page."""
    try:
        yield
    except Exception as exc:  # StopException / RerunException are not Exceptions here
        show_error(exc)
        st.stop()
