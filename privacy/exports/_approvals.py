"""Umbrella export approvals: an export of every tenant runs only after two distinct approvers
with the approver role — never its requester — said yes; one rejection (with a reason) ends
it. Decisions are serialised by a row lock, recorded in ``export_approvals`` (append-only) and
audited, refusals included.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from data.errors import AccessDenied, InvalidInput, QueryRefused, VeilBug, VeilError, brief
from data.models import Export, ExportApproval

from privacy.core import Principal, audit, audit_in
from privacy.exports._base import _ExportsBase
from privacy.exports._values import _MAX_JUSTIFICATION, PendingApproval

__all__ = ["_Approvals"]


class _Approvals(_ExportsBase):
    def pending_approvals(self, principal: Principal) -> list[PendingApproval]:
        """Umbrella exports this principal may approve now: empty unless it holds the approver
        role; never its own request or one it already decided."""
        if principal.role != self._policy.approver_role:
            return []
        with self._store.read() as session:
            rows = session.scalars(select(Export).where(Export.umbrella,
                                                        Export.status == "pending")
                                   .order_by(Export.created_at, Export.id)).all()
            decided = self._approvals(session, [r.id for r in rows], decision=None)
            approvals = self._approvals(session, [r.id for r in rows])
        out = []
        for row in rows:
            if row.requester == principal.subject or principal.subject in decided.get(row.id, ()):
                continue
            out.append(PendingApproval(
                id=row.id, requester=row.requester, tenant=row.tenant_id,
                product=row.product_id, query_summary=self._summary(row.kind, row.query),
                purpose=row.purpose, purpose_title=self._purpose_title(row.purpose),
                justification=row.justification or "", scope=tuple(row.scope),
                created_at=row.created_at, approvals=approvals.get(row.id, ()),
                needed=self._policy.approvals))
        return out

    def approve(self, principal: Principal, export_id: str) -> None:
        """Record this principal's approval; the export is queued once it has enough."""
        self._decide(principal, export_id, decision="approved", reason=None)

    def reject(self, principal: Principal, export_id: str, *, reason: str) -> None:
        """Reject an umbrella export; it will never run. ``reason`` is mandatory."""
        if not isinstance(reason, str) or not reason.strip():
            self._audit_decision(principal, export_id, "rejected", "refused",
                                 {"reason": "no reason given"})
            raise InvalidInput("Give a reason for rejecting the export; the requester sees it.")
        if len(reason) > _MAX_JUSTIFICATION:
            raise InvalidInput(f"the reason is limited to {_MAX_JUSTIFICATION} characters, "
                               f"got {len(reason)}")
        self._decide(principal, export_id, decision="rejected", reason=reason.strip())

    def _decide(self, principal: Principal, export_id: str, *, decision: str,
                reason: str | None) -> None:
        try:
            with self._store.write.begin() as session:
                # FOR UPDATE serialises concurrent approvals on PostgreSQL (SQLite's write
                # transaction already holds the lock), so two approvals always queue the job.
                row = session.get(Export, export_id, with_for_update=True)
                self._check_decision(principal, row, export_id)
                decided = session.execute(select(ExportApproval.approver,
                                                 ExportApproval.decision)
                                          .where(ExportApproval.export_id == row.id)).all()
                if principal.subject in {a for a, _ in decided}:
                    raise QueryRefused(f"you have already decided on export {row.id[:8]}; "
                                       f"it needs {self._policy.approvals} different approvers")
                now = self._now()
                session.add(ExportApproval(export_id=row.id, approver=principal.subject,
                                           role=principal.role, decision=decision,
                                           reason=reason, at=now))
                approvals = 1 + sum(1 for _, d in decided if d == "approved")
                detail = {"approvals": approvals if decision == "approved" else None,
                          "needed": self._policy.approvals, "requester": row.requester,
                          "tenant": row.tenant_id}
                if decision == "rejected":
                    detail["reason"] = reason
                    self._set_status(session, row.id, "pending", status="rejected",
                                     finished_at=now,
                                     error=f"rejected by {principal.subject}: {reason}")
                elif approvals >= self._policy.approvals:
                    self._set_status(session, row.id, "pending", status="queued")
                    detail["queued"] = True
                self._audit_decision(principal, row.id, decision, "allowed", detail,
                                     session=session)
        except IntegrityError:
            error = QueryRefused(f"you have already decided on export {export_id[:8]}")
            self._audit_decision(principal, export_id, decision, "refused",
                                 {"reason": str(error)})
            raise error from None
        except VeilError as exc:
            self._audit_decision(principal, export_id, decision, "refused",
                                 {"reason": str(exc)})
            raise

    def _check_decision(self, principal: Principal, row: Export | None, export_id: str) -> None:
        approver = self._catalog.roles[self._policy.approver_role].title
        if principal.role != self._policy.approver_role:
            raise AccessDenied(f"only a {approver} can approve or reject umbrella exports")
        if row is None or not row.umbrella:
            raise InvalidInput(f"there is no umbrella export {brief(export_id)}")
        if row.requester == principal.subject:
            raise AccessDenied("you requested this export, so you cannot approve or reject it; "
                               f"two other {approver}s must approve it")
        if row.status != "pending":
            raise QueryRefused(f"export {row.id[:8]} is {row.status}: only pending umbrella "
                               f"exports can be approved or rejected")

    def _audit_decision(self, principal: Principal, export_id: str, decision: str, outcome: str,
                        detail: dict, *, session=None) -> None:
        action = "export_approve" if decision == "approved" else "export_reject"
        entry = dict(principal=principal.subject, tenant=principal.tenant, role=principal.role,
                     action=action, target=export_id, outcome=outcome, detail=detail)
        if session is not None:
            audit_in(session, **entry)
        else:
            audit(self._store, **entry)

    def _set_status(self, session, export_id: str, expected: str, **values) -> None:
        changed = session.execute(
            update(Export).where(Export.id == export_id, Export.status == expected)
            .values(**values).execution_options(synchronize_session=False)).rowcount
        if changed != 1:
            raise VeilBug(f"export {export_id} left status {expected!r} under a row lock")
