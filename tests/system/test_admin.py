"""Administration (D8) against real stores: tenant privacy settings that tighten at once and
loosen only with a second administrator, their effect on the gate, role mappings; all audited."""

from __future__ import annotations

import math
import threading
from datetime import date, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from data.bootstrap import PLATFORM_ADMINS, demo_username, init_store
from data.errors import ConfigError
from data.models import AuditEntry, BudgetAccount, CubeMonthly, ProductVersion
from data.role_mappings import load_role_mappings
from privacy import (AccessDenied, BudgetExhausted, Epsilon, Gate, InvalidInput, Principal,
                     Query, QueryRefused, TenantSettings)

from exact_support import exact_cells

NOW = datetime(2026, 11, 21, 12, 0)
MONTHS = [date(2026, m, 1) for m in range(1, 5)]
#: kigali-east's true monthly doses: one month each under 5, between 5 and 7, above 7
TRUE = {MONTHS[0]: 4, MONTHS[1]: 6, MONTHS[2]: 8, MONTHS[3]: 300}
TENANT = "kigali-east"


def _person(role: str, tenant: str = TENANT, subject: str | None = None) -> Principal:
    return Principal(subject=subject or demo_username(role, tenant), display_name=role,
                     role=role, tenant=tenant, source="demo")


ADMIN = _person("tenant_admin")
SECOND_ADMIN = _person("tenant_admin", subject="second.admin@kigali-east.example")
OTHER_TENANT_ADMIN = _person("tenant_admin", tenant="south")
PLATFORM = _person("platform_admin", subject=sorted(PLATFORM_ADMINS)[0])


@pytest.fixture
def gate(store, catalog) -> Gate:
    with store.write.begin() as session:
        for month, total in TRUE.items():
            session.add(CubeMonthly(
                tenant_id=TENANT, product_id="health.vaccinations", metric="doses",
                period=month, state="KGL", district="KGL-GAS", h3_cell="87GAS",
                age_bucket="0-5", gender="female", category="polio", n_events=total,
                value_sum=0.0))
        session.add(ProductVersion(tenant_id=TENANT, product_id="health.vaccinations",
                                   data_version=1, refreshed_at=NOW, cube_rows=len(TRUE)))
    return Gate(store, catalog, demo_accounts=True, clock=lambda: NOW)


def _query(level: str = "dp_medium", **overrides) -> Query:
    fields = dict(product="health.vaccinations", metric="doses", level=level,
                  start=MONTHS[0], end=MONTHS[-1])
    fields.update(overrides)
    return Query(**fields)


def _exact(gate: Gate) -> list[float | None]:
    """The monthly counts measured without noise under the settings in force: the k-threshold
    alone (the gate releases no exact aggregate; see exact_support)."""
    return [c.value for c in exact_cells(gate, _person("policy_maker"), _query())]


def _settings(gate: Gate, **changes) -> TenantSettings:
    current = gate.admin.effective(TENANT).settings
    fields = {"k": current.k, "budgets": dict(current.budgets), "levels": dict(current.levels),
              "disabled_levels": current.disabled_levels}
    for name, value in changes.items():
        if name in ("budgets", "levels"):
            fields[name] = {**fields[name], **value}
        else:
            fields[name] = value
    return TenantSettings(**fields)


def _audit(store, action: str, outcome: str = "allowed") -> list[AuditEntry]:
    with store.read() as session:
        return list(session.scalars(select(AuditEntry).where(
            AuditEntry.action == action, AuditEntry.outcome == outcome)
            .order_by(AuditEntry.id)))


# --- tightening applies at once -----------------------------------------------------------------


def test_catalog_values_are_version_zero(gate, catalog):
    """Without stored versions the tenant's settings are the catalog's, as version 0."""
    current = gate.admin.settings(ADMIN)
    assert current.version == 0 and current.status == "active"
    assert current.settings.k == catalog.policy.k == 5
    assert current.settings.budgets["policy_maker"] == Epsilon(20.0)
    assert current.settings.levels == {"dp_low": Epsilon(2.0), "dp_medium": Epsilon(1.0),
                                       "dp_high": Epsilon(0.5)}
    assert "donor" not in current.settings.budgets  # no query budget: nothing to set


def test_higher_k_applies_at_once_and_suppresses_more(gate, store):
    """Raising k is a tightening: active at once, and a month of 6 is suppressed from then on."""
    assert _exact(gate) == [None, 6.0, 8.0, 300.0]
    version = gate.admin.change_settings(ADMIN, _settings(gate, k=7), reason="small district")
    assert (version.version, version.status, version.weakens) == (1, "active", False)
    assert [(c.setting, c.before, c.after, c.weakens) for c in version.changes] == [
        ("k", 5, 7, False)]
    assert _exact(gate) == [None, None, 8.0, 300.0]
    [entry] = _audit(store, "settings_apply")
    assert entry.principal == ADMIN.subject and entry.tenant_id == TENANT
    assert entry.detail["before"]["k"] == 5 and entry.detail["after"]["k"] == 7
    assert entry.detail["reason"] == "small district"


def test_release_made_before_a_k_change_is_not_reused(gate):
    """The stored release under k=5 is not the answer under k=7; its policy version says so."""
    policy_maker = _person("policy_maker")
    before = gate.release(policy_maker, _query())
    gate.admin.change_settings(ADMIN, _settings(gate, k=7), reason="tighten")
    after = gate.release(policy_maker, _query())
    assert not after.reused and after.id != before.id and after.k == 7
    assert before.policy_version == gate.catalog.version
    assert after.policy_version == gate.catalog.version[:56] + "+s1"
    assert len(after.policy_version) <= 64
    assert gate.release(policy_maker, _query()).id == after.id  # and it is stored in turn


def test_lower_level_epsilon_applies_at_once_and_charges_it(gate):
    """A smaller ε for dp_medium is charged (and noised) from the next release on."""
    policy_maker = _person("policy_maker")
    first = gate.release(policy_maker, _query("dp_medium"))
    assert first.charged == Epsilon(1.0)
    gate.admin.change_settings(ADMIN, _settings(gate, levels={"dp_medium": Epsilon(0.5)}),
                               reason="more noise")
    second = gate.release(policy_maker, _query("dp_medium"))
    assert not second.reused and second.charged == Epsilon(0.5)
    assert "ε = 0.5" in second.guarantee
    assert second.cells[-1].noise_scale == pytest.approx(2 * first.cells[-1].noise_scale)


def test_lower_budget_refuses_earlier_within_the_current_window(gate, store):
    """A cap lowered mid-window holds at once for an account that already exists."""
    policy_maker = _person("policy_maker")
    gate.release(policy_maker, _query("dp_medium"))  # ε 1 of 20 spent
    gate.admin.change_settings(ADMIN, _settings(gate, budgets={"policy_maker": Epsilon(1.5)}),
                               reason="quarter-end freeze")
    status = gate.budget(policy_maker, product="health.vaccinations")
    assert (status.cap, status.spent, status.remaining) == (Epsilon(1.5), Epsilon(1.0),
                                                            Epsilon(0.5))
    with store.read() as session:
        assert session.scalars(select(BudgetAccount.cap)).one() == 1.5
    with pytest.raises(BudgetExhausted, match=r"requested ε=1, remaining ε=0.5"):
        gate.release(policy_maker, _query("dp_medium", filters=(("district", "KGL-GAS"),)))


def test_cap_lowered_while_a_release_is_planned_holds_for_its_charge(gate, store, monkeypatch):
    """The charge re-reads the cap in its own transaction: a plan made under the old cap
    cannot spend past a cap lowered meanwhile."""
    policy_maker = _person("policy_maker")
    gate.release(policy_maker, _query("dp_medium"))  # account exists, ε 1 spent
    stale = gate.admin.effective(TENANT)              # what a concurrent plan saw
    gate.admin.change_settings(ADMIN, _settings(gate, budgets={"policy_maker": Epsilon(1.5)}),
                               reason="freeze")
    with store.write.begin() as session:              # as if the account predated the change
        session.scalars(select(BudgetAccount)).one().cap = 20.0
    monkeypatch.setattr(gate.admin, "effective", lambda tenant: stale)
    with pytest.raises(BudgetExhausted, match=r"remaining ε=0.5"):
        gate.release(policy_maker, _query("dp_medium", filters=(("district", "KGL-GAS"),)))
    with store.read() as session:
        account = session.scalars(select(BudgetAccount)).one()
    assert (account.cap, account.spent) == (20.0, 1.0)  # the refused charge rolled back


def _planned_under_stale_settings(gate, monkeypatch, stale) -> list:
    """The release's read sees ``stale``, the settings in force before a change (as a release
    planned just before an administrator's change would): its first read only. Returns the
    versions each read of the release saw."""
    active_in = gate.tenant_settings.active_in
    seen: list = []

    def first_stale(session, tenant):
        seen.append(stale if not seen else active_in(session, tenant))
        return seen[-1]

    monkeypatch.setattr(gate.tenant_settings, "active_in", first_stale)
    return seen


def test_a_release_planned_before_a_cap_was_lowered_plans_again_and_is_refused(
        gate, store, monkeypatch):
    """Issue 18's one write round trip charges with the planned cap, so it checks in the same
    transaction that the settings planned under are still in force: a change since plans the
    release again under the new ones, whose lower cap then refuses it (nothing spent)."""
    policy_maker = _person("policy_maker")
    gate.release(policy_maker, _query("dp_medium"))  # ε 1 spent of the catalog's cap of 20
    stale = gate.tenant_settings.effective(TENANT)
    gate.admin.change_settings(ADMIN, _settings(gate, budgets={"policy_maker": Epsilon(1.5)}),
                               reason="freeze")
    seen = _planned_under_stale_settings(gate, monkeypatch, stale)
    with store.write.begin() as session:              # as if the account predated the change
        session.scalars(select(BudgetAccount)).one().cap = 20.0
    with pytest.raises(BudgetExhausted, match=r"remaining ε=0.5"):
        gate.release(policy_maker, _query("dp_medium", filters=(("district", "KGL-GAS"),)))
    assert [v.version for v in seen] == [0, 1]       # planned, found stale, planned again
    with store.read() as session:
        account = session.scalars(select(BudgetAccount)).one()
    assert (account.cap, account.spent) == (20.0, 1.0)


def test_a_release_planned_before_a_settings_change_is_made_under_the_new_settings(
        gate, store, monkeypatch):
    """The re-planned release records and keys the settings in force when it is charged."""
    stale = gate.tenant_settings.effective(TENANT)
    gate.admin.change_settings(ADMIN, _settings(gate, k=8), reason="tighter")
    seen = _planned_under_stale_settings(gate, monkeypatch, stale)
    release = gate.release(_person("policy_maker"), _query("dp_medium"))
    assert [v.version for v in seen] == [0, 1]
    assert release.policy_version.endswith("+s1") and release.k == 8
    with store.read() as session:
        assert session.scalar(select(func.sum(BudgetAccount.spent))) == pytest.approx(1.0)


def test_budget_only_change_keeps_reusing_stored_releases(gate):
    """A cap does not change what a release says: the stored answer stays the answer."""
    policy_maker = _person("policy_maker")
    first = gate.release(policy_maker, _query("dp_medium"))
    gate.admin.change_settings(ADMIN, _settings(gate, budgets={"policy_maker": Epsilon(10)}),
                               reason="smaller budget")
    again = gate.release(policy_maker, _query("dp_medium"))
    assert again.reused and again.id == first.id and again.charged == Epsilon(0.0)


def test_switched_off_level_is_refused(gate):
    """Switching a level off tightens; releases at that level are refused."""
    gate.admin.change_settings(ADMIN, _settings(gate, disabled_levels={"dp_low"}),
                               reason="dp_low too weak for us")
    with pytest.raises(QueryRefused, match=r"'dp_low' is switched off .* \(version 1\)"):
        gate.release(_person("policy_maker"), _query("dp_low"))
    assert gate.release(_person("policy_maker"), _query("dp_medium")).charged == Epsilon(1.0)


# --- weakening needs a second administrator -----------------------------------------------------


def test_lower_k_is_only_proposed_and_changes_nothing(gate, store):
    """Lowering k stays a proposal: the gate keeps k=5 until someone else approves."""
    proposal = gate.admin.change_settings(ADMIN, _settings(gate, k=3), reason="tiny villages")
    assert (proposal.version, proposal.status, proposal.weakens) == (1, "proposed", True)
    assert gate.admin.effective(TENANT).version == 0
    assert _exact(gate) == [None, 6.0, 8.0, 300.0]
    [entry] = _audit(store, "settings_propose")
    assert entry.detail["before"]["k"] == 5 and entry.detail["after"]["k"] == 3


def test_a_second_admin_approval_applies_a_weakening(gate, store):
    """Approved by a distinct admin of the tenant, the lower k is in force: 4 is shown."""
    gate.admin.change_settings(ADMIN, _settings(gate, k=3), reason="tiny villages")
    [pending] = gate.admin.pending(SECOND_ADMIN)
    assert pending.version == 1 and pending.decidable
    approved = gate.admin.approve_settings(SECOND_ADMIN, tenant=TENANT, version=1,
                                           reason="checked with the DPO")
    assert approved.status == "active" and approved.decided_by == SECOND_ADMIN.subject
    assert gate.admin.effective(TENANT).settings.k == 3
    assert _exact(gate) == [4.0, 6.0, 8.0, 300.0]
    [entry] = _audit(store, "settings_approve")
    assert entry.principal == SECOND_ADMIN.subject
    assert entry.detail["proposed_by"] == ADMIN.subject
    assert (entry.detail["before"]["k"], entry.detail["after"]["k"]) == (5, 3)
    assert gate.admin.pending(SECOND_ADMIN) == ()


def test_proposer_cannot_approve_its_own_weakening(gate, store):
    """The proposer is refused (and audited); the proposal stays pending."""
    gate.admin.change_settings(ADMIN, _settings(gate, budgets={"researcher": Epsilon(15)}),
                               reason="more queries")
    assert [p.decidable for p in gate.admin.pending(ADMIN)] == [False]
    with pytest.raises(AccessDenied, match="you proposed settings version 1"):
        gate.admin.approve_settings(ADMIN, tenant=TENANT, version=1)
    assert [e.target for e in _audit(store, "settings_approve", "refused")] == [
        f"{TENANT} settings v1"]
    assert gate.admin.effective(TENANT).settings.budgets["researcher"] == Epsilon(10.0)
    assert [p.status for p in gate.admin.pending(ADMIN)] == ["proposed"]


@pytest.mark.parametrize("approver, error", [
    (OTHER_TENANT_ADMIN, "cannot administer tenant kigali-east"),
    (_person("policy_maker"), "cannot administer tenants"),
    (_person("compliance_officer"), "cannot administer tenants"),
])
def test_only_an_admin_of_the_tenant_may_approve(gate, store, approver, error):
    """Another tenant's admin, or a non-admin, cannot approve; the refusal is audited."""
    gate.admin.change_settings(ADMIN, _settings(gate, k=4), reason="lower")
    with pytest.raises(AccessDenied, match=error):
        gate.admin.approve_settings(approver, tenant=TENANT, version=1)
    assert len(_audit(store, "settings_approve", "refused")) == 1
    assert gate.admin.effective(TENANT).version == 0


def test_platform_admin_may_approve_any_tenants_weakening(gate):
    """A platform administrator is a second administrator of every tenant."""
    gate.admin.change_settings(ADMIN, _settings(gate, levels={"dp_low": Epsilon(3)}),
                               reason="policy makers need precision")
    assert [p.tenant for p in gate.admin.pending(PLATFORM)] == [TENANT]
    gate.admin.approve_settings(PLATFORM, tenant=TENANT, version=1)
    release = gate.release(_person("policy_maker"), _query("dp_low"))
    assert release.charged == Epsilon(3.0)


def test_a_platform_admins_own_proposal_needs_another_admin(gate):
    """Platform admins are bound by the same rule: the tenant's admin approves theirs."""
    gate.admin.change_settings(PLATFORM, _settings(gate, k=4), tenant=TENANT, reason="pilot")
    with pytest.raises(AccessDenied, match="you proposed"):
        gate.admin.approve_settings(PLATFORM, tenant=TENANT, version=1)
    gate.admin.approve_settings(ADMIN, tenant=TENANT, version=1)
    assert gate.admin.effective(TENANT).settings.k == 4


def test_mixed_change_with_any_weakening_waits_whole(gate):
    """Higher k with a higher budget is a weakening as a whole: nothing applies yet."""
    proposal = gate.admin.change_settings(
        ADMIN, _settings(gate, k=8, budgets={"policy_maker": Epsilon(30)}), reason="trade")
    assert proposal.status == "proposed"
    assert [(c.setting, c.weakens) for c in proposal.changes] == [
        ("k", False), ("budget.policy_maker", True)]
    assert _exact(gate) == [None, 6.0, 8.0, 300.0]


def test_rejection_and_withdrawal_change_nothing_and_are_audited(gate, store):
    """A second admin rejects one proposal, the proposer withdraws another."""
    gate.admin.change_settings(ADMIN, _settings(gate, k=4), reason="one")
    rejected = gate.admin.reject_settings(SECOND_ADMIN, tenant=TENANT, version=1,
                                          reason="not justified")
    assert rejected.status == "rejected" and rejected.decision_reason == "not justified"
    gate.admin.change_settings(ADMIN, _settings(gate, k=3), reason="two")
    withdrawn = gate.admin.reject_settings(ADMIN, tenant=TENANT, version=2, reason="typo")
    assert withdrawn.decision_reason == "withdrawn by its proposer: typo"
    with pytest.raises(InvalidInput, match="version 2 of kigali-east is rejected"):
        gate.admin.approve_settings(SECOND_ADMIN, tenant=TENANT, version=2)
    assert gate.admin.effective(TENANT).version == 0
    assert [e.detail["version"] for e in _audit(store, "settings_reject")] == [1, 2]


def test_versions_increase_and_history_keeps_every_one(gate):
    """Versions number up per tenant; an activation supersedes the previous version and every
    pending proposal (which must then be proposed again)."""
    gate.admin.change_settings(ADMIN, _settings(gate, k=6), reason="v1")
    gate.admin.change_settings(ADMIN, _settings(gate, k=4), reason="v2 weakens")
    gate.admin.change_settings(ADMIN, _settings(gate, k=7), reason="v3 tightens")
    history = gate.admin.history(ADMIN)
    assert [(v.version, v.status) for v in history] == [
        (3, "active"), (2, "superseded"), (1, "superseded"), (0, "superseded")]
    assert "came into force first" in history[1].decision_reason
    with pytest.raises(InvalidInput, match="is superseded, not awaiting approval"):
        gate.admin.approve_settings(SECOND_ADMIN, tenant=TENANT, version=2)
    assert gate.admin.effective(TENANT).settings.k == 7
    assert gate.admin.effective("south").version == 0  # per tenant


def test_restoring_the_catalog_values_reuses_the_catalog_release(gate):
    """k back at the catalog's value gives the release made under it, not a fresh noise draw."""
    policy_maker = _person("policy_maker")
    original = gate.release(policy_maker, _query("dp_medium"))
    gate.admin.change_settings(ADMIN, _settings(gate, k=7), reason="up")
    assert gate.release(policy_maker, _query("dp_medium")).id != original.id
    gate.admin.change_settings(ADMIN, _settings(gate, k=5), reason="back")
    gate.admin.approve_settings(SECOND_ADMIN, tenant=TENANT, version=2)
    back = gate.release(policy_maker, _query("dp_medium"))
    assert back.reused and back.id == original.id


# --- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("build, message", [
    (lambda: TenantSettings(k=1, budgets={}, levels={}), "k must be >= 2, got 1"),
    (lambda: TenantSettings(k=2.5, budgets={}, levels={}), "k must be a whole number, got 2.5"),
    (lambda: TenantSettings(k=5, budgets={"researcher": Epsilon(0)}, levels={}),
     "budget 'researcher' must be ε > 0, got ε=0"),
    (lambda: TenantSettings(k=5, budgets={"researcher": 3.0}, levels={}),
     "budget 'researcher' must be an Epsilon, got 3.0"),
    (lambda: TenantSettings(k=5, budgets={}, levels={"dp_low": Epsilon(math.inf)}),
     "ε must be finite and >= 0, got inf"),
])
def test_settings_values_are_validated_with_the_bad_value(build, message):
    """k ≥ 2 whole, every ε finite and > 0; the message quotes the value."""
    with pytest.raises(InvalidInput, match=message):
        build()


@pytest.mark.parametrize("changes, message", [
    ({"budgets": {"donor": Epsilon(1)}}, "'donor' is not a role with a query budget"),
    ({"budgets": {"astronaut": Epsilon(1)}}, "'astronaut' is not a role with a query budget"),
    ({"levels": {"anonymized": Epsilon(1)}}, "'anonymized' is not a noisy privacy level"),
    ({"levels": {"dp_ultra": Epsilon(0.1)}}, "'dp_ultra' is not a noisy privacy level"),
    ({"disabled_levels": {"dp_none"}}, "'dp_none' is not a privacy level"),
    ({"levels": {"dp_high": Epsilon(1.5)}},
     "'dp_high' protects more than 'dp_medium', so its ε may not be larger: got ε=1.5"),
    ({}, "nothing to change: these are the settings of version 0"),
])
def test_unknown_names_and_inconsistent_levels_are_refused(gate, store, changes, message):
    """Only the catalog's budgeted roles and noisy levels; levels keep their order."""
    with pytest.raises(InvalidInput, match=message):
        gate.admin.change_settings(ADMIN, _settings(gate, **changes), reason="try")
    assert len(_audit(store, "settings_change", "refused")) == 1
    assert gate.admin.history(ADMIN)[0].version == 0


def test_a_reason_is_required(gate):
    """Every change says why."""
    with pytest.raises(InvalidInput, match="a reason is required"):
        gate.admin.change_settings(ADMIN, _settings(gate, k=6), reason="  ")


def test_tenant_admin_cannot_change_another_tenant(gate):
    """A tenant administrator's scope is its own tenant."""
    with pytest.raises(AccessDenied, match="cannot administer tenant south"):
        gate.admin.change_settings(ADMIN, _settings(gate, k=6), tenant="south", reason="x")
    assert gate.admin.tenants(ADMIN) == (TENANT,)
    assert set(gate.admin.tenants(PLATFORM)) == {"kigali-east", "north-west", "south"}


def test_concurrent_changes_get_distinct_versions(gate):
    """Two admins saving at once get versions 1 and 2, never a collision."""
    errors: list[BaseException] = []

    def change(admin: Principal, k: int) -> None:
        try:
            gate.admin.change_settings(admin, _settings(gate, k=k), reason=f"k={k}")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=change, args=(a, k))
               for a, k in ((ADMIN, 6), (SECOND_ADMIN, 7))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(v.version for v in gate.admin.history(ADMIN)) == [0, 1, 2]
    # k=6 then 7: both tighten; 7 then 6: the second is a weakening, proposed only
    assert gate.admin.effective(TENANT).settings.k == 7


def test_a_change_based_on_an_old_version_is_refused(gate):
    """Saving a form loaded before someone else's change would silently undo it: refused."""
    stale = _settings(gate, budgets={"researcher": Epsilon(8)})
    gate.admin.change_settings(SECOND_ADMIN, _settings(gate, k=6), reason="first")
    with pytest.raises(InvalidInput, match=r"changed since version 0 was shown \(now version 1\)"):
        gate.admin.change_settings(ADMIN, stale, reason="second", base_version=0)
    assert gate.admin.effective(TENANT).settings.k == 6


# --- role mappings ------------------------------------------------------------------------------


def test_admin_adds_a_mapping_that_resolves_an_organisation_account(gate, store):
    """A page-made mapping lets the OIDC identity in; versioned and audited."""
    view = gate.admin.add_mapping(ADMIN, claim="email", value="Ana@Health.Example.org",
                                  role="policy_maker", reason="new analyst")
    assert (view.value, view.source, view.removable) == ("ana@health.example.org", "admin",
                                                         True)
    principal = gate.resolve({"email": "ana@health.example.org"}, source="oidc")
    assert (principal.role, principal.tenant) == ("policy_maker", TENANT)
    with pytest.raises(AccessDenied):  # page-made rows never serve demo sign-ins
        gate.resolve({"email": "ana@health.example.org"}, source="demo")
    [change] = gate.admin.mapping_history(ADMIN)
    assert (change.version, change.action, change.changed_by) == (1, "add", ADMIN.subject)
    [entry] = _audit(store, "role_mapping_add")
    assert entry.detail["mapping_version"] == 1 and entry.detail["role"] == "policy_maker"


def test_admin_removes_its_mapping_and_access_ends(gate, store):
    """Removal revokes at once, with the next mapping version."""
    gate.admin.add_mapping(ADMIN, claim="group", value="analysts", role="researcher",
                           reason="team")
    removed = gate.admin.remove_mapping(ADMIN, claim="group", value="analysts",
                                        reason="team disbanded")
    assert (removed.version, removed.action, removed.role) == (2, "remove", "researcher")
    with pytest.raises(AccessDenied, match="has no role in Veil"):
        gate.resolve({"sub": "x", "groups": ["analysts"]}, source="oidc")
    assert [c.version for c in gate.admin.mapping_history(ADMIN)] == [2, 1]
    assert len(_audit(store, "role_mapping_remove")) == 1


@pytest.mark.parametrize("admin, role, tenant, error, message", [
    (ADMIN, "platform_admin", None, AccessDenied, "nobody can grant the platform_admin"),
    (PLATFORM, "platform_admin", None, AccessDenied, "nobody can grant the platform_admin"),
    (ADMIN, "tenant_admin", None, AccessDenied, "only a platform administrator can grant"),
    (ADMIN, "policy_maker", "south", AccessDenied, "cannot administer tenant south"),
    (ADMIN, "publisher", None, InvalidInput, "not a role a person signs in as"),
    (ADMIN, "astronaut", None, InvalidInput, "must be a role of roles.toml"),
    (_person("researcher"), "researcher", None, AccessDenied, "cannot administer tenants"),
])
def test_mapping_grants_are_limited(gate, store, admin, role, tenant, error, message):
    """No platform_admin ever, tenant_admin by platform admins only, own tenant only."""
    with pytest.raises(error, match=message):
        gate.admin.add_mapping(admin, claim="email", value="someone@example.org", role=role,
                               tenant=tenant, reason="try")
    assert len(_audit(store, "role_mapping_add", "refused")) == 1


def test_platform_admin_maps_a_tenant_admin_in_any_tenant(gate):
    """The platform administrator creates tenant administrators (and can remove them)."""
    view = gate.admin.add_mapping(PLATFORM, claim="sub", value="u-42", role="tenant_admin",
                                  tenant="south", reason="new office head")
    assert view.tenant == "south" and view.removable
    assert [m.removable for m in gate.admin.mappings(OTHER_TENANT_ADMIN)
            if m.value == "u-42"] == [False]
    with pytest.raises(AccessDenied, match="only a platform administrator can remove"):
        gate.admin.remove_mapping(OTHER_TENANT_ADMIN, claim="sub", value="u-42", reason="x")
    gate.admin.remove_mapping(PLATFORM, claim="sub", value="u-42", tenant="south", reason="left")


def test_demo_and_duplicate_mappings_are_read_only(gate):
    """An identity already mapped is refused; demo (and file) rows cannot be removed here."""
    mine = [m for m in gate.admin.mappings(ADMIN) if m.value == ADMIN.subject]
    assert [(m.source, m.removable) for m in mine] == [("demo", False)]
    with pytest.raises(InvalidInput, match="already mapped to tenant_admin at kigali-east"):
        gate.admin.add_mapping(ADMIN, claim="email", value=ADMIN.subject, role="donor",
                               reason="x")
    with pytest.raises(InvalidInput, match="cannot be removed here"):
        gate.admin.remove_mapping(ADMIN, claim="email", value=ADMIN.subject, reason="x")
    south = demo_username("donor", "south")
    with pytest.raises(InvalidInput, match="already mapped in another tenant$"):
        gate.admin.add_mapping(ADMIN, claim="email", value=south, role="donor", reason="x")


def test_page_mappings_and_the_mappings_file_coexist(gate, store, catalog, tmp_path: Path):
    """The start-up check ignores page-made rows; `veil init` never overwrites one."""
    path = tmp_path / "role_mappings.toml"
    path.write_text('version = 1\n[[mapping]]\nclaim = "email"\nvalue = "file@example.org"\n'
                    'role = "researcher"\ntenant = "kigali-east"\n')
    init_store(store, catalog, demo_accounts=True, role_mappings=load_role_mappings(path, catalog))
    gate.admin.add_mapping(ADMIN, claim="email", value="page@example.org", role="donor",
                           reason="board member")
    assert gate.check_role_mappings(path) == 1
    assert {(m.value, m.source) for m in gate.admin.mappings(ADMIN)} >= {
        ("file@example.org", "file"), ("page@example.org", "admin")}
    with pytest.raises(InvalidInput, match="managed by the role mappings file"):
        gate.admin.remove_mapping(ADMIN, claim="email", value="file@example.org", reason="x")
    path.write_text(path.read_text() + '[[mapping]]\nclaim = "email"\n'
                    'value = "page@example.org"\nrole = "researcher"\ntenant = "kigali-east"\n')
    with pytest.raises(ConfigError, match="on the admin page|admin page: "):
        init_store(store, catalog, demo_accounts=True,
                   role_mappings=load_role_mappings(path, catalog))
    assert gate.resolve({"email": "page@example.org"}, source="oidc").role == "donor"
