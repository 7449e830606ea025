"""Chromium for the browser tests, and what they do on the pages."""

import os
import time

import pytest

from tests.support import servers

CHROMIUM = "/usr/lib/chromium/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # A page made by a test (route.fulfill) has no address of its own: without this,
    # Chromium blocks its WebSocket to the app on 127.0.0.1 as a public page reaching a
    # local one.
    "--disable-features=LocalNetworkAccessChecks",
    # Only the app resolves: no background lookups of outside hosts.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
]
ARTIFACTS = servers.ROOT / "test-artifacts"
ADMIN = "admin-browser-token"

REQUIRED = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason="Chromium is not installed (.ci/run installs it)"
)


SCREENSHOTS = servers.ROOT / "docs" / "screenshots"


def document_screenshot(page, name: str) -> None:
    """A screenshot the documentation shows (docs/screenshots/, kept in git)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / name), full_page=True)


def screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def checkout(page, server) -> dict:
    """Fill and submit the checkout form; returns the order as the order page knows it."""
    page.goto(server.url + "/checkout")
    form = page.locator("form#checkout-form")
    form.locator("input[name=amount]").fill("300")
    form.locator("input[name=email]").fill("amina@example.com")
    form.locator("input[name=firstName]").fill("Amina")
    form.locator("input[name=lastName]").fill("Otieno")
    form.locator("input[name=phone]").fill("254712345678")
    form.locator("button[type=submit]").click()
    page.wait_for_url("**/orders/*")
    order_id = page.url.rsplit("/", 1)[1].split("#")[0]
    saved = page.evaluate(f"JSON.parse(sessionStorage.getItem('order:{order_id}'))")
    assert "#token" not in page.url  # taken out of the address bar
    return {"orderId": order_id, "orderNumber": saved["orderNumber"], "accessToken": saved["token"]}


def status(page) -> str:
    return page.get_attribute("#payment-status", "data-status")


def waits(page) -> list[str]:
    return [url for url in page.api_requests if "/wait?" in url]


def until(page, condition, what: str, seconds: float = 5) -> None:
    # Playwright delivers the page's events only inside its own calls: wait in one.
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        page.wait_for_timeout(20)
