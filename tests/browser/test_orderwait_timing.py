"""orderwait.js's timing, in Chromium: no long poll held while a page that asked for
`pauseWhenHidden` is hidden, and after a stopping server's answer the client comes back
only after the delay that answer names (the spreading of a deploy's reconnects)."""

import json

from tests.support.browser import REQUIRED, until
from tests.support.live import create, pay

pytestmark = REQUIRED

# Every fetch the page makes, with its start time, and every JSON answer it gets, with its
# arrival time; both by the page's clock, so Playwright's event delivery adds nothing.
RECORD_FETCHES = """
window.fetches = [];
window.answers = [];
const original = window.fetch;
window.fetch = async (url, init) => {
  const request = window.fetches.push({url: String(url), at: performance.now()}) - 1;
  const response = await original(url, init);
  response.clone().json().then(
    (body) => window.answers.push({request, body, at: performance.now()}),
    () => {},
  );
  return response;
};
"""


def integrator_page(page, server, follows: str) -> None:
    """A page of the integrator's own that runs `follows` (JavaScript, with `follow` in
    scope) and logs to the console."""
    script = f'import {{ follow }} from "/static/js/orderwait.js";\n{follows}'
    html = f'<!doctype html><script type="module">{script}</script>'
    page.route(
        server.url + "/integrator.html",
        lambda route: route.fulfill(status=200, content_type="text/html", body=html),
    )
    page.goto(server.url + "/integrator.html")


def set_visibility(page, state: str) -> None:
    page.evaluate(
        """(state) => {
            Object.defineProperty(document, "visibilityState", {value: state, configurable: true});
            document.dispatchEvent(new Event("visibilitychange"));
        }""",
        state,
    )


def test_a_hidden_page_holds_no_long_poll_and_catches_up_when_shown(live_server, page):
    server = live_server()
    order = create(server)
    logged = []
    page.on("console", lambda message: logged.append(message.text))
    integrator_page(
        page,
        server,
        f"follow({order['orderId']!r}, {order['accessToken']!r}, {{pauseWhenHidden: true,"
        " onStatus: (o) => console.log(`${o.version} ${o.paymentStatus}`),"
        " onConnection: (state) => console.log(state)});",
    )
    until(page, lambda: "1 processing" in logged and "live" in logged, "the current state")
    until(page, lambda: len(page.api_requests) == 2, "the long poll held (after since=0)")

    set_visibility(page, "hidden")
    until(page, lambda: "paused" in logged, "the client paused")
    asked_while_hidden = len(page.api_requests)
    assert pay(server, order).status_code == 200
    page.wait_for_timeout(800)
    assert "2 completed" not in logged  # its long poll was given up: nothing heard
    assert len(page.api_requests) == asked_while_hidden  # and nothing asked

    set_visibility(page, "visible")
    until(page, lambda: "2 completed" in logged, "the payment, once shown", seconds=1)
    assert logged[-1] == "settled"


def test_after_a_shutdown_answer_each_client_waits_the_delay_it_was_given(live_server, page):
    """Five followers of one order on one page, their long polls held by a server that
    stops: each shutdown answer names its own delay, drawn over the window, and each
    follower's next request comes no sooner than that and not much later."""
    server = live_server(SHUTDOWN_RECONNECT_WINDOW_MS="3000")
    order = create(server)
    page.add_init_script(RECORD_FETCHES)
    followers = 5
    integrator_page(
        page,
        server,
        f"for (let i = 0; i < {followers}; i++) follow({order['orderId']!r},"
        f" {order['accessToken']!r}, {{since: 1, fallbackPollMs: 60000}});",
    )
    until(page, lambda: len(page.api_requests) == followers, "every long poll held")
    server.terminate()

    def gaps():
        fetches = page.evaluate("window.fetches")
        answers = page.evaluate("window.answers")
        shutdowns = [a for a in answers if a["body"].get("source") == "shutdown"]
        if len(shutdowns) < followers or len(fetches) < 2 * followers:
            return None
        # Each follower's next request is the first one started after its answer, by order
        # of the answers (each follower has one request in flight at a time).
        found, later = [], sorted(fetches[followers:], key=lambda f: f["at"])
        for answer in sorted(shutdowns, key=lambda a: a["at"] + a["body"]["retryInMs"]):
            nxt = next(f for f in later if f["at"] >= answer["at"])
            later.remove(nxt)
            found.append((answer["body"]["retryInMs"], nxt["at"] - answer["at"]))
        return found

    result = []
    until(page, lambda: result.append(gaps()) or result[-1], "every follower back", 10)
    delays = result[-1]
    asked = sorted(asked for asked, _ in delays)
    assert len(set(asked)) == followers, f"one delay each, drawn at random: {asked}"
    assert max(asked) >= 500, f"drawn over the window: {asked}"
    for asked_ms, waited_ms in delays:
        # setTimeout may fire a millisecond early by the page's clock; a loaded machine
        # may run it late.
        assert asked_ms - 5 <= waited_ms <= asked_ms + 1000, json.dumps(delays)
    # The server stays stopped: the followers' retries are refused. Leave the page first, so
    # that none is refused after the filter below (one was, on a loaded machine).
    page.goto("about:blank")
    page.console_errors[:] = [e for e in page.console_errors if "ERR_CONNECTION_REFUSED" not in e]
