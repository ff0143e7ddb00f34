"""The pinned days of the test suite: no test may depend on the day it runs.

Demo data in tests is generated as of ``DEMO_AS_OF`` (two years of events up to the day
before), whatever the calendar says; pages then default to the data's latest complete month,
``DEMO_LATEST``. A test that needs "now" pins the clock (``data.clock``) or passes a date.
"""

from datetime import date, datetime

#: the as-of day of every demo store the tests build: events run 2024-11-01 .. 2026-10-31
DEMO_AS_OF = date(2026, 11, 1)
#: the latest complete month of that demo
DEMO_LATEST = date(2026, 10, 1)
#: the pages' wall clock in AppTests: three weeks after the demo's as-of day
PAGES_NOW = datetime(2026, 11, 20, 12, 0)
