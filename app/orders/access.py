"""Order access tokens: random, stored only as a SHA-256 hash, compared in constant time."""

import hashlib
import hmac
import secrets


def new_token() -> tuple[str, str]:
    """Return (token, hash): the token goes to the customer once, the hash to the database."""
    token = secrets.token_urlsafe(24)  # 192 bits
    return token, hash_token(token)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_matches(token: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_token(token), stored_hash)


def token_from_request(request) -> str | None:
    """The order token from `Authorization: Bearer <token>` or `?token=`."""
    return (
        bearer_token(request.headers.get("Authorization", "")) or request.args.get("token") or None
    )


def bearer_token(header: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, if that is what it is."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None
