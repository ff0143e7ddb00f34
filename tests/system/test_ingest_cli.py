"""The `veil` commands for ingestion (SPEC E1): ingest, consent, source, materialize, freshness."""

from __future__ import annotations

import re

import pytest

from dashboard.cli import main
from ingest_support import PRODUCT, SECRET, TENANT, event, event_count, write_jsonl


@pytest.fixture
def veil(store, monkeypatch, capsys):
    """Run `veil ARGS` in-process against the test store; returns (status, stdout, stderr)."""
    monkeypatch.setenv("VEIL_DATABASE_URL", store.engine.url.render_as_string(
        hide_password=False))
    monkeypatch.setenv("VEIL_DEMO_MODE", "1")
    monkeypatch.setenv("VEIL_SECRET", SECRET)

    def run(*args: str) -> tuple[int, str, str]:
        status = main(list(args))
        captured = capsys.readouterr()
        return status, captured.out, captured.err

    return run


def test_consent_then_ingest_prints_the_batch_report(veil, store, tmp_path):
    """Grant through the CLI, ingest a file with one bad line: the report counts by reason."""
    status, out, _ = veil("consent", "grant", "--tenant", TENANT, "--vertical", "health",
                          "--subject", "person-1", "--at", "2024-01-01T00:00:00+00:00")
    assert status == 0 and "consent granted" in out and "person-1" not in out
    path = write_jsonl(tmp_path / "e.jsonl", [event(1), event(2, category="covid"), event(1)])
    status, out, err = veil("ingest", str(path), "--tenant", TENANT, "--product", PRODUCT)
    assert status == 0, err
    assert re.search(r"accepted\s+1\n", out) and re.search(r"duplicate\s+1\n", out)
    assert re.search(r"rejected\s+1\n\s+unknown category\s+1\n", out)
    assert "MB" in err  # the progress bar
    assert event_count(store) == 1
    status, out, _ = veil("ingest", str(path), "--tenant", TENANT, "--product", PRODUCT)
    assert status == 0 and "already ingested in full" in out


def test_a_withdrawal_through_the_cli_rebuilds_and_says_so(veil, store, tmp_path):
    """`veil consent withdraw` prints the cubes it rebuilt."""
    veil("consent", "grant", "--tenant", TENANT, "--vertical", "health", "--subject",
         "person-1", "--at", "2024-01-01T00:00:00Z")
    veil("ingest", str(write_jsonl(tmp_path / "e.jsonl", [event(1)])), "--tenant", TENANT,
         "--product", PRODUCT, "--quiet")
    veil("materialize", "--tenant", TENANT)
    status, out, _ = veil("consent", "withdraw", "--tenant", TENANT, "--vertical", "health",
                          "--subject", "person-1")
    assert status == 0 and "consent withdrawn" in out
    assert "health.vaccinations" in out and "1 month(s) rebuilt" in out


def test_materialize_is_incremental_unless_full(veil, tmp_path):
    """The default run rebuilds changed months only; --full rebuilds everything."""
    veil("consent", "grant", "--tenant", TENANT, "--vertical", "health", "--subject",
         "person-1", "--at", "2024-01-01T00:00:00Z")
    veil("ingest", str(write_jsonl(tmp_path / "e.jsonl", [event(1)])), "--tenant", TENANT,
         "--product", PRODUCT, "--quiet")
    _, first, _ = veil("materialize", "--tenant", TENANT, "--product", PRODUCT)
    _, idle, _ = veil("materialize", "--tenant", TENANT, "--product", PRODUCT)
    _, full, _ = veil("materialize", "--tenant", TENANT, "--product", PRODUCT, "--full")
    assert "full rebuild" in first and "up to date" in idle and "full rebuild" in full
    status, out, _ = veil("freshness", "--tenant", TENANT)
    assert status == 0 and PRODUCT in out and "never materialised" in out


def test_sources_are_added_listed_and_revoked_and_the_token_shown_once(veil):
    """The token is printed by `add` only; `list` shows a hint; revoking twice is an error."""
    status, out, _ = veil("source", "add", "clinic-app", "--tenant", TENANT, "--product",
                          PRODUCT)
    token = out.strip().splitlines()[-1]
    assert status == 0 and token.startswith("veil_")
    status, listing, _ = veil("source", "list")
    assert "clinic-app" in listing and token not in listing and token[:12] in listing
    assert veil("source", "revoke", "clinic-app", "--tenant", TENANT)[0] == 0
    status, _, err = veil("source", "revoke", "clinic-app", "--tenant", TENANT)
    assert status == 2 and err.count("\n") == 1 and "already revoked" in err


@pytest.mark.parametrize(("args", "message"), [
    (("ingest", "missing.jsonl", "--tenant", TENANT, "--product", PRODUCT), "no such file"),
    (("ingest", "x.jsonl", "--tenant", TENANT, "--product", "health.x"), "unknown product"),
    (("consent", "withdraw", "--tenant", TENANT, "--vertical", "health", "--subject", "p",
      "--at", "2025-01-01T00:00:00Z"), "for grants only"),
    (("source", "add", "Bad Name", "--tenant", TENANT, "--product", PRODUCT), "source name"),
    (("materialize", "--tenant", "atlantis"), "unknown tenant"),
])
def test_errors_print_one_line_and_exit_2(veil, args, message):
    """No traceback: one line naming what to fix, status 2."""
    status, _, err = veil(*args)
    assert status == 2 and message in err and err.count("\n") == 1
    assert err.startswith(f"veil {args[0]}: error: ")
