"""Pseudonymisation of learner ids: one keyed hash, used by every part that writes BI-facing rows.

A keyed hash (HMAC-SHA256) rather than a plain hash: learner ids are guessable, so without the
key anyone could hash candidate ids and re-identify rows. The key comes from
``learnscore.core.config.Secrets(config).pseudonym_key``; rotating it changes every pseudonym.
"""

from __future__ import annotations

import hashlib
import hmac


def pseudonymise(learner_id: str, key: str) -> str:
    """The pseudonym of ``learner_id`` under ``key``: HMAC-SHA256, 64 lowercase hex digits.

    Deterministic (the same learner gets the same pseudonym in every table and run), and
    useless without the key.

    >>> pseudonymise("learner-42", "k" * 32)
    '65e1cb5e90a4e56e87fc5bb9567f28e83c14127c4557cca56135cfdeae458ff3'
    >>> pseudonymise("learner-42", "k" * 32) == pseudonymise("learner-43", "k" * 32)
    False
    """
    if not isinstance(learner_id, str):
        raise TypeError(f"learner_id must be a string, got {type(learner_id).__name__}")
    return hmac.new(key.encode("utf-8"), learner_id.encode("utf-8"), hashlib.sha256).hexdigest()
