"""Safe extraction of snapshot archives: good archives extract once, hostile ones are refused."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import pytest

import monitor.sources._extracted as extracted_module
from monitor.errors import SnapshotRejected
from monitor.sources import SnapshotCandidate, SnapshotLimits, materialize

FILES = {"train/cat/1.png": b"c1", "train/dog/1.png": b"d1", "test/cat/2.png": b"c2", "test/dog/2.png": b"d2"}


def _candidate(archive: Path) -> SnapshotCandidate:
    snapshot = archive.name.split(".")[0]
    return SnapshotCandidate(
        task="t",
        dataset="d",
        snapshot=snapshot,
        location=str(archive),
        kind="archive",
        sha256=None,
        timestamp=1.0,
        source=str(archive.parent),
    )


def _add(tar: tarfile.TarFile, name: str, payload: bytes = b"", **fields: object) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    for key, value in fields.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(payload) if payload else None)


def _make_tar(path: Path, members: dict[str, bytes], mode: Literal["w", "w:gz"] = "w:gz") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, mode) as tar:
        for name, payload in members.items():
            _add(tar, name, payload)
    return path


def _make_zip(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, payload in members.items():
            zf.writestr(name, payload)
    return path


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz", ".tgz", ".zip"])
def test_a_good_archive_extracts_into_a_content_addressed_folder(tmp_path: Path, suffix: str) -> None:
    archive = tmp_path / "src" / f"2026-01-01{suffix}"
    if suffix == ".zip":
        _make_zip(archive, FILES)
    else:
        _make_tar(archive, FILES, "w" if suffix == ".tar" else "w:gz")
    state = tmp_path / "state"

    info = materialize(_candidate(archive), state_dir=state)

    assert info.root == state / "snapshots" / info.digest
    assert _files(info.root) == FILES
    assert [p.name for p in (state / "snapshots").iterdir()] == [info.digest]  # no temp folder left


def test_an_extracted_archive_is_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = _make_tar(tmp_path / "src" / "s.tar.gz", FILES)
    first = materialize(_candidate(archive), state_dir=tmp_path / "state")

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("extracted twice")

    monkeypatch.setattr(extracted_module, "extract_archive", refuse)
    assert materialize(_candidate(archive), state_dir=tmp_path / "state") == first


def test_a_single_wrapping_folder_becomes_the_root(tmp_path: Path) -> None:
    members = {f"2026-01-01/{name}": payload for name, payload in FILES.items()}
    members["__MACOSX/._2026-01-01"] = b"resource fork"  # hidden entries do not count as a second folder
    archive = _make_zip(tmp_path / "src" / "2026-01-01.zip", members)

    info = materialize(_candidate(archive), state_dir=tmp_path / "state")

    assert info.root.name == "2026-01-01" and info.root.parent.name == info.digest
    assert _files(info.root) == FILES


def test_a_lone_split_folder_or_several_folders_are_not_unwrapped(tmp_path: Path) -> None:
    only_train = _make_tar(tmp_path / "src" / "a.tar", {"train/cat/1.png": b"x"}, "w")
    assert materialize(_candidate(only_train), state_dir=tmp_path / "state").root.name != "train"
    classes = _make_tar(tmp_path / "src" / "b.tar", {"cat/1.png": b"x", "dog/1.png": b"y"}, "w")
    info = materialize(_candidate(classes), state_dir=tmp_path / "state")
    assert info.root.name == info.digest


def test_a_wrapped_directory_snapshot_is_unwrapped_too(tmp_path: Path) -> None:
    folder = tmp_path / "src" / "s1"
    for name, payload in FILES.items():
        (folder / "data" / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / "data" / name).write_bytes(payload)
    (folder / "_SUCCESS").write_text("")
    candidate = SnapshotCandidate("t", "d", "s1", str(folder), "directory", None, 1.0, str(folder.parent))

    assert materialize(candidate, state_dir=tmp_path / "state").root == folder / "data"


# -- hostile and broken archives ------------------------------------------------------------------


def _tar_with(build: Callable[[tarfile.TarFile], None]) -> Callable[[Path], Path]:
    def make(path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(path, "w:gz") as tar:
            _add(tar, "train/cat/1.png", b"ok")
            build(tar)
        return path

    return make


def _zip_with(build: Callable[[zipfile.ZipFile], None]) -> Callable[[Path], Path]:
    def make(path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("train/cat/1.png", b"ok")
            build(zf)
        return path

    return make


def _zip_link(zf: zipfile.ZipFile) -> None:
    info = zipfile.ZipInfo("train/cat/link.png")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    zf.writestr(info, "/etc/passwd")


def _zip_fifo(zf: zipfile.ZipFile) -> None:
    info = zipfile.ZipInfo("train/cat/pipe")
    info.external_attr = (stat.S_IFIFO | 0o644) << 16
    zf.writestr(info, "")


HOSTILE: dict[str, tuple[Callable[[Path], Path], str]] = {
    "tar-absolute": (_tar_with(lambda t: _add(t, "/tmp/pm-evil-abs.txt", b"x")), "absolute path"),
    "tar-dotdot": (_tar_with(lambda t: _add(t, "../evil.txt", b"x")), "'..'"),
    "tar-dotdot-deep": (_tar_with(lambda t: _add(t, "train/../../evil.txt", b"x")), "'..'"),
    "tar-symlink": (
        _tar_with(lambda t: _add(t, "train/cat/l.png", type=tarfile.SYMTYPE, linkname="/etc/passwd")),
        "is a link",
    ),
    "tar-hardlink": (
        _tar_with(lambda t: _add(t, "train/cat/h.png", type=tarfile.LNKTYPE, linkname="train/cat/1.png")),
        "is a link",
    ),
    "tar-device": (_tar_with(lambda t: _add(t, "train/cat/dev", type=tarfile.CHRTYPE)), "device or fifo"),
    "tar-fifo": (_tar_with(lambda t: _add(t, "train/cat/fifo", type=tarfile.FIFOTYPE)), "device or fifo"),
    "zip-absolute": (_zip_with(lambda z: z.writestr("/tmp/pm-evil-abs.txt", b"x")), "absolute path"),
    "zip-dotdot": (_zip_with(lambda z: z.writestr("../evil.txt", b"x")), "'..'"),
    "zip-backslash-dotdot": (_zip_with(lambda z: z.writestr("..\\evil.txt", b"x")), "'..'"),
    "zip-symlink": (_zip_with(_zip_link), "is a link"),
    "zip-fifo": (_zip_with(_zip_fifo), "device, fifo or socket"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_members_are_rejected_and_nothing_escapes(tmp_path: Path, case: str) -> None:
    make, problem = HOSTILE[case]
    suffix = ".zip" if case.startswith("zip") else ".tar.gz"
    archive = make(tmp_path / "src" / f"s{suffix}")
    state = tmp_path / "state"

    with pytest.raises(SnapshotRejected) as caught:
        materialize(_candidate(archive), state_dir=state)

    assert caught.value.reason == "bad_archive"
    message = str(caught.value)
    assert problem in message and str(archive) in message and "t/d/s" in message and "rebuild" in message
    assert not list((state / "snapshots").iterdir())  # neither a snapshot nor a temp folder remains
    assert not [p for p in tmp_path.rglob("*evil*")]
    assert not Path("/tmp/pm-evil-abs.txt").exists()


def test_a_tar_bomb_is_stopped_before_it_is_written(tmp_path: Path) -> None:
    archive = _make_tar(tmp_path / "src" / "s.tar.gz", {"train/cat/big.png": bytes(1_000_000)})
    with pytest.raises(SnapshotRejected, match=r"big\.png.*limit of 100000 bytes") as caught:
        materialize(
            _candidate(archive), state_dir=tmp_path / "state", limits=SnapshotLimits(max_bytes=100_000)
        )
    assert caught.value.reason == "bad_archive"
    assert not list((tmp_path / "state" / "snapshots").iterdir())


def test_a_zip_bomb_is_stopped_while_inflating(tmp_path: Path) -> None:
    archive = _make_zip(tmp_path / "src" / "s.zip", {"train/cat/big.png": bytes(5_000_000)})
    assert archive.stat().st_size < 50_000  # it really is a bomb: tiny on disk, large inflated
    with pytest.raises(SnapshotRejected, match="limit of 100000 bytes") as caught:
        materialize(
            _candidate(archive), state_dir=tmp_path / "state", limits=SnapshotLimits(max_bytes=100_000)
        )
    assert caught.value.reason == "bad_archive"
    assert not list((tmp_path / "state" / "snapshots").iterdir())


@pytest.mark.parametrize("suffix", [".tar.gz", ".zip"])
def test_too_many_members_are_rejected(tmp_path: Path, suffix: str) -> None:
    members = {f"train/c{i}/{i}.png": b"" for i in range(20)}
    archive = (_make_zip if suffix == ".zip" else _make_tar)(tmp_path / "src" / f"s{suffix}", members)
    with pytest.raises(SnapshotRejected, match="limit of 10 members") as caught:
        materialize(_candidate(archive), state_dir=tmp_path / "state", limits=SnapshotLimits(max_members=10))
    assert caught.value.reason == "bad_archive"


def _truncated(path: Path) -> Path:
    _make_tar(path, {"train/cat/1.png": bytes(range(256)) * 400}, "w" if path.suffix == ".tar" else "w:gz")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


CORRUPT: dict[str, Callable[[Path], Path]] = {
    "random.tar.gz": lambda p: (p.write_bytes(b"\x1f\x8b this is not gzip at all" * 10), p)[1],
    "random.tar": lambda p: (p.write_bytes(b"garbage" * 200), p)[1],
    "random.zip": lambda p: (p.write_bytes(b"PK\x03\x04 not really a zip"), p)[1],
    "empty.tgz": lambda p: (p.write_bytes(b""), p)[1],
    "truncated.tar.gz": _truncated,
    "truncated.tar": _truncated,
}


@pytest.mark.parametrize("name", sorted(CORRUPT))
def test_corrupt_archives_are_rejected_as_bad_archive(tmp_path: Path, name: str) -> None:
    (tmp_path / "src").mkdir()
    archive = CORRUPT[name](tmp_path / "src" / name)
    with pytest.raises(SnapshotRejected) as caught:
        materialize(_candidate(archive), state_dir=tmp_path / "state")
    assert caught.value.reason == "bad_archive"
    assert str(archive) in str(caught.value)
    assert not list((tmp_path / "state" / "snapshots").iterdir())
