"""llama-cpp-python's own OpenAI-compatible server (`python -m llama_cpp.server`, the test
extras install it) serving the x model on loopback: the stand-in for vLLM/SGLang/TGI's
`/v1/completions` in the inference-server engine tests. What it accepts decides what cl-lsp can
send it: text prompts, not token ids (which vLLM and SGLang take)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from http_servers import free_port, post_json, serving


@pytest.fixture
def openai_server(x_model: Path, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(x_model)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", "1024"]
    with serving(command, base + "/v1/models", tmp_path / "server.log"):
        yield base + "/v1"


def test_it_completes_a_text_prompt(openai_server: str) -> None:
    status, answer = post_json(
        openai_server, "/completions", {"prompt": "def f(x):", "max_tokens": 3, "temperature": 0}
    )
    assert status == 200
    assert answer["choices"][0]["text"] == " x x x"
    assert answer["choices"][0]["finish_reason"] == "length"


def test_it_refuses_a_prompt_of_token_ids(openai_server: str) -> None:
    # An engine for OpenAI-compatible servers must find this out and send text instead.
    status, _ = post_json(openai_server, "/completions", {"prompt": [1, 822], "max_tokens": 3})
    assert status >= 400
