"""The HTTP API: metrics, probes, the status page and /api/v1 (DESIGN.md §3.4)."""

from ._app import Controller, create_app
from ._status_page import render_status_page

__all__ = ["Controller", "create_app", "render_status_page"]
