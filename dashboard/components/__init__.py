"""Shared UI components: charts with bands, privacy badges, budget meter, error display."""
