"""From the `alerts.notifiers` settings to ready notifiers, all sharing one HTTP client."""

from __future__ import annotations

import httpx

from ..errors import ConfigError
from ..settings import NotifierSpec
from ..settings._schema import (
    AlertmanagerNotifier as AlertmanagerSettings,
)
from ..settings._schema import (
    LogNotifier as LogSettings,
)
from ..settings._schema import (
    PagerDutyNotifier as PagerDutySettings,
)
from ..settings._schema import (
    SlackNotifier as SlackSettings,
)
from ..settings._schema import (
    WebhookNotifier as WebhookSettings,
)
from ._alertmanager import AlertmanagerNotifier
from ._base import Notifier
from ._http import check_url
from ._log import LogNotifier
from ._pagerduty import PagerDutyNotifier
from ._slack import SlackNotifier
from ._webhook import WebhookNotifier

__all__ = ["build_notifiers"]


def build_notifiers(specs: list[NotifierSpec], client: httpx.Client) -> dict[str, Notifier]:
    """One notifier per spec, by name, in configuration order.

    Raises `ConfigError` for a setting that only turns out to be unusable here (a `whsec_` secret
    that is not base64), naming the field and never its value.
    """
    notifiers: dict[str, Notifier] = {}
    problems: list[tuple[str, str]] = []
    for index, spec in enumerate(specs):
        where = f"alerts.notifiers[{index}]"
        url = _url(spec)
        reason = check_url(url) if url is not None else None
        if reason is not None:
            problems.append((f"{where}.url", reason))
            continue
        try:
            notifiers[spec.name] = _build(spec, client)
        except ValueError as exc:  # only the webhook secret is checked beyond the schema
            problems.append((f"{where}.secret", str(exc)))
    if problems:
        raise ConfigError(problems)
    return notifiers


def _url(spec: NotifierSpec) -> str | None:
    if isinstance(spec, SlackSettings):
        return spec.url.get_secret_value()
    if isinstance(spec, WebhookSettings | PagerDutySettings | AlertmanagerSettings):
        return spec.url
    return None


def _build(spec: NotifierSpec, client: httpx.Client) -> Notifier:
    if isinstance(spec, WebhookSettings):
        return WebhookNotifier(spec, client)
    if isinstance(spec, SlackSettings):
        return SlackNotifier(spec, client)
    if isinstance(spec, PagerDutySettings):
        return PagerDutyNotifier(spec, client)
    if isinstance(spec, AlertmanagerSettings):
        return AlertmanagerNotifier(spec, client)
    if isinstance(spec, LogSettings):
        return LogNotifier(spec)
    raise TypeError(f"unknown notifier settings {type(spec).__name__}")  # the schema prevents this
