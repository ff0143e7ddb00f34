"""The gate's cells for a query measured without noise, for tests that check aggregation,
the tenant lock or the roll-up by exact numbers.

The gate releases no exact aggregate (a k-threshold on exact counts is undone by differencing
two allowed queries), so this goes around its public surface on purpose: the query is planned
at its own, noisy level (authorised and validated as any release, under the tenant's settings
in force), then measured with the engine's no-noise mechanisms. Nothing is charged or stored.
"""

from __future__ import annotations

import dataclasses

from privacy import Cell, Gate, Principal, Query
from privacy._engine import Measured


def exact_cells(gate: Gate, principal: Principal, query: Query) -> list[Cell]:
    """The cells ``query`` would have without noise, in the engine's order."""
    plan = gate._plan(principal, query)
    exact = dataclasses.replace(plan, measured=tuple(Measured(count=None, total=None)
                                                     for _ in plan.measured))
    return gate._compute(principal, query, exact, months=list(query.months))
