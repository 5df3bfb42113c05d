"""Content digests of snapshots and model weights, and the memo that avoids re-hashing them."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

import monitor.sources._digest as digest_module
from monitor.errors import SourceError
from monitor.settings import ModelSpec
from monitor.sources import SnapshotCandidate, materialize, model_version


def _snapshot_dir(root: Path) -> Path:
    for rel, payload in {
        "train/cat/1.png": b"cat-one",
        "train/dog/1.JPG": b"dog-one",
        "test/cat/2.webp": b"cat-two",
        "test/dog/2.bmp": b"dog-two",
    }.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(payload)
    (root / "_SUCCESS").write_text("")
    return root


def _candidate(location: Path, kind: str = "directory") -> SnapshotCandidate:
    return SnapshotCandidate(
        task="t",
        dataset="d",
        snapshot=location.name,
        location=str(location),
        kind=kind,  # type: ignore[arg-type]
        sha256=None,
        timestamp=1.0,
        source=str(location.parent),
    )


def _digest(folder: Path, state_dir: Path) -> str:
    return materialize(_candidate(folder), state_dir=state_dir).digest


@pytest.fixture
def hash_calls(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Count every file the sources read to hash."""
    calls: list[Path] = []
    real: Callable[[Path], str] = digest_module.sha256_file

    def counting(path: Path) -> str:
        calls.append(Path(path))
        return real(path)

    monkeypatch.setattr(digest_module, "sha256_file", counting)
    return calls


def test_directory_digest_is_stable_and_independent_of_location(tmp_path: Path) -> None:
    first = _snapshot_dir(tmp_path / "a" / "s1")
    copy = tmp_path / "b" / "s1"
    shutil.copytree(first, copy)

    info = materialize(_candidate(first), state_dir=tmp_path / "state")

    assert info.root == first and info.snapshot == "s1" and info.timestamp == 1.0
    assert info.digest == _digest(first, tmp_path / "state2") == _digest(copy, tmp_path / "state")
    assert len(info.digest) == 64


@pytest.mark.parametrize(
    "change",
    [
        lambda root: (root / "train/cat/1.png").write_bytes(b"cat-ONE"),
        lambda root: (root / "train/cat/1.png").rename(root / "train/cat/9.png"),
        lambda root: (root / "train/cat/1.png").rename(root / "train/dog/1.png"),
        lambda root: (root / "test/cat/3.jpeg").write_bytes(b"new"),
    ],
    ids=["bytes", "rename", "relabel", "added"],
)
def test_directory_digest_follows_the_images(tmp_path: Path, change: Callable[[Path], object]) -> None:
    root = _snapshot_dir(tmp_path / "s1")
    before = _digest(root, tmp_path / "state")
    change(root)
    assert _digest(root, tmp_path / "state") != before


def test_directory_digest_ignores_non_images_hidden_files_and_the_marker(tmp_path: Path) -> None:
    root = _snapshot_dir(tmp_path / "s1")
    before = _digest(root, tmp_path / "state")
    (root / "train/cat/notes.txt").write_text("x")
    (root / "train/cat/.hidden.png").write_bytes(b"x")
    (root / "_SUCCESS").write_text("rewritten")
    assert _digest(root, tmp_path / "state") == before


def test_unchanged_snapshot_is_never_rehashed(tmp_path: Path, hash_calls: list[Path]) -> None:
    root = _snapshot_dir(tmp_path / "s1")
    state = tmp_path / "state"

    first = _digest(root, state)
    assert len(hash_calls) == 4
    assert (state / "cache" / "digests.json").is_file()

    hash_calls.clear()
    assert _digest(root, state) == first
    assert hash_calls == []

    # A change with a new size/mtime is noticed: the whole snapshot is hashed again.
    target = root / "train/cat/1.png"
    target.write_bytes(b"cat-one-changed")
    assert _digest(root, state) != first
    assert len(hash_calls) == 4


def test_a_corrupt_memo_is_rebuilt(tmp_path: Path, hash_calls: list[Path]) -> None:
    root = _snapshot_dir(tmp_path / "s1")
    memo = tmp_path / "state" / "cache" / "digests.json"
    memo.parent.mkdir(parents=True)
    memo.write_text("{ not json")

    digest = _digest(root, tmp_path / "state")

    assert json.loads(memo.read_text())["format"] == 1
    hash_calls.clear()
    assert _digest(root, tmp_path / "state") == digest and hash_calls == []
    assert not [p for p in memo.parent.iterdir() if p.name != "digests.json"]  # no temp files left


def test_archive_digest_is_the_archive_sha256_and_is_memoised(tmp_path: Path, hash_calls: list[Path]) -> None:
    folder = _snapshot_dir(tmp_path / "s1")
    archive = tmp_path / "src" / "s1.tar"
    archive.parent.mkdir()
    with tarfile.open(archive, "w") as tar:
        tar.add(folder, arcname="s1")

    info = materialize(_candidate(archive, "archive"), state_dir=tmp_path / "state")

    assert info.digest == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert hash_calls == [archive]
    hash_calls.clear()
    assert materialize(_candidate(archive, "archive"), state_dir=tmp_path / "state").digest == info.digest
    assert hash_calls == []


def test_a_vanished_directory_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"t/d/gone: directory .*gone is gone"):
        materialize(_candidate(tmp_path / "gone"), state_dir=tmp_path / "state")


# -- model versions -----------------------------------------------------------------------------


def test_model_version_is_the_weights_digest_memoised(tmp_path: Path, hash_calls: list[Path]) -> None:
    weights = tmp_path / "r18.pt"
    weights.write_bytes(b"weights v1")
    spec = ModelSpec(name="r18", architecture="torchvision:resnet18", weights=weights)

    version = model_version(spec, state_dir=tmp_path / "state")

    assert version.digest == hashlib.sha256(b"weights v1").hexdigest()
    assert version.version == version.digest[:12]
    assert (version.model, version.architecture, version.weights) == ("r18", "torchvision:resnet18", weights)
    assert model_version(spec, state_dir=tmp_path / "state") == version
    assert len(hash_calls) == 1

    weights.write_bytes(b"weights v2, longer")
    assert (
        model_version(spec, state_dir=tmp_path / "state").digest
        == hashlib.sha256(b"weights v2, longer").hexdigest()
    )


def test_unreadable_weights_are_a_source_error_naming_the_file(tmp_path: Path) -> None:
    spec = ModelSpec(name="r18", architecture="torchvision:resnet18", weights=tmp_path / "missing.pt")
    with pytest.raises(SourceError, match=r"weights file .*missing\.pt of model r18"):
        model_version(spec, state_dir=tmp_path / "state")


def test_python_factory_is_versioned_by_its_source_without_importing_it(tmp_path: Path) -> None:
    package = tmp_path / "cfg" / "pm_test_factories"
    package.mkdir(parents=True)
    # Importing either file would fail loudly: the digest must come from reading, not importing.
    (package / "__init__.py").write_text("raise RuntimeError('package imported')\n")
    (package / "nets.py").write_text("raise RuntimeError('module imported')\ndef build(): ...\n")
    spec = ModelSpec(name="custom", architecture="python:pm_test_factories.nets:build")

    version = model_version(spec, state_dir=tmp_path / "state", config_dir=tmp_path / "cfg")

    assert version.digest == hashlib.sha256((package / "nets.py").read_bytes()).hexdigest()
    assert version.weights is None
    assert "pm_test_factories" not in sys.modules and "pm_test_factories.nets" not in sys.modules

    (package / "nets.py").write_text("def build(): return 2\n")
    os.utime(package / "nets.py", ns=(1, 1))
    changed = model_version(spec, state_dir=tmp_path / "state", config_dir=tmp_path / "cfg")
    assert changed.digest != version.digest


def test_python_factory_that_cannot_be_found_has_an_empty_digest(tmp_path: Path) -> None:
    spec = ModelSpec(name="custom", architecture="python:pm_no_such_module.nets:build")
    version = model_version(spec, state_dir=tmp_path / "state", config_dir=tmp_path)
    assert version.digest == "" and version.version == "factory"
