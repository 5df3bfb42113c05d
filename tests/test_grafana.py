"""The Grafana dashboard: generated deterministically, complete, and querying only real metrics."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
import yaml

from grafana.dashboard import OUTPUT, TEMPLATE_VARIABLES, UID, build_dashboard, main, queries, render, to_json

REPO = Path(__file__).resolve().parents[1]
GRAFANA = REPO / "grafana"


@pytest.fixture(scope="module")
def committed() -> dict:
    return json.loads(OUTPUT.read_text(encoding="utf-8"))


def _panels(model: dict) -> list[dict]:
    found = []
    for panel in model["panels"]:
        found.extend(panel.get("panels", []) if panel["type"] == "row" else [panel])
    return found


def _exprs(model: dict) -> list[str]:
    exprs = [t["expr"] for p in _panels(model) for t in p.get("targets", [])]
    return exprs + [a["expr"] for a in model["annotations"]["list"] if "expr" in a]


def test_committed_json_is_a_fresh_generation():
    assert OUTPUT.read_text(encoding="utf-8") == to_json(), "run `python -m grafana.dashboard`"
    assert to_json() == to_json()  # deterministic


def test_check_reports_a_stale_file(tmp_path, capsys):
    path = tmp_path / "dashboard.json"
    assert main(["--output", str(path)]) == 0
    assert main(["--check", "--output", str(path)]) == 0
    path.write_text(path.read_text().replace('"P(M) per model"', '"P(M)"'))
    assert main(["--check", "--output", str(path)]) == 1
    out = capsys.readouterr().out
    assert "differs from a fresh generation (2 changed lines)" in out
    assert re.search(r'^\+ +"title": "P\(M\) per model",$', out, flags=re.MULTILINE)


def test_dashboard_identity_and_variables(committed):
    assert committed["uid"] == UID == "persistence-monitor"
    assert "version" not in committed and "id" not in committed  # Grafana's own counters
    variables = {v["name"]: v for v in committed["templating"]["list"]}
    assert {"datasource", "model", "task"} <= set(variables)
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    model, task = variables["model"], variables["task"]
    assert model["query"] == "label_values(persistence_score, model)"
    assert task["query"] == 'label_values(persistence_task_score{model=~"$model"}, task)'
    for variable in (model, task):
        assert variable["type"] == "query" and variable["includeAll"] and variable["multi"]
        assert variable["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    assert variables["threshold"]["type"] == "constant" and variables["threshold"]["query"] == "0.8"


def test_every_panel_has_a_title_description_unit_and_unique_id(committed):
    rows = [p for p in committed["panels"] if p["type"] == "row"]
    ids = [p["id"] for p in committed["panels"]] + [c["id"] for r in rows for c in r.get("panels", [])]
    assert len(ids) == len(set(ids))
    titles = [p["title"] for p in _panels(committed)]
    assert len(titles) == len(set(titles)) >= 20
    for panel in _panels(committed):
        assert panel["title"] and panel["description"], panel["title"]
        assert panel["fieldConfig"]["defaults"].get("unit"), panel["title"]
        assert isinstance(panel["options"], dict), panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        assert sorted(t["refId"] for t in panel["targets"]) == [
            "ABCDEFGH"[i] for i in range(len(panel["targets"]))
        ]
    assert rows[0]["title"] == "Overview" and len(rows) >= 6


def test_queries_cover_every_query_of_the_dashboard(committed):
    listed = queries()
    assert Counter(expr for _, expr in listed) == Counter(_exprs(committed))
    titles = {p["title"] for p in _panels(committed)}
    assert {title for title, _ in listed} - titles == {"annotation: Runs"}
    assert queries(committed) == listed


def test_queries_use_only_the_documented_variables():
    seen = set()
    for title, expr in queries():
        names = {a or b for a, b in re.findall(r"\$(?:\{(\w+)\}|(\w+))", expr)}
        assert names <= set(TEMPLATE_VARIABLES), (title, names)
        seen |= names
        rendered = render(expr)
        assert "$" not in rendered, (title, rendered)
        assert rendered.count("(") == rendered.count(")") and rendered.count("[") == rendered.count("]")
        assert rendered.count("{") == rendered.count("}") and rendered.count('"') % 2 == 0
    assert seen == set(TEMPLATE_VARIABLES)  # the documented list is exact
    # Multi-select variables are regexes: only ever matched with =~.
    for _, expr in queries():
        assert not re.search(r'[^~]"\$(model|task)"', expr), expr
    with pytest.raises(KeyError):
        render("up[$__interval]")


def _metric_names(expr: str) -> set[str]:
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    return set(re.findall(r"\b(persistence_\w+|up)\b(?!\s*\()", without_strings))


def _readme_metrics() -> dict[str, str]:
    """`name -> labels` of README's "## Metrics" table."""
    section = (
        (REPO / "README.md").read_text(encoding="utf-8").split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    )
    return dict(re.findall(r"^\| `(persistence_\w+)` \|([^|]*)\|", section, flags=re.MULTILINE))


def _exported_metrics(tmp_path) -> set[str]:
    """Sample names the real collectors expose (an empty store still yields every family)."""
    from prometheus_client import CollectorRegistry

    from monitor.metrics import DaemonMetrics, StoreCollector
    from monitor.store import Store
    from tests._api import settings_for

    store = Store.open(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        registry = CollectorRegistry()
        registry.register(StoreCollector(store, settings_for(tmp_path)))
        DaemonMetrics(registry)
        families = list(registry.collect())
    finally:
        store.close()
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
    return {f.name + s for f in families for s in suffixes.get(f.type, [""])}


def test_queries_use_only_exported_metrics(tmp_path):
    used = {name for _, expr in queries() for name in _metric_names(expr)}
    assert {"persistence_score", "persistence_cell_score", "up"} <= used
    documented = set(_readme_metrics())
    histograms = {n for n, labels in _readme_metrics().items() if "histogram" in labels}
    documented |= {h + s for h in histograms for s in ("_bucket", "_sum", "_count")}
    assert used - {"up"} <= documented, (used - {"up"}) - documented
    exported = _exported_metrics(tmp_path)
    assert used - {"up"} <= exported, (used - {"up"}) - exported
    for title, expr in queries():
        assert _metric_names(expr) or expr == "vector($threshold)", title
    # Every documented metric has a panel (a histogram through its _bucket/_sum/_count series).
    missing = documented - used - histograms
    assert not missing, f"metrics in README that no panel shows: {sorted(missing)}"


def test_provisioning_yaml():
    datasources = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    (prometheus,) = datasources["datasources"]
    assert prometheus["type"] == "prometheus" and prometheus["uid"] == "prometheus"
    assert prometheus["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/persistence-monitor.yml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    assert datasources["apiVersion"] == providers["apiVersion"] == 1


def test_build_dashboard_returns_the_json_model():
    model = build_dashboard()
    assert json.loads(to_json(model)) == model
    assert model["annotations"]["list"][0]["datasource"]["uid"] == "${datasource}"
