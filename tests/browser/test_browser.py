"""The pages in a real browser: Debian's Chromium driven by Playwright, against gunicorn.

The pages' Content-Security-Policy stays on (no bypass): waits use Playwright's locator
assertions, which evaluate no script string inside the page.

Screenshots of the checkout success and the dashboard go to test-artifacts/ (ignored by git).
"""

import time

from playwright.sync_api import expect

from tests.support import servers
from tests.support.browser import ADMIN, REQUIRED, checkout, screenshot, status, waits
from tests.support.live import create, pay

pytestmark = REQUIRED


def test_checkout_shows_success_within_a_second_of_the_webhook(live_server, page):
    server = live_server()
    order = checkout(page, server)
    expect(page.locator("#elapsed")).not_to_have_text("0")
    assert status(page) == "processing"
    assert "Waiting for your payment" in page.inner_text("#payment-status")

    assert pay(server, order).status_code == 200
    paid_at = time.monotonic()
    page.wait_for_selector("#payment-status[data-status=completed]", timeout=5000)
    assert time.monotonic() - paid_at < 1.0
    assert "Payment received" in page.inner_text("#payment-status")
    # One long poll, answered by the webhook: the whole payment cost one request.
    assert len(waits(page)) == 1
    assert [u for u in page.api_requests if "/wait?" not in u] == [server.url + "/api/orders"]
    screenshot(page, "checkout-success.png")


def test_simulated_cancel_shows_cancelled(live_server, page):
    server = live_server(DEV_SIMULATE_PROVIDER="1")
    checkout(page, server)
    page.click("#simulate button[data-outcome=cancel]")
    page.wait_for_selector("#payment-status[data-status=cancelled]", timeout=5000)
    assert "cancelled" in page.inner_text("#payment-status")


def test_simulate_controls_exist_only_with_the_development_flag(live_server, page):
    server = live_server()
    checkout(page, server)
    assert page.locator("#simulate").count() == 0


def test_long_polls_time_out_retry_then_offer_to_check_again(live_server, page):
    server = live_server(
        LONGPOLL_DEFAULT_TIMEOUT_MS="400",
        ORDER_PAGE_RETRY_PAUSE_MS="200",
        ORDER_PAGE_MAX_LONG_POLLS="3",
    )
    order = checkout(page, server)
    page.wait_for_selector("#payment-status[data-status=still-processing]", timeout=10_000)
    assert page.is_visible("#check-again")
    assert len(waits(page)) == 3  # exactly MAX_LONG_POLLS, then it stops asking
    page.wait_for_timeout(1000)
    assert len(waits(page)) == 3

    page.click("#check-again")
    expect(page.locator("#check-again")).to_be_hidden()
    assert pay(server, order).status_code == 200
    page.wait_for_selector("#payment-status[data-status=completed]", timeout=5000)
    assert 4 <= len(waits(page)) <= 6


def test_server_errors_fall_back_to_polling_and_still_show_the_result(live_server, page):
    server = live_server(ORDER_PAGE_FALLBACK_POLL_MS="300")
    # Every long poll fails as a 503; the plain order endpoint still answers.
    page.route(
        "**/wait?*",
        lambda route: route.fulfill(
            status=503,
            content_type="application/json",
            body='{"success": false, "error": "database unavailable, retry shortly"}',
        ),
    )
    order = checkout(page, server)
    page.wait_for_selector("#connection-note:not([hidden])", timeout=5000)
    page.wait_for_timeout(1500)  # (Playwright delivers its events only inside its calls)
    plain = [u for u in page.api_requests if u.endswith(f"/api/orders/{order['orderId']}")]
    assert plain, "the page should poll the order while long polls fail"
    # Backed off with jitter: a handful of requests in 1.5 s, not a tight loop.
    assert len(page.api_requests) < 20, page.api_requests

    assert pay(server, order).status_code == 200
    page.wait_for_selector("#payment-status[data-status=completed]", timeout=10_000)
    # The browser logs each 503 it was served; any other console error still counts.
    page.console_errors[:] = [e for e in page.console_errors if "status of 503" not in e]


def test_dashboard_streams_stats_and_shows_its_connection(live_server, page):
    port = servers.free_port()
    settings = {
        "ADMIN_TOKENS": ADMIN,
        "STATS_SAMPLE_RATE": "1",
        "ADMIN_PAGE_RECONNECT_MS": "1000",
        "SSE_HEARTBEAT_INTERVAL": "1",
    }
    server = live_server(port=port, **settings)
    page.goto(f"{server.url}/admin#token={ADMIN}")
    page.wait_for_selector("#connection-status[data-connected=true]", timeout=5000)
    assert "#token" not in page.url
    assert page.get_attribute("#stream-mode", "data-mode") == "pubsub"
    page.wait_for_selector("#services-table tr[data-service=reconciler]", timeout=5000)
    paid_before = int(page.inner_text("#stat-paid"))

    order = create(server)
    assert pay(server, order).status_code == 200
    expect(page.locator("#stat-paid")).to_have_text(str(paid_before + 1), timeout=5000)
    screenshot(page, "dashboard.png")

    server.stop()
    page.wait_for_selector("#connection-status[data-connected=false]", timeout=5000)
    live_server(port=port, **settings)
    page.wait_for_selector("#connection-status[data-connected=true]", timeout=10_000)
    # While the server was away the browser logged failed connections: expected here.
    page.console_errors.clear()


def test_dashboard_asks_for_the_token_and_refuses_a_wrong_one(live_server, page):
    server = live_server(ADMIN_TOKENS=ADMIN)
    page.goto(server.url + "/admin")
    page.fill("#token-form input[name=token]", "not-an-admin")
    page.click("#token-form button[type=submit]")
    page.wait_for_selector("#token-error:not([hidden])")
    page.console_errors[:] = [e for e in page.console_errors if "403" not in e]
    page.fill("#token-form input[name=token]", ADMIN)
    page.click("#token-form button[type=submit]")
    page.wait_for_selector("#connection-status[data-connected=true]", timeout=5000)
    assert page.evaluate("sessionStorage.getItem('admin-token')") == ADMIN
