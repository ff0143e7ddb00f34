#!/usr/bin/env bash
# Install and run the whole test suite. PostgreSQL tests run when VEIL_TEST_POSTGRES_URL is set
# (.ci/run sets it and requires the server).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/python -m pytest "$@"
