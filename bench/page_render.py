"""Benchmark: server-side render time of each page (AppTest run) on a demo store (SPEC §5).

For each page and its persona: the time of a script run showing a view already released
(what every later visit, rerun and colleague gets), and — for pages that release — the run
that releases it (click). Target: under 1.5 s per page at 10M events. Every role's home is
timed (they read stored and published releases only). Releases are shared by everyone who asks
the same thing, so only a store's first run releases: time "first view" on a fresh store.

``--cold`` first times a fresh process (issue 17, "the cold first chart"): its imports (what
a server process pays on its first visitor) and its first Trends chart from a stored release,
apart from every later one.

Usage (after generating the store, e.g. with bench/gate_overhead.py --generate):
  VEIL_DEMO_MODE=1 .venv/bin/python bench/page_render.py [--var var/bench-large] [--url URL]
      [--cold]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid

_STARTED = time.perf_counter()

from streamlit.testing.v1 import AppTest  # noqa: E402

from dashboard.context import PRINCIPAL_KEY, SIGNED_IN_AT_KEY, now  # noqa: E402
from data.config import PROJECT_ROOT  # noqa: E402
from privacy import Principal  # noqa: E402

PAGES = [("home", "policy_maker", None), ("home", "researcher", None), ("home", "donor", None),
         ("home", "case_worker", None), ("home", "compliance_officer", None),
         ("home", "tenant_admin", None),
         ("trends", "policy_maker", "Show trend"), ("map", "policy_maker", "Show map"),
         ("insights", "policy_maker", "Compare"), ("lists", "case_worker", None),
         ("donor", "donor", None)]


def _app(page: str, principal: Principal) -> AppTest:
    at = AppTest.from_file(str(PROJECT_ROOT / "pages" / f"{page}.py"), default_timeout=120)
    at.session_state[PRINCIPAL_KEY] = principal
    at.session_state[SIGNED_IN_AT_KEY] = now()
    return at


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _cold_child() -> None:
    """In a fresh process: imports, then the Trends page's stored default view three times."""
    imports = time.perf_counter() - _STARTED
    from dashboard.components import charts  # noqa: F401  (a page's import, counted apart)
    imports = time.perf_counter() - _STARTED
    principal = Principal(subject="bench-cold-policy_maker@kigali-east", display_name="bench",
                          role="policy_maker", tenant="kigali-east", source="demo")
    runs = []
    for _ in range(3):
        at = _app("trends", principal)
        runs.append(_timed(at.run))
        clicks = [b for b in at.button if b.label.startswith("Show trend")]
        if clicks:  # a fresh store: release once, then time the stored view again
            clicks[0].click().run()
            runs[-1] = _timed(_app("trends", principal).run)
        if at.exception:
            raise SystemExit(f"trends: {at.exception[0].message}")
    print(json.dumps({"imports": imports, "runs": runs}))


def _cold(args) -> None:
    command = [sys.executable, os.path.abspath(__file__), "--cold-child", "--var", args.var]
    if args.url:
        command += ["--url", args.url]
    answer = subprocess.run(command, capture_output=True, text=True, check=True)
    result = json.loads(answer.stdout.strip().splitlines()[-1])
    first, *later = result["runs"]
    print(f"cold process: imports {result['imports']:.2f} s; first Trends chart (stored) "
          f"{first:.2f} s; later ones {statistics.median(later):.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--var", default="var/bench-large")
    parser.add_argument("--url", default="")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--cold", action="store_true", help="time a fresh process first")
    parser.add_argument("--cold-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ["VEIL_DEMO_MODE"] = "1"
    if args.url:
        os.environ["VEIL_DATABASE_URL"] = args.url
        os.environ.setdefault("VEIL_SECRET", "bench-secret-0123456789abcdef")
    else:
        os.environ["VEIL_VAR_DIR"] = os.path.abspath(args.var)
    if args.cold_child:
        _cold_child()
        return
    run = uuid.uuid4().hex[:8]
    print(f"store: {args.url or args.var}; {os.cpu_count()} cores")
    if args.cold:
        _cold(args)
    print("| page | persona | first view, releasing (s) | stored view (s) |")
    print("|---|---|---|---|")
    for page, role, button in PAGES:
        tenant = "kigali-east"
        principal = Principal(subject=f"bench-{run}-{role}@{tenant}", display_name=role,
                              role=role, tenant=tenant, source="demo")
        at = _app(page, principal)
        first = _timed(at.run)
        if button:
            clicks = [b for b in at.button if b.label.startswith(button)]
            if clicks:
                first += _timed(lambda: clicks[0].click().run())
        if at.exception:
            raise SystemExit(f"{page}: {at.exception[0].message}")
        stored = [_timed(_app(page, principal).run) for _ in range(args.repeat)]
        print(f"| {page} | {role} | {first:.2f} | {statistics.median(stored):.2f} |")


if __name__ == "__main__":
    main()
