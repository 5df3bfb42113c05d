"""Small pieces every rendering of an event shares: JSON bytes, numbers, the headline, contributors."""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["fmt_number", "headline", "json_body", "top_contributors", "truncate"]


def json_body(document: Any) -> bytes:
    """Compact UTF-8 JSON; NaN and infinities become null (they are not JSON)."""
    return json.dumps(_finite(document), separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
        "utf-8"
    )


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def fmt_number(value: Any, digits: int = 3) -> str:
    """A score as people read it ("0.810"); "n/a" when there is none."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return f"{value:.{digits}f}"
    return "n/a"


def headline(event: dict[str, Any]) -> str:
    """One line: `[FIRING] <summary>` or `[RESOLVED] <summary>`."""
    tag = "[RESOLVED]" if event.get("kind") == "resolved" else "[FIRING]"
    summary = str(event.get("summary") or f"{event.get('alert')} for {event.get('model')}")
    return f"{tag} {' '.join(summary.split())}"


def top_contributors(event: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """The `count` cells that moved P(M) the most (largest absolute contribution first)."""
    cells = [c for c in event.get("contributors") or [] if isinstance(c, dict)]

    def size(cell: dict[str, Any]) -> float:
        value = cell.get("contribution")
        return abs(value) if isinstance(value, int | float) and math.isfinite(value) else 0.0

    return sorted(cells, key=size, reverse=True)[:count]


def truncate(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, marked with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
