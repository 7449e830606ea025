"""Generated inputs against a real gunicorn server (gevent worker, PostgreSQL, Redis).

Properties, each over generated requests (the numbers run are printed; `pytest -s` shows them):
- no request the OpenAPI document allows, or one it does not (schemathesis, positive and
  negative generation, on every operation), gets a 5xx;
- every 4xx the app answers is the JSON error `{"success": false, "error": "..."}`;
- bad order bodies and bad webhook deliveries change nothing: no order row, no order state,
  no order key in Redis;
- an unknown order and a wrong token look exactly alike (no enumeration, no customer data);
- a webhook replayed changes the order once; a late callback never overrides a settled one;
- fixed examples of the hostile inputs the generation found answered with 500 (NUL, lone
  surrogates, deep nesting, out-of-range integers): a 4xx, never a 5xx, every run.
"""

import json
import os
import re
import string
import uuid
from dataclasses import dataclass

import psycopg2
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, Verbosity, given, reject, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from app.orders import events
from app.orders.schemas import parse_new_order
from app.payments.schemas import parse_callback
from app.payments.signature import sign
from tests.support import servers
from tests.support.helpers import CUSTOMER, WEBHOOK_SECRET, callback_body, order_body

ADMIN_TOKEN = "fuzz-admin-token"
MAX_WAIT_MS = 200
SERVER_ENV = {
    "ADMIN_TOKENS": ADMIN_TOKEN,
    # Held requests stay short whatever is generated; closed streams are noticed quickly.
    "LONGPOLL_MAX_TIMEOUT_MS": MAX_WAIT_MS,
    "SSE_HEARTBEAT_INTERVAL": 0.2,
    "SSE_MAX_STREAMS_PER_TOKEN": 50,
    # Cached order states must not expire during a run: their keys are compared.
    "ORDER_CACHE_TTL": 3600,
    "EVENT_BUFFER_TTL": 3600,
    # Every route, the development-only one included. Its callback goes to this server.
    "DEV_SIMULATE_PROVIDER": 1,
}
# Per generation mode, per operation. FUZZ_EXAMPLES raises it for a deeper run.
EXAMPLES_PER_OPERATION = int(os.environ.get("FUZZ_EXAMPLES", "25"))
BAD_ORDER_EXAMPLES = 200
BAD_WEBHOOK_EXAMPLES = 250
ENUMERATION_EXAMPLES = 150

# Requests sent, per property (printed at the end of the module, asserted > 0), and per
# operation for the schemathesis property.
COUNTS: dict[str, int] = {}
PER_OPERATION: dict[str, int] = {}


def count(name: str, n: int = 1, into: dict = COUNTS) -> None:
    into[name] = into.get(name, 0) + n


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    yield
    print("\ngenerated cases run, per property:")
    for name, n in COUNTS.items():
        print(f"  {name}: {n}")
    if PER_OPERATION:
        print("schemathesis requests per operation [generation mode]:")
        for name, n in sorted(PER_OPERATION.items()):
            print(f"  {name}: {n}")


def bounded(max_examples: int, verbosity: Verbosity = Verbosity.normal) -> settings:
    # No shrinking: problems are collected (not raised) so that one run reports all of them.
    return settings(
        max_examples=max_examples,
        verbosity=verbosity,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )


@pytest.fixture
def server(live_server, redis_client):
    return live_server(**SERVER_ENV)


# --- talking to the server -------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    content_type: str
    body: bytes
    streamed: bool


class Unsendable(Exception):
    """The client library refuses the generated request (bad header characters, ...)."""


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")


def _sendable_headers(headers) -> dict:
    """Generated headers that HTTP can carry; never Host (the dev route calls its own host)."""
    kept = {}
    for name, value in (headers or {}).items():
        if name.lower() == "host" or not _TOKEN.fullmatch(name):
            continue
        if isinstance(value, str) and _FIELD_VALUE.fullmatch(value):
            kept[name] = value
    return kept


def send(kwargs: dict, timeout: float = 15) -> Answer:
    """Send one request; an event stream is only opened, its status read and closed."""
    kwargs = dict(kwargs)
    headers = _sendable_headers(kwargs.pop("headers", None))
    try:
        prepared = requests.Request(headers=headers, **kwargs).prepare()
    except (ValueError, TypeError, UnicodeError) as exc:
        raise Unsendable(repr(exc)) from None
    with requests.Session() as session:
        try:
            response = session.send(prepared, stream=True, timeout=(5, timeout))
        except (requests.ConnectionError, requests.Timeout):
            raise
        except (ValueError, TypeError, UnicodeError, requests.RequestException) as exc:
            raise Unsendable(repr(exc)) from None
        with response:
            content_type = response.headers.get("Content-Type", "")
            streamed = content_type.startswith("text/event-stream")
            body = b"" if streamed else response.content
            return Answer(response.status_code, content_type, body, streamed)


def error_shape_problem(answer: Answer) -> str | None:
    """None when the answer is the JSON error of the contract, else what is wrong."""
    if not answer.content_type.startswith("application/json"):
        return f"Content-Type {answer.content_type!r}, not JSON"
    try:
        body = json.loads(answer.body)
    except ValueError:
        return "a body that is not JSON"
    if not isinstance(body, dict) or body.get("success") is not False:
        return "no success: false"
    if not isinstance(body.get("error"), str) or not body["error"].strip():
        return "no error message"
    return None


def create_order(server, **overrides) -> dict:
    response = requests.post(server.url + "/api/orders", json=order_body(**overrides), timeout=10)
    assert response.status_code == 201, response.text
    return response.json()


def post_callback(server, body: bytes) -> requests.Response:
    headers = {
        "Content-Type": "application/json",
        "X-Webhook-Signature": sign(body, WEBHOOK_SECRET),
    }
    return requests.post(
        server.url + "/api/payhero/callback", data=body, headers=headers, timeout=10
    )


_RECORD = re.compile(r"^(?:\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ |\[\d{4}-)")


def server_tracebacks(server) -> str:
    """Each distinct traceback in the gunicorn log (Flask logs every unhandled exception with
    one), with how often its last line occurred."""
    records: list[list[str]] = []
    for line in server.output().splitlines():
        if _RECORD.match(line) or not records:
            records.append([line])
        else:
            records[-1].append(line)
    seen: dict[str, list] = {}
    for record in records:
        if any(line.startswith("Traceback") for line in record):
            last = record[-1].strip()
            seen.setdefault(last, [0, "\n".join(record)])[0] += 1
    return "\n\n".join(f"[{n} times] {text}" for n, text in seen.values())[-30_000:]


# --- state that bad input must not change ----------------------------------------------------


def state(pg_url: str, redis_client, order_ids: list[str]) -> dict:
    """Orders in the database (the count, and the watched orders' rows) and every order key
    in Redis with its content."""
    connection = psycopg2.connect(pg_url)
    try:
        with connection.cursor() as cur:
            cur.execute("SELECT count(*) FROM orders")
            total = cur.fetchone()[0]
            cur.execute(
                "SELECT id, payment_status, status, version, updated_at, failure_reason,"
                " mpesa_receipt, checkout_request_id, paid_at FROM orders WHERE id = ANY(%s)"
                " ORDER BY id",
                (order_ids,),
            )
            rows = cur.fetchall()
            cur.execute("SELECT to_regclass('payment_events') IS NOT NULL")
            audit = {}
            if cur.fetchone()[0]:
                cur.execute("SELECT outcome, count(*) FROM payment_events GROUP BY outcome")
                audit = dict(cur.fetchall())
    finally:
        connection.close()
    keys = {}
    for key in sorted(redis_client.scan_iter("order:*", count=1000)):
        kind = redis_client.type(key)
        if kind == "string":
            keys[key] = redis_client.get(key)
        elif kind == "list":
            keys[key] = redis_client.lrange(key, 0, -1)
        else:
            keys[key] = kind
    return {"orders": total, "rows": rows, "redis": keys, "audit": audit}


def changed(before: dict, after: dict) -> dict:
    """What differs between two states, but the audit trail (bad input is audited)."""
    return {k: (before[k], after[k]) for k in before if k != "audit" and before[k] != after[k]}


def audit_added(before: dict, after: dict) -> dict:
    outcomes = set(before["audit"]) | set(after["audit"])
    added = {o: after["audit"].get(o, 0) - before["audit"].get(o, 0) for o in outcomes}
    return {o: n for o, n in added.items() if n}


# --- 1 and 2: schemathesis on every operation ------------------------------------------------


def fuzz_schema(server) -> schemathesis.BaseSchema:
    """The live server's own /openapi.json, with the long poll's timeout kept short."""
    raw = requests.get(server.url + "/openapi.json", timeout=10).json()
    for parameter in raw["paths"]["/api/orders/{order_id}/wait"]["get"]["parameters"]:
        if parameter["name"] == "timeout":
            parameter["schema"] = {"type": "integer", "minimum": 0, "maximum": MAX_WAIT_MS}
    schema = schemathesis.openapi.from_dict(raw)
    schema.config.update(base_url=server.url)
    return schema


ORDER_PATHS = ("/api/orders/{order_id}", "/api/dev/")
ADMIN_PATHS = ("/api/admin/", "/api/services/", "/api/realtime/")


def with_credentials(case, order: dict, payee: dict) -> dict:
    """Make the case reach past authentication: the real order, its token, the admin token,
    a correctly signed webhook naming a real order. Returns the transport arguments."""
    path = case.operation.path
    if "order_id" in (case.path_parameters or {}):
        case.path_parameters = {**case.path_parameters, "order_id": order["orderId"]}
    headers = dict(case.headers or {})
    if path.startswith(ORDER_PATHS):
        headers["Authorization"] = f"Bearer {order['accessToken']}"
    elif path.startswith(ADMIN_PATHS):
        headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
    case.headers = headers
    if path == "/api/payhero/callback" and isinstance(case.body, dict):
        if isinstance(case.body.get("response"), dict):
            case.body["response"]["ExternalReference"] = payee["orderNumber"]
    kwargs = case.as_transport_kwargs(base_url=case.operation.schema.config.base_url)
    if path == "/api/payhero/callback":
        body = kwargs.pop("data", None)
        if "json" in kwargs:
            body = json.dumps(kwargs.pop("json")).encode()
        body = body if isinstance(body, bytes) else str(body or "").encode()
        kwargs["data"] = body
        kwargs["headers"] = {**kwargs["headers"], "X-Webhook-Signature": sign(body, WEBHOOK_SECRET)}
    return kwargs


def describe(kwargs: dict) -> str:
    body = kwargs.get("json", kwargs.get("data"))
    headers = {k: v for k, v in (kwargs.get("headers") or {}).items() if k not in _BORING}
    return (
        f"{kwargs['method']} {kwargs['url']} params={kwargs.get('params')!r:.300}"
        f" headers={headers!r:.300} body={body!r:.500}"
    )


_BORING = {"User-Agent", "Accept-Encoding", "Accept", "Connection", "X-Schemathesis-TestCaseId"}


@dataclass
class Findings:
    server_errors: list[str]
    bad_errors: list[str]
    unsendable: list[str]
    nothing_to_break: list[str]


def fuzz_operation(server, operation, mode, order: dict, payee: dict, found: Findings) -> None:
    """Generated requests of one operation: no 5xx, and every 4xx the JSON error."""
    label = f"{operation.label} [{mode.value}]"

    # Quiet: an operation without inputs to break ends negative mode with Unsatisfiable.
    @bounded(EXAMPLES_PER_OPERATION, Verbosity.quiet)
    @given(case=operation.as_strategy(generation_mode=mode), authorized=st.booleans())
    def run(case, authorized):
        if authorized:
            kwargs = with_credentials(case, order, payee)
        else:
            kwargs = case.as_transport_kwargs(base_url=server.url)
        try:
            answer = send(kwargs)
        except Unsendable as exc:
            found.unsendable.append(f"{label}: {exc}")
            return
        except (requests.ConnectionError, requests.Timeout) as exc:
            found.server_errors.append(f"{label}: no answer ({exc!r}) to {describe(kwargs)}")
            return
        count(NO_5XX)
        count(label, into=PER_OPERATION)
        if answer.status >= 500:
            found.server_errors.append(
                f"{label}: {answer.status} {answer.body[:300]!r} to {describe(kwargs)}"
            )
        elif answer.status >= 400:
            count(JSON_4XX)
            problem = error_shape_problem(answer)
            if problem:
                found.bad_errors.append(
                    f"{label}: {answer.status} with {problem}: {answer.body[:200]!r}"
                    f" to {describe(kwargs)}"
                )

    try:
        run()
    except Unsatisfiable:
        # Negative mode and an operation with no input to break (GET /healthz, say).
        assert mode == GenerationMode.NEGATIVE, label
        found.nothing_to_break.append(label)


NO_5XX = "no 5xx: generated requests sent (every operation, positive and negative)"
JSON_4XX = "every 4xx is the JSON error: 4xx answers checked"


def test_generated_requests_get_no_5xx_and_every_4xx_is_the_json_error(server):
    order, payee = create_order(server), create_order(server)
    schema = fuzz_schema(server)
    operations = [result.ok() for result in schema.get_all_operations()]
    documented = sum(
        method != "parameters" for item in schema.raw_schema["paths"].values() for method in item
    )
    assert len(operations) == documented == 20  # every route, pages and the dev one included
    found = Findings([], [], [], [])

    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz_operation(server, operation, mode, order, payee, found)

    print(f"\ngenerated requests the client refused to send: {len(found.unsendable)}")
    print(f"operations with no input to make invalid: {', '.join(found.nothing_to_break)}")
    assert COUNTS[NO_5XX] > 0
    assert COUNTS.get(JSON_4XX, 0) > 0
    assert not found.server_errors, (
        f"{len(found.server_errors)} generated requests got a 5xx:\n"
        + "\n".join(found.server_errors[:30])
        + "\n\ngunicorn log:\n"
        + server_tracebacks(server)
    )
    assert not found.bad_errors, f"{len(found.bad_errors)} 4xx not the JSON error:\n" + "\n".join(
        found.bad_errors[:30]
    )


# --- 3: bad bodies change nothing ------------------------------------------------------------

NOT_A_STRING = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
NOT_AN_OBJECT = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=10),
    st.lists(st.integers(), max_size=3),
)
NOT_AN_INTEGER = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=6),
    st.lists(st.integers(), max_size=2),
)
BLANK = st.text(alphabet=" \t\n\r", max_size=5)
BAD_MONEY = st.one_of(
    st.integers(max_value=0),
    st.floats(max_value=0, allow_nan=False, allow_infinity=False),
    st.integers(min_value=1, max_value=10**9).filter(lambda n: n % 10).map(lambda n: n / 1000),
    st.sampled_from([0.001, 1.005, 299.999, float("inf"), float("-inf"), float("nan")]),
    st.none(),
    st.booleans(),
    st.text(max_size=8),
    st.lists(st.integers(), max_size=2),
)
NOT_JSON = st.one_of(
    st.just(b""),
    st.binary(max_size=64),
    st.text(max_size=64).map(lambda s: ("{" + s).encode()),
    st.sampled_from([b"{", b"{'amount': 300}", b"\xff\xfe", b"amount=300", b"[1,]"]),
)


def _rejected_by(parse, raw: bytes) -> bool:
    """The validator refuses these bytes (or fails on them, which the server must survive)."""
    try:
        parse(json.loads(raw))
    except Exception:
        return True
    return False


def _dumps(body) -> bytes:
    return json.dumps(body).encode()


@st.composite
def bad_order_requests(draw) -> tuple[str, bytes, str]:
    """(what is wrong, body, Content-Type): every one must be refused."""
    body = order_body(currency="KES", ticketCount=2, phone="254712345678")
    customer = body["customer"]
    what = draw(
        st.sampled_from(
            [
                "amount",
                "currency",
                "ticketCount",
                "customer",
                "email",
                "firstName",
                "lastName",
                "phone",
                "missing field",
                "body not an object",
                "not JSON",
                "not application/json",
            ]
        )
    )
    content_type = "application/json"
    if what == "amount":
        body["amount"] = draw(BAD_MONEY | st.integers(min_value=10_000_001))
    elif what == "currency":
        body["currency"] = draw(
            st.one_of(NOT_A_STRING, BLANK, st.text(max_size=6)).filter(
                lambda c: not (isinstance(c, str) and re.fullmatch("[A-Z]{3}", c.strip()))
            )
        )
    elif what == "ticketCount":
        body["ticketCount"] = draw(
            st.one_of(st.integers(max_value=0), st.integers(min_value=101), NOT_AN_INTEGER)
        )
    elif what == "customer":
        body["customer"] = draw(NOT_AN_OBJECT)
    elif what == "email":
        customer["email"] = draw(
            st.one_of(
                NOT_A_STRING,
                BLANK,
                st.text(max_size=30).filter(lambda e: "@" not in e),
                st.integers(250, 400).map(lambda n: "a" * n + "@example.com"),
            )
        )
    elif what in ("firstName", "lastName"):
        customer[what] = draw(
            st.one_of(NOT_A_STRING, BLANK, st.integers(101, 300).map(lambda n: "N" * n))
        )
    elif what == "phone":
        body["phone"] = draw(
            st.one_of(
                NOT_A_STRING.filter(lambda p: p is not None),
                st.text(max_size=20),
                st.integers(1, 8).map(lambda n: "7" * n),
                st.integers(16, 30).map(lambda n: "7" * n),
            )
        )
    elif what == "missing field":
        field = draw(st.sampled_from(["amount", "customer", "email", "firstName", "lastName"]))
        (customer if field in CUSTOMER else body).pop(field)
    elif what == "body not an object":
        body = draw(NOT_AN_OBJECT)
    if what == "not JSON":
        raw = draw(NOT_JSON)
    else:
        raw = _dumps(body)
    if what == "not application/json":
        content_type = draw(st.sampled_from(["text/plain", "application/x-www-form-urlencoded"]))
    elif not _rejected_by(parse_new_order, raw):
        # The mutation happened to be valid (a phone of 9 to 15 digits, say): not bad input.
        reject()
    return what, raw, content_type


def test_bad_order_bodies_create_nothing(server, pg_url, redis_client):
    witness = create_order(server)
    before = state(pg_url, redis_client, [witness["orderId"]])
    problems = []

    @bounded(BAD_ORDER_EXAMPLES)
    @given(bad_order_requests())
    def run(bad):
        what, raw, content_type = bad
        answer = send(
            {
                "method": "POST",
                "url": server.url + "/api/orders",
                "data": raw,
                "headers": {"Content-Type": content_type},
            }
        )
        count("bad order bodies: requests sent")
        if answer.status not in (400, 413, 415, 429) or error_shape_problem(answer):
            problems.append(f"{what}: {answer.status} {answer.body[:200]!r} for {raw[:200]!r}")

    run()
    after = state(pg_url, redis_client, [witness["orderId"]])
    print(f"\nbad order bodies: {COUNTS['bad order bodies: requests sent']} sent")
    assert COUNTS["bad order bodies: requests sent"] > 0
    assert not problems, "\n".join(problems[:30]) + "\n" + server_tracebacks(server)
    assert not changed(before, after)
    assert audit_added(before, after) == {}


@st.composite
def bad_webhook_requests(draw, order: dict) -> tuple[str, bytes, dict, set[int]]:
    """(what is wrong, body, headers, the statuses that may answer it)."""
    reference = order["orderNumber"]
    valid = json.loads(callback_body(reference, result_code=0, amount=300))
    body, response = valid, valid["response"]
    what = draw(
        st.sampled_from(
            [
                "ResultCode",
                "ExternalReference",
                "Amount",
                "no Amount on success",
                "MpesaReceiptNumber",
                "CheckoutRequestID",
                "missing field",
                "response not an object",
                "body not an object",
                "not JSON",
                "no signature",
                "wrong secret",
                "signature of another body",
                "malformed signature",
                "unknown order",
            ]
        )
    )
    secret, content_type, expected = WEBHOOK_SECRET, "application/json", {400}
    if what == "ResultCode":
        response["ResultCode"] = draw(
            st.one_of(
                st.none(),
                st.booleans(),
                st.floats(allow_nan=False, allow_infinity=False),
                st.lists(st.integers(), max_size=2),
                st.text(max_size=12).filter(lambda t: not re.fullmatch(r"-?[0-9]{1,9}", t.strip())),
            )
        )
    elif what == "ExternalReference":
        response["ExternalReference"] = draw(
            st.one_of(NOT_A_STRING, BLANK, st.integers(33, 80).map(lambda n: "R" * n))
        )
    elif what == "Amount":
        response["Amount"] = draw(BAD_MONEY.filter(lambda a: a is not None))
    elif what == "no Amount on success":
        response.pop("Amount")
        response["ResultCode"] = draw(st.sampled_from([0, "0", " 0 "]))
    elif what in ("MpesaReceiptNumber", "CheckoutRequestID"):
        response[what] = draw(
            st.one_of(
                NOT_A_STRING.filter(lambda v: v is not None),
                BLANK,
                st.integers(129, 300).map(lambda n: "M" * n),
            )
        )
    elif what == "missing field":
        field = draw(st.sampled_from(["response", "ResultCode", "ExternalReference"]))
        (body if field == "response" else response).pop(field)
    elif what == "response not an object":
        body["response"] = draw(NOT_AN_OBJECT)
    elif what == "body not an object":
        body = draw(NOT_AN_OBJECT)
    raw = draw(NOT_JSON) if what == "not JSON" else _dumps(body)
    signature = sign(raw, secret)
    if what == "no signature":
        signature, expected = None, {401}
    elif what == "wrong secret":
        other = draw(st.text(min_size=1, max_size=20).filter(lambda s: s != WEBHOOK_SECRET))
        signature, expected = sign(raw, other), {401}
    elif what == "signature of another body":
        other = draw(st.binary(max_size=40).filter(lambda b: b != raw))
        signature, expected = sign(other, WEBHOOK_SECRET), {401}
    elif what == "malformed signature":
        signature = draw(
            st.one_of(
                st.just(signature.upper()),
                st.just(signature[len("sha256=") :]),
                st.just(signature[:-1]),
                st.just("sha1=" + signature[len("sha256=") :]),
                st.text(alphabet=string.printable.strip(), max_size=80),
            ).filter(lambda s: s.strip().lower() != sign(raw, WEBHOOK_SECRET).lower())
        )
        expected = {401}
    elif what == "unknown order":
        unknown = draw(
            st.text(alphabet=string.ascii_uppercase + string.digits + "-", min_size=1, max_size=32)
        )
        if unknown == reference:
            reject()
        raw = callback_body(unknown, result_code=0, amount=300)
        signature, expected = sign(raw, WEBHOOK_SECRET), {404}
    if expected == {400} and not _rejected_by(parse_callback, raw):
        reject()
    headers = {"Content-Type": content_type}
    if signature is not None:
        headers["X-Webhook-Signature"] = signature
    return what, raw, headers, expected | {413, 429}


def test_bad_webhook_deliveries_change_nothing(server, pg_url, redis_client):
    order = create_order(server)
    before = state(pg_url, redis_client, [order["orderId"]])
    problems = []

    @bounded(BAD_WEBHOOK_EXAMPLES)
    @given(bad_webhook_requests(order))
    def run(bad):
        what, raw, headers, expected = bad
        answer = send(
            {
                "method": "POST",
                "url": server.url + "/api/payhero/callback",
                "data": raw,
                "headers": headers,
            }
        )
        count("bad webhook deliveries: requests sent")
        if answer.status not in expected or error_shape_problem(answer):
            problems.append(
                f"{what}: {answer.status} (expected {sorted(expected)}) {answer.body[:200]!r}"
                f" for {raw[:200]!r} {headers}"
            )

    run()
    after = state(pg_url, redis_client, [order["orderId"]])
    print(f"\nbad webhook deliveries: {COUNTS['bad webhook deliveries: requests sent']} sent")
    assert COUNTS["bad webhook deliveries: requests sent"] > 0
    assert not problems, "\n".join(problems[:30]) + "\n" + server_tracebacks(server)
    assert not changed(before, after)
    assert after["rows"][0][1:4] == ("processing", "pending", 1)
    # The audit trail (where there is one) may only have gained rejections.
    assert set(audit_added(before, after)) <= {"rejected"}


# --- 4: no enumeration -----------------------------------------------------------------------

TOKENS = st.text(alphabet=string.ascii_letters + string.digits + "-_.~", min_size=1, max_size=64)


def test_unknown_orders_and_wrong_tokens_all_answer_the_same_404(server):
    order = create_order(server)
    secrets = [
        order["orderId"],
        order["orderNumber"],
        order["accessToken"],
        CUSTOMER["email"],
        CUSTOMER["firstName"],
        CUSTOMER["lastName"],
    ]
    baseline = requests.get(
        f"{server.url}/api/orders/{uuid.uuid4()}",
        headers={"Authorization": "Bearer nothing"},
        timeout=10,
    )
    assert baseline.status_code == 404
    assert baseline.json() == {"success": False, "error": "order not found"}
    problems = []

    @bounded(ENUMERATION_EXAMPLES)
    @given(
        order_id=st.one_of(
            st.uuids().map(str), st.just(order["orderId"]), st.text(min_size=1, max_size=40)
        ),
        token=TOKENS,
        endpoint=st.sampled_from(["", "/wait", "/events"]),
        in_query=st.booleans(),
    )
    def run(order_id, token, endpoint, in_query):
        if token == order["accessToken"] or "/" in order_id or order_id in (".", ".."):
            return
        url = f"{server.url}/api/orders/{requests.utils.quote(order_id, safe='')}{endpoint}"
        params = {"timeout": 100} if endpoint == "/wait" else {}
        headers = {}
        if in_query:
            params["token"] = token
        else:
            headers["Authorization"] = f"Bearer {token}"
        answer = send({"method": "GET", "url": url, "params": params, "headers": headers})
        count("enumeration: unknown order or wrong token")
        same = (answer.status, answer.content_type, answer.body) == (
            baseline.status_code,
            baseline.headers["Content-Type"],
            baseline.content,
        )
        leaked = [s for s in secrets if s.encode() in answer.body]
        if not same or leaked:
            problems.append(f"{url} {params} {headers}: {answer.status} {answer.body!r} {leaked}")

    run()
    print(f"\nenumeration: {COUNTS['enumeration: unknown order or wrong token']} requests")
    assert COUNTS["enumeration: unknown order or wrong token"] > 0
    assert not problems, "\n".join(problems[:30])


# --- 5: replays and callbacks out of order ---------------------------------------------------


def buffered_events(redis_client, order: dict) -> list[dict]:
    raw = redis_client.lrange(events.buffer_key(order["orderId"]), 0, -1)
    return [json.loads(e) for e in raw]


def current(server, order: dict) -> dict:
    return requests.get(
        f"{server.url}/api/orders/{order['orderId']}",
        headers={"Authorization": f"Bearer {order['accessToken']}"},
        timeout=10,
    ).json()


def test_a_replayed_webhook_changes_the_order_once(server, redis_client):
    order = create_order(server)
    body = callback_body(order["orderNumber"], result_code=0, amount=300)
    answers = [post_callback(server, body) for _ in range(5)]

    assert [a.status_code for a in answers] == [200] * 5
    outcomes = [a.json() for a in answers]
    assert [o["changed"] for o in outcomes] == [True, False, False, False, False]
    assert [o["duplicate"] for o in outcomes] == [False, True, True, True, True]
    assert {o["version"] for o in outcomes} == {2}
    final = current(server, order)
    assert (final["paymentStatus"], final["status"], final["version"]) == ("completed", "paid", 2)
    servers.eventually(lambda: len(buffered_events(redis_client, order)) == 1, 5, "one event")
    assert [e["version"] for e in buffered_events(redis_client, order)] == [2]
    count("replay: deliveries of one signed body", len(answers))


@pytest.mark.parametrize(
    "first, late, kept",
    [(0, 1032, "completed"), (1032, 0, "cancelled"), (2001, 0, "failed"), (0, 1, "completed")],
    ids=["cancel-after-completed", "completed-after-cancelled", "paid-after-failed", "cancel-1"],
)
def test_a_late_callback_never_overrides_the_first_outcome(server, redis_client, first, late, kept):
    order = create_order(server)
    settled = post_callback(server, callback_body(order["orderNumber"], result_code=first))
    assert settled.status_code == 200 and settled.json()["changed"] is True
    assert settled.json()["paymentStatus"] == kept

    answer = post_callback(server, callback_body(order["orderNumber"], result_code=late))
    assert answer.status_code == 200
    outcome = answer.json()
    assert outcome["changed"] is False and outcome["duplicate"] is False
    assert outcome["paymentStatus"] == kept and outcome["version"] == 2
    assert outcome["reason"] == f"order already {kept}"
    assert current(server, order)["paymentStatus"] == kept
    assert current(server, order)["version"] == 2
    servers.eventually(lambda: len(buffered_events(redis_client, order)) == 1, 5, "one event")
    assert [e["paymentStatus"] for e in buffered_events(redis_client, order)] == [kept]
    count("out of order: late callbacks after a settled one")


# --- 6: inputs the fuzzing found that once answered 500 ---------------------------------------
# Each passes the validators (or is malformed JSON) and must get a 4xx, never a 5xx, and change
# no order. Fixed examples, so that a regression fails every run, not one run in N.

HOSTILE_ORDERS = {
    "email-with-NUL": {"email": "wanjiru\x00@example.com"},
    "firstName-with-NUL": {"firstName": "Wan\x00jiru"},
    "lastName-with-NUL": {"lastName": "Ka\x00mau"},
    "firstName-lone-surrogate": {"firstName": "\ud800"},
}


def hostile_order(customer: dict) -> bytes:
    return _dumps(order_body(customer={**CUSTOMER, **customer}))


@pytest.mark.parametrize(
    "raw",
    [hostile_order(c) for c in HOSTILE_ORDERS.values()] + [b"[" * 30_000 + b"]" * 30_000],
    ids=[*HOSTILE_ORDERS, "json-nested-30000-deep"],
)
def test_hostile_order_bodies_get_a_4xx_not_a_5xx(server, pg_url, redis_client, raw):
    before = state(pg_url, redis_client, [])
    answer = send(
        {
            "method": "POST",
            "url": server.url + "/api/orders",
            "data": raw,
            "headers": {"Content-Type": "application/json"},
        }
    )
    count("fixed hostile inputs: requests sent")
    assert answer.status < 500, f"{answer.status} {answer.body!r}\n{server_tracebacks(server)}"
    if answer.status >= 400:
        assert error_shape_problem(answer) is None
        assert not changed(before, state(pg_url, redis_client, []))


HOSTILE_CALLBACKS = {
    "ExternalReference-with-NUL": lambda order: callback_body("ORD\x00X"),
    "ExternalReference-lone-surrogate": lambda order: _dumps(
        {"response": {"ExternalReference": "\ud800", "ResultCode": 1}}
    ),
    "ResultCode-2**31-unknown-order": lambda order: callback_body("UNKNOWN", result_code=2**31),
    "ResultCode-2**31": lambda order: callback_body(order["orderNumber"], result_code=2**31),
    "MpesaReceiptNumber-with-NUL": lambda order: callback_body(
        order["orderNumber"], MpesaReceiptNumber="SJK\x00"
    ),
    "MpesaReceiptNumber-lone-surrogate": lambda order: callback_body(
        order["orderNumber"], MpesaReceiptNumber="\ud800"
    ),
    "json-nested-30000-deep": lambda order: b"[" * 30_000 + b"]" * 30_000,
}


@pytest.mark.parametrize("make_body", HOSTILE_CALLBACKS.values(), ids=HOSTILE_CALLBACKS.keys())
def test_hostile_signed_callbacks_get_a_4xx_not_a_5xx(server, pg_url, redis_client, make_body):
    order = create_order(server)
    before = state(pg_url, redis_client, [order["orderId"]])
    answer = post_callback(server, make_body(order))
    count("fixed hostile inputs: requests sent")
    assert answer.status_code < 500, f"{answer.status_code} {answer.text}\n" + server_tracebacks(
        server
    )
    if answer.status_code >= 400:
        assert (
            error_shape_problem(
                Answer(answer.status_code, answer.headers["Content-Type"], answer.content, False)
            )
            is None
        )
        assert not changed(before, state(pg_url, redis_client, [order["orderId"]]))


@pytest.mark.parametrize("raw", [b"true", b"1", b'"success"', b"null", b"[]"])
def test_the_dev_simulate_route_answers_a_non_object_body_with_400(server, raw):
    order = create_order(server)
    answer = send(
        {
            "method": "POST",
            "url": f"{server.url}/api/dev/orders/{order['orderId']}/simulate",
            "data": raw,
            "headers": {
                "Content-Type": "application/json",
                "Authorization": f"Bearer {order['accessToken']}",
            },
        }
    )
    count("fixed hostile inputs: requests sent")
    assert answer.status == 400, f"{answer.status} {answer.body!r}\n{server_tracebacks(server)}"
    assert error_shape_problem(answer) is None
