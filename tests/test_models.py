"""Model path resolution, GGUF checks, and the default-model download through a mock hub.

huggingface_hub reads ``HF_ENDPOINT``, ``HF_HOME`` and ``HF_HUB_OFFLINE`` once, at import time,
into ``huggingface_hub.constants``. So every download test runs ``cl_lsp.models`` in a fresh
``python -c`` subprocess with those variables set, exactly like a real ``cl-lsp`` process, and the
subprocess prints its outcome as JSON. The hub is ``tests/hubmock.py`` on a loopback port.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import time
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
from cl_lsp.models import hub as hub_module
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
    bar_class = hub_module._progress_bar_class(
        hub_module._Reporter(lambda d, t: seen.append((d, t)))
    )
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


# --------------------------------------------------------------------------------------------
# Model references: names, hf:OWNER/REPO/FILE.gguf, OWNER/REPO:QUANT
# --------------------------------------------------------------------------------------------

C13 = "TheBloke/CodeLlama-13B-GGUF"


@pytest.mark.parametrize(
    ("text", "kind", "repo", "filename", "quant"),
    [
        ("codellama-7b", "name", DEFAULT_REPO, DEFAULT_FILE, "Q4_K_M"),
        ("codellama-13b", "name", C13, "codellama-13b.Q4_K_M.gguf", "Q4_K_M"),
        ("CodeLlama-13B:q5_k_m", "name", C13, "codellama-13b.Q5_K_M.gguf", "Q5_K_M"),
        (
            "codellama-7b-instruct",
            "name",
            "TheBloke/CodeLlama-7B-Instruct-GGUF",
            "codellama-7b-instruct.Q4_K_M.gguf",
            "Q4_K_M",
        ),
        (
            "codellama-13b-instruct:Q8_0",
            "name",
            "TheBloke/CodeLlama-13B-Instruct-GGUF",
            "codellama-13b-instruct.Q8_0.gguf",
            "Q8_0",
        ),
        (
            "hf:someone/Coder-GGUF/coder.Q8_0.gguf",
            "hub-file",
            "someone/Coder-GGUF",
            "coder.Q8_0.gguf",
            "",
        ),
        (
            "HF:someone/Coder-GGUF/sub/dir/c.gguf",
            "hub-file",
            "someone/Coder-GGUF",
            "sub/dir/c.gguf",
            "",
        ),
        ("someone/Coder-GGUF:q4_k_m", "hub-quant", "someone/Coder-GGUF", "", "Q4_K_M"),
        (
            "bartowski/Qwen2.5-Coder-7B-Instruct-GGUF:IQ4_XS",
            "hub-quant",
            "bartowski/Qwen2.5-Coder-7B-Instruct-GGUF",
            "",
            "IQ4_XS",
        ),
        # paths: these look like one, so they are never names or Hub references
        ("/models/codellama-13b", "path", "", "", ""),
        ("./codellama-13b", "path", "", "", ""),
        ("../m", "path", "", "", ""),
        ("~/models/x", "path", "", "", ""),
        ("codellama-13b.Q4_K_M.gguf", "path", "", "", ""),
        ("someone/Coder-GGUF/coder.Q8_0.gguf", "path", "", "", ""),  # hf: is the Hub's form
        ("a/b/c", "path", "", "", ""),
        ("C:\\models\\x", "path", "", "", ""),
        ("models\\codellama-13b", "path", "", "", ""),
        ("someone/Coder-GGUF", "path", "", "", ""),  # one slash, no :QUANT
        ("my model", "path", "", "", ""),
    ],
)
def test_model_references_are_classified(text, kind, repo, filename, quant) -> None:
    ref = models.parse_model_ref(text, "--model")
    assert (ref.kind, ref.repo, ref.filename, ref.quant) == (kind, repo, filename, quant)
    assert ref.is_path == (kind == "path")


def test_an_existing_file_named_like_a_model_is_a_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "codellama-13b").write_bytes(b"GGUF")
    (tmp_path / "someone").mkdir()
    (tmp_path / "someone" / "Coder-GGUF:Q4_K_M").write_bytes(b"GGUF")
    assert models.parse_model_ref("codellama-13b", "--model").is_path
    assert models.parse_model_ref("someone/Coder-GGUF:Q4_K_M", "--model").is_path
    assert not models.parse_model_ref("codellama-7b", "--model").is_path


KNOWN = "codellama-7b, codellama-13b, codellama-7b-instruct, codellama-13b-instruct"
HOW = (
    "a file needs a path (./model.gguf, ~/models/model.gguf), a model on the Hugging Face Hub "
    "is hf:OWNER/REPO/FILE.gguf or OWNER/REPO:QUANT"
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "codellama-34b",
            (
                f"unknown model name 'codellama-34b' (from model.path setting). The known names are "
                f"{KNOWN}, each with an optional :QUANT (e.g. codellama-13b:Q5_K_M); {HOW}."
            ),
        ),
        (
            "codellama-13b:Q9_K",
            (
                "unknown quantization Q9_K for codellama-13b (from model.path setting); "
                "TheBloke/CodeLlama-13B-GGUF has Q2_K, Q3_K_S, Q3_K_M, Q3_K_L, Q4_0, Q4_K_S, Q4_K_M, "
                "Q5_0, Q5_K_S, Q5_K_M, Q6_K, Q8_0 (Q4_K_M without :QUANT)"
            ),
        ),
        (
            "hf:someone/Coder-GGUF",
            (
                "not a Hugging Face file reference: 'hf:someone/Coder-GGUF' (from model.path "
                f"setting); write hf:OWNER/REPO/FILE.gguf, e.g. hf:{DEFAULT_REPO}/{DEFAULT_FILE}"
            ),
        ),
        (
            "hf:someone/Coder-GGUF/../x.gguf",
            (
                "not a Hugging Face file reference: 'hf:someone/Coder-GGUF/../x.gguf' (from "
                f"model.path setting); write hf:OWNER/REPO/FILE.gguf, e.g. hf:{DEFAULT_REPO}/"
                f"{DEFAULT_FILE}"
            ),
        ),
        (
            "hf:someone/Big-GGUF/big.Q6_K-00002-of-00002.gguf",
            (
                "hf:someone/Big-GGUF/big.Q6_K-00002-of-00002.gguf is not the first part of a split "
                "model (from model.path setting); name the first part, "
                "hf:someone/Big-GGUF/big.Q6_K-00001-of-00002.gguf: the others are downloaded with it"
            ),
        ),
    ],
)
def test_bad_references_are_explained(text: str, message: str) -> None:
    with pytest.raises(ModelError) as err:
        models.parse_model_ref(text, "model.path setting")
    assert str(err.value) == message


REPO_FILES = [
    ".gitattributes",
    "README.md",
    "coder.Q4_K_M.gguf",
    "coder.Q4_K_S.gguf",
    "mmproj-coder.Q4_K_M.gguf",  # a projector, not a model
    "sub/coder.IQ4_XS.gguf",
    "big.Q6_K-00001-of-00002.gguf",
    "big.Q6_K-00002-of-00002.gguf",
]


@pytest.mark.parametrize(
    ("quant", "picked"),
    [
        ("Q4_K_M", ("coder.Q4_K_M.gguf",)),
        ("q4_k_s", ("coder.Q4_K_S.gguf",)),
        ("IQ4_XS", ("sub/coder.IQ4_XS.gguf",)),
        ("Q6_K", ("big.Q6_K-00001-of-00002.gguf", "big.Q6_K-00002-of-00002.gguf")),
    ],
)
def test_the_quantization_picks_one_file(quant: str, picked: tuple[str, ...]) -> None:
    assert models.pick_quant("someone/Coder-GGUF", quant, REPO_FILES, "--model") == picked


def test_the_quantization_matches_whole_tags_only() -> None:
    with pytest.raises(ModelError) as err:
        models.pick_quant("someone/Coder-GGUF", "Q4_K", REPO_FILES, "--model")  # not Q4_K_M
    assert str(err.value) == (
        "someone/Coder-GGUF has no GGUF file with the quantization Q4_K (from --model); the "
        "quantizations there are IQ4_XS, Q4_K_M, Q4_K_S, Q6_K: write e.g. "
        "someone/Coder-GGUF:Q4_K_M, or name a file as hf:someone/Coder-GGUF/FILE.gguf"
    )


def test_several_matching_files_are_named() -> None:
    files = ["a.Q4_K_M.gguf", "b.Q4_K_M.gguf", "b.Q8_0.gguf"]
    with pytest.raises(ModelError) as err:
        models.pick_quant("someone/Twins-GGUF", "Q4_K_M", files, "--model")
    assert str(err.value) == (
        "someone/Twins-GGUF:Q4_K_M is ambiguous (from --model): 2 GGUF files match "
        "(a.Q4_K_M.gguf, b.Q4_K_M.gguf); name one as hf:someone/Twins-GGUF/FILE.gguf"
    )


def test_a_repository_without_gguf_files_is_explained() -> None:
    with pytest.raises(ModelError) as err:
        models.pick_quant("someone/Coder", "Q4_K_M", ["model.safetensors"], "--model")
    assert str(err.value).startswith(
        "someone/Coder has no GGUF model files (from --model); cl-lsp needs a model in GGUF format"
    )


@pytest.mark.parametrize(
    ("size", "shown"),
    [(4_080_000_000, "4.08 GB"), (12_345_678, "12.3 MB"), (2_048, "2.0 kB"), (12, "12 bytes")],
)
def test_sizes_for_people(size: int, shown: str) -> None:
    assert models.format_size(size) == shown


# --------------------------------------------------------------------------------------------
# References through the mock hub: downloaded once, then from the cache with no request
# --------------------------------------------------------------------------------------------

OPS = r"""
import json, logging, sys, time
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
from cl_lsp import models
results = []
for op, *args in json.loads(sys.argv[1]):
    events, announced, out = [], [], {"op": op, "args": args}
    started = time.monotonic()
    try:
        if op == "fetch":  # args[0] as --model; None: nothing configured
            path = models.locate_model(
                args[0],
                None,
                lambda done, total: events.append([done, total]),
                lambda plan: announced.append([plan.describe(), plan.size]),
            )
            out["path"] = str(path)
        elif op == "vocab":
            found = models.locate_vocabulary(args[0], None)
            out["path"] = None if found is None else str(found)
        elif op == "actions":
            from cl_lsp.engine.writer import _actions_model_path
            out["path"] = _actions_model_path(args[0])
        elif op == "list":
            found = models.list_models()
            out["cache"] = str(found.cache)
            out["known"] = {
                known.name: None if c is None else [c.reference, c.size, str(c.path)]
                for known, c in found.known
            }
            out["others"] = [[c.reference, c.size, str(c.path)] for c in found.others]
        elif op == "simulate-enospc":  # the disk fills up while the file is written
            import errno
            import huggingface_hub.file_download as file_download
            real_http_get = file_download.http_get

            class FullDisk:
                def __init__(self, file):
                    self.file = file
                def write(self, data):
                    raise OSError(errno.ENOSPC, "No space left on device")
                def __getattr__(self, name):
                    return getattr(self.file, name)

            file_download.http_get = lambda url, f, **kw: real_http_get(url, FullDisk(f), **kw)
    except models.ModelError as exc:
        out["error"] = str(exc)
    except Exception as exc:  # the writer's EngineError
        out["error"] = f"{type(exc).__name__}: {exc}"
    out.update(events=events, announced=announced, elapsed=time.monotonic() - started)
    results.append(out)
print(json.dumps(results))
"""


def hub_env(tmp_path: Path, endpoint: str, *, offline: bool = False, **extra: str) -> dict:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "CL_LSP"))
    }
    env.update(
        HF_ENDPOINT=endpoint,
        HF_HOME=str(tmp_path / "hf-home"),
        HF_HUB_DISABLE_TELEMETRY="1",
        PYTHONPATH=str(ROOT),
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        **extra,
    )
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return env


def run_ops(tmp_path: Path, endpoint: str, ops: list, **env: object) -> tuple[list[dict], str]:
    """Run OPS in a fresh interpreter (as a new cl-lsp process would); (results, stderr)."""
    proc = subprocess.run(
        [sys.executable, "-c", OPS, json.dumps(ops)],
        check=False,
        env=hub_env(tmp_path, endpoint, **env),  # type: ignore[arg-type]
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def start_ops(tmp_path: Path, endpoint: str, ops: list) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", OPS, json.dumps(ops)],
        env=hub_env(tmp_path, endpoint),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def gguf(tag: bytes, size: int = 0) -> bytes:
    """A tiny "model": the GGUF magic and version, a tag, zeros up to *size*."""
    data = b"GGUF\x03\x00\x00\x00" + tag
    return data + bytes(max(0, size - len(data)))


HUB_FILES: dict[tuple[str, str], bytes] = {
    (C13, "codellama-13b.Q4_K_M.gguf"): gguf(b"13b q4"),
    (C13, "codellama-13b.Q5_K_M.gguf"): gguf(b"13b q5"),
    (C13, "README.md"): b"# CodeLlama 13B - GGUF\n",
    ("someone/Coder-GGUF", "coder.Q4_K_M.gguf"): gguf(b"coder q4"),
    ("someone/Coder-GGUF", "coder.Q4_K_S.gguf"): gguf(b"coder q4s"),
    ("someone/Coder-GGUF", "mmproj-coder.Q4_K_M.gguf"): gguf(b"projector"),
    ("someone/Coder-GGUF", "sub/coder.Q8_0.gguf"): gguf(b"coder q8"),
    ("someone/Big-GGUF", "big.Q6_K-00001-of-00002.gguf"): gguf(b"big part 1"),
    ("someone/Big-GGUF", "big.Q6_K-00002-of-00002.gguf"): b"the second part",
    ("someone/Twins-GGUF", "a.Q4_K_M.gguf"): gguf(b"a"),
    ("someone/Twins-GGUF", "b.Q4_K_M.gguf"): gguf(b"b"),
}
FORMS = {
    "codellama-13b": (C13, "codellama-13b.Q4_K_M.gguf"),
    "codellama-13b:q5_k_m": (C13, "codellama-13b.Q5_K_M.gguf"),
    "hf:someone/Coder-GGUF/sub/coder.Q8_0.gguf": ("someone/Coder-GGUF", "sub/coder.Q8_0.gguf"),
    "someone/Coder-GGUF:q4_k_m": ("someone/Coder-GGUF", "coder.Q4_K_M.gguf"),
    "someone/Big-GGUF:Q6_K": ("someone/Big-GGUF", "big.Q6_K-00001-of-00002.gguf"),
}


@pytest.fixture
def many() -> HubMock:
    with serve_hub(HUB_FILES) as mock:  # type: ignore[arg-type]
        yield mock


def test_every_reference_form_is_downloaded_once_then_used_from_the_cache(
    tmp_path: Path, many: HubMock
) -> None:
    cache = tmp_path / "hf-home" / "hub"
    before, _ = run_ops(tmp_path, many.endpoint, [["list"], *(["vocab", f] for f in FORMS)])
    assert before[0]["known"] == dict.fromkeys(models.KNOWN_MODELS) and before[0]["others"] == []
    assert [r["path"] for r in before[1:]] == [None] * len(FORMS)  # never downloads
    assert many.requests == []

    first, _ = run_ops(tmp_path, many.endpoint, [["fetch", form] for form in FORMS])
    for result, (form, (repo, filename)) in zip(first, FORMS.items(), strict=True):
        assert "error" not in result, result
        path = Path(result["path"])
        assert cache in path.parents and path.as_posix().endswith("/" + filename)
        assert path.read_bytes() == HUB_FILES[repo, filename]
        ((described, size),) = result["announced"]
        assert described.startswith(form) and size == result["events"][-1][0]
        assert result["events"][-1] == [size, size]
    # A split model: every part side by side, the first one loaded (llama.cpp finds the rest).
    big = Path(first[-1]["path"])
    assert (big.parent / "big.Q6_K-00002-of-00002.gguf").read_bytes() == b"the second part"
    assert first[0]["announced"][0][0] == (
        f"codellama-13b ({C13}/codellama-13b.Q4_K_M.gguf, "
        f"{len(HUB_FILES[C13, 'codellama-13b.Q4_K_M.gguf'])} bytes)"
    )
    assert first[-1]["announced"][0][0].startswith(
        "someone/Big-GGUF:Q6_K (someone/Big-GGUF/big.Q6_K-00001-of-00002.gguf, 2 parts, "
    )
    gets = sorted(r.path for r in many.file_requests("GET"))
    assert len(gets) == len(FORMS) + 1  # one per file, two parts for the split model
    assert many.count("GET", "/api/models/") == 2  # the two OWNER/REPO:QUANT listings
    assert not any("mmproj" in path for path in gets)

    seen = len(many.requests)
    again, _ = run_ops(
        tmp_path,
        many.endpoint,
        [
            *(["fetch", form] for form in FORMS),
            *(["vocab", form] for form in FORMS),
            ["actions", "codellama-13b"],
            ["list"],
        ],
    )
    paths = [r["path"] for r in first]
    assert [r["path"] for r in again[: len(FORMS)]] == paths
    assert all(r["events"] == [] and r["announced"] == [] for r in again)
    assert [r["path"] for r in again[len(FORMS) : 2 * len(FORMS)]] == paths
    assert again[-2]["path"] == paths[0]
    listing = again[-1]
    assert listing["known"]["codellama-13b"] == [
        "codellama-13b",
        len(HUB_FILES[C13, "codellama-13b.Q4_K_M.gguf"]),
        paths[0],
    ]
    assert listing["known"]["codellama-7b"] is None
    big_size = sum(
        len(HUB_FILES["someone/Big-GGUF", n])
        for n in ("big.Q6_K-00001-of-00002.gguf", "big.Q6_K-00002-of-00002.gguf")
    )
    assert listing["others"] == [
        ["codellama-13b:Q5_K_M", len(HUB_FILES[C13, "codellama-13b.Q5_K_M.gguf"]), paths[1]],
        ["hf:someone/Big-GGUF/big.Q6_K-00001-of-00002.gguf", big_size, paths[4]],
        [
            "hf:someone/Coder-GGUF/coder.Q4_K_M.gguf",
            len(HUB_FILES["someone/Coder-GGUF", "coder.Q4_K_M.gguf"]),
            paths[3],
        ],
        [
            "hf:someone/Coder-GGUF/sub/coder.Q8_0.gguf",
            len(HUB_FILES["someone/Coder-GGUF", "sub/coder.Q8_0.gguf"]),
            paths[2],
        ],
    ]
    assert len(many.requests) == seen  # all from the cache: not one request

    offline, _ = run_ops(tmp_path, many.endpoint, [["fetch", f] for f in FORMS], offline=True)
    assert [r["path"] for r in offline] == paths


def test_a_name_not_in_the_cache_gives_an_inference_server_no_vocabulary(
    tmp_path: Path, many: HubMock
) -> None:
    (result,), log = run_ops(tmp_path, many.endpoint, [["vocab", "codellama-13b-instruct"]])
    assert result["path"] is None and "error" not in result
    assert (
        "INFO codellama-13b-instruct (TheBloke/CodeLlama-13B-Instruct-GGUF/"
        "codellama-13b-instruct.Q4_K_M.gguf) (from --model) is not in the Hugging Face cache, "
        "and an inference server's engine never downloads a model: going on without a local "
        "vocabulary (`cl-lsp download codellama-13b-instruct` fetches it)"
    ) in log
    assert many.requests == []


def test_hub_faults_are_explained_without_downloading(tmp_path: Path, many: HubMock) -> None:
    endpoint = many.endpoint
    cases = {
        "hf:nobody/nothing/x.gguf": "the model hf:nobody/nothing/x.gguf (from --model) could not "
        f"be downloaded (repository not found on {endpoint}). Run `cl-lsp download "
        "hf:nobody/nothing/x.gguf` when online, or use a local GGUF file (pass a different --model).",
        "hf:someone/Coder-GGUF/missing.gguf": "the model hf:someone/Coder-GGUF/missing.gguf (from "
        f"--model) could not be downloaded (file not found on {endpoint}). Run `cl-lsp download "
        "hf:someone/Coder-GGUF/missing.gguf` when online, or use a local GGUF file (pass a "
        "different --model).",
        "nobody/nothing:Q4_K_M": "the model nobody/nothing:Q4_K_M (from --model) could not be "
        f"downloaded (repository not found on {endpoint}). Run `cl-lsp download "
        "nobody/nothing:Q4_K_M` when online, or use a local GGUF file (pass a different --model).",
        "someone/Coder-GGUF:Q3_K_M": "someone/Coder-GGUF has no GGUF file with the quantization "
        "Q3_K_M (from --model); the quantizations there are Q4_K_M, Q4_K_S, Q8_0: write e.g. "
        "someone/Coder-GGUF:Q4_K_M, or name a file as hf:someone/Coder-GGUF/FILE.gguf",
        "someone/Twins-GGUF:Q4_K_M": "someone/Twins-GGUF:Q4_K_M is ambiguous (from --model): 2 "
        "GGUF files match (a.Q4_K_M.gguf, b.Q4_K_M.gguf); name one as "
        "hf:someone/Twins-GGUF/FILE.gguf",
        "gpt-5": f"unknown model name 'gpt-5' (from --model). The known names are {KNOWN}, each "
        f"with an optional :QUANT (e.g. codellama-13b:Q5_K_M); {HOW}.",
        "someone/Coder-GGUF": "model file not found: someone/Coder-GGUF (from --model; set "
        "model.path in the settings, pass --model, or set CL_LSP_MODEL); a model on the Hugging "
        "Face Hub is written OWNER/REPO:QUANT, e.g. someone/Coder-GGUF:Q4_K_M",
    }
    results, _ = run_ops(tmp_path, endpoint, [["fetch", text] for text in cases])
    assert [r["error"] for r in results] == list(cases.values())
    assert many.file_requests("GET") == []
    (actions,), _ = run_ops(tmp_path, endpoint, [["actions", "codellama-70b"]])
    assert actions["error"].startswith(
        "EngineError: actions model unusable: unknown model name 'codellama-70b' (from "
        "actions.model setting)."
    )
    assert actions["error"].endswith("; or leave actions.model empty to use the completion model")


def test_offline_without_a_cached_copy_fails_fast_and_says_so(
    tmp_path: Path, many: HubMock
) -> None:
    (tmp_path / "codellama-7b").mkdir()  # in the working folder: the default is still a name
    results, _ = run_ops(
        tmp_path,
        many.endpoint,
        [["fetch", "codellama-13b"], ["fetch", "someone/Coder-GGUF:Q4_K_M"], ["fetch", None]],
        offline=True,
    )
    assert [r["error"] for r in results] == [
        (
            f"the model codellama-13b ({C13}/codellama-13b.Q4_K_M.gguf) (from --model) could not be "
            "downloaded (HF_HUB_OFFLINE is set and the file is not in the Hugging Face cache). Run "
            "`cl-lsp download codellama-13b` when online, or use a local GGUF file (pass a "
            "different --model)."
        ),
        (
            "the model someone/Coder-GGUF:Q4_K_M (from --model) could not be downloaded "
            "(HF_HUB_OFFLINE is set and the file is not in the Hugging Face cache). Run `cl-lsp "
            "download someone/Coder-GGUF:Q4_K_M` when online, or use a local GGUF file (pass a "
            "different --model)."
        ),
        expected_failure("HF_HUB_OFFLINE is set and the file is not in the Hugging Face cache"),
    ]
    assert many.requests == []


def test_no_network_fails_fast_for_every_form(tmp_path: Path, closed_port_endpoint: str) -> None:
    forms = ["codellama-13b", "hf:someone/Coder-GGUF/coder.Q8_0.gguf", "someone/Coder-GGUF:Q8_0"]
    results, _ = run_ops(tmp_path, closed_port_endpoint, [["fetch", form] for form in forms])
    for result in results:
        assert (
            f"could not be downloaded (cannot connect to {closed_port_endpoint})" in result["error"]
        )
        assert result["elapsed"] < 5  # no retries
        assert result["announced"] == [] and result["events"] == []


def test_an_interrupted_download_is_never_used_and_a_retry_completes_it(tmp_path: Path) -> None:
    payload = gguf(b"13b q4", 12 * MiB)
    blobs = tmp_path / "hf-home" / "hub" / "models--TheBloke--CodeLlama-13B-GGUF" / "blobs"
    with serve_hub({(C13, "codellama-13b.Q4_K_M.gguf"): payload}) as hub:
        hub.hold_after = 11 * MiB  # huggingface_hub writes 10 MiB, then waits for the rest
        hub.release.clear()
        download = start_ops(tmp_path, hub.endpoint, [["fetch", "codellama-13b"]])
        try:
            deadline = time.monotonic() + 60
            while not any(p.stat().st_size >= 10 * MiB for p in blobs.glob("*.incomplete")):
                assert download.poll() is None, download.communicate()
                assert time.monotonic() < deadline, "the download never started"
                time.sleep(0.05)
        finally:
            download.kill()  # the editor or the machine went away mid-download
            download.wait(10)
        (partial,) = [p for p in blobs.iterdir() if p.name.endswith(".incomplete")]
        after_kill, _ = run_ops(
            tmp_path, hub.endpoint, [["vocab", "codellama-13b"], ["list"]], offline=True
        )
        assert after_kill[0]["path"] is None  # half a file is never a model
        assert after_kill[1]["known"]["codellama-13b"] is None
        assert after_kill[1]["others"] == []
        hub.release.set()
        (retry,), _ = run_ops(tmp_path, hub.endpoint, [["fetch", "codellama-13b"]])
        assert "error" not in retry, retry
        assert Path(retry["path"]).read_bytes() == payload
        assert len(hub.file_requests("GET")) == 2
    # huggingface_hub never reuses another process's partial file; it stays as it was
    assert partial.exists() and partial.stat().st_size < len(payload)


def test_a_dropped_connection_resumes_where_it_stopped(tmp_path: Path) -> None:
    payload = gguf(b"13b q4", 12 * MiB)
    with serve_hub({(C13, "codellama-13b.Q4_K_M.gguf"): payload}) as hub:
        hub.cut_after = 11 * MiB
        (result,), _ = run_ops(tmp_path, hub.endpoint, [["fetch", "codellama-13b"]])
        assert "error" not in result, result
        assert Path(result["path"]).read_bytes() == payload
        first, resumed = hub.file_requests("GET")
        assert "Range" not in first.headers
        assert resumed.headers["Range"] == f"bytes={10 * MiB}-"
    assert result["events"][-1] == [len(payload), len(payload)]


def test_a_short_transfer_is_refused_and_a_retry_completes_it(tmp_path: Path) -> None:
    payload = gguf(b"13b q4", 3 * MiB)
    with serve_hub({(C13, "codellama-13b.Q4_K_M.gguf"): payload}) as hub:
        hub.short_by = 1000  # the connection closes cleanly, 1000 bytes early
        (short,), _ = run_ops(tmp_path, hub.endpoint, [["fetch", "codellama-13b"]])
        assert short["error"] == (
            f"the model codellama-13b ({C13}/codellama-13b.Q4_K_M.gguf) (from --model) could not "
            "be downloaded (the connection was cut before the whole file arrived). Run `cl-lsp "
            "download codellama-13b` when online, or use a local GGUF file (pass a different "
            "--model)."
        )
        cache = tmp_path / "hf-home" / "hub"
        assert list(cache.rglob("*.incomplete")) == [] and list(cache.rglob("*.gguf")) == []
        hub.short_by = 0
        (retry,), _ = run_ops(tmp_path, hub.endpoint, [["fetch", "codellama-13b"]])
        assert Path(retry["path"]).read_bytes() == payload


# -- a full disk: a real size-limited filesystem where this runs as root, else simulated -------


@pytest.fixture
def small_disk(tmp_path: Path):
    """``small_disk("4m")``: a folder on a tmpfs of that size (needs root: else the test skips;
    test_a_disk_full_while_writing_is_explained_simulated covers the message everywhere)."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        folder = tmp_path / f"disk-{len(mounted)}"
        folder.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a {size} tmpfs here: {done.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_model_larger_than_the_free_space_is_refused_before_downloading(
    tmp_path: Path, small_disk
) -> None:
    disk = small_disk("1m")
    payload = gguf(b"13b q4", 3 * MiB)
    with serve_hub({(C13, "codellama-13b.Q4_K_M.gguf"): payload}) as hub:
        (result,), _ = run_ops(
            tmp_path, hub.endpoint, [["fetch", "codellama-13b"]], HF_HUB_CACHE=str(disk)
        )
        assert hub.file_requests("GET") == []
    free = models.format_size(shutil_free(disk))
    assert result["error"] == (
        f"the model codellama-13b ({C13}/codellama-13b.Q4_K_M.gguf) (from --model) could not be "
        f"downloaded (not enough disk space: the Hugging Face cache {disk} has {free} free and "
        f"the model needs {models.format_size(len(payload))}). Free some space there, or point "
        "HF_HUB_CACHE (or HF_HOME) at a larger disk, then try again (nothing half-written is "
        "kept)."
    )


def shutil_free(folder: Path) -> int:
    import shutil

    return shutil.disk_usage(folder).free


def test_a_disk_that_fills_up_while_writing_is_explained(tmp_path: Path, small_disk) -> None:
    disk = small_disk("16m")
    payload = gguf(b"13b q4", 12 * MiB)
    with serve_hub({(C13, "codellama-13b.Q4_K_M.gguf"): payload}) as hub:
        hub.hold_after = 11 * MiB
        hub.release.clear()
        download = subprocess.Popen(
            [sys.executable, "-c", OPS, json.dumps([["fetch", "codellama-13b"]])],
            env=hub_env(tmp_path, hub.endpoint, HF_HUB_CACHE=str(disk)),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        while not any(p.stat().st_size >= 10 * MiB for p in disk.rglob("*.incomplete")):
            assert download.poll() is None, download.communicate()
            assert time.monotonic() < deadline, "the download never started"
            time.sleep(0.05)
        filler = disk / "filler"  # someone else fills the disk meanwhile
        with filler.open("wb") as f, contextlib.suppress(OSError):
            while True:
                f.write(bytes(MiB // 4))
                f.flush()
        hub.release.set()
        out, err = download.communicate(timeout=60)
        assert download.returncode == 0, err
        (result,) = json.loads(out.strip().splitlines()[-1])
        assert result["error"] == (
            f"the model codellama-13b ({C13}/codellama-13b.Q4_K_M.gguf) (from --model) could "
            f"not be downloaded (no space left on the disk of the Hugging Face cache {disk}). "
            "Free some space there, or point HF_HUB_CACHE (or HF_HOME) at a larger disk, then "
            "try again (nothing half-written is kept)."
        )
        assert list(disk.rglob("*.incomplete")) == []  # huggingface_hub removed its part
        assert list(disk.rglob("snapshots/*/*.gguf")) == []
        filler.unlink()
        (retry,), _ = run_ops(
            tmp_path, hub.endpoint, [["fetch", "codellama-13b"]], HF_HUB_CACHE=str(disk)
        )
        assert Path(retry["path"]).read_bytes() == payload


def test_a_disk_full_while_writing_is_explained_simulated(tmp_path: Path, many: HubMock) -> None:
    """ENOSPC raised at the file-write boundary inside huggingface_hub (for machines where a
    small tmpfs cannot be mounted)."""
    results, _ = run_ops(tmp_path, many.endpoint, [["simulate-enospc"], ["fetch", "codellama-13b"]])
    cache = tmp_path / "hf-home" / "hub"
    assert results[1]["error"] == (
        f"the model codellama-13b ({C13}/codellama-13b.Q4_K_M.gguf) (from --model) could not be "
        f"downloaded (no space left on the disk of the Hugging Face cache {cache}). Free some "
        "space there, or point HF_HUB_CACHE (or HF_HOME) at a larger disk, then try again "
        "(nothing half-written is kept)."
    )
    assert list(cache.rglob("*.incomplete")) == []
