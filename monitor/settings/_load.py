"""Find, read and validate the configuration; turn every mistake into a `ConfigError`.

A bad file is reported all at once, one line per problem, each naming the field path the user
must edit (`tasks[0].datasets[1].source: no such directory: /srv/x`). Values are never echoed
for fields that can hold secrets.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import os
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_settings import SettingsError

from ..errors import ConfigError
from ._locations import is_local as _is_local
from ._locations import local_path as _local_path
from ._locations import weights_kind
from ._schema import Settings

__all__ = ["DEFAULT_CONFIG_NAME", "find_config", "load_settings", "redact_url", "settings_from_mapping"]

DEFAULT_CONFIG_NAME = "persistence-monitor.yaml"
_SUPPORTED_SUFFIXES = {".pt", ".pth", ".safetensors"}


def find_config(cli_value: str | os.PathLike[str] | None, env: Mapping[str, str] | None = None) -> Path:
    """Return the config path: `--config`, else `PM_CONFIG`, else ./persistence-monitor.yaml."""
    env = os.environ if env is None else env
    if cli_value:
        path, how = Path(cli_value), "--config"
    elif env.get("PM_CONFIG"):
        path, how = Path(env["PM_CONFIG"]), "PM_CONFIG"
    else:
        path, how = Path(DEFAULT_CONFIG_NAME), "the default location"
    if not path.is_file():
        raise ConfigError(
            [
                (
                    "",
                    f"config file not found: {path} (from {how}); pass --config FILE, set PM_CONFIG, "
                    f"or run `persistence-monitor demo` for a complete example workspace",
                )
            ]
        )
    return path.resolve()


def load_settings(path: str | os.PathLike[str]) -> Settings:
    """Read a YAML config file, apply `PM_*` overrides, validate, and check local paths."""
    path = Path(path).resolve()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([("", f"cannot read {path}: {exc.strerror}")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [("", f"{path} is not UTF-8 text (byte {exc.start}); save the config as UTF-8")]
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError([("", f"YAML syntax error{where}: {problem}")], origin=str(path)) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            [("", "the file must hold a mapping (key: value) at the top level")], origin=str(path)
        )
    return settings_from_mapping(data, base_dir=path.parent, origin=str(path))


def settings_from_mapping(data: dict[str, Any], *, base_dir: Path, origin: str | None = None) -> Settings:
    """Validate an already-parsed config mapping; relative paths are taken from `base_dir`."""
    data = {**_resolve_relative_paths(data, base_dir), "config_dir": str(base_dir)}
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_problems_from(exc, data), origin=origin) from None
    except SettingsError:
        # An environment override of a list or a section that is not valid JSON.
        raise ConfigError(_bad_json_overrides(os.environ), origin=origin) from None
    # Values that came from the environment may still be relative: they are relative to the cwd.
    settings = _absolutize(settings)
    problems = _check_local_paths(settings) + _check_tensorboard(settings)
    if problems:
        raise ConfigError(problems, origin=origin)
    return settings


def redact_url(url: str) -> str:
    """Drop user-info (credentials) and query strings from a URL before it is shown anywhere."""
    try:
        parts = urlsplit(url)
        if not parts.scheme or parts.scheme == "file":
            return url
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
    except ValueError:  # a malformed netloc or port: show nothing that might be a credential
        return "(a URL that does not parse)"
    return f"{parts.scheme}://{host}{parts.path}" + ("?…" if parts.query else "")


def _bad_json_overrides(env: Mapping[str, str]) -> list[tuple[str, str]]:
    """Name each `PM_*` variable that sets a list or a section but does not hold JSON.

    pydantic-settings only says which top-level field failed (`alerts`); the user needs the
    variable (`PM_ALERTS__NOTIFIERS`) and the field path (`alerts.notifiers`).
    """
    problems = []
    for name in sorted(env):
        if not name.upper().startswith("PM_"):
            continue
        path = name[3:].lower().split("__")
        shape = _json_shape(path)
        if shape is None:
            continue
        try:
            json.loads(env[name])
        except ValueError:
            example = {"seeds": "'[0, 1]'"}.get(name[3:].lower(), shape)
            problems.append(
                (
                    ".".join(path),
                    f"the {name} environment variable must hold JSON here (e.g. {name}={example})",
                )
            )
    return problems or [("", "an environment override (PM_*) of a list or a section is not valid JSON")]


def _json_shape(path: list[str]) -> str | None:
    """An example of the JSON the settings field at `path` takes, or None for a plain value."""
    model: Any = Settings
    annotation: Any = None
    for part in path:
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return None
        annotation = fields[part].annotation
        model = _model_in(annotation, None)
    return _shape(annotation)


def _shape(annotation: Any) -> str | None:
    if isinstance(annotation, type):
        if issubclass(annotation, list | tuple):
            return "'[...]'"
        return "'{\"field\": ...}'" if issubclass(annotation, BaseModel | dict) else None
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _shape(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        shapes = [_shape(a) for a in typing.get_args(annotation) if a is not type(None)]
        return next((shape for shape in shapes if shape is not None), None)
    if origin in (list, tuple):
        inner = [_shape(a) for a in typing.get_args(annotation)]
        return "'[{\"field\": ...}]'" if "'{\"field\": ...}'" in inner else "'[...]'"
    return "'{\"field\": ...}'" if origin is dict else None


# -- relative paths ---------------------------------------------------------------------------


def _resolve_relative_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Make the file's relative paths relative to the file's folder (not to the cwd)."""

    def fix(value: Any) -> Any:
        if isinstance(value, str) and value and not Path(value).is_absolute():
            return str((base / value).resolve())
        return value

    data = dict(data)
    if "state_dir" in data:
        data["state_dir"] = fix(data["state_dir"])
    else:
        data["state_dir"] = str((base / "state").resolve())
    executor = data.get("executor")
    if isinstance(executor, dict) and isinstance(executor.get("tensorboard_dir"), str):
        data["executor"] = {**executor, "tensorboard_dir": fix(executor["tensorboard_dir"])}
    if isinstance(data.get("models"), list):
        data["models"] = [_fix_model(m, fix) for m in data["models"]]
    if isinstance(data.get("tasks"), list):
        tasks = []
        for task in data["tasks"]:
            if isinstance(task, dict) and isinstance(task.get("datasets"), list):
                task = {**task, "datasets": [_fix_source(d, base) for d in task["datasets"]]}
            tasks.append(task)
        data["tasks"] = tasks
    return data


def _fix_model(model: Any, fix: Any) -> Any:
    if not isinstance(model, dict):
        return model
    model = dict(model)
    weights = model.get("weights")
    if isinstance(weights, str) and weights_kind(weights) == "file" and not weights.startswith("file://"):
        model["weights"] = fix(weights)
    architecture = model.get("architecture")
    if isinstance(architecture, str) and architecture.startswith("hf:"):
        model["architecture"] = "hf:" + fix(architecture[3:])  # a folder saved with save_pretrained
    return model


def _fix_source(dataset: Any, base: Path) -> Any:
    if not isinstance(dataset, dict) or not isinstance(dataset.get("source"), str):
        return dataset
    source = dataset["source"]
    if _is_local(source) and not source.startswith("file://") and not Path(source).is_absolute():
        return {**dataset, "source": str((base / source).resolve())}
    return dataset


def _absolutize(settings: Settings) -> Settings:
    models = [
        m.model_copy(update={"weights": str(m.weights_path.resolve())}) if m.weights_path is not None else m
        for m in settings.models
    ]
    executor = settings.executor
    if executor.tensorboard_dir is not None:
        executor = executor.model_copy(update={"tensorboard_dir": executor.tensorboard_dir.resolve()})
    return settings.model_copy(
        update={"state_dir": settings.state_dir.resolve(), "models": models, "executor": executor}
    )


def _valid_http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a port that is not a number in range
    except ValueError:
        return False
    return bool(parts.hostname)


# The extra that brings each common fsspec backend (the others name their own package).
FSSPEC_EXTRAS = {
    "s3": "s3",
    "s3a": "s3",
    "gs": "gcs",
    "gcs": "gcs",
    "az": "azure",
    "abfs": "azure",
    "abfss": "azure",
}


def fsspec_problem(url: str) -> str | None:
    """Why fsspec cannot open `url` here (unknown scheme, backend not installed), or None."""
    import fsspec
    from fsspec.registry import known_implementations as known

    scheme = urlsplit(url).scheme.lower()
    if scheme not in fsspec.available_protocols():
        return (
            f"unsupported scheme {scheme!r}: expected a local path, an http(s):// URL or an fsspec URL "
            "such as s3://bucket/prefix/, gs://…, az://…"
        )
    try:
        fsspec.get_filesystem_class(scheme)
    except ImportError:
        extra = FSSPEC_EXTRAS.get(scheme)
        hint = (
            f"pip install 'persistence-monitor[{extra}]'"
            if extra
            else str(known[scheme].get("err") or f"install the fsspec backend for {scheme}://")
        )
        return f"{scheme}:// needs a package that is not installed: {hint}"
    return None


def _check_local_paths(settings: Settings) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for i, model in enumerate(settings.models):
        where = f"models[{i}].weights"
        if model.kind == "hf":
            folder = Path(model.architecture[3:])
            if not (folder / "config.json").is_file():
                problems.append(
                    (
                        f"models[{i}].architecture",
                        f"{folder} is not a folder saved with save_pretrained (no config.json in it)",
                    )
                )
        if model.weights is not None and model.weights_kind == "fsspec":
            problem = fsspec_problem(model.weights)
            if problem is not None:
                problems.append((where, problem))
        if model.weights is not None and model.weights_kind in ("http", "fsspec"):
            name = urlsplit(model.weights).path.rsplit("/", 1)[-1]
            if model.kind != "torchscript" and Path(name).suffix.lower() not in _SUPPORTED_SUFFIXES:
                problems.append(
                    (where, f"unsupported weights file {name}: expected .pt, .pth or .safetensors")
                )
        path = model.weights_path
        if path is None:
            continue
        if not path.exists():
            problems.append((where, f"no such file: {path}"))
        elif not path.is_file():
            problems.append((where, f"not a file: {path}"))
        elif model.kind != "torchscript" and path.suffix.lower() not in _SUPPORTED_SUFFIXES:
            problems.append(
                (
                    where,
                    f"unsupported weights file {path.name}: expected a state_dict saved as "
                    ".pt/.pth (torch.save of model.state_dict()) or .safetensors",
                )
            )
    for i, task in enumerate(settings.tasks):
        for j, dataset in enumerate(task.datasets):
            where = f"tasks[{i}].datasets[{j}].source"
            if dataset.source is None:
                continue  # derived: its source dataset is checked
            if _is_local(dataset.source):
                path = _local_path(dataset.source)
                if not path.exists():
                    problems.append((where, f"no such directory: {path}"))
                elif not path.is_dir():
                    problems.append((where, f"not a directory: {path} (a source is a folder of snapshots)"))
            elif urlsplit(dataset.source).scheme not in ("http", "https"):
                problem = fsspec_problem(dataset.source)
                if problem is not None:
                    problems.append((where, problem))
            elif not _valid_http_url(dataset.source):
                problems.append((where, "not a valid URL (check the host and port)"))
    return problems


def _check_tensorboard(settings: Settings) -> list[tuple[str, str]]:
    """`executor.tensorboard_dir` needs the tensorboard package (found, not imported) and a folder."""
    folder = settings.executor.tensorboard_dir
    if folder is None:
        return []
    where = "executor.tensorboard_dir"
    if importlib.util.find_spec("tensorboard") is None:
        hint = "pip install 'persistence-monitor[tensorboard]'"
        return [(where, f"writing TensorBoard event files needs the tensorboard package: {hint}")]
    if folder.exists() and not folder.is_dir():
        return [(where, f"not a directory: {folder}")]
    return []


# -- pydantic errors -> field paths -----------------------------------------------------------


def _problems_from(exc: ValidationError, data: dict[str, Any]) -> list[tuple[str, str]]:
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        loc = _clean_loc(error["loc"], data)
        message = _message(error, loc, data)
        # Model-level validators say "field: message"; move the field into the path.
        head, sep, rest = message.partition(": ")
        if sep and head in _known_fields(loc, data):
            loc, message = (*loc, head), rest
        elif sep and (path := _path_below(loc, head, data)) is not None:
            loc, message = (*loc, *path), rest  # e.g. a task's "[2].derive.from: …"
        problems.append((_render_loc(loc), message))
    return problems


def _path_below(loc: tuple[Any, ...], head: str, data: Any) -> tuple[Any, ...] | None:
    """`head` as location parts ("[2].derive.from" -> (2, "derive", "from")) when the document
    holds that path below `loc`; else None (the message keeps its head)."""
    parts = re.findall(r"\[(\d+)\]|\.?([A-Za-z_]\w*)", head)
    path = tuple(int(index) if index else name for index, name in parts)
    if not path or _render_loc(path).lstrip(".") != head.lstrip("."):
        return None
    node: Any = data
    for part in (*loc, *path):
        node = _child(node, part)
        if node is None:
            return None
    return path


def _clean_loc(loc: tuple[Any, ...], data: Any) -> tuple[Any, ...]:
    """Drop the discriminator tags pydantic puts into locations of tagged unions."""
    out: list[Any] = []
    node: Any = data
    for part in loc:
        if isinstance(node, dict) and isinstance(part, str) and part not in node and node.get("kind") == part:
            continue  # e.g. ("alerts", "rules", 0, "drop", "min_drop") -> rules[0].min_drop
        out.append(part)
        node = _child(node, part)
    return tuple(out)


def _child(node: Any, part: Any) -> Any:
    if isinstance(node, dict):
        return node.get(part)
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return node[part]
    return None


def _render_loc(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _message(error: Any, loc: tuple[Any, ...], data: dict[str, Any]) -> str:
    kind = error["type"]
    msg: str = error["msg"]
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        name = str(loc[-1]) if loc else "?"
        known = _known_fields(loc[:-1], data)
        close = difflib.get_close_matches(name, known, n=1)
        if close:
            return f"unknown field (did you mean {close[0]!r}?)"
        return f"unknown field (expected one of: {', '.join(known)})" if known else "unknown field"
    if kind == "missing":
        return "required field is missing"
    if kind == "string_pattern_mismatch" and loc and loc[-1] == "name":
        return "expected 1-64 characters: lowercase letters, digits, '_', '.' or '-', starting with a letter or digit"
    if kind == "union_tag_invalid":
        return f"unknown kind {ctx.get('tag')!r}: expected one of {ctx.get('expected_tags')}"
    if kind == "union_tag_not_found":
        return "missing `kind:` (it says which kind of rule or notifier this is)"
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
    return msg


def _known_fields(loc: tuple[Any, ...], data: Any) -> list[str]:
    """Field names of the model found at `loc` (for "did you mean" hints and field paths)."""
    model: Any = Settings
    node: Any = data
    for i, part in enumerate(loc):
        node = _child(node, part)
        if isinstance(part, int):
            continue
        fields = _fields_of(model)
        if part not in fields:
            return []
        # For a list field, the element the location goes on to picks the union member.
        nxt = loc[i + 1] if i + 1 < len(loc) else None
        model = _model_in(fields[part].annotation, _child(node, nxt) if isinstance(nxt, int) else node)
        if model is None:
            return []
    if isinstance(node, list):
        return []
    return list(_fields_of(model))


def _fields_of(model: Any) -> dict[str, Any]:
    """A model's fields by the key the document uses (its alias: `from` for `from_`)."""
    fields = getattr(model, "model_fields", None) or {}
    return {field.alias or name: field for name, field in fields.items()}


def _model_in(annotation: Any, node: Any) -> Any:
    """The pydantic model inside an annotation such as `list[X] | None`, chosen by `kind:`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _model_in(typing.get_args(annotation)[0], node)
    if origin in (list, tuple, typing.Union, types.UnionType):
        candidates = [m for m in (_model_in(a, node) for a in typing.get_args(annotation)) if m is not None]
        if len(candidates) > 1 and isinstance(node, dict):
            tagged = [m for m in candidates if _kind_of(m) == node.get("kind")]
            candidates = tagged or candidates
        if len(candidates) == 1:
            return candidates[0]
    return None


def _kind_of(model: Any) -> Any:
    field = model.model_fields.get("kind")
    args = typing.get_args(field.annotation) if field is not None else ()
    return args[0] if len(args) == 1 else None
