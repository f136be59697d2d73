"""llama-cpp-python's own OpenAI-compatible server (`python -m llama_cpp.server`, the test
extras install it) serving the x model on loopback: the stand-in for vLLM/SGLang/TGI's
`/v1/completions` in the inference-server engine tests. What it accepts decides what cl-lsp can
send it: text prompts, not token ids (which vLLM and SGLang take)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from http_servers import openai_server, post_json


@pytest.fixture
def x_openai(x_model: Path, tmp_path: Path) -> Iterator[str]:
    with openai_server(x_model, tmp_path / "server.log") as base:
        yield base


def test_it_completes_a_text_prompt(x_openai: str) -> None:
    status, answer = post_json(
        x_openai, "/completions", {"prompt": "def f(x):", "max_tokens": 3, "temperature": 0}
    )
    assert status == 200
    assert answer["choices"][0]["text"] == " x x x"
    assert answer["choices"][0]["finish_reason"] == "length"


def test_it_refuses_a_prompt_of_token_ids(x_openai: str) -> None:
    # An engine for OpenAI-compatible servers must find this out and send text instead.
    status, _ = post_json(x_openai, "/completions", {"prompt": [1, 822], "max_tokens": 3})
    assert status >= 400
