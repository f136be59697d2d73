"""The inference servers' wire formats, line by line (`cl_lsp/engine/wire.py`): request bodies
as each server documents them, and every kind of streamed line read back."""

from __future__ import annotations

import json

import pytest

from cl_lsp.config import EngineKind
from cl_lsp.engine import wire

LLAMA, OPENAI, OLLAMA = EngineKind.LLAMA_SERVER, EngineKind.OPENAI, EngineKind.OLLAMA


def test_llama_server_body_sends_token_ids_with_the_cache_and_a_fixed_slot():
    body = wire.completion_body(LLAMA, (1, 32007, 5), max_tokens=8, temperature=0.0, slot=2)
    assert body["prompt"] == [1, 32007, 5]
    assert body["n_predict"] == 8 and body["stream"] is True
    assert body["cache_prompt"] is True and body["id_slot"] == 2
    assert body["top_k"] == 1  # greedy at temperature 0, as the local engine samples
    assert "n_cache_reuse" not in body  # the server's own default unless asked


def test_llama_server_body_asks_for_cache_reuse_only_with_the_cache():
    def body(**options):
        return wire.completion_body(LLAMA, (1, 5), max_tokens=8, temperature=0.0, **options)

    assert body(cache_reuse=64)["n_cache_reuse"] == 64
    assert "n_cache_reuse" not in body(cache_reuse=64, cache_prompt=False)
    assert "n_cache_reuse" not in body(cache_reuse=0)


def test_openai_body_names_the_model_and_asks_for_usage():
    body = wire.completion_body(
        OPENAI, [1, 2], max_tokens=4, temperature=0.2, stop=["\n"], model="codellama"
    )
    assert body == {
        "prompt": [1, 2],
        "max_tokens": 4,
        "temperature": 0.2,
        "stream": True,
        "stream_options": {"include_usage": True},
        "stop": ["\n"],
        "model": "codellama",
    }


def test_ollama_body_is_raw_text_with_options():
    body = wire.completion_body(OLLAMA, "<PRE> x", max_tokens=4, temperature=0.0, model="cl:7b")
    assert body["raw"] is True and body["prompt"] == "<PRE> x" and body["model"] == "cl:7b"
    assert body["options"] == {"num_predict": 4, "temperature": 0.0, "top_k": 1}
    with pytest.raises(ValueError):
        wire.completion_body(OLLAMA, [1, 2], max_tokens=4, temperature=0.0)


def test_sse_lines():
    assert wire.stream_payload("sse", "") is None
    assert wire.stream_payload("sse", ": keep-alive") is None
    assert wire.stream_payload("sse", "event: completion") is None
    assert wire.stream_payload("sse", 'data: {"a": 1}') == '{"a": 1}'
    assert wire.stream_payload("sse", "data: [DONE]") is None
    assert wire.is_done_marker("data: [DONE]")
    error = wire.stream_payload("sse", 'error: {"code": 500, "message": "boom"}')
    assert error is not None
    assert wire.parse_completion(LLAMA, error).error == "boom"
    with pytest.raises(wire.WireError):
        wire.stream_payload("sse", "<html>502 Bad Gateway</html>")


def test_garbage_in_a_stream_is_a_wire_error():
    with pytest.raises(wire.WireError, match="not JSON"):
        wire.parse_completion(LLAMA, "{not json")
    with pytest.raises(wire.WireError):
        wire.parse_completion(OPENAI, "[1, 2]")
    with pytest.raises(wire.WireError, match="unexpected"):
        wire.parse_completion(LLAMA, json.dumps({"no_content": True}))


def test_llama_server_pieces_and_last_word():
    piece = wire.parse_completion(
        LLAMA, json.dumps({"content": " x", "tokens": [7], "stop": False})
    )
    assert (piece.text, piece.tokens, piece.done) == (" x", (7,), False)
    last = wire.parse_completion(
        LLAMA,
        json.dumps(
            {
                "content": "",
                "stop": True,
                "stop_type": "limit",
                "tokens_evaluated": 40,
                "timings": {"prompt_n": 3, "cache_n": 37},
            }
        ),
    )
    assert last.done and last.stop_reason == "max_tokens"
    assert (last.prompt_tokens, last.evaluated_tokens) == (40, 3)
    eos = wire.parse_completion(
        LLAMA, json.dumps({"content": "", "stop": True, "stop_type": "eos"})
    )
    assert eos.stop_reason == "eot"


def test_openai_pieces_finish_then_usage():
    chunk = {"choices": [{"index": 0, "text": "ab", "finish_reason": None}]}
    assert wire.parse_completion(OPENAI, json.dumps(chunk)).text == "ab"
    chunk["choices"][0].update(text="", finish_reason="length")
    finished = wire.parse_completion(OPENAI, json.dumps(chunk))
    assert finished.stop_reason == "max_tokens" and not finished.done
    usage = {
        "choices": [],
        "usage": {"prompt_tokens": 50, "prompt_tokens_details": {"cached_tokens": 48}},
    }
    last = wire.parse_completion(OPENAI, json.dumps(usage))
    assert last.done and (last.prompt_tokens, last.evaluated_tokens) == (50, 2)


def test_ollama_pieces():
    assert wire.parse_completion(OLLAMA, '{"response": "y", "done": false}').text == "y"
    last = wire.parse_completion(
        OLLAMA, '{"response": "", "done": true, "done_reason": "stop", "prompt_eval_count": 9}'
    )
    assert last.done and last.stop_reason == "eot" and last.evaluated_tokens == 9
    chat = wire.parse_chat(
        OLLAMA, '{"message": {"role": "assistant", "content": "hi"}, "done": false}'
    )
    assert chat.text == "hi"


def test_chat_pieces_read_the_delta():
    chunk = {"choices": [{"index": 0, "delta": {"content": "Fix"}, "finish_reason": None}]}
    assert wire.parse_chat(LLAMA, json.dumps(chunk)).text == "Fix"
    body = wire.chat_body(OPENAI, "sys", "user", max_tokens=9, temperature=0.2, model="m")
    assert body["messages"][0] == {"role": "system", "content": "sys"}
    assert body["model"] == "m" and body["stream"] is True


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"error": {"code": 400, "message": "too long", "type": "x"}}, "too long"),
        ({"error": "model 'x' not found"}, "model 'x' not found"),
        ({"detail": "Not Found"}, "Not Found"),
        ({"detail": [{"loc": ["body", "prompt"], "msg": "bad"}]}, '"prompt"'),
        ({"object": "error", "message": "vLLM says no"}, "vLLM says no"),
    ],
)
def test_error_bodies_of_every_shape_give_their_message(body, message):
    assert message in wire.error_text(body)
