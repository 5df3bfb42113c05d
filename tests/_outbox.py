"""The notification outbox in dispatcher tests: notifiers built from their settings, one event
enqueued, one item read back."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from monitor.notifiers import Notifier, build_notifiers
from monitor.settings import AlertsSettings
from monitor.store import Store
from tests._receivers import alert_event

__all__ = ["enqueue", "item", "notifiers"]


def notifiers(client: httpx.Client, *specs: dict[str, Any]) -> dict[str, Notifier]:
    return build_notifiers(AlertsSettings.model_validate({"notifiers": list(specs)}).notifiers, client)


def enqueue(store: Store, notifier: str, event: dict[str, Any] | None = None) -> str:
    item_id = uuid.uuid4().hex
    store.write_alerts([], [(item_id, notifier, event or alert_event())])
    return item_id


def item(store: Store, item_id: str) -> Any:
    return next(i for i in store.outbox_items(limit=1000) if i.id == item_id)
