"""From the `alerts.notifiers` settings to ready notifiers, all sharing one HTTP client."""

from __future__ import annotations

import httpx

from ..settings import AlertmanagerSpec, LogSpec, NotifierSpec, PagerDutySpec, SlackSpec, WebhookSpec
from ._alertmanager import AlertmanagerNotifier
from ._base import Notifier
from ._log import LogNotifier
from ._pagerduty import PagerDutyNotifier
from ._slack import SlackNotifier
from ._webhook import WebhookNotifier

__all__ = ["build_notifiers"]


def build_notifiers(specs: list[NotifierSpec], client: httpx.Client) -> dict[str, Notifier]:
    """One notifier per spec, by name, in configuration order.

    URLs and secrets are checked by the settings schema, so check-config, run-once and serve
    refuse the same configurations.
    """
    return {spec.name: _build(spec, client) for spec in specs}


def _build(spec: NotifierSpec, client: httpx.Client) -> Notifier:
    if isinstance(spec, WebhookSpec):
        return WebhookNotifier(spec, client)
    if isinstance(spec, SlackSpec):
        return SlackNotifier(spec, client)
    if isinstance(spec, PagerDutySpec):
        return PagerDutyNotifier(spec, client)
    if isinstance(spec, AlertmanagerSpec):
        return AlertmanagerNotifier(spec, client)
    if isinstance(spec, LogSpec):
        return LogNotifier(spec)
    raise TypeError(f"unknown notifier settings {type(spec).__name__}")  # the schema prevents this
