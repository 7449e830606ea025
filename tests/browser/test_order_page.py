"""The order page and the client it is built on (app/static/js/orderwait.js), in Chromium:
what the page shows of the order, and the client through the network going away, the
server restarting, the page hidden and shown, and a back-forward cache restore."""

import time

import pytest
from playwright.sync_api import expect

from tests.support import servers
from tests.support.browser import (
    REQUIRED,
    checkout,
    document_screenshot,
    status,
    until,
    waits,
)
from tests.support.live import create, pay

pytestmark = REQUIRED


def test_the_page_shows_the_order_and_its_receipt(live_server, page):
    server = live_server()
    order = checkout(page, server)
    expect(page.locator("#order-number")).to_have_text(order["orderNumber"])
    expect(page.locator("#order-customer")).to_have_text("Amina Otieno")
    expect(page.locator("#order-amount")).to_contain_text("300")
    expect(page.locator("#order-tickets")).to_have_text("1")
    expect(page.locator("#payment-status")).to_have_attribute("aria-live", "polite")
    assert page.is_hidden("#receipt")

    assert pay(server, order).status_code == 200
    page.wait_for_selector("#payment-status[data-status=completed]", timeout=5000)
    expect(page.locator("#receipt-number")).to_have_text("SJK4A1B2C3")
    assert page.is_hidden("#next-step")
    assert len(waits(page)) == 1  # shown from the checkout's answer: one held wait in all
    document_screenshot(page, "order.png")


def test_a_failed_payment_says_what_to_do_next(live_server, page):
    server = live_server()
    order = checkout(page, server)
    assert pay(server, order, result_code=1032).status_code == 200  # cancelled by the user
    page.wait_for_selector("#payment-status[data-status=cancelled]", timeout=5000)
    expect(page.locator("#next-step")).to_be_visible()
    expect(page.locator("#next-step a")).to_have_attribute("href", "/checkout")
    assert page.is_hidden("#receipt")


def test_without_a_token_one_message_and_nothing_that_updates(live_server, page):
    server = live_server(DEV_SIMULATE_PROVIDER="1")
    order = create(server)
    page.goto(f"{server.url}/orders/{order['orderId']}")
    expect(page.locator("#no-token")).to_be_visible()
    assert page.is_hidden("#order-card")
    assert page.is_hidden("#simulate")
    assert "updates by itself" not in page.inner_text("main")
    page.wait_for_timeout(500)
    assert page.api_requests == []


def test_the_network_coming_back_is_used_at_once(live_server, page):
    # Backoff from 4 s: without the `online` event the page would take seconds to notice.
    server = live_server(ORDER_PAGE_FALLBACK_POLL_MS="4000")
    order = checkout(page, server)
    servers.eventually(lambda: len(waits(page)) == 1, 5, "the wait is held")
    page.context.set_offline(True)
    page.wait_for_selector("#connection-note:not([hidden])", timeout=5000)
    assert pay(server, order).status_code == 200
    page.wait_for_timeout(300)
    assert status(page) == "processing"  # it cannot know yet

    page.context.set_offline(False)
    back_at = time.monotonic()
    page.wait_for_selector("#payment-status[data-status=completed]", timeout=10_000)
    assert time.monotonic() - back_at < 1.5
    page.console_errors[:] = [
        e for e in page.console_errors if "ERR_INTERNET_DISCONNECTED" not in e
    ]


def test_a_server_restart_in_the_middle_of_a_wait(live_server, page):
    server = live_server(ORDER_PAGE_FALLBACK_POLL_MS="300", SHUTDOWN_RECONNECT_WINDOW_MS="200")
    order = checkout(page, server)
    servers.eventually(lambda: len(waits(page)) == 1, 5, "the wait is held")
    server.terminate()
    page.wait_for_selector("#connection-note:not([hidden])", timeout=5000)
    restarted = live_server(port=server.port)
    expect(page.locator("#connection-note")).to_be_hidden(timeout=10_000)
    assert pay(restarted, order).status_code == 200
    page.wait_for_selector("#payment-status[data-status=completed]", timeout=5000)
    assert page.is_visible("#receipt")
    page.console_errors[:] = [e for e in page.console_errors if "ERR_CONNECTION_REFUSED" not in e]


def test_a_page_shown_again_asks_at_once(live_server, page):
    server = live_server(ORDER_PAGE_FALLBACK_POLL_MS="4000")
    # Every long poll fails: the page polls the order, backing off from 4 s.
    page.route("**/wait?*", lambda route: route.abort())
    order = checkout(page, server)
    page.wait_for_selector("#connection-note:not([hidden])", timeout=5000)
    page.wait_for_timeout(200)  # its first poll was answered; the next is seconds away
    assert pay(server, order).status_code == 200
    page.unroute("**/wait?*")

    page.evaluate(
        """() => {
            const visible = {value: "visible", configurable: true};
            Object.defineProperty(document, "visibilityState", visible);
            document.dispatchEvent(new Event("visibilitychange"));
        }"""
    )
    shown_at = time.monotonic()
    page.wait_for_selector("#payment-status[data-status=completed]", timeout=10_000)
    assert time.monotonic() - shown_at < 1.0
    page.console_errors[:] = [e for e in page.console_errors if "ERR_FAILED" not in e]


def test_a_back_forward_cache_restore_resumes(live_server, page):
    # Backoff from 4 s: a page that noticed only its aborted request would take seconds.
    server = live_server(ORDER_PAGE_FALLBACK_POLL_MS="4000")
    order = checkout(page, server)
    servers.eventually(lambda: len(waits(page)) == 1, 5, "the wait is held")
    page.evaluate("() => { window.leftAt = Date.now(); }")
    page.goto(server.url + "/checkout")
    assert pay(server, order).status_code == 200
    page.go_back(wait_until="commit")  # a restored page fires no load event
    back_at = time.monotonic()
    # The same document, restored: not a reload of the page.
    assert page.evaluate("() => window.leftAt") is not None
    page.wait_for_selector("#payment-status[data-status=completed]", timeout=10_000)
    assert time.monotonic() - back_at < 1.0


def readme_snippet() -> str:
    """The README's ```html block that follows an order with orderwait.js."""
    readme = (servers.ROOT / "README.md").read_text()
    section = readme.split("### Following an order from your own page", 1)[1]
    return section.split("```html\n", 1)[1].split("```", 1)[0]


def test_the_readme_snippet_follows_an_order_on_another_page(live_server, page):
    """An integrator's page (not served by the app: no CSP of ours) that knows the order's
    id and token, plus the README's lines exactly as written."""
    server = live_server()
    order = create(server)
    html = (
        f"<!doctype html><script>var orderId = {order['orderId']!r};"
        f" var token = {order['accessToken']!r};</script>\n{readme_snippet()}"
    )
    page.route(
        server.url + "/integrator.html",
        lambda route: route.fulfill(status=200, content_type="text/html", body=html),
    )
    logged = []
    page.on("console", lambda message: logged.append(message.text))
    page.goto(server.url + "/integrator.html")
    until(page, lambda: logged == ["processing"], "the current state shown")
    assert pay(server, order).status_code == 200
    until(page, lambda: logged == ["processing", "completed"], "the payment shown")


@pytest.mark.parametrize("transport", ["sse", "websocket"])
def test_the_client_follows_over_streams_through_a_restart(live_server, page, transport):
    """Over SSE or a WebSocket: the current state, then a restart of the server in the
    middle (the client comes back after the delay the server names), then the payment."""
    server = live_server(SHUTDOWN_RECONNECT_WINDOW_MS="300")
    order = create(server)
    script = (
        'import { follow } from "/static/js/orderwait.js";\n'
        f"follow({order['orderId']!r}, {order['accessToken']!r}, {{transport: {transport!r},"
        " fallbackPollMs: 300, onStatus: (o) => console.log(`${o.version} ${o.paymentStatus}`),"
        " onConnection: (state) => console.log(state)});"
    )
    html = f'<!doctype html><script type="module">{script}</script>'
    page.route(
        server.url + "/integrator.html",
        lambda route: route.fulfill(status=200, content_type="text/html", body=html),
    )
    logged, sockets = [], []
    page.on("console", lambda message: logged.append(message.text))
    page.on("websocket", lambda socket: sockets.append(socket.url))
    page.goto(server.url + "/integrator.html")
    until(page, lambda: "1 processing" in logged and "live" in logged, "the current state")
    # The transport asked for, not the polling it falls back to.
    if transport == "sse":
        assert [u for u in page.api_requests if "/events?" in u]
        assert not [u for u in page.api_requests if u.endswith(order["orderId"])]
    else:
        assert sockets and not page.api_requests

    server.terminate()
    restarted = live_server(port=server.port, SHUTDOWN_RECONNECT_WINDOW_MS="300")
    logged.clear()
    until(page, lambda: "live" in logged, "connected again", seconds=10)
    assert pay(restarted, order).status_code == 200
    until(page, lambda: "2 completed" in logged, "the payment shown")
    assert [line for line in logged if line[0].isdigit()] == ["2 completed"]  # each version once
    assert logged[-1] == "settled"
    page.console_errors[:] = [e for e in page.console_errors if "ERR_CONNECTION_REFUSED" not in e]
