"""The HTTP API: metrics, probes, the status page and /api/v1 (DESIGN.md §3.4)."""

from ._app import Controller, create_app
from ._status_page import render_status_page
from ._views import alert_documents

__all__ = ["Controller", "alert_documents", "create_app", "render_status_page"]
