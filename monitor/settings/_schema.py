"""The configuration schema of DESIGN.md §3.2, as pydantic models.

Everything here is validated once, at the edge (`load_settings`), and then passed down as a
typed, frozen value. Defaults that matter carry their reason beside them.
"""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .._checks import duplicates
from ..types import ModelRole, Severity
from ._durations import parse_duration
from ._locations import (
    Headers,
    StorageOptions,
    WeightsKind,
    WeightsLocation,
    local_path,
    source_kind,
    weights_kind,
)

__all__ = [
    "AlertRule",
    "AlertmanagerSpec",
    "AlertsSettings",
    "BelowRule",
    "CellDropRule",
    "DatasetSpec",
    "DeriveSpec",
    "DropRule",
    "EarlyWarningSettings",
    "EstimateDropRule",
    "ExecutorSettings",
    "IncompleteRule",
    "LimitsSettings",
    "LogSpec",
    "MetricsSettings",
    "ModelSpec",
    "Normalize",
    "NotifierSpec",
    "PagerDutySpec",
    "RetentionSettings",
    "ScheduleSettings",
    "ServerSettings",
    "Settings",
    "Shift",
    "SlackSpec",
    "StaleRule",
    "StrategySpec",
    "TaskSpec",
    "WebhookSpec",
    "webhook_key",
]

# Names become Prometheus label values and file names: keep them boring and bounded.
NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
Seconds = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]

_ARCHITECTURE = re.compile(
    r"^(torchvision:[A-Za-z_][A-Za-z0-9_]*|torchscript|python:[A-Za-z_][\w.]*:[A-Za-z_][\w.]*"
    r"|timm:[A-Za-z0-9_][\w.-]*|hf:\S.*)$"
)
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_TORCHVISION_WEIGHTS = re.compile(r"^torchvision:[A-Za-z_]\w*_Weights\.[A-Za-z_]\w*$")
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def _require_unique(names: list[str], what: str) -> None:
    repeated = duplicates(names)
    if repeated:
        raise ValueError(f"duplicate {what} name {repeated[0]!r}: names must be unique")


class _Strict(BaseModel):
    """Base for every section: unknown keys are errors (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Strict):
    # Loopback by default: the API can trigger work, so exposing it is an explicit decision.
    host: str = "127.0.0.1"
    port: int = Field(9775, ge=1, le=65535)
    # Without a token, mutating API calls are refused entirely (never "open by default").
    api_token: SecretStr | None = None

    @field_validator("api_token")
    @classmethod
    def _real_token(cls, value: SecretStr | None) -> SecretStr | None:
        # An empty value in an EnvironmentFile or a Kubernetes Secret must not turn auth off (an
        # empty Bearer credential would match it) nor silently mean "no token".
        if value is not None:
            token = value.get_secret_value()
            if not token.strip():
                raise ValueError(
                    "empty: set a long random token (e.g. `openssl rand -hex 32`), or remove the "
                    "setting to refuse every mutating API call"
                )
            if token != token.strip() or any(not c.isprintable() for c in token):
                raise ValueError(
                    "has leading or trailing whitespace or control characters (often a stray newline "
                    "from the file it was read from); a client could never send it in a header"
                )
        return value


class ScheduleSettings(_Strict):
    evaluate: str = "0 */6 * * *"  # cron, UTC: a full re-evaluation four times a day
    poll: Seconds = 60.0  # how often sources and weights are checked for something new
    # Two daemons on one PostgreSQL store: the leader renews its lease every third of this; a
    # standby takes over this long after the leader's last renewal (its host lost, SIGKILL).
    lease_ttl: Seconds = 30.0
    # What a new snapshot (or model version) found by a poll starts. grid: the whole grid at
    # once. probes: only the cheap part (knn and linear cells, early_warning estimators), within
    # seconds to minutes, while the full grid waits for the `evaluate` schedule (a slow grid on
    # a busy GPU still warns early).
    on_new_data: Literal["grid", "probes"] = "grid"

    @field_validator("lease_ttl")
    @classmethod
    def _lease_long_enough(cls, value: float) -> float:
        if value < 3:
            raise ValueError("must be at least 3s: the leader renews it every third of it")
        return value

    @field_validator("evaluate")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        from apscheduler.triggers.cron import CronTrigger  # light import, no scheduler started

        try:
            CronTrigger.from_crontab(value, timezone="UTC")
        except ValueError as exc:
            raise ValueError(f"not a valid 5-field cron expression ({exc})") from None
        return value


def _worker_count(value: object) -> object:
    """'auto' or a whole number of worker processes, 1-256 (also from an env var's text)."""
    if value == "auto":
        return value
    try:
        count = int(str(value).strip()) if not isinstance(value, bool | float) else 0
    except ValueError:
        count = 0
    if not 1 <= count <= 256:
        raise ValueError(f"expected 'auto' or a number of worker processes from 1 to 256, got {value!r}")
    return count


_RAY_ADDRESS = re.compile(r"^(auto|ray://[^\s/]+(:\d+)?|[A-Za-z0-9_.\[\]:-]+:\d+)$")


class ExecutorSettings(_Strict):
    # local: one worker process per device on this machine; ray: actors on a Ray cluster
    # (pip install 'persistence-monitor[ray]'; README "Scaling out").
    kind: Literal["local", "ray"] = "local"
    # ray: null starts a local Ray instance on 127.0.0.1; "auto" follows RAY_ADDRESS (or the Ray
    # node started on this host); "host:port" joins a cluster's head (the GCS port, 6379);
    # "ray://host:10001" connects through Ray Client (needs `ray[client]`).
    address: str | None = None
    gpus_per_worker: float = Field(1.0, gt=0)  # ray: GPUs per actor (fractions share a GPU)
    cpus_per_worker: float = Field(1.0, gt=0)  # ray: CPUs per actor (its torch threads on CPU actors)
    max_workers: int | None = Field(None, ge=1)  # ray: at most this many actors (null: as the cluster allows)
    # ray: the job's runtime environment (pip, working_dir, env_vars, ...), as `ray.init` takes it
    runtime_env: dict[str, Any] | None = None
    # A trial that runs longer than this is abandoned, its worker replaced, and the cell failed.
    cell_timeout: Seconds = 3600.0
    # Stack partial/full fine-tunes that differ only by seed/lr/weight decay into one vmapped
    # model ("auto": on GPUs, where a small model alone leaves the device idle).
    batch_finetunes: Literal["auto", "always", "never"] = "auto"
    # torch.compile the training forward (compiled once per architecture and input shape); pays
    # off for long grids on GPUs, costs a compile per model version.
    compile: bool = False
    # Numeric precision of training and feature extraction. "auto": bf16 autocast on GPUs that
    # compute bf16 natively (compute capability 8.0 and newer), fp32 elsewhere, every CPU
    # included (torch's oneDNN bf16 convolution backward was seen to return wrong gradients on
    # an AVX512-BF16 CPU; README "Troubleshooting"). "fp32" forces full precision everywhere
    # (slower, closer to a plain PyTorch loop); "bf16" forces autocast, CPUs included (slow
    # where bf16 is emulated; older GPUs may lack bf16 kernels). Stacked fine-tunes train in
    # fp32 on CPUs.
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    # Worker processes when the device is the CPU: work groups run side by side and the cores are
    # shared among the busy ones (a lone group gets them all). "auto": 2 on machines with 2 or
    # more cores (measured on 2 cores: two 1-thread workers beat one 2-thread worker by 11-33%
    # per step). Each worker holds its own model and data: 1 halves the memory.
    cpu_workers: Annotated[Literal["auto"] | int, BeforeValidator(_worker_count)] = "auto"

    @field_validator("address")
    @classmethod
    def _ray_address(cls, value: str | None) -> str | None:
        if value is not None and not _RAY_ADDRESS.match(value):
            raise ValueError("expected null (a local Ray instance), auto, host:port or ray://host:port")
        return value

    # On SIGTERM the running fine-tune may finish within this time; then it is abandoned (and
    # redone when the interrupted run resumes at the next start).
    shutdown_grace: Seconds = 30.0
    # A run whose store stops taking writes (a PostgreSQL restart or fail-over, a full disk) keeps
    # its finished fine-tunes in memory and waits this long for the store before it fails: a
    # restart takes seconds, a minute covers a slow one.
    store_outage: Seconds = 60.0
    # A folder for TensorBoard event files: every trial's loss per epoch and score, one file per
    # <run_id>/<model>/<task>/<dataset>/<strategy>/seed<k> (`tensorboard --logdir` on it).
    # null: none written (the curves are in the store either way). Needs the `tensorboard` extra.
    tensorboard_dir: Path | None = None


class Normalize(_Strict):
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # ImageNet statistics: torchvision's
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)  # pre-trained weights expect these

    @field_validator("std")
    @classmethod
    def _positive(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(v <= 0 for v in value):
            raise ValueError("every std must be > 0")
        return value


class ModelSpec(_Strict):
    name: Name
    architecture: str
    # A local file, any fsspec URL (s3://, gs://, …), an http(s) URL, an MLflow registry URI
    # (models:/name@alias) or a torchvision weights enum (torchvision:ResNet50_Weights.IMAGENET1K_V2).
    weights: WeightsLocation | None = None
    weights_sha256: str | None = None  # http(s) weights: the content must have this sha256
    storage_options: StorageOptions = {}  # fsspec weights: credentials, endpoint (all SecretStr)
    headers: Headers = {}  # http(s) weights: e.g. Authorization (values secret; Name_file: path)
    head: str | None = None  # attribute path of the classifier, e.g. "fc" or "classifier.1"
    # Attribute path of the container whose children are the stages `partial` counts from the end
    # (e.g. "encoder.layers" for a ViT); found automatically for the usual torchvision families.
    blocks: str | None = None
    image_size: int = Field(224, ge=8, le=1024)
    normalize: Normalize = Normalize()
    # deployed: scored, compared and alerted on. candidate: scored on the same grid and compared
    # (`compare`, the status page, `report`), but alerted on only by a rule that names it, so
    # that evaluating a model before promoting it pages nobody. Not part of any trial key: a
    # candidate promoted to deployed keeps its stored results.
    role: ModelRole = "deployed"

    @field_validator("architecture")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        if not _ARCHITECTURE.match(value):
            raise ValueError(
                "expected 'torchvision:<builder>' (e.g. torchvision:resnet18), 'timm:<model name>', "
                "'hf:<folder saved with save_pretrained>', 'torchscript', or 'python:<module>:<callable>'"
            )
        return value

    @field_validator("weights_sha256")
    @classmethod
    def _sha256(cls, value: str | None) -> str | None:
        if value is not None and not _SHA256.match(value):
            raise ValueError("expected the weights' sha256 as 64 hex digits")
        return value.lower() if value else value

    @model_validator(mode="after")
    def _weights_when_required(self) -> ModelSpec:
        if self.weights is None:
            if self.kind in ("torchscript", "torchvision", "timm"):
                # No download at run time: a deployed model is weights we can digest.
                what = "the archive" if self.kind == "torchscript" else "a .pt/.pth/.safetensors state_dict"
                raise ValueError(f"weights: a {self.kind} model needs `weights:` ({what})")
        else:
            kind = self.weights_kind
            if kind == "torchvision":
                if self.kind != "torchvision":
                    raise ValueError(
                        "weights: a torchvision weights enum only goes with architecture torchvision:<builder>"
                    )
                if not _TORCHVISION_WEIGHTS.match(self.weights):
                    raise ValueError(
                        "weights: expected torchvision:<Enum>_Weights.<NAME>, e.g. "
                        "torchvision:ResNet50_Weights.IMAGENET1K_V2"
                    )
            if kind == "mlflow" and not re.match(r"^models:/[^/@]+([@/][^/@]+)$", self.weights):
                raise ValueError(
                    "weights: expected models:/<name>@<alias>, models:/<name>/<version> or "
                    "models:/<name>/<stage>"
                )
        if self.kind == "hf" and self.head is not None:
            raise ValueError("head: an hf: model has no classifier to name (its pooled features are used)")
        if self.weights_sha256 is not None and self.weights_kind != "http":
            raise ValueError("weights_sha256: only for http(s) weights (other kinds are digested as found)")
        if self.headers and self.weights_kind != "http":
            raise ValueError("headers: only for http(s) weights")
        if self.storage_options and self.weights_kind != "fsspec":
            raise ValueError("storage_options: only for fsspec weights (s3://, gs://, az://, …)")
        return self

    @property
    def kind(self) -> str:
        return self.architecture.split(":", 1)[0]

    @property
    def weights_kind(self) -> WeightsKind | None:
        """Where the weights live: file, http, fsspec, mlflow or torchvision (None: no weights)."""
        return weights_kind(self.weights) if self.weights is not None else None

    def with_local_weights(self, path: Path | None) -> ModelSpec:
        """This spec as a worker gets it: `weights` is the local file remote weights were fetched to.

        (s3://, https://, models:/ and torchvision enum weights are fetched by the sources layer;
        a worker loads that file and never sees the remote location or its credentials.)
        """
        if path is None or self.weights_kind in (None, "file"):
            return self
        return self.model_copy(
            update={"weights": str(path), "weights_sha256": None, "storage_options": {}, "headers": {}}
        )

    @property
    def weights_path(self) -> Path | None:
        """The local weights file (a worker only ever sees this kind: remote weights are fetched first)."""
        if self.weights is None or self.weights_kind != "file":
            return None
        return local_path(self.weights)


# The corruptions a derived dataset can apply (their five severities: `monitor.data.SHIFTS`).
Shift = Literal["gaussian_noise", "gaussian_blur", "jpeg", "brightness", "contrast", "rotation", "pixelate"]


class DeriveSpec(_Strict):
    """A dataset made from another one of the same task: its current snapshot, corrupted.

    The corruption is deterministic: each image's random draws (noise, the direction of a
    rotation) come from `seed` and the image's path within the snapshot.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    from_: Name = Field(alias="from")  # the dataset of the same task whose snapshots are corrupted
    shift: Shift
    severity: int = Field(ge=1, le=5)  # 1 (mild) to 5 (severe), as in ImageNet-C
    # test: fine-tune on the clean train split, score on the corrupted test split: how robust
    # what the model learnt is to the shift (the usual robustness reading, and the default).
    # both: train and test split corrupted: how well the model still adapts to shifted data.
    apply_to: Literal["test", "both"] = "test"
    seed: int = Field(0, ge=0, lt=2**63)


class DatasetSpec(_Strict):
    """A dataset: snapshots from a `source`, or a corrupted copy of another dataset's (`derive`)."""

    name: Name
    # A local folder (or file://), an http(s) manifest, or any fsspec URL (s3://bucket/prefix/, …)
    source: str | None = None
    derive: DeriveSpec | None = None  # instead of `source`: another dataset's snapshots, corrupted
    # Spark/Hadoop convention: a directory snapshot counts only once the writer drops this file.
    ready_marker: str | None = "_SUCCESS"
    storage_options: StorageOptions = {}  # fsspec sources: credentials, endpoint (all SecretStr)
    headers: Headers = {}  # http(s) manifests: e.g. Authorization (values secret; Name_file: path)

    @model_validator(mode="after")
    def _options_fit_source(self) -> DatasetSpec:
        if self.source is None:
            if self.derive is None:
                raise ValueError(
                    "source: required: a folder or URL that holds snapshots (or `derive:` to make the "
                    "dataset a corrupted copy of another one)"
                )
            for field in ("ready_marker", "storage_options", "headers"):
                if field in self.model_fields_set:
                    raise ValueError(
                        f"{field}: only for a dataset with a `source` (a derived dataset follows the "
                        "snapshots of the dataset it is derived from)"
                    )
            return self
        if self.derive is not None:
            raise ValueError(
                "derive: a dataset has either a `source` of its own or `derive:` (a corrupted copy of "
                "another dataset), not both"
            )
        kind = source_kind(self.source)
        if self.headers and kind != "http":
            raise ValueError("headers: only for http(s) manifest sources")
        if self.storage_options and kind != "fsspec":
            raise ValueError("storage_options: only for fsspec sources (s3://, gs://, az://, …)")
        return self

    @property
    def kind(self) -> str:
        """local, http or fsspec; derived for a dataset made from another one."""
        return source_kind(self.source) if self.source is not None else "derived"

    @property
    def location(self) -> str:
        """The `source` of a dataset that has one (ValueError for a derived dataset: it has none)."""
        if self.source is None:
            raise ValueError(f"dataset {self.name} is derived: it has no source of its own")
        return self.source


# -- limits: what one snapshot may cost in disk and memory ----------------------------------------

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b|b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_SIZE_UNITS.update({"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40})


def parse_size(value: object) -> int:
    """A size in bytes from `4GiB`, `500MB`, `100kb` or a plain number of bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _SIZE.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"expected a size such as 4GiB, 500MB or a number of bytes, got {value!r}")
    return int(float(match[1]) * _SIZE_UNITS[(match[2] or "b").lower()])


Bytes = Annotated[int, BeforeValidator(parse_size), Field(gt=0)]


class LimitsSettings(_Strict):
    """Caps that keep one hostile or broken snapshot from filling the disk or the memory."""

    # A compact-protocol snapshot (64 images per class) is megabytes to a few hundred MB; 4 GiB
    # leaves room for full-resolution images and many classes while a zip/tar bomb is stopped
    # long before it fills a disk that also holds the store and the decoded cache.
    max_archive_bytes: Bytes = 4 * 2**30  # uncompressed size of one archive, counted while extracting
    max_archive_members: int = Field(200_000, ge=1)  # files + folders of one archive: inodes, listing time
    max_download_bytes: Bytes = 4 * 2**30  # one remote archive as downloaded (same reasoning)
    # 40 MP is above the frames of common cameras and scanners (36-MP sensors, 6000x6000 scans);
    # decoding one costs ~120 MB in RGB per decoding thread. PIL itself only warns from 89 MP and
    # refuses from 179 MP. Every image is resized to image_size (at most 1024) anyway.
    max_image_pixels: int = Field(40_000_000, ge=1)


class RetentionSettings(_Strict):
    """How long the store keeps what (DESIGN.md §2 History). Pruning runs in the background.

    The defaults keep what each reader needs: per-cell detail (`run_cells`, the heat map, the
    cell drop rule's previous run, a cell's drill-down) for a quarter, enough to compare this
    quarter's grids with last quarter's, at 0.84 KB per cell per run; P(M) per run (a few hundred
    bytes per model) for two years, so that a trend over months and a year-over-year comparison
    stay on the plots; and the notifications sent, the alert history, for a year of on-call review.
    """

    enabled: bool = True
    cells_days: float = Field(90.0, gt=0)
    # Whatever their age, the latest runs keep their cells: a daemon that evaluates rarely, or
    # was stopped for months, still shows (and alerts on) its latest grids.
    keep_runs: int = Field(20, ge=1)
    # null: keep P(M) history forever. Never shorter than the cell window (history outlives detail).
    history_days: float | None = Field(730.0, gt=0)
    notifications_days: float = Field(365.0, gt=0)
    # A pass every hour, in transactions of at most `batch` runs (or 10x as many trials): each one
    # holds the write lock for milliseconds, so neither a scrape nor a run ever waits on it.
    interval: Seconds = 3600.0
    batch: int = Field(5, ge=1, le=1000)

    @model_validator(mode="after")
    def _history_outlives_cells(self) -> RetentionSettings:
        if self.history_days is not None and self.history_days < self.cells_days:
            raise ValueError(
                f"history_days ({self.history_days:g}) must be at least cells_days ({self.cells_days:g}): "
                f"a run's P(M) is kept at least as long as its cells"
            )
        return self


class EarlyWarningSettings(_Strict):
    """Transferability estimates computed on the frozen features of every model x dataset snapshot.

    logme: LogME (You et al., ICML 2021), the log marginal evidence of a Bayesian linear model
    of the one-hot labels on the features, per training example (higher: transfers better).
    hscore: H-score (Bao et al., ICIP 2019), tr(cov(f)^+ cov(E[f|y])), the features' class
    separability. Neither is a metric in [0, 1]: they are stored, exported and alerted on
    (`estimate_drop`), never counted in P(M). Empty: none computed.
    """

    estimators: list[Literal["logme", "hscore"]] = Field(default_factory=list)

    @field_validator("estimators")
    @classmethod
    def _unique_estimators(cls, value: list[str]) -> list[str]:
        _require_unique(value, "estimator")
        return value


class MetricsSettings(_Strict):
    """What /metrics exports per cell: `persistence_cell_score` is models x cells series.

    all: every cell of every model's latest run (about 580 series per 500-cell model: fine below
    ~10 k series); worst: only each model's `worst_cells` lowest-scoring cells; none: no cell
    series (P(M), task, dataset and strategy scores stay). The store keeps every cell either way.
    """

    cell_series: Literal["all", "worst", "none"] = "all"
    worst_cells: int = Field(20, ge=1)


class TaskSpec(_Strict):
    name: Name
    metric: Literal["accuracy", "balanced_accuracy", "macro_f1"] = "accuracy"
    # The compact protocol: a deterministic per-class subsample keeps every cell cheap and
    # comparable across snapshots of different sizes. null = use everything.
    train_per_class: int | None = Field(64, ge=1)
    test_per_class: int | None = Field(64, ge=1)
    test_fraction: float = Field(0.2, gt=0, lt=1)  # only for snapshots without a test/ split
    datasets: list[DatasetSpec] = Field(min_length=1)

    @field_validator("datasets")
    @classmethod
    def _unique_datasets(cls, value: list[DatasetSpec]) -> list[DatasetSpec]:
        _require_unique([d.name for d in value], "dataset")
        return value

    @model_validator(mode="after")
    def _derived_from_a_source(self) -> TaskSpec:
        sources = [d.name for d in self.datasets if d.derive is None]
        for i, dataset in enumerate(self.datasets):
            if dataset.derive is None:
                continue
            origin = dataset.derive.from_
            where = f"datasets[{i}].derive.from"
            if origin == dataset.name:
                raise ValueError(f"{where}: {dataset.name!r} cannot be derived from itself")
            if origin not in {d.name for d in self.datasets}:
                known = ", ".join(sources) or "none: add a dataset with a `source`"
                raise ValueError(
                    f"{where}: no dataset {origin!r} in task {self.name} (derive from one of: {known})"
                )
            if origin not in sources:
                # One level only: a corruption applies to decoded snapshots, not to another one.
                raise ValueError(
                    f"{where}: {origin!r} is itself derived; derive from a dataset with a `source` "
                    f"({', '.join(sources)})"
                )
        return self


class StrategySpec(_Strict):
    """One fine-tune recipe: a cell is exactly what a plain PyTorch loop with these fields trains."""

    name: Name
    # knn: no training at all; the frozen features of the linear probes, classified by their
    # `k` nearest training images (cosine similarity, a distance-weighted vote; `_knn`).
    mode: Literal["linear", "partial", "full", "knn"]
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float | None = Field(None, gt=0)  # required by every mode that trains (all but knn)
    epochs: int | None = Field(None, ge=1, le=1000)  # required by every mode that trains
    batch_size: int = Field(64, ge=1)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)  # sgd only
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    trainable_blocks: int | None = Field(None, ge=1)  # partial only: how many last stages train
    # The learning rate over the steps. "constant" by default: what `torch.optim` does without a
    # scheduler, so a cell matches the loop a team writes unless the strategy says otherwise.
    schedule: Literal["constant", "cosine", "step", "linear"] = "constant"
    min_lr: float = Field(0.0, ge=0)  # cosine, linear: the rate the decay ends at
    step_size: int | None = Field(None, ge=1)  # step: epochs between two decays
    gamma: float = Field(0.1, gt=0, le=1)  # step: the factor of each decay (torch's StepLR default)
    warmup_epochs: int = Field(0, ge=0)  # linear warm-up from 0 before the schedule, in steps
    # partial: "frozen" keeps the stages that do not train in eval mode (their BatchNorm
    # statistics stay the pre-trained ones; the cached-activation fast path is exact);
    # "train" runs the whole model in train mode, as under `model.train()`.
    bn: Literal["frozen", "train"] = "frozen"
    augment: Literal["none", "flip", "crop_flip"] = "none"  # training images only
    # knn only: neighbours that vote (20: the k of DINO's k-NN evaluation, Caron et al. 2021).
    k: int = Field(20, ge=1, le=1000)

    @model_validator(mode="after")
    def _fields_fit_the_mode_and_schedule(self) -> StrategySpec:
        given = self.model_fields_set
        if self.mode == "knn":
            trains = sorted(given - {"name", "mode", "k"})
            if trains:
                raise ValueError(
                    f"{trains[0]}: a knn strategy does not train (it classifies the frozen features by "
                    "their k nearest training images); only `k` can be set"
                )
            return self
        if "k" in given:
            raise ValueError(f"k: only meaningful when mode is 'knn' (mode is {self.mode!r})")
        for field in ("lr", "epochs"):
            if field not in given or getattr(self, field) is None:
                raise ValueError(f"{field}: required when mode is {self.mode!r} (e.g. lr: 0.01, epochs: 5)")
        assert self.epochs is not None and self.lr is not None  # (for the type checker)
        if self.mode == "partial" and self.trainable_blocks is None:
            raise ValueError("trainable_blocks: required when mode is 'partial' (e.g. 1 = the last stage)")
        if self.mode != "partial" and self.trainable_blocks is not None:
            raise ValueError(
                f"trainable_blocks: only meaningful when mode is 'partial' (mode is {self.mode!r})"
            )
        if self.mode != "partial" and "bn" in given:
            raise ValueError(
                f"bn: only meaningful when mode is 'partial' (mode is {self.mode!r}: a full fine-tune "
                "trains every BatchNorm, a linear probe keeps the backbone in eval mode)"
            )
        if self.schedule == "step" and self.step_size is None:
            raise ValueError("step_size: required when schedule is 'step' (epochs between two decays)")
        if self.schedule != "step":
            for field in ("step_size", "gamma"):
                if field in given:
                    raise ValueError(
                        f"{field}: only meaningful when schedule is 'step' (schedule is {self.schedule!r})"
                    )
        if self.schedule not in ("cosine", "linear") and self.min_lr:
            raise ValueError(
                f"min_lr: only meaningful when schedule is 'cosine' or 'linear' (schedule is {self.schedule!r})"
            )
        if self.min_lr > self.lr:
            raise ValueError(
                f"min_lr: {self.min_lr:g} is above lr {self.lr:g}; a decay ends below where it starts"
            )
        if self.warmup_epochs >= self.epochs:
            raise ValueError(
                f"warmup_epochs: {self.warmup_epochs} leaves no epoch of the {self.epochs} to train after "
                "the warm-up (use fewer warm-up epochs or more epochs)"
            )
        return self

    @property
    def train_lr(self) -> float:
        """`lr` of a strategy that trains (every mode but knn, where it is required)."""
        if self.lr is None:
            raise ValueError(f"strategy {self.name!r} ({self.mode}) trains nothing: it has no lr")
        return self.lr

    @property
    def train_epochs(self) -> int:
        """`epochs` of a strategy that trains (every mode but knn, where it is required)."""
        if self.epochs is None:
            raise ValueError(f"strategy {self.name!r} ({self.mode}) trains nothing: it has no epochs")
        return self.epochs


class _RuleBase(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,63}$")]
    severity: Severity = "warning"
    for_runs: int = Field(1, ge=1)  # consecutive runs the condition must hold before firing
    resolve_runs: int = Field(1, ge=1)  # consecutive clear runs before a firing alert resolves
    # The models the rule judges; null: every deployed model (candidates only when named here).
    models: list[str] | None = None

    def applies_to(self, model: str, role: ModelRole = "deployed") -> bool:
        """Whether the rule judges `model`: a rule naming models judges those, whatever their
        role; one naming none judges every deployed model and no candidate."""
        if self.models is None:
            return role == "deployed"
        return model in self.models


class BelowRule(_RuleBase):
    kind: Literal["below"]
    threshold: float = Field(ge=0, le=1)


class DropRule(_RuleBase):
    kind: Literal["drop"]
    baseline: Literal["previous", "rolling_median", "first", "pinned"] = "rolling_median"
    window: int = Field(7, ge=1)
    pinned_run: str | None = None
    min_drop: float = Field(0.03, ge=0)
    # 3 standard errors of the difference (seeds and test samples): < 1 false page per 500 stable
    # runs, and a drop of 0.05 caught within 2 runs in ≥ 95 % from 400 test images per dataset
    # (benchmarks/alerts.py; README "Alerts").
    z: float = Field(3.0, ge=0)

    @model_validator(mode="after")
    def _pinned_needs_run(self) -> DropRule:
        if self.baseline == "pinned" and not self.pinned_run:
            raise ValueError("pinned_run: required when baseline is 'pinned' (a run id from /api/v1/runs)")
        return self


class CellDropRule(_RuleBase):
    kind: Literal["cell_drop"]
    min_drop: float = Field(0.10, gt=0)


class StaleRule(_RuleBase):
    kind: Literal["stale"]
    max_age: Seconds = 86400.0


class IncompleteRule(_RuleBase):
    kind: Literal["incomplete"]
    min_coverage: float = Field(1.0, gt=0, le=1)


class EstimateDropRule(_RuleBase):
    """A transferability estimate fell relative to its own history (early warning between grids).

    Per (task, dataset, estimator) of the model: the baseline is the median of the estimate on
    the last `window` earlier snapshots or model versions; the condition holds when the newest
    value is more than `min_drop` below it, in the estimator's own units, and more than `z`
    standard errors of the difference (each estimate's from bootstrap resamples of its training
    images; `monitor.alerts._estimates`).
    """

    kind: Literal["estimate_drop"]
    estimators: list[Literal["logme", "hscore"]] | None = None  # null: every configured estimator
    window: int = Field(7, ge=1)
    # LogME is an average log-likelihood per example (nats): 0.05 is a 5 % lower likelihood of
    # the labels under the features. The z test does the rest (small splits are noisier).
    min_drop: float = Field(0.05, ge=0)
    z: float = Field(3.0, ge=0)


AlertRule = Annotated[
    BelowRule | DropRule | CellDropRule | StaleRule | IncompleteRule | EstimateDropRule,
    Field(discriminator="kind"),
]


def receiver_url_problem(url: str) -> str | None:
    """Why `url` cannot be a receiver's address (without repeating it: it may be a secret), or None."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - a bad port raises here
    except ValueError:
        return "not a valid URL"
    if parts.scheme not in ("http", "https"):
        return "expected an http:// or https:// URL"
    if not parts.hostname:
        return "the URL has no host"
    return None


def _receiver_url(value: str) -> str:
    problem = receiver_url_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def _secret_receiver_url(value: SecretStr) -> SecretStr:
    _receiver_url(value.get_secret_value())
    return value


def webhook_key(secret: str) -> bytes:
    """The HMAC key in a Standard Webhooks `whsec_<base64>` secret; ValueError (secret not shown)."""
    if not secret.startswith("whsec_"):
        raise ValueError("expected a Standard Webhooks secret starting with 'whsec_'")
    encoded = secret.removeprefix("whsec_")
    try:
        # Standard Webhooks secrets are base64; some issuers drop the padding.
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the webhook secret is not 'whsec_' followed by base64") from None
    if not key:
        raise ValueError("the webhook secret is empty after 'whsec_'")
    return key


# Checked in the schema, so that check-config, run-once and serve refuse the same configs.
ReceiverUrl = Annotated[str, AfterValidator(_receiver_url)]
SecretReceiverUrl = Annotated[SecretStr, AfterValidator(_secret_receiver_url)]


class _NotifierBase(_Strict):
    name: Name
    min_severity: Severity = "info"
    timeout: Seconds = 10.0
    # After this long without a successful delivery an event is dropped (and counted).
    max_age: Seconds = 86400.0


class WebhookSpec(_NotifierBase):
    kind: Literal["webhook"]
    url: ReceiverUrl
    secret: SecretStr | None = None  # Standard Webhooks signing secret, "whsec_<base64>"

    @field_validator("secret")
    @classmethod
    def _whsec(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            webhook_key(value.get_secret_value())
        return value


class SlackSpec(_NotifierBase):
    kind: Literal["slack"]
    url: SecretReceiverUrl  # an incoming-webhook URL is itself a credential


class PagerDutySpec(_NotifierBase):
    kind: Literal["pagerduty"]
    routing_key: SecretStr
    url: ReceiverUrl = "https://events.pagerduty.com/v2/enqueue"


class AlertmanagerSpec(_NotifierBase):
    kind: Literal["alertmanager"]
    url: ReceiverUrl


class LogSpec(_NotifierBase):
    kind: Literal["log"]


NotifierSpec = Annotated[
    WebhookSpec | SlackSpec | PagerDutySpec | AlertmanagerSpec | LogSpec,
    Field(discriminator="kind"),
]


def default_rules() -> list[Any]:
    """The rules used when the config has no `alerts.rules` (an explicit `rules: []` turns them off).

    The drop rule's numbers come from benchmarks/alerts.py (README, "Alerts"): on a grid whose
    every dataset gets a new snapshot (a new test sample) every run, they page less than once per
    500 stable runs, and from 400 test images per dataset on they catch a drop of 0.05 within two
    runs in at least 95 % of trials.
    """
    return [
        DropRule(
            name="PersistenceDrop",
            kind="drop",
            baseline="rolling_median",
            window=7,
            min_drop=0.03,
            z=3.0,
            resolve_runs=2,
            severity="warning",
        ),
        StaleRule(name="EvaluationStale", kind="stale", max_age=86400.0, severity="critical"),
        IncompleteRule(
            name="GridIncomplete", kind="incomplete", min_coverage=1.0, for_runs=2, severity="warning"
        ),
    ]


class AlertsSettings(_Strict):
    rules: list[AlertRule] = Field(default_factory=default_rules)
    # `run-once` waits this long for its notifications to be delivered before it exits (the rest
    # stays in the outbox for the next run or the daemon).
    drain_timeout: Seconds = 30.0
    # Where links in notifications point (the status page); null: no links.
    status_url: str | None = None
    notifiers: list[NotifierSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> AlertsSettings:
        _require_unique([r.name for r in self.rules], "rule")
        _require_unique([n.name for n in self.notifiers], "notifier")
        return self


class Settings(BaseSettings):
    """The whole configuration: the YAML file, overridden by `PM_*` environment variables."""

    model_config = SettingsConfigDict(
        env_prefix="PM_", env_nested_delimiter="__", extra="forbid", frozen=True, case_sensitive=False
    )

    state_dir: Path = Path("./state")
    database_url: SecretStr | None = None  # may hold a password: never printed as is
    device: str = "auto"
    executor: ExecutorSettings = ExecutorSettings()
    server: ServerSettings = ServerSettings()
    schedule: ScheduleSettings = ScheduleSettings()
    limits: LimitsSettings = LimitsSettings()
    retention: RetentionSettings = RetentionSettings()
    metrics: MetricsSettings = MetricsSettings()
    early_warning: EarlyWarningSettings = EarlyWarningSettings()
    models: list[ModelSpec] = Field(min_length=1)
    tasks: list[TaskSpec] = Field(min_length=1)
    strategies: list[StrategySpec] = Field(min_length=1)
    seeds: list[Annotated[int, Field(ge=0, lt=2**63)]] = Field(
        default_factory=lambda: [0, 1, 2], min_length=1
    )
    alerts: AlertsSettings = AlertsSettings()
    # Set by the loader to the config file's folder: `python:` model factories are imported from
    # there first, so a workspace can ship its own model code next to its config.
    config_dir: Path | None = None

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not _DEVICE.match(value):
            raise ValueError("expected auto, cpu, cuda, cuda:N or mps")
        return value

    @field_validator("models", "tasks", "strategies", "seeds")
    @classmethod
    def _unique(cls, value: list[Any], info: ValidationInfo) -> list[Any]:
        what = {"models": "model", "tasks": "task", "strategies": "strategy", "seeds": "seed"}
        _require_unique([str(getattr(v, "name", v)) for v in value], what[str(info.field_name)])
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's content arrives as init kwargs; `PM_*` variables must win over it.
        return env_settings, init_settings

    @property
    def resolved_database_url(self) -> str:
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite:///{(self.state_dir / 'monitor.db').as_posix()}"

    def model(self, name: str) -> ModelSpec:
        return next(m for m in self.models if m.name == name)

    def task(self, name: str) -> TaskSpec:
        return next(t for t in self.tasks if t.name == name)

    def strategy(self, name: str) -> StrategySpec:
        return next(s for s in self.strategies if s.name == name)
