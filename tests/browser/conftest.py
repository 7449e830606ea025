"""The browser every test of this folder drives, and a fresh page per test."""

import pytest
from playwright.sync_api import sync_playwright

from tests.support.browser import ARGS, CHROMIUM


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        # The back-forward cache on, as in the browsers people use (Playwright turns it off).
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=ARGS,
            ignore_default_args=["--disable-back-forward-cache"],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser, redis_client):
    """A fresh page that records console errors and API requests; no console error allowed.

    (redis_client: a clean Redis, so no stream lease of an earlier test counts here.)
    """
    context = browser.new_context()
    page = context.new_page()
    page.console_errors = []
    page.api_requests = []
    page.on("console", lambda m: m.type == "error" and page.console_errors.append(m.text))
    page.on("pageerror", lambda error: page.console_errors.append(str(error)))
    page.on("request", lambda r: "/api/" in r.url and page.api_requests.append(r.url))
    yield page
    errors = page.console_errors
    context.close()
    assert errors == []
