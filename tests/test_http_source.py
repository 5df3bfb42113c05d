"""HTTP(S) sources: a JSON manifest on a real loopback server, streamed and checked downloads."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from monitor.errors import SnapshotRejected, SourceError
from monitor.settings import DatasetSpec
from monitor.sources import SnapshotCandidate, SnapshotLimits, list_snapshots, materialize

FILES = {"train/cat/1.png": b"c1", "train/dog/1.png": b"d1", "test/cat/2.png": b"c2", "test/dog/2.png": b"d2"}


@dataclass
class Server:
    """A loopback HTTP server answering from `routes`; it records every path requested."""

    base: str
    routes: dict[str, tuple[int, bytes, dict[str, str]]] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)
    methods: list[tuple[str, str]] = field(default_factory=list)  # (method, path) of every request
    # When set, every request must carry this Authorization header (else 401).
    token: str | None = None
    authorizations: list[str | None] = field(default_factory=list)
    api_keys: list[str | None] = field(default_factory=list)  # X-Api-Key of every request
    refuse_head: bool = False  # answer HEAD with 405, as some servers do

    def serve(self, path: str, body: bytes, status: int = 200, **headers: str) -> str:
        self.routes[path] = (status, body, headers)
        return self.base + path

    def manifest(self, path: str, entries: list[dict[str, object]]) -> str:
        return self.serve(path, json.dumps({"snapshots": entries}).encode(), content_type="application/json")


@pytest.fixture
def server() -> Iterator[Server]:
    state: dict[str, Server] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            if state["server"].refuse_head:
                state["server"].methods.append(("HEAD", self.path))
                self.send_response(405)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self._answer(send_body=False)

        def do_GET(self) -> None:
            self._answer(send_body=True)

        def _answer(self, *, send_body: bool) -> None:
            srv = state["server"]
            srv.methods.append((self.command, self.path))
            srv.authorizations.append(self.headers.get("Authorization"))
            srv.api_keys.append(self.headers.get("X-Api-Key"))
            if send_body:
                srv.hits.append(self.path)
            status, body, headers = srv.routes.get(self.path, (404, b"not found", {}))
            if srv.token is not None and self.headers.get("Authorization") != srv.token:
                status, body, headers = 401, b"unauthorized", {}
            self.send_response(status)
            headers = dict(headers)
            length = headers.pop("length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name.replace("_", "-"), value)
            if length != "none":  # "none": close-delimited body (HTTP/1.0), no Content-Length
                self.send_header("Content-Length", length)
            self.end_headers()
            if not send_body:
                return
            with contextlib.suppress(
                BrokenPipeError, ConnectionResetError
            ):  # the client may give up (size cap)
                self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    state["server"] = Server(base=f"http://127.0.0.1:{httpd.server_address[1]}")
    # A short poll interval keeps shutdown (and so each test) fast.
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield state["server"]
    httpd.shutdown()
    httpd.server_close()


def _targz(files: dict[str, bytes] = FILES) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, payload in files.items():
            info = tarfile.TarInfo(f"snap/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


def _zip(files: dict[str, bytes] = FILES) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, payload in files.items():
            zf.writestr(name, payload)
    return buffer.getvalue()


def _sha(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def _list(url: str, tmp_path: Path, client: httpx.Client | None = None) -> list[SnapshotCandidate]:
    return list_snapshots(
        "task", DatasetSpec(name="ds", source=url), state_dir=tmp_path / "state", client=client
    )


def test_manifest_lists_snapshots_with_urls_resolved_against_it(server: Server, tmp_path: Path) -> None:
    url = server.manifest(
        "/line-a/manifest.json",
        [
            {"id": "2026-11-29T06", "url": "2026-11-29T06.tar.gz", "sha256": "AB" * 32},
            {"id": "2026-11-28T06", "url": "../archive/2026-11-28T06.zip", "sha256": "cd" * 32},
            {"id": "b-custom", "url": f"{server.base}/abs/b.tgz", "sha256": "ef" * 32, "timestamp": 1234.5},
        ],
    )

    with httpx.Client() as client:
        found = _list(url, tmp_path, client)

    assert [(c.snapshot, c.kind, c.location, c.sha256) for c in found] == [
        ("2026-11-28T06", "remote", f"{server.base}/archive/2026-11-28T06.zip", "cd" * 32),
        ("2026-11-29T06", "remote", f"{server.base}/line-a/2026-11-29T06.tar.gz", "ab" * 32),
        ("b-custom", "remote", f"{server.base}/abs/b.tgz", "ef" * 32),
    ]
    assert found[1].timestamp == datetime(2026, 11, 29, 6, tzinfo=UTC).timestamp()  # parsed from the id
    assert found[2].timestamp == 1234.5
    assert all(c.task == "task" and c.dataset == "ds" and c.source == url for c in found)


@pytest.mark.parametrize("suffix", [".tar.gz", ".zip"])
def test_a_remote_snapshot_is_downloaded_checked_extracted_and_reused(
    server: Server, tmp_path: Path, suffix: str
) -> None:
    body = _targz() if suffix == ".tar.gz" else _zip()
    server.serve(f"/data/s1{suffix}", body)
    url = server.manifest("/data/manifest.json", [{"id": "s1", "url": f"s1{suffix}", "sha256": _sha(body)}])
    state = tmp_path / "state"
    [candidate] = _list(url, tmp_path)

    info = materialize(candidate, state_dir=state)

    assert info.digest == _sha(body)
    extracted = state / "snapshots" / info.digest
    assert info.root == (extracted / "snap" if suffix == ".tar.gz" else extracted)  # _targz wraps in snap/
    assert {p.relative_to(info.root).as_posix() for p in info.root.rglob("*.png")} == set(FILES)
    assert list((state / "downloads").iterdir()) == []  # the archive is not kept once extracted
    downloads = server.hits.count(f"/data/s1{suffix}")
    assert materialize(candidate, state_dir=state) == info
    assert server.hits.count(f"/data/s1{suffix}") == downloads == 1  # already extracted: no download


def test_a_checksum_mismatch_is_rejected_and_nothing_is_kept(server: Server, tmp_path: Path) -> None:
    body = _targz()
    server.serve("/s1.tar.gz", body)
    url = server.manifest("/manifest.json", [{"id": "s1", "url": "s1.tar.gz", "sha256": "0" * 64}])
    [candidate] = _list(url, tmp_path)

    with pytest.raises(SnapshotRejected) as caught:
        materialize(candidate, state_dir=tmp_path / "state")

    assert caught.value.reason == "checksum_mismatch"
    assert _sha(body) in str(caught.value) and "task/ds/s1" in str(caught.value)
    assert list((tmp_path / "state" / "downloads").iterdir()) == []
    assert not (tmp_path / "state" / "snapshots").exists()


@pytest.mark.parametrize("length", ["declared", "none"])
def test_a_download_over_the_size_cap_is_rejected(server: Server, tmp_path: Path, length: str) -> None:
    body = bytes(300_000)
    if length == "declared":
        server.serve("/big.tar", body)
    else:
        server.serve("/big.tar", body, length="none")
    url = server.manifest("/manifest.json", [{"id": "big", "url": "big.tar", "sha256": _sha(body)}])
    [candidate] = _list(url, tmp_path)

    with pytest.raises(SnapshotRejected, match="larger than the download limit of 100000 bytes") as caught:
        materialize(
            candidate, state_dir=tmp_path / "state", limits=SnapshotLimits(max_download_bytes=100_000)
        )

    assert caught.value.reason == "too_large"
    assert list((tmp_path / "state" / "downloads").iterdir()) == []


def test_a_missing_archive_is_a_source_error_not_a_rejection(server: Server, tmp_path: Path) -> None:
    url = server.manifest("/manifest.json", [{"id": "s1", "url": "gone.tar", "sha256": "a" * 64}])
    [candidate] = _list(url, tmp_path)

    with pytest.raises(SourceError, match=r"cannot download snapshot task/ds/s1 .*HTTP 404") as caught:
        materialize(candidate, state_dir=tmp_path / "state")
    assert not isinstance(caught.value, SnapshotRejected)


BAD_MANIFESTS: dict[str, tuple[bytes, str]] = {
    "not-json": (b"<html>", "not valid JSON"),
    "list": (b"[]", '"snapshots" list'),
    "no-snapshots": (b'{"items": []}', '"snapshots" list'),
    "entry-not-object": (b'{"snapshots": ["s1"]}', r"snapshots\[0\] is not an object"),
    "no-id": (b'{"snapshots": [{"url": "a.tar", "sha256": "' + b"a" * 64 + b'"}]}', r"snapshots\[0\]\.id"),
    "slash-id": (b'{"snapshots": [{"id": "a/b", "url": "a.tar", "sha256": "' + b"a" * 64 + b'"}]}', "id"),
    "no-sha": (b'{"snapshots": [{"id": "a", "url": "a.tar"}]}', r"snapshots\[0\]\.sha256"),
    "short-sha": (b'{"snapshots": [{"id": "a", "url": "a.tar", "sha256": "abc"}]}', "64 hex digits"),
    "bad-suffix": (
        b'{"snapshots": [{"id": "a", "url": "a.rar", "sha256": "' + b"a" * 64 + b'"}]}',
        ".tar.gz",
    ),
    "ftp-url": (
        b'{"snapshots": [{"id": "a", "url": "ftp://x/a.tar", "sha256": "' + b"a" * 64 + b'"}]}',
        "not http",
    ),
    "duplicate-id": (
        b'{"snapshots": [{"id": "a", "url": "a.tar", "sha256": "'
        + b"a" * 64
        + b'"}, {"id": "a", "url": "b.tar", "sha256": "'
        + b"b" * 64
        + b'"}]}',
        "appears twice",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_MANIFESTS))
def test_a_bad_manifest_is_a_source_error_that_names_the_dataset(
    server: Server, tmp_path: Path, case: str
) -> None:
    body, problem = BAD_MANIFESTS[case]
    url = server.serve("/manifest.json", body)
    with pytest.raises(SourceError, match=problem) as caught:
        _list(url, tmp_path)
    assert f"cannot list snapshots of dataset task/ds at {url}" in str(caught.value)


def test_an_unreachable_manifest_is_a_source_error_without_credentials(
    server: Server, tmp_path: Path
) -> None:
    url = server.base.replace("http://", "http://user:s3cret@") + "/missing.json?token=s3cret"
    with pytest.raises(SourceError, match="HTTP 404") as caught:
        _list(url, tmp_path)
    assert "s3cret" not in str(caught.value)

    dead = "http://127.0.0.1:9/manifest.json"  # discard port: nothing listens there
    with pytest.raises(SourceError, match="ConnectError"):
        _list(dead, tmp_path)


# -- credentials: headers on the manifest (and its archives), and weights over http(s) -----------

TOKEN = "Bearer tok-9f2c1e7d"


def test_manifest_headers_authenticate_the_manifest_and_its_own_archives(
    server: Server, tmp_path: Path
) -> None:
    server.token = TOKEN
    archive = _targz()
    server.serve("/line-a/s1.tar.gz", archive)
    url = server.manifest(
        "/line-a/manifest.json", [{"id": "s1", "url": "s1.tar.gz", "sha256": _sha(archive)}]
    )
    token_file = tmp_path / "token"  # a mounted Kubernetes Secret
    token_file.write_text(TOKEN + "\n")
    dataset = DatasetSpec(name="ds", source=url, headers={"Authorization_file": str(token_file)})
    assert TOKEN not in repr(dataset) and TOKEN not in dataset.model_dump_json()

    [candidate] = list_snapshots("task", dataset, state_dir=tmp_path / "state")
    assert TOKEN not in repr(candidate)
    info = materialize(candidate, state_dir=tmp_path / "state")
    assert sorted(p.name for p in (info.root / "train").iterdir()) == ["cat", "dog"]
    assert server.authorizations == [TOKEN, TOKEN]

    server.authorizations.clear()
    with pytest.raises(
        SourceError, match=r"HTTP 401 .*check the credentials in tasks\[\]\.datasets\[\]\.headers"
    ):
        list_snapshots("task", DatasetSpec(name="ds", source=url), state_dir=tmp_path / "state")


def test_manifest_headers_never_go_to_another_origin(server: Server, tmp_path: Path) -> None:
    archive = _targz()
    other = (
        server.base.replace("127.0.0.1", "localhost") + "/elsewhere/s1.tar.gz"
    )  # same server, other origin
    server.serve("/elsewhere/s1.tar.gz", archive)
    url = server.manifest("/m.json", [{"id": "s1", "url": other, "sha256": _sha(archive)}])
    dataset = DatasetSpec(name="ds", source=url, headers={"Authorization": TOKEN})
    [candidate] = list_snapshots("task", dataset, state_dir=tmp_path / "state")
    materialize(candidate, state_dir=tmp_path / "state")
    assert server.authorizations == [TOKEN, None]


def test_an_unreadable_header_file_is_a_source_error_naming_the_file(server: Server, tmp_path: Path) -> None:
    url = server.manifest("/m.json", [])
    dataset = DatasetSpec(name="ds", source=url, headers={"Authorization_file": str(tmp_path / "absent")})
    with pytest.raises(SourceError, match=r"headers\.Authorization_file from .*absent"):
        list_snapshots("task", dataset, state_dir=tmp_path / "state")


def _weights_bytes() -> bytes:
    import torch
    from safetensors.torch import save

    torch.manual_seed(0)
    return save({"w": torch.randn(4, 3), "b": torch.zeros(4)})


def test_http_weights_are_fetched_once_by_content_and_polled_with_head(
    server: Server, tmp_path: Path
) -> None:
    from monitor.settings import ModelSpec
    from monitor.sources import model_version

    body = _weights_bytes()
    server.token = TOKEN
    url = server.serve("/models/r18.safetensors", body, etag='"v1"')
    spec = ModelSpec(name="m", architecture="python:x:build", weights=url, headers={"Authorization": TOKEN})
    state = tmp_path / "state"
    first = model_version(spec, state_dir=state)
    assert first.digest == _sha(body) and first.weights is not None and first.weights.read_bytes() == body
    assert first.weights.name == "r18.safetensors" and state in first.weights.parents
    second = model_version(spec, state_dir=state)
    assert second == first
    head, get = ("HEAD", "/models/r18.safetensors"), ("GET", "/models/r18.safetensors")
    assert server.methods == [head, get, head]  # an unchanged poll is one HEAD, no download

    new = body + b" "
    server.serve("/models/r18.safetensors", new, etag='"v2"')
    third = model_version(spec, state_dir=state)
    assert third.digest == _sha(new) and third.weights is not None and third.weights.read_bytes() == new

    with pytest.raises(SourceError, match=r"HTTP 401; check the credentials in models\[\]\.headers"):
        model_version(spec.model_copy(update={"headers": {}}), state_dir=state)


def test_pinned_http_weights_are_checked_and_never_polled(server: Server, tmp_path: Path) -> None:
    from monitor.settings import ModelSpec
    from monitor.sources import model_version

    body = _weights_bytes()
    url = server.serve("/w.safetensors", body)
    spec = ModelSpec(name="m", architecture="python:x:build", weights=url, weights_sha256=_sha(body))
    state = tmp_path / "state"
    assert model_version(spec, state_dir=state).digest == _sha(body)
    assert model_version(spec, state_dir=state).digest == _sha(body)
    assert server.methods == [("GET", "/w.safetensors")]

    wrong = spec.model_copy(update={"weights_sha256": "0" * 64})
    with pytest.raises(SourceError, match=r"have sha256 .* but models\[\]\.weights_sha256 says 0000"):
        model_version(wrong, state_dir=tmp_path / "other")
    assert not any((tmp_path / "other" / "weights").glob("*/*"))  # nothing kept


def test_credentials_never_follow_a_redirect_to_another_origin(server: Server, tmp_path: Path) -> None:
    from monitor.settings import ModelSpec
    from monitor.sources import model_version

    body = _weights_bytes()
    elsewhere = server.base.replace("127.0.0.1", "localhost") + "/cdn/w.safetensors"  # another origin
    server.serve("/cdn/w.safetensors", body, etag='"cdn"')
    server.serve("/same/w.safetensors", b"", status=302, location="/models/w.safetensors")
    server.serve("/models/w.safetensors", b"", status=302, location=elsewhere)
    spec = ModelSpec(
        name="m",
        architecture="python:x:build",
        weights=server.base + "/same/w.safetensors",
        headers={"X-Api-Key": "key-0123456789", "Authorization": TOKEN},
    )
    assert model_version(spec, state_dir=tmp_path / "state").digest == _sha(body)
    # HEAD and GET each: two hops on the origin with the credentials, none at the CDN.
    assert server.api_keys == ["key-0123456789", "key-0123456789", None] * 2
    assert server.authorizations == [TOKEN, TOKEN, None] * 2


def test_a_server_without_head_is_asked_with_a_ranged_get_and_one_without_validators_needs_a_pin(
    server: Server, tmp_path: Path
) -> None:
    from monitor.settings import ModelSpec
    from monitor.sources import model_version

    body = _weights_bytes()
    url = server.serve("/w.safetensors", body, etag='"v1"')
    server.refuse_head = True
    spec = ModelSpec(name="m", architecture="python:x:build", weights=url)
    assert model_version(spec, state_dir=tmp_path / "state").digest == _sha(body)
    assert model_version(spec, state_dir=tmp_path / "state").digest == _sha(body)
    assert [m for m, _ in server.methods].count("GET") == 3  # two one-byte probes, one download

    bare = server.serve("/bare.safetensors", body, length="none")
    with pytest.raises(SourceError, match=r"neither an ETag nor a Last-Modified .*weights_sha256"):
        model_version(spec.model_copy(update={"weights": bare}), state_dir=tmp_path / "state")


def test_a_pinned_file_that_does_not_match_is_not_downloaded_at_every_poll(
    server: Server, tmp_path: Path
) -> None:
    from monitor.settings import ModelSpec
    from monitor.sources import model_version

    url = server.serve("/w.safetensors", _weights_bytes())
    spec = ModelSpec(name="m", architecture="python:x:build", weights=url, weights_sha256="0" * 64)
    for again in (False, True):
        with pytest.raises(SourceError, match="weights_sha256 says 0000") as caught:
            model_version(spec, state_dir=tmp_path / "state")
        assert ("an hour after the last try" in str(caught.value)) is again
    assert server.hits == ["/w.safetensors"]


def test_a_header_value_that_http_cannot_carry_is_refused_without_showing_it(
    server: Server, tmp_path: Path
) -> None:
    from monitor.errors import ConfigError
    from monitor.settings import settings_from_mapping

    document = {
        "models": [{"name": "m", "architecture": "python:x:build"}],
        "tasks": [{"name": "t", "datasets": [{"name": "d", "source": server.base + "/m.json"}]}],
        "strategies": [{"name": "s", "mode": "linear", "lr": 0.1, "epochs": 1}],
    }
    for bad in ("Bearer tok-77\n", "Bearer tok-77-€"):  # a YAML block scalar's newline; not Latin-1
        document["tasks"][0]["datasets"][0]["headers"] = {"Authorization": bad}
        with pytest.raises(ConfigError, match=r"line break|Latin-1") as caught:
            settings_from_mapping(document, base_dir=tmp_path)
        assert "tok-77" not in str(caught.value)
    token = tmp_path / "token"
    token.write_text("Bearer tok-88\nsecond line\n")
    dataset = DatasetSpec(
        name="ds", source=server.base + "/m.json", headers={"Authorization_file": str(token)}
    )
    with pytest.raises(SourceError, match="line break") as raised:
        list_snapshots("task", dataset, state_dir=tmp_path / "state")
    assert "tok-88" not in str(raised.value)
