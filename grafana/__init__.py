"""The persistence-monitor Grafana dashboard, generated from code (`python -m grafana.dashboard`).

Not part of the installed `monitor` package: it lives beside it in the repository, like `deploy/`,
and needs `grafana-foundation-sdk` (imported as `grafana_foundation_sdk`, so no name clash).
"""
