"""Donor snapshots on a schedule (issue 20): the published series kept current by a job.

A service beside the gate, reached as ``gate.snapshots``, written only against the gate core's
public surface (``privacy.core``). It owns which snapshots are published by default (every count
metric of every published series, by state, over the latest complete months, for every tenant;
and every other published series whose data has changed, as it was) and the schedule that
publishes them: ``run_scheduled`` publishes what is due — a default series not currently
published (a new complete month, a rebuild after a consent withdrawal) — and runs at least once
a day even with nothing due; ``run_worker`` checks every few minutes in a background thread of
the dashboard server (as the export worker does) or in ``veil snapshots --worker``. Each run is
a job run (``job_runs``, job "snapshot": status, releases published, duration, error), so the
compliance page's *Job history* and ``veil jobs --kind snapshot`` show the history and a failed
run raises an alert; every snapshot costs the tenant's publication identity (its own ledger),
never a viewer's.
"""

from privacy.snapshots._schedule import SnapshotRun, Snapshots

__all__ = ["SnapshotRun", "Snapshots"]
