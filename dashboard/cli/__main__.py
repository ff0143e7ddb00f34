"""``python -m dashboard.cli``: the ``veil`` command (what the console script runs)."""

from dashboard.cli import main

raise SystemExit(main())
