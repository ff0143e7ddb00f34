"""The demo store a benchmark reads: an existing one (``--var``), or one generated afresh as of a
fixed day, so the same benchmark reads the same data whatever the calendar says."""

from __future__ import annotations

import tempfile
import time
from datetime import date

from data.bootstrap import init_store
from data.catalog import Catalog, load_catalog
from data.config import load_settings
from data.demo import generate
from data.engine import Store, open_store
from data.materialize import materialize

__all__ = ["DEMO_AS_OF", "bench_store", "demo_store"]

#: a fixed as-of day: the same benchmark data whatever the calendar says
DEMO_AS_OF = date(2026, 11, 1)


def demo_store(*, size: str, var: str | None, prefix: str) -> tuple[Catalog, Store, float]:
    """The catalog, the store and how long generating it took (0 for an existing ``var``)."""
    settings = load_settings({"VEIL_VAR_DIR": var or tempfile.mkdtemp(prefix=prefix),
                              "VEIL_DEMO_MODE": "1"})
    catalog = load_catalog(settings.catalog_dir)
    store = open_store(settings)
    init_store(store, catalog, demo_accounts=False)
    started = time.perf_counter()
    if not var:
        generate(store, catalog, size=size, secret=settings.secret, as_of=DEMO_AS_OF)
        materialize(store, catalog)
    return catalog, store, time.perf_counter() - started


def bench_store(*, url: str, size: str, generate_first: bool) -> tuple[Catalog, Store]:
    """The catalog and the store a gate benchmark reads: ``url`` (PostgreSQL), else the SQLite
    store under VEIL_VAR_DIR (default ``var/bench-SIZE``); with ``generate_first`` the demo
    of ``size`` as of DEMO_AS_OF is generated and materialised into it first."""
    import os

    env = dict(os.environ, VEIL_DEMO_MODE="1")
    if url:
        env["VEIL_DATABASE_URL"] = url
    else:
        env.setdefault("VEIL_VAR_DIR", str(os.path.abspath(f"var/bench-{size}")))
    settings = load_settings(env)
    catalog = load_catalog(settings.catalog_dir)
    store = open_store(settings)
    init_store(store, catalog, demo_accounts=False)
    if generate_first:
        started = time.perf_counter()
        report = generate(store, catalog, size=size, as_of=DEMO_AS_OF, secret=settings.secret)
        materialize(store, catalog)
        print(f"generated {report.events:,} events in {time.perf_counter() - started:.1f} s")
    return catalog, store
