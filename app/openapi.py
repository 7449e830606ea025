"""The OpenAPI 3.1 description of the whole HTTP API, served at `GET /openapi.json`.

`SPEC` describes every route the application registers (tests/api/test_openapi.py keeps it true
against `app.url_map` in both directions). The request schemas mirror the validators in
app/orders/schemas.py, app/payments/schemas.py and app/validation.py; the real validators
also trim surrounding whitespace before checking lengths and patterns, which JSON Schema
cannot say, so the documented forms are the canonical ones.

Operations marked `x-dev-only` exist only on apps with DEV_SIMULATE_PROVIDER set;
`spec_for(app)` leaves them out elsewhere.
"""

import copy

from flask import Blueprint, current_app, jsonify

JSON = "application/json"
HTML = "text/html"
SSE = "text/event-stream"
DEV_ONLY = "x-dev-only"

bp = Blueprint("openapi", __name__)


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _response(name: str) -> dict:
    return {"$ref": f"#/components/responses/{name}"}


def _json(description: str, schema: dict) -> dict:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _html(description: str) -> dict:
    return {"description": description, "content": {HTML: {"schema": {"type": "string"}}}}


def _stream(description: str) -> dict:
    return {"description": description, "content": {SSE: {"schema": {"type": "string"}}}}


def _errors(*codes: int) -> dict:
    return {str(code): _response(ERROR_RESPONSES[code][0]) for code in codes}


# status -> (components.responses name, description)
ERROR_RESPONSES = {
    400: ("BadRequest", "Malformed input: the error names the field."),
    401: ("Unauthorized", "Missing credentials (token, or webhook signature)."),
    403: ("Forbidden", "The token is not an admin token."),
    404: (
        "NotFound",
        "Unknown order, or a token that does not open it: the two look the same.",
    ),
    405: ("MethodNotAllowed", "The path exists but not with this method."),
    413: ("PayloadTooLarge", "The request body is larger than the server accepts."),
    415: ("UnsupportedMediaType", "The request body is not application/json."),
    429: (
        "TooManyRequests",
        "Rate limited, or (admin streams) every stream slot of the token is taken.",
    ),
    503: (
        "ServiceUnavailable",
        "The database is unavailable: retry shortly (a provider retries its webhook).",
    ),
}

ORDER_ID = {
    "name": "order_id",
    "in": "path",
    "required": True,
    "description": "The order's id (a UUID). Anything else answers 404 like an unknown order.",
    "schema": {"type": "string"},
}

LAST_EVENT_ID_HEADER = {
    "name": "Last-Event-ID",
    "in": "header",
    "required": False,
    "description": "Sent by EventSource on reconnect: the id of the last event received.",
    "schema": {"type": "string", "pattern": r"^\s*-?[0-9]{1,12}\s*$"},
}

LAST_EVENT_ID_QUERY = {
    "name": "lastEventId",
    "in": "query",
    "required": False,
    "description": "The same as the Last-Event-ID header, for clients that cannot set it.",
    "schema": {"type": "string", "pattern": r"^\s*-?[0-9]{1,12}\s*$"},
}

ORDER_SECURITY = [{"orderBearer": []}, {"orderTokenQuery": []}]
ADMIN_SECURITY = [{"adminBearer": []}, {"adminTokenQuery": []}]
PUBLIC = []

SCHEMAS = {
    "Error": {
        "type": "object",
        "required": ["success", "error"],
        "properties": {
            "success": {"const": False},
            "error": {"type": "string", "minLength": 1},
        },
    },
    "Customer": {
        "type": "object",
        "required": ["email", "firstName", "lastName"],
        "properties": {
            "email": {
                "type": "string",
                "maxLength": 254,
                "pattern": r"^[^@\s]+@[^@\s]+\.[^@\s]+$",
            },
            "firstName": {"type": "string", "minLength": 1, "maxLength": 100, "pattern": r"\S"},
            "lastName": {"type": "string", "minLength": 1, "maxLength": 100, "pattern": r"\S"},
        },
    },
    "NewOrder": {
        "type": "object",
        "required": ["amount", "customer"],
        "properties": {
            "amount": {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 10000000,
                "multipleOf": 0.01,
                "description": "Greater than 0, at most 10,000,000, at most 2 decimal places.",
            },
            "currency": {"type": "string", "pattern": "^[A-Z]{3}$", "default": "KES"},
            "ticketCount": {"type": "integer", "minimum": 1, "maximum": 100, "default": 1},
            "customer": _ref("Customer"),
            "phone": {
                "type": ["string", "null"],
                "maxLength": 16,
                "pattern": r"^\+?\d{9,15}$",
            },
        },
    },
    "Order": {
        "type": "object",
        "required": [
            "orderId",
            "orderNumber",
            "paymentStatus",
            "status",
            "totalAmount",
            "currency",
            "ticketCount",
            "customer",
            "version",
            "updatedAt",
        ],
        "properties": {
            "orderId": {"type": "string", "format": "uuid"},
            "orderNumber": {"type": "string"},
            "paymentStatus": {
                "type": "string",
                "enum": ["processing", "completed", "failed", "cancelled", "expired"],
            },
            "status": {
                "type": "string",
                "enum": ["pending", "paid", "failed", "cancelled", "expired"],
            },
            "totalAmount": {"type": "number"},
            "currency": {"type": "string"},
            "ticketCount": {"type": "integer"},
            "customer": _ref("Customer"),
            "version": {"type": "integer", "minimum": 1},
            "failureReason": {"type": ["string", "null"]},
            "updatedAt": {"type": "string", "format": "date-time"},
        },
    },
    "CreatedOrder": {
        "allOf": [
            _ref("Order"),
            {
                "type": "object",
                "required": ["accessToken"],
                "properties": {
                    "accessToken": {
                        "type": "string",
                        "description": "The order token: shown once, needed for every read.",
                    }
                },
            },
        ]
    },
    "WaitAnswer": {
        "allOf": [
            _ref("Order"),
            {
                "type": "object",
                "required": ["changed", "source"],
                "properties": {
                    "changed": {"type": "boolean"},
                    "source": {
                        "type": "string",
                        "enum": ["cache", "db", "redis", "poll", "timeout"],
                    },
                },
            },
        ]
    },
    "Callback": {
        "type": "object",
        "description": "The PayHero STK callback. ResultCode 0: completed (paid); 1 or 1032: "
        "cancelled; any other: failed. An Amount that differs from the order total never "
        "marks the order paid.",
        "required": ["response"],
        "properties": {
            "status": {"type": "boolean"},
            "response": {
                "type": "object",
                "required": ["ResultCode", "ExternalReference"],
                "properties": {
                    "ResultCode": {
                        "description": "A number, or a numeric string.",
                        "oneOf": [
                            {"type": "integer"},
                            {"type": "string", "pattern": r"^\s*-?[0-9]{1,9}\s*$"},
                        ],
                    },
                    "ExternalReference": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": 32,
                        "pattern": r"\S",
                        "description": "The orderNumber.",
                    },
                    "Amount": {
                        "type": ["number", "null"],
                        "exclusiveMinimum": 0,
                        "maximum": 100000000,
                        "multipleOf": 0.01,
                        "description": "Required when ResultCode is 0.",
                    },
                    "MpesaReceiptNumber": {"type": ["string", "null"], "maxLength": 128},
                    "CheckoutRequestID": {"type": ["string", "null"], "maxLength": 128},
                    "MerchantRequestID": {"type": "string"},
                    "Phone": {"type": "string"},
                    "ResultDesc": {"type": "string"},
                    "Status": {"type": "string"},
                },
                "if": {
                    "properties": {"ResultCode": {"enum": [0, "0"]}},
                    "required": ["ResultCode"],
                },
                "then": {
                    "required": ["Amount"],
                    "properties": {"Amount": {"type": "number"}},
                },
            },
        },
    },
    "CallbackOutcome": {
        "type": "object",
        "required": [
            "success",
            "orderId",
            "paymentStatus",
            "status",
            "version",
            "changed",
            "duplicate",
        ],
        "properties": {
            "success": {"const": True},
            "orderId": {"type": "string"},
            "paymentStatus": {"type": "string"},
            "status": {"type": "string"},
            "version": {"type": "integer"},
            "changed": {"type": "boolean", "description": "This delivery changed the order."},
            "duplicate": {"type": "boolean", "description": "A repeat of the settled outcome."},
            "reason": {"type": ["string", "null"]},
        },
    },
    "SimulateRequest": {
        "type": "object",
        "required": ["outcome"],
        "properties": {"outcome": {"type": "string", "enum": ["success", "cancel", "fail"]}},
    },
    "Stats": {
        "type": "object",
        "required": ["orders", "revenuePaid", "paymentsLastHour", "webhooks", "generatedAt"],
        "properties": {
            "orders": {
                "type": "object",
                "properties": {
                    "byStatus": {"type": "object", "additionalProperties": {"type": "integer"}},
                    "total": {"type": "integer"},
                },
            },
            "revenuePaid": {"type": "number"},
            "paymentsLastHour": {"type": "integer"},
            "meanSecondsToPay": {"type": ["number", "null"]},
            "webhooks": {
                "type": "object",
                "properties": {
                    "received": {"type": "integer"},
                    "duplicated": {"type": "integer"},
                    "rejected": {"type": "integer"},
                },
            },
            "live": {"type": "object", "additionalProperties": {"type": "integer"}},
            "computations": {"type": ["integer", "null"]},
            "generatedAt": {"type": "string"},
            "mode": {"type": "string", "enum": ["pubsub", "db-poll"]},
        },
    },
    "RealtimeStats": {
        "type": "object",
        "required": ["activeConnections", "redis", "connections"],
        "properties": {
            "worker": {"type": "string"},
            "activeConnections": {"type": "integer"},
            "byKind": {"type": "object", "additionalProperties": {"type": "integer"}},
            "redis": {
                "type": "object",
                "properties": {
                    "channels": {"type": "integer"},
                    "handlers": {"type": "integer"},
                    "connected": {"type": "boolean"},
                },
            },
            "connections": {"type": "array", "items": {"type": "object"}},
            "totals": {"type": "object"},
        },
    },
    "Readiness": {
        "type": "object",
        "required": ["status", "checks"],
        "properties": {
            "status": {"type": "string", "enum": ["ok", "degraded", "unavailable"]},
            "checks": {
                "type": "object",
                "properties": {
                    "database": {"type": "string", "enum": ["ok", "down"]},
                    "redis": {"type": "string", "enum": ["ok", "down"]},
                    "pubsub": {"type": "string", "enum": ["connected", "database-polling"]},
                },
            },
            "detail": {
                "type": "object",
                "description": "Each check's latency, and its error when it failed.",
                "additionalProperties": {
                    "type": "object",
                    "required": ["status", "latencyMs"],
                    "properties": {
                        "status": {"type": "string", "enum": ["ok", "down"]},
                        "latencyMs": {"type": "number"},
                        "error": {"type": "string"},
                    },
                },
            },
            "hub": {"type": "object"},
        },
    },
}

SPEC = {
    "openapi": "3.1.0",
    "info": {
        "title": "Order status long polling",
        "version": "1.0.0",
        "description": "Orders, their realtime status (long poll, Server-Sent Events), the "
        "payment provider's webhook, admin statistics and the browser pages. Every error "
        "is JSON `{success: false, error}`: a 4xx for bad input (404 for an unknown path, "
        "405 for a method a path does not have), a 5xx only for a real server fault.",
    },
    "paths": {
        "/api/orders": {
            "post": {
                "operationId": "createOrder",
                "summary": "Create an order (processing / pending, version 1).",
                "security": PUBLIC,
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": _ref("NewOrder")}},
                },
                "responses": {
                    "201": _json("The order, with its access token.", _ref("CreatedOrder")),
                    **_errors(400, 413, 415, 429, 503),
                },
            }
        },
        "/api/orders/{order_id}": {
            "parameters": [ORDER_ID],
            "get": {
                "operationId": "getOrder",
                "summary": "The current order.",
                "security": ORDER_SECURITY,
                "responses": {
                    "200": _json("The order.", _ref("Order")),
                    **_errors(401, 404, 429, 503),
                },
            },
        },
        "/api/orders/{order_id}/wait": {
            "parameters": [ORDER_ID],
            "get": {
                "operationId": "waitForOrder",
                "summary": "Long poll: answer when the order moves past `since`, or on timeout.",
                "security": ORDER_SECURITY,
                "parameters": [
                    {
                        "name": "timeout",
                        "in": "query",
                        "required": False,
                        "description": "Milliseconds to hold (default LONGPOLL_DEFAULT_TIMEOUT_MS"
                        "), clamped to 0..LONGPOLL_MAX_TIMEOUT_MS.",
                        "schema": {"type": "integer", "minimum": 0, "maximum": 120000},
                    },
                    {
                        "name": "since",
                        "in": "query",
                        "required": False,
                        "description": "The version the client has; absent: the version "
                        "current when the wait starts.",
                        "schema": {"type": "integer", "minimum": 0},
                    },
                ],
                "responses": {
                    "200": _json(
                        "The order, whether it changed, and how we learnt it.", _ref("WaitAnswer")
                    ),
                    **_errors(400, 401, 404, 429, 503),
                },
            },
        },
        "/api/orders/{order_id}/events": {
            "parameters": [ORDER_ID],
            "get": {
                "operationId": "orderEvents",
                "summary": "Server-Sent Events of the order (`event: order_status`, id = version).",
                "security": ORDER_SECURITY,
                "parameters": [LAST_EVENT_ID_HEADER, LAST_EVENT_ID_QUERY],
                "responses": {
                    "200": _stream(
                        "Buffered events newer than Last-Event-ID, then live ones, until a "
                        "terminal one; `: heartbeat` comments in between."
                    ),
                    "204": {"description": "Settled, and the client has its last event."},
                    **_errors(400, 401, 404, 429, 503),
                },
            },
        },
        "/api/orders/{order_id}/ws": {
            "parameters": [ORDER_ID],
            "get": {
                "operationId": "orderSocket",
                "summary": "WebSocket of the order's events: `{type: order_status, payload, id}`.",
                "description": "Upgrades to a WebSocket once the token opens the order (else "
                "401/404 before the upgrade). Sends the buffered events newer than "
                "`lastEventId` and the current state, each version once and in order, then "
                "live ones; closes 1000 after a terminal one, 1001 when the server stops "
                "(reconnect with `lastEventId`). Pings every SSE_HEARTBEAT_INTERVAL.",
                "security": ORDER_SECURITY,
                "parameters": [LAST_EVENT_ID_QUERY],
                "responses": {
                    "101": {"description": "Switching to the WebSocket protocol."},
                    **_errors(400, 401, 404, 503),
                },
            },
        },
        "/api/payhero/callback": {
            "post": {
                "operationId": "paymentCallback",
                "summary": "The payment provider's webhook (idempotent).",
                "security": PUBLIC,
                "parameters": [
                    {
                        "name": "X-Webhook-Signature",
                        "in": "header",
                        "required": True,
                        "description": "`sha256=<hex HMAC-SHA256 of the raw body with "
                        "WEBHOOK_SECRET>`; missing or wrong: 401 and nothing changes.",
                        "schema": {"type": "string", "pattern": "^sha256=[0-9a-f]{64}$"},
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": _ref("Callback")}},
                },
                "responses": {
                    "200": _json(
                        "Applied, a duplicate, or ignored (the order is already settled).",
                        _ref("CallbackOutcome"),
                    ),
                    "400": _response("BadRequest"),
                    "401": _response("Unauthorized"),
                    "404": _json("Unknown ExternalReference.", _ref("Error")),
                    **_errors(413, 415, 429, 503),
                },
            }
        },
        "/api/admin/stats": {
            "get": {
                "operationId": "adminStats",
                "summary": "Statistics snapshot.",
                "security": ADMIN_SECURITY,
                "responses": {
                    "200": _json("The statistics.", _ref("Stats")),
                    **_errors(401, 403, 429, 503),
                },
            }
        },
        "/api/admin/stats/refresh": {
            "post": {
                "operationId": "adminStatsRefresh",
                "summary": "Recompute the statistics, cache and publish them.",
                "security": ADMIN_SECURITY,
                "responses": {
                    "200": _json("The fresh statistics.", _ref("Stats")),
                    **_errors(401, 403, 429, 503),
                },
            }
        },
        "/api/admin/stats/stream": {
            "get": {
                "operationId": "adminStatsStream",
                "summary": "SSE: `event: sync` with the statistics, `id:` increasing.",
                "security": ADMIN_SECURITY,
                "parameters": [LAST_EVENT_ID_HEADER, LAST_EVENT_ID_QUERY],
                "responses": {
                    "200": _stream("`event: sync` events and `: heartbeat` comments."),
                    **_errors(400, 401, 403, 429),
                },
            }
        },
        "/api/services/status/stream": {
            "get": {
                "operationId": "servicesStatusStream",
                "summary": "SSE: every background service's status, then increments.",
                "security": ADMIN_SECURITY,
                "parameters": [LAST_EVENT_ID_HEADER, LAST_EVENT_ID_QUERY],
                "responses": {
                    "200": _stream("`event: status` first, then `event: service` events."),
                    **_errors(400, 401, 403, 429),
                },
            }
        },
        "/api/realtime/stats": {
            "get": {
                "operationId": "realtimeStats",
                "summary": "This worker's open connections and hub counts.",
                "security": ADMIN_SECURITY,
                "responses": {
                    "200": _json("Connection and hub counts.", _ref("RealtimeStats")),
                    **_errors(401, 403, 429),
                },
            }
        },
        "/api/dev/orders/{order_id}/simulate": {
            "parameters": [ORDER_ID],
            "post": {
                DEV_ONLY: True,
                "operationId": "simulatePayment",
                "summary": "Development only (DEV_SIMULATE_PROVIDER): play the provider.",
                "description": "Signs a provider callback for the order and posts it to this "
                "app's own webhook; answers with the webhook's answer.",
                "security": ORDER_SECURITY,
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": _ref("SimulateRequest")}},
                },
                "responses": {
                    "200": _json("The webhook's answer.", _ref("CallbackOutcome")),
                    **_errors(400, 401, 404, 413, 415, 429, 503),
                },
            },
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "Liveness.",
                "security": PUBLIC,
                "responses": {
                    "200": _json(
                        "Alive.",
                        {
                            "type": "object",
                            "required": ["status"],
                            "properties": {"status": {"const": "ok"}},
                        },
                    )
                },
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "summary": "Readiness: database and Redis; Redis down is degraded but ready.",
                "security": PUBLIC,
                "responses": {
                    "200": _json("Ready (ok or degraded).", _ref("Readiness")),
                    "503": _json("The database is down.", _ref("Readiness")),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics, summed over the server's workers.",
                "security": PUBLIC,
                "responses": {
                    "200": {
                        "description": "Prometheus text exposition format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document.",
                "security": PUBLIC,
                "responses": {"200": _json("The OpenAPI document.", {"type": "object"})},
            }
        },
        "/checkout": {
            "get": {
                "operationId": "checkoutPage",
                "summary": "Page: checkout.",
                "security": PUBLIC,
                "responses": {"200": _html("The checkout page.")},
            }
        },
        "/orders/{order_id}": {
            "parameters": [ORDER_ID],
            "get": {
                "operationId": "orderPage",
                "summary": "Page: an order's status (its script holds the token).",
                "security": PUBLIC,
                "responses": {"200": _html("The order page.")},
            },
        },
        "/admin": {
            "get": {
                "operationId": "adminPage",
                "summary": "Page: the admin dashboard (its script asks for the token).",
                "security": PUBLIC,
                "responses": {"200": _html("The dashboard page.")},
            }
        },
        "/favicon.ico": {
            "get": {
                "operationId": "favicon",
                "summary": "The icon (SVG).",
                "security": PUBLIC,
                "responses": {
                    "200": {
                        "description": "The icon.",
                        "content": {"image/svg+xml": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    },
    "components": {
        "schemas": SCHEMAS,
        "responses": {
            name: _json(description, _ref("Error"))
            for name, description in ERROR_RESPONSES.values()
        },
        "securitySchemes": {
            "orderBearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "The order's accessToken. Missing: 401; wrong, or unknown "
                "order: 404 (which of the two is not revealed).",
            },
            "orderTokenQuery": {
                "type": "apiKey",
                "in": "query",
                "name": "token",
                "description": "The order's accessToken as `?token=` (EventSource cannot set "
                "headers).",
            },
            "adminBearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "One of ADMIN_TOKENS. Missing: 401; not an admin token: 403.",
            },
            "adminTokenQuery": {
                "type": "apiKey",
                "in": "query",
                "name": "token",
                "description": "One of ADMIN_TOKENS as `?token=`.",
            },
        },
    },
}


def spec_for(app) -> dict:
    """SPEC as this app serves it: development-only operations only where they exist."""
    spec = copy.deepcopy(SPEC)
    if app.config.get("DEV_SIMULATE_PROVIDER"):
        return spec
    for path, item in list(spec["paths"].items()):
        for method in [m for m, op in item.items() if isinstance(op, dict) and op.get(DEV_ONLY)]:
            del item[method]
        if not any(isinstance(op, dict) and "responses" in op for op in item.values()):
            del spec["paths"][path]
    return spec


@bp.get("/openapi.json")
def openapi():
    return jsonify(current_app.extensions["openapi.spec"])


def init_app(app) -> None:
    app.extensions["openapi.spec"] = spec_for(app)
    app.register_blueprint(bp)
