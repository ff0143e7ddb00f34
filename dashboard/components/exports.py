"""Export listings and the download panel: what an export is doing, and its signed link.

Draws values the gate returned; it never calls the gate itself. The download button's data is
a callable the page passes in, so the file is read (and the download audited) only when the
button is clicked.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

import streamlit as st

from privacy import DownloadLink, ExportStatus

__all__ = ["download_panel", "export_list", "link_url"]

_STATUS = {
    "pending": (":material/hourglass_top:", "awaiting approval"),
    "queued": (":material/schedule:", "queued"),
    "running": (":material/sync:", "running"),
    "done": (":material/check_circle:", "ready"),
    "failed": (":material/error:", "failed"),
    "rejected": (":material/block:", "rejected"),
}


def link_url(link: DownloadLink) -> str:
    """The link as an absolute URL of this app (falls back to the app-relative path)."""
    url = st.context.url
    if not url:
        return "/" + link.path
    parts = urlsplit(url)
    base = "/".join(p for p in (st.get_option("server.baseUrlPath") or "").split("/") if p)
    return f"{parts.scheme}://{parts.netloc}/{base + '/' if base else ''}{link.path}"


def export_list(statuses: list[ExportStatus], *, titles: dict[str, str]) -> str | None:
    """One card per export; return the id whose "Get download link" was clicked, if any."""
    clicked = None
    for status in statuses:
        icon, label = _STATUS.get(status.status, (":material/help:", status.status))
        with st.container(border=True):
            st.markdown(f"{icon} **{titles.get(status.product, status.product)}** — "
                        f"{status.summary}  \n"
                        f"{label} · {status.format.upper()} · purpose: {status.purpose_title}"
                        + (" · all tenants (umbrella)" if status.umbrella else "")
                        + f" · requested {status.created_at:%d %b %Y %H:%M} UTC · "
                        f"`{status.id[:8]}`")
            if status.status in {"queued", "running"}:
                st.progress(status.progress, text=f"{label}: {status.progress:.0%}"
                            + (f" (attempt {status.attempts})" if status.attempts > 1 else ""))
            elif status.status == "pending":
                st.progress(len(status.approvals) / max(status.approvals_needed, 1),
                            text=f"approvals: {len(status.approvals)} of "
                                 f"{status.approvals_needed} (platform administrators)")
            elif status.status == "done":
                st.caption(_delivered(status))
                if status.purged:
                    st.caption("The download link has expired and the file was deleted; the "
                               "export record stays.")
                elif st.button("Get download link", key=f"export-link-{status.id}",
                               icon=":material/link:"):
                    clicked = status.id
            else:
                st.error(status.error or label, icon=icon)
    return clicked


def download_panel(status: ExportStatus, *, url: str, data: Callable[[], bytes]) -> bool:
    """The verified link's file, offered once; return True when "Close" was clicked."""
    with st.container(border=True):
        st.success(f"Export `{status.id[:8]}` is ready: {_delivered(status)}",
                   icon=":material/verified:")
        st.download_button(f"Download {status.file_name}", data=data,
                           file_name=status.file_name, mime=status.mime, type="primary",
                           on_click="ignore", icon=":material/download:",
                           key="export-download")
        st.caption(f"This link works until {status.link_expires_at:%d %b %Y %H:%M} UTC, only "
                   f"for you, signed in to this tenant. Every download is recorded.")
        st.code(url, language=None)
        return st.button("Close", key="export-download-close")


def _delivered(status: ExportStatus) -> str:
    cost = (f"ε {status.epsilon.value:g} charged" if status.kind == "aggregate"
            else "fields treated for your role: " + ", ".join(
                f"{field} {treatment}" for field, treatment in status.masking.items()
                if treatment != "show"))
    return (f"{status.row_count:,} rows · {cost} · SHA-256 {status.digest[:16]}… · "
            f"policy {status.policy_version[:12]}")
