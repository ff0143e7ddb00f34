"""The compliance page's operational sections (issue 20) and the bias check: job history, the
attention list of alerts, the signed evidence bundle and its public key, each authorised and
audited as every compliance read; and the query of a bias-check dataset, which the caller
previews and releases through the gate. Alerts and evidence are imported when first used, so
importing the gate never loads ``urllib.request`` or ``cryptography``.
"""

from __future__ import annotations

from datetime import date, datetime, time

from data.errors import InvalidInput

from privacy.compliance._base import _Reads
from privacy.compliance._filters import _check_day
from privacy.compliance.jobs import job_history
from privacy.core import Principal, Query

__all__ = ["BIAS_DIMENSIONS", "_Operations"]

#: What a bias-check dataset is grouped by (after the month): outcomes by gender and age group.
BIAS_DIMENSIONS = ("gender", "age_bucket")


class _Operations(_Reads):
    # -- job history, alerts and evidence (issue 20) --

    def job_history(self, principal: Principal, *, status: str | None = None,
                    kind: str | None = None, since: date | None = None,
                    limit: int = 100) -> tuple:
        """The tenant's materialisation and export runs, newest first (``JobRecord``s):
        status, rows, duration, error. ``since`` is a day (UTC); runs started on or after it."""
        detail = {"status": status, "kind": kind, "limit": limit,
                  "since": since.isoformat() if isinstance(since, date) else since}
        with self._view(principal, "job_history",
                        {k: v for k, v in detail.items() if v is not None}) as seen:
            _check_day("since", since)
            start = datetime.combine(since, time()) if since is not None else None
            with self._store.read() as session:
                runs = job_history(session, tenant=principal.tenant, status=status, kind=kind,
                                   since=start, limit=limit)
            seen.update(rows=len(runs), failed=sum(1 for r in runs if r.failed))
        return runs

    def attention(self, principal: Principal) -> tuple:
        """What needs attention in the tenant now (``AlertState``s, most severe first): SLO
        breaches, budgets near their cap, failed jobs, a spike of refusals — each with what the
        alert webhook was told about it."""
        with self._view(principal, "attention", {}) as seen:
            from privacy.compliance.alerts import alert_states, current_alerts

            with self._store.read() as session:
                alerts = current_alerts(session, self._catalog, now=self._clock(),
                                        tenant=principal.tenant)
                states = alert_states(session, alerts)
            seen.update(alerts=len(states),
                        kinds=sorted({s.alert.kind for s in states}))
        return states

    def evidence_bundle(self, principal: Principal, *, start: date, end: date):
        """The tenant's signed evidence bundle for the months ``start`` .. ``end`` (first days):
        policy versions and diffs, release-log digests, export records and approvals, an audit
        summary and period budget usage, with a signed manifest (``Bundle``)."""
        detail = {"from": f"{start:%Y-%m}" if isinstance(start, date) else repr(start),
                  "to": f"{end:%Y-%m}" if isinstance(end, date) else repr(end)}
        with self._view(principal, "evidence_bundle", detail) as seen:
            from privacy.compliance.evidence import build_bundle

            with self._store.read() as session:
                bundle = build_bundle(session, self._catalog, tenants=[principal.tenant],
                                      start=start, end=end, secret=self._secret,
                                      generated_at=self._clock(),
                                      generated_by=principal.subject)
            seen.update(sha256=bundle.sha256, members=len(bundle.manifest["members"]))
        return bundle

    def evidence_key(self, principal: Principal) -> str:
        """The hex Ed25519 public key that checks this deployment's evidence bundles."""
        with self._view(principal, "evidence_key", {}):
            from privacy.compliance.evidence import public_key

            key = public_key(self._secret)
        return key

    # -- the bias-check dataset --

    def bias_query(self, principal: Principal, *, product: str, metric: str, months: int,
                   level: str) -> Query:
        """The query of a bias-check dataset: ``metric`` per month by gender and age group.

        Building it spends nothing; the caller previews it (``gate.preview``) and releases it
        through ``gate.release``, which applies every rule, charges ε once and records it in
        the release log. An identical later view reuses the stored release at no cost.
        """
        with self._view(principal, "bias_check", {"product": product, "metric": metric,
                                                 "months": months, "level": level}):
            if not isinstance(months, int) or isinstance(months, bool) or months < 1:
                raise InvalidInput(f"months must be an integer >= 1, got {months!r}")
            # the latest complete months with data, never the calendar's (an empty month
            # would spend ε on pure noise)
            query = self._gate.data_clock(principal, product=product).query(
                metric=metric, level=level, months=months,
                group_by=("month", *BIAS_DIMENSIONS))
        return query
