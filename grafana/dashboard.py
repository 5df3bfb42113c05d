"""Generates the persistence-monitor Grafana dashboard with Grafana's foundation SDK.

The committed file `grafana/dashboards/persistence-monitor.json` is this module's output; never
edit it by hand. After changing a panel (the panels and their queries are in `_panels.py`):

    python -m grafana.dashboard            # rewrite the JSON
    python -m grafana.dashboard --check    # exit 1, with a diff summary, if the JSON is stale (CI)

The output is deterministic: stable uid `persistence-monitor`, sorted keys, two-space indent, no
timestamps or version counters, so a regeneration without changes gives no diff.

To use it in Grafana:

- provisioning (docker-compose): `grafana/provisioning/datasources/prometheus.yml` adds a
  Prometheus datasource (uid `prometheus`, http://prometheus:9090) and
  `grafana/provisioning/dashboards/persistence-monitor.yml` loads every JSON file under
  /var/lib/grafana/dashboards, where `grafana/dashboards/` is mounted;
- by hand: Dashboards → New → Import → upload `persistence-monitor.json`, then pick the Prometheus
  datasource in the dashboard's "Data source" picker.

Template variables: `datasource` (a Prometheus datasource), `model` (multi-select with All, the
values of `label_values(persistence_score, model)`), `task` (multi-select with All, from
`label_values(persistence_task_score{model=~"$model"}, task)`), and the hidden constant
`threshold` (default 0.8): the threshold of a `below` rule, drawn on "P(M) per model". No metric
exports rule thresholds, so set it (dashboard settings → Variables, or `BELOW_THRESHOLD` in
`_panels.py`) to your rule's value.

`queries()` lists every PromQL query of the dashboard (panel targets and the annotation), with the
variables as Grafana sees them; `TEMPLATE_VARIABLES` names every variable that can appear in them,
with an example value, and `render()` substitutes them to get plain PromQL for Prometheus's API.
The variable queries of `model` and `task` are Grafana's `label_values()`, not PromQL, and are not
in `queries()`.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard

from ._panels import BELOW_THRESHOLD, DATASOURCE, rows

__all__ = ["OUTPUT", "TEMPLATE_VARIABLES", "UID", "build_dashboard", "main", "queries", "render", "to_json"]

UID = "persistence-monitor"
OUTPUT = Path(__file__).resolve().parent / "dashboards" / "persistence-monitor.json"

# Every variable that appears in `queries()`, with an example value for evaluating the queries
# against Prometheus directly. `model` and `task` are multi-select: Grafana substitutes a regex
# (`.*` for All, `(a|b)` for a selection) and the queries use them only after `=~`.
TEMPLATE_VARIABLES: Mapping[str, str] = {
    "model": ".*",
    "task": ".*",
    "threshold": str(BELOW_THRESHOLD),  # hidden constant variable, used as `vector($threshold)`
    "__rate_interval": "1m",  # Grafana: max(interval + scrape interval, 4 × scrape interval)
    "__range": "1h",  # Grafana: the dashboard's time range
}

_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def _variables() -> list[Builder[dashboard.VariableModel]]:
    everything = dashboard.VariableOption(selected=True, text=["All"], value=["$__all"])
    return [
        dashboard_builders.DatasourceVariable("datasource")
        .label("Data source")
        .description("The Prometheus that scrapes the monitor.")
        .type("prometheus"),
        dashboard_builders.QueryVariable("model")
        .label("Model")
        .description("Models to show (from persistence_score).")
        .datasource(DATASOURCE)
        .query("label_values(persistence_score, model)")
        .refresh(dashboard.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dashboard.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(everything),
        dashboard_builders.QueryVariable("task")
        .label("Task")
        .description("Tasks to show (from persistence_task_score of the selected models).")
        .datasource(DATASOURCE)
        .query('label_values(persistence_task_score{model=~"$model"}, task)')
        .refresh(dashboard.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dashboard.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(everything),
        dashboard_builders.ConstantVariable("threshold")
        .label("below threshold")
        .description("The threshold of the `below` alert rule, drawn on 'P(M) per model'.")
        .value(str(BELOW_THRESHOLD)),
    ]


def _runs_annotation() -> dashboard_builders.AnnotationQuery:
    # A marker where runs finished (any outcome); the counter is read from the store, so it does
    # not reset when the daemon restarts.
    return (
        dashboard_builders.AnnotationQuery()
        .name("Runs")
        .datasource(DATASOURCE)
        .enable(True)
        .icon_color("blue")
        .expr("sum(increase(persistence_runs_total[$__rate_interval])) > 0")
    )


def build_dashboard() -> dict[str, Any]:
    """Builds the dashboard and returns it as Grafana's JSON model (a plain dict)."""
    builder = (
        dashboard_builders.Dashboard("Persistence monitor")
        .uid(UID)
        .description(
            "Is each deployed model still persistent? P(M), its grid of cells, the marginals, the "
            "data snapshots and the health of the persistence-monitor service."
        )
        .tags(["persistence-monitor"])
        .timezone("browser")
        .time("now-7d", "now")
        .refresh("1m")
        .tooltip(dashboard.DashboardCursorSync.CROSSHAIR)
        .editable()
        .annotation(_runs_annotation())
    )
    for variable in _variables():
        builder = builder.with_variable(variable)
    for title, panels in rows():
        builder = builder.with_row(dashboard_builders.Row(title))
        for panel in panels:
            builder = builder.with_panel(panel)
    model = builder.build()
    # Panel ids must be unique within a dashboard; the SDK leaves them at 0.
    for number, item in enumerate(model.panels or [], start=1):
        item.id_val = number
    result: dict[str, Any] = json.loads(json.dumps(model, cls=JSONEncoder))
    return result


def to_json(model: Mapping[str, Any] | None = None) -> str:
    """The committed file's exact text: sorted keys, two-space indent, final newline."""
    return json.dumps(build_dashboard() if model is None else model, indent=2, sort_keys=True) + "\n"


def _panels(model: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows included (rows themselves left out)."""
    found: list[dict[str, Any]] = []
    for panel in model.get("panels", []):
        if panel.get("type") == "row":
            found.extend(panel.get("panels", []))
        else:
            found.append(panel)
    return found


def queries(model: Mapping[str, Any] | None = None) -> list[tuple[str, str]]:
    """(panel title, PromQL expression) for every query of the dashboard, in dashboard order;
    the annotation's title is `annotation: <name>`. Variables are left as Grafana sees them."""
    model = build_dashboard() if model is None else model
    found = [
        (panel["title"], target["expr"])
        for panel in _panels(model)
        for target in panel.get("targets", [])
        if "expr" in target
    ]
    found += [
        (f"annotation: {annotation['name']}", annotation["expr"])
        for annotation in model.get("annotations", {}).get("list", [])
        if "expr" in annotation
    ]
    return found


def render(expr: str, values: Mapping[str, str] = TEMPLATE_VARIABLES) -> str:
    """Substitutes `$name` and `${name}` template variables; an unknown variable is a KeyError."""
    return _VARIABLE.sub(lambda match: values[match.group(1) or match.group(2)], expr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grafana.dashboard", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed JSON is stale")
    parser.add_argument("--output", type=Path, default=OUTPUT, help=f"default: {OUTPUT}")
    args = parser.parse_args(argv)
    fresh = to_json()
    if not args.check:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(fresh, encoding="utf-8")
        print(f"wrote {args.output} ({len(queries())} queries)")
        return 0
    current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
    if current == fresh:
        print(f"{args.output} is up to date")
        return 0
    diff = list(
        difflib.unified_diff(
            current.splitlines(), fresh.splitlines(), "committed", "generated", n=1, lineterm=""
        )
    )
    changed = sum(1 for line in diff if line[:1] in "+-" and line[:3] not in ("+++", "---"))
    print(f"{args.output} differs from a fresh generation ({changed} changed lines):")
    print("\n".join(diff[:40]))
    if len(diff) > 40:
        print(f"... {len(diff) - 40} more diff lines")
    print("run `python -m grafana.dashboard` and commit the result")
    return 1


if __name__ == "__main__":
    sys.exit(main())
