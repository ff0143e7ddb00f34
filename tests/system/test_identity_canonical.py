"""One canonical subject per identity (issue 15.1), on both stores.

A person's e-mail claim may arrive in another letter case or Unicode form; it must resolve to
the same subject, so approvals, budgets and audit entries keyed by the subject cannot count one
person twice.
"""

from __future__ import annotations

import unicodedata
from datetime import date, datetime

import pytest

from data.bootstrap import DEMO_PASSWORD, utcnow
from data.models import CubeMonthly, ProductVersion, RoleMapping
from data.role_mappings import apply_role_mappings, load_role_mappings
from privacy import AccessDenied, Gate, Principal, Query, QueryRefused

NOW = datetime(2026, 11, 21, 12, 0)
TENANTS = ("kigali-east", "north-west", "south")
COMPOSED = "jos\u00e9.admin@programmes.example"          # é as one code point
DECOMPOSED = unicodedata.normalize("NFD", COMPOSED)       # e + combining acute accent
FULLWIDTH = "ＪＯＳÉ.ＡＤＭＩＮ＠ＰＲＯＧＲＡＭＭＥＳ.ＥＸＡＭＰＬＥ"  # fullwidth letters and @

MAPPINGS = """version = 1

[[mapping]]
claim = "email"
value = "Jose\u0301.Admin@Programmes.example"
role = "platform_admin"
tenant = "kigali-east"
"""


@pytest.fixture
def gate(store, catalog, tmp_path) -> Gate:
    """A store with a vaccination cube in every tenant and one OIDC platform administrator,
    mapped once (in a decomposed, mixed-case spelling)."""
    path = tmp_path / "role_mappings.toml"
    path.write_text(MAPPINGS, encoding="utf-8")
    with store.write.begin() as session:
        apply_role_mappings(session, load_role_mappings(path, catalog))
        for tenant in TENANTS:
            district = catalog.districts_of(tenant)[0]
            for month in (date(2026, m, 1) for m in range(1, 7)):
                session.add(CubeMonthly(
                    tenant_id=tenant, product_id="health.vaccinations", metric="doses",
                    period=month, state=district.state, district=district.code,
                    h3_cell="-", age_bucket="0-5", gender="female", category="polio",
                    n_events=500, value_sum=0.0))
            session.add(ProductVersion(tenant_id=tenant, product_id="health.vaccinations",
                                       data_version=1, refreshed_at=NOW, cube_rows=6))
    return Gate(store, catalog, secret="test-secret-0123456789abcdef", clock=lambda: NOW)


@pytest.mark.parametrize("spelling", [
    COMPOSED, DECOMPOSED, COMPOSED.upper(), "Jos\u00c9.Admin@Programmes.Example", FULLWIDTH,
    f"  {COMPOSED}\t"], ids=["composed", "decomposed", "upper", "mixed", "fullwidth", "padded"])
def test_spellings_of_one_address_resolve_to_one_subject(gate, spelling):
    """Letter case, Unicode form, fullwidth letters and padding do not make another person."""
    principal = gate.resolve({"email": spelling, "sub": "u-jose"}, source="oidc")
    assert principal.subject == COMPOSED
    assert (principal.role, principal.tenant) == ("platform_admin", "kigali-east")


def test_a_provider_without_an_address_is_keyed_by_issuer_and_sub(gate, store):
    """Without a usable e-mail the subject is the provider's sub, qualified by its issuer."""
    with store.write.begin() as session:
        session.add(RoleMapping(claim="sub", value="U-77", role="donor", tenant_id="south",
                                created_at=utcnow(), created_by="test"))
    one = gate.resolve({"sub": "U-77", "iss": "https://idp.example"}, source="oidc")
    unverified = gate.resolve({"sub": "U-77", "iss": "https://idp.example",
                               "email": "someone@else.example", "email_verified": False},
                              source="oidc")
    assert one.subject == unverified.subject == "sub U-77 of https://idp.example"
    with pytest.raises(AccessDenied, match="has no role in Veil"):
        gate.resolve({"sub": "u-77", "iss": "https://idp.example"}, source="oidc")  # sub is exact


def test_one_person_cannot_give_both_approvals_under_two_spellings(gate):
    """The same administrator approving twice, as Jose and as JOSE, is one approval."""
    requester = Principal(subject="researcher@kigali-east.demo", display_name="r",
                          role="researcher", tenant="kigali-east", source="demo")
    requested = gate.exports.request(
        requester, Query(product="health.vaccinations", metric="doses", level="dp_medium",
                         start=date(2026, 1, 1), end=date(2026, 6, 1)),
        purpose="approved_research", justification="ethics ref. RW-2026-17", umbrella=True)
    first = gate.resolve({"email": COMPOSED, "sub": "u-jose"}, source="oidc")
    gate.exports.approve(first, requested.id)
    second = gate.resolve({"email": FULLWIDTH.lower(), "sub": "u-jose"}, source="oidc")
    with pytest.raises(QueryRefused, match="already decided"):
        gate.exports.approve(second, requested.id)
    status = gate.exports.status(requester, requested.id)
    assert (status.status, status.approvals) == ("pending", (COMPOSED,))


def test_demo_sign_in_accepts_any_spelling_of_the_username(store, catalog):
    """A demo username typed in capitals or fullwidth letters is the same demo account."""
    gate = Gate(store, catalog, demo_accounts=True)
    claims = gate.authenticate_demo(username="ＤＯＮＯＲ@South.demo", password=DEMO_PASSWORD)
    assert gate.resolve(claims, source="demo").subject == "donor@south.demo"
