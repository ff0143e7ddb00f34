#!/usr/bin/env bash
# Install, create the embedded demo store with demo data (once), and start the dashboard.
#   VEIL_DEMO_SIZE=small|medium|large (default small)   PORT (default 8501)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export VEIL_DEMO_MODE=${VEIL_DEMO_MODE:-1}
if [ ! -f var/.demo-ready ]; then
  .venv/bin/veil demo --size "${VEIL_DEMO_SIZE:-small}"
  touch var/.demo-ready
else
  .venv/bin/veil init
fi
exec .venv/bin/streamlit run dashboard/app.py --server.port "${PORT:-8501}"
