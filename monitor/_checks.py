"""Tiny value checks that several layers share (no dependencies beyond the standard library)."""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterable
from typing import TypeVar

__all__ = ["HEX_ID", "duplicates"]

H = TypeVar("H", bound=Hashable)

# Run ids and delivery ids: uuid.uuid4().hex, 32 lowercase hex digits.
HEX_ID = re.compile(r"[0-9a-f]{32}")


def duplicates(values: Iterable[H]) -> list[H]:
    """The values that occur more than once, each once, in the order they repeat."""
    seen: set[H] = set()
    repeated: dict[H, None] = {}
    for value in values:
        if value in seen:
            repeated[value] = None
        seen.add(value)
    return list(repeated)
