"""A fake Hugging Face Hub served over real HTTP on 127.0.0.1.

Why: download code must be tested against the real `huggingface_hub` client (its HEAD/GET
protocol, Range resume and error mapping), without network access and with faults that the
real Hub never produces on demand: 5xx answers and bodies cut short mid-transfer.

Usage::

    with FakeHub() as hub:
        hub.add_file("org/data", "clips/a.mp4", b"...")
        hf_hub_download("org/data", "clips/a.mp4", repo_type="dataset", endpoint=hub.url, ...)
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import NamedTuple
from urllib.parse import unquote, urlsplit

_URL_PREFIX_TO_TYPE = {"datasets/": "dataset", "spaces/": "space", "": "model"}
_API_PREFIX_TO_TYPE = {"datasets": "dataset", "spaces": "space", "models": "model"}

# /{datasets/|spaces/}{repo_id}/resolve/{revision}/{path}; a model repo has no prefix.
_RESOLVE_RE = re.compile(
    r"^/(?P<prefix>datasets/|spaces/)?(?P<repo>.+?)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$"
)
# /api/{datasets|models|spaces}/{repo_id}/tree/{revision}[/{path}]
_TREE_RE = re.compile(
    r"^/api/(?P<kind>datasets|models|spaces)/(?P<repo>.+?)/tree/(?P<rev>[^/]+)(?:/(?P<sub>.*))?$"
)
# /api/{datasets|models|spaces}/{repo_id}[/revision/{revision}]
_INFO_RE = re.compile(
    r"^/api/(?P<kind>datasets|models|spaces)/(?P<repo>[^/]+(?:/[^/]+)?)(?:/revision/(?P<rev>[^/]+))?$"
)
# /api/{datasets|models|spaces}/{repo_id}/auth-check
_AUTH_RE = re.compile(r"^/api/(?P<kind>datasets|models|spaces)/(?P<repo>.+?)/auth-check$")
_RANGE_RE = re.compile(r"^bytes=(?P<start>\d*)-(?P<end>\d*)$")


class RecordedRequest(NamedTuple):
    """One request seen by the server; a plain tuple so tests can compare it to literals."""

    method: str
    path: str
    range: str | None


@dataclass
class _Fault:
    """A pending injected fault; `remaining` counts down as matching requests consume it."""

    kind: str  # "fail" or "truncate"
    suffix: str
    remaining: int
    status: int = 500
    fraction: float = 0.5
    method: str | None = None


@dataclass(frozen=True)
class _Blob:
    data: bytes
    sha256: str
    git_sha1: str


def unused_local_url() -> str:
    """Return an http://127.0.0.1:PORT url where nothing listens, to simulate an unreachable hub.

    The port was free a moment ago; another process could grab it, but that is unlikely within
    a test.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class FakeHub:
    """In-process HTTP server that mimics the Hub's file-resolve and repo-info endpoints."""

    def __init__(self) -> None:
        self._repos: dict[tuple[str, str], dict[str, _Blob]] = {}
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self.requests: list[RecordedRequest] = []
        self.gated: set[str] = set()  # repo ids whose access check answers "gated"

    # -- content -------------------------------------------------------------------------------

    def add_file(self, repo_id: str, path: str, data: bytes, repo_type: str = "dataset") -> None:
        """Add (or replace) a file; the repo is created on first use and its commit sha changes."""
        if repo_type not in ("dataset", "model", "space"):
            raise ValueError(f"unknown repo_type {repo_type!r}")
        header = f"blob {len(data)}\0".encode()
        blob = _Blob(
            data=data,
            sha256=hashlib.sha256(data).hexdigest(),
            git_sha1=hashlib.sha1(header + data).hexdigest(),
        )
        with self._lock:
            self._repos.setdefault((repo_type, repo_id), {})[path.strip("/")] = blob

    def commit_sha(self, repo_id: str, repo_type: str = "dataset") -> str:
        """Commit sha served for the repo: derived from its content, so it is stable across runs."""
        with self._lock:
            files = self._repos[(repo_type, repo_id)]
            return self._commit_of(repo_type, repo_id, files)

    @staticmethod
    def _commit_of(repo_type: str, repo_id: str, files: dict[str, _Blob]) -> str:
        digest = hashlib.sha1(f"{repo_type}:{repo_id}".encode())
        for name in sorted(files):
            digest.update(f"\n{name}:{files[name].sha256}".encode())
        return digest.hexdigest()

    # -- fault injection -----------------------------------------------------------------------

    def fail_next(
        self, path_suffix: str, status: int = 500, times: int = 1, method: str | None = None
    ) -> None:
        """Answer the next `times` requests whose path ends with `path_suffix` with `status`.

        `method` ("HEAD" or "GET") narrows the fault to one verb; by default both count.
        """
        self._add_fault(
            _Fault("fail", path_suffix, times, status=status, method=method and method.upper())
        )

    def truncate_next(self, path_suffix: str, times: int = 1, fraction: float = 0.5) -> None:
        """Cut the body of the next `times` GETs of that file to `fraction`, then drop the socket.

        The full Content-Length is still announced, as a broken connection would look.
        """
        if not 0.0 <= fraction < 1.0:
            raise ValueError("fraction must be in [0, 1)")
        self._add_fault(_Fault("truncate", path_suffix, times, fraction=fraction, method="GET"))

    def _add_fault(self, fault: _Fault) -> None:
        if fault.remaining < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._faults.append(fault)

    def _take_fault(self, method: str, raw_path: str, kinds: tuple[str, ...]) -> _Fault | None:
        """Consume one use of the first pending fault that applies to this request."""
        candidates = {raw_path, unquote(raw_path)}
        with self._lock:
            for fault in self._faults:
                if fault.kind not in kinds or (fault.method and fault.method != method):
                    continue
                if any(p.endswith(fault.suffix) for p in candidates):
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                    return fault
        return None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> FakeHub:
        """Bind a free port and serve from a daemon thread."""
        if self._server is not None:
            raise RuntimeError("FakeHub already started")
        server = _Server(("127.0.0.1", 0), _Handler)
        server.hub = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop kept-alive client connections so no handler thread lingers."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        server.shutdown()
        server.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Endpoint to pass as `endpoint=` to huggingface_hub calls."""
        if self._server is None:
            raise RuntimeError("FakeHub is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- request handling (called from handler threads) ----------------------------------------

    def _track(self, conn: socket.socket, alive: bool) -> None:
        with self._lock:
            if alive:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _record(self, method: str, path: str, range_header: str | None) -> None:
        with self._lock:
            self.requests.append(RecordedRequest(method, path, range_header))

    def _lookup(
        self, repo_type: str, repo_id: str, revision: str
    ) -> tuple[dict[str, _Blob] | None, str | None, str | None]:
        """Return (files, commit, error_code); `main` and the current commit sha both resolve."""
        with self._lock:
            files = self._repos.get((repo_type, repo_id))
            if files is None:
                return None, None, "RepoNotFound"
            files = dict(files)
            commit = self._commit_of(repo_type, repo_id, files)
        if revision not in ("main", commit):
            return None, commit, "RevisionNotFound"
        return files, commit, None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Joining handler threads on close would hang on connections the client keeps alive.
    block_on_close = False
    hub: FakeHub


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 so the client's connection pool behaves as with the real Hub (keep-alive).
    protocol_version = "HTTP/1.1"
    server_version = "FakeHub/1.0"
    timeout = 30  # idle keep-alive connections end on their own
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.hub._track(self.connection, alive=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.hub._track(self.connection, alive=False)

    def log_message(self, format: str, *args: object) -> None:
        """Keep test output quiet."""

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def do_GET(self) -> None:
        self._dispatch(head=False)

    # -- dispatch ------------------------------------------------------------------------------

    def _dispatch(self, head: bool) -> None:
        hub = self.server.hub
        method = "HEAD" if head else "GET"
        hub._record(method, self.path, self.headers.get("Range"))
        path = urlsplit(self.path).path

        fault = hub._take_fault(method, path, kinds=("fail",))
        if fault is not None:
            self._send_json(fault.status, {"error": "injected failure"}, head=head)
            return

        if not head and (match := _AUTH_RE.match(path)):
            self._auth_check(_API_PREFIX_TO_TYPE[match["kind"]], unquote(match["repo"]))
        elif match := _RESOLVE_RE.match(path):
            repo_type = _URL_PREFIX_TO_TYPE[match["prefix"] or ""]
            repo_id, revision = unquote(match["repo"]), unquote(match["rev"])
            self._resolve(repo_type, repo_id, revision, unquote(match["file"]), head)
        elif not head and (match := _TREE_RE.match(path)):
            repo_type = _API_PREFIX_TO_TYPE[match["kind"]]
            self._tree(repo_type, unquote(match["repo"]), unquote(match["rev"]), match["sub"])
        elif not head and (match := _INFO_RE.match(path)):
            repo_type = _API_PREFIX_TO_TYPE[match["kind"]]
            self._info(repo_type, unquote(match["repo"]), unquote(match["rev"] or "main"))
        else:
            # Includes /api/agent-harnesses and anything else the client may probe.
            self._send_json(404, {"error": "Not Found"}, head=head)

    def _resolve(self, repo_type: str, repo_id: str, revision: str, name: str, head: bool) -> None:
        files, commit, error = self.server.hub._lookup(repo_type, repo_id, revision)
        extra = {"X-Repo-Commit": commit} if commit else {}
        if files is None:
            self._send_json(404, {"error": error}, head=head, error_code=error, headers=extra)
            return
        blob = files.get(name)
        if blob is None:
            error = "EntryNotFound"
            self._send_json(404, {"error": error}, head=head, error_code=error, headers=extra)
            return

        size = len(blob.data)
        headers = {
            **extra,
            "ETag": f'"{blob.sha256}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        status, start, end = 200, 0, size  # end is exclusive
        range_header = self.headers.get("Range")
        if range_header and not head:
            parsed = _parse_range(range_header, size)
            if parsed is None:
                headers["Content-Range"] = f"bytes */{size}"
                self._send_json(416, {"error": "Range Not Satisfiable"}, head=head, headers=headers)
                return
            start, end = parsed
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"

        body = blob.data[start:end]
        fault = None
        if not head:
            fault = self.server.hub._take_fault("GET", urlsplit(self.path).path, ("truncate",))
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        if fault is not None:
            self.send_header("Connection", "close")
        self.end_headers()
        if head:
            return
        if fault is None:
            self.wfile.write(body)
            return
        # A body cut short: announce everything, send a part, then hang up.
        self.wfile.write(body[: int(len(body) * fault.fraction)])
        self.wfile.flush()
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _tree(self, repo_type: str, repo_id: str, revision: str, sub: str | None) -> None:
        files, _, error = self.server.hub._lookup(repo_type, repo_id, revision)
        if files is None:
            self._send_json(404, {"error": error}, error_code=error)
            return
        prefix = unquote(sub or "").strip("/")
        recursive = "recursive=true" in urlsplit(self.path).query.lower()
        entries: dict[str, dict[str, object]] = {}
        for name, blob in sorted(files.items()):
            if prefix and not name.startswith(prefix + "/"):
                continue
            rest = name[len(prefix) + 1 :] if prefix else name
            parts = rest.split("/")
            # Folders on the way down are listed too, as the Hub does.
            for depth in range(1, len(parts)):
                if not recursive and depth > 1:
                    break
                folder = "/".join(filter(None, [prefix, *parts[:depth]]))
                entries.setdefault(folder, {"type": "directory", "oid": "0" * 40, "path": folder})
            if recursive or len(parts) == 1:
                entries[name] = {
                    "type": "file",
                    "oid": blob.git_sha1,
                    "size": len(blob.data),
                    "path": name,
                    "lfs": {"oid": blob.sha256, "size": len(blob.data), "pointerSize": 134},
                }
        if prefix and not entries:
            self._send_json(404, {"error": "Entry not found"}, error_code="EntryNotFound")
            return
        self._send_json(200, list(entries.values()))

    def _auth_check(self, repo_type: str, repo_id: str) -> None:
        """Access check: gated repos answer 403 GatedRepo, unknown ones 404 RepoNotFound."""
        if repo_id in self.server.hub.gated:
            self._send_json(403, {"error": "gated"}, error_code="GatedRepo")
            return
        files, _, error = self.server.hub._lookup(repo_type, repo_id, "main")
        if files is None:
            self._send_json(404, {"error": error}, error_code=error)
        else:
            self._send_json(200, {})

    def _info(self, repo_type: str, repo_id: str, revision: str) -> None:
        files, commit, error = self.server.hub._lookup(repo_type, repo_id, revision)
        if files is None:
            self._send_json(404, {"error": error}, error_code=error)
            return
        self._send_json(
            200,
            {
                "_id": commit,
                "id": repo_id,
                "sha": commit,
                "private": False,
                "siblings": [{"rfilename": name} for name in sorted(files)],
            },
        )

    def _send_json(
        self,
        status: int,
        payload: object,
        *,
        head: bool = False,
        error_code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if error_code:
            self.send_header("X-Error-Code", error_code)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """Parse a single `bytes=` range into [start, end); None if it cannot be satisfied."""
    match = _RANGE_RE.match(header.strip())
    if match is None or (not match["start"] and not match["end"]):
        return None
    if not match["start"]:  # suffix form: the last N bytes
        length = int(match["end"])
        return (max(size - length, 0), size) if length > 0 and size > 0 else None
    start = int(match["start"])
    end = int(match["end"]) + 1 if match["end"] else size
    if start >= size or end <= start:
        return None
    return start, min(end, size)
