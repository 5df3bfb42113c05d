"""The exception tree drawn in `monitor.errors` is the real one, and every public error is in it."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import monitor
from monitor import errors
from monitor.errors import MonitorError


def _public_exceptions() -> dict[str, type[BaseException]]:
    """Exception classes a user can reach: in the namespace of a public module or package.

    (Private modules may keep their own signals, e.g. a cache checksum mismatch, as long as
    they are caught where they are raised and never cross a public API.)
    """
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(monitor.__path__, "monitor."):
        if ".migrations" in info.name or any(part.startswith("_") for part in info.name.split(".")):
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__.startswith("monitor")
                and not name.startswith("_")
            ):
                found[f"{value.__module__}.{value.__qualname__}"] = value
    return found


def test_every_public_error_derives_from_monitor_error() -> None:
    exceptions = _public_exceptions()
    assert "monitor.errors.DeliveryError" in exceptions  # (the walk does reach every package)
    strays = sorted(name for name, cls in exceptions.items() if not issubclass(cls, MonitorError))
    assert strays == []
    # ... and each is defined in monitor.errors, where the tree is drawn
    assert {cls.__module__ for cls in exceptions.values()} == {"monitor.errors"}
    assert {n.split(".")[-1] for n in exceptions} == set(errors.__all__)


def test_the_drawn_tree_is_the_class_tree() -> None:
    doc = errors.__doc__ or ""
    drawn: dict[str, str] = {}  # class -> parent, from the docstring's box drawing
    stack: list[tuple[int, str]] = []
    for line in doc.splitlines():
        match = re.match(r"^(\s*)(?:[│ ]*[├└]── )?([A-Z]\w+)\b", line)
        if not match or not (line.strip().startswith(("MonitorError", "├", "└", "│"))):
            continue
        name = match.group(2)
        depth = len(line) - len(line.lstrip(" │├└─"))
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if stack:
            drawn[name] = stack[-1][1]
        stack.append((depth, name))
    real = {
        name: cls.__mro__[1].__name__
        for name in errors.__all__
        if (cls := getattr(errors, name)) is not MonitorError
    }
    assert drawn == real
