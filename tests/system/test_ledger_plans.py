"""Issue 18: a fresh release's read of Veil's own growing release history seeks by key, whatever
PostgreSQL's planner statistics say (autovacuum may be off, as on these machines, or late).

With the source index led by (tenant, product) the planner, on a table it had never analysed,
read the tenant's whole history through that prefix and filtered the source keys out: 13–22 ms
per release at 18,000 stored periods, and growing (migration 0019 leads the index by the source).
"""

from __future__ import annotations

import hashlib
import json
from datetime import date, datetime

import pytest
from sqlalchemy import insert, text

from data.models import Release as ReleaseRow
from data.models import ReleasePeriod
from privacy._derivation import stored_candidates
from tests.conftest import STORES

MONTHS = [date(2026, m, 1) for m in range(1, 13)]


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


@pytest.mark.parametrize("backend", [STORES[1]], indirect=True)
def test_the_derivation_read_seeks_its_source_keys_on_a_never_analysed_history(store):
    with store.write.begin() as session:
        # never analysed, whatever this server's autovacuum settings are
        session.execute(text("ALTER TABLE release_periods SET (autovacuum_enabled = false)"))
        session.execute(insert(ReleaseRow.__table__).values(
            id="r-1", query_key=_key("q"), tenant_id="kigali-east", principal="pm@x",
            role="policy_maker", product_id="health.vaccinations", query={},
            policy_version="p", data_version=1, mechanism="m", epsilon=1.0, cells=[],
            digest=_key("d"), published=False, created_at=datetime(2026, 11, 1)))
        session.execute(insert(ReleasePeriod.__table__), [
            {"period_key": _key("p", i), "release_id": "r-1", "tenant_id": "kigali-east",
             "product_id": "health.vaccinations", "period": MONTHS[i % 12], "cells": [],
             "measurement": {"n": i}, "source": _key("s", i // 12)} for i in range(6000)])
    wanted = [_key("s", 7), _key("s", 300), _key("no such source")]
    statement = stored_candidates("kigali-east", "health.vaccinations", wanted, MONTHS[:6])
    with store.read() as session:
        connection = session.connection()
        assert connection.execute(text(
            "SELECT last_analyze, last_autoanalyze FROM pg_stat_user_tables "
            "WHERE relname = 'release_periods'")).one() == (None, None)
        compiled = statement.compile(connection, compile_kwargs={"literal_binds": True})
        [[plan]] = connection.execute(text(f"EXPLAIN (FORMAT JSON) {compiled}")).all()
        found = session.execute(statement).all()
    assert sorted(row.measurement["n"] for row in found) == [84, 85, 86, 87, 88, 89,
                                                              3600, 3601, 3602, 3603, 3604, 3605]
    nodes, conditions = [plan[0]["Plan"]], []
    while nodes:
        node = nodes.pop()
        nodes += node.get("Plans", [])
        if node.get("Relation Name") == "release_periods" or "Index Name" in node:
            conditions.append((node.get("Index Cond", "") + node.get("Recheck Cond", ""),
                               node.get("Filter", "")))
    assert conditions and all("source" in seek and "source" not in kept
                              for seek, kept in conditions), conditions
