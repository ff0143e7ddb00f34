"""Settings from the environment: where the store is, where the catalog is.

Owns the mapping from environment variables to typed settings. It never opens a connection
and never falls back silently: a setting that is present but malformed raises ConfigError
naming the variable, and so does a file or folder that start-up cannot use
(``start_up_error``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from data.errors import ConfigError

__all__ = ["PROJECT_ROOT", "Settings", "load_settings", "start_up_error"]

PROJECT_ROOT = Path(__file__).resolve().parents[1]

#: The deployment secret that keys subject pseudonyms and signed links. The demo value is
#: public on purpose: demo mode must never hold real data.
DEMO_SECRET = "veil-demo-secret-not-for-production"


@dataclass(frozen=True)
class Settings:
    database_url: str
    catalog_dir: Path
    var_dir: Path
    secret: str
    demo_mode: bool
    #: How long a sign-in lasts, in hours, whatever the identity provider's cookie says.
    session_hours: float = 8.0
    #: Demo accounts: None = on in demo mode unless OIDC is configured; True/False = explicit.
    demo_accounts: bool | None = None
    #: Versioned role mappings for organisation (OIDC) identities.
    role_mappings_file: Path = PROJECT_ROOT / "config" / "role_mappings.toml"
    #: Run the export worker inside the dashboard process (one thread per server process).
    export_worker: bool = True
    snapshot_scheduler: bool = True
    #: Collector API (`veil serve-api`) limits against slow and flooding clients; see
    #: COLLECTOR_LIMITS for their variables, defaults and bounds.
    api_body_seconds: float = 30.0
    api_header_seconds: float = 10.0
    api_max_per_token: int = 8
    api_max_requests: int = 64
    api_max_connections: int = 512
    #: Where `veil alerts --send` posts new alerts as JSON (VEIL_ALERT_WEBHOOK_URL): an https
    #: URL, or http on the loopback interface; None: alerts are shown on the compliance page only.
    alert_webhook_url: str | None = None

    @property
    def is_embedded(self) -> bool:
        return self.database_url.startswith("sqlite")


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Read VEIL_* environment variables; unset means the embedded demo default."""
    env = dict(os.environ if env is None else env)
    var_dir = Path(env.get("VEIL_VAR_DIR") or PROJECT_ROOT / "var")
    catalog_dir = Path(env.get("VEIL_CATALOG_DIR") or PROJECT_ROOT / "catalog")
    url = env.get("VEIL_DATABASE_URL", "").strip()
    if not url:
        url = f"sqlite:///{var_dir / 'veil.db'}"
    demo_raw = env.get("VEIL_DEMO_MODE", "1" if "VEIL_DATABASE_URL" not in env else "0")
    if demo_raw not in {"0", "1"}:
        raise ConfigError(f"VEIL_DEMO_MODE must be 0 or 1, got {demo_raw!r}")
    demo_mode = demo_raw == "1"
    secret = env.get("VEIL_SECRET", "")
    if not secret:
        if not demo_mode:
            raise ConfigError(
                "VEIL_SECRET is not set. Outside demo mode Veil needs a deployment secret to key "
                "subject pseudonyms and sign links; set VEIL_SECRET (32+ random characters) or "
                "VEIL_DEMO_MODE=1 for a demo store."
            )
        secret = DEMO_SECRET
    elif len(secret) < 16:
        raise ConfigError(f"VEIL_SECRET must be at least 16 characters, got {len(secret)}")
    return Settings(
        database_url=url, catalog_dir=catalog_dir, var_dir=var_dir, secret=secret,
        demo_mode=demo_mode, session_hours=_session_hours(env),
        demo_accounts=_demo_accounts(env, demo_mode=demo_mode),
        role_mappings_file=Path(env.get("VEIL_ROLE_MAPPINGS")
                                or PROJECT_ROOT / "config" / "role_mappings.toml"),
        export_worker=_export_worker(env),
        snapshot_scheduler=_switch(env, "VEIL_SNAPSHOT_SCHEDULER",
                                   "run `veil snapshots --worker` or `veil snapshots` from cron "
                                   "instead"),
        alert_webhook_url=_alert_webhook_url(env),
        **_collector_limits(env),
    )


#: Collector API limits: Settings field -> (variable, default, lowest, highest). The bounds match
#: data.ingest.api.ApiLimits, which cannot be imported here (it pulls in the web stack).
COLLECTOR_LIMITS: dict[str, tuple[str, float, float, float]] = {
    "api_body_seconds": ("VEIL_API_BODY_SECONDS", 30.0, 0.1, 600.0),
    "api_header_seconds": ("VEIL_API_HEADER_SECONDS", 10.0, 0.1, 300.0),
    "api_max_per_token": ("VEIL_API_MAX_PER_TOKEN", 8, 1, 1_000),
    "api_max_requests": ("VEIL_API_MAX_REQUESTS", 64, 1, 10_000),
    "api_max_connections": ("VEIL_API_MAX_CONNECTIONS", 512, 1, 100_000),
}


def _collector_limits(env: dict[str, str]) -> dict[str, float | int]:
    limits: dict[str, float | int] = {}
    for field, (name, default, low, high) in COLLECTOR_LIMITS.items():
        raw = env.get(name, "").strip()
        whole = isinstance(default, int)
        try:
            value = default if not raw else int(raw) if whole else float(raw)
        except ValueError:
            value = float("nan")
        if not low <= value <= high:  # also refuses nan and inf
            kind = "a whole number" if whole else "a number of seconds"
            raise ConfigError(f"{name} must be {kind} from {low:g} to {high:g}, got {raw!r}")
        limits[field] = value
    return limits


def start_up_error(settings: Settings, exc: OSError) -> ConfigError:
    """An OSError met while starting (a folder that cannot be made, a file that cannot be
    read) as a ConfigError naming the variable whose path it is, so no traceback and no
    unnamed error reaches an operator."""
    failed = Path(exc.filename) if exc.filename else None
    store = settings.database_url.removeprefix("sqlite:///") if settings.is_embedded else None
    # The most specific setting first: the store URL lies under VEIL_VAR_DIR by default.
    named = [("VEIL_ROLE_MAPPINGS", settings.role_mappings_file),
             ("VEIL_CATALOG_DIR", settings.catalog_dir)]
    if store and store != ":memory:":
        default = Path(store) == settings.var_dir / "veil.db"
        named.append(("VEIL_VAR_DIR" if default else "VEIL_DATABASE_URL", Path(store)))
    named.append(("VEIL_VAR_DIR", settings.var_dir))
    variable, value = "VEIL_VAR_DIR", settings.var_dir
    for name, path in named:
        if failed is not None and (failed.is_relative_to(path) or path.is_relative_to(failed)):
            variable, value = name, (settings.var_dir if name == "VEIL_VAR_DIR" else path)
            break
    shown = settings.database_url if variable == "VEIL_DATABASE_URL" else value
    return ConfigError(f"{variable}={shown}: cannot use {failed or value}: "
                       f"{exc.strerror or exc}. Point {variable} at a path Veil may use.")


def _switch(env: dict[str, str], variable: str, instead: str) -> bool:
    """A 0/1 switch that is on unless set to 0."""
    raw = env.get(variable, "").strip()
    if raw not in {"", "0", "1"}:
        raise ConfigError(f"{variable} must be 0 ({instead}) or 1, got {raw!r}")
    return raw != "0"


def _export_worker(env: dict[str, str]) -> bool:
    raw = env.get("VEIL_EXPORT_WORKER", "").strip()
    if raw not in {"", "0", "1"}:
        raise ConfigError(f"VEIL_EXPORT_WORKER must be 0 (run `veil export-worker` instead) or "
                          f"1, got {raw!r}")
    return raw != "0"


#: The identity cookie of Streamlit's st.login lives 30 days; a longer Veil session is moot.
MAX_SESSION_HOURS = 30 * 24


def _session_hours(env: dict[str, str]) -> float:
    raw = env.get("VEIL_SESSION_HOURS", "").strip()
    if not raw:
        return 8.0
    try:
        hours = float(raw)
    except ValueError:
        hours = float("nan")
    if not 0 < hours <= MAX_SESSION_HOURS:  # also refuses nan and inf
        raise ConfigError(f"VEIL_SESSION_HOURS must be a number of hours above 0 and at most "
                          f"{MAX_SESSION_HOURS}, got {raw!r}")
    return hours


def _demo_accounts(env: dict[str, str], *, demo_mode: bool) -> bool | None:
    raw = env.get("VEIL_DEMO_ACCOUNTS", "").strip()
    if raw in {"", "auto"}:
        return None
    if raw not in {"0", "1"}:
        raise ConfigError(f"VEIL_DEMO_ACCOUNTS must be 0, 1 or auto, got {raw!r}")
    if raw == "1" and not demo_mode:
        raise ConfigError("VEIL_DEMO_ACCOUNTS=1 needs VEIL_DEMO_MODE=1: demo accounts share a "
                          "public password and must never guard a store with real data")
    return raw == "1"


_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}


def _alert_webhook_url(env: dict[str, str]) -> str | None:
    """VEIL_ALERT_WEBHOOK_URL: https anywhere, plain http only to this machine's loopback.

    Alerts name tenants, products and principals: they must not cross a network in clear text.
    A value that is present but unusable stops start-up (fail closed), never silently drops
    alerts.
    """
    import ipaddress
    from urllib.parse import urlsplit

    raw = env.get("VEIL_ALERT_WEBHOOK_URL", "").strip()
    if not raw:
        return None
    name = "VEIL_ALERT_WEBHOOK_URL"
    try:
        parts = urlsplit(raw)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        raise ConfigError(f"{name} is not a URL ({exc}), got {raw!r}") from None
    if parts.scheme not in {"http", "https"} or not host:
        raise ConfigError(f"{name} must be an https:// URL (or http:// to 127.0.0.1, ::1 or "
                          f"localhost), got {raw!r}")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(f"{name} must not carry a user name or password (put a token in its "
                          f"path instead), got a URL with credentials for {host!r}")
    if any(c.isspace() or ord(c) < 32 for c in raw):
        raise ConfigError(f"{name} must not contain spaces or control characters")
    if parts.scheme == "http":
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host.lower() in _LOOPBACK_HOSTS
        if not loopback:
            raise ConfigError(f"{name} may use plain http only to the loopback interface "
                              f"(127.0.0.1, ::1, localhost); use https for {host!r}")
    return raw
