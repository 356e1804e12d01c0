"""Browser tests: real Chromium (Playwright, sync API) against a real daphne process.

The server is `daphne cronos_site.asgi:application` started from the venv against the test
database, so HTTP and websockets behave as in production. Tests that use it must commit their
data: mark them `pytest.mark.django_db(transaction=True)` (the `web` fixture also asks for a
transactional database) and `pytest.mark.browser`.

Fixtures for any page's tests:

    web                  the server's base URL, e.g. "http://127.0.0.1:38123" (no trailing /)
    browser_page(user)   a new Playwright Page, logged in as `user` (a session cookie) and
                         open on the agents page; browser_page(None) gives a blank page that is
                         not logged in
    cluster              a django-q2 cluster (`manage.py qcluster`) on the test database, so
                         runs started from a page really execute; the `claude` runner is the
                         stand-in tests/bin/claude
    login(page, web, user)  log in through the login form (after with_real_password(user, settings))

Chromium is Debian's (/usr/lib/chromium/chromium, or CRONOS_CHROMIUM). Without it the tests
skip, saying how to install it; with CI=true they fail instead.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.processes import ROOT, manage, process_env, stop, wait_for

CHROMIUM = os.environ.get("CRONOS_CHROMIUM", "/usr/lib/chromium/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
PASSWORD = "correct horse battery"  # every user of tests/conftest.py has it
FAKE_CLAUDE = ROOT / "tests" / "bin" / "claude"
DAPHNE = Path(sys.executable).with_name("daphne")


def _missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and the browser tests cannot run: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    if not os.access(CHROMIUM, os.X_OK):
        _missing("install Chromium: apt-get install -y chromium")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _missing("install Playwright: pip install -e '.[dev]'")
    return CHROMIUM


# Package scope, not session: Playwright's sync API keeps an asyncio loop running in the main
# thread while it is started, which would break the async tests (channels, asgiref) that run
# after the browser tests. Stopped once the last test of tests/browser/ is done.
@pytest.fixture(scope="package")
def playwright_browser(chromium_path):
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop running in this thread; Django refuses ORM
    # calls from a thread with a running loop unless told that this is deliberate.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    playwright = sync_playwright().start()
    browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
    try:
        yield browser
    finally:
        browser.close()
        playwright.stop()
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@pytest.fixture(scope="package")
def web_server(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[str]:
    """daphne serving Cronos on the test database, for the browser tests of this package."""
    logs = tmp_path_factory.mktemp("web")
    port = _free_port()
    with django_db_blocker.unblock():
        env = process_env(
            CRONOS_CLAUDE_BIN=str(FAKE_CLAUDE),
            CRONOS_LOG_DIR=str(logs / "runs"),
            CRONOS_ENGINE="runs.engines.q2.DjangoQEngine",
        )
    log = logs / "daphne.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [str(DAPHNE), "-b", "127.0.0.1", "-p", str(port), "cronos_site.asgi:application"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_for(lambda: proc.poll() is not None or _answers(f"{base}/login/"), 60, "daphne")
        except AssertionError:
            raise AssertionError(f"daphne did not answer:\n{log.read_text()}") from None
        if proc.poll() is not None:
            raise AssertionError(f"daphne exited:\n{log.read_text()}")
        yield base
    finally:
        stop(proc, 5)
        if os.environ.get("CRONOS_SHOW_LOGS"):
            print(log.read_text())


@pytest.fixture
def web(web_server, transactional_db) -> str:
    """The base URL of the running site (its database is the test's, committed)."""
    return web_server


@pytest.fixture
def cluster(web_server, tmp_path) -> Iterator[subprocess.Popen]:
    """A django-q2 cluster on the test database: runs started from the pages execute."""
    log = tmp_path / "cluster.log"
    with manage(
        "qcluster",
        log=log,
        stop_grace=0.5,  # a graceful django-q2 shutdown takes ~10 s; nothing needs it here
        CRONOS_CLAUDE_BIN=str(FAKE_CLAUDE),
        CRONOS_LOG_DIR=str(tmp_path / "runs"),
        CRONOS_HEARTBEAT_SECONDS="0.5",
    ) as proc:
        yield proc
    if os.environ.get("CRONOS_SHOW_LOGS"):
        print(log.read_text())


def login(page, web: str, user) -> None:
    """Log `user` in through the login form, as a person would.

    The daphne process checks passwords with Django's default hashers, not the fast one the
    test process uses: give the user a password with `with_real_password(user)` first.
    """
    page.goto(f"{web}/login/")
    page.fill("#id_username", user.get_username())
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{web}/")


def with_real_password(user, settings):
    """Hash the user's password with a hasher the server process also knows (scrypt)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.ScryptPasswordHasher"]
    user.set_password(PASSWORD)
    user.save(update_fields=["password"])
    return user


def session_cookie(user, web: str) -> dict:
    """A session for `user`, made as Django's test client makes one (the login is audited)."""
    from django.conf import settings
    from django.test import Client

    client = Client()
    client.force_login(user)
    return {
        "name": settings.SESSION_COOKIE_NAME,
        "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
        "url": web,
    }


@pytest.fixture
def browser_page(playwright_browser, web) -> Iterator[Callable]:
    """browser_page(user) -> a Playwright Page logged in as `user` (None: not logged in).

    Each call opens its own browser context (its own cookies), so two users can be side by
    side in one test. Everything is closed when the test ends.
    """
    contexts = []

    def open_page(user=None):
        context = playwright_browser.new_context(viewport={"width": 1360, "height": 900})
        context.set_default_timeout(10_000)
        contexts.append(context)
        if user is not None:
            # A session cookie rather than the form: the form's password check costs a second
            # of hashing per test in the server; the login test goes through the form itself.
            context.add_cookies([session_cookie(user, web)])
        page = context.new_page()
        if user is not None:
            page.goto(f"{web}/")
        return page

    yield open_page
    for context in contexts:
        context.close()
