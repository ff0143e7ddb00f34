"""Administration (SPEC D8): tenant privacy settings, role mappings, the approvals queue.

A service beside the gate, reached as ``gate.admin``, written only against the gate core's
public surface (``privacy.core``). Owns every change an administrator makes; each is versioned
and audited in the transaction that makes it, and every refusal is audited too. It never
releases a number, and it never lets one administrator loosen privacy alone.

Who (``_base``): a ``tenant_admin`` administers its own tenant; a ``platform_admin`` any tenant
(it passes ``tenant=``). Every other role is refused.

Tenant privacy settings (``_settings``)
    What a tenant's settings are, which version is in force and how a version comes into force
    belong to the core (``privacy.core.SettingsBook``, the gate's ``tenant_settings``: the
    catalog's values overridden by the newest *active* stored version; the gate applies them to
    every release). This service decides who may change them and how:

    - ``k``: the tenant's minimum group size, a whole number >= 2 (a product that declares a k
      above the policy's keeps it as a floor: ``product_k``).
    - ``budgets``: ε per refresh window for each role that has a query budget in roles.toml.
      A role without one (donor, case worker, administrators) cannot be given one here: that
      would change what the role is, not how private it is.
    - ``levels``: ε of each noisy privacy level (finite, > 0), kept in the catalog's order
      (dp_high <= dp_medium <= dp_low); ``disabled_levels`` switches levels off for the
      tenant (its releases at that level are refused).

    A change that only tightens (higher k, lower budget, lower level ε, a level switched off)
    applies at once. A change that weakens anything — even alongside tightenings — is stored as
    *proposed* and has no effect until a second administrator approves it: a tenant_admin of
    the same tenant or a platform_admin, never its proposer (the proposer may withdraw it,
    which is recorded as a rejection). When a version becomes active, the version before it
    and every proposal still pending for the tenant are *superseded*: a proposal was judged
    against the settings it would replace, so after any other change it must be proposed
    again. Versions are numbered 1, 2, … per tenant (proposed and rejected ones included);
    proposals, applications, approvals, rejections and supersessions are audited with the
    settings before and after.

Role mappings (``_mappings``)
    An administrator lists its tenant's mappings — from ``config/role_mappings.toml``
    (``file``), from ``veil init`` in demo mode (``demo``) and from this page (``admin``) —
    and adds or removes page-made mappings for organisation (OIDC) identities; the file's and
    the demo's rows are read-only here (change the file and run ``veil init``). Rules:

    - the same checks as the file (claim email | sub | group, a role a person signs in as, a
      known tenant); an identity already mapped anywhere is refused, never re-mapped;
    - nobody grants ``platform_admin`` here (the file only); ``tenant_admin`` mappings are
      added and removed by a platform_admin only — otherwise a tenant admin could map a second
      identity of its own and approve its own loosening;
    - a tenant_admin maps into its own tenant only;
    - page-made rows (``created_by`` = ``admin page: <admin>``) apply to organisation sign-ins
      only, like the file's. ``veil init`` never overwrites them (a file entry for the same
      identity stops it, naming the admin), and the start-up check compares the file's rows
      only, so they never stop the dashboard;
    - every change appends a ``role_mapping_changes`` row numbered per tenant (the tenant's
      mapping version) and an audit entry, in one transaction.

Changes to one tenant's settings or mappings are serialised by locking its ``tenants`` row
(SQLite serialises every writer anyway), so version numbers never collide. Umbrella export
approvals, shown in the same queue on the page, belong to ``privacy.exports``.
"""

from __future__ import annotations

from data.role_mappings import CLAIMS

from privacy.admin._mappings import MappingHistoryEntry, RoleMappingView, _Mappings
from privacy.admin._settings import _SettingsAdmin

__all__ = ["Admin", "MappingHistoryEntry", "RoleMappingView"]


class Admin(_SettingsAdmin, _Mappings):
    """Tenant privacy settings, role mappings and their approvals (see the package docstring):
    ``Admin(book, store, catalog, clock=…)``, where ``book`` is the core gate's
    ``tenant_settings``."""

    #: claims a mapping may use, in the order the gate matches them
    claims = CLAIMS
