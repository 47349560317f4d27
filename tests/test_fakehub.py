"""Pin down how the real `huggingface_hub` client behaves against FakeHub.

Why: download code elsewhere relies on these behaviours (which errors surface, which are retried
by the client itself, whether partial files are left behind). If a huggingface_hub upgrade changes
any of them, these tests say so before the workflow breaks.
"""

from __future__ import annotations

import http.client
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from fakehub import FakeHub, RecordedRequest, unused_local_url
from huggingface_hub import HfApi, constants, hf_hub_download, snapshot_download
from huggingface_hub import file_download as hf_file_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
)
from huggingface_hub.utils import _http as hf_http

REPO = "org/videos"
NAME = "clips/a.bin"
URL_PATH = f"/datasets/{REPO}/resolve/main/{NAME}"
HEAD = RecordedRequest("HEAD", URL_PATH, None)
GET = RecordedRequest("GET", URL_PATH, None)


@pytest.fixture(autouse=True)
def hf_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the client off ~/.cache and fast to fail.

    huggingface_hub reads these variables once at import time, so the module constants are
    patched as well as the environment.
    """
    hf_home = tmp_path / "hf_home"
    settings: dict[str, tuple[str, object]] = {
        "HF_HOME": (str(hf_home), str(hf_home)),
        "HF_HUB_CACHE": (str(hf_home / "hub"), str(hf_home / "hub")),
        "HF_HUB_DISABLE_TELEMETRY": ("1", True),
        "HF_HUB_ETAG_TIMEOUT": ("2", 2),
        "HF_HUB_DOWNLOAD_TIMEOUT": ("5", 5),
    }
    for name, (env_value, constant_value) in settings.items():
        monkeypatch.setenv(name, env_value)
        monkeypatch.setattr(constants, name, constant_value)
    # An offline developer shell must not turn every test into a cache lookup.
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


class _SleepRecorder:
    """Stands in for the `time` module of one huggingface_hub module: records sleeps, skips them."""

    def __init__(self, sleeps: list[float]) -> None:
        self._sleeps = sleeps

    def sleep(self, seconds: float) -> None:
        self._sleeps.append(seconds)

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)


@pytest.fixture
def client_sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Skip the client's retry back-off (it adds up to 23 s) but record what it would wait."""
    sleeps: list[float] = []
    monkeypatch.setattr(hf_http, "time", _SleepRecorder(sleeps))
    monkeypatch.setattr(hf_file_download, "time", _SleepRecorder(sleeps))
    return sleeps


@pytest.fixture
def payload() -> bytes:
    return os.urandom(3 * 1024 * 1024)


@pytest.fixture
def hub(payload: bytes) -> Iterator[FakeHub]:
    with FakeHub() as fake:
        fake.add_file(REPO, NAME, payload)
        fake.add_file(REPO, "meta.json", b'{"ok": true}')
        yield fake


def _download(endpoint: str, local_dir: Path, filename: str = NAME, repo: str = REPO) -> Path:
    return Path(
        hf_hub_download(
            repo,
            filename,
            repo_type="dataset",
            revision="main",
            local_dir=local_dir,
            endpoint=endpoint,
            token=False,
        )
    )


def _leftovers(local_dir: Path) -> list[Path]:
    """Files other than the client's lock/marker files: a failed download must leave none."""
    return [
        p
        for p in local_dir.rglob("*")
        if p.is_file() and p.suffix != ".lock" and p.name not in ("CACHEDIR.TAG", ".gitignore")
    ]


# -- (1) plain download ----------------------------------------------------------------------


def test_download_to_local_dir_gives_identical_bytes(
    hub: FakeHub, payload: bytes, tmp_path: Path
) -> None:
    path = _download(hub.url, tmp_path / "out")

    assert path == tmp_path / "out" / NAME
    assert path.read_bytes() == payload
    assert hub.requests == [HEAD, GET]


def test_second_download_is_served_from_local_dir(hub: FakeHub, tmp_path: Path) -> None:
    """The sha256 ETag is stable, so a repeat call only re-checks metadata."""
    _download(hub.url, tmp_path / "out")
    hub.requests.clear()

    _download(hub.url, tmp_path / "out")

    assert hub.requests == [HEAD]


# -- (2) HTTP 500 ----------------------------------------------------------------------------


def test_single_500_on_head_is_retried_by_the_client(
    hub: FakeHub, payload: bytes, tmp_path: Path
) -> None:
    hub.fail_next(NAME, 500, times=1)

    path = _download(hub.url, tmp_path / "out")

    assert path.read_bytes() == payload
    assert hub.requests == [HEAD, HEAD, GET]


def test_500_on_get_raises_hf_hub_http_error_without_retry(hub: FakeHub, tmp_path: Path) -> None:
    hub.fail_next(NAME, 500, times=1, method="GET")

    with pytest.raises(HfHubHTTPError) as excinfo:
        _download(hub.url, tmp_path / "out")

    assert type(excinfo.value) is HfHubHTTPError
    assert excinfo.value.response.status_code == 500
    assert hub.requests == [HEAD, GET]
    assert _leftovers(tmp_path / "out") == []
    # The fault was used up: the next attempt works.
    assert _download(hub.url, tmp_path / "out").is_file()


def test_persistent_500_on_head_raises_local_entry_not_found(
    hub: FakeHub, tmp_path: Path, client_sleeps: list[float]
) -> None:
    """One fast HEAD, then 1 + 5 retried HEADs with back-off, then the error is wrapped."""
    hub.fail_next(NAME, 500, times=7)

    with pytest.raises(LocalEntryNotFoundError) as excinfo:
        _download(hub.url, tmp_path / "out")

    cause = excinfo.value.__cause__
    assert isinstance(cause, HfHubHTTPError)
    assert cause.response.status_code == 500
    assert hub.requests == [HEAD] * 7
    assert client_sleeps == [1, 2, 4, 8, 8]
    assert _leftovers(tmp_path / "out") == []


# -- (3) body cut short ----------------------------------------------------------------------


def test_truncated_body_is_fetched_again_by_the_client(
    hub: FakeHub, payload: bytes, tmp_path: Path, client_sleeps: list[float]
) -> None:
    """Less than one 10 MiB read chunk arrived, so the retry starts over without a Range."""
    hub.truncate_next(NAME, times=1, fraction=0.5)

    path = _download(hub.url, tmp_path / "out")

    assert path.read_bytes() == payload
    assert hub.requests == [HEAD, GET, GET]
    assert client_sleeps == [1]


def test_truncation_after_a_full_chunk_resumes_with_range(
    hub: FakeHub, tmp_path: Path, client_sleeps: list[float]
) -> None:
    chunk = constants.DOWNLOAD_CHUNK_SIZE
    big = os.urandom(chunk + 2 * 1024 * 1024)
    hub.add_file(REPO, "big.bin", big)
    hub.truncate_next("big.bin", times=1, fraction=0.95)

    path = _download(hub.url, tmp_path / "out", filename="big.bin")

    assert path.read_bytes() == big
    gets = [r for r in hub.requests if r.method == "GET"]
    assert [r.range for r in gets] == [None, f"bytes={chunk}-"]


def test_truncation_on_every_attempt_raises_and_leaves_no_file(
    hub: FakeHub, tmp_path: Path, client_sleeps: list[float]
) -> None:
    """1 GET + 5 resumed GETs, all cut short: the httpx2 error escapes unwrapped."""
    hub.truncate_next(NAME, times=6)

    with pytest.raises(httpx2.RemoteProtocolError):
        _download(hub.url, tmp_path / "out")

    assert hub.requests == [HEAD] + [GET] * 6
    assert client_sleeps == [1] * 5
    assert not (tmp_path / "out" / NAME).exists()
    assert _leftovers(tmp_path / "out") == []


# -- (4) missing file / repo -----------------------------------------------------------------


def test_missing_file_raises_entry_not_found(hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(EntryNotFoundError) as excinfo:
        _download(hub.url, tmp_path / "out", filename="nope.bin")

    assert isinstance(excinfo.value, RemoteEntryNotFoundError)
    assert [r.method for r in hub.requests] == ["HEAD"]


def test_unknown_repo_raises_repository_not_found(hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(RepositoryNotFoundError):
        _download(hub.url, tmp_path / "out", repo="org/absent")


# -- (5) nothing listening -------------------------------------------------------------------


def test_unreachable_endpoint_raises_local_entry_not_found(
    tmp_path: Path, client_sleeps: list[float]
) -> None:
    """Without the patched back-off the client would spend 1+2+4+8+8 = 23 s before raising."""
    started = time.monotonic()

    with pytest.raises(LocalEntryNotFoundError) as excinfo:
        _download(unused_local_url(), tmp_path / "out")

    assert isinstance(excinfo.value.__cause__, httpx2.ConnectError)
    assert client_sleeps == [1, 2, 4, 8, 8]
    assert time.monotonic() - started < 5
    assert _leftovers(tmp_path / "out") == []


# -- the fake itself -------------------------------------------------------------------------


def _raw(hub: FakeHub, method: str, path: str, headers: dict[str, str] | None = None):
    conn = http.client.HTTPConnection(hub.url.removeprefix("http://"), timeout=5)
    conn.request(method, path, headers=headers or {})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response, body


def test_range_requests_and_headers(hub: FakeHub, payload: bytes) -> None:
    head, _ = _raw(hub, "HEAD", URL_PATH)
    assert head.status == 200
    assert int(head.headers["Content-Length"]) == len(payload)
    assert head.headers["ETag"].startswith('"') and len(head.headers["ETag"]) == 66
    assert head.headers["X-Repo-Commit"] == hub.commit_sha(REPO)

    response, body = _raw(hub, "GET", URL_PATH, {"Range": "bytes=10-19"})
    assert (response.status, body) == (206, payload[10:20])
    assert response.headers["Content-Range"] == f"bytes 10-19/{len(payload)}"

    response, body = _raw(hub, "GET", URL_PATH, {"Range": "bytes=100-"})
    assert (response.status, body) == (206, payload[100:])

    response, _ = _raw(hub, "GET", URL_PATH, {"Range": f"bytes={len(payload)}-"})
    assert response.status == 416


def test_unknown_endpoints_answer_404(hub: FakeHub) -> None:
    response, _ = _raw(hub, "GET", "/api/agent-harnesses")
    assert response.status == 404
    response, _ = _raw(hub, "GET", f"/datasets/{REPO}/resolve/main/nope.bin")
    assert (response.status, response.headers["X-Error-Code"]) == (404, "EntryNotFound")
    response, _ = _raw(hub, "HEAD", "/datasets/org/absent/resolve/main/x")
    assert (response.status, response.headers["X-Error-Code"]) == (404, "RepoNotFound")


def test_fail_next_counts_down_then_recovers(hub: FakeHub) -> None:
    hub.fail_next("meta.json", 503, times=2)
    path = f"/datasets/{REPO}/resolve/main/meta.json"

    statuses = [_raw(hub, "GET", path)[0].status for _ in range(3)]

    assert statuses == [503, 503, 200]


def test_repo_info_and_snapshot_download(hub: FakeHub, payload: bytes, tmp_path: Path) -> None:
    info = HfApi(endpoint=hub.url, token=False).dataset_info(REPO)
    assert info.sha == hub.commit_sha(REPO)
    assert sorted(s.rfilename for s in info.siblings or []) == [NAME, "meta.json"]

    out = Path(
        snapshot_download(
            REPO, repo_type="dataset", local_dir=tmp_path / "snap", endpoint=hub.url, token=False
        )
    )
    assert (out / NAME).read_bytes() == payload
    assert json.loads((out / "meta.json").read_text()) == {"ok": True}


def test_stop_closes_the_port() -> None:
    hub = FakeHub().start()
    url = hub.url
    hub.stop()

    with pytest.raises(OSError):
        http.client.HTTPConnection(url.removeprefix("http://"), timeout=2).connect()
