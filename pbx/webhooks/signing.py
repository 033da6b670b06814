"""Standard Webhooks signatures (https://www.standardwebhooks.com): the ``webhook-id``,
``webhook-timestamp`` and ``webhook-signature`` headers of a delivery.

The signature is ``v1,`` + base64 HMAC-SHA256 over ``id.timestamp.body`` with the secret's
bytes; a secret is ``whsec_`` + base64 of 32 random bytes. The signing itself is the
``standardwebhooks`` package's (the reference implementation: receivers verify with the same
code).
"""

from __future__ import annotations

import base64
import secrets
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook as _Signer

__all__ = ["SECRET_PREFIX", "headers", "new_secret", "sign"]

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """A fresh endpoint secret (``whsec_`` + base64 of 32 random bytes)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value of ``body`` sent as ``message_id`` at ``timestamp``."""
    return _Signer(secret).sign(message_id, datetime.fromtimestamp(timestamp, UTC), body)


def headers(secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three headers of a delivery (and its content type)."""
    return {"webhook-id": message_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secret, message_id, timestamp, body),
            "Content-Type": "application/json"}
