"""Generic webhooks, signed the Standard Webhooks way (https://www.standardwebhooks.com/).

The body is the event document itself. `webhook-id` is the delivery id, the same on every retry,
so that a receiver can drop duplicates; `webhook-timestamp` is when this attempt was signed, so
that a receiver can refuse replays; `webhook-signature` is `v1,<base64 HMAC-SHA256>` over
`{id}.{timestamp}.{body}` with the key from the `whsec_<base64>` secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from typing import Any

import httpx

from ..settings import WebhookSpec, webhook_key
from ._base import NotifierBase
from ._http import HttpTarget, post
from ._render import json_body

__all__ = ["WebhookNotifier", "sign"]


def sign(key: bytes, delivery_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: `v1,` and the base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`."""
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode("ascii")


class WebhookNotifier(NotifierBase):
    """POSTs the event document as JSON, with Standard Webhooks headers."""

    kind = "webhook"

    def __init__(
        self,
        spec: WebhookSpec,
        client: httpx.Client,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(
            name=spec.name, min_severity=spec.min_severity, max_age=spec.max_age, timeout=spec.timeout
        )
        secret = spec.secret.get_secret_value() if spec.secret is not None else None
        # Decoded once, here: a bad secret is a configuration error, found before any alert.
        self._key = webhook_key(secret) if secret is not None else None
        hidden = [secret, secret.removeprefix("whsec_")] if secret else []
        self._target = HttpTarget.for_url(spec.url, timeout=spec.timeout, secrets=hidden)
        self._client = client
        self._clock = clock

    def send(self, event: dict[str, Any], *, delivery_id: str) -> None:
        """POST the event; raises `DeliveryError` unless the receiver answers 2xx."""
        body = json_body(event)
        timestamp = int(self._clock())
        headers = {
            "content-type": "application/json",
            "webhook-id": delivery_id,
            "webhook-timestamp": str(timestamp),
        }
        if self._key is not None:
            headers["webhook-signature"] = sign(self._key, delivery_id, timestamp, body)
        post(self._client, self._target, body, headers=headers)
