"""API-key checks for the REST endpoint: which key a request presents, and whether it is right."""

from __future__ import annotations

import hmac


def presented_api_key(x_api_key: str | None, authorization: str | None) -> str | None:
    """The key a client sent, from ``X-API-Key`` or ``Authorization: Bearer <key>``.

    >>> presented_api_key("k1", None)
    'k1'
    >>> presented_api_key(None, "Bearer k2")
    'k2'
    >>> presented_api_key(None, "Basic abc") is None
    True
    """
    if x_api_key:
        return x_api_key.strip()
    if authorization:
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
    return None


def api_key_matches(presented: str | None, expected: str) -> bool:
    """Constant-time comparison, so response timing tells nothing about the right key.

    >>> api_key_matches("secret", "secret"), api_key_matches("secreT", "secret"), api_key_matches(None, "s")
    (True, False, False)
    """
    if presented is None:
        return False
    return hmac.compare_digest(presented.encode("utf-8"), expected.encode("utf-8"))
