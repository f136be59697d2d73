"""llama-cpp-python's own OpenAI-compatible server (`python -m llama_cpp.server`, the test
extras install it) serving the x model on loopback: the stand-in for vLLM/SGLang/TGI's
`/v1/completions` in the inference-server engine tests. What it accepts decides what cl-lsp can
send it: text prompts, not token ids (which vLLM and SGLang take)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

STARTUP_SECONDS = 60


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(base: str, path: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        base + path, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


@pytest.fixture
def openai_server(x_model: Path, tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    log = (tmp_path / "server.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(x_model)]
        + ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", "1024"],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(base + "/v1/models", timeout=2):
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "llama_cpp.server did not start"
            time.sleep(0.1)
        yield base + "/v1"
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def test_it_completes_a_text_prompt(openai_server: str) -> None:
    status, answer = _post(
        openai_server, "/completions", {"prompt": "def f(x):", "max_tokens": 3, "temperature": 0}
    )
    assert status == 200
    assert answer["choices"][0]["text"] == " x x x"
    assert answer["choices"][0]["finish_reason"] == "length"


def test_it_refuses_a_prompt_of_token_ids(openai_server: str) -> None:
    # An engine for OpenAI-compatible servers must find this out and send text instead.
    status, _ = _post(openai_server, "/completions", {"prompt": [1, 822], "max_tokens": 3})
    assert status >= 400
