"""Browser tests: Debian's Chromium, headless, driven by Playwright against pytest-django's live server.

Screenshots go to test-artifacts/browser/ (gitignored; .ci/run creates test-artifacts/).
"""

import os
import shutil
from pathlib import Path

import pytest

from tests.browser.pages import ARTIFACTS

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def chromium_path() -> str | None:
    configured = os.environ.get("CXR_CHROMIUM")
    for candidate in ((configured,) if configured else ()) + CHROMIUM_CANDIDATES:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("chromium")


@pytest.fixture
def browser(monkeypatch):
    executable = chromium_path()
    if executable is None:
        pytest.skip("Chromium is not installed (apt-get install -y chromium; .ci/run does this)")
    # Playwright's sync API runs an event loop in this thread; the test's own ORM calls are still synchronous.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()
            # While Playwright's loop runs, the ORM works on its own connection: close it, or the test
            # database cannot be dropped at the end of the session.
            from django.db import connections

            connections.close_all()


@pytest.fixture
def live_server(django_db_setup, django_db_blocker):
    """pytest-django's live server, but stopped after this test, so its database connection closes before teardown."""
    from pytest_django.live_server_helper import LiveServer

    server = LiveServer("localhost")
    yield server
    server.stop()
