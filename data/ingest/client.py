"""A source's side of a product randomised at collection: randomise each answer, then post.

Owns the Python client helper of the collector (``POST /api/v1/events``) for a product that
declares ``randomised = { epsilon = … }`` in the catalog (e.g. ``health.wellbeing``). Each
event's true ``category`` is replaced by k-ary randomised response over the product's declared
domain at its declared ε (OpenDP's ``make_randomized_response`` through
``privacy.LocalRandomizer``, its own secure randomness) and marked ``randomised_epsilon``,
before the event leaves this process. It must never send a true answer, keep one after
randomising it, or touch the store; it runs where the answers are collected (a field app's
back end), with the source's token.

    VEIL_SOURCE_TOKEN=veil_… python -m data.ingest.client answers.jsonl \\
        --url http://127.0.0.1:8502 --product health.wellbeing

Errors: ``InvalidInput`` (an answer outside the declared domain, a product not randomised, a
4xx answer of the collector) and ``StoreError`` (the collector unreachable or answering 5xx;
safe to retry: event ids make a retry idempotent).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from data.catalog import Catalog, load_catalog
from data.config import PROJECT_ROOT
from data.errors import InvalidInput, StoreError, VeilError
from data.ingest.randomise import LocalRandomizer

__all__ = ["RandomisingClient", "main"]

#: The collector takes at most this many events per request (``ApiLimits.max_events``).
BATCH_EVENTS = 1000


@dataclass(frozen=True)
class RandomisingClient:
    """Randomises a product's answers at its declared ε and posts them to the collector."""

    url: str
    token: str
    product: str
    randomizer: LocalRandomizer
    timeout: float = 30.0

    def __post_init__(self):
        if not self.url.startswith(("http://", "https://")):
            raise InvalidInput(f"the collector URL must start with http:// or https://, "
                               f"got {self.url!r}")
        if not self.token:
            raise InvalidInput("a source token is required (veil source add prints one)")

    @classmethod
    def from_catalog(cls, catalog: Catalog, *, url: str, token: str, product: str,
                     timeout: float = 30.0) -> RandomisingClient:
        """The client for ``product`` with the ε and categories its catalog entry declares."""
        spec = catalog.product(product)
        if spec.randomised_epsilon is None:
            raise InvalidInput(f"{spec.id} is not randomised at collection; send its events "
                               f"as they are (veil ingest, or the collector directly)")
        randomizer = LocalRandomizer(categories=catalog.domains[spec.category_domain],
                                     epsilon=spec.randomised_epsilon)
        return cls(url=url.rstrip("/"), token=token, product=spec.id, randomizer=randomizer,
                   timeout=timeout)

    def randomise(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of ``event`` whose ``category`` is randomised and marked with the ε."""
        if "category" not in event:
            raise InvalidInput(f"an event of {self.product} needs its true 'category' (one of "
                               f"{list(self.randomizer.categories)}) to randomise")
        report = dict(event)
        report["category"] = self.randomizer(event["category"])
        report["randomised_epsilon"] = self.randomizer.epsilon
        return report

    def send(self, events: Iterable[Mapping[str, Any]], *,
             http: httpx.Client | None = None) -> list[dict]:
        """Randomise every event, then post them in batches; the collector's answer per batch.

        Every answer is randomised before the first request, so nothing true is ever posted
        even if a batch fails part way.
        """
        reports = [self.randomise(event) for event in events]
        owned = http is None
        http = http or httpx.Client(timeout=self.timeout)
        answers = []
        try:
            for start in range(0, len(reports), BATCH_EVENTS):
                body = {"product": self.product, "events": reports[start:start + BATCH_EVENTS]}
                answers.append(self._post(http, body))
        finally:
            if owned:
                http.close()
        return answers

    def _post(self, http: httpx.Client, body: dict) -> dict:
        try:
            response = http.post(f"{self.url}/api/v1/events", json=body,
                                 headers={"Authorization": f"Bearer {self.token}"})
        except httpx.HTTPError as exc:
            raise StoreError(f"the collector at {self.url} could not be reached "
                             f"({type(exc).__name__}); nothing from this batch is known to "
                             f"be stored, so send it again") from exc
        if response.status_code == 200:
            return response.json()
        try:
            error = response.json().get("error", "")
        except ValueError:
            error = ""
        message = (f"the collector answered {response.status_code}: "
                   f"{error or response.reason_phrase}")
        if response.status_code >= 500 or response.status_code == 429:
            raise StoreError(message + "; nothing of this batch was stored, send it again")
        raise InvalidInput(message)


def main(argv: list[str] | None = None) -> int:
    """``python -m data.ingest.client FILE --url URL --product P``: randomise a JSONL file of
    true answers and post it; the token is read from ``VEIL_SOURCE_TOKEN``."""
    parser = argparse.ArgumentParser(
        prog="python -m data.ingest.client",
        description="Randomise self-reported answers at the product's declared ε and post "
                    "them to Veil's collector (VEIL_SOURCE_TOKEN holds the source token).")
    parser.add_argument("file", type=Path, help="JSONL: one event with its true category a line")
    parser.add_argument("--url", required=True, help="the collector, e.g. http://127.0.0.1:8502")
    parser.add_argument("--product", required=True, help="e.g. health.wellbeing")
    args = parser.parse_args(argv)
    try:
        token = os.environ.get("VEIL_SOURCE_TOKEN", "")
        # only the catalog is needed here (VEIL_CATALOG_DIR, as on the server), not a store
        catalog = load_catalog(Path(os.environ.get("VEIL_CATALOG_DIR")
                                    or PROJECT_ROOT / "catalog"))
        client = RandomisingClient.from_catalog(catalog, url=args.url, token=token,
                                                product=args.product)
        with args.file.open(encoding="utf-8") as handle:
            events = [json.loads(line) for line in handle if line.strip()]
        answers = client.send(events)
    except (VeilError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    totals = {status: sum(a[status] for a in answers)
              for status in ("accepted", "duplicate", "bounded", "rejected")}
    print(f"{len(events)} answers randomised at ε = {client.randomizer.epsilon:g} and sent: "
          + ", ".join(f"{n} {status}" for status, n in totals.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
