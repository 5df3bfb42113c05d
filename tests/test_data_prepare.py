"""Preparing a snapshot: layouts, the compact protocol's caps, rejections, and the decoded cache."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monitor.data import PreparedData, cache_key, load_arrays, prepare_snapshot
from monitor.errors import DataError, SnapshotRejected
from monitor.settings import DatasetSpec, TaskSpec
from monitor.types import SnapshotInfo
from tests._files import image_ident, write_image, write_tree

SIZE = 8


def _snapshot(root: Path, digest: str | None = None) -> SnapshotInfo:
    # The digest stands in for the content hash: tests that change files pass a new one.
    digest = digest or hashlib.sha256(str(root).encode()).hexdigest()
    return SnapshotInfo(
        task="t", dataset="d", snapshot="s1", digest=digest, root=root, source="src", timestamp=0.0
    )


def _task(train: int | None = None, test: int | None = None, fraction: float = 0.2) -> TaskSpec:
    return TaskSpec(
        name="t",
        datasets=[DatasetSpec(name="d", source="/src")],
        train_per_class=train,
        test_per_class=test,
        test_fraction=fraction,
    )


def _prepare(snapshot: SnapshotInfo, task: TaskSpec, cache: Path, workers: int = 2) -> PreparedData:
    return prepare_snapshot(snapshot, task, SIZE, cache_dir=cache, workers=workers)


def _idents(x: np.ndarray, y: np.ndarray, label: int) -> set[int]:
    return {image_ident(image) for image, lab in zip(x, y, strict=True) if lab == label}


def _split_tree(root: Path, test_dir: str = "test") -> Path:
    return write_tree(
        root,
        {
            "train/cat/1.png": 1,
            "train/cat/2.png": 2,
            "train/cat/sub/3.png": 3,
            "train/dog/4.png": 4,
            "train/dog/5.png": 5,
            f"{test_dir}/cat/6.png": 6,
            f"{test_dir}/dog/7.png": 7,
            f"{test_dir}/dog/8.png": 8,
        },
    )


def _protocol_order(relpaths: list[str]) -> list[str]:
    return sorted(relpaths, key=lambda rel: hashlib.sha256(f"0:{rel}".encode()).hexdigest())


def _in_test(relpath: str, fraction: float) -> bool:
    return int(hashlib.sha256(relpath.encode()).hexdigest()[:16], 16) / 2**64 < fraction


# -- layouts ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("test_dir", ["test", "val"])
def test_split_layout(tmp_path: Path, test_dir: str) -> None:
    root = _split_tree(tmp_path / "snap", test_dir)
    cache = tmp_path / "cache"

    prepared = _prepare(_snapshot(root), _task(), cache)
    arrays = load_arrays(prepared)

    assert prepared.layout == "split"
    assert prepared.classes == ("cat", "dog")
    assert (prepared.n_train, prepared.n_test, prepared.image_size, prepared.skipped) == (5, 3, SIZE, ())
    assert prepared.path == cache / "decoded" / prepared.key
    assert arrays.train_x.shape == (5, 3, SIZE, SIZE) and arrays.train_x.dtype == np.uint8
    assert arrays.train_y.dtype == np.int64 and arrays.test_y.dtype == np.int64
    assert _idents(arrays.train_x, arrays.train_y, 0) == {1, 2, 3}
    assert _idents(arrays.train_x, arrays.train_y, 1) == {4, 5}
    assert _idents(arrays.test_x, arrays.test_y, 0) == {6}
    assert _idents(arrays.test_x, arrays.test_y, 1) == {7, 8}
    meta = json.loads((prepared.path / "meta.json").read_text())
    assert meta["classes"] == ["cat", "dog"] and meta["layout"] == "split" and meta["image_size"] == SIZE
    assert meta["snapshot_digest"] == _snapshot(root).digest and meta["n_train"] == 5 and meta["n_test"] == 3
    assert [p.name for p in (cache / "decoded").iterdir()] == [prepared.key]  # no temp folder left


def test_markers_hidden_entries_and_non_images_are_ignored(tmp_path: Path) -> None:
    root = _split_tree(tmp_path / "snap")
    (root / "_SUCCESS").write_text("")
    (root / "train" / "_SUCCESS").write_text("")
    write_image(root / "train" / ".cache" / "9.png", 9)
    write_image(root / "train" / "cat" / ".hidden.png", 10)
    write_image(root / "_temporary" / "cat" / "11.png", 11)
    (root / "train" / "cat" / "labels.csv").write_text("x")
    (root / "train" / "cat" / "notes.txt").write_text("x")

    prepared = _prepare(_snapshot(root), _task(), tmp_path / "cache")

    assert prepared.classes == ("cat", "dog") and prepared.n_train == 5 and prepared.skipped == ()


def test_hashed_layout_splits_each_file_by_its_own_hash(tmp_path: Path) -> None:
    files = {
        f"{cls}/{i}.png": ident
        for ident, (cls, i) in enumerate(
            [(c, i) for c in ("ants", "bees", "wasps") for i in range(30)], start=1
        )
    }
    root = write_tree(tmp_path / "snap", files)

    prepared = _prepare(_snapshot(root), _task(fraction=0.3), tmp_path / "cache")
    arrays = load_arrays(prepared)

    assert prepared.layout == "hashed" and prepared.classes == ("ants", "bees", "wasps")
    expected_test = {ident for rel, ident in files.items() if _in_test(rel, 0.3)}
    assert {image_ident(image) for image in arrays.test_x} == expected_test
    assert {image_ident(image) for image in arrays.train_x} == set(files.values()) - expected_test
    assert 0 < prepared.n_test < prepared.n_train


def test_hashed_split_is_stable_when_files_are_added(tmp_path: Path) -> None:
    files = {f"{cls}/{i}.png": 100 * c + i for c, cls in enumerate(("a", "b")) for i in range(25)}
    root = write_tree(tmp_path / "snap", files)
    before = load_arrays(_prepare(_snapshot(root, "d1"), _task(fraction=0.25), tmp_path / "cache"))

    write_tree(
        root, {f"{cls}/new{i}.png": 1000 + 100 * c + i for c, cls in enumerate(("a", "b")) for i in range(25)}
    )
    after = load_arrays(_prepare(_snapshot(root, "d2"), _task(fraction=0.25), tmp_path / "cache"))

    old_test = {image_ident(image) for image in before.test_x}
    old_train = {image_ident(image) for image in before.train_x}
    new_test = {image_ident(image) for image in after.test_x}
    new_train = {image_ident(image) for image in after.train_x}
    assert old_test <= new_test and old_train <= new_train  # no old file changed sides
    assert new_test - old_test and new_train - old_train


# -- the compact protocol's caps ----------------------------------------------------------------------


def _capped_tree(root: Path, per_class: int = 10) -> dict[str, int]:
    files = {
        f"train/{cls}/{i:02d}.png": 100 * c + i for c, cls in enumerate(("a", "b")) for i in range(per_class)
    }
    files |= {
        f"test/{cls}/{i:02d}.png": 1000 + 100 * c + i for c, cls in enumerate(("a", "b")) for i in range(6)
    }
    write_tree(root, files)
    return files


def _expected_pick(files: dict[str, int], prefix: str, cap: int, exclude: set[str] = frozenset()) -> set[int]:  # type: ignore[assignment]
    order = _protocol_order([rel for rel in files if rel.startswith(prefix) and rel not in exclude])
    return {files[rel] for rel in order[:cap]}


def test_caps_take_the_first_files_in_protocol_order(tmp_path: Path) -> None:
    files = _capped_tree(tmp_path / "snap")

    prepared = _prepare(_snapshot(tmp_path / "snap"), _task(train=3, test=2), tmp_path / "cache")
    arrays = load_arrays(prepared)

    assert (prepared.n_train, prepared.n_test) == (6, 4)
    assert _idents(arrays.train_x, arrays.train_y, 0) == _expected_pick(files, "train/a/", 3)
    assert _idents(arrays.train_x, arrays.train_y, 1) == _expected_pick(files, "train/b/", 3)
    assert _idents(arrays.test_x, arrays.test_y, 1) == _expected_pick(files, "test/b/", 2)


def test_caps_are_deterministic_whatever_the_worker_count(tmp_path: Path) -> None:
    _capped_tree(tmp_path / "snap")
    one = load_arrays(
        _prepare(_snapshot(tmp_path / "snap"), _task(train=4, test=3), tmp_path / "c1", workers=1)
    )
    many = load_arrays(
        _prepare(_snapshot(tmp_path / "snap"), _task(train=4, test=3), tmp_path / "c2", workers=5)
    )
    for name in ("train_x", "train_y", "test_x", "test_y"):
        assert np.array_equal(getattr(one, name), getattr(many, name))


def test_adding_a_file_changes_the_selection_only_where_it_sorts_in(tmp_path: Path) -> None:
    files = _capped_tree(tmp_path / "snap")
    before = load_arrays(_prepare(_snapshot(tmp_path / "snap", "d1"), _task(train=5), tmp_path / "cache"))
    files["train/a/zz-new.png"] = 77
    write_image(tmp_path / "snap" / "train/a/zz-new.png", 77)

    after = load_arrays(_prepare(_snapshot(tmp_path / "snap", "d2"), _task(train=5), tmp_path / "cache"))

    old, new = _idents(before.train_x, before.train_y, 0), _idents(after.train_x, after.train_y, 0)
    assert new == _expected_pick(files, "train/a/", 5)
    assert len(old - new) <= 1
    assert _idents(before.train_x, before.train_y, 1) == _idents(after.train_x, after.train_y, 1)


def test_undecodable_files_are_skipped_and_the_cap_is_still_filled(tmp_path: Path) -> None:
    files = _capped_tree(tmp_path / "snap")
    order = _protocol_order([rel for rel in files if rel.startswith("train/a/")])
    broken = set(order[:2])
    for rel in broken:
        (tmp_path / "snap" / rel).write_bytes(b"corrupt bytes, not a png")

    prepared = _prepare(_snapshot(tmp_path / "snap"), _task(train=3, test=2), tmp_path / "cache")
    arrays = load_arrays(prepared)

    assert _idents(arrays.train_x, arrays.train_y, 0) == _expected_pick(files, "train/a/", 3, exclude=broken)
    assert prepared.n_train == 6
    assert {rel for rel, _ in prepared.skipped} == broken
    assert all(reason for _, reason in prepared.skipped)


def test_undecodable_files_do_not_stop_an_uncapped_snapshot(tmp_path: Path) -> None:
    root = _split_tree(tmp_path / "snap")
    (root / "train/cat/2.png").write_bytes(b"")
    (root / "test/dog/8.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (root / "train/dog/9.jpg").write_bytes(b"not a jpeg")

    prepared = _prepare(_snapshot(root), _task(), tmp_path / "cache")

    assert (prepared.n_train, prepared.n_test) == (4, 2)
    assert [rel for rel, _ in prepared.skipped] == ["test/dog/8.png", "train/cat/2.png", "train/dog/9.jpg"]
    assert json.loads((prepared.path / "meta.json").read_text())["skipped"] == [
        list(s) for s in prepared.skipped
    ]


# -- rejections -----------------------------------------------------------------------------------------


REJECTIONS: dict[str, tuple[dict[str, int | bytes], str]] = {
    "missing_test_split": ({"train/a/1.png": 1, "train/b/2.png": 2}, "neither test/ nor val/"),
    "missing_train_split": ({"test/a/1.png": 1, "test/b/2.png": 2}, "no train/"),
    "too_few_classes": ({"train/a/1.png": 1, "test/a/2.png": 2}, "1 class folder(s) (a)"),
    "too_few_classes_hashed": ({"only/1.png": 1}, "1 class folder(s) (only)"),
    "test_class_not_in_train": (
        {"train/a/1.png": 1, "train/b/2.png": 2, "test/a/3.png": 3, "test/c/4.png": 4, "test/d/5.png": 5},
        "test class(es) c, d",
    ),
    "empty_class": ({"train/a/1.png": 1, "train/b/2.png": b"broken", "test/a/3.png": 3}, "class(es) b"),
    "empty_class_no_files": ({"train/a/1.png": 1, "train/b/x.txt": b"", "test/a/3.png": 3}, "class(es) b"),
    "empty_test_split": (
        {"train/a/1.png": 1, "train/b/2.png": 2, "test/a/3.png": b"broken"},
        "no decodable test",
    ),
    "empty_test_split_no_files": (
        {"train/a/1.png": 1, "train/b/2.png": 2, "test/a/x.txt": b""},
        "no test images",
    ),
}


@pytest.mark.parametrize("case", sorted(REJECTIONS))
def test_unusable_snapshots_are_rejected_with_a_reason(tmp_path: Path, case: str) -> None:
    files, detail = REJECTIONS[case]
    root = write_tree(tmp_path / "snap", files)

    with pytest.raises(SnapshotRejected) as caught:
        _prepare(_snapshot(root), _task(), tmp_path / "cache")

    reason = case.removesuffix("_hashed").removesuffix("_no_files")
    assert caught.value.reason == reason
    message = str(caught.value)
    assert detail in message and "t/d/s1" in message and str(root) in message
    decoded = tmp_path / "cache" / "decoded"
    # No decoded data is kept for a rejected snapshot: only the verdict, keyed by its protocol.
    assert not decoded.exists() or [p.name.endswith(".rejected.json") for p in decoded.iterdir()] == [True]


# -- the cache ------------------------------------------------------------------------------------------


def test_a_cache_hit_opens_no_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _split_tree(tmp_path / "snap")
    first = _prepare(_snapshot(root), _task(), tmp_path / "cache")

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("an image was opened on a cache hit")

    monkeypatch.setattr(Image, "open", refuse)
    assert _prepare(_snapshot(root), _task(), tmp_path / "cache") == first


@pytest.mark.parametrize(
    "damage",
    ["meta-garbage", "meta-missing-field", "npy-truncated", "npy-missing", "npy-wrong-shape"],
)
def test_a_corrupt_cache_is_deleted_and_rebuilt(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    root = _split_tree(tmp_path / "snap")
    first = _prepare(_snapshot(root), _task(), tmp_path / "cache")
    expected = load_arrays(first)
    folder = first.path
    if damage == "meta-garbage":
        (folder / "meta.json").write_text("{ nope")
    elif damage == "meta-missing-field":
        meta = json.loads((folder / "meta.json").read_text())
        del meta["classes"]
        (folder / "meta.json").write_text(json.dumps(meta))
    elif damage == "npy-truncated":
        data = (folder / "train_x.npy").read_bytes()
        (folder / "train_x.npy").write_bytes(data[: len(data) - 10])
    elif damage == "npy-missing":
        (folder / "test_y.npy").unlink()
    else:
        np.save(folder / "train_y.npy", np.zeros(3, dtype=np.int64))

    with caplog.at_level(logging.WARNING, logger="monitor.data"):
        again = _prepare(_snapshot(root), _task(), tmp_path / "cache")

    assert again == first
    assert "unusable" in caplog.text and str(folder) in caplog.text
    rebuilt = load_arrays(again)
    for name in ("train_x", "train_y", "test_x", "test_y"):
        assert np.array_equal(getattr(rebuilt, name), getattr(expected, name))


def test_load_arrays_refuses_pickles_and_damaged_files(tmp_path: Path) -> None:
    prepared = _prepare(_snapshot(_split_tree(tmp_path / "snap")), _task(), tmp_path / "cache")
    good_labels = np.load(prepared.path / "train_y.npy")
    np.save(prepared.path / "train_y.npy", np.array([{"evil": 1}] * 5, dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=rf"{re.escape(str(prepared.path))}.*train_y\.npy.*checksum"):
        load_arrays(prepared)
    # Without checksums to stop it first, the load itself still never unpickles.
    with pytest.raises(
        DataError, match=rf"{re.escape(str(prepared.path))}.*allow_pickle.*delete that folder"
    ):
        load_arrays(dataclasses.replace(prepared, checksums=()))
    np.save(prepared.path / "train_y.npy", good_labels)
    (prepared.path / "test_x.npy").unlink()
    with pytest.raises(DataError, match=r"test_x\.npy"):
        load_arrays(prepared)


def test_cache_key_covers_the_protocol_inputs_and_nothing_else() -> None:
    base = cache_key("d" * 64, _task(train=64, test=64), 224)
    assert len(base) == 64 and int(base, 16) >= 0
    assert cache_key("d" * 64, _task(train=64, test=64), 224) == base
    variants = [
        cache_key("e" * 64, _task(train=64, test=64), 224),
        cache_key("d" * 64, _task(train=64, test=64), 160),
        cache_key("d" * 64, _task(train=32, test=64), 224),
        cache_key("d" * 64, _task(train=64, test=None), 224),
        cache_key("d" * 64, _task(train=64, test=64, fraction=0.3), 224),
    ]
    assert len({base, *variants}) == 6
    renamed = TaskSpec(
        name="other", datasets=[DatasetSpec(name="x", source="/y")], train_per_class=64, test_per_class=64
    )
    assert cache_key("d" * 64, renamed, 224) == base


def test_a_rejection_is_remembered_per_protocol_and_not_decoded_again(tmp_path: Path, monkeypatch) -> None:
    files, _ = REJECTIONS["empty_class"]
    root = write_tree(tmp_path / "snap", files)
    with pytest.raises(SnapshotRejected):
        _prepare(_snapshot(root), _task(), tmp_path / "cache")

    import PIL.Image

    def no_decoding(*args, **kwargs):
        raise AssertionError("a remembered rejection must not decode anything")

    monkeypatch.setattr(PIL.Image, "open", no_decoding)
    with pytest.raises(SnapshotRejected) as again:
        _prepare(_snapshot(root), _task(), tmp_path / "cache")
    assert again.value.reason == "empty_class"
