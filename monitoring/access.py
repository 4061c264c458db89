"""Who may see the dashboard: holders of the endpoint's API key.

Learners' scores and errors are on every panel, so the dashboard asks for the same key as the
scoring endpoint (one secret to hand out and rotate). A browser logs in once on ``/login``; the
answer sets a session cookie (HttpOnly, SameSite=Strict, Secure under TLS) whose value is an HMAC
of the key, not the key itself: rotating the key ends every session. Scripts send the key as
``X-API-Key`` or ``Authorization: Bearer``. ``/healthz`` and ``/login`` stay open.
"""

from __future__ import annotations

import hashlib
import hmac
from html import escape

SESSION_COOKIE = "learnscore_dashboard"
OPEN_PATHS = frozenset({"/healthz", "/login"})


def session_token(api_key: str) -> str:
    """The cookie value for a session opened with ``api_key``.

    >>> session_token("k" * 32) == session_token("k" * 32), session_token("k" * 32) == session_token("j" * 32)
    (True, False)
    """
    return hmac.new(api_key.encode("utf-8"), b"learnscore dashboard session", hashlib.sha256).hexdigest()


def same_secret(presented: str | None, expected: str) -> bool:
    """Constant-time comparison (timing tells nothing about the right value).

    >>> same_secret("a", "a"), same_secret("b", "a"), same_secret(None, "a")
    (True, False, False)
    """
    return presented is not None and hmac.compare_digest(presented.encode("utf-8"), expected.encode("utf-8"))


def presented_key(headers) -> str | None:
    """The key a script sent: ``X-API-Key`` or ``Authorization: Bearer <key>``.

    >>> presented_key({"authorization": "Bearer abc"}), presented_key({"x-api-key": " k "}), presented_key({})
    ('abc', 'k', None)
    """
    if headers.get("x-api-key"):
        return headers["x-api-key"].strip()
    scheme, _, credentials = (headers.get("authorization") or "").strip().partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" and credentials.strip() else None


def allowed(headers, cookies, api_key: str) -> bool:
    """Whether a request carries the key or a session opened with it."""
    return (same_secret(cookies.get(SESSION_COOKIE), session_token(api_key))
            or same_secret(presented_key(headers), api_key))


def login_page(message: str = "") -> str:
    """The login form (the key as a password field, posted to ``/login``)."""
    note = f'<p class="error">{escape(message)}</p>' if message else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>learnscore dashboard: log in</title>
<style>body{{font-family:system-ui,sans-serif;max-width:28rem;margin:4rem auto}}
input{{width:100%;padding:.4rem;margin:.4rem 0}} .error{{color:#b00020}}</style></head>
<body><h1>learnscore dashboard</h1>
<p>The panels show learners' records: log in with the scoring endpoint's API key.</p>{note}
<form method="post" action="/login"><label for="key">API key</label>
<input id="key" name="key" type="password" autocomplete="current-password" required autofocus>
<input type="submit" value="Log in"></form></body></html>"""
