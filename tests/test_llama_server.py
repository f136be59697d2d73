"""llama.cpp's own llama-server, built from the llama.cpp that cl-lsp runs in process (tests/
assets.py), serving the test models on loopback: the ground the inference-server engines stand
on. Its tokenizer agrees with cl-lsp's to the token, it takes cl-lsp's FIM prompts as token
ids, and with `cache_prompt` it re-evaluates only what changed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from http_servers import llama_server, post_json

from cl_lsp.completion.families import fim_format
from cl_lsp.completion.prompts import Layout, build_fim_prompt


def _post(base: str, path: str, body: dict) -> dict:
    status, answer = post_json(base, path, body)
    assert status == 200, answer
    return answer


@pytest.fixture
def x_server(x_model: Path, tmp_path: Path) -> Iterator[str]:
    with llama_server(x_model, tmp_path / "llama-server.log") as base:
        yield base


SAMPLES = [
    "def add(a, b):\n    return a + b\n",
    '    if (x) {\n\treturn "héllo";  // ünïcode ✓\n}',
    "const s = `${a}<PRE>`; /* <SUF> stays text */",
    "",
]


@pytest.mark.parametrize("text", SAMPLES, ids=range(len(SAMPLES)))
def test_the_server_tokenizes_user_text_as_cl_lsp_does(x_server: str, tiny_vocab, text: str):
    # User text never yields control tokens, on either side.
    answer = _post(x_server, "/tokenize", {"content": text, "add_special": False})
    assert answer["tokens"] == tiny_vocab.encode(text)


def test_the_server_completes_a_fim_prompt_given_as_token_ids(x_server: str, tiny_vocab):
    fim = fim_format(tiny_vocab)
    prompt = build_fim_prompt(
        "def f(x):\n    return ", "\n\nprint(f(1))\n", tiny_vocab.encode, fim, Layout.SPM
    )
    body = {
        "prompt": list(prompt.tokens),
        "n_predict": 3,
        "temperature": 0,
        "top_k": 1,
        "cache_prompt": True,
    }
    first = _post(x_server, "/completion", body)
    assert first["content"] == " x x x"  # the x model writes "▁x" forever
    assert first["tokens_evaluated"] == len(prompt.tokens)
    # The same prompt again: the server's cache holds it and evaluates (almost) nothing anew.
    again = _post(x_server, "/completion", body)
    assert again["content"] == " x x x"
    assert again["timings"]["prompt_n"] <= 1 < len(prompt.tokens)
