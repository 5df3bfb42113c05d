"""Slack incoming webhooks: a one-line `text` (what notifications and search show) plus blocks.

The webhook URL is itself the credential (anyone holding it can post to the channel), so it is
shown only as `https://hooks.slack.com/…` and scrubbed from anything Slack says back.
"""

from __future__ import annotations

from typing import Any

import httpx

from ..settings import SlackSpec
from ._base import NotifierBase
from ._http import HttpTarget, post
from ._render import fmt_number, headline, json_body, top_contributors, truncate

__all__ = ["SlackNotifier", "slack_message"]

# Slack's limits (https://api.slack.com/reference/block-kit/blocks): a message holds at most 50
# blocks, a section's text at most 3000 characters, a field at most 2000, a context 10 elements.
_TEXT_LIMIT = 3000
_FIELD_LIMIT = 2000
_CONTRIBUTORS = 5  # enough to point at the cause; the status page has the rest


def _escape(text: str) -> str:
    """Slack mrkdwn control characters (https://api.slack.com/reference/surfaces/formatting)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _mrkdwn(text: str, limit: int = _TEXT_LIMIT) -> dict[str, str]:
    return {"type": "mrkdwn", "text": truncate(text, limit)}


def slack_message(event: dict[str, Any]) -> dict[str, Any]:
    """The incoming-webhook payload for one event: `text` and at most four blocks."""
    resolved = event.get("kind") == "resolved"
    tag = "RESOLVED" if resolved else "FIRING"
    alert, model = _escape(str(event.get("alert"))), _escape(str(event.get("model")))
    title = f"*[{tag}] {alert}* on `{model}` ({_escape(str(event.get('severity')))})"
    summary = _escape(str(event.get("summary") or ""))
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": _mrkdwn(f"{title}\n{summary}" if summary else title)}
    ]

    fields = [
        ("P(M)", fmt_number(event.get("value"))),
        ("Baseline", fmt_number(event.get("baseline"))),
        ("Threshold", fmt_number(event.get("threshold"))),
        ("Rule", _escape(str(event.get("rule_kind") or "n/a"))),
    ]
    if event.get("model_version"):
        fields.append(("Model version", f"`{_escape(str(event['model_version']))}`"))
    if event.get("run_id"):
        fields.append(("Run", f"`{_escape(str(event['run_id']))}`"))
    blocks.append({"type": "section", "fields": [_mrkdwn(f"*{k}*\n{v}", _FIELD_LIMIT) for k, v in fields]})

    cells = top_contributors(event, _CONTRIBUTORS)
    if cells:
        lines = ["*Cells that moved P(M) the most*"]
        for cell in cells:
            where = " / ".join(_escape(str(cell.get(k))) for k in ("task", "dataset", "strategy"))
            snapshot = f" @ {_escape(str(cell['snapshot']))}" if cell.get("snapshot") else ""
            change = cell.get("contribution")
            delta = f"{change:+.4f}" if isinstance(change, int | float) else "n/a"
            lines.append(
                f"• `{where}`{snapshot}: {fmt_number(cell.get('before'))} → "
                f"{fmt_number(cell.get('after'))} ({delta})"
            )
        blocks.append({"type": "section", "text": _mrkdwn("\n".join(lines))})

    context = [f"since {_escape(str(event.get('started_at')))}"]
    if event.get("episode"):
        context.append(f"episode `{_escape(str(event['episode']))}`")
    url = event.get("status_url")
    if isinstance(url, str) and url.startswith(("http://", "https://")) and not set("<>|") & set(url):
        context.append(f"<{url}|status page>")
    blocks.append({"type": "context", "elements": [_mrkdwn(" · ".join(context))]})

    return {"text": truncate(headline(event), _TEXT_LIMIT), "blocks": blocks}


class SlackNotifier(NotifierBase):
    """Posts each event to a Slack incoming webhook."""

    kind = "slack"

    def __init__(self, spec: SlackSpec, client: httpx.Client) -> None:
        super().__init__(
            name=spec.name, min_severity=spec.min_severity, max_age=spec.max_age, timeout=spec.timeout
        )
        self._target = HttpTarget.for_url(spec.url.get_secret_value(), timeout=spec.timeout, secret_path=True)
        self._client = client

    def send(self, event: dict[str, Any], *, delivery_id: str) -> None:
        """POST the message; raises `DeliveryError` unless Slack answers 2xx."""
        body = json_body(slack_message(event))
        post(self._client, self._target, body, headers={"content-type": "application/json"})
