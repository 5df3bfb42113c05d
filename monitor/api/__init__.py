"""The HTTP API: metrics, probes, the status page and /api/v1 (DESIGN.md §3.4)."""

from ._app import Controller, create_app
from ._curves import CellCurves, SeedCurve, cell_curves
from ._run_page import render_run_page
from ._status_page import render_status_page
from ._views import alert_documents

__all__ = [
    "CellCurves",
    "Controller",
    "SeedCurve",
    "alert_documents",
    "cell_curves",
    "create_app",
    "render_run_page",
    "render_status_page",
]
