"""The OpenAPI document: valid, served, and true to the routes the app really has."""

import re

import pytest
from openapi_spec_validator import validate

from app.openapi import DEV_ONLY, document, full_document

SPEC = full_document()

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
    validate(document(make_app(DEV_SIMULATE_PROVIDER=dev)))


@pytest.mark.parametrize("dev", [False, True], ids=["production", "dev-simulate"])
def test_every_route_is_documented_and_every_documented_route_exists(make_app, dev):
    app = make_app(DEV_SIMULATE_PROVIDER=dev)
    routes, spec = routed(app), documented(document(app))
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
    assert dev_paths <= set(document(make_app(DEV_SIMULATE_PROVIDER=True))["paths"])
    assert not dev_paths & set(document(make_app(DEV_SIMULATE_PROVIDER=False))["paths"])


def test_every_operation_documents_its_responses_and_errors_share_one_schema():
    error_ref = "#/components/schemas/ErrorBody"
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
    error = SPEC["components"]["schemas"]["ErrorBody"]
    assert error["required"] == ["success", "error"]
    assert error["properties"]["success"]["const"] is False


def test_the_schemas_are_generated_from_the_models_with_json_schema_keywords_only():
    """Constraints pydantic cannot translate would appear as its own keys (ge, le, ...), which
    no OpenAPI reader enforces."""
    foreign = {"ge", "le", "gt", "lt", "min_length", "max_length", "multiple_of", "strict"}

    def keys(node):
        if isinstance(node, dict):
            yield from node
            for value in node.values():
                yield from keys(value)
        elif isinstance(node, list):
            for value in node:
                yield from keys(value)

    schemas = SPEC["components"]["schemas"]
    assert not foreign & set(keys(schemas))
    order = schemas["NewOrder"]["properties"]
    assert (order["amount"]["minimum"], order["amount"]["maximum"]) == (0.01, 10_000_000)
    assert (order["ticketCount"]["minimum"], order["ticketCount"]["maximum"]) == (1, 100)
    code = schemas["StkResponse"]["properties"]["ResultCode"]["anyOf"][0]
    assert (code["minimum"], code["maximum"]) == (-(2**31), 2**31 - 1)
    webhook = SPEC["paths"]["/api/payhero/callback"]["post"]["parameters"]
    assert [p["name"] for p in webhook if p["in"] == "header"] == ["X-Webhook-Signature"]
    wait = SPEC["paths"]["/api/orders/{order_id}/wait"]["get"]["parameters"]
    assert {p["name"] for p in wait} == {"timeout", "since"}
    assert all("null" not in str(p["schema"]) for p in wait)


def test_every_429_and_503_declares_retry_after_and_every_405_allow():
    responses = SPEC["components"]["responses"]
    for name in ("TooManyRequests", "ServiceUnavailable"):
        assert responses[name]["headers"]["Retry-After"]["required"] is True
    assert responses["MethodNotAllowed"]["headers"]["Allow"]["required"] is True


def test_a_created_order_links_to_its_endpoints():
    links = SPEC["paths"]["/api/orders"]["post"]["responses"]["201"]["links"]
    operations = {
        op["operationId"]
        for item in SPEC["paths"].values()
        for method, op in item.items()
        if method in HTTP_METHODS
    }
    assert {"getOrder", "waitForOrder", "orderEvents"} <= {
        link["operationId"] for link in links.values()
    }
    for link in links.values():
        assert link["operationId"] in operations
        assert link["parameters"]["order_id"] == "$response.body#/orderId"


@pytest.mark.parametrize("dev", [False, True], ids=["production", "dev-simulate"])
def test_get_openapi_json_serves_the_spec(make_app, dev):
    app = make_app(DEV_SIMULATE_PROVIDER=dev)
    response = app.test_client().get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_json() == document(app)
    validate(response.get_json())
