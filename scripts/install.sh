#!/usr/bin/env bash
# Create .venv and install Veil with its test extras. Idempotent; only registry downloads.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test,bench]"
# The browser tests' local OIDC provider (npm oidc-provider), pinned by its lock file. Without
# Node the browser tests skip (CI installs it and requires them).
if [ ! -d tests/e2e/oidc/node_modules ]; then
  if command -v npm >/dev/null; then
    (cd tests/e2e/oidc && npm ci --no-audit --no-fund --loglevel=error)
  else
    echo "npm not found: the browser tests (tests/e2e) will be skipped" >&2
  fi
fi
