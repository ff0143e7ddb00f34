"""Sign-in: the one place that reads ``st.user`` and turns an identity into a Principal.

Two identity sources resolve through the same role-mapping table (in the gate):

- **OIDC** via ``st.login`` when ``[auth]`` is configured in secrets.toml. Streamlit builds
  ``st.user`` from the ID token's claims and keeps them in a cookie for 30 days without
  checking expiry, so Veil bounds the session itself: VEIL_SESSION_HOURS from the token's
  ``iat`` (a browser refresh starts a new Streamlit session but keeps the cookie, so the bound
  must come from the token, not from this session).
- **Demo accounts** (local, argon2-hashed, clearly labelled) in demo mode, switched off when
  OIDC is configured unless VEIL_DEMO_ACCOUNTS=1; the session runs from the demo sign-in. The
  gate keeps the sign-in on record (like an OIDC one) under the hash of a random token; the
  browser keeps the token in a cookie (``veil_demo``, SameSite=Strict, expiring with the
  session), so a refresh resumes the sign-in the record says is still open, and a token that
  was signed out or has expired is refused (audited) and gets the sign-in page.

With neither, nobody gets in and the page names the missing setting; a secrets file that does
not parse lets nobody in either (never "as if absent", which would switch the demo accounts
back on), naming the file and line. An identity without a role mapping gets a "no access" page
(the gate audits it); never a default role. Everything outside this module receives a
Principal, never ``st.user``.

Every run of an OIDC or demo sign-in is checked against the gate's record of it (a copied
cookie of a sign-in that was signed out or has expired gets the sign-in page, and the gate
audits the refusal); ``st.session_state`` holds only who this browser tab shows as signed in.
"""

from __future__ import annotations

import html
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

import streamlit as st
from streamlit.errors import StreamlitSecretNotFoundError

from dashboard.components.errors import show_error
from dashboard.context import (
    end_session,
    now,
    session_ends_at,
    session_expired,
    signed_in,
    signed_in_at,
    start_session,
)
from dashboard.navigation import requested_page
from privacy import Gate, Principal, Settings, VeilError

__all__ = ["AUTH_KEYS", "AuthConfig", "account_sidebar", "auth_config", "auth_config_of_files",
           "demo_accounts_enabled", "require_principal", "sign_out", "who_can_sign_in"]

SECRETS_FILE = ".streamlit/secrets.toml"
#: Keys Veil needs under [auth]: the default provider of st.login(), configured inline.
AUTH_KEYS = ("redirect_uri", "cookie_secret", "client_id", "client_secret",
             "server_metadata_url")
_EXPIRED_KEY = "veil_session_expired"
#: The claim that asks the gate to check this browser sign-in against its record (and bound
#: it to this many hours): privacy._access.SESSION_HOURS_CLAIM.
_SESSION_HOURS_CLAIM = "veil_session_hours"
#: The claim that carries a demo sign-in's token to the gate: privacy._access.DEMO_TOKEN_CLAIM.
_DEMO_TOKEN_CLAIM = "veil_demo_token"
#: The browser cookie that carries ``<signed-in unix time>.<token>`` across a refresh.
DEMO_COOKIE = "veil_demo"
#: This tab's demo sign-in token (the cookie is written by the browser, read on refresh only).
_DEMO_TOKEN_KEY = "veil_demo_token"
#: A cookie value this tab has already ended: the browser may still send it until it has run
#: the script that drops it, and it must not be resumed (nor refused again) meanwhile.
_DEMO_DROPPED_KEY = "veil_demo_dropped"
_COOKIE_VALUE = re.compile(r"(\d{1,12})\.([A-Za-z0-9_-]{32,128})")


@dataclass(frozen=True)
class AuthConfig:
    """What secrets.toml says about OIDC: is there an [auth] section, and what is wrong."""

    present: bool
    problem: str | None = None
    #: the secrets could not be read at all: nobody signs in, by any source, until fixed
    unreadable: bool = False

    @property
    def usable(self) -> bool:
        return self.present and self.problem is None


def auth_config() -> AuthConfig:
    """What the secrets Streamlit reads say about OIDC (``--secrets.files``, by default
    ``~/.streamlit/secrets.toml`` and ``./.streamlit/secrets.toml``)."""
    try:
        section = st.secrets.get("auth")
    except StreamlitSecretNotFoundError as exc:
        if exc.error_id == "no-secrets-found":  # no secrets file at all
            return AuthConfig(present=False)
        # Streamlit wraps a TOML error as "not found"; the file is there, only unreadable.
        path = exc.exec_kwargs.get("path") or exc.exec_kwargs.get("sub_folder_path")
        return _unreadable(path, exc.exec_kwargs.get("error") or str(exc))
    except (OSError, UnicodeDecodeError) as exc:  # Streamlit lets these through unwrapped
        return _unreadable(getattr(exc, "filename", None), str(exc))
    return _auth_section(section)


def auth_config_of_files(paths: Sequence[Path]) -> AuthConfig:
    """The same answer for secrets files read without Streamlit (``veil check``): later files
    override earlier ones, a missing file is skipped, as Streamlit does."""
    secrets: dict = {}
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            continue
        except (OSError, UnicodeDecodeError) as exc:
            return _unreadable(str(path), str(exc))
        try:
            secrets.update(tomllib.loads(text))
        except tomllib.TOMLDecodeError as exc:
            return _unreadable(str(path), str(exc))
    return _auth_section(secrets.get("auth"))


def _unreadable(path: str | None, error: str) -> AuthConfig:
    # tomllib's message names the line and column: "Expected ']' ... (at line 2, column 6)".
    where = path or "the secrets file (--secrets.files)"
    return AuthConfig(present=True, unreadable=True, problem=(
        f"{where}: cannot be read as TOML: {error}. Nobody can sign in until it is fixed "
        f"(see .streamlit/secrets.toml.example)."))


def _auth_section(section: object) -> AuthConfig:
    if section is None:
        return AuthConfig(present=False)
    if not isinstance(section, Mapping):
        return AuthConfig(present=True, problem=f"{SECRETS_FILE}: key 'auth' must be a table "
                                                f"([auth]), got {type(section).__name__}")
    missing = [key for key in AUTH_KEYS if not section.get(key)]
    if missing:
        return AuthConfig(present=True, problem=(
            f"{SECRETS_FILE}: the [auth] section is missing "
            f"{', '.join(f'auth.{key}' for key in missing)}, so sign-in with your organisation "
            f"is switched off. See .streamlit/secrets.toml.example."))
    if not str(section["redirect_uri"]).endswith("/oauth2callback"):
        return AuthConfig(present=True, problem=(
            f"{SECRETS_FILE}: key 'auth.redirect_uri' must end with /oauth2callback, got "
            f"{section['redirect_uri']!r}"))
    return AuthConfig(present=True)


def demo_accounts_enabled(gate: Gate, settings: Settings, auth: AuthConfig) -> bool:
    """Demo accounts need demo mode; then VEIL_DEMO_ACCOUNTS decides, or else "no OIDC".

    Secrets that do not parse switch them off too: the file might well hold an [auth] section,
    and reading it as absent would put the public demo password in front of the store.
    """
    if not gate.demo_accounts or auth.unreadable:
        return False
    if settings.demo_accounts is not None:
        return settings.demo_accounts
    return not auth.present


def who_can_sign_in(gate: Gate, settings: Settings, auth: AuthConfig) -> list[str]:
    """The identity sources that let someone in (empty: nobody can sign in)."""
    sources = []
    if auth.usable:
        sources.append("organisation accounts (OIDC, [auth] in the secrets file)")
    if demo_accounts_enabled(gate, settings, auth):
        sources.append("demo accounts (public password; demo mode only)")
    return sources


# --- the sign-in flow ----------------------------------------------------------------------------


def require_principal(gate: Gate, settings: Settings) -> Principal:
    """Return the signed-in principal, or render the sign-in page and stop the script."""
    auth = auth_config()
    at = now()
    principal, started = signed_in(), signed_in_at()
    if principal is not None:
        if started is None:
            end_session()  # a principal without a sign-in time is not a sign-in
        elif session_expired(started, hours=settings.session_hours, at=at):
            end_session()
            _forget_demo_token()
            gate.record_session_end(principal, reason="expired")
            st.session_state[_EXPIRED_KEY] = True
        elif principal.source == "demo" and demo_accounts_enabled(gate, settings, auth):
            token = st.session_state.get(_DEMO_TOKEN_KEY)
            if token is None:  # UI state set without a sign-in token (tests): nothing to check
                return principal
            # Like OIDC: checked against the gate's record on every run, so a sign-out in
            # another tab or browser ends this one at its next click.
            principal = _resume_demo(gate, settings, auth, token)
            _keep_demo_cookie(token, started=started, hours=settings.session_hours)
            return principal
        else:
            # OIDC: the cookie is checked against the gate's record of the sign-in on every
            # run (below), so a sign-in ended elsewhere ends here at the next click too.
            end_session()
            _forget_demo_token()
    if demo_accounts_enabled(gate, settings, auth):
        resumed = _demo_cookie()
        if resumed is not None:  # a refresh (or a new tab) of a demo sign-in
            started, token = resumed
            principal = _resume_demo(gate, settings, auth, token)
            start_session(principal, signed_in_at=started)
            st.session_state[_DEMO_TOKEN_KEY] = token
            _keep_demo_cookie(token, started=started, hours=settings.session_hours)
            return principal
    if auth.usable and st.user.get("is_logged_in", False):
        return _oidc_principal(gate, settings, auth, at)
    _sign_in_page(gate, settings, auth)
    _stop_outside_the_app()


# --- demo sign-ins across a refresh ------------------------------------------------------------


def _browser_cookies() -> Mapping[str, str]:
    """The cookies the browser sent when this tab connected (a refresh reconnects); none
    outside a browser (AppTest has no client to send any)."""
    cookies = st.context.cookies
    if not isinstance(cookies, Mapping):
        return {}
    return {name: value for name, value in cookies.items() if isinstance(value, str)}


def _demo_cookie() -> tuple[datetime, str] | None:
    """(signed-in time, token) from the browser's demo cookie, unless absent, malformed or
    already ended in this tab. The time is only shown ("Session ends …"): the gate's record
    decides when the sign-in ends."""
    value = _browser_cookies().get(DEMO_COOKIE)
    if not value or value == st.session_state.get(_DEMO_DROPPED_KEY):
        return None
    match = _COOKIE_VALUE.fullmatch(value)
    if match is None:
        st.session_state[_DEMO_DROPPED_KEY] = value
        return None
    try:
        started = datetime.fromtimestamp(int(match[1]), UTC)
    except (OverflowError, OSError, ValueError):
        st.session_state[_DEMO_DROPPED_KEY] = value
        return None
    return started, match[2]


def _resume_demo(gate: Gate, settings: Settings, auth: AuthConfig, token: str) -> Principal:
    """The principal of the demo sign-in on record under ``token``; the sign-in page (with the
    reason) if the gate refuses it: signed out, expired, unknown, or no longer mapped."""
    try:
        return gate.resolve({_DEMO_TOKEN_CLAIM: token,
                             _SESSION_HOURS_CLAIM: settings.session_hours}, source="demo")
    except VeilError as exc:
        end_session()
        _forget_demo_token()
        if getattr(exc, "sign_in_ended", None) == "expired":
            st.session_state[_EXPIRED_KEY] = True
            notice = None
        else:
            notice = str(exc)
        _sign_in_page(gate, settings, auth, notice=notice)
        _stop_outside_the_app()


def _forget_demo_token() -> None:
    """Forget this tab's demo token and never resume its cookie in this tab again."""
    token = st.session_state.pop(_DEMO_TOKEN_KEY, None)
    cookie = _browser_cookies().get(DEMO_COOKIE)
    if cookie:
        st.session_state[_DEMO_DROPPED_KEY] = cookie
    elif token is not None:
        st.session_state[_DEMO_DROPPED_KEY] = token


def _cookie_script(value: str, *, seconds: int) -> str:
    """A script that sets (or, with 0 seconds, drops) the demo cookie in this browser."""
    text = html.escape(f"{DEMO_COOKIE}={value}; Max-Age={max(seconds, 0)}; Path=/; "
                       f"SameSite=Strict", quote=False)
    return (f'<script>document.cookie = "{text}" + (location.protocol === "https:" ? '
            f'"; Secure" : "");</script>')


def _keep_demo_cookie(token: str, *, started: datetime, hours: float) -> None:
    """Keep the browser's demo cookie for the rest of the session (a refresh resumes it)."""
    seconds = int((session_ends_at(started, hours=hours) - now()).total_seconds())
    st.sidebar.html(_cookie_script(f"{int(started.timestamp())}.{token}", seconds=seconds),
                    unsafe_allow_javascript=True)


def _drop_demo_cookie() -> None:
    st.html(_cookie_script("", seconds=0), unsafe_allow_javascript=True)


def _issued_at(claims: Mapping) -> datetime | None:
    """When the provider issued the ID token behind this sign-in (its ``iat`` claim)."""
    value = claims.get("iat")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _oidc_principal(gate: Gate, settings: Settings, auth: AuthConfig,
                    at: datetime) -> Principal:
    claims = st.user.to_dict()
    claims.pop("tokens", None)
    issued = _issued_at(claims)
    if issued is None:
        _refusal_page("Sign-in refused",
                      "Your identity provider's ID token has no issue time (iat claim), so Veil "
                      "cannot bound the session. Ask your administrator to check the provider.")
    try:
        principal = gate.resolve({**claims, _SESSION_HOURS_CLAIM: settings.session_hours},
                                 source="oidc")
    except VeilError as exc:
        ended = getattr(exc, "sign_in_ended", None)
        if ended == "expired":
            _session_ended_page(settings)
        if ended is not None:  # signed out: a copied cookie gets the sign-in page, no more
            _sign_in_page(gate, settings, auth, notice=str(exc))
            _stop_outside_the_app()
        _refusal_page("No access", str(exc))
    start_session(principal, signed_in_at=min(issued, at))
    return principal


def _session_ended_page(settings: Settings) -> NoReturn:
    st.title("Session ended")
    st.warning(f"Your session ended {_hours(settings.session_hours)} after you signed in. "
               f"Please sign in again.", icon=":material/timer_off:")
    st.button("Sign in again", type="primary", on_click=st.login)
    st.button("Sign out", on_click=st.logout)
    _stop_outside_the_app()


def _refusal_page(title: str, message: str) -> NoReturn:
    st.title(title)
    st.error(message, icon=":material/block:")
    st.button("Sign out", on_click=st.logout)
    _stop_outside_the_app()


def _stop_outside_the_app() -> NoReturn:
    """Stop on a page outside the app (sign-in, no access, session ended) with no menu.

    The browser keeps the last navigation it was sent, so without this a signed-out browser
    would still show the signed-in role's menu. The page answers whatever page URL was asked
    for, so Streamlit shows no "page not found" either.
    """
    pages = [st.Page(_outside, title="Veil", url_path="veil", default=True)]
    requested = requested_page()
    if requested and requested != "veil" and re.fullmatch(r"[A-Za-z0-9_-]{1,64}", requested):
        pages.append(st.Page(_outside, title="Veil", url_path=requested, visibility="hidden"))
    st.navigation(pages, position="hidden")
    st.stop()


def _outside() -> None:
    """The (empty) page behind the sign-in, no-access and session-ended screens."""


def sign_out(gate: Gate) -> None:
    """End this session: audit it, drop the principal, and sign out of the provider too."""
    principal = end_session()
    _forget_demo_token()
    if principal is not None:
        gate.record_session_end(principal, reason="signed out")
    if st.user.get("is_logged_in", False):
        st.logout()
        # Not st.rerun(): a rerun clears the outgoing message queue, and the logout redirect
        # is not among the messages Streamlit keeps, so the browser would stay on this page.
        st.stop()
    st.rerun()


def _hours(hours: float) -> str:
    return f"{hours:g} hour{'s' if hours != 1 else ''}"


# --- pages -------------------------------------------------------------------------------------


def account_sidebar(gate: Gate, principal: Principal, settings: Settings) -> None:
    """Who is signed in, as what, until when; and the sign-out button."""
    with st.sidebar:
        tenant = gate.catalog.tenant(principal.tenant)
        st.markdown(f"**{principal.subject}**  \n{gate.catalog.roles[principal.role].title} · "
                    f"{tenant.name}")
        if principal.source == "demo":
            st.caption("Demo identity")
        started = signed_in_at()
        if started is not None:
            ends = session_ends_at(started, hours=settings.session_hours)
            st.caption(f"Session ends {ends:%d %b %H:%M} UTC")
        if st.button("Sign out", icon=":material/logout:"):
            sign_out(gate)


def _sign_in_page(gate: Gate, settings: Settings, auth: AuthConfig, *,
                  notice: str | None = None) -> None:
    st.title("Veil")
    st.caption("Privacy-first analytics for public programmes")
    if _browser_cookies().get(DEMO_COOKIE) or st.session_state.get(_DEMO_DROPPED_KEY):
        _drop_demo_cookie()  # signed out, expired or refused: the browser forgets it too
    if notice:
        st.warning(notice, icon=":material/logout:")
    if st.session_state.pop(_EXPIRED_KEY, False):
        st.warning(f"Your session ended {_hours(settings.session_hours)} after you signed in. "
                   f"Please sign in again.", icon=":material/timer_off:")
    if auth.problem:
        st.error(auth.problem)
    if auth.unreadable:
        return  # the problem above says why nobody can sign in
    demo = demo_accounts_enabled(gate, settings, auth)
    if not auth.usable and not demo:
        st.error(_no_identity_source(gate, settings, auth))
        return
    if auth.usable:
        st.button("Sign in with your organisation", type="primary", on_click=st.login)
    if demo:
        _demo_form(gate, settings)


def _no_identity_source(gate: Gate, settings: Settings, auth: AuthConfig) -> str:
    reasons = []
    if not auth.present:
        reasons.append(f"there is no [auth] section in {SECRETS_FILE} (see "
                       f".streamlit/secrets.toml.example)")
    else:
        reasons.append(f"the [auth] section of {SECRETS_FILE} is incomplete")
    if not gate.demo_accounts:
        reasons.append("demo accounts exist only with VEIL_DEMO_MODE=1 on a demo store")
    elif settings.demo_accounts is False:
        reasons.append("demo accounts are switched off by VEIL_DEMO_ACCOUNTS=0")
    else:
        reasons.append("demo accounts are switched off because [auth] is present; "
                       "VEIL_DEMO_ACCOUNTS=1 switches them on")
    return f"Nobody can sign in: {'; '.join(reasons)}."


def _demo_form(gate: Gate, settings: Settings) -> None:
    st.subheader("Demo accounts")
    st.info(
        "**Demo identity source.** These local accounts exist only in demo mode and hold no "
        "real data. Every demo account's password is `veil-demo`. Usernames look like "
        "`policy.maker@kigali-east.demo` — role (`policy.maker`, `researcher`, `case.worker`, "
        "`donor`, `compliance.officer`, `tenant.admin`) at tenant (`kigali-east`, `north-west`, "
        "`south`).", icon=":material/science:")
    with st.form("demo-login"):
        username = st.text_input("Username", key="demo_username")
        password = st.text_input("Password", type="password", key="demo_password")
        submitted = st.form_submit_button("Sign in", type="primary")
    if submitted:
        try:
            claims = gate.authenticate_demo(username=username, password=password)
            # On record in the gate, like an OIDC sign-in: a refresh resumes it by its token.
            principal = gate.resolve({**claims, _SESSION_HOURS_CLAIM: settings.session_hours},
                                     source="demo")
        except VeilError as exc:
            show_error(exc)
            return
        start_session(principal, signed_in_at=now())
        st.session_state[_DEMO_TOKEN_KEY] = claims[_DEMO_TOKEN_CLAIM]
        st.rerun()
