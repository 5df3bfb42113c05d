"""Weights in an MLflow Model Registry: `models:/<name>@<alias>`, `models:/<name>/<version>`,
`models:/<name>/<stage>` (or `models:/<name>/latest`).

The registry is the one MLflow itself would use: `MLFLOW_TRACKING_URI` (or `MLFLOW_REGISTRY_URI`),
with `MLFLOW_TRACKING_TOKEN` or `MLFLOW_TRACKING_USERNAME`/`MLFLOW_TRACKING_PASSWORD` read by
MLflow; none of them ever reaches a message. The daemon calls this at every poll, so a poll costs
one registry request (the alias, the version or the stage's latest version). A model version is
immutable, so what was fetched for it is memoised: `state_dir/cache/mlflow/<key>.json` records
the digest and file name of (registry, name, version), and the file itself lives in the shared
weights cache `state_dir/weights/<sha256>/<file name>` (see `_weights_cache`). The record also
holds the version's creation time and source: a model deleted and registered again under the
same name restarts at version 1, and that is a different version here too.

Which file of a version is the weights, the rule (the version's artifacts are downloaded whole):

- `architecture: torchscript`: the one `.pt`/`.pth`/`.ts` file, e.g. the `data/model.pth` that
  `mlflow.pytorch.log_model(torch.jit.script(model), serialization_format="pickle")` writes.
- otherwise, a state_dict: the one `.safetensors` file; without one, the one `.pt`/`.pth` file,
  where `state_dict.pth` (what `mlflow.pytorch.log_state_dict` writes) wins over other `.pt`/`.pth`
  files. Such a folder is registered with `MlflowClient().create_model_version(name,
  source=f"runs:/{run_id}/<folder>", run_id=run_id)`.
- the model that `mlflow.pytorch.log_model` writes (an `MLmodel` file with a `pytorch` flavour)
  holds the whole module pickled (`data/model.pth`) or a torch.export program (`data/model.pt2`):
  neither is a state_dict, and a pickle is never loaded (it would run code from the registry), so
  such a version is refused with how to register a state_dict instead.

Hidden files (`.name`) never count. More than one candidate is an error that lists them.

MLflow's own HTTP defaults suit a notebook, not a poll every minute: 7 retries with exponential
backoff make one request to a server that is down take about four minutes. Unless the
environment says otherwise, requests here retry twice (`MLFLOW_HTTP_REQUEST_MAX_RETRIES=2`,
`..._BACKOFF_FACTOR=1`, `..._TIMEOUT=30`), draw no progress bars on the daemon's stderr, and send
no usage telemetry (`MLFLOW_DISABLE_TELEMETRY`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import socket
import ssl
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from .._text import shown, shown_text
from ..errors import SourceError
from ..settings import ModelSpec, redact_url
from ._digest import sha256_file
from ._fs import staging_dir
from ._weights_cache import cached, prune, publish

__all__ = ["mlflow_weights"]

log = logging.getLogger(__name__)

# Set before mlflow is imported (telemetry reads its switch then); an operator's value wins.
_MLFLOW_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",  # ~3 s against a server that is down, not ~4 min
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    # Per connect and per read, not per download: a multi-GB file still streams.
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # tqdm bars would fill the daemon's log
    "MLFLOW_DISABLE_TELEMETRY": "true",  # a monitoring daemon does not report its usage anywhere
}
_STAGES = {"none": "None", "staging": "Staging", "production": "Production", "archived": "Archived"}
_LATEST = "latest"  # MLflow's own `models:/<name>/latest`: the newest version, any stage
_STATE_DICT_SUFFIXES = (".pt", ".pth")
_TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts")
_LOG_STATE_DICT_FILE = "state_dict.pth"  # the file name mlflow.pytorch.log_state_dict writes
_FLAVOUR_FILES = {"model.pth": "the whole module, pickled", "model.pt2": "a torch.export program"}
_MAX_LISTED = 8  # files named in an error; a version may hold thousands
_MEMO_FORMAT = 1
# OSErrors of the network (a disk-full OSError is the state dir's problem, not the registry's).
_NETWORK_ERRORS = (ConnectionError, TimeoutError, socket.gaierror, ssl.SSLError)
_AUTH_CODES = {"UNAUTHENTICATED", "PERMISSION_DENIED"}
_NOT_FOUND_CODES = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}

_REGISTER_STATE_DICT = (
    "register a state_dict instead: in the run, mlflow.pytorch.log_state_dict(model.state_dict(), "
    '"weights") (or mlflow.log_artifact("model.safetensors", "weights")), then '
    'MlflowClient().create_model_version(name, source=f"runs:/{run_id}/weights", run_id=run_id)'
)


@dataclass(frozen=True)
class _Reference:
    """A parsed `models:/` URI: exactly one of alias, version and stage is set."""

    uri: str
    name: str
    alias: str | None = None
    version: str | None = None
    stage: str | None = None  # canonical ("Production") or "latest"


@dataclass(frozen=True)
class _Version:
    """The registry's answer: a concrete, immutable model version."""

    name: str
    number: str
    signature: str  # creation time and source: tells a re-created model's version 1 from the old one

    @property
    def label(self) -> str:
        return f"v{self.number}"


def mlflow_weights(spec: ModelSpec, *, state_dir: Path) -> tuple[Path, str, str]:
    """(local weights file, its sha256, the registry's label "v<n>") of the model's registry version.

    One registry request per call; the artifacts are downloaded only for a version not fetched
    before (or whose cached file is gone). Raises SourceError, which names the URI and what to
    check; the pipeline retries on the next poll.
    """
    assert spec.weights is not None
    ref = _parse(spec)
    mlflow = _import_mlflow(spec)
    registry = _registry_uri(mlflow, spec)
    version = _resolve(mlflow, ref, registry, spec)
    weights_dir = Path(state_dir) / "weights"
    memo = _memo_file(Path(state_dir), registry, version)
    known = _read_memo(memo, version)
    if known is not None:
        found = cached(weights_dir, *known)
        if found is not None:
            return found, known[0], version.label
    path, digest = _download(mlflow, spec, ref, version, weights_dir)
    _write_memo(memo, version, digest, path.name)
    prune(weights_dir, keep=digest)
    return path, digest, version.label


# -- the URI and the registry ----------------------------------------------------------------------


def _parse(spec: ModelSpec) -> _Reference:
    """Split the URI (its shape is checked by the settings schema); a stage is checked here, so a
    typo costs no request and gets a message of ours."""
    assert spec.weights is not None
    uri = spec.weights
    rest = uri.removeprefix("models:/")
    if "@" in rest:
        name, alias = rest.split("@", 1)
        return _Reference(uri, name, alias=alias)
    name, last = rest.split("/", 1)
    if re.fullmatch(r"[0-9]+", last):  # not str.isdigit: "²" is a digit to it
        return _Reference(uri, name, version=str(int(last)))
    stage = _LATEST if last.lower() == _LATEST else _STAGES.get(last.lower())
    if stage is None:
        raise SourceError(
            f"model {spec.name}: {shown(uri)}: {shown(last)} is neither a version number nor an MLflow "
            f"stage (None, Staging, Production, Archived, or latest); prefer an alias, "
            f"models:/{shown(name)}@<alias> (MLflow deprecated stages)"
        )
    return _Reference(uri, name, stage=stage)


def _import_mlflow(spec: ModelSpec) -> ModuleType:
    """Import mlflow (only here: the daemon pays for it only with a registry model, and it never
    pulls torch), with the defaults of the module docstring."""
    for key, value in _MLFLOW_DEFAULTS.items():
        os.environ.setdefault(key, value)
    try:
        import mlflow
        import mlflow.artifacts
        import mlflow.exceptions
        import mlflow.tracking
    except ImportError as exc:
        if exc.name not in (None, "mlflow") and not str(exc.name).startswith("mlflow."):
            detail = f" (it needs {shown(exc.name)}: reinstall it)"  # a broken install, not a missing one
        else:
            detail = ""
        raise SourceError(
            f"model {spec.name}: weights {shown(spec.weights or '')} are in an MLflow registry, but mlflow "
            f"cannot be imported{detail}; pip install 'persistence-monitor[mlflow]'"
        ) from None
    return mlflow


def _registry_uri(mlflow: ModuleType, spec: ModelSpec) -> str:
    """The registry MLflow would use; refused when nothing chose one.

    MLflow's fallback, a local `mlflow.db` or `./mlruns` in the working directory, would be created
    silently by the daemon: never what a deployment meant.
    """
    if not (mlflow.tracking.is_tracking_uri_set() or os.environ.get("MLFLOW_REGISTRY_URI")):
        raise SourceError(
            f"model {spec.name}: weights {shown(spec.weights or '')} need an MLflow registry, but "
            "MLFLOW_TRACKING_URI is not set; set it in the daemon's environment to the tracking server "
            "(e.g. http://mlflow:5000), with MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_USERNAME/"
            "MLFLOW_TRACKING_PASSWORD if the server needs them"
        )
    return str(mlflow.get_registry_uri())


def _resolve(mlflow: ModuleType, ref: _Reference, registry: str, spec: ModelSpec) -> _Version:
    """Ask the registry which version the URI names: one request."""
    try:
        client = mlflow.tracking.MlflowClient(registry_uri=registry)
    except Exception as exc:  # an unsupported registry URI, an auth plugin's own errors
        raise SourceError(
            f"model {spec.name}: cannot use the MLflow registry at {shown(redact_url(registry))} "
            f"({type(exc).__name__}: {_first_line(exc)}); check MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI"
        ) from None
    try:
        if ref.alias is not None:
            found = client.get_model_version_by_alias(ref.name, ref.alias)
        elif ref.version is not None:
            found = client.get_model_version(ref.name, ref.version)
        else:
            found = _latest_in_stage(client, ref, spec)
    except mlflow.exceptions.MlflowException as exc:
        raise _registry_error(exc, ref, registry, spec, client) from None
    except (OSError, ValueError, RuntimeError) as exc:  # transport and SDK errors outside MlflowException
        raise SourceError(
            f"model {spec.name}: cannot reach the MLflow registry at {shown(redact_url(registry))} "
            f"({type(exc).__name__}: {_first_line(exc)}); check MLFLOW_TRACKING_URI and that the server is up "
            "(it is retried on the next poll)"
        ) from None
    status = str(found.status or "READY")
    if status != "READY":
        raise SourceError(
            f"model {spec.name}: {shown(ref.uri)} is version {found.version} of {shown(found.name)}, whose "
            f"registration is not complete ({shown(status)}); it is retried on the next poll "
            "(FAILED_REGISTRATION: register the version again)"
        )
    stamp = f"{found.creation_timestamp}\0{found.source}".encode()
    return _Version(str(found.name), str(found.version), hashlib.sha256(stamp).hexdigest())


def _latest_in_stage(client: Any, ref: _Reference, spec: ModelSpec) -> Any:
    stages = None if ref.stage == _LATEST else [ref.stage]
    with warnings.catch_warnings():
        # Stages are deprecated upstream (aliases replace them); the README says so, once.
        warnings.simplefilter("ignore", FutureWarning)
        versions = client.get_latest_versions(ref.name, stages=stages)
    if not versions:
        where = "any stage" if ref.stage == _LATEST else f"stage {ref.stage}"
        raise SourceError(
            f"model {spec.name}: {shown(ref.uri)}: no version of registered model {shown(ref.name)} is in "
            f"{where}; transition one there, or point models[].weights at an alias "
            f"(models:/{shown(ref.name)}@<alias>)"
        )
    return max(versions, key=lambda v: int(v.version))


# -- registry errors -------------------------------------------------------------------------------


def _registry_error(exc: Any, ref: _Reference, registry: str, spec: ModelSpec, client: Any) -> SourceError:
    """Translate an MlflowException into what to check. Messages are the same at every poll (the
    daemon compares them to see a change), so they never hold a library's text with addresses."""
    where = redact_url(registry)
    head = f"model {spec.name}: {shown(ref.uri)}"
    transport = _transport_failure(exc)
    if transport is not None:
        return SourceError(
            f"{head}: cannot reach the MLflow registry at {shown(where)} ({transport}); check "
            "MLFLOW_TRACKING_URI and that the server is up (it is retried on the next poll)"
        )
    code = str(getattr(exc, "error_code", "") or "")
    if code in _AUTH_CODES:
        return SourceError(
            f"{head}: the MLflow registry at {shown(where)} refused the request ({code}); check "
            "MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, and that "
            f"this user may read registered model {shown(ref.name)}"
        )
    if code in _NOT_FOUND_CODES:
        return SourceError(f"{head}: {_not_found(ref, client)}")
    status = _http_status(exc)
    return SourceError(
        f"{head}: the MLflow registry at {shown(where)} answered {code or 'an error'}"
        f"{f' (HTTP {status})' if status else ''}; check the server's log (it is retried on the next poll)"
    )


def _transport_failure(exc: BaseException) -> str | None:
    """The class name of a connection-level failure (refused, timeout, DNS, TLS) in `exc` or under
    it, if any: MLflow wraps those in an MlflowException whose text holds the URL and addresses."""
    seen: BaseException | None = exc
    for _ in range(8):  # the chain is short; the bound only guards against a cycle
        if seen is None:
            return None
        if type(seen).__module__.startswith(("requests", "urllib3")) or isinstance(seen, _NETWORK_ERRORS):
            return type(seen).__name__
        seen = seen.__cause__ or seen.__context__
    return None


def _http_status(exc: Any) -> int | None:
    # A proxy's non-JSON answer ("failed with error code 502 != 200") has no error code of MLflow's.
    found = re.search(r"error code (\d{3}) ", str(exc))
    return int(found[1]) if found else None


def _not_found(ref: _Reference, client: Any) -> str:
    """Say what is missing: the model, or (for an existing model) the alias or the version."""
    try:
        model = client.get_registered_model(ref.name)  # the error path only: one more request
    except Exception as exc:
        if getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":
            return (
                f"the registry has no registered model {shown(ref.name)}; check the name in models[].weights "
                "(MLflow UI → Models, or MlflowClient().search_registered_models())"
            )
        return (
            "the registry found no such model version; check the name and the alias or version in "
            "models[].weights"
        )
    if ref.alias is not None:
        aliases = sorted(getattr(model, "aliases", None) or {})
        known = (
            f"its aliases: {', '.join(shown(a) for a in aliases[:_MAX_LISTED])}"
            if aliases
            else "it has no aliases"
        )
        return (
            f"registered model {shown(ref.name)} has no alias {shown(ref.alias)} ({known}); set it with "
            f"MlflowClient().set_registered_model_alias({ref.name!r}, {ref.alias!r}, <version>), or fix "
            "models[].weights"
        )
    return (
        f"registered model {shown(ref.name)} has no version {ref.version or ref.stage}; check the number "
        "in models[].weights against the registry (MLflow UI → Models)"
    )


# -- download and the choice of the weights file ---------------------------------------------------


def _download(
    mlflow: ModuleType, spec: ModelSpec, ref: _Reference, version: _Version, weights_dir: Path
) -> tuple[Path, str]:
    """Fetch the version's artifacts into a temp folder beside the cache, keep the weights file."""
    what = f"model {spec.name}: {shown(ref.uri)} ({version.label})"
    staging = staging_dir(weights_dir, "mlflow")
    try:
        try:
            # The registry is MLflow's current one, the same as `registry` (no `registry_uri=`: only
            # MLflow >= 3.5 takes it).
            root = mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{version.name}/{version.number}", dst_path=str(staging)
            )
        except Exception as exc:  # the artifact store's own client (S3, GCS, HTTP) raises its own kinds
            raise _download_error(exc, what, weights_dir) from None
        chosen = _choose(Path(root), spec, what)
        try:
            digest = sha256_file(chosen)
            path = publish(chosen, weights_dir, digest, chosen.name)
        except OSError as exc:
            raise _storage_error(exc, what, weights_dir) from None
        log.info("fetched %s: %s (sha256 %s)", what, chosen.relative_to(root).as_posix(), digest[:12])
        return path, digest
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _download_error(exc: Exception, what: str, weights_dir: Path) -> SourceError:
    transport = _transport_failure(exc)
    if transport is None and isinstance(exc, OSError):
        return _storage_error(exc, what, weights_dir)
    reason = transport or f"{type(exc).__name__}: {_first_line(exc)}"
    return SourceError(
        f"{what}: cannot download its artifacts ({reason}); check that the version's run still has its "
        "artifacts and that the artifact store is reachable (it is retried on the next poll)"
    )


def _storage_error(exc: OSError, what: str, weights_dir: Path) -> SourceError:
    return SourceError(
        f"{what}: cannot store its artifacts under {weights_dir}: {exc.strerror or exc}; check free space "
        "and permissions of state_dir"
    )


@dataclass(frozen=True)
class _Artifacts:
    """The downloaded files of one version (hidden ones left out), sorted by relative path."""

    root: Path
    files: list[Path]
    # The serialized module of an `mlflow.pytorch.log_model` model (file → what it holds), if any.
    flavour_files: dict[Path, str]

    def listing(self, paths: list[Path]) -> str:
        names = [shown(p.relative_to(self.root).as_posix()) for p in paths[:_MAX_LISTED]]
        more = len(paths) - len(names)
        return (", ".join(names) + (f" and {more} more" if more else "")) or "no files"


def _choose(root: Path, spec: ModelSpec, what: str) -> Path:
    """The weights file among the downloaded artifacts, by the rule of the module docstring."""
    artifacts = _artifacts(root)
    if spec.architecture == "torchscript":
        found = [p for p in artifacts.files if p.suffix.lower() in _TORCHSCRIPT_SUFFIXES]
        if not found:
            raise SourceError(_no_torchscript(what, artifacts))
    else:
        found = _state_dict_candidates(artifacts)
        if not found:
            raise SourceError(_no_state_dict(what, artifacts))
    if len(found) > 1:
        raise SourceError(
            f"{what} holds several weights files: {artifacts.listing(found)}; register a folder that "
            "holds exactly one"
        )
    return found[0]


def _state_dict_candidates(artifacts: _Artifacts) -> list[Path]:
    candidates = [p for p in artifacts.files if p not in artifacts.flavour_files]
    safetensors = [p for p in candidates if p.suffix.lower() == ".safetensors"]
    if safetensors:
        return safetensors
    pickles = [p for p in candidates if p.suffix.lower() in _STATE_DICT_SUFFIXES]
    return [p for p in pickles if p.name == _LOG_STATE_DICT_FILE] or pickles


def _artifacts(root: Path) -> _Artifacts:
    files = sorted(
        (
            p
            for p in root.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
        ),
        key=lambda p: p.relative_to(root).as_posix(),
    )
    return _Artifacts(root, files, _pytorch_flavour_files(root, files))


def _pytorch_flavour_files(root: Path, files: list[Path]) -> dict[Path, str]:
    mlmodel = root / "MLmodel"
    if mlmodel not in files:
        return {}
    try:
        document = yaml.safe_load(mlmodel.read_text(encoding="utf-8"))
        flavour = document["flavors"]["pytorch"]
        data = root / str(flavour.get("model_data") or "data")
    except (OSError, UnicodeDecodeError, yaml.YAMLError, KeyError, TypeError, AttributeError):
        return {}  # not a pytorch-flavour model: its files are plain artifacts
    return {data / name: kind for name, kind in _FLAVOUR_FILES.items() if data / name in files}


def _held(artifacts: _Artifacts) -> str:
    return ", ".join(
        f"{p.relative_to(artifacts.root).as_posix()} ({kind})" for p, kind in artifacts.flavour_files.items()
    )


def _no_state_dict(what: str, artifacts: _Artifacts) -> str:
    if artifacts.flavour_files:
        return (
            f"{what} is an MLflow pytorch-flavour model (mlflow.pytorch.log_model): it holds "
            f"{_held(artifacts)}, not a state_dict that loads weights-only (nothing from a registry may "
            f"run code in a worker); {_REGISTER_STATE_DICT}"
        )
    return (
        f"{what} holds no weights file (one .safetensors, or one .pt/.pth state_dict): found "
        f"{artifacts.listing(artifacts.files)}; {_REGISTER_STATE_DICT}"
    )


def _no_torchscript(what: str, artifacts: _Artifacts) -> str:
    if artifacts.flavour_files:
        return (
            f"{what} is an MLflow pytorch-flavour model without a TorchScript archive (it holds "
            f"{_held(artifacts)}); log the scripted module, mlflow.pytorch.log_model(torch.jit.script(model), "
            'serialization_format="pickle"), or use architecture torchvision:<builder> with a state_dict'
        )
    return (
        f"{what} holds no TorchScript archive (.pt/.pth/.ts): found {artifacts.listing(artifacts.files)}; "
        'log one with torch.jit.script(model).save("model.pt") and mlflow.log_artifact("model.pt", '
        '"weights"), then MlflowClient().create_model_version(name, source=f"runs:/{run_id}/weights", '
        "run_id=run_id)"
    )


def _first_line(exc: BaseException) -> str:
    line = next((part for part in str(exc).splitlines() if part.strip()), "")
    line = re.sub(r"://[^/\s]*@", "://", line)  # user:password@ in a URL (up to its last @)
    line = re.sub(r" at 0x[0-9a-f]+", "", line)  # object addresses differ at every poll
    return shown_text(line)[:160] or type(exc).__name__


# -- the memo of fetched versions ------------------------------------------------------------------


def _memo_file(state_dir: Path, registry: str, version: _Version) -> Path:
    """One small file per (registry, name, version): written once, so no lock and no lost update."""
    key = f"{redact_url(registry)}\0{version.name}\0{version.number}"  # no credentials, even hashed
    return state_dir / "cache" / "mlflow" / f"{hashlib.sha256(key.encode()).hexdigest()}.json"


def _read_memo(path: Path, version: _Version) -> tuple[str, str] | None:
    """(digest, file name) fetched for this version, or None (never fetched, or another version now)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # missing or corrupt: one download rebuilds it
    if not isinstance(record, dict) or record.get("format") != _MEMO_FORMAT:
        return None
    digest, name = record.get("digest"), record.get("file")
    if (
        record.get("signature") != version.signature
        or not isinstance(digest, str)
        or not isinstance(name, str)
    ):
        return None
    if not re.fullmatch(r"[0-9a-f]{64}", digest) or Path(name).name != name or name.startswith("."):
        return None  # a hand-edited record must not point outside the cache
    return digest, name


def _write_memo(path: Path, version: _Version, digest: str, name: str) -> None:
    """Record a fetched version; failing to only costs one more download later, so it is not raised."""
    record = {
        "format": _MEMO_FORMAT,
        "name": version.name,
        "version": version.number,
        "signature": version.signature,
        "digest": digest,
        "file": name,
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(record, fh, sort_keys=True)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        log.warning("cannot write %s (%s); version %s will be downloaded again", path, exc, version.label)
