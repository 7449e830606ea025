"""The provider's webhook endpoint, as a Flask route and as plain WSGI in front of Flask
(app/plain_wsgi.py): the plain one serves it, the Flask one cross-origin requests."""

import re

from flask import jsonify, request
from werkzeug.http import parse_options_header
from werkzeug.wsgi import get_content_length, get_input_stream

from app.plain_wsgi import PlainRoute
from app.security import JSON_BODY_REQUIRED, UnsupportedMediaType

from . import bp, services

SIGNATURE_HEADER = "X-Webhook-Signature"
SIGNATURE_ENVIRON_KEY = "HTTP_" + SIGNATURE_HEADER.upper().replace("-", "_")


@bp.post("/callback")
def callback():
    outcome = services.receive(
        request.get_data(cache=False), request.headers.get(SIGNATURE_HEADER), request.remote_addr
    )
    return jsonify(outcome.to_json())


class CallbackRoute(PlainRoute):
    """`POST /api/payhero/callback`, with the body checks Flask applies to it."""

    path = re.compile(re.escape(bp.url_prefix + "/callback"))
    method = "POST"

    def serve(self, match, environ, start_response):
        has_body = get_content_length(environ) or environ.get("HTTP_TRANSFER_ENCODING")
        mimetype = parse_options_header(environ.get("CONTENT_TYPE", ""))[0].lower()
        if has_body and mimetype != "application/json":
            raise UnsupportedMediaType(JSON_BODY_REQUIRED)
        # A body over MAX_CONTENT_LENGTH raises werkzeug's 413, as Flask's get_data does.
        stream = get_input_stream(environ, max_content_length=self.app.config["MAX_CONTENT_LENGTH"])
        outcome = services.receive(
            stream.read(),
            environ.get(SIGNATURE_ENVIRON_KEY),
            environ.get("REMOTE_ADDR"),
        )
        return self.json(start_response, outcome.to_json())
