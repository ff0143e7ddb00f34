"""The background workers of a dashboard server process: exports (SPEC D6) and the donor
snapshot scheduler (issue 20).

Owns starting one background thread per server process and settings (``st.cache_resource``)
that runs ``gate.exports.run_worker``, unless VEIL_EXPORT_WORKER=0 — then ``veil
export-worker`` runs elsewhere. The thread only calls the gate; it never touches a Streamlit
element, and a page never waits for it: a request is a row in the store, and the page follows
its progress there.
"""

from __future__ import annotations

import os
import socket
import threading

import streamlit as st

from privacy import Gate, Settings

__all__ = ["start_export_worker", "start_snapshot_scheduler"]


@st.cache_resource(show_spinner=False)
def _worker(_gate: Gate, settings: Settings) -> threading.Event:
    stop = threading.Event()
    threading.Thread(
        target=_gate.exports.run_worker, name="veil-export-worker", daemon=True,
        kwargs={"directory": settings.var_dir / "exports", "stop": stop,
                "worker_id": f"dashboard:{socket.gethostname()}:{os.getpid()}"},
    ).start()
    return stop


def start_export_worker(gate: Gate, settings: Settings) -> None:
    """Start this process's export worker once (a no-op on every later script run)."""
    if settings.export_worker:
        _worker(gate, settings)


@st.cache_resource(show_spinner=False)
def _scheduler(_gate: Gate, settings: Settings) -> threading.Event:
    stop = threading.Event()
    threading.Thread(target=_gate.snapshots.run_worker, name="veil-snapshot-scheduler",
                     daemon=True, kwargs={"stop": stop}).start()
    return stop


def start_snapshot_scheduler(gate: Gate, settings: Settings) -> None:
    """Start this process's donor-snapshot scheduler once (``gate.snapshots.run_worker``:
    checks every five minutes, publishes what is due, runs at least daily), unless
    VEIL_SNAPSHOT_SCHEDULER=0."""
    if settings.snapshot_scheduler:
        _scheduler(gate, settings)
