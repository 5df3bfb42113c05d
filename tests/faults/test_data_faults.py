"""Data faults found by a hostile test: each one reproduced on real files, real images, real
archives, a real SQLite store and the real pipeline or CLI.

1. the decoded cache damaged in place (same size) is verified, warned about and rebuilt;
2. a remembered rejection names the dataset it is about, not the first one that had the content;
3. the archive cap and the pixel cap are settings; extracted archives do not pile up on disk;
4. a weights file holding code is refused with advice that never says `weights_only=False`;
5. names that come from data reach logs and terminals escaped, never as raw control characters.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from monitor.data import load_arrays, prepare_snapshot
from monitor.engine import InlineExecutor
from monitor.errors import DataError, ModelError, SnapshotRejected, SourceError
from monitor.models import read_state_dict
from monitor.pipeline import LoggingObserver, RunReport, run_evaluation
from monitor.settings import DatasetSpec, TaskSpec, load_settings
from monitor.sources import SnapshotCandidate, SnapshotLimits, list_snapshots, materialize
from monitor.store import Store
from monitor.types import CellResult, SnapshotInfo
from tests._files import write_tree
from tests._pipeline import Recorder
from tests._workspace import basic_config, write_config, write_snapshot

REPO = Path(__file__).resolve().parents[2]
LINEAR = {"name": "lin", "mode": "linear", "lr": 0.1, "epochs": 3, "batch_size": 16}


# A model whose features are the image's own pooled pixels: a linear probe on them scores 1.0 on
# these digits, and chance on damaged data, so a cell's score says what it was trained on.
PIXEL_PROBE = """
from torch import nn


class PixelProbe(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Sequential(nn.Conv2d(3, 3, 1), nn.AdaptiveAvgPool2d(4)), nn.Flatten())
        self.fc = nn.Linear(48, 10)

    def forward(self, x):
        return self.fc(self.features(x))


def build():
    return PixelProbe()
"""


def _workspace(root: Path, datasets: tuple[str, ...] = ("a",)) -> dict:
    """A pixel probe, one task of real digits per dataset, one linear strategy, one seed: a cheap grid."""
    (root / "pixel_probe.py").write_text(PIXEL_PROBE)
    for name in datasets:
        write_snapshot(root / "data" / name / "2026-01-01T00", (5, 6, 7), per_class=12)
    return basic_config(
        [{"name": "probe", "architecture": "python:pixel_probe:build"}],
        {"digits": [(name, f"data/{name}") for name in datasets]},
        strategies=[dict(LINEAR)],
        seeds=[0],
    )


def _evaluate(root: Path, config: dict, observer: Any = None) -> tuple[RunReport, Recorder, Store]:
    settings = load_settings(write_config(root / "persistence-monitor.yaml", config))
    store = Store.open(settings.resolved_database_url)
    recorder = Recorder()
    report = run_evaluation(settings, store, InlineExecutor("cpu"), observer=observer or recorder)
    return report, recorder, store


def _cell(report: RunReport, strategy: str, dataset: str = "a") -> CellResult:
    (cell,) = [c for c in report.models[0].cells if c.strategy == strategy and c.dataset == dataset]
    return cell


def _decoded_folders(state: Path) -> list[Path]:
    return sorted(
        p for p in (state / "cache" / "decoded").iterdir() if p.is_dir() and not p.name.startswith(".")
    )


def _npy_data_offset(path: Path) -> int:
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        assert version == (1, 0)  # what np.save writes for arrays this small
        np.lib.format.read_array_header_1_0(fh)
        return fh.tell()


def _damage_in_place(path: Path, how: str) -> None:
    """Change an .npy file's values without changing its header or its size."""
    offset = _npy_data_offset(path)
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.seek(offset)
        if how == "zero":
            fh.write(bytes(size - offset))
        else:  # labels out of range: every int64 label becomes 99
            fh.write(np.full((size - offset) // 8, 99, dtype="<i8").tobytes())
    assert path.stat().st_size == size


# -- 1. the decoded cache, damaged in place --------------------------------------------------------------


@pytest.mark.parametrize(("damaged", "how"), [("test_x.npy", "zero"), ("test_y.npy", "labels")])
@pytest.mark.slow  # trains
def test_a_decoded_cache_damaged_in_place_is_rebuilt_before_anything_trains_on_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damaged: str, how: str
) -> None:
    config = _workspace(tmp_path)
    _evaluate(tmp_path, config)
    (folder,) = _decoded_folders(tmp_path / "state")
    _damage_in_place(folder / damaged, how)

    config["strategies"].append({**LINEAR, "name": "lin-new", "lr": 0.05})  # a new cell: it must train
    with caplog.at_level(logging.WARNING, logger="monitor"):
        report, _, _ = _evaluate(tmp_path, config)
    new = _cell(report, "lin-new")
    assert new.status == "ok", new.error
    assert _cell(report, "lin").status == "cached"

    # What the new cell scores on the snapshot as it really is: a fresh state decodes it anew.
    reference, _, _ = _evaluate(tmp_path, {**config, "state_dir": "state-reference"})
    assert new.score == _cell(reference, "lin-new").score == 1.0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "checksum" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    assert "digits/a/2026-01-01T00" in warnings[0].getMessage() and damaged in warnings[0].getMessage()
    # Rebuilt, and good for the runs after: the stored result is cached with the same score.
    again, _, _ = _evaluate(tmp_path, config)
    assert _cell(again, "lin-new").status == "cached" and _cell(again, "lin-new").score == new.score


GOOD = {
    "train/cat/1.png": 1,
    "train/cat/2.png": 2,
    "train/dog/3.png": 3,
    "test/cat/4.png": 4,
    "test/dog/5.png": 5,
}


def _info(root: Path, *, dataset: str = "d", snapshot: str = "s1", digest: str | None = None) -> SnapshotInfo:
    return SnapshotInfo(
        task="t",
        dataset=dataset,
        snapshot=snapshot,
        digest=digest or hashlib.sha256(str(root).encode()).hexdigest(),
        root=root,
        source="src",
        timestamp=0.0,
    )


def _task() -> TaskSpec:
    return TaskSpec(
        name="t", datasets=[DatasetSpec(name="d", source="/src")], train_per_class=None, test_per_class=None
    )


def test_a_cache_entry_without_a_checksum_is_decoded_again_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_tree(tmp_path / "snap", GOOD)
    first = prepare_snapshot(_info(root), _task(), 8, cache_dir=tmp_path / "cache")
    meta_path = first.path / "meta.json"
    meta = json.loads(meta_path.read_text())
    assert meta["checksum"]["algorithm"] == "sha256"
    del meta["checksum"]  # as an earlier release wrote it
    meta_path.write_text(json.dumps(meta))

    with caplog.at_level(logging.INFO, logger="monitor.data"):
        again = prepare_snapshot(_info(root), _task(), 8, cache_dir=tmp_path / "cache")
    assert again == first and "checksum" in json.loads(meta_path.read_text())
    assert "t/d/s1" in caplog.text and "no checksum" in caplog.text

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded a second time")

    monkeypatch.setattr(Image, "open", refuse)
    assert prepare_snapshot(_info(root), _task(), 8, cache_dir=tmp_path / "cache") == first


def test_a_worker_refuses_decoded_data_damaged_after_it_was_prepared(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "snap", GOOD)
    prepared = prepare_snapshot(_info(root), _task(), 8, cache_dir=tmp_path / "cache")
    _damage_in_place(prepared.path / "train_x.npy", "zero")
    with pytest.raises(DataError, match=r"train_x\.npy.*checksum"):
        load_arrays(prepared)


# -- 2. a remembered rejection names its own dataset --------------------------------------------------


@pytest.mark.slow  # trains
def test_a_byte_identical_bad_snapshot_is_reported_under_each_dataset_that_holds_it(tmp_path: Path) -> None:
    config = _workspace(tmp_path, datasets=("a", "b"))
    for name in ("a", "b"):
        bad = write_snapshot(tmp_path / "data" / name / "2026-01-02T00", (5, 6), per_class=6)
        for n in range(3):  # class 9 has files, none decodable: only decoding finds that out
            (bad / "train" / "9").mkdir(parents=True, exist_ok=True)
            (bad / "train" / "9" / f"{n}.png").write_bytes(b"not a png")

    report, recorder, store = _evaluate(tmp_path, config)

    assert {c.snapshot for c in report.models[0].cells} == {"2026-01-01T00"}
    rejected = [w for w in recorder.warnings if "rejected (empty_class)" in w]
    assert len(rejected) == 2, recorder.warnings
    for name, other in (("a", "b"), ("b", "a")):
        (warning,) = [w for w in rejected if w.startswith(f"dataset digits/{name}:")]
        assert f"digits/{name}/2026-01-02T00" in warning
        assert str(tmp_path / "data" / name / "2026-01-02T00") in warning
        assert str(tmp_path / "data" / other) not in warning and f"digits/{other}/" not in warning
        dataset = DatasetSpec(name=name, source=str(tmp_path / "data" / name))
        candidate = list_snapshots("digits", dataset, state_dir=tmp_path / "state")[-1]
        digest = materialize(candidate, state_dir=tmp_path / "state").digest
        record = store.snapshot_record("digits", name, "2026-01-02T00", digest)
        assert record is not None and record.status == "rejected" and record.message is not None
        assert str(tmp_path / "data" / name / "2026-01-02T00") in record.message
        assert str(tmp_path / "data" / other) not in record.message


def test_a_remembered_rejection_is_not_decoded_again_and_names_the_snapshot_it_is_about(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files: dict[str, int | bytes] = {"train/a/1.png": 1, "train/b/2.png": b"broken", "test/a/3.png": 3}
    first_root, second_root = (
        write_tree(tmp_path / "one" / "s1", files),
        write_tree(tmp_path / "two" / "s9", files),
    )
    digest = "c" * 64  # byte-identical content: one digest, one cache key
    with pytest.raises(SnapshotRejected):
        prepare_snapshot(_info(first_root, digest=digest), _task(), 8, cache_dir=tmp_path / "cache")

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("a remembered rejection must not decode anything")

    monkeypatch.setattr(Image, "open", no_decoding)
    with pytest.raises(SnapshotRejected) as caught:
        prepare_snapshot(
            _info(second_root, dataset="other", snapshot="s9", digest=digest),
            _task(),
            8,
            cache_dir=tmp_path / "cache",
        )
    assert caught.value.reason == "empty_class"
    message = str(caught.value)
    assert "t/other/s9" in message and str(second_root) in message and "class(es) b" in message
    assert str(first_root) not in message and "t/d/s1" not in message


# -- 3. limits: settings, disk left behind, pixels -------------------------------------------------------


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


def _archive_candidate(archive: Path, snapshot: str | None = None) -> SnapshotCandidate:
    return SnapshotCandidate(
        task="t",
        dataset="d",
        snapshot=snapshot or archive.name.split(".")[0],
        location=str(archive),
        kind="archive",
        sha256=None,
        timestamp=1.0,
        source=str(archive.parent),
    )


def _minimal_config(tmp_path: Path, **extra: object) -> Path:
    (tmp_path / "src").mkdir(exist_ok=True)
    (tmp_path / "w.safetensors").write_bytes(b"x")
    return write_config(
        tmp_path / "c.yaml",
        {
            "models": [{"name": "m", "architecture": "torchvision:resnet18", "weights": "w.safetensors"}],
            "tasks": [{"name": "t", "datasets": [{"name": "d", "source": "src"}]}],
            "strategies": [{"name": "s", "mode": "linear", "lr": 0.1, "epochs": 1}],
            **extra,
        },
    )


def test_the_archive_cap_is_a_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = load_settings(_minimal_config(tmp_path))
    assert defaults.limits.max_archive_bytes == 4 * 1024**3
    assert SnapshotLimits.from_settings(defaults.limits) == SnapshotLimits()

    settings = load_settings(_minimal_config(tmp_path, limits={"max_archive_bytes": "100KB"}))
    assert settings.limits.max_archive_bytes == 100_000
    archive = _tar(tmp_path / "arch" / "s1.tar.gz", {"train/cat/big.png": bytes(1_000_000)})
    with pytest.raises(SnapshotRejected, match=r"limit of 100000 bytes.*limits\.max_archive_bytes"):
        materialize(
            _archive_candidate(archive),
            state_dir=tmp_path / "state",
            limits=SnapshotLimits.from_settings(settings.limits),
        )
    monkeypatch.setenv("PM_LIMITS__MAX_ARCHIVE_BYTES", "2GiB")
    assert load_settings(_minimal_config(tmp_path)).limits.max_archive_bytes == 2 * 1024**3


def _age(folder: Path, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(folder, (past, past))


def test_an_extracted_archive_nothing_uses_any_more_is_removed(tmp_path: Path) -> None:
    state = tmp_path / "state"
    old = materialize(
        _archive_candidate(_tar(tmp_path / "src" / "s1.tar.gz", {"cat/1.png": b"a"})), state_dir=state
    )
    recent = materialize(
        _archive_candidate(_tar(tmp_path / "src" / "s2.tar.gz", {"cat/1.png": b"b"})), state_dir=state
    )
    _age(state / "snapshots" / old.digest, 2 * 86400)  # superseded: not materialised for two days

    newest = materialize(
        _archive_candidate(_tar(tmp_path / "src" / "s3.tar.gz", {"cat/1.png": b"c"})), state_dir=state
    )

    assert sorted(p.name for p in (state / "snapshots").iterdir()) == sorted([recent.digest, newest.digest])
    # Using a folder again keeps it: the one in use is marked used by every materialize.
    _age(state / "snapshots" / recent.digest, 2 * 86400)
    assert materialize(_archive_candidate(tmp_path / "src" / "s2.tar.gz"), state_dir=state) == recent
    materialize(_archive_candidate(tmp_path / "src" / "s3.tar.gz"), state_dir=state)
    assert (state / "snapshots" / recent.digest).is_dir()


def test_a_rejected_archive_bomb_does_not_stay_extracted(tmp_path: Path) -> None:
    from monitor.sources import release_snapshot

    # Under the cap, so it is extracted; 3 MB of zeros that no decoder takes for a PNG.
    bomb = _tar(
        tmp_path / "src" / "s1.tar.gz", {"cat/big.png": bytes(3_000_000), "dog/big.png": bytes(3_000_000)}
    )
    assert bomb.stat().st_size < 100_000
    info = materialize(_archive_candidate(bomb), state_dir=tmp_path / "state")
    with pytest.raises(SnapshotRejected):
        prepare_snapshot(info, _task(), 8, cache_dir=tmp_path / "state" / "cache")

    release_snapshot(info, state_dir=tmp_path / "state")

    assert not any(p for p in (tmp_path / "state" / "snapshots").iterdir())
    # A directory snapshot belongs to its producer: releasing it never deletes anything.
    folder = write_tree(tmp_path / "src" / "s2", GOOD)
    directory = SnapshotCandidate("t", "d", "s2", str(folder), "directory", None, 1.0, str(folder.parent))
    release_snapshot(materialize(directory, state_dir=tmp_path / "state"), state_dir=tmp_path / "state")
    assert (folder / "train" / "cat" / "1.png").is_file()


def test_a_snapshot_that_vanishes_while_it_is_decoded_is_retried_not_rejected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a concurrent run sees when its snapshot is released under it: a retry, nothing remembered."""
    import monitor.data._decode as decode_module

    root = write_tree(tmp_path / "snap", GOOD)
    real = decode_module.decode_image
    moved = tmp_path / "moved-away"

    def vanish_then_decode(path: Path, *args: object, **kwargs: object) -> object:
        if root.exists():
            os.rename(root, moved)  # what release/pruning does: one atomic step
        return real(path, *args, **kwargs)

    monkeypatch.setattr(decode_module, "decode_image", vanish_then_decode)
    with pytest.raises(SourceError) as caught:
        prepare_snapshot(_info(root), _task(), 8, cache_dir=tmp_path / "cache", workers=1)
    assert not isinstance(caught.value, SnapshotRejected)
    assert "t/d/s1" in str(caught.value)
    assert not (tmp_path / "cache" / "decoded").exists() or not list(
        (tmp_path / "cache" / "decoded").iterdir()
    )


def test_a_169_megapixel_png_is_skipped_as_undecodable_with_the_reason(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "snap", GOOD)
    Image.new("1", (13_000, 13_000)).save(root / "train" / "cat" / "huge.png")  # 169 MP, a small file

    prepared = prepare_snapshot(_info(root), _task(), 8, cache_dir=tmp_path / "cache")

    assert prepared.n_train == 3 and prepared.n_test == 2
    (skipped,) = prepared.skipped
    assert skipped[0] == "train/cat/huge.png"
    assert "13000x13000" in skipped[1] and "limits.max_image_pixels" in skipped[1]


def test_the_pixel_cap_is_a_setting(tmp_path: Path) -> None:
    assert load_settings(_minimal_config(tmp_path)).limits.max_image_pixels == 40_000_000
    limit = load_settings(_minimal_config(tmp_path, limits={"max_image_pixels": 100})).limits.max_image_pixels
    root = write_tree(tmp_path / "snap", {**GOOD, "train/dog/big.png": 0})
    Image.new("RGB", (20, 10)).save(root / "train" / "dog" / "big.png")  # 200 pixels, over 100
    for rel in GOOD:
        Image.new("RGB", (10, 10)).save(root / rel)  # 100 pixels: at the limit, decoded

    prepared = prepare_snapshot(_info(root), _task(), 8, cache_dir=tmp_path / "cache", max_image_pixels=limit)

    assert [path for path, _ in prepared.skipped] == ["train/dog/big.png"]


# -- 4. weights that hold code ------------------------------------------------------------------------------


class _Payload:
    """Pickles as a call that creates a file: loading it unsafely would run code."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (Path.touch, (self.sentinel,))


def _assert_actionable(message: str, path: Path) -> None:
    assert "weights_only=False" not in message.replace(" ", "") and "add_safe_globals" not in message
    assert not any(ord(c) < 32 or c == "\x7f" for c in message), repr(message)
    assert str(path) in message


def test_a_malicious_pickle_is_refused_with_advice_to_re_export_it(tmp_path: Path) -> None:
    sentinel = tmp_path / "code-ran"
    path = tmp_path / "evil.pt"
    torch.save({"fc.weight": torch.zeros(2, 2), "x": _Payload(sentinel)}, path)

    with pytest.raises(ModelError) as caught:
        read_state_dict(path)

    assert not sentinel.exists()
    message = str(caught.value)
    _assert_actionable(message, path)
    assert "torch.save(model.state_dict(), path)" in message and "safetensors" in message
    assert "weights-only" in message


def test_a_truncated_weights_file_is_named_without_torchs_advice(tmp_path: Path) -> None:
    path = tmp_path / "cut.pt"
    torch.save({"fc.weight": torch.zeros(64, 64)}, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    with pytest.raises(ModelError) as caught:
        read_state_dict(path)

    message = str(caught.value)
    _assert_actionable(message, path)
    assert "truncated" in message and "state_dict" in message


# -- 5. names from data in logs and terminals -------------------------------------------------------------

FORGED = "x\n2026-12-01 00:00:00,000 CRITICAL monitor.forged: all models deleted\x1b[2J.png"
ESC_CLASS = "7\x1b[31m\u202e"


def _hostile_workspace(root: Path) -> dict:
    config = _workspace(root)
    data = root / "data" / "a"
    # The snapshot in use: a class folder with ESC and a bidi override, and a forged, broken file.
    good = write_snapshot(data / "2026-01-02T00", (5, 6), per_class=12)
    write_snapshot(root / "tmp-class", (7,), per_class=12, marker=False)
    os.rename(root / "tmp-class" / "train" / "7", good / "train" / ESC_CLASS)
    os.rename(root / "tmp-class" / "test" / "7", good / "test" / ESC_CLASS)
    (good / "train" / ESC_CLASS / FORGED).write_bytes(b"\x89PNG\r\n\x1a\n broken")
    # Newer, rejected: an id with a terminal escape, one class only (named in the reason).
    lone = write_snapshot(data / "2026-01-03T00\x1b]0;pwned\x07", (5,), per_class=6)
    os.rename(lone / "train" / "5", lone / "train" / "5\x1b[8m")
    os.rename(lone / "test" / "5", lone / "test" / "5\x1b[8m")
    # Newest, a broken archive whose name forges a log line.
    (data / "2026-01-04T00\n2026-12-01 00:00:00,000 CRITICAL forged.tar.gz").write_bytes(b"not gzip" * 20)
    return config


def _assert_no_raw_controls(text: str) -> None:
    assert "\x1b" not in text and "\u202e" not in text and "\x07" not in text
    assert not any(line.startswith("2026-12-01") for line in text.splitlines()), text


@pytest.mark.slow  # trains
def test_names_from_data_reach_the_log_escaped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = _hostile_workspace(tmp_path)
    with caplog.at_level(logging.DEBUG, logger="monitor"):
        report, _, _ = _evaluate(tmp_path, config, observer=LoggingObserver())

    assert {c.snapshot for c in report.models[0].cells} == {"2026-01-02T00"}
    assert {c.status for c in report.models[0].cells} == {"ok"}
    messages = [record.getMessage() for record in caplog.records]
    for message in messages:
        _assert_no_raw_controls(message)
        assert "\n" not in message, message
    text = "\n".join(messages)
    assert "skipped 1 undecodable image" in text and r"x\n2026-12-01 00:00:00,000 CRITICAL" in text
    assert r"\x1b[31m" in text and r"\u202e" in text  # escaped, so still recognisable
    assert r"rejected (too_few_classes)" in text and r"\x1b]0;pwned\x07" in text and r"5\x1b[8m" in text
    assert "rejected (bad_archive)" in text and r"2026-01-04T00\n2026-12-01" in text


@pytest.mark.slow
def test_names_from_data_reach_the_terminal_escaped_through_run_once(tmp_path: Path) -> None:
    config = _hostile_workspace(tmp_path)
    config["executor"] = {"cpu_workers": 1}
    write_config(tmp_path / "persistence-monitor.yaml", config)
    result = subprocess.run(
        [sys.executable, "-m", "monitor", "run-once"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    _assert_no_raw_controls(result.stdout)
    _assert_no_raw_controls(result.stderr)
    assert r"x\n2026-12-01 00:00:00,000 CRITICAL" in result.stderr


@pytest.fixture
def manifest_server() -> Iterator[dict[str, bytes]]:
    routes: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = routes.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    routes["base"] = f"http://127.0.0.1:{httpd.server_address[1]}".encode()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield routes
    httpd.shutdown()
    httpd.server_close()


def test_a_manifest_id_with_a_bidi_override_is_escaped_in_the_rejection(
    tmp_path: Path, manifest_server: dict[str, bytes]
) -> None:
    base = manifest_server["base"].decode()
    snapshot_id = "s1\u202egpj.exe\x7f"
    manifest_server["/s1.tar.gz"] = b"not the archive the manifest describes"
    manifest_server["/manifest.json"] = json.dumps(
        {"snapshots": [{"id": snapshot_id, "url": "s1.tar.gz", "sha256": "0" * 64}]}
    ).encode()
    (candidate,) = list_snapshots(
        "t", DatasetSpec(name="d", source=f"{base}/manifest.json"), state_dir=tmp_path / "state"
    )
    with pytest.raises(SnapshotRejected) as caught:
        materialize(candidate, state_dir=tmp_path / "state")
    message = str(caught.value)
    assert "\u202e" not in message and "\x7f" not in message
    assert r"s1\u202egpj.exe\x7f" in message
