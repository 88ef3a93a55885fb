"""Airflow behind its login, and a real browser: headless Chromium from Debian driven by Playwright.

The browser is the system's (/usr/bin/chromium, which `make test` installs when missing), never one
that Playwright would download. The screenshots the tests take are kept in a folder they name on the
terminal: $UI_SCREENSHOTS, else build/ui-screenshots/ in the checkout (ignored by git).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from include.catalog_publisher.defaults import project_root
from tests.ui.support import CHROMIUM, CHROMIUM_ARGS


@pytest.fixture(scope="session")
def screenshots(request) -> Path:
    """The folder the browser tests' screenshots are kept in (emptied first), named on the terminal."""
    folder = Path(os.environ.get("UI_SCREENSHOTS") or project_root() / "build" / "ui-screenshots")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter:
        reporter.write_line(f"browser screenshots: {folder}")
    return folder


@pytest.fixture(scope="module")  # Playwright's sync API runs an event loop: it must end with the module
def chromium():
    """Debian's Chromium, headless, started by Playwright (nothing downloaded)."""
    from playwright.sync_api import expect, sync_playwright

    # The UI loads its pages in seconds on this 2-core machine, more while Airflow's services work:
    # assertions wait as long as actions do.
    expect.set_options(timeout=30_000)

    assert os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is missing; `make test` installs it (apt-get install chromium)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()
