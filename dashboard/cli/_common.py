"""Helpers every ``veil`` command group shares: progress bars, the store, argument types."""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager

from data.engine import open_store


def _progress(stage: str, done: int, total: int) -> None:
    width = 30
    filled = int(width * done / total) if total else width
    sys.stderr.write(f"\r  {stage:<28} [{'#' * filled}{'.' * (width - filled)}] "
                     f"{done:>12,}/{total:,}")
    if done >= total:
        sys.stderr.write("\n")
    sys.stderr.flush()


@contextmanager
def _store(settings):
    """The configured store, disposed afterwards (no pooled connection outlives a command)."""
    store = open_store(settings)
    try:
        yield store
    finally:
        store.dispose()


@contextmanager
def _migrated_store(settings):
    """The configured store, at the schema this Veil needs (else: run `veil init`)."""
    from sqlalchemy.exc import SQLAlchemyError

    from data.errors import StoreError
    from data.migrate import current_revision, head_revision

    with _store(settings) as store:
        try:
            current = current_revision(store)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read the store at VEIL_DATABASE_URL: "
                             f"{type(exc).__name__}") from None
        if current != head_revision():
            raise StoreError(f"the store at VEIL_DATABASE_URL is at schema revision "
                             f"{current or 'none'} but this Veil needs {head_revision()}; run "
                             f"`veil init`")
        try:
            yield store
        except SQLAlchemyError as exc:
            raise StoreError(f"the store refused the operation: {type(exc).__name__}; nothing "
                             f"was changed, try again") from None


def _red(text: str) -> str:
    return f"\033[31m{text}\033[0m" if sys.stdout.isatty() else text


def _month(text: str):
    from datetime import date

    try:
        year, month = text.split("-")
        if len(year) != 4 or len(month) != 2:
            raise ValueError
        return date(int(year), int(month), 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a month as YYYY-MM, got {text!r}") from None


def _iso_date(text: str):
    from datetime import date

    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date as YYYY-MM-DD, got {text!r}") from None
