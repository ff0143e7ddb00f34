"""Deterministic demo data (SPEC B5): three tenants, three verticals, two years of events.

Owns generating and bulk-loading realistic, skewed, multi-tenant demo records: subjects (keyed
pseudonyms only), consent history with withdrawals, per-vertical events for every metric_set
product, and beneficiary registrations; plus ``demo_digest``, a content hash of those tables
that proves determinism through the database.

It must never store a raw subject id (only ``hmac-sha256(secret, raw)[:32]``), never read the
clock or global random state (same seed + size + secret + as-of day → identical rows), never
exceed a product's per-subject daily contribution bound nor, when the product declares one, its
per-subject monthly bound, and never build aggregates: cubes are ``data.materialize``'s job,
and the caller runs it after ``generate``.

Shape of the data, and why:

* Districts get volume in proportion to their catalog weight, and within a district cells thin
  out with ring distance from the centroid (``(1 + ring) ** -2.5`` with jitter), so the outer
  cells of light districts hold a handful of events a month: the small cells that the privacy
  gate must roll up (C4) exist at every size.
* Each product has a profile (age mix, categories, season, time of day, value model). A
  product without a profile still gets generic but valid rows, so a catalog change does not
  break the demo.
* Events are generated per (tenant, product) in chunks of whole subjects, so the daily and
  monthly contribution bounds can be enforced inside a chunk and ``large`` (10M+ events)
  streams through bounded memory.

Private modules, one concern each::

    _generate   generate(): one run in one transaction, the report (loads via ``data.bulk``)
    _calendar   demo_window() and the per-day calendar arrays
    _places     the geography's cells, weighted by ring distance, for sampling
    _profiles   per-product stories: ages, categories, seasons, times, value models
    _people     subjects, consent history, registrations
    _events     events per product and subject, trimmed to the contribution bounds
    _digest     demo_digest(): the content hash that proves determinism
"""

from data.demo._calendar import demo_window
from data.demo._digest import demo_digest
from data.demo._generate import SIZES, DemoReport, Progress, generate
from data.pseudonym import pseudonym

__all__ = [
    "DemoReport",
    "Progress",
    "SIZES",
    "demo_digest",
    "demo_window",
    "generate",
    "pseudonym",
]
