"""Snapshot sources and model versions: what data and which weights exist right now.

    list_snapshots(task, dataset, state_dir=...)  -> [SnapshotCandidate]  complete snapshots, by id
    materialize(candidate, state_dir=...)         -> SnapshotInfo         local folder + content digest
    release_snapshot(info, state_dir=...)         -> None                 drop a rejected snapshot's extraction
    model_version(spec, state_dir=...)            -> ModelVersion         weights digest (memoised), fetched
    with_model_defaults(settings)                 -> Settings             image_size/normalize from the model

Local folders (or `file://`) hold snapshot folders and .tar/.tar.gz/.tgz/.zip archives; an
`http(s)://` source is a JSON manifest (DESIGN.md §3.3); any other fsspec URL (`s3://`, `gs://`,
`az://`) is read like a folder and each snapshot fetched once (`_object_store`). Weights may be a
local file, an fsspec or https URL (`_remote_weights`), an MLflow registry URI (`_mlflow`) or a
torchvision weights enum in torch's hub cache (`_hub`); remote ones are fetched by content into
`state_dir/weights/<sha256>/` (`_weights_cache`). Archives are extracted safely into
`state_dir/snapshots/<digest>/` and removed once unused (see `_extracted`); digests are memoised
in `state_dir/cache/digests.json`. Caps come from the `limits:` settings (`SnapshotLimits`).
Errors: SourceError (cannot list or read now), SnapshotRejected (the snapshot is bad, with a
`reason` code: bad_archive, checksum_mismatch, too_large).
"""

from ._candidate import SnapshotCandidate
from ._extracted import release_snapshot
from ._limits import DEFAULT_LIMITS, SnapshotLimits
from ._listing import list_snapshots
from ._materialize import materialize
from ._model_defaults import with_model_defaults
from ._model_version import model_version

__all__ = [
    "DEFAULT_LIMITS",
    "SnapshotCandidate",
    "SnapshotLimits",
    "list_snapshots",
    "materialize",
    "model_version",
    "release_snapshot",
    "with_model_defaults",
]
