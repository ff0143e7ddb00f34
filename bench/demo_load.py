"""Benchmark: generate the demo data and materialise its cubes, timed (SPEC B5, B3).

Owns measuring ``data.demo.generate`` and ``data.materialize.materialize`` end to end on one
store and printing rows, seconds and rows/s as a small table. It never runs against a store
holding real data: generating replaces the demo tenants' records in the target store.

    python bench/demo_load.py --size small
    python bench/demo_load.py --size medium --url postgresql+psycopg://postgres@127.0.0.1/bench
"""

from __future__ import annotations

import argparse
from datetime import date
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.bootstrap import init_store  # noqa: E402
from data.catalog import load_catalog  # noqa: E402
from data.config import load_settings  # noqa: E402
from data.demo import SIZES, generate  # noqa: E402
from data.engine import open_store  # noqa: E402
from data.materialize import materialize  # noqa: E402

#: a fixed as-of day: the same benchmark data whatever the calendar says
DEMO_AS_OF = date(2026, 11, 1)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=list(SIZES), default="small")
    parser.add_argument("--url", help="database URL (default: a fresh SQLite file in a temp dir)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="veil-bench-") as tmp:
        env = {"VEIL_VAR_DIR": tmp, "VEIL_DEMO_MODE": "1"}
        if args.url:
            env["VEIL_DATABASE_URL"] = args.url
        settings = load_settings(env)
        catalog = load_catalog(settings.catalog_dir)
        store = open_store(settings)
        try:
            started = time.perf_counter()
            init_store(store, catalog, demo_accounts=False)
            init_s = time.perf_counter() - started

            last = [0.0]

            def progress(stage: str, done: int, total: int) -> None:
                now = time.perf_counter()
                if not args.quiet and (now - last[0] > 5 or done == total):
                    last[0] = now
                    print(f"  {stage:<8} {done:>12,} / {total:,}  ({now - started:.0f} s)",
                          file=sys.stderr)

            report = generate(store, catalog, size=args.size, as_of=DEMO_AS_OF, seed=args.seed,
                              secret=settings.secret, progress=progress)
            clock = time.perf_counter()
            jobs = materialize(store, catalog)
            materialize_s = time.perf_counter() - clock
            total_s = time.perf_counter() - started
            db_bytes = _size(settings.database_url)
        finally:
            store.dispose()

    events = report.events
    other = sum(report.tables.values()) - events
    cube_rows = sum(j.rows for j in jobs)
    print(f"\nVeil demo load — size={args.size} seed={args.seed} store={store.dialect} "
          f"({os.cpu_count()} × {_cpu_model()}, Python {platform.python_version()})")
    rows = [
        ("init (migrate, catalog)", None, init_s, None),
        ("generate + load: events", events, report.seconds, events),
        ("  … plus subjects, consent, registrations", other, None, None),
        (f"materialize ({len(jobs)} jobs): cube rows", cube_rows, materialize_s, events),
        ("total", events, total_s, events),
    ]
    print(f"{'stage':<44} {'rows':>12} {'seconds':>9} {'events/s':>11}")
    for name, count, seconds, per in rows:
        count_s = f"{count:>12,}" if count is not None else f"{'':>12}"
        sec_s = f"{seconds:>9.2f}" if seconds is not None else f"{'':>9}"
        rate = f"{per / seconds:>11,.0f}" if per and seconds else f"{'':>11}"
        print(f"{name:<44} {count_s} {sec_s} {rate}")
    if db_bytes is not None:
        print(f"SQLite file: {db_bytes / 1e6:,.0f} MB")
    return 0


def _size(url: str) -> int | None:
    if not url.startswith("sqlite:///"):
        return None
    path = Path(url.removeprefix("sqlite:///"))
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())


if __name__ == "__main__":
    raise SystemExit(main())
