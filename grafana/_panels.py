"""The dashboard's panels, row by row: every PromQL query of the dashboard is written here.

Queries use only the metrics of README "Metrics" (DESIGN.md §3.5) plus Prometheus's own `up`, and
only the template variables listed in `dashboard.TEMPLATE_VARIABLES`. Scores are fractions in
[0, 1] (accuracy, balanced accuracy or macro-F1) and are shown as plain numbers with 3 decimals,
so they read exactly like the thresholds of the alert rules in the configuration.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import bargauge, prometheus, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.models import common, dashboard
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

__all__ = ["BELOW_THRESHOLD", "DATASOURCE", "SCRAPE_JOB", "rows"]

# The datasource variable: every panel and query follows the dashboard's "Data source" picker.
DATASOURCE = dashboard.DataSourceRef(type_val="prometheus", uid="${datasource}")
# The scrape job of deploy/ and of the tests' Prometheus (`up{job=...}`).
SCRAPE_JOB = "persistence-monitor"
# Default of the `threshold` variable and the red/green boundary of score panels: the threshold of
# a `below` rule. No metric exports rule thresholds, so keep this in step with your `below` rule.
BELOW_THRESHOLD = 0.8
# The default schedule evaluates every 6 h (`schedule.evaluate`), the default `stale` rule fires
# after 24 h: no success for 12 h means two missed runs, 24 h means the stale alert fires.
_HOUR = 3600.0
_RUN_LATE, _RUN_STALE = 12 * _HOUR, 24 * _HOUR
# A run longer than half the schedule interval is slow; longer than the interval, the next one
# is coalesced into it.
_RUN_SLOW, _RUN_TOO_SLOW = 3 * _HOUR, 6 * _HOUR
# Standard error of P(M) at which the default drop rule (min_drop 0.03, z 3) goes deaf:
# a drop must exceed about z·√2·se to page, i.e. 0.042 at se 0.01 and 0.085 at se 0.02.
_SE_NOISY, _SE_TOO_NOISY = 0.01, 0.02

Panel = Builder[dashboard.Panel]
_M = 'model=~"$model"'
_MT = 'model=~"$model", task=~"$task"'
_CELL = "{{model}} · {{task}}/{{dataset}} · {{strategy}}"


# -- small helpers ---------------------------------------------------------------------------------


def _q(
    expr: str, legend: str | None = None, *, ref: str = "A", instant: bool = False, as_table: bool = False
) -> prometheus.Dataquery:
    query = prometheus.Dataquery().expr(expr).ref_id(ref)
    query = query.instant() if instant else query.range()
    if legend is not None:
        query = query.legend_format(legend)
    if as_table:
        query = query.format(PromQueryFormat.TABLE)
    return query


def _steps(*steps: tuple[float | None, str]) -> dashboard_builders.ThresholdsConfig:
    return (
        dashboard_builders.ThresholdsConfig()
        .mode(dashboard.ThresholdsMode.ABSOLUTE)
        .steps([dashboard.Threshold(value=value, color=color) for value, color in steps])
    )


def _score_steps() -> dashboard_builders.ThresholdsConfig:
    return _steps((None, "red"), (BELOW_THRESHOLD, "green"))


def _fixed(color: str) -> list[dashboard.DynamicConfigValue]:
    return [dashboard.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": color})]


def _continuous() -> dashboard_builders.FieldColor:
    return dashboard_builders.FieldColor().mode(dashboard.FieldColorModeId.CONTINUOUS_RD_YL_GR)


def _cell_options(kind: str) -> list[dashboard.DynamicConfigValue]:
    return [dashboard.DynamicConfigValue(id_val="custom.cellOptions", value={"type": kind})]


def _organize(exclude: list[str], rename: dict[str, str] | None = None) -> dashboard.DataTransformerConfig:
    options = {"excludeByName": dict.fromkeys(exclude, True), "renameByName": rename or {}}
    return dashboard.DataTransformerConfig(id_val="organize", options=options)


_DASHED = [dashboard.DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]})]
_LABELS = ["Time", "__name__", "instance", "job"]  # table columns that say nothing here


def _timeseries(
    title: str, description: str, unit: str, *targets: prometheus.Dataquery, w: int = 12, h: int = 8
) -> timeseries.Panel:
    return (
        timeseries.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .targets(list(targets))
        .span(w)
        .height(h)
        .legend(
            common_builders.VizLegendOptions()
            .show_legend(True)
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
        )
        .tooltip(common_builders.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI))
    )


def _stat(
    title: str, description: str, unit: str, *targets: prometheus.Dataquery, w: int = 6, h: int = 6
) -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .targets(list(targets))
        .span(w)
        .height(h)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .graph_mode(common.BigValueGraphMode.NONE)
        .color_mode(common.BigValueColorMode.VALUE)
        .text_mode(common.BigValueTextMode.VALUE_AND_NAME)
    )


def _bargauge(
    title: str, description: str, unit: str, *targets: prometheus.Dataquery, w: int = 8, h: int = 10
) -> bargauge.Panel:
    return (
        bargauge.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .targets(list(targets))
        .span(w)
        .height(h)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .orientation(common.VizOrientation.HORIZONTAL)
        .display_mode(common.BarGaugeDisplayMode.GRADIENT)
        .show_unfilled(True)
    )


def _table(
    title: str, description: str, unit: str, *targets: prometheus.Dataquery, w: int = 12, h: int = 8
) -> table.Panel:
    return (
        table.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .targets(list(targets))
        .span(w)
        .height(h)
        .show_header(True)
        .cell_height(common.TableCellHeight.SM)
    )


# -- rows ------------------------------------------------------------------------------------------


def _overview() -> list[Panel]:
    return [
        _stat(
            "P(M)",
            "Persistence score of each model's latest finished run: the nested mean over tasks, "
            "datasets and strategies of the cell scores (mean over seeds). Red below the `below` "
            f"threshold ({BELOW_THRESHOLD}).",
            "none",
            _q(f"persistence_score{{{_M}}}", "{{model}}"),
        )
        .decimals(3)
        .min(0)
        .max(1)
        .thresholds(_score_steps())
        .graph_mode(common.BigValueGraphMode.AREA),
        _stat(
            "Standard error of P(M)",
            "Standard error of P(M): the seed replicates and the test samples' noise. The drop rule "
            "needs a drop larger than about z·√2·stderr: yellow from 0.01 (a drop must exceed ~0.042 "
            "to page with the defaults), red from 0.02 (~0.085): add test images (test_per_class) if "
            "it stays high, or seeds if the seed-only part dominates.",
            "none",
            _q(f"persistence_score_stderr{{{_M}}}", "{{model}}"),
        )
        .decimals(4)
        .min(0)
        .thresholds(_steps((None, "green"), (_SE_NOISY, "yellow"), (_SE_TOO_NOISY, "red"))),
        _stat(
            "Grid coverage",
            "Scored cells / planned cells of the latest run. Failed cells are left out of P(M), so "
            "anything below 100 % means P(M) is computed on part of the grid (GridIncomplete).",
            "percentunit",
            _q(f"persistence_grid_coverage_ratio{{{_M}}}", "{{model}}"),
        )
        .decimals(1)
        .min(0)
        .max(1)
        .thresholds(_steps((None, "red"), (0.9, "yellow"), (1.0, "green"))),
        _stat(
            "Alerts firing",
            "Number of (model, alert rule) pairs whose alert fires now (`persistence_alert_firing == 1`).",
            "none",
            _q(f"count(persistence_alert_firing{{{_M}}} == 1) or vector(0)", "firing"),
        )
        .decimals(0)
        .min(0)
        .thresholds(_steps((None, "green"), (1, "red")))
        .text_mode(common.BigValueTextMode.VALUE),
    ]


def _over_time() -> list[Panel]:
    return [
        _timeseries(
            "P(M) per model",
            "P(M) of each model over time (solid), the baseline its drop rule compares against "
            "(dashed, `persistence_baseline_score`) and the `below` threshold (red dashed: the "
            "constant dashboard variable `threshold`, default 0.8; no metric exports rule "
            "thresholds, so set it to your `below` rule's).",
            "none",
            _q(f"persistence_score{{{_M}}}", "{{model}}"),
            _q(f"persistence_baseline_score{{{_M}}}", "{{model}} baseline", ref="B"),
            _q("vector($threshold)", "below threshold", ref="C"),
            w=24,
            h=10,
        )
        .decimals(3)
        .line_width(2)
        .span_nulls(True)
        .override_by_regexp(".* baseline", _DASHED)
        .override_by_name("below threshold", [*_DASHED, *_fixed("red")]),
        _timeseries(
            "Standard error of P(M) over time",
            "Standard error of P(M) (seeds and test samples), and its seed-only part; the drop "
            "rule's noise floor. Dashed lines: 0.01 (a drop must exceed ~0.042 to page) and 0.02 "
            "(~0.085).",
            "none",
            _q(f"persistence_score_stderr{{{_M}}}", "{{model}}"),
            _q(f"persistence_score_stderr_seeds{{{_M}}}", "{{model}} seeds only", ref="B"),
            w=8,
        )
        .decimals(4)
        .min(0)
        .thresholds(_steps((None, "green"), (_SE_NOISY, "yellow"), (_SE_TOO_NOISY, "red")))
        .thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(common.GraphTresholdsStyleMode.DASHED)
        ),
        _timeseries(
            "Spread of cell scores",
            "Standard deviation of the cell scores of the latest run: how unevenly the model "
            "fine-tunes across tasks, datasets and strategies.",
            "none",
            _q(f"persistence_score_spread{{{_M}}}", "{{model}}"),
            w=8,
        )
        .decimals(3)
        .min(0),
        _timeseries(
            "Worst cell score",
            "The lowest cell score of the latest run; see the Grid row for which cell it is.",
            "none",
            _q(f"persistence_worst_cell_score{{{_M}}}", "{{model}}"),
            w=8,
        )
        .decimals(3)
        .min(0)
        .max(1),
    ]


def _grid() -> list[Panel]:
    return [
        _table(
            "Cell scores: task × dataset by strategy",
            "Every cell of the latest run (metric after fine-tuning, mean over seeds): one row per "
            "model / task / dataset, one column per strategy, colored red (0) → green (1). An empty "
            "cell failed or is not planned.",
            "none",
            _q(
                f'label_join(persistence_cell_score{{{_MT}}}, "cell", " / ", "model", "task", "dataset")',
                instant=True,
                as_table=True,
            ),
            w=16,
            h=12,
        )
        .decimals(3)
        .min(0)
        .max(1)
        .color_scheme(_continuous())
        .with_transformation(
            dashboard.DataTransformerConfig(
                id_val="groupingToMatrix",
                options={"columnField": "strategy", "rowField": "cell", "valueField": "Value"},
            )
        )
        .override_by_field_type("number", _cell_options("color-background")),
        _bargauge(
            "Lowest 10 cells",
            "The ten lowest cell scores of the latest runs, across the selected models: where "
            "P(M) loses the most.",
            "none",
            _q(f"bottomk(10, persistence_cell_score{{{_MT}}})", _CELL, instant=True),
            h=12,
        )
        .decimals(3)
        .min(0)
        .max(1)
        .color_scheme(_continuous()),
    ]


def _marginals() -> list[Panel]:
    return [
        _bargauge(
            "Score per task",
            "P(M) restricted to one task (`persistence_task_score`): every dataset of the task "
            "weighs the same.",
            "none",
            _q(f"persistence_task_score{{{_MT}}}", "{{model}} · {{task}}", instant=True),
        )
        .decimals(3)
        .min(0)
        .max(1)
        .thresholds(_score_steps()),
        _bargauge(
            "Score per dataset",
            "Mean over the strategies of one dataset (`persistence_dataset_score`).",
            "none",
            _q(f"persistence_dataset_score{{{_MT}}}", "{{model}} · {{task}}/{{dataset}}", instant=True),
        )
        .decimals(3)
        .min(0)
        .max(1)
        .thresholds(_score_steps()),
        _bargauge(
            "Score per strategy",
            "P(M) restricted to one training strategy (`persistence_strategy_score`).",
            "none",
            _q(f"persistence_strategy_score{{{_M}}}", "{{model}} · {{strategy}}", instant=True),
        )
        .decimals(3)
        .min(0)
        .max(1)
        .thresholds(_score_steps()),
        _timeseries(
            "Score per task over time",
            "Task marginals over time: a drop of P(M) that shows in one task only points at that "
            "task's data.",
            "none",
            _q(f"persistence_task_score{{{_MT}}}", "{{model}} · {{task}}"),
            w=24,
        )
        .decimals(3)
        .span_nulls(True),
    ]


def _early_warning() -> list[Panel]:
    return [
        _timeseries(
            "Transferability estimates over time",
            "The early_warning estimates (LogME, H-score) of each model on each dataset's snapshot "
            "(`persistence_transferability_score`), from grids and probe runs. Not in P(M) and not "
            "in [0, 1]: read each line against its own history; a fall that the cells do not "
            'show yet is an early warning (README "Early warning between grids").',
            "none",
            _q(
                f"persistence_transferability_score{{{_MT}}}",
                "{{model}} · {{task}}/{{dataset}} · {{estimator}}",
            ),
            w=24,
        )
        .decimals(3)
        .span_nulls(True),
    ]


def _snapshots() -> list[Panel]:
    return [
        _table(
            "Snapshots in use",
            "The dataset snapshot each task/dataset is scored on, and how long ago it became "
            "complete (`time() - persistence_snapshot_timestamp_seconds`). Age colors are a hint: "
            "yellow after 7 days, red after 30 days without new data.",
            "s",
            _q('persistence_snapshot_info{task=~"$task"}', instant=True, as_table=True),
            _q(
                'time() - persistence_snapshot_timestamp_seconds{task=~"$task"}',
                ref="B",
                instant=True,
                as_table=True,
            ),
            w=14,
        )
        .thresholds(_steps((None, "green"), (7 * 24 * _HOUR, "yellow"), (30 * 24 * _HOUR, "red")))
        .with_transformation(dashboard.DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(_organize([*_LABELS, "Value #A"], {"Value #B": "age"}))
        .override_by_name("age", _cell_options("color-text")),
        _bargauge(
            "Snapshot errors in range",
            "Rejected snapshots and undecodable images over the dashboard's time range, by "
            "task/dataset and reason (`persistence_snapshot_errors_total`).",
            "short",
            _q(
                "sum by (task, dataset, reason) "
                '(increase(persistence_snapshot_errors_total{task=~"$task"}[$__range]))',
                "{{task}}/{{dataset}} · {{reason}}",
                instant=True,
            ),
            w=10,
            h=8,
        )
        .decimals(0)
        .min(0)
        .thresholds(_steps((None, "green"), (1, "orange"))),
    ]


def _runs() -> list[Panel]:
    buckets = "sum by (le) (increase(persistence_run_duration_seconds_bucket[{window}]))"
    average = (
        "sum(increase(persistence_run_duration_seconds_sum[{window}])) "
        "/ sum(increase(persistence_run_duration_seconds_count[{window}]))"
    )
    duration_steps = _steps((None, "green"), (_RUN_SLOW, "yellow"), (_RUN_TOO_SLOW, "red"))
    range_, interval = "$__range", "$__rate_interval"
    return [
        _stat(
            "Time since last run",
            "How long ago the last run that produced scores (completed or partial) finished, and "
            "the last run of any outcome. Yellow after 12 h (two missed 6-hourly runs), red after "
            "24 h (the default `stale` rule fires).",
            "s",
            _q("time() - persistence_last_success_timestamp_seconds", "last success"),
            _q("time() - persistence_last_run_timestamp_seconds", "last run (any outcome)", ref="B"),
            h=8,
        )
        .min(0)
        .thresholds(_steps((None, "green"), (_RUN_LATE, "yellow"), (_RUN_STALE, "red"))),
        _stat(
            "Run duration in range",
            "Median, 90th percentile and mean wall time of the runs that finished in the "
            "dashboard's time range (`persistence_run_duration_seconds`). Yellow above 3 h, red "
            "above 6 h (the default schedule interval: the next run is coalesced into it).",
            "s",
            _q(f"histogram_quantile(0.5, {buckets.format(window=range_)})", "p50", instant=True),
            _q(f"histogram_quantile(0.9, {buckets.format(window=range_)})", "p90", ref="B", instant=True),
            _q(average.format(window=range_), "mean", ref="C", instant=True),
            h=8,
        )
        .min(0)
        .thresholds(duration_steps),
        _timeseries(
            "Run duration",
            "Median, 90th percentile and mean wall time of the runs finished within each interval "
            "(at least 1 h: runs are hours apart, so most intervals hold none and show no point).",
            "s",
            _q(f"histogram_quantile(0.5, {buckets.format(window=interval)})", "p50"),
            _q(f"histogram_quantile(0.9, {buckets.format(window=interval)})", "p90", ref="B"),
            _q(average.format(window=interval), "mean", ref="C"),
            h=8,
        )
        .interval("1h")
        .min(0)
        .draw_style(common.GraphDrawStyle.POINTS)
        .point_size(8)
        .thresholds(duration_steps),
        _bargauge(
            "Runs by outcome in range",
            "Finished runs over the dashboard's time range: completed, partial (some cells "
            "failed), failed (no scores).",
            "short",
            _q(
                "sum by (outcome) (increase(persistence_runs_total[$__range]))",
                "{{outcome}}",
                instant=True,
            ),
            h=7,
        )
        .decimals(0)
        .min(0)
        .thresholds(_steps((None, "blue")))
        .override_by_name("completed", _fixed("green"))
        .override_by_name("partial", _fixed("yellow"))
        .override_by_name("failed", _fixed("red")),
        _bargauge(
            "Cells by outcome in range",
            "Cells of the runs finished in the dashboard's time range: ok (trained), cached (a "
            "known cell key, not recomputed), diverged (NaN/inf loss, scored as is), failed (left "
            "out of P(M)).",
            "short",
            _q(
                "sum by (outcome) (increase(persistence_cells_total[$__range]))",
                "{{outcome}}",
                instant=True,
            ),
            h=7,
        )
        .decimals(0)
        .min(0)
        .thresholds(_steps((None, "blue")))
        .override_by_name("ok", _fixed("green"))
        .override_by_name("cached", _fixed("blue"))
        .override_by_name("diverged", _fixed("orange"))
        .override_by_name("failed", _fixed("red")),
        _stat(
            "Cached cells in range",
            "Share of the cells in range that were served from the result cache: near 100 % when "
            "inputs did not change, lower after new data, new weights or a configuration change.",
            "percentunit",
            _q(
                'sum(increase(persistence_cells_total{outcome="cached"}[$__range])) '
                "/ sum(increase(persistence_cells_total[$__range]))",
                "cached",
                instant=True,
            ),
            w=8,
            h=7,
        )
        .decimals(1)
        .min(0)
        .max(1)
        .thresholds(_steps((None, "blue")))
        .text_mode(common.BigValueTextMode.VALUE),
    ]


def _alerts() -> list[Panel]:
    return [
        statetimeline.Panel()
        .title("Alert states")
        .description(
            "Each (model, alert rule) over time: green while clear, red while firing "
            "(`persistence_alert_firing`)."
        )
        .unit("none")
        .datasource(DATASOURCE)
        .with_target(_q(f"persistence_alert_firing{{{_M}}}", "{{model}} · {{alert}}"))
        .span(12)
        .height(8)
        .min(0)
        .max(1)
        .thresholds(_steps((None, "green"), (1, "red")))
        .mappings(
            [
                dashboard.ValueMap(
                    options={
                        "0": dashboard.ValueMappingResult(text="ok", color="green", index=0),
                        "1": dashboard.ValueMappingResult(text="firing", color="red", index=1),
                    }
                )
            ]
        )
        .show_value(common.VisibilityMode.NEVER)
        .merge_values(True)
        .legend(common_builders.VizLegendOptions().show_legend(False))
        .tooltip(common_builders.VizTooltipOptions().mode(common.TooltipDisplayMode.SINGLE)),
        _table(
            "Firing alerts",
            "The alerts firing now (`persistence_alert_firing == 1`), by model and rule.",
            "none",
            _q(f"persistence_alert_firing{{{_M}}} == 1", instant=True, as_table=True),
        )
        .no_value("no alert is firing")
        .with_transformation(_organize([*_LABELS, "Value"])),
        _timeseries(
            "Notifications",
            "Notification deliveries per interval by notifier and outcome: delivered, retried (an "
            "attempt failed and will be retried), dropped (given up: rejected, too old, or no "
            "longer configured).",
            "short",
            _q(
                "sum by (notifier, outcome) (increase(persistence_notifications_total[$__rate_interval]))",
                "{{notifier}} · {{outcome}}",
            ),
        )
        .decimals(0)
        .min(0)
        .draw_style(common.GraphDrawStyle.BARS)
        .fill_opacity(60)
        .override_by_regexp(".* delivered", _fixed("green"))
        .override_by_regexp(".* retried", _fixed("yellow"))
        .override_by_regexp(".* dropped", _fixed("red")),
        _stat(
            "Outbox pending",
            "Notifications waiting in the outbox for delivery. A few for seconds is normal; a "
            "backlog that grows means a notifier keeps failing (see Notifications).",
            "short",
            _q("persistence_notification_outbox_pending", "pending"),
            h=8,
        )
        .decimals(0)
        .min(0)
        .thresholds(_steps((None, "green"), (1, "yellow"), (10, "red")))
        .graph_mode(common.BigValueGraphMode.AREA)
        .text_mode(common.BigValueTextMode.VALUE),
        _stat(
            "Dropped notifications in range",
            "Notifications given up on over the dashboard's time range: somebody was not told.",
            "short",
            _q(
                'sum(increase(persistence_notifications_total{outcome="dropped"}[$__range]))',
                "dropped",
                instant=True,
            ),
            h=8,
        )
        .decimals(0)
        .min(0)
        # increase() extrapolates: a single drop can read 0.9, so anything from 0.5 is one.
        .thresholds(_steps((None, "green"), (0.5, "red")))
        .text_mode(common.BigValueTextMode.VALUE),
    ]


def _on_off(off: str, on: str, color: str) -> list[dashboard.ValueMapping]:
    """Names for a 0/1 gauge: 0 in the text colour, 1 in `color`."""
    return [
        dashboard.ValueMap(
            options={
                "0": dashboard.ValueMappingResult(text=off, index=0),
                "1": dashboard.ValueMappingResult(text=on, color=color, index=1),
            }
        )
    ]


def _service() -> list[Panel]:
    up_mappings: list[dashboard.ValueMapping] = [
        dashboard.ValueMap(
            options={
                "0": dashboard.ValueMappingResult(text="DOWN", color="red", index=0),
                "1": dashboard.ValueMappingResult(text="UP", color="green", index=1),
            }
        )
    ]
    return [
        _stat(
            "Up",
            f'Whether Prometheus reaches the monitor (`up{{job="{SCRAPE_JOB}"}}`) and whether the '
            "result store answered the last scrape (`persistence_store_up`: when 0, every state "
            "metric is missing).",
            "none",
            _q(f'up{{job="{SCRAPE_JOB}"}}', "scrape {{instance}}"),
            _q("persistence_store_up", "store {{instance}}", ref="B"),
        )
        .min(0)
        .max(1)
        .thresholds(_steps((None, "red"), (1, "green")))
        .mappings(up_mappings)
        .color_mode(common.BigValueColorMode.BACKGROUND),
        _stat(
            "Evaluation running",
            "Whether an evaluation runs now in the daemon (`persistence_evaluation_in_progress`).",
            "none",
            _q("max(persistence_evaluation_in_progress)", "evaluation"),
            w=4,
        )
        .min(0)
        .max(1)
        .thresholds(_steps((None, "text"), (1, "blue")))
        .mappings(_on_off("idle", "running", "blue"))
        .text_mode(common.BigValueTextMode.VALUE),
        _stat(
            "Leader",
            "Which daemon holds the lease and schedules (`persistence_leader`: 1 on the leader, 0 on "
            "a standby; with two daemons on one PostgreSQL store, exactly one shows leader).",
            "none",
            _q("persistence_leader", "{{instance}}"),
            w=4,
        )
        .min(0)
        .max(1)
        .thresholds(_steps((None, "text"), (1, "green")))
        .mappings(_on_off("standby", "leader", "green")),
        _stat(
            "Monitor version",
            "The persistence-monitor build that serves the metrics (`persistence_monitor_build_info`).",
            "none",
            _q("persistence_monitor_build_info", "{{version}}"),
            w=4,
        )
        .thresholds(_steps((None, "text")))
        .text_mode(common.BigValueTextMode.NAME),
        _table(
            "Model versions in use",
            "The weights version each model was last scored with (`persistence_model_info`).",
            "none",
            _q(f"persistence_model_info{{{_M}}}", instant=True, as_table=True),
            w=6,
            h=6,
        ).with_transformation(_organize([*_LABELS, "Value"])),
        _timeseries(
            "Scheduler events",
            "Scheduler job events per interval: executed, error, missed (misfire), skipped (an "
            "instance was still running), by scheduler job (evaluate, poll, heartbeat, alerts-clock, ...).",
            "short",
            _q(
                "sum by (scheduled_job, event) "
                "(increase(persistence_scheduler_events_total[$__rate_interval]))",
                "{{scheduled_job}} · {{event}}",
            ),
        )
        .decimals(0)
        .min(0)
        .draw_style(common.GraphDrawStyle.BARS)
        .fill_opacity(60)
        .override_by_regexp(".* (error|missed)", _fixed("red"))
        .override_by_regexp(".* skipped", _fixed("yellow")),
        _timeseries(
            "Evaluation requests and polls",
            "Evaluation requests per interval by trigger (startup, schedule, poll, api, resume) and "
            "polls of the sources and weights by outcome (unchanged, changed, queued, error).",
            "short",
            _q(
                "sum by (trigger) (increase(persistence_evaluations_requested_total[$__rate_interval]))",
                "request · {{trigger}}",
            ),
            _q(
                "sum by (outcome) (increase(persistence_polls_total[$__rate_interval]))",
                "poll · {{outcome}}",
                ref="B",
            ),
        )
        .decimals(0)
        .min(0)
        .draw_style(common.GraphDrawStyle.BARS)
        .fill_opacity(60)
        .override_by_name("poll · error", _fixed("red")),
        _timeseries(
            "Rows pruned by retention",
            "What the retention settings removed from the store per interval "
            "(`persistence_store_pruned_total`): a run's cells after `retention.cells_days`, trials "
            "no kept run uses, runs with their P(M) after `retention.history_days`, and delivered "
            "notifications. Nothing here while the store is younger than its windows.",
            "short",
            _q(
                "sum by (what) (increase(persistence_store_pruned_total[$__rate_interval]))",
                "{{what}}",
            ),
        )
        .decimals(0)
        .min(0)
        .draw_style(common.GraphDrawStyle.BARS)
        .fill_opacity(60),
    ]


def rows() -> list[tuple[str, list[Panel]]]:
    """The dashboard's rows, top to bottom, each with its panels (positions are laid out by the
    dashboard builder from each panel's width and height)."""
    return [
        ("Overview", _overview()),
        ("P(M) over time", _over_time()),
        ("Grid", _grid()),
        ("Marginals", _marginals()),
        ("Early warning", _early_warning()),
        ("Data snapshots", _snapshots()),
        ("Runs", _runs()),
        ("Alerts and notifications", _alerts()),
        ("Service", _service()),
    ]
