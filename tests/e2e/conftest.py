"""Browser end-to-end harness: a real OIDC provider, the real app, Debian's Chromium.

One session starts, all on 127.0.0.1 and free ports:

- the npm ``oidc-provider`` (tests/e2e/oidc/provider.mjs) with the test users below;
- a demo store (small demo data) in a temporary VEIL_VAR_DIR, with the users' role mappings
  applied from a temporary role mappings file;
- ``streamlit run dashboard/app.py`` with a temporary secrets.toml given by
  ``--secrets.files`` (nothing is written into the checkout's .streamlit/);
- Playwright driving /usr/bin/chromium (never a downloaded browser). Every request to a host
  other than 127.0.0.1 is aborted.

Without node, the provider's node_modules (``bash scripts/install.sh``) or chromium the tests
skip, unless VEIL_REQUIRE_E2E=1 (set by .ci/run), which makes them fail. Screenshots of every
step go to test-artifacts/e2e/<test>/ (git-ignored), with the servers' logs.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from data.bootstrap import init_store
from data.catalog import load_catalog
from data.config import PROJECT_ROOT, load_settings
from data.demo import generate
from data.engine import open_store
from data.materialize import materialize
from data.role_mappings import load_role_mappings
from dashboard.cli import publish_defaults
from privacy import open_gate
from tests.pinned import DEMO_AS_OF

OIDC_DIR = PROJECT_ROOT / "tests" / "e2e" / "oidc"
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = PROJECT_ROOT / "test-artifacts" / "e2e"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]
CLIENT_ID, CLIENT_SECRET = "veil-e2e", "veil-e2e-client-secret"
PASSWORD = "e2e-Passw0rd!"


@dataclass(frozen=True)
class User:
    """A provider account; ``role``/``tenant`` are what Veil should resolve (None: no access)."""

    login: str
    email: str
    name: str
    role: str | None
    tenant: str | None
    claim: str = "email"  # which claim the role mapping uses
    groups: tuple[str, ...] = ()


USERS = {
    user.login: user for user in (
        User("ana", "ana.policy@programmes.example", "Ana Policy", "policy_maker", "kigali-east"),
        User("dana", "dana@donor.example", "Dana Donor", "donor", "south"),
        User("cyril", "cyril.case@programmes.example", "Cyril Case", "case_worker", "south"),
        # a case worker of the compliance officer's tenant (tests/e2e/test_exports.py)
        User("carla", "carla.case@programmes.example", "Carla Case", "case_worker",
             "kigali-east"),
        User("colin", "colin@audit.example", "Colin Compliance", "compliance_officer",
             "kigali-east", claim="group", groups=("staff", "veil-compliance-kigali-east")),
        User("sam", "sam.stranger@elsewhere.example", "Sam Stranger", None, None),
    )
}


def _require(condition: bool, what: str) -> None:
    if condition:
        return
    if os.environ.get("VEIL_REQUIRE_E2E") == "1":
        pytest.fail(f"VEIL_REQUIRE_E2E=1 but {what}")
    pytest.skip(f"browser tests need {what}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(predicate, *, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}\n{tail}")


class _Process:
    """A child process whose output goes to a log file; stopped on exit, by its own pid."""

    def __init__(self, args: list[str], *, log: Path, cwd: Path, env: dict[str, str]):
        self.log = log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=self._out,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._out.close()


@pytest.fixture(scope="session")
def e2e_tools() -> None:
    """Node with the provider's packages, Debian's Chromium and Playwright — or skip/fail."""
    _require(shutil.which("node") is not None, "node (Debian package nodejs)")
    _require((OIDC_DIR / "node_modules" / "oidc-provider").is_dir(),
             "the OIDC provider's packages (bash scripts/install.sh runs npm ci)")
    _require(CHROMIUM.is_file(), f"{CHROMIUM} (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _require(False, "the playwright Python package")


@pytest.fixture(scope="session")
def artifacts() -> Path:
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def e2e_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="session")
def e2e_mappings(e2e_dir) -> Path:
    """The test users' role mappings, as the versioned file format Veil reads."""
    lines = ["version = 1"]
    for user in USERS.values():
        if user.role is None:
            continue
        value = user.groups[-1] if user.claim == "group" else user.email
        lines += ["", "[[mapping]]", f'claim = "{user.claim}"', f'value = "{value}"',
                  f'role = "{user.role}"', f'tenant = "{user.tenant}"']
    path = e2e_dir / "role_mappings.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def e2e_var(e2e_tools, e2e_dir, e2e_mappings) -> Path:
    """A demo store with small demo data and the test users' mappings applied."""
    var = e2e_dir / "var"
    settings = load_settings({"VEIL_VAR_DIR": str(var), "VEIL_DEMO_MODE": "1"})
    catalog = load_catalog(settings.catalog_dir)
    store = open_store(settings)
    init_store(store, catalog, demo_accounts=True,
               role_mappings=load_role_mappings(e2e_mappings, catalog))
    generate(store, catalog, size="small", seed=7, secret=settings.secret, as_of=DEMO_AS_OF)
    materialize(store, catalog)
    store.dispose()
    gate = open_gate(settings)
    publish_defaults(gate, requested_by="e2e fixture")  # donor snapshots, as `veil demo` does
    gate.close()
    return var


@dataclass(frozen=True)
class App:
    url: str        # http://127.0.0.1:<port>
    issuer: str     # the OIDC provider it signs in with
    var: Path       # its VEIL_VAR_DIR
    log: Path


@dataclass(frozen=True)
class Provider:
    issuer: str
    redirect_uris: dict[str, str]  # app name → its /oauth2callback


#: The apps the session may start, each on its own port: name → extra environment.
APPS = {"main": {}, "short-session": {"VEIL_SESSION_HOURS": "0.004"},  # 14.4 seconds
        # the demo accounts beside OIDC (demo mode), for the demo sign-in's refresh
        "demo": {"VEIL_DEMO_ACCOUNTS": "1"}}


@pytest.fixture(scope="session")
def ports() -> dict[str, int]:
    return {name: _free_port() for name in APPS}


@pytest.fixture(scope="session")
def provider(e2e_tools, e2e_dir, ports, artifacts) -> Iterator[Provider]:
    users = e2e_dir / "users.json"
    users.write_text(json.dumps({
        u.login: {"password": PASSWORD, "email": u.email, "name": u.name,
                  "groups": list(u.groups)} for u in USERS.values()}))
    redirects = {name: f"http://127.0.0.1:{port}/oauth2callback" for name, port in ports.items()}
    log = e2e_dir / "oidc-provider.log"
    process = _Process(
        ["node", str(OIDC_DIR / "provider.mjs"), "--users", str(users),
         "--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET,
         *[arg for uri in redirects.values() for arg in ("--redirect-uri", uri)]],
        log=log, cwd=OIDC_DIR, env={**os.environ, "NODE_ENV": "test"})
    try:
        _wait_for(lambda: "READY " in log.read_text(), timeout=30, what="the OIDC provider",
                  log=log)
        yield Provider(issuer=log.read_text().split("READY ", 1)[1].split()[0],
                       redirect_uris=redirects)
    finally:
        process.stop()
        shutil.copy(log, artifacts / log.name)


def _start_app(name: str, *, provider: Provider, port: int, var: Path, mappings: Path,
               folder: Path) -> tuple[_Process, App]:
    url = f"http://127.0.0.1:{port}"
    secrets = folder / f"secrets-{name}.toml"
    secrets.write_text(f"""[auth]
redirect_uri = "{provider.redirect_uris[name]}"
cookie_secret = "veil-e2e-cookie-secret-{name}-0123456789abcdef"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
server_metadata_url = "{provider.issuer}/.well-known/openid-configuration"
client_kwargs = {{ prompt = "login" }}
""")
    log = folder / f"streamlit-{name}.log"
    process = start_streamlit(secrets=secrets, port=port, log=log, what=f"({name})",
                              VEIL_VAR_DIR=str(var), VEIL_DEMO_MODE="1",
                              VEIL_ROLE_MAPPINGS=str(mappings),
                              # the fixture published the snapshots; no job runs mid-test
                              VEIL_SNAPSHOT_SCHEDULER="0", **APPS[name])
    return process, App(url=url, issuer=provider.issuer, var=var, log=log)


def start_streamlit(*, secrets: Path, port: int, log: Path, what: str,
                    **variables: str) -> _Process:
    """The dashboard on 127.0.0.1:``port`` with these secrets and VEIL_* ``variables`` (no
    other VEIL_ or STREAMLIT_ setting leaks in), once its health check answers."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("VEIL_", "STREAMLIT_")) or key == "VEIL_CLOCK_SHIFT_DAYS"}
    env.update(variables)
    url = f"http://127.0.0.1:{port}"
    # Secrets come from --secrets.files only: nothing is written to the checkout's .streamlit/.
    process = _Process(
        [str(PROJECT_ROOT / ".venv" / "bin" / "streamlit"), "run", "dashboard/app.py",
         "--server.port", str(port), "--server.address", "127.0.0.1",
         "--server.headless", "true", "--browser.gatherUsageStats", "false",
         "--secrets.files", str(secrets)],
        log=log, cwd=PROJECT_ROOT, env=env)

    def healthy() -> bool:
        if not process.alive():
            raise RuntimeError(f"streamlit exited:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                return answer.status == 200
        except OSError:
            return False

    try:
        _wait_for(healthy, timeout=60, what=f"the Streamlit app {what}", log=log)
    except BaseException:
        process.stop()
        raise
    return process


@contextmanager
def _app(name: str, provider, ports, e2e_var, e2e_mappings, e2e_dir, artifacts):
    process, app = _start_app(name, provider=provider, port=ports[name], var=e2e_var,
                              mappings=e2e_mappings, folder=e2e_dir)
    try:
        yield app
    finally:
        process.stop()
        shutil.copy(app.log, artifacts / app.log.name)


@pytest.fixture(scope="session")
def app(provider, ports, e2e_var, e2e_mappings, e2e_dir, artifacts) -> Iterator[App]:
    """The dashboard with OIDC configured (demo accounts therefore off) and an 8-hour session."""
    with _app("main", provider, ports, e2e_var, e2e_mappings, e2e_dir, artifacts) as started:
        yield started


@pytest.fixture(scope="session")
def short_session_app(provider, ports, e2e_var, e2e_mappings, e2e_dir, artifacts
                      ) -> Iterator[App]:
    """The same dashboard with VEIL_SESSION_HOURS=0.004 (14.4 s)."""
    with _app("short-session", provider, ports, e2e_var, e2e_mappings, e2e_dir,
              artifacts) as started:
        yield started


@pytest.fixture(scope="session")
def demo_app(provider, ports, e2e_var, e2e_mappings, e2e_dir, artifacts) -> Iterator[App]:
    """The same dashboard with the demo accounts switched on beside OIDC."""
    with _app("demo", provider, ports, e2e_var, e2e_mappings, e2e_dir, artifacts) as started:
        yield started


@pytest.fixture(scope="session")
def browser(e2e_tools):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                             args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def external_requests() -> list[str]:
    """Requests the browser tried to send beyond 127.0.0.1 during the test (all aborted)."""
    return []


@pytest.fixture
def color_scheme() -> str:
    """The system colour scheme the browser reports (Veil follows it until a reader picks a
    theme in the app menu); a test overrides this fixture for the dark theme."""
    return "light"


@pytest.fixture
def page(browser, artifacts, request, external_requests, color_scheme):
    """A fresh browser context (no cookies) whose traffic is confined to 127.0.0.1."""
    context = browser.new_context(viewport={"width": 1280, "height": 900},
                                  color_scheme=color_scheme, accept_downloads=True)

    def loopback_only(route) -> None:
        url = route.request.url
        if url.startswith(("data:", "blob:")) or urlsplit(url).hostname == "127.0.0.1":
            route.continue_()
        else:
            external_requests.append(url)
            route.abort()

    context.route("**/*", loopback_only)
    # A loaded shared machine takes well over 5 s (Playwright's default for expect) to serve a
    # first page: every wait is for the element, up to 30 s.
    context.set_default_timeout(30_000)
    from playwright.sync_api import expect

    expect.set_options(timeout=30_000)
    yield context.new_page()
    if external_requests:
        folder = artifacts / request.node.name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "external-requests.txt").write_text("\n".join(external_requests) + "\n")
    context.close()


@pytest.fixture
def shot(page, artifacts, request):
    """``shot("step")`` saves test-artifacts/e2e/<test>/NN-step.png, numbered in order."""
    folder = artifacts / request.node.name
    folder.mkdir(parents=True, exist_ok=True)
    taken: list[Path] = []

    def take(step: str) -> Path:
        from playwright.sync_api import expect

        # On Veil's pages let Streamlit finish its run and paint, then shoot.
        app = page.get_by_test_id("stApp")
        if app.count():
            expect(app).to_have_attribute("data-test-script-state", "notRunning")
        page.wait_for_timeout(250)
        path = folder / f"{len(taken) + 1:02d}-{step}.png"
        page.screenshot(path=str(path), full_page=True)
        taken.append(path)
        return path

    return take


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "e2e: drives a real browser against a real OIDC provider "
                                       "(deselect with -m 'not e2e')")
