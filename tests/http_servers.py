"""Inference servers for the tests: started on loopback, waited for, stopped; JSON over HTTP."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

STARTUP_SECONDS = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post_json(base: str, path: str, body: dict) -> tuple[int, dict]:
    """POST `body` as JSON; the HTTP status and the JSON answer (error answers too)."""
    request = urllib.request.Request(
        base + path, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


@contextlib.contextmanager
def serving(command: list[str], ready_url: str, log_path: Path) -> Iterator[None]:
    """Run `command` (output to `log_path`) until `ready_url` answers 200; stop it afterwards."""
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + STARTUP_SECONDS
            while True:
                assert server.poll() is None, log_path.read_text()[-2000:]
                try:
                    with urllib.request.urlopen(ready_url, timeout=2) as answer:
                        if answer.status == 200:
                            break
                except OSError:
                    pass
                assert time.monotonic() < deadline, f"{command[0]} did not become ready"
                time.sleep(0.1)
            yield
        finally:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


@contextlib.contextmanager
def llama_server(
    model: Path, log_path: Path, *, slots: int = 1, n_ctx: int = 1024
) -> Iterator[str]:
    """llama.cpp's llama-server (built by tests/assets.py) serving `model` on loopback; yields
    its base URL. Skips the test when the binary was not built."""
    import assets
    import pytest

    try:
        binary = assets.llama_server_path()
    except assets.AssetMissingError as error:
        pytest.skip(str(error))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port)]
    # --no-repack: on CPUs with AMX this llama.cpp crashes on repacked quantized weights
    # (SmolLM2 is Q4_1); the F32 test models are not repacked anyway.
    command += ["-c", str(n_ctx * slots), "-np", str(slots), "-t", "2", "--no-repack"]
    with serving(command, base + "/health", log_path):
        yield base


@contextlib.contextmanager
def openai_server(model: Path, log_path: Path, *, n_ctx: int = 1024) -> Iterator[str]:
    """llama-cpp-python's OpenAI-compatible server serving `model` on loopback; yields its
    /v1 base URL, as OpenAI clients take it."""
    import sys

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(model)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx)]
    with serving(command, base + "/v1/models", log_path):
        yield base + "/v1"
