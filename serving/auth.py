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


REDACTED = "[redacted]"
_MIN_REDACTED_LENGTH = 8  # a shorter "secret" would blank out ordinary text; such a key is refused anyway


def redact_text(text: str, secret: str) -> str:
    """``text`` with every occurrence of ``secret`` replaced by ``[redacted]``.

    Error messages quote the values a client sent (``'art' is not one of ...``); a client that
    put the API key in a field must not get it back, nor see it land in the request log.

    >>> redact_text("'k-0123456789' is not one of math, reading", "k-0123456789")
    "'[redacted]' is not one of math, reading"
    """
    if len(secret) < _MIN_REDACTED_LENGTH:
        return text
    return text.replace(secret, REDACTED)


def redact_json(body: bytes, secret: str) -> bytes:
    """:func:`redact_text` for a JSON document: the secret as written and as JSON-escaped.

    >>> redact_json(b'{"message": "bad k-0123456789"}', "k-0123456789")
    b'{"message": "bad [redacted]"}'
    """
    if len(secret) < _MIN_REDACTED_LENGTH:
        return body
    import orjson

    for form in {secret.encode("utf-8"), orjson.dumps(secret)[1:-1]}:
        body = body.replace(form, REDACTED.encode())
    return body
