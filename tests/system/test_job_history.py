"""Job history (issue 20) on real stores: materialisation and export runs in one list, newest
first, with status, rows, duration and error; filters; the tenant lock and audit of the
compliance read; `veil jobs` with failed runs highlighted."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlalchemy import select

from data.materialize import materialize
from data.models import AuditEntry
from ops_support import NOW, TENANT, cli, export_run, job_run, principal
from privacy import AccessDenied, Gate, InvalidInput
from privacy.compliance.jobs import job_history


@pytest.fixture
def gate(store, catalog) -> Gate:
    return Gate(store, catalog, demo_accounts=True, clock=lambda: NOW)


@pytest.fixture
def runs(store):
    """Two materialisation runs and three export runs of the tenant, one of each failed; a
    queued export (never ran) and another tenant's failed run."""
    ids = {
        "old_ok": job_run(store, status="succeeded", started=NOW - timedelta(days=40), rows=10),
        "mat_failed": job_run(store, status="failed", started=NOW - timedelta(hours=5),
                              rows=None, seconds=0.25,
                              error="StoreError: the cube could not be written"),
        "export_done": export_run(store, status="done", created=NOW - timedelta(hours=4),
                                  started=NOW - timedelta(hours=4),
                                  finished=NOW - timedelta(hours=4) + timedelta(seconds=30)),
        "export_failed": export_run(store, status="failed", created=NOW - timedelta(hours=3),
                                    started=NOW - timedelta(hours=3), rows=None,
                                    finished=NOW - timedelta(hours=3) + timedelta(seconds=2),
                                    error="the ε budget is exhausted"),
        "export_queued": export_run(store, status="queued", created=NOW - timedelta(hours=1),
                                    rows=None),
        "other_tenant": job_run(store, status="failed", started=NOW - timedelta(hours=2),
                                tenant="south", error="boom"),
    }
    return ids


def test_history_lists_both_kinds_newest_first_with_rows_duration_and_error(store, runs):
    """Materialisation and export runs of the tenant, newest first; exports that never ran
    are not runs."""
    with store.read() as session:
        listed = job_history(session, tenant=TENANT)
    assert [r.id for r in listed] == [runs["export_failed"], runs["export_done"],
                                      runs["mat_failed"], runs["old_ok"]]
    failed_export, done, failed_mat, old = listed
    assert (done.kind, done.status, done.rows, done.duration_s, done.error) == (
        "export", "succeeded", 96, 30.0, None)
    assert (failed_export.status, failed_export.error, failed_export.failed) == (
        "failed", "the ε budget is exhausted", True)
    assert (failed_mat.kind, failed_mat.status, failed_mat.rows, failed_mat.duration_s,
            failed_mat.error) == ("materialize", "failed", None, 0.25,
                                  "StoreError: the cube could not be written")
    assert (old.status, old.rows) == ("succeeded", 10)


def test_history_filters_by_status_kind_since_and_limit(store, runs):
    """--status, --kind, --since and --limit each narrow the list."""
    with store.read() as session:
        failed = job_history(session, tenant=TENANT, status="failed")
        exports = job_history(session, tenant=TENANT, kind="export")
        recent = job_history(session, tenant=TENANT, since=NOW - timedelta(days=1))
        newest = job_history(session, tenant=TENANT, limit=1)
        everyone = job_history(session, status="failed")
    assert [r.id for r in failed] == [runs["export_failed"], runs["mat_failed"]]
    assert [r.id for r in exports] == [runs["export_failed"], runs["export_done"]]
    assert runs["old_ok"] not in {r.id for r in recent} and len(recent) == 3
    assert [r.id for r in newest] == [runs["export_failed"]]
    assert {r.id for r in everyone} == {runs["export_failed"], runs["mat_failed"],
                                        runs["other_tenant"]}


def test_history_refuses_a_filter_that_cannot_be_meant(store):
    """An unknown status or a limit out of range is bad input, quoted."""
    with store.read() as session:
        with pytest.raises(InvalidInput, match="status must be one of .* got 'done'"):
            job_history(session, status="done")
        with pytest.raises(InvalidInput, match="limit must be a whole number from 1 to 1000"):
            job_history(session, limit=0)


def test_a_real_materialisation_is_in_the_history(store, catalog):
    """A run of the materialiser appears with its rows and duration."""
    [result] = materialize(store, catalog, tenant=TENANT, product="health.vaccinations")
    with store.read() as session:
        [run] = job_history(session, tenant=TENANT)
    assert (run.kind, run.status, run.product, run.rows) == (
        "materialize", "succeeded", "health.vaccinations", result.rows)
    assert run.duration_s is not None and run.duration_s >= 0


def test_compliance_read_is_the_tenants_own_and_audited(gate, store, runs):
    """The officer sees their tenant's runs only; the read is in the audit log."""
    listed = gate.compliance.job_history(principal(), status="failed", since=date(2026, 11, 1))
    assert [r.id for r in listed] == [runs["export_failed"], runs["mat_failed"]]
    with store.read() as session:
        [entry] = session.scalars(select(AuditEntry).where(
            AuditEntry.action == "compliance_view", AuditEntry.target == "job_history")).all()
    assert entry.outcome == "allowed" and entry.tenant_id == TENANT
    assert entry.detail["failed"] == 2 and entry.detail["status"] == "failed"


def test_other_roles_are_refused_the_job_history_and_it_is_recorded(gate, store):
    """A policy maker cannot read the job history; the refusal is audited."""
    with pytest.raises(AccessDenied, match="cannot read compliance records"):
        gate.compliance.job_history(principal("policy_maker"))
    with store.read() as session:
        refused = session.scalars(select(AuditEntry).where(
            AuditEntry.target == "job_history", AuditEntry.outcome == "refused")).all()
    assert len(refused) == 1


def test_veil_jobs_lists_runs_and_highlights_failures(store, runs, monkeypatch, capsys):
    """`veil jobs` prints one line per run; a failed run says FAILED with its error."""
    veil = cli(monkeypatch, capsys, store)
    status, out, err = veil("jobs", "--tenant", TENANT)
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("STATUS")
    failed = [line for line in lines if line.startswith("FAILED")]
    assert len(failed) == 2 and runs["mat_failed"] in failed[1].split()[-1]
    assert "    error: StoreError: the cube could not be written" in out
    assert "    error: the ε budget is exhausted" in out
    assert lines[-1] == "4 run(s), 2 failed"


def test_veil_jobs_filters_by_status_since_and_limit(store, runs, monkeypatch, capsys):
    """--status failed lists failures only; --since drops older runs; --limit cuts."""
    veil = cli(monkeypatch, capsys, store)
    _, out, _ = veil("jobs", "--status", "failed")
    assert out.splitlines()[-1] == "3 run(s), 3 failed"
    _, out, _ = veil("jobs", "--tenant", TENANT, "--since", "2026-11-01")
    assert "2026-10-11" not in out and out.splitlines()[-1] == "3 run(s), 2 failed"
    _, out, _ = veil("jobs", "--tenant", TENANT, "--limit", "1")
    assert out.splitlines()[-1] == "1 run(s), 1 failed"
    status, _, err = veil("jobs", "--limit", "0")
    assert status == 2 and "limit must be a whole number from 1 to 1000" in err
