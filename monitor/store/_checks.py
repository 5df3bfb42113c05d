"""Checks of the values the store writes: a bad value is refused with its name, before any write."""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeGuard

from .._checks import HEX_ID, duplicates

__all__ = [
    "check_aware",
    "check_finite",
    "check_hex_id",
    "check_json",
    "check_name",
    "check_optional_finite",
    "check_unique",
    "is_hex_id",
]


def check_finite(value: object, what: str) -> float:
    """Return `value` as a float, or raise ValueError naming `what` unless it is a finite number.

    (A diverged trial is scored as it is, usually chance level; a cell without a score has None.)
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def check_optional_finite(value: object, what: str) -> float | None:
    """Like `check_finite`, but None passes through (the column is nullable)."""
    return None if value is None else check_finite(value, what)


def check_aware(value: object, what: str) -> datetime:
    """Return `value` if it is a timezone-aware datetime, else raise ValueError."""
    if not isinstance(value, datetime):
        raise ValueError(f"{what} must be a timezone-aware datetime, got {value!r}")
    if value.tzinfo is None:
        raise ValueError(f"{what} must be timezone-aware (UTC), got the naive {value.isoformat()}")
    return value


def is_hex_id(value: object) -> TypeGuard[str]:
    """Whether `value` is 32 lowercase hex digits (a run id, a delivery id: uuid4().hex)."""
    return isinstance(value, str) and HEX_ID.fullmatch(value) is not None


def check_unique(values: list[Any], what: str, where: str) -> None:
    """Raise ValueError naming the first of `values` that appears twice (`where`: "in one run")."""
    repeated = duplicates(values)
    if repeated:
        raise ValueError(f"{what} {repeated[0]!r} appears twice {where}")


def check_hex_id(value: object, what: str) -> str:
    """Return `value` if it is 32 lowercase hex digits (a uuid4().hex), else raise ValueError."""
    if not is_hex_id(value):
        raise ValueError(f"{what} must be 32 lowercase hex digits (uuid.uuid4().hex), got {value!r}")
    return value


def check_name(value: object, what: str, length: int) -> str:
    """Return `value` if it is a string of 1 to `length` characters, else raise ValueError."""
    if not isinstance(value, str) or not 0 < len(value) <= length:
        raise ValueError(f"{what} must be a string of 1 to {length} characters, got {value!r}")
    return value


def check_json(value: object, what: str) -> dict[str, Any]:
    """Return `value` as a dict if it is a mapping that is plain JSON (no NaN), else raise ValueError."""
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} must be a JSON object (a dict), got {type(value).__name__}")
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be plain JSON: {exc}") from None
    return dict(value)
