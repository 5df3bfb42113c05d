"""Listing local snapshot sources: which entries are snapshots, in what order, and what is refused."""

from __future__ import annotations

import os
import tarfile
import zipfile
from pathlib import Path
from typing import Literal

import pytest

from monitor.errors import SourceError
from monitor.settings import DatasetSpec
from monitor.sources import SnapshotCandidate, list_snapshots


def _dir_snapshot(source: Path, name: str, *, ready: bool = True) -> Path:
    folder = source / name
    (folder / "a").mkdir(parents=True)
    (folder / "a" / "x.png").write_bytes(b"not decoded while listing")
    if ready:
        (folder / "_SUCCESS").write_text("")
    return folder


def _tar(path: Path, mode: Literal["w", "w:gz"] = "w") -> Path:
    with tarfile.open(path, mode) as tar:
        info = tarfile.TarInfo("a/x.png")
        tar.addfile(info)
    return path


def _zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a/x.png", b"")
    return path


def _list(
    source: Path | str, state_dir: Path, ready_marker: str | None = "_SUCCESS"
) -> list[SnapshotCandidate]:
    dataset = DatasetSpec(name="ds", source=str(source), ready_marker=ready_marker)
    return list_snapshots("task", dataset, state_dir=state_dir)


def test_directories_count_only_with_the_ready_marker(tmp_path: Path) -> None:
    source = tmp_path / "src"
    done = _dir_snapshot(source, "2026-01-02")
    _dir_snapshot(source, "2026-01-03", ready=False)
    os.utime(done / "_SUCCESS", (1_700_000_000, 1_700_000_000))

    [found] = _list(source, tmp_path / "state")

    assert found == SnapshotCandidate(
        task="task",
        dataset="ds",
        snapshot="2026-01-02",
        location=str(done),
        kind="directory",
        sha256=None,
        timestamp=1_700_000_000.0,
        source=str(source),
    )


def test_ready_marker_none_takes_every_directory_and_a_custom_marker_is_honoured(tmp_path: Path) -> None:
    source = tmp_path / "src"
    _dir_snapshot(source, "2026-01-02", ready=False)
    _dir_snapshot(source, "2026-01-03", ready=False)
    (source / "2026-01-03" / "READY").write_text("")

    assert [c.snapshot for c in _list(source, tmp_path, ready_marker=None)] == ["2026-01-02", "2026-01-03"]
    assert [c.snapshot for c in _list(source, tmp_path, ready_marker="READY")] == ["2026-01-03"]


def test_archives_of_each_kind_are_snapshots_named_without_suffix(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    _tar(source / "2026-01-01.tar")
    _tar(source / "2026-01-02.tar.gz", "w:gz")
    _tar(source / "2026-01-03.tgz", "w:gz")
    _zip(source / "2026-01-04.zip")
    os.utime(source / "2026-01-04.zip", (1_600_000_000, 1_600_000_000))

    found = _list(source, tmp_path)

    assert [(c.snapshot, c.kind, Path(c.location).name) for c in found] == [
        ("2026-01-01", "archive", "2026-01-01.tar"),
        ("2026-01-02", "archive", "2026-01-02.tar.gz"),
        ("2026-01-03", "archive", "2026-01-03.tgz"),
        ("2026-01-04", "archive", "2026-01-04.zip"),
    ]
    assert found[-1].timestamp == 1_600_000_000.0
    assert all(Path(c.location).is_absolute() for c in found)


def test_hidden_partial_and_unrelated_entries_are_ignored(tmp_path: Path) -> None:
    source = tmp_path / "src"
    _dir_snapshot(source, "2026-01-01")
    _dir_snapshot(source, ".2026-01-02")
    _dir_snapshot(source, "_temporary")
    _tar(source / "2026-01-03.tar.gz.part", "w:gz")
    _tar(source / "2026-01-04.tar.tmp")
    _tar(source / ".2026-01-05.tar")
    (source / "README.md").write_text("notes")
    (source / "_SUCCESS").write_text("")

    assert [c.snapshot for c in _list(source, tmp_path)] == ["2026-01-01"]


def test_snapshots_are_sorted_by_id_whatever_their_kind(tmp_path: Path) -> None:
    source = tmp_path / "src"
    _dir_snapshot(source, "2026-03")
    _tar(source / "2026-01.tar")
    _zip(source / "2026-02.zip")
    _dir_snapshot(source, "2025-12")

    assert [c.snapshot for c in _list(source, tmp_path)] == ["2025-12", "2026-01", "2026-02", "2026-03"]


def test_a_file_url_is_the_same_source_as_its_path(tmp_path: Path) -> None:
    source = tmp_path / "src dir"
    _dir_snapshot(source, "s1")

    [found] = _list(source.as_uri(), tmp_path)

    assert found.location == str(source / "s1")


@pytest.mark.parametrize("other", ["2026-01-01.tar", "2026-01-01.zip"])
def test_the_same_id_twice_is_an_error_naming_both(tmp_path: Path, other: str) -> None:
    source = tmp_path / "src"
    _dir_snapshot(source, "2026-01-01")
    (_zip if other.endswith(".zip") else _tar)(source / other)

    with pytest.raises(SourceError) as caught:
        _list(source, tmp_path)

    message = str(caught.value)
    assert str(source / "2026-01-01") in message and str(source / other) in message
    assert "task/ds" in message and "remove or rename" in message


def test_a_missing_source_is_a_source_error_that_says_what_to_check(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"cannot list snapshots of dataset task/ds at .*nope.*check"):
        _list(tmp_path / "nope", tmp_path)


def test_a_file_as_source_is_a_source_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(SourceError, match="not a directory"):
        _list(tmp_path / "file", tmp_path)


def test_an_unsupported_scheme_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="unsupported scheme 'gopher'"):
        _list("gopher://bucket/prefix", tmp_path)
