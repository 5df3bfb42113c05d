"""Prometheus metrics (DESIGN.md §3.5) on an injected registry: state read from the store at
scrape time, plus the daemon's own process-local counters."""

from ._collector import RUN_DURATION_BUCKETS, ExtraGauges, StoreCollector
from ._daemon import DaemonMetrics

__all__ = ["RUN_DURATION_BUCKETS", "DaemonMetrics", "ExtraGauges", "StoreCollector"]
