"""The OpenAPI 3.1 document of the whole HTTP API, served at `GET /openapi.json`.

The schemas are generated from the models the endpoints validate with and answer by
(pydantic's JSON Schema). What is written here is what no model says: the paths, their
parameters and status codes, the security schemes, the links from a created order to its
endpoints, and the events the streams carry. tests/api/test_openapi.py keeps the paths true
against the app's routes in both directions; the contract test (tests/live/test_contract.py)
runs schemathesis against a live server.

Operations marked `x-dev-only` exist only on apps with DEV_SIMULATE_PROVIDER set;
`document(app)` leaves them out elsewhere.
"""

import copy
from functools import cache

from flask import Blueprint, current_app, jsonify
from pydantic.json_schema import models_json_schema

from app import validation
from app.admin.schemas import RealtimeStats, Stats
from app.health import Health, Readiness
from app.orders.schemas import CreatedOrder, NewOrder, Order, WaitAnswer, WaitQuery
from app.pages.simulate import SimulateRequest
from app.payments.schemas import CallbackBody, CallbackOutcome
from app.realtime.websocket import Handshake
from app.responses import DEFAULT_RETRY_AFTER, ErrorBody

JSON = "application/json"
DEV_ONLY = "x-dev-only"
REF = "#/components/schemas/{model}"

# (model, the direction it is used in): requests are validated, answers serialized.
MODELS = [
    (NewOrder, "validation"),
    (CallbackBody, "validation"),
    (SimulateRequest, "validation"),
    (Order, "serialization"),
    (CreatedOrder, "serialization"),
    (WaitAnswer, "serialization"),
    (CallbackOutcome, "serialization"),
    (Stats, "serialization"),
    (RealtimeStats, "serialization"),
    (Readiness, "serialization"),
    (Health, "serialization"),
    (ErrorBody, "serialization"),
]

bp = Blueprint("openapi", __name__)


def schemas() -> dict:
    """components.schemas, generated from MODELS."""
    _, generated = models_json_schema(MODELS, ref_template=REF)
    return generated["$defs"]


def ref(model) -> dict:
    return {"$ref": REF.format(model=model.__name__)}


def json_body(description: str, model, **extra) -> dict:
    return {"description": description, "content": {JSON: {"schema": ref(model)}}, **extra}


# -- errors ----------------------------------------------------------------------------------

RETRY_AFTER = {
    "Retry-After": {
        "description": f"Seconds to wait before retrying ({DEFAULT_RETRY_AFTER} unless said).",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    }
}
ALLOW = {
    "Allow": {
        "description": "The methods the path has.",
        "required": True,
        "schema": {"type": "string"},
    }
}
# status -> (components.responses name, description, headers)
ERRORS = {
    400: ("BadRequest", "Malformed input: `errors` names every wrong field.", {}),
    401: ("Unauthorized", "Missing credentials (token, or webhook signature).", {}),
    403: ("Forbidden", "The token is not an admin token.", {}),
    404: (
        "NotFound",
        "Unknown order, or a token that does not open it: the two look the same, so that "
        "no one learns which order ids exist.",
        {},
    ),
    405: ("MethodNotAllowed", "The path exists but not with this method.", ALLOW),
    413: ("PayloadTooLarge", "The request body is larger than MAX_BODY_BYTES.", {}),
    415: ("UnsupportedMediaType", "The request body is not application/json.", {}),
    429: (
        "TooManyRequests",
        "Rate limited, or (admin streams) every stream slot of the token is taken.",
        RETRY_AFTER,
    ),
    503: (
        "ServiceUnavailable",
        "The database is unavailable, or the worker holds all it can: retry after a while.",
        RETRY_AFTER,
    ),
}


def errors(*codes: int) -> dict:
    return {str(code): {"$ref": f"#/components/responses/{ERRORS[code][0]}"} for code in codes}


# -- parameters and security -----------------------------------------------------------------

ORDER_ID = {
    "name": "order_id",
    "in": "path",
    "required": True,
    "description": "The order's id (a UUID). Anything else answers 404 like an unknown order.",
    "schema": {"type": "string"},
}
EVENT_ID = {"type": "string", "pattern": validation.EVENT_ID}
LAST_EVENT_ID = [
    {
        "name": "Last-Event-ID",
        "in": "header",
        "description": "Sent by EventSource on reconnect: the id of the last event received.",
        "schema": EVENT_ID,
    },
    {
        "name": "lastEventId",
        "in": "query",
        "description": "The same as the Last-Event-ID header, for clients that cannot set it.",
        "schema": EVENT_ID,
    },
]
ORDER_SECURITY = [{"orderBearer": []}, {"orderToken": []}]
ADMIN_SECURITY = [{"adminBearer": []}, {"adminToken": []}]
SECURITY_SCHEMES = {
    "orderBearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "The order's accessToken. Missing: 401; wrong, or unknown order: 404 "
        "(which of the two is not revealed).",
    },
    "orderToken": {
        "type": "apiKey",
        "in": "query",
        "name": "token",
        "description": "The order's accessToken as `?token=` (EventSource cannot set headers).",
    },
    "adminBearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "One of ADMIN_TOKENS. Missing: 401; not an admin token: 403.",
    },
    "adminToken": {
        "type": "apiKey",
        "in": "query",
        "name": "token",
        "description": "One of ADMIN_TOKENS as `?token=`.",
    },
}


def parameters(model, where: str) -> list[dict]:
    """A model's fields as OpenAPI parameters `in` query or header, each with its generated
    schema (a parameter is absent, never null: an optional field's null branch is left out)."""
    generated = model.model_json_schema(ref_template=REF)
    required = set(generated.get("required", []))
    found = []
    for name, schema in copy.deepcopy(generated["properties"]).items():
        description = schema.pop("description", "")
        schema.pop("default", None)
        schema.pop("title", None)
        if "anyOf" in schema:
            (schema,) = [branch for branch in schema.pop("anyOf") if branch != {"type": "null"}]
        found.append(
            {
                "name": name,
                "in": where,
                "required": name in required,
                "description": description,
                "schema": schema,
            }
        )
    return found


# -- streams ---------------------------------------------------------------------------------


def event_stream(description: str, events: dict[str, object]) -> dict:
    """A text/event-stream answer: each event an object of `event`, `id` and `data` (JSON,
    of the model given, or of any shape for None)."""

    def event(name: str, model) -> dict:
        data = {"type": "string", "contentMediaType": JSON}
        if model is not None:
            data["contentSchema"] = ref(model)
        return {
            "type": "object",
            "required": ["event", "data"],
            "properties": {"event": {"const": name}, "id": EVENT_ID, "data": data},
        }

    return {
        "description": f"{description} `: heartbeat` comments in between.",
        "content": {
            "text/event-stream": {
                "schema": {"oneOf": [event(name, model) for name, model in events.items()]}
            }
        },
    }


# -- operations ------------------------------------------------------------------------------


def operation(op_id: str, summary: str, security: list, responses: dict, **more) -> dict:
    return {
        "operationId": op_id,
        "summary": summary,
        "security": security,
        "responses": responses,
        **more,
    }


def page(op_id: str, summary: str) -> dict:
    return {
        "get": operation(
            op_id,
            summary,
            [],
            {"200": {"description": summary, "content": {"text/html": {"schema": {}}}}},
        )
    }


# A created order's id feeds every order endpoint; its token is the client's own credential.
ORDER_LINKS = {
    name: {"operationId": op_id, "parameters": {"order_id": "$response.body#/orderId"}}
    for name, op_id in [
        ("GetOrder", "getOrder"),
        ("WaitForOrder", "waitForOrder"),
        ("OrderEvents", "orderEvents"),
        ("SimulatePayment", "simulatePayment"),
    ]
}


def paths() -> dict:
    order_errors = errors(401, 404, 429, 503)
    admin_errors = errors(401, 403, 429)
    return {
        "/api/orders": {
            "post": operation(
                "createOrder",
                "Create an order (processing / pending, version 1).",
                [],
                {
                    "201": json_body(
                        "The order, with its access token.", CreatedOrder, links=ORDER_LINKS
                    ),
                    **errors(400, 413, 415, 429, 503),
                },
                requestBody={"required": True, "content": {JSON: {"schema": ref(NewOrder)}}},
            )
        },
        "/api/orders/{order_id}": {
            "parameters": [ORDER_ID],
            "get": operation(
                "getOrder",
                "The current order.",
                ORDER_SECURITY,
                {"200": json_body("The order.", Order), **order_errors},
            ),
        },
        "/api/orders/{order_id}/wait": {
            "parameters": [ORDER_ID],
            "get": operation(
                "waitForOrder",
                "Long poll: answer when the order moves past `since`, or on timeout.",
                ORDER_SECURITY,
                {
                    "200": json_body(
                        "The order, whether it changed, how we learnt it.", WaitAnswer
                    ),
                    **errors(400),
                    **order_errors,
                },
                parameters=parameters(WaitQuery, "query"),
            ),
        },
        "/api/orders/{order_id}/events": {
            "parameters": [ORDER_ID],
            "get": operation(
                "orderEvents",
                "Server-Sent Events of the order: buffered events newer than Last-Event-ID, "
                "then live ones, until a terminal one.",
                ORDER_SECURITY,
                {
                    "200": event_stream(
                        "The order's states, each version once and in order (`id:` is the "
                        "version).",
                        {"order_status": Order},
                    ),
                    "204": {"description": "Settled, and the client has its last event."},
                    **errors(400),
                    **order_errors,
                },
                parameters=LAST_EVENT_ID,
            ),
        },
        "/api/orders/{order_id}/ws": {
            "parameters": [ORDER_ID],
            "get": operation(
                "orderSocket",
                "WebSocket of the order's events: `{type: order_status, payload, id}`.",
                ORDER_SECURITY,
                {
                    "101": {"description": "Switching to the WebSocket protocol."},
                    **errors(400),
                    **order_errors,
                },
                description="Upgrades once the token opens the order (else 401/404 before "
                "the upgrade). Sends the buffered events newer than `lastEventId` and the "
                "current state, each version once and in order, then live ones; closes 1000 "
                "after a terminal one, 1001 when the server stops (reconnect with "
                "`lastEventId`). Pings every SSE_HEARTBEAT_INTERVAL.",
                parameters=[*parameters(Handshake, "header"), LAST_EVENT_ID[1]],
            ),
        },
        "/api/payhero/callback": {
            "post": operation(
                "paymentCallback",
                "The payment provider's webhook (idempotent).",
                [],
                {
                    "200": json_body(
                        "Applied, a duplicate, or ignored (the order is already settled).",
                        CallbackOutcome,
                    ),
                    **errors(400, 401, 413, 429, 503),
                    "404": json_body("Unknown ExternalReference.", ErrorBody),
                },
                parameters=[
                    {
                        "name": "X-Webhook-Signature",
                        "in": "header",
                        "required": True,
                        "description": "`sha256=<hex HMAC-SHA256 of the raw body with "
                        "WEBHOOK_SECRET>`, hex in either case; missing or wrong: 401, "
                        "nothing changes, and the refusal is audited.",
                        "schema": {"type": "string", "pattern": "^sha256=[0-9a-fA-F]{64}$"},
                    }
                ],
                requestBody={
                    "required": True,
                    "description": "Taken whatever the Content-Type: the signature decides.",
                    "content": {JSON: {"schema": ref(CallbackBody)}},
                },
            )
        },
        "/api/admin/stats": {
            "get": operation(
                "adminStats",
                "Statistics snapshot.",
                ADMIN_SECURITY,
                {"200": json_body("The statistics.", Stats), **admin_errors, **errors(503)},
            )
        },
        "/api/admin/stats/refresh": {
            "post": operation(
                "adminStatsRefresh",
                "Recompute the statistics, cache and publish them.",
                ADMIN_SECURITY,
                {"200": json_body("The fresh statistics.", Stats), **admin_errors, **errors(503)},
            )
        },
        "/api/admin/stats/stream": {
            "get": operation(
                "adminStatsStream",
                "The statistics as they change.",
                ADMIN_SECURITY,
                {
                    "200": event_stream(
                        "The statistics now, then on every change (sampled) and every 30 s.",
                        {"sync": Stats},
                    ),
                    **errors(400),
                    **admin_errors,
                },
                parameters=LAST_EVENT_ID,
            )
        },
        "/api/services/status/stream": {
            "get": operation(
                "servicesStatusStream",
                "Every background service's status, then its changes.",
                ADMIN_SECURITY,
                {
                    "200": event_stream(
                        "`status`: every service, first; then `service`: one that changed.",
                        {"status": None, "service": None},
                    ),
                    **errors(400),
                    **admin_errors,
                },
                parameters=LAST_EVENT_ID,
            )
        },
        "/api/realtime/stats": {
            "get": operation(
                "realtimeStats",
                "This worker's open connections and hub counts.",
                ADMIN_SECURITY,
                {"200": json_body("Connection and hub counts.", RealtimeStats), **admin_errors},
            )
        },
        "/api/dev/orders/{order_id}/simulate": {
            "parameters": [ORDER_ID],
            "post": operation(
                "simulatePayment",
                "Development only (DEV_SIMULATE_PROVIDER): play the provider.",
                ORDER_SECURITY,
                {
                    "200": json_body("The webhook's answer.", CallbackOutcome),
                    **errors(400, 401, 404, 413, 415, 429, 503),
                },
                description="Signs a provider callback for the order and posts it to this "
                "app's own webhook; answers with the webhook's answer.",
                requestBody={
                    "required": True,
                    "content": {JSON: {"schema": ref(SimulateRequest)}},
                },
                **{DEV_ONLY: True},
            ),
        },
        "/healthz": {
            "get": operation("healthz", "Liveness.", [], {"200": json_body("Alive.", Health)})
        },
        "/readyz": {
            "get": operation(
                "readyz",
                "Readiness: database and Redis; Redis down is degraded but ready.",
                [],
                {
                    "200": json_body("Ready (ok or degraded).", Readiness),
                    "503": json_body("The database is down.", Readiness),
                },
            )
        },
        "/metrics": {
            "get": operation(
                "metrics",
                "Prometheus metrics, summed over the server's workers.",
                [],
                {
                    "200": {
                        "description": "Prometheus text exposition format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            )
        },
        "/openapi.json": {
            "get": operation(
                "openapi",
                "This document.",
                [],
                {
                    "200": {
                        "description": "The OpenAPI document.",
                        "content": {JSON: {"schema": {"type": "object"}}},
                    }
                },
            )
        },
        "/checkout": page("checkoutPage", "Page: checkout."),
        "/orders/{order_id}": {
            "parameters": [ORDER_ID],
            **page("orderPage", "Page: an order's status (its script holds the token)."),
        },
        "/admin": page("adminPage", "Page: the admin dashboard (its script asks for the token)."),
        "/favicon.ico": {
            "get": operation(
                "favicon",
                "The icon (SVG).",
                [],
                {"200": {"description": "The icon.", "content": {"image/svg+xml": {"schema": {}}}}},
            )
        },
    }


@cache
def full_document() -> dict:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Order status long polling",
            "version": "1.0.0",
            "description": "Orders, their realtime status (long poll, Server-Sent Events, "
            "WebSocket), the payment provider's webhook, admin statistics and the browser "
            "pages. Every error is JSON `{success: false, error}` (with `errors: [{field, "
            "message}]` for bad input): a 4xx for bad input (404 for an unknown path, 405 "
            "with Allow for a method a path does not have), a 5xx only for a real fault.",
        },
        "paths": paths(),
        "components": {
            "schemas": schemas(),
            "responses": {
                name: json_body(description, ErrorBody, **({"headers": hs} if hs else {}))
                for name, description, hs in ERRORS.values()
            },
            "securitySchemes": SECURITY_SCHEMES,
        },
    }


def document(app) -> dict:
    """The document as this app serves it: development-only operations only where they
    exist."""
    spec = copy.deepcopy(full_document())
    if app.config.get("DEV_SIMULATE_PROVIDER"):
        return spec
    for path, item in list(spec["paths"].items()):
        for method in [m for m, op in item.items() if isinstance(op, dict) and op.get(DEV_ONLY)]:
            del item[method]
        if not any(isinstance(op, dict) and "responses" in op for op in item.values()):
            del spec["paths"][path]
    spec["paths"]["/api/orders"]["post"]["responses"]["201"]["links"].pop("SimulatePayment")
    return spec


@bp.get("/openapi.json")
def openapi():
    return jsonify(current_app.extensions["openapi.document"])


def init_app(app) -> None:
    app.extensions["openapi.document"] = document(app)
    app.register_blueprint(bp)
