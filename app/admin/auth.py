"""Admin tokens: `Authorization: Bearer <token>` or `?token=`, one of ADMIN_TOKENS."""

import hmac

from flask import current_app

from app.errors import Forbidden, Unauthorized
from app.orders.access import token_from_request


def require_admin(request) -> str:
    """The admin token of the request; 401 when missing, 403 when not an admin token."""
    token = token_from_request(request)
    if not token:
        raise Unauthorized("admin token required (Authorization: Bearer <token> or ?token=)")
    # Compare against every configured token, in constant time each.
    matches = [
        hmac.compare_digest(token.encode(), known.encode())
        for known in current_app.config["ADMIN_TOKENS"]
    ]
    if not any(matches):
        raise Forbidden("not an admin token")
    return token
