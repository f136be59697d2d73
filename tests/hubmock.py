"""A tiny loopback stand-in for the Hugging Face Hub, enough for ``hf_hub_download``.

Point ``HF_ENDPOINT`` at :attr:`HubMock.endpoint` (before ``huggingface_hub`` is imported: it
reads the variable once). What the installed huggingface_hub (2.x) asks for, and what is served:

* ``HEAD /<repo>/resolve/<revision>/<filename>`` -- file metadata, no redirect. It reads
  ``X-Repo-Commit`` (required), ``X-Linked-Etag`` or ``ETag`` (required; used as the blob name in
  the cache), ``X-Linked-Size`` or ``Content-Length`` (the size). It would switch to the Xet
  protocol if the answer carried ``X-Xet-Hash`` plus ``X-Xet-Refresh-Route`` or a ``xet-auth``
  ``Link``: those are never sent, so the download is plain HTTP.
* ``GET`` on the same URL -- the bytes, honouring ``Range: bytes=N-`` / ``bytes=N-M`` (used when
  huggingface_hub resumes after a dropped connection).
* ``GET /api/models/<repo>`` and ``/api/models/<repo>/revision/<revision>`` -- the repository's
  info as ``HfApi.model_info`` parses it (``ModelInfo(**json)``): ``id``, ``modelId``,
  ``author``, ``sha``, dates, flags and ``siblings``, one ``{"rfilename": ...}`` per file; with
  ``?blobs=true`` (``files_metadata=True``) each sibling also has ``blobId`` and ``size``, and
  LFS files (``.gguf``, as the Hub's ``.gitattributes`` makes them) an ``lfs`` object with
  ``sha256``, ``size`` and ``pointerSize``, as the real Hub answers.
* ``GET /api/agent-harnesses`` -- a best-effort registry fetched by ``build_hf_headers`` once a
  day (cached under ``HF_HOME``) unless ``HF_HUB_DISABLE_TELEMETRY`` is set; an empty registry.

Unknown repositories answer 404 ``X-Error-Code: RepoNotFound``, unknown files 404
``X-Error-Code: EntryNotFound``, unknown revisions 404 ``X-Error-Code: RevisionNotFound``, which
huggingface_hub maps to its ``RepositoryNotFoundError`` / ``RemoteEntryNotFoundError`` /
``RevisionNotFoundError``. Every request is recorded in :attr:`HubMock.requests`.

Faults on demand: :attr:`HubMock.release` holds file bodies after their first
:attr:`HubMock.hold_after` bytes, and
:attr:`HubMock.cut_after` ends the next file body after that many bytes by closing the
connection (huggingface_hub then resumes with a ``Range`` request), and :attr:`HubMock.short_by`
sends whole bodies that many bytes short of the size the metadata gave (a cleanly closed, short
transfer, which huggingface_hub refuses).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

COMMIT = "0123456789abcdef0123456789abcdef01234567"
_RESOLVE = re.compile(
    r"^/(?:(?P<kind>datasets|spaces)/)?(?P<repo>[^/]+/[^/]+)/resolve/"
    r"(?P<revision>[^/]+)/(?P<filename>.+)$"
)
_INFO = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<revision>[^/]+))?$")
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class _File:
    source: Path | bytes
    size: int
    sha256: str

    @classmethod
    def of(cls, source: Path | bytes) -> _File:
        digest = hashlib.sha256()
        if isinstance(source, bytes):
            digest.update(source)
            size = len(source)
        else:
            size = 0
            with source.open("rb") as f:
                while block := f.read(_CHUNK):
                    digest.update(block)
                    size += len(block)
        return cls(source, size, digest.hexdigest())

    def sibling(self, filename: str) -> dict[str, object]:
        """The file's entry in ``siblings`` with ``blobs=true``: the git blob id is the LFS
        pointer's for LFS files (GGUFs and big files), the content's otherwise."""
        if filename.endswith(".gguf") or self.size > 10 * _CHUNK:
            pointer = (
                "version https://git-lfs.github.com/spec/v1\n"
                f"oid sha256:{self.sha256}\nsize {self.size}\n"
            ).encode()
            lfs = {"sha256": self.sha256, "size": self.size, "pointerSize": len(pointer)}
            return {
                "rfilename": filename,
                "blobId": _git_blob(pointer),
                "size": self.size,
                "lfs": lfs,
            }
        content = self.source if isinstance(self.source, bytes) else self.source.read_bytes()
        return {"rfilename": filename, "blobId": _git_blob(content), "size": self.size}

    def chunks(self, start: int, end: int) -> Iterator[bytes]:
        """Bytes ``start`` to ``end`` inclusive."""
        if isinstance(self.source, bytes):
            for pos in range(start, end + 1, _CHUNK):
                yield self.source[pos : min(pos + _CHUNK, end + 1)]
            return
        with self.source.open("rb") as f:
            f.seek(start)
            left = end + 1 - start
            while left > 0 and (block := f.read(min(_CHUNK, left))):
                left -= len(block)
                yield block


def _git_blob(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class HubMock:
    """The running mock; see the module docstring."""

    files: dict[tuple[str, str], _File]
    commit: str = COMMIT
    endpoint: str = ""
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    release: threading.Event = field(default_factory=threading.Event)
    """File bodies are sent whole only once this is set (set by default; clear it to hold
    downloads half-way, after `hold_after` bytes, e.g. to observe a server while it is still
    downloading)."""
    hold_after: int = _CHUNK
    """Where a held file body pauses (huggingface_hub writes to disk in 10 MiB pieces)."""
    cut_after: int | None = None
    """If set, the next file body stops after this many bytes and the connection is closed."""
    short_by: int = 0
    """File bodies leave out their last `short_by` bytes (HEAD still gives the whole size)."""

    def repo_info(self, repo: str, blobs: bool) -> dict[str, object]:
        """``/api/models/<repo>``'s answer, shaped like the real Hub's."""
        owner = repo.split("/")[0]
        files = sorted((name, entry) for (r, name), entry in self.files.items() if r == repo)
        siblings = [entry.sibling(name) if blobs else {"rfilename": name} for name, entry in files]
        return {
            "_id": hashlib.sha1(repo.encode()).hexdigest()[:24],
            "id": repo,
            "modelId": repo,
            "author": owner,
            "sha": self.commit,
            "lastModified": "2023-09-27T12:46:03.000Z",
            "createdAt": "2023-08-24T17:02:09.000Z",
            "private": False,
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "library_name": "gguf",
            "tags": ["gguf"],
            "siblings": siblings,
            "spaces": [],
            **({"usedStorage": sum(entry.size for _, entry in files)} if blobs else {}),
        }

    def count(self, method: str | None = None, path_contains: str = "") -> int:
        """How many requests matched *method* (any if None) with *path_contains* in the path."""
        with self.lock:
            return sum(
                1
                for r in self.requests
                if (method is None or r.method == method) and path_contains in r.path
            )

    def file_requests(self, method: str | None = None) -> list[Request]:
        """The ``/resolve/`` requests, optionally only those of one *method*."""
        with self.lock:
            return [
                r
                for r in self.requests
                if "/resolve/" in r.path and (method is None or r.method == method)
            ]


def _handler(mock: HubMock) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep test output quiet

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _record(self) -> str:
            path = urlsplit(self.path).path
            with mock.lock:
                mock.requests.append(Request(self.command, path, dict(self.headers.items())))
            return path

        def _send(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
            self.send_response(status)
            headers = {"Content-Length": str(len(body)), **headers}
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            if body and self.command != "HEAD":
                self.wfile.write(body)

        def _error(self, status: int, code: str, message: str, **extra: str) -> None:
            body = json.dumps({"error": message}).encode()
            headers = {
                "Content-Type": "application/json",
                "X-Error-Code": code,
                "X-Error-Message": message,
                **extra,
            }
            self._send(status, headers, body)

        def _serve(self, body: bool) -> None:
            path = self._record()
            if path == "/api/agent-harnesses":
                registry = json.dumps({"standardEnvVars": [], "harnesses": {}}).encode()
                self._send(200, {"Content-Type": "application/json"}, registry)
                return
            info = _INFO.match(path)
            if info is not None:
                self._repo_info(unquote(info["repo"]), unquote(info["revision"] or "main"))
                return
            match = _RESOLVE.match(path)
            if match is None:
                self._error(404, "NotFound", f"no route for {path}")
                return
            repo = unquote(match["repo"])
            filename = unquote(match["filename"])
            revision = unquote(match["revision"])
            if not self._repo_answers(repo, revision):
                return
            entry = mock.files.get((repo, filename))
            if entry is None:
                self._error(
                    404, "EntryNotFound", "Entry not found", **{"X-Repo-Commit": mock.commit}
                )
                return

            headers = {
                "Content-Type": "application/octet-stream",
                "Accept-Ranges": "bytes",
                "ETag": f'"{entry.sha256}"',
                "X-Repo-Commit": mock.commit,
                "X-Linked-Etag": f'"{entry.sha256}"',
                "X-Linked-Size": str(entry.size),
            }
            start, end, status = 0, entry.size - 1 - (mock.short_by if body else 0), 200
            ranged = _RANGE.match(self.headers.get("Range", "").strip())
            if ranged and body:
                start = int(ranged[1])
                end = min(int(ranged[2]), end) if ranged[2] else end
                if start > end:
                    self._send(416, {"Content-Range": f"bytes */{entry.size}"})
                    return
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end}/{entry.size}"
            headers["Content-Length"] = str(max(0, end + 1 - start))
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            if body:
                with mock.lock:
                    cut, mock.cut_after = mock.cut_after, None
                sent = 0
                try:
                    for block in entry.chunks(start, end):
                        if sent >= mock.hold_after:
                            mock.release.wait(60)
                        if cut is not None and sent + len(block) > cut:
                            self.wfile.write(block[: cut - sent])
                            self.wfile.flush()
                            self.close_connection = True  # fewer bytes than Content-Length
                            return
                        self.wfile.write(block)
                        sent += len(block)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        def _repo_answers(self, repo: str, revision: str) -> bool:
            """True if `repo` at `revision` exists; else the Hub's 404 is sent."""
            if not any(r == repo for r, _ in mock.files):
                self._error(404, "RepoNotFound", "Repository not found")
                return False
            if revision not in ("main", mock.commit):
                self._error(404, "RevisionNotFound", "Invalid rev id: " + revision)
                return False
            return True

        def _repo_info(self, repo: str, revision: str) -> None:
            if not self._repo_answers(repo, revision):
                return
            query = parse_qs(urlsplit(self.path).query)
            blobs = query.get("blobs", ["false"])[-1].lower() == "true"
            body = json.dumps(mock.repo_info(repo, blobs)).encode()
            self._send(200, {"Content-Type": "application/json; charset=utf-8"}, body)

    return Handler


@contextmanager
def serve_hub(files: dict[tuple[str, str], Path | bytes]) -> Iterator[HubMock]:
    """Serve ``{(repo_id, filename): content}`` as a Hub on ``http://127.0.0.1:<free port>``."""
    mock = HubMock({key: _File.of(value) for key, value in files.items()})
    mock.release.set()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(mock))
    server.daemon_threads = True
    host, port = server.server_address[:2]
    mock.endpoint = f"http://{host}:{port}"
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name="hubmock", daemon=True
    )
    thread.start()
    try:
        yield mock
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
