"""Notifiers (DESIGN.md §3.6): alert events to webhooks, Slack, PagerDuty, Alertmanager or the log,
delivered from the store's outbox by the `Dispatcher` with retries that survive restarts.

    notifiers = build_notifiers(settings.alerts.notifiers, client)   # one shared httpx.Client
    dispatcher = Dispatcher(store, notifiers)
    dispatcher.run(stop)          # the daemon's background thread
    dispatcher.drain(timeout=30)  # run-once: deliver what it can, bounded

A notifier's `send` delivers once or raises `DeliveryError` (retryable or not, with the receiver's
Retry-After); its messages name receivers by redacted URLs and never contain a secret.
"""

from ._alertmanager import AlertmanagerNotifier
from ._base import SEVERITIES, DeliveryError, Notifier, severity_rank
from ._build import build_notifiers
from ._dispatcher import Dispatcher, OutboxStore
from ._http import USER_AGENT, new_http_client, parse_retry_after
from ._log import LogNotifier
from ._pagerduty import PagerDutyNotifier, dedup_key, pagerduty_event
from ._slack import SlackNotifier, slack_message
from ._webhook import WebhookNotifier, sign

__all__ = [
    "SEVERITIES",
    "USER_AGENT",
    "AlertmanagerNotifier",
    "DeliveryError",
    "Dispatcher",
    "LogNotifier",
    "Notifier",
    "OutboxStore",
    "PagerDutyNotifier",
    "SlackNotifier",
    "WebhookNotifier",
    "build_notifiers",
    "dedup_key",
    "new_http_client",
    "pagerduty_event",
    "parse_retry_after",
    "severity_rank",
    "sign",
    "slack_message",
]
