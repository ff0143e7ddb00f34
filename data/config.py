"""Settings from the environment: where the store is, where the catalog is.

Owns the mapping from environment variables to typed settings. It never opens a connection
and never falls back silently: a setting that is present but malformed raises ConfigError
naming the variable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from data.errors import ConfigError

__all__ = ["PROJECT_ROOT", "Settings", "load_settings"]

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
    )


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
