"""Typed configuration: the YAML file of DESIGN.md §3.2 plus `PM_*` environment overrides."""

from ._durations import parse_duration
from ._load import DEFAULT_CONFIG_NAME, find_config, load_settings, redact_url, settings_from_mapping
from ._schema import (
    AlertRule,
    AlertsSettings,
    DatasetSpec,
    ExecutorSettings,
    LimitsSettings,
    MetricsSettings,
    ModelSpec,
    Normalize,
    NotifierSpec,
    RetentionSettings,
    ScheduleSettings,
    ServerSettings,
    Settings,
    StrategySpec,
    TaskSpec,
)

__all__ = [
    "DEFAULT_CONFIG_NAME",
    "AlertRule",
    "AlertsSettings",
    "DatasetSpec",
    "ExecutorSettings",
    "LimitsSettings",
    "MetricsSettings",
    "ModelSpec",
    "Normalize",
    "NotifierSpec",
    "RetentionSettings",
    "ScheduleSettings",
    "ServerSettings",
    "Settings",
    "StrategySpec",
    "TaskSpec",
    "find_config",
    "load_settings",
    "parse_duration",
    "redact_url",
    "settings_from_mapping",
]
