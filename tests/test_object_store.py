"""Snapshots and weights on a real S3 API (moto's server on 127.0.0.1, IAM authentication on).

The same layout rules as a local folder, the same digests as the same files on local disk, one
download per content (an unchanged poll lists and never reads an object), and clear errors for
wrong credentials and for an object that changes under a download.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

from monitor.errors import SourceError
from monitor.settings import DatasetSpec, ModelSpec
from monitor.sources import list_snapshots, materialize, model_version
from monitor.sources._digest import directory_digest
from monitor.sources._memo import DigestMemo
from tests._s3 import S3Server
from tests._workspace import write_snapshot


@pytest.fixture
def opens(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every object s3fs opens for reading (a real read: the server is real, only counted here)."""
    import s3fs

    seen: list[str] = []
    original = s3fs.S3FileSystem._open

    def counting(self, path, mode="rb", *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(path)
        return original(self, path, mode, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_open", counting)
    return seen


def _upload_folder(client, bucket: str, prefix: str, folder: Path) -> None:
    """Upload a snapshot folder as a writer should: the ready marker last."""
    for path in sorted(folder.rglob("*"), key=lambda p: (p.name == "_SUCCESS", str(p))):
        if path.is_file():
            client.put_object(
                Bucket=bucket, Key=f"{prefix}/{path.relative_to(folder).as_posix()}", Body=path.read_bytes()
            )


def _targz(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return buffer.getvalue()


def _zip(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


def _dataset(s3: S3Server, url: str, **options) -> DatasetSpec:
    return DatasetSpec(name="ds", source=url, storage_options=s3.options(**options))


def test_a_bucket_prefix_is_listed_like_a_local_folder(s3: S3Server, tmp_path: Path) -> None:
    client = s3.bucket("listing")
    snap = write_snapshot(tmp_path / "snap", (1, 2), per_class=6)
    _upload_folder(client, "listing", "line-a/2026-01-01T00", snap)
    client.put_object(Bucket="listing", Key="line-a/2026-01-02T00/train/1/x.png", Body=b"x")  # no marker yet
    tgz = _targz(snap)
    client.put_object(Bucket="listing", Key="line-a/2026-01-03T00.tar.gz", Body=tgz)
    client.put_object(Bucket="listing", Key="line-a/2026-01-04T00.zip", Body=_zip(snap))
    client.put_object(Bucket="listing", Key="line-a/_tmp/2026-01-05T00.tar", Body=b"hidden")
    client.put_object(Bucket="listing", Key="line-a/2026-01-06T00.tar.part", Body=b"partial")
    client.put_object(Bucket="listing", Key="line-a/README.txt", Body=b"not a snapshot")

    found = list_snapshots("t", _dataset(s3, "s3://listing/line-a/"), state_dir=tmp_path / "state")
    # Folders older than the newest complete snapshot are listed unchecked: their marker is looked
    # at when one is fetched (a poll costs one request per snapshot otherwise).
    assert [(c.snapshot, c.kind, c.verified) for c in found] == [
        ("2026-01-01T00", "prefix", False),
        ("2026-01-02T00", "prefix", False),
        ("2026-01-03T00", "object", True),
        ("2026-01-04T00", "object", True),
    ]
    assert all(c.identity and c.timestamp > 0 for c in found if c.verified)
    assert s3.secret not in repr(found)
    with pytest.raises(SourceError, match=r"is not complete \(no _SUCCESS\)"):
        materialize(found[1], state_dir=tmp_path / "state")
    found.pop(1)

    no_marker = DatasetSpec(
        name="ds", source="s3://listing/line-a", ready_marker=None, storage_options=s3.options()
    )
    ids = [c.snapshot for c in list_snapshots("t", no_marker, state_dir=tmp_path / "state")]
    assert ids == ["2026-01-01T00", "2026-01-02T00", "2026-01-03T00", "2026-01-04T00"]

    # Every kind gives the digest the same files have on local disk.
    state = tmp_path / "state"
    local = directory_digest(snap, DigestMemo(tmp_path / "memo"))
    folder = materialize(found[0], state_dir=state)
    assert folder.digest == local
    assert sorted(p.relative_to(folder.root).as_posix() for p in folder.root.rglob("*.png")) == sorted(
        p.relative_to(snap).as_posix() for p in snap.rglob("*.png")
    )
    archive = materialize(found[1], state_dir=state)
    assert archive.digest == hashlib.sha256(tgz).hexdigest()  # as the same archive on local disk
    assert sorted(p.name for p in (archive.root / "train").iterdir()) == ["1", "2"]
    assert materialize(found[2], state_dir=state).root.joinpath("test", "2").is_dir()


def test_an_unchanged_poll_downloads_nothing_and_a_new_snapshot_is_seen(
    s3: S3Server, tmp_path: Path, opens: list[str]
) -> None:
    client = s3.bucket("polling")
    snap = write_snapshot(tmp_path / "snap", (1, 2), per_class=6)
    _upload_folder(client, "polling", "p/2026-01-01T00", snap)
    dataset, state = _dataset(s3, "s3://polling/p"), tmp_path / "state"

    [first] = list_snapshots("t", dataset, state_dir=state)
    info = materialize(first, state_dir=state)
    assert len(opens) == 12  # every image, once
    opens.clear()
    for _ in range(2):
        [again] = list_snapshots("t", dataset, state_dir=state)
        assert materialize(again, state_dir=state) == info
    assert opens == []

    client.put_object(Bucket="polling", Key="p/2026-01-02T00.tar.gz", Body=_targz(snap))
    found = list_snapshots("t", dataset, state_dir=state)
    assert [c.snapshot for c in found] == ["2026-01-01T00", "2026-01-02T00"]

    # Rewriting a snapshot in place and uploading its (empty, so same-ETag) marker again is a new
    # identity: fetched again. S3 times have 1 s resolution: the rewrite is a second later.
    time.sleep(1.1)
    opens.clear()
    client.put_object(
        Bucket="polling",
        Key="p/2026-01-01T00/train/1/extra.png",
        Body=(snap / "train/1").iterdir().__next__().read_bytes(),
    )
    client.put_object(Bucket="polling", Key="p/2026-01-01T00/_SUCCESS", Body=b"")
    rewritten = materialize(list_snapshots("t", dataset, state_dir=state)[0], state_dir=state)
    assert rewritten.digest != info.digest and len(opens) == 13


def test_the_daemon_poll_fingerprint_changes_only_with_a_new_snapshot(s3: S3Server, tmp_path: Path) -> None:
    from monitor.daemon import inputs_fingerprint
    from monitor.settings import settings_from_mapping

    client = s3.bucket("fingerprint")
    snap = write_snapshot(tmp_path / "snap", (1, 2), per_class=3)
    _upload_folder(client, "fingerprint", "p/2026-01-01T00", snap)
    settings = settings_from_mapping(
        {
            "models": [{"name": "m", "architecture": "python:absent:build"}],
            "tasks": [
                {
                    "name": "t",
                    "datasets": [
                        {"name": "d", "source": "s3://fingerprint/p/", "storage_options": s3.options()}
                    ],
                }
            ],
            "strategies": [{"name": "lin", "mode": "linear", "lr": 0.1, "epochs": 1}],
            "seeds": [0],
        },
        base_dir=tmp_path,
    )
    before = inputs_fingerprint(settings)
    assert inputs_fingerprint(settings) == before
    client.put_object(Bucket="fingerprint", Key="p/2026-01-02T00.tar.gz", Body=_targz(snap))
    assert inputs_fingerprint(settings) != before


def test_a_multipart_archive_object_is_fetched_whole(s3: S3Server, tmp_path: Path) -> None:
    from boto3.s3.transfer import TransferConfig

    client = s3.bucket("multipart")
    snap = write_snapshot(tmp_path / "snap", (1, 2), per_class=4)
    (snap / "padding.bin").write_bytes(__import__("os").urandom(6 * 2**20))  # not an image: ignored
    archive = tmp_path / "2026-01-01T00.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(snap, arcname="snap")
    config = TransferConfig(multipart_threshold=5 * 2**20, multipart_chunksize=5 * 2**20)
    client.upload_file(str(archive), "multipart", "p/2026-01-01T00.tar", Config=config)
    [candidate] = list_snapshots("t", _dataset(s3, "s3://multipart/p"), state_dir=tmp_path / "state")
    assert '-2\\"' in (candidate.identity or "")  # S3's ETag of a two-part upload

    info = materialize(candidate, state_dir=tmp_path / "state")
    assert info.digest == hashlib.sha256(archive.read_bytes()).hexdigest()  # as the local archive's
    assert (info.root / "padding.bin").stat().st_size == 6 * 2**20
    assert not any((tmp_path / "state" / "downloads").iterdir())  # the archive is not kept


def test_wrong_credentials_are_a_clear_error_without_the_secret(s3: S3Server, tmp_path: Path) -> None:
    s3.bucket("guarded").put_object(Bucket="guarded", Key="p/x.tar", Body=b"x")
    wrong = _dataset(s3, "s3://guarded/p", key="AKIAWRONGWRONGWRONG", secret="not-the-secret-9d8f7e")
    with pytest.raises(SourceError) as caught:
        list_snapshots("t", wrong, state_dir=tmp_path / "state")
    message = str(caught.value)
    assert "cannot list snapshots of dataset t/ds at s3://guarded/p" in message
    assert "does not exist in our records" in message and "check the credentials" in message
    assert "not-the-secret-9d8f7e" not in message and "AKIAWRONGWRONGWRONG" not in message
    assert "not-the-secret" not in repr(wrong) and "not-the-secret" not in wrong.model_dump_json()

    with pytest.raises(SourceError, match="no such bucket or prefix"):
        list_snapshots("t", _dataset(s3, "s3://no-such-bucket/p"), state_dir=tmp_path / "state")


def test_an_object_that_changes_under_the_download_is_not_kept(s3: S3Server, tmp_path: Path) -> None:
    client = s3.bucket("truncated")
    snap = write_snapshot(tmp_path / "snap", (1, 2), per_class=4)
    body = _targz(snap)
    client.put_object(Bucket="truncated", Key="p/2026-01-01T00.tar.gz", Body=body)
    dataset, state = _dataset(s3, "s3://truncated/p"), tmp_path / "state"
    [listed] = list_snapshots("t", dataset, state_dir=state)
    client.put_object(Bucket="truncated", Key="p/2026-01-01T00.tar.gz", Body=body[: len(body) // 2])

    # s3fs notices the new ETag (our own size check is the net for backends that do not).
    with pytest.raises(SourceError, match=r"truncated, or replaced .*nothing was kept, it is fetched again"):
        materialize(listed, state_dir=state)
    assert not list((state / "snapshots").glob("[0-9a-f]*"))
    assert not [p for p in (state / "downloads").iterdir()]

    client.put_object(Bucket="truncated", Key="p/2026-01-01T00.tar.gz", Body=body)
    [fresh] = list_snapshots("t", dataset, state_dir=state)
    assert materialize(fresh, state_dir=state).digest == hashlib.sha256(body).hexdigest()


def test_weights_in_a_bucket_are_fetched_once_by_content_through_the_standard_chain(
    s3: S3Server, tmp_path: Path, opens: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    from safetensors.torch import save

    torch.manual_seed(0)
    body = save({"w": torch.randn(8, 4)})
    client = s3.bucket("models")
    client.put_object(Bucket="models", Key="prod/r18.safetensors", Body=body)
    # No storage_options: endpoint and keys come from the environment, as boto's chain reads them.
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    spec = ModelSpec(name="m", architecture="python:absent:build", weights="s3://models/prod/r18.safetensors")
    local = tmp_path / "small.safetensors"
    local.write_bytes(body)
    on_disk = model_version(spec.model_copy(update={"weights": str(local)}), state_dir=tmp_path / "s1")

    state = tmp_path / "state"
    first = model_version(spec, state_dir=state)
    assert first.digest == on_disk.digest == hashlib.sha256(body).hexdigest()
    assert (
        first.weights is not None
        and first.weights.read_bytes() == body
        and first.weights.suffix == ".safetensors"
    )
    assert model_version(spec, state_dir=state) == first
    assert len(opens) == 1  # the second poll only asked for the object's metadata

    client.put_object(Bucket="models", Key="prod/r18.safetensors", Body=body + b"\0")
    assert model_version(spec, state_dir=state).digest == hashlib.sha256(body + b"\0").hexdigest()

    missing = spec.model_copy(update={"weights": "s3://models/prod/absent.safetensors"})
    with pytest.raises(SourceError, match="no such object; check models"):
        model_version(missing, state_dir=state)


@pytest.mark.slow
def test_a_grid_with_snapshots_and_weights_on_s3_gives_the_cells_of_the_same_files_on_disk(
    s3: S3Server, tmp_path: Path
) -> None:
    import importlib.util

    import torch
    from safetensors.torch import save_file

    from tests._pipeline import evaluate
    from tests._workspace import basic_config, write_tiny_cnn

    client = s3.bucket("grid")
    write_tiny_cnn(tmp_path, name="grid_cnn_weights")
    found = importlib.util.spec_from_file_location("grid_cnn_weights", tmp_path / "grid_cnn_weights.py")
    assert found is not None and found.loader is not None
    module = importlib.util.module_from_spec(found)
    found.loader.exec_module(module)
    torch.manual_seed(3)
    save_file(module.build().state_dict(), tmp_path / "cnn.safetensors")  # "pre-trained" weights
    client.upload_file(str(tmp_path / "cnn.safetensors"), "grid", "models/cnn.safetensors")
    runs = {}
    for where in ("disk", "s3"):
        root = tmp_path / where
        root.mkdir()
        arch = write_tiny_cnn(root, name="grid_cnn")
        snap = write_snapshot(root / "data" / "2026-01-01T00", (3, 5, 8), per_class=18)
        source, weights = "data", str(tmp_path / "cnn.safetensors")
        if where == "s3":
            _upload_folder(client, "grid", "line-a/2026-01-01T00", snap)
            source, weights = "s3://grid/line-a/", "s3://grid/models/cnn.safetensors"
        config = basic_config(
            [{"name": "cnn", "architecture": arch, "weights": weights}],
            {"digits": [("a", source)]},
            strategies=[
                {"name": "lin", "mode": "linear", "lr": 0.1, "epochs": 3, "batch_size": 16},
                {
                    "name": "full",
                    "mode": "full",
                    "optimizer": "adamw",
                    "lr": 0.002,
                    "epochs": 1,
                    "batch_size": 16,
                },
            ],
            seeds=[0],
        )
        if where == "s3":
            config["tasks"][0]["datasets"][0]["storage_options"] = s3.options()
            config["models"][0]["storage_options"] = s3.options()
        report, recorder, store = evaluate(root, config)
        store.close()
        assert not [w for w in recorder.warnings if "test split holds" not in w], recorder.warnings
        runs[where] = report
    disk, remote = runs["disk"], runs["s3"]

    def cells(report):  # the trial keys cover the snapshot's and the weights' digests: same content
        return {(c.strategy, c.status, c.score, c.keys) for m in report.models for c in m.cells}

    assert cells(remote) == cells(disk) and len(cells(disk)) == 2
    assert all(status == "ok" for _, status, _, _ in cells(disk))
    assert [m.score.persistence for m in remote.models] == [m.score.persistence for m in disk.models]
    assert [m.score.version for m in remote.models] == [m.score.version for m in disk.models]


@pytest.mark.slow
def test_serve_evaluates_a_grid_from_a_bucket_and_polls_it_for_new_snapshots_and_weights(
    s3: S3Server, tmp_path: Path
) -> None:
    """The daemon as deployed beside a bucket: snapshots and weights in S3, credentials from AWS_*."""
    import sys

    import torch
    import yaml
    from safetensors.torch import save_file

    from tests._daemon import workspace
    from tests._services import DaemonProcess, wait_until

    client = s3.bucket("serving")
    linear = [{"name": "lin", "mode": "linear", "lr": 0.1, "epochs": 3, "batch_size": 16}]
    config_path = workspace(tmp_path, strategies=linear)
    for dataset in ("a", "b"):
        _upload_folder(
            client,
            "serving",
            f"digits/{dataset}/2026-01-01T00",
            tmp_path / "data" / dataset / "2026-01-01T00",
        )
    sys.path.insert(0, str(tmp_path))
    try:
        from daemon_cnn import build  # the workspace's tiny CNN, as the daemon's workers build it
    finally:
        sys.path.remove(str(tmp_path))
    torch.manual_seed(1)
    save_file(build().state_dict(), tmp_path / "cnn.safetensors")
    client.upload_file(str(tmp_path / "cnn.safetensors"), "serving", "models/cnn.safetensors")

    document = yaml.safe_load(config_path.read_text())
    document["models"][0]["weights"] = "s3://serving/models/cnn.safetensors"
    for dataset in document["tasks"][0]["datasets"]:
        dataset["source"] = f"s3://serving/digits/{dataset['name']}/"
    config_path.write_text(yaml.safe_dump(document))
    env = {
        "AWS_ENDPOINT_URL": s3.endpoint,
        "AWS_ACCESS_KEY_ID": s3.key,
        "AWS_SECRET_ACCESS_KEY": s3.secret,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    daemon = DaemonProcess(config_path, env=env).start()
    try:

        def completed() -> list[dict]:
            return [r for r in daemon.runs() if r["status"] in ("completed", "partial")]

        (startup,) = wait_until(completed, timeout=120, what="the start-up evaluation")
        assert startup["status"] == "completed", daemon.log_text()[-2000:]
        (model,) = daemon.get("/api/v1/models").json()
        first_version = model["version"]

        _upload_folder(
            client,
            "serving",
            "digits/a/2026-01-02T00",
            write_snapshot(tmp_path / "new" / "2026-01-02T00", (5, 6, 7), per_class=15, offset=80),
        )
        wait_until(lambda: len(completed()) == 2, timeout=120, what="a poll run for the new snapshot")
        newest = daemon.get(f"/api/v1/runs/{completed()[0]['run_id']}").json()
        assert newest["trigger"] == "poll"
        cells = newest["models"][0]["cells"]
        assert {(c["dataset"], c["snapshot"], c["status"]) for c in cells} == {
            ("a", "2026-01-02T00", "ok"),
            ("b", "2026-01-01T00", "cached"),
        }

        torch.manual_seed(2)
        save_file(build().state_dict(), tmp_path / "cnn2.safetensors")
        client.upload_file(str(tmp_path / "cnn2.safetensors"), "serving", "models/cnn.safetensors")
        wait_until(lambda: len(completed()) == 3, timeout=120, what="a poll run for the new weights")
        (model,) = daemon.get("/api/v1/models").json()
        assert model["version"] != first_version
        assert s3.secret not in daemon.log_text()
    finally:
        daemon.stop()


def test_a_poll_says_what_it_found_new_without_locations() -> None:
    from monitor.daemon._fingerprint import changes

    before = (("model", "m", "a" * 64), ("dataset", "t", "d", "s1", 1.0, None, "{}"))
    after = (
        ("model", "m", "b" * 64),
        ("dataset", "t", "d", "s2", 2.0, None, "{}"),
        ("dataset", "t", "e", "error: x"),
    )
    assert (
        changes(before, after)
        == "new model m: weights bbbbbbbbbbbb, dataset t/d: snapshot s2, dataset t/e: unreadable"
    )
    assert changes(None, before[:1]) == "new model m: weights aaaaaaaaaaaa"


@pytest.mark.slow
def test_check_config_resolves_weights_and_snapshots_in_a_bucket(s3: S3Server, tmp_path: Path) -> None:
    import torchvision
    from rich.console import Console
    from safetensors.torch import save_file

    from monitor.cli._check import check_config
    from monitor.settings import load_settings
    from tests._workspace import write_config

    client = s3.bucket("checking")
    _upload_folder(
        client, "checking", "line-a/2026-01-01T00", write_snapshot(tmp_path / "s", (1, 2), per_class=3)
    )
    save_file(
        torchvision.models.mobilenet_v3_small(num_classes=3).state_dict(), tmp_path / "small.safetensors"
    )
    client.upload_file(str(tmp_path / "small.safetensors"), "checking", "models/small.safetensors")
    options = s3.options()
    config = {
        "models": [
            {
                "name": "small",
                "architecture": "torchvision:mobilenet_v3_small",
                "weights": "s3://checking/models/small.safetensors",
                "storage_options": options,
                "image_size": 32,
            }
        ],
        "tasks": [
            {
                "name": "t",
                "datasets": [{"name": "a", "source": "s3://checking/line-a/", "storage_options": options}],
            }
        ],
        "strategies": [{"name": "lin", "mode": "linear", "lr": 0.1, "epochs": 1}],
        "seeds": [0],
    }
    settings = load_settings(write_config(tmp_path / "c.yaml", config))
    out = Console(file=io.StringIO(), width=200)
    assert check_config(settings, out) == 0, out.file.getvalue()
    printed = out.file.getvalue()
    digest = hashlib.sha256((tmp_path / "small.safetensors").read_bytes()).hexdigest()
    assert digest[:12] in printed and "2026-01-01T00" in printed and "ok" in printed
    assert s3.secret not in printed


def test_only_the_newest_complete_folder_is_checked_at_each_poll(s3: S3Server, tmp_path: Path) -> None:
    """A poll costs one listing plus the markers down to the newest complete snapshot; an older
    folder's marker is checked when (if ever) it is fetched."""
    client = s3.bucket("lazy")
    snap = write_snapshot(tmp_path / "snap", (1, 2), per_class=3)
    _upload_folder(client, "lazy", "p/2026-01-02T00", snap)
    (snap / "_SUCCESS").unlink()
    _upload_folder(client, "lazy", "p/2026-01-01T00", snap)  # never completed
    _upload_folder(client, "lazy", "p/2026-01-03T00", snap)  # being written: no marker yet
    dataset, state = _dataset(s3, "s3://lazy/p"), tmp_path / "state"
    found = list_snapshots("t", dataset, state_dir=state)
    assert [(c.snapshot, c.verified) for c in found] == [("2026-01-01T00", False), ("2026-01-02T00", True)]
    with pytest.raises(SourceError, match=r"is not complete \(no _SUCCESS\)"):
        materialize(found[0], state_dir=state)
    assert materialize(found[1], state_dir=state).timestamp == found[1].timestamp > 0


def test_keys_no_local_folder_can_hold_reject_the_snapshot_naming_the_key(
    s3: S3Server, tmp_path: Path
) -> None:
    from monitor.errors import SnapshotRejected

    client = s3.bucket("badkeys")
    image = write_snapshot(tmp_path / "snap", (1,), per_class=1, layout="hashed")
    png = next(image.rglob("*.png")).read_bytes()
    cases = {
        "long": [f"p/long/1/{'x' * 300}.png"],
        "clash": ["p/clash/1/a.png", "p/clash/1/a.png/b.png"],
    }
    for case, keys in cases.items():
        for key in keys:
            client.put_object(Bucket="badkeys", Key=key, Body=png)
        client.put_object(Bucket="badkeys", Key=f"p/{case}/_SUCCESS", Body=b"")
    found = {
        c.snapshot: c
        for c in list_snapshots(
            "t",
            _dataset(
                s3,
                "s3://badkeys/p",
            ),
            state_dir=tmp_path / "s",
        )
    }
    with pytest.raises(SnapshotRejected, match="longer than 255 bytes"):
        materialize(found["long"], state_dir=tmp_path / "s")
    with pytest.raises(SnapshotRejected, match="is both an image and the folder of"):
        materialize(found["clash"], state_dir=tmp_path / "s")
    assert not list((tmp_path / "s" / "snapshots").glob("[0-9a-f]*"))
