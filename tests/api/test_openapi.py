"""The OpenAPI document: valid, served, and true to the routes the app really has."""

import re

import pytest
from openapi_spec_validator import validate

from app.openapi import DEV_ONLY, SPEC, spec_for

# Flask adds these to every rule by itself (HEAD answers as GET, OPTIONS lists the methods).
AUTOMATIC = {"HEAD", "OPTIONS"}
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def documented(spec: dict) -> dict[str, set[str]]:
    """path -> the methods the spec documents for it."""
    return {
        path: {method.upper() for method in item if method in HTTP_METHODS}
        for path, item in spec["paths"].items()
    }


def routed(app) -> dict[str, set[str]]:
    """path (in OpenAPI form) -> the methods the app routes for it, but Flask's own."""
    routes: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        # <order_id> and <converter:name> become {order_id} / {name}.
        path = re.sub(r"<(?:[^<>:]+:)?([^<>]+)>", r"{\1}", rule.rule)
        routes.setdefault(path, set()).update(set(rule.methods) - AUTOMATIC)
    for path, methods in app.extensions["plain_routes"].templates().items():
        routes.setdefault(path, set()).update(methods)
    return routes


def test_the_spec_is_valid_openapi():
    validate(SPEC)
    assert SPEC["openapi"].startswith("3.")


@pytest.mark.parametrize("dev", [False, True], ids=["production", "dev-simulate"])
def test_the_served_spec_is_valid_openapi(make_app, dev):
    validate(spec_for(make_app(DEV_SIMULATE_PROVIDER=dev)))


@pytest.mark.parametrize("dev", [False, True], ids=["production", "dev-simulate"])
def test_every_route_is_documented_and_every_documented_route_exists(make_app, dev):
    app = make_app(DEV_SIMULATE_PROVIDER=dev)
    routes, spec = routed(app), documented(spec_for(app))
    undocumented = {p: m - spec.get(p, set()) for p, m in routes.items() if m - spec.get(p, set())}
    missing = {p: m - routes.get(p, set()) for p, m in spec.items() if m - routes.get(p, set())}
    assert not undocumented, f"routes the spec does not describe: {undocumented}"
    assert not missing, f"documented operations the app does not have: {missing}"
    assert routes == spec
    # Every GET rule also answers HEAD and OPTIONS by itself; nothing else is hidden.
    for rule in app.url_map.iter_rules():
        assert set(rule.methods) - AUTOMATIC, rule.rule


def test_development_operations_exist_only_with_the_development_flag(make_app):
    dev_paths = {
        path
        for path, item in SPEC["paths"].items()
        if any(isinstance(op, dict) and op.get(DEV_ONLY) for op in item.values())
    }
    assert dev_paths == {"/api/dev/orders/{order_id}/simulate"}
    assert dev_paths <= set(spec_for(make_app(DEV_SIMULATE_PROVIDER=True))["paths"])
    assert not dev_paths & set(spec_for(make_app(DEV_SIMULATE_PROVIDER=False))["paths"])


def test_every_operation_documents_its_responses_and_errors_share_one_schema():
    error_ref = "#/components/schemas/Error"
    for path, item in SPEC["paths"].items():
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            responses = operation["responses"]
            assert responses, f"{method} {path}"
            assert "security" in operation, f"{method} {path}: say who may call it"
            for status, response in responses.items():
                if not status.startswith("4"):
                    continue
                if "$ref" in response:
                    name = response["$ref"].rpartition("/")[2]
                    response = SPEC["components"]["responses"][name]
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": error_ref}, f"{method} {path} {status}"
    error = SPEC["components"]["schemas"]["Error"]
    assert error["required"] == ["success", "error"]
    assert error["properties"]["success"] == {"const": False}


def test_request_schemas_state_the_real_validation():
    schemas = SPEC["components"]["schemas"]
    order = schemas["NewOrder"]["properties"]
    assert order["amount"]["exclusiveMinimum"] == 0
    assert order["amount"]["maximum"] == 10_000_000
    assert order["amount"]["multipleOf"] == 0.01
    assert order["currency"]["pattern"] == "^[A-Z]{3}$"
    assert (order["ticketCount"]["minimum"], order["ticketCount"]["maximum"]) == (1, 100)
    assert order["phone"]["pattern"] == r"^\+?\d{9,15}$"
    customer = schemas["Customer"]["properties"]
    assert customer["email"]["maxLength"] == 254
    assert customer["firstName"]["maxLength"] == customer["lastName"]["maxLength"] == 100
    callback = schemas["Callback"]["properties"]["response"]
    assert set(callback["required"]) == {"ResultCode", "ExternalReference"}
    assert callback["properties"]["ExternalReference"]["maxLength"] == 32
    webhook = SPEC["paths"]["/api/payhero/callback"]["post"]["parameters"]
    assert [p["name"] for p in webhook if p["in"] == "header"] == ["X-Webhook-Signature"]
    schemes = SPEC["components"]["securitySchemes"]
    assert {s["type"] for s in schemes.values()} == {"http", "apiKey"}
    assert all(s.get("scheme") == "bearer" or s["name"] == "token" for s in schemes.values())
    wait = SPEC["paths"]["/api/orders/{order_id}/wait"]["get"]["parameters"]
    assert {p["name"] for p in wait} == {"timeout", "since"}
    events = SPEC["paths"]["/api/orders/{order_id}/events"]["get"]["parameters"]
    assert "Last-Event-ID" in {p["name"] for p in events}


@pytest.mark.parametrize("dev", [False, True], ids=["production", "dev-simulate"])
def test_get_openapi_json_serves_the_spec(make_app, dev):
    app = make_app(DEV_SIMULATE_PROVIDER=dev)
    response = app.test_client().get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_json() == spec_for(app)
    validate(response.get_json())
