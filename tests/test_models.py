"""Model path resolution, GGUF checks, and the default-model download through a mock hub.

huggingface_hub reads ``HF_ENDPOINT``, ``HF_HOME`` and ``HF_HUB_OFFLINE`` once, at import time,
into ``huggingface_hub.constants``. So every download test runs ``cl_lsp.models`` in a fresh
``python -c`` subprocess with those variables set, exactly like a real ``cl-lsp`` process, and the
subprocess prints its outcome as JSON. The hub is ``tests/hubmock.py`` on a loopback port.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from hubmock import HubMock, serve_hub

from cl_lsp import models, progress_bar
from cl_lsp.models import (
    DEFAULT_FILE,
    DEFAULT_REPO,
    ModelError,
    ModelSource,
    check_model_file,
    resolve_model_path,
)
from cl_lsp.progress_bar import terminal_progress

ROOT = Path(__file__).resolve().parents[1]
MiB = 1024 * 1024
# Three 10 MiB download chunks' worth, so the progress callback sees several updates.
PAYLOAD = b"GGUF" + b"\x03\x00\x00\x00" + bytes(25 * MiB)
KEY = (DEFAULT_REPO, DEFAULT_FILE)


# --------------------------------------------------------------------------------------------
# resolve_model_path
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cli", "setting", "env", "expected"),
    [
        # the editor's setting is the newer word: it wins over --model (issue 12, bug 11)
        ("/c.gguf", "/s.gguf", "/e.gguf", ("/s.gguf", "model.path setting")),
        ("/c.gguf", "/s.gguf", None, ("/s.gguf", "model.path setting")),
        (None, "/s.gguf", "/e.gguf", ("/s.gguf", "model.path setting")),
        (None, None, "/e.gguf", ("/e.gguf", "CL_LSP_MODEL")),
        (None, None, None, (None, "default")),
        ("/c.gguf", None, None, ("/c.gguf", "--model")),
        ("/c.gguf", None, "/e.gguf", ("/c.gguf", "--model")),
        # blank values count as unset
        ("", "  ", "/e.gguf", ("/e.gguf", "CL_LSP_MODEL")),
        ("", "/s.gguf", "", ("/s.gguf", "model.path setting")),
        (None, "", "", (None, "default")),
    ],
)
def test_resolution_precedence(cli, setting, env, expected) -> None:
    environ = {} if env is None else {"CL_LSP_MODEL": env}
    assert resolve_model_path(cli, setting, environ) == expected


def test_resolution_expands_home_and_variables() -> None:
    env = {"HOME": "/home/ada", "MODELS": "/srv/models", "CL_LSP_MODEL": "$MODELS/e.gguf"}
    assert resolve_model_path("~/m/c.gguf", None, env) == ("/home/ada/m/c.gguf", "--model")
    assert resolve_model_path(None, "${MODELS}/s.gguf", env) == (
        "/srv/models/s.gguf",
        "model.path setting",
    )
    assert resolve_model_path(None, None, env) == ("/srv/models/e.gguf", "CL_LSP_MODEL")
    # unknown variables are left alone, like os.path.expandvars does
    assert resolve_model_path("$NOPE/x.gguf", None, env) == ("$NOPE/x.gguf", "--model")


def test_resolution_defaults_to_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CL_LSP_MODEL", "/from/env.gguf")
    assert resolve_model_path(None, None) == ("/from/env.gguf", "CL_LSP_MODEL")


def test_model_sources_are_labelled() -> None:
    assert list(models.SOURCES) == ["model.path setting", "--model", "CL_LSP_MODEL", "default"]
    assert all(isinstance(s, ModelSource) and str(s) == s.label for s in models.SOURCES.values())


# --------------------------------------------------------------------------------------------
# check_model_file
# --------------------------------------------------------------------------------------------


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake home directory, so messages show paths as ~/..."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


def test_missing_file(home: Path) -> None:
    with pytest.raises(ModelError) as err:
        check_model_file(str(home / "models" / "x.gguf"), "model.path setting")
    message = str(err.value)
    assert message.startswith("model file not found: ~/models/x.gguf (")
    assert "from model.path setting" in message
    assert "set model.path in the settings, pass --model, or set CL_LSP_MODEL" in message


def test_broken_symlink(home: Path) -> None:
    link = home / "link.gguf"
    link.symlink_to(home / "gone.gguf")
    with pytest.raises(ModelError, match="model file not found: ~/link.gguf .*broken symbolic"):
        check_model_file(str(link), "--model")


def test_directory(home: Path) -> None:
    folder = home / "models"
    folder.mkdir()
    (folder / "codellama.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelError) as err:
        check_model_file(str(folder), "CL_LSP_MODEL")
    message = str(err.value)
    assert "is a directory" in message and "~/models" in message
    assert "codellama.gguf" in message  # points at the file inside


@pytest.mark.parametrize(
    ("content", "explanation"),
    [
        (b"", "empty"),
        (b"<!DOCTYPE html>\n<html><head><title>404</title>", "HTML page"),
        (b"  <html>\n", "HTML page"),
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\n", "Git LFS pointer"),
        (b"ggjt\x03\x00\x00\x00", "old GGML/GGJT"),
        (b"PK\x03\x04", "ZIP"),
        (b"GG", "only 2 byte"),
        (b"\x7fELF\x02\x01\x01", "starts with b'\\x7fELF"),
    ],
)
def test_not_gguf(home: Path, content: bytes, explanation: str) -> None:
    bad = home / "model.gguf"
    bad.write_bytes(content)
    with pytest.raises(ModelError) as err:
        check_model_file(str(bad), "--model")
    message = str(err.value)
    assert message.startswith("not a GGUF file: ~/model.gguf (from --model; ")
    assert explanation in message
    assert "set model.path in the settings, pass --model, or set CL_LSP_MODEL" in message


def test_unreadable(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    locked = home / "locked.gguf"
    locked.write_bytes(b"GGUF")

    def refuse(self: Path, *args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "open", refuse)  # chmod 0 does not stop root
    with pytest.raises(ModelError, match=r"cannot read model file: ~/locked.gguf \(permission"):
        check_model_file(str(locked), "--model")


def test_valid_gguf(tmp_path: Path) -> None:
    good = tmp_path / "ok.gguf"
    good.write_bytes(b"GGUF\x03\x00\x00\x00")
    assert check_model_file(str(good), "--model") == good


# --------------------------------------------------------------------------------------------
# Download through the mock hub (in subprocesses: huggingface_hub reads its env at import)
# --------------------------------------------------------------------------------------------

SCRIPT = r"""
import json, sys, time
mode = sys.argv[1]
started = time.monotonic()
from cl_lsp import models, progress_bar
from cl_lsp.progress_bar import terminal_progress
events = []

def progress(done, total):
    events.append([done, total])
    if mode == "download-bad-callback":
        raise RuntimeError("the editor went away")

out = {}
try:
    if mode == "cached":
        found = models.cached_default_model()
        out["path"] = None if found is None else str(found)
    else:
        path = models.download_default_model(progress, **json.loads(sys.argv[2]))
        out["path"] = str(path)
except models.ModelError as exc:
    out["error"] = str(exc)
out["events"] = events
out["elapsed"] = time.monotonic() - started
print(json.dumps(out))
"""


def run_models(
    tmp_path: Path,
    endpoint: str,
    mode: str = "download",
    *,
    offline: bool = False,
    **kwargs: str,
) -> dict:
    """Run SCRIPT in a fresh interpreter against *endpoint*, with HF_HOME under *tmp_path*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(
        HF_ENDPOINT=endpoint,
        HF_HOME=str(tmp_path / "hf-home"),
        PYTHONPATH=str(ROOT),
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode, json.dumps(kwargs)],
        check=False,
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip(), proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def hub() -> HubMock:
    with serve_hub({KEY: PAYLOAD}) as mock:
        yield mock


@pytest.fixture
def closed_port_endpoint() -> str:
    """An endpoint on a loopback port nobody listens on: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_download_reports_progress_and_caches(tmp_path: Path, hub: HubMock) -> None:
    first = run_models(tmp_path, hub.endpoint)
    assert "error" not in first, first["error"]
    path = Path(first["path"])
    assert path.read_bytes() == PAYLOAD
    assert path.name == DEFAULT_FILE
    assert (tmp_path / "hf-home" / "hub") in path.parents  # the standard HF cache under HF_HOME

    events = first["events"]
    done = [d for d, _ in events]
    assert len(events) >= 3
    assert done == sorted(done) and len(set(done)) == len(done)  # strictly increasing
    assert all(total == len(PAYLOAD) for _, total in events)
    assert events[-1] == [len(PAYLOAD), len(PAYLOAD)]

    assert len(hub.file_requests("GET")) == 1
    get = hub.file_requests("GET")[0]
    assert get.path == f"/{DEFAULT_REPO}/resolve/main/{DEFAULT_FILE}"

    # A second run finds it in the cache without touching the network at all.
    seen = len(hub.requests)
    second = run_models(tmp_path, hub.endpoint)
    assert second["path"] == first["path"]
    assert second["events"] == []
    assert len(hub.requests) == seen

    cached = run_models(tmp_path, hub.endpoint, "cached")
    assert cached["path"] == first["path"]
    assert len(hub.requests) == seen

    # Offline, the cached copy is still used.
    offline = run_models(tmp_path, hub.endpoint, offline=True)
    assert offline["path"] == first["path"]


def test_cached_default_model_is_none_before_download(tmp_path: Path, hub: HubMock) -> None:
    assert run_models(tmp_path, hub.endpoint, "cached")["path"] is None
    assert hub.requests == []


def test_failing_progress_callback_does_not_break_download(tmp_path: Path, hub: HubMock) -> None:
    result = run_models(tmp_path, hub.endpoint, "download-bad-callback")
    assert "error" not in result, result["error"]
    assert Path(result["path"]).read_bytes() == PAYLOAD
    assert len(result["events"]) == 1  # the callback is dropped after it raises


def expected_failure(reason: str) -> str:
    return (
        f"no model configured and the default model {DEFAULT_REPO}/{DEFAULT_FILE} could not be "
        f"downloaded ({reason}). Run `cl-lsp download` when online, or set model.path / --model /"
        " CL_LSP_MODEL to a local GGUF file."
    )


def test_unreachable_endpoint_fails_fast(tmp_path: Path, closed_port_endpoint: str) -> None:
    result = run_models(tmp_path, closed_port_endpoint)
    assert result["error"] == expected_failure(f"cannot connect to {closed_port_endpoint}")
    assert result["elapsed"] < 5  # hf_hub_download alone retries for ~23 s here
    assert result["events"] == []


def test_offline_without_cache_fails_fast(tmp_path: Path, hub: HubMock) -> None:
    result = run_models(tmp_path, hub.endpoint, offline=True)
    assert result["error"] == expected_failure(
        "HF_HUB_OFFLINE is set and the file is not in the Hugging Face cache"
    )
    assert result["elapsed"] < 5
    assert hub.requests == []


def test_missing_file_on_hub(tmp_path: Path, hub: HubMock) -> None:
    result = run_models(tmp_path, hub.endpoint, filename="nope.gguf")
    assert "(file not found on http://127.0.0.1:" in result["error"]
    assert "default model TheBloke/CodeLlama-7B-GGUF/nope.gguf" in result["error"]
    assert hub.file_requests("GET") == []
    # "known missing" is cached by huggingface_hub as a sentinel: still not a cached model.
    assert run_models(tmp_path, hub.endpoint, "cached")["path"] is None


def test_missing_repo_on_hub(tmp_path: Path, hub: HubMock) -> None:
    result = run_models(tmp_path, hub.endpoint, repo="nobody/nothing")
    assert "(repository not found on http://127.0.0.1:" in result["error"]


def test_downloaded_file_that_is_not_gguf(tmp_path: Path) -> None:
    html = b"<!DOCTYPE html><html><body>Sign in</body></html>"
    with serve_hub({KEY: html}) as mock:
        result = run_models(tmp_path, mock.endpoint)
    assert "was downloaded to" in result["error"]
    assert "not a GGUF file" in result["error"] and "HTML page" in result["error"]


def test_download_serves_from_a_file_with_range_requests(tmp_path: Path) -> None:
    """The mock also serves files from disk and honours Range (huggingface_hub's resume)."""
    import urllib.request

    source = tmp_path / "model.gguf"
    source.write_bytes(b"GGUF" + bytes(range(256)) * 4)
    with serve_hub({KEY: source}) as mock:
        url = f"{mock.endpoint}/{DEFAULT_REPO}/resolve/main/{DEFAULT_FILE}"
        request = urllib.request.Request(url, headers={"Range": "bytes=4-"})
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 206
            assert response.headers["Content-Range"] == f"bytes 4-1027/{4 + 1024}"
            assert response.read() == bytes(range(256)) * 4
        head = urllib.request.Request(url, method="HEAD")
        with urllib.request.urlopen(head, timeout=5) as response:
            assert response.headers["X-Repo-Commit"] == mock.commit
            assert response.headers["X-Linked-Size"] == str(4 + 1024)
            assert "X-Xet-Hash" not in response.headers
        assert mock.count("HEAD") == 1 and mock.count("GET") == 1


# --------------------------------------------------------------------------------------------
# The tqdm stand-in and the terminal bar
# --------------------------------------------------------------------------------------------


def test_progress_bar_class_follows_tqdm_protocol() -> None:
    """How huggingface_hub drives a tqdm_class, for both plain HTTP and Xet downloads."""
    seen: list[tuple[int, int | None]] = []
    bar_class = models._progress_bar_class(models._Reporter(lambda d, t: seen.append((d, t))))
    assert callable(getattr(bar_class, "update_transfer", None))  # => one bar for Xet
    with bar_class(desc="x", total=None, initial=0, unit="B", unit_scale=True) as bar:
        bar.update(10)
        bar.update_transfer(7)
        bar.total = 40  # Xet sets the total as an attribute
        bar.set_postfix_str("1 MB/s", refresh=False)
        bar.update(30)
    assert seen == [(0, None), (10, None), (40, 40)]
    with pytest.raises(AttributeError):
        bar.format_dict  # noqa: B018


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_progress_on_a_tty(capsys: pytest.CaptureFixture[str]) -> None:
    stream = FakeTTY()
    progress = terminal_progress(stream)
    total = 50 * 1_000_000
    for done in range(0, total + 1, total // 1000):
        progress(done, total)
    text = stream.getvalue()
    assert text.startswith("\r[")
    assert text.endswith("\n") and text.count("\n") == 1
    assert text.count("\r") < 100  # throttled
    last = text.rsplit("\r", 1)[-1]
    assert "100%" in last and "50.0/50.0 MB" in last and "MB/s" in last
    progress.close()  # nothing more to end
    assert stream.getvalue() == text
    assert capsys.readouterr().out == ""  # stdout belongs to the LSP protocol


def test_terminal_progress_not_a_tty() -> None:
    stream = io.StringIO()
    progress = terminal_progress(stream)
    for done in range(0, 1001, 5):
        progress(done * 1000, 1_000_000)
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert 10 <= len(lines) <= 12  # one per 10 %
    assert "1.0/1.0 MB" in lines[-1]


def test_terminal_progress_close_ends_an_unfinished_line() -> None:
    stream = FakeTTY()
    progress = terminal_progress(stream)
    progress(3_000_000, None)
    progress.close()
    assert stream.getvalue().startswith("\r3.0 MB") and stream.getvalue().endswith("\n")


def test_terminal_progress_defaults_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    progress = terminal_progress()
    progress(1_000_000, 1_000_000)
    captured = capsys.readouterr()
    assert captured.out == "" and "1.0/1.0 MB" in captured.err


def test_throttled_passes_first_and_final() -> None:
    seen: list[tuple[int, int | None]] = []
    report = progress_bar.throttled(lambda d, t: seen.append((d, t)), interval=60)
    for done in range(101):
        report(done, 100)
    assert seen == [(0, 100), (100, 100)]
