"""Routes served as plain WSGI in front of Flask, for the requests a worker serves by the
thousand: held waits and the provider's webhook.

Flask's request context, routing, session, limiter and hooks cost more per request than
those routes' own work. A plain route is a function of the WSGI environ (and its path's
parameters) that returns a `Response` (app/responses.py), or a `Held` request that the
long-poll transport answers (app/realtime/longpoll.py). Answers, errors, cross-origin
headers, 405 with `Allow` and preflights follow the one response policy, as Flask's do.
Every other path goes on to Flask.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl

from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import MethodNotAllowed

from app.realtime.longpoll import LongPolls
from app.responses import Cors, Response, error_response


@dataclass(frozen=True)
class PlainRoute:
    method: str
    template: str  # "/api/orders/{order_id}/wait": the path as the OpenAPI document has it
    handler: Callable  # handler(environ, **path_parameters) -> Response | Held


def _pattern(template: str) -> re.Pattern:
    return re.compile(re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template))


def plain_route(method: str, template: str):
    """Make a function a plain route (registered by the factory, app/factory.py)."""

    def decorate(handler: Callable) -> PlainRoute:
        return PlainRoute(method, template, handler)

    return decorate


class PlainRoutes:
    """WSGI middleware: `routes` here, everything else to `next_app`."""

    def __init__(self, app, routes: list[PlainRoute], next_app, cors: Cors, longpolls: LongPolls):
        self.app = app
        self.next_app = next_app
        self.cors = cors
        self.longpolls = longpolls
        by_template: dict[str, dict[str, PlainRoute]] = {}
        for route in routes:
            by_template.setdefault(route.template, {})[route.method] = route
        # Per path: its pattern, its routes by method, and what its Allow header says.
        self._paths = [
            (_pattern(template), methods, ", ".join(sorted({*methods, "OPTIONS"})))
            for template, methods in by_template.items()
        ]

    def templates(self) -> dict[str, set[str]]:
        """Path (OpenAPI form) -> the methods routed here."""
        return {next(iter(m.values())).template: set(m) for _, m, _ in self._paths}

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        for pattern, methods, allowed in self._paths:
            if (match := pattern.fullmatch(path)) is not None:
                return self._serve(environ, start_response, match, methods, allowed)
        return self.next_app(environ, start_response)

    def _serve(self, environ, start_response, match: re.Match, methods: dict, allowed: str):
        headers = self.cors.headers(environ)
        method = environ["REQUEST_METHOD"]
        if method == "OPTIONS":
            extra = (("Allow", allowed), ("Content-Length", "0"), *headers)
            return Response(200, extra, b"").start(start_response)
        route = methods.get(method)
        with self.app.app_context():
            try:
                if route is None:
                    raise MethodNotAllowed(valid_methods=allowed.split(", "))
                answer = route.handler(environ, **match.groupdict())
                if not isinstance(answer, Response):
                    return self.longpolls.serve(answer, environ, start_response, headers)
            except Exception as exc:
                answer = error_response(exc, f"{method} {environ.get('PATH_INFO')}", headers)
            else:
                answer.headers.extend(headers)
        return answer.start(start_response)


def query_args(environ) -> MultiDict:
    return MultiDict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
