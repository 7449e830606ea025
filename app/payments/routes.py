"""The provider's webhook endpoint, a plain route (app/plain_wsgi.py): the provider calls it
once per payment, and a flash sale's worth of them must not wait behind Flask's machinery."""

from app.plain_wsgi import plain_route
from app.responses import Response, json_response
from app.security import read_body

from . import services

SIGNATURE_HEADER = "X-Webhook-Signature"
SIGNATURE_ENVIRON_KEY = "HTTP_" + SIGNATURE_HEADER.upper().replace("-", "_")


@plain_route("POST", "/api/payhero/callback")
def callback(environ) -> Response:
    # Whatever the Content-Type (providers send text/plain, or none): the signature decides,
    # then the body must parse as JSON.
    outcome = services.receive(
        lambda: read_body(environ),
        environ.get(SIGNATURE_ENVIRON_KEY),
        environ.get("REMOTE_ADDR"),
    )
    return json_response(outcome.to_json())
