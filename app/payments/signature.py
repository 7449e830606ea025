"""Webhook signatures: `X-Webhook-Signature: sha256=<hex HMAC-SHA256 of the raw body>`."""

import hashlib
import hmac

PREFIX = "sha256="


def sign(body: bytes, secret: str) -> str:
    """The header value a provider sends for `body`."""
    return PREFIX + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def is_valid(body: bytes, header: str | None, secret: str) -> bool:
    """True when the header is the body's signature; an unset secret accepts nothing.

    Providers write the hex digits in either case: the header is compared lowercased, its
    `sha256=` with it (bytes.lower() changes ASCII letters only), still in constant time."""
    if not secret or not header:
        return False
    return hmac.compare_digest(sign(body, secret).encode(), header.strip().encode().lower())
