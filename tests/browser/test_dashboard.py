"""The dashboard and the checkout form in a real browser (Chromium, Playwright, gunicorn).

The dashboard shows what happened before it opened (the server's per-minute series and
every status's count), shares one stream of each kind between its tabs, never meets the
token's stream limit on a reload or a second tab, and says why when a stream is refused.
The checkout form shows every field's error at once. Screenshots go to docs/screenshots/.
"""

import re

import requests
from playwright.sync_api import expect
from sqlalchemy import create_engine, text

from app.config import normalize_database_url
from tests.support import servers
from tests.support.browser import ADMIN, REQUIRED, document_screenshot
from tests.support.live import create, pay

pytestmark = REQUIRED

SETTINGS = {"ADMIN_TOKENS": ADMIN, "ADMIN_PAGE_RECONNECT_MS": "500", "ACCESS_LOG": "-"}
REFUSED = re.compile(r'"GET /api/[^ "]*stream[^ "]* HTTP/[0-9.]+" 429 ')


def run_sql(pg_url: str, statement: str, **params) -> None:
    engine = create_engine(normalize_database_url(pg_url))
    with engine.begin() as connection:
        connection.execute(text(statement), params)
    engine.dispose()


def open_dashboard(page, server) -> None:
    page.goto(f"{server.url}/admin#token={ADMIN}")
    page.wait_for_selector("#connection-status[data-connected=true]", timeout=5000)
    page.wait_for_selector("#services-table tr[data-service=reconciler]", timeout=5000)


def series_values(page, key: str) -> list[int]:
    values = page.get_attribute(f"#payments-chart polyline[data-series={key}]", "data-values")
    return [int(value) for value in values.split(",")]


def realtime(server) -> dict:
    response = requests.get(
        server.url + "/api/realtime/stats", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=5
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_dashboard_shows_the_last_hour_and_every_status_from_before_it_opened(
    live_server, page, pg_url
):
    server = live_server(**SETTINGS)
    run_sql(pg_url, "DELETE FROM orders")
    expired = create(server)
    run_sql(
        pg_url,
        "UPDATE orders SET status = 'expired', payment_status = 'expired' WHERE id = :id",
        id=expired["orderId"],
    )
    create(server)  # pending
    for code in (0, 0, 1032, 2001):  # paid, paid, cancelled, failed
        assert pay(server, create(server), result_code=code).status_code == 200

    open_dashboard(page, server)
    expected = {"paid": 2, "pending": 1, "cancelled": 1, "failed": 1, "expired": 1}
    for status, count in expected.items():
        expect(page.locator(f"#stat-{status}")).to_have_text(str(count))
    expect(page.locator("#stat-total")).to_have_text("6")

    # The series came from the server: the settlements of the last minutes, not an empty
    # chart waiting for changes.
    for key in ("paid", "cancelled", "failed"):
        values = series_values(page, key)
        assert len(values) == 60 and sum(values) == expected[key], (key, values)
        assert sum(values[-2:]) == expected[key]
    legend = page.locator("#chart-legend")
    for label in ("Paid: 2", "Cancelled: 1", "Failed: 1"):
        expect(legend).to_contain_text(label)
    # Axes: count labels and clock times, the last minute "now".
    y_labels = page.locator("#payments-chart text.y-label").all_text_contents()
    assert y_labels[0] == "0" and int(y_labels[-1]) >= 2, y_labels
    x_labels = page.locator("#payments-chart text.x-label").all_text_contents()
    assert x_labels[-1] == "now" and len(x_labels) == 7, x_labels
    assert all(re.fullmatch(r"[0-9]{2}:[0-9]{2}", label) for label in x_labels[:-1])
    # Said in words too: the description, and the hidden table of minutes.
    assert "2 paid, 1 cancelled, 1 failed" in page.text_content("#chart-desc")
    rows = page.locator("#chart-table tbody tr")
    cells = [rows.nth(i).locator("td").all_text_contents() for i in range(rows.count())]
    assert sum(int(row[1]) for row in cells) == 2 and sum(int(row[3]) for row in cells) == 1

    # A payment while it is open moves the chart too.
    assert pay(server, create(server)).status_code == 200
    expect(page.locator("#stat-paid")).to_have_text("3", timeout=5000)
    assert sum(series_values(page, "paid")) == 3
    document_screenshot(page, "dashboard.png")


def test_reloads_and_a_second_tab_never_meet_the_stream_limit(live_server, page):
    server = live_server(**SETTINGS)  # SSE_MAX_STREAMS_PER_TOKEN: 3, the default
    statuses = []
    page.context.on("response", lambda r: "/api/" in r.url and statuses.append(r.status))

    open_dashboard(page, server)
    for _ in range(2):
        page.reload()
        open_dashboard(page, server)
    second = page.context.new_page()
    open_dashboard(second, server)
    second.reload()
    open_dashboard(second, server)
    page.reload()
    open_dashboard(page, server)
    # Away and back (maybe from the back-forward cache): it follows the streams again.
    page.goto(server.url + "/checkout")
    page.go_back(wait_until="commit")  # a restored page fires no load event
    page.wait_for_selector("#connection-status[data-connected=true]", timeout=5000)

    # Both tabs follow one stream of each kind: the token holds two of its three slots.
    servers.eventually(
        lambda: realtime(server)["byKind"] == {"sse:stats": 1, "sse:services": 1},
        5,
        "one stream of each kind",
    )
    assert 429 not in statuses, statuses
    assert not REFUSED.search(server.output()), server.output()
    for tab in (page, second):
        expect(tab.locator("#stream-notice")).to_be_hidden()

    # The tabs closed, the streams are given back.
    second.close(run_before_unload=True)  # as a person closes it: pagehide runs
    page.close(run_before_unload=True)
    servers.eventually(lambda: realtime(server)["byKind"] == {}, 5, "no stream left")


def test_a_refused_stream_says_why_and_is_retried_after_retry_after(live_server, page):
    server = live_server(**SETTINGS, SSE_MAX_STREAMS_PER_TOKEN="1", SSE_HEARTBEAT_INTERVAL="1")
    page.goto(f"{server.url}/admin#token={ADMIN}")
    notice = page.locator("#stream-notice")
    expect(notice).to_be_visible(timeout=5000)
    expect(notice).to_contain_text("refused (429)")
    expect(notice).to_contain_text("at most 1 open streams per admin token")
    expect(notice).to_contain_text("Retrying in 1 s")
    # Retried after Retry-After (1 s here), not in a tight loop.
    page.wait_for_timeout(3000)
    refused = len(REFUSED.findall(server.output()))
    assert 2 <= refused <= 6, server.output()
    page.console_errors[:] = [e for e in page.console_errors if "429" not in e]


def field_errors(page) -> dict[str, str]:
    boxes = page.locator("#checkout-form .field-error:not([hidden])")
    return {
        boxes.nth(i).get_attribute("data-field"): boxes.nth(i).inner_text()
        for i in range(boxes.count())
    }


def test_checkout_shows_every_field_error_at_once(live_server, page):
    server = live_server()
    page.goto(server.url + "/checkout")
    form = page.locator("form#checkout-form")
    form.locator("input[name=amount]").fill("0")
    form.locator("input[name=email]").fill("amina@")
    form.locator("input[name=phone]").fill("12")
    form.locator("button[type=submit]").click()
    errors = field_errors(page)
    assert set(errors) == {"amount", "email", "firstName", "lastName", "phone"}, errors
    assert "0.01" in errors["amount"] and "required" in errors["lastName"]
    for name in errors:
        expect(form.locator(f"input[name={name}]")).to_have_attribute("aria-invalid", "true")
    assert page.api_requests == []  # refused before asking the server
    document_screenshot(page, "checkout.png")

    # Fixed fields lose their errors; what the server refuses is shown by its field too.
    form.locator("input[name=amount]").fill("300")
    form.locator("input[name=email]").fill("amina@example.com")
    form.locator("input[name=firstName]").fill("Amina")
    form.locator("input[name=lastName]").fill("Otieno")
    form.locator("input[name=phone]").fill("")
    bad = '{"amount": -1, "customer": {"email": "x", "firstName": "Amina", "lastName": " "}}'
    page.route("**/api/orders", lambda route: route.continue_(post_data=bad))
    form.locator("button[type=submit]").click()
    expect(form.locator("#error-lastName")).to_be_visible()
    assert set(field_errors(page)) == {"amount", "email", "lastName"}
    assert page.url.endswith("/checkout")
    page.console_errors[:] = [e for e in page.console_errors if "400" not in e]
