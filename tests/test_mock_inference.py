"""The mock inference server speaks each wire format as the real servers do, and does on cue what
they can't: delays, slow drips, errors, hang-ups, garbage, refusal. Other tests trust it to."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from mock_inference import BOS_ID, MockInferenceServer, RecordedRequest, Reply


@pytest.fixture
def server() -> Iterator[MockInferenceServer]:
    with MockInferenceServer() as mock:
        yield mock
        assert mock.errors == []


def http_client(base_url: str) -> httpx.Client:
    """A client for plain HTTP on loopback: verify=False skips loading the CA bundle (80 ms)."""
    return httpx.Client(base_url=base_url, timeout=5, verify=False)


@pytest.fixture
def client(server: MockInferenceServer) -> Iterator[httpx.Client]:
    with http_client(server.base_url) as http:
        yield http


def sse_data(response: httpx.Response) -> list[str]:
    """The ``data:`` payloads of an event stream, in order (other lines are framing)."""
    return [line[len("data: ") :] for line in response.iter_lines() if line.startswith("data: ")]


def stream_sse(client: httpx.Client, path: str, body: dict[str, Any]) -> list[str]:
    with client.stream("POST", path, json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        return sse_data(response)


def stream_ndjson(client: httpx.Client, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    with client.stream("POST", path, json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/x-ndjson"
        return [json.loads(line) for line in response.iter_lines() if line]


def only(server: MockInferenceServer) -> RecordedRequest:
    (request,) = server.generations
    return request


# -- llama-server ----------------------------------------------------------------------------


def test_llama_stream_carries_the_pieces_and_a_final_event_with_counts(
    server: MockInferenceServer, client: httpx.Client
) -> None:
    server.script(Reply(["def", " f", "():"], stop_reason="limit", cache_n=2))
    body = {"prompt": "abc", "n_predict": 3, "stream": True, "cache_prompt": True, "id_slot": 1}
    events = [json.loads(data) for data in stream_sse(client, "/completion", body)]
    *pieces, final = events
    assert [e["content"] for e in pieces] == ["def", " f", "():"]
    assert all(e["stop"] is False and e["id_slot"] == 1 and e["index"] == 0 for e in pieces)
    assert [e["tokens_predicted"] for e in pieces] == [1, 2, 3]
    assert final["stop"] is True and final["content"] == ""
    assert final["stop_type"] == "limit"
    assert final["tokens_predicted"] == 3
    assert final["tokens_evaluated"] == 4  # BOS + one per byte of "abc"
    assert final["truncated"] is False
    timings = final["timings"]
    assert (timings["prompt_n"], timings["cache_n"], timings["predicted_n"]) == (2, 2, 3)
    request = only(server)
    assert request.format == "llama" and request.stream and request.body["n_predict"] == 3
    assert request.end == "completed" and request.pieces_sent == ["def", " f", "():"]
    assert request.first_byte_at is not None and request.ended_at is not None


def test_llama_non_streamed_answer_is_one_object_with_the_whole_text(
    server: MockInferenceServer, client: httpx.Client
) -> None:
    server.script(Reply.text("return 1\n", piece_len=3, stop_reason="word", stopping_word="\n\n"))
    answer = client.post("/completion", json={"prompt": [1, 2, 3, 4, 5], "n_predict": 8})
    assert answer.status_code == 200
    result = answer.json()
    assert result["content"] == "return 1\n" and result["stop"] is True
    assert result["stop_type"] == "word" and result["stopping_word"] == "\n\n"
    assert result["tokens_evaluated"] == 5  # a token-id prompt counts its ids
    assert result["tokens_predicted"] == 3 and result["has_new_line"] is True
    assert not only(server).stream


def test_tokenize_uses_the_documented_fake_rule(
    server: MockInferenceServer, client: httpx.Client
) -> None:
    plain = client.post("/tokenize", json={"content": "hé"}).json()
    assert plain == {"tokens": [ord("h") + 3, 0xC3 + 3, 0xA9 + 3]}
    special = client.post("/tokenize", json={"content": "hé", "add_special": True}).json()
    assert special["tokens"] == [BOS_ID, *plain["tokens"]]
    assert server.tokenize("hé") == plain["tokens"]
    assert server.generations == []  # tokenizing is not generating


def test_a_custom_tokenizer_drives_tokenize_and_the_counts() -> None:
    def words(text: str, add_special: bool) -> list[int]:
        return [7] * len(text.split())

    with MockInferenceServer(tokenizer=words) as mock, http_client(mock.base_url) as http:
        assert http.post("/tokenize", json={"content": "a b c"}).json() == {"tokens": [7] * 3}
        result = http.post("/completion", json={"prompt": "x y"}).json()
        assert result["tokens_evaluated"] == 2


def test_health_and_loading(server: MockInferenceServer, client: httpx.Client) -> None:
    health = client.get("/health")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    server.loading = True
    loading = {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}
    for answer in (client.get("/health"), client.post("/completion", json={"prompt": "x"})):
        assert (answer.status_code, answer.json()) == (503, loading)
    assert server.pending == 0 and only(server).reply is None  # no scripted reply was taken
    server.loading = False
    assert client.get("/health").status_code == 200


# -- OpenAI-compatible -----------------------------------------------------------------------


def test_openai_completion_stream_with_usage_ends_with_done(
    server: MockInferenceServer, client: httpx.Client
) -> None:
    server.script(Reply(["x = ", "1"], stop_reason="limit", cache_n=1))
    body = {
        "model": "codellama",
        "prompt": "ab",
        "max_tokens": 2,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    data = stream_sse(client, "/v1/completions", body)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert all(c["object"] == "text_completion" and c["model"] == "codellama" for c in chunks)
    assert all(c["id"].startswith("cmpl-") and c["id"] == chunks[0]["id"] for c in chunks)
    pieces, finish, usage = chunks[:2], chunks[2], chunks[3]
    assert [c["choices"][0]["text"] for c in pieces] == ["x = ", "1"]
    assert all(c["choices"][0]["finish_reason"] is None for c in pieces)
    assert finish["choices"][0] == {
        "index": 0,
        "text": "",
        "logprobs": None,
        "finish_reason": "length",
        "stop_reason": None,
    }
    assert usage["choices"] == []
    assert usage["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": 2,
        "total_tokens": 5,
        "prompt_tokens_details": {"cached_tokens": 1},
    }


def test_openai_finish_reason_on_the_last_piece_as_vllm_sends_it(
    server: MockInferenceServer, client: httpx.Client
) -> None:
    server.script(Reply(["a", "b"], finish_with_last_piece=True))
    data = stream_sse(client, "/v1/completions", {"prompt": "p", "stream": True})
    assert data[-1] == "[DONE]"
    choices = [json.loads(d)["choices"][0] for d in data[:-1]]
    assert [(c["text"], c["finish_reason"]) for c in choices] == [("a", None), ("b", "stop")]


def test_openai_non_streamed_completion(server: MockInferenceServer, client: httpx.Client) -> None:
    server.script(Reply(["pass"]))
    result = client.post("/v1/completions", json={"model": "codellama", "prompt": "p"}).json()
    assert result["choices"][0]["text"] == "pass"
    assert result["choices"][0]["finish_reason"] == "stop"
    assert result["usage"]["prompt_tokens"] == 2 and result["usage"]["completion_tokens"] == 1


def test_openai_chat_stream_opens_with_the_role_and_ends_with_done(
    server: MockInferenceServer, client: httpx.Client
) -> None:
    server.script(Reply(["Rename ", "it."]))
    body = {"model": "codellama", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    data = stream_sse(client, "/v1/chat/completions", body)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas == [
        {"role": "assistant", "content": ""},
        {"content": "Rename "},
        {"content": "it."},
        {},
    ]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert only(server).kind == "chat"


def test_openai_chat_non_streamed(server: MockInferenceServer, client: httpx.Client) -> None:
    server.script(Reply(["ok"]))
    body = {"messages": [{"role": "user", "content": "hi"}]}
    result = client.post("/v1/chat/completions", json=body).json()
    assert result["object"] == "chat.completion"
    assert result["choices"][0]["message"] == {"role": "assistant", "content": "ok"}


def test_models_list(client: httpx.Client) -> None:
    listing = client.get("/v1/models").json()
    assert listing["object"] == "list"
    assert [(m["id"], m["object"]) for m in listing["data"]] == [("codellama", "model")]


# -- Ollama ----------------------------------------------------------------------------------


def test_ollama_generate_streams_ndjson_by_default(
    server: MockInferenceServer, client: httpx.Client
) -> None:
    server.script(Reply(["a", "b", "c"], stop_reason="limit", cache_n=3))
    body = {
        "model": "codellama",
        "prompt": "<PRE> x <SUF> <MID>",
        "raw": True,
        "options": {"num_predict": 3, "temperature": 0},
    }
    *pieces, final = stream_ndjson(client, "/api/generate", body)
    assert [p["response"] for p in pieces] == ["a", "b", "c"]
    assert all(p["done"] is False and p["model"] == "codellama" for p in pieces)
    assert final["done"] is True and final["response"] == ""
    assert final["done_reason"] == "length" and final["eval_count"] == 3
    assert final["prompt_eval_count"] == len(server.tokenize(body["prompt"], True)) - 3
    assert final["total_duration"] >= 0 and final["created_at"].endswith("Z")
    assert only(server).stream  # Ollama streams unless told not to


def test_ollama_chat_stream_and_non_stream(
    server: MockInferenceServer, client: httpx.Client
) -> None:
    server.script(Reply(["x", "y"]), Reply(["whole"]))
    body: dict[str, Any] = {"model": "codellama", "messages": [{"role": "user", "content": "q"}]}
    *pieces, final = stream_ndjson(client, "/api/chat", body)
    assert [p["message"] for p in pieces] == [
        {"role": "assistant", "content": "x"},
        {"role": "assistant", "content": "y"},
    ]
    assert final["done"] is True and final["done_reason"] == "stop"
    whole = client.post("/api/chat", json={**body, "stream": False}).json()
    assert whole["message"]["content"] == "whole" and whole["done"] is True


def test_ollama_tags_and_version(client: httpx.Client) -> None:
    assert [m["name"] for m in client.get("/api/tags").json()["models"]] == ["codellama"]
    assert "version" in client.get("/api/version").json()


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        (
            "/completion",
            {"prompt": "p", "stream": True},
            {"error": {"code": 500, "message": "boom", "type": "server_error"}},
        ),
        (
            "/v1/completions",
            {"prompt": "p", "stream": True},
            {
                "error": {
                    "message": "boom",
                    "type": "InternalServerError",
                    "param": None,
                    "code": 500,
                }
            },
        ),
        ("/api/generate", {"model": "codellama", "prompt": "p"}, {"error": "boom"}),
    ],
)
def test_an_error_reply_is_the_format_error_body_even_for_a_stream(
    server: MockInferenceServer,
    client: httpx.Client,
    path: str,
    body: dict[str, Any],
    expected: dict[str, Any],
) -> None:
    server.script(Reply(status=500, error="boom"))
    answer = client.post(path, json=body)
    assert answer.status_code == 500
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.json() == expected


def test_context_overflow_scripted_and_automatic() -> None:
    with MockInferenceServer(n_ctx=8) as mock, http_client(mock.base_url) as http:
        mock.script(Reply.context_overflow(prompt_tokens=9412), Reply(["fits"]))
        scripted = http.post("/completion", json={"prompt": "p"})
        assert scripted.status_code == 400
        assert scripted.json() == {
            "error": {
                "code": 400,
                "message": "request (9412 tokens) exceeds the available context size "
                "(8 tokens), try increasing it",
                "type": "exceed_context_size_error",
                "n_prompt_tokens": 9412,
                "n_ctx": 8,
            }
        }
        # Too long for n_ctx=8: refused without taking the next scripted reply.
        llama = http.post("/completion", json={"prompt": "1234567"})  # BOS + 7 = 8 >= 8
        assert llama.status_code == 400
        assert llama.json()["error"]["type"] == "exceed_context_size_error"
        vllm = http.post("/v1/completions", json={"prompt": "abc", "max_tokens": 5})  # 4 + 5 > 8
        assert vllm.status_code == 400
        error = vllm.json()["error"]
        assert error["type"] == "BadRequestError" and error["code"] == 400
        assert error["message"].startswith(
            "This model's maximum context length is 8 tokens. However, you requested 5 output "
            "tokens and your prompt contains 4 input tokens"
        )
        assert mock.pending == 1
        assert http.post("/completion", json={"prompt": "ab"}).json()["content"] == "fits"


def test_an_unknown_model_is_404_in_openai_and_ollama(
    server: MockInferenceServer, client: httpx.Client
) -> None:
    openai = client.post("/v1/completions", json={"model": "gpt-x", "prompt": "p"})
    assert openai.status_code == 404
    assert openai.json()["error"]["message"] == "The model `gpt-x` does not exist."
    assert openai.json()["error"]["type"] == "NotFoundError"
    ollama = client.post("/api/generate", json={"model": "nope", "prompt": "p"})
    assert (ollama.status_code, ollama.json()) == (404, {"error": "model 'nope' not found"})
    assert server.pending == 0


def test_the_bearer_key_is_checked_when_configured() -> None:
    with MockInferenceServer(api_key="sekrit") as mock, http_client(mock.base_url) as http:
        body = {"prompt": "p"}
        missing = http.post("/v1/completions", json=body)
        assert (missing.status_code, missing.json()) == (401, {"error": "Unauthorized"})
        wrong = http.post("/v1/completions", json=body, headers={"Authorization": "Bearer no"})
        assert wrong.status_code == 401
        assert http.get("/v1/models").status_code == 401
        llama = http.post("/completion", json=body)
        assert llama.status_code == 401
        assert llama.json()["error"]["type"] == "authentication_error"
        assert http.get("/health").status_code == 200  # public, as in llama-server
        good = {"Authorization": "Bearer sekrit"}
        assert http.post("/v1/completions", json=body, headers=good).status_code == 200
        assert http.post("/completion", json=body, headers=good).status_code == 200
        assert mock.requests[0].headers.get("authorization") is None


def test_an_error_event_mid_stream(server: MockInferenceServer, client: httpx.Client) -> None:
    server.script(Reply(["a"], stream_error="slot died"), Reply(["a"], stream_error="slot died"))
    llama = [
        json.loads(d) for d in stream_sse(client, "/completion", {"prompt": "p", "stream": True})
    ]
    assert llama[0]["content"] == "a"
    assert llama[1]["error"]["message"] == "slot died" and len(llama) == 2
    openai = stream_sse(client, "/v1/completions", {"prompt": "p", "stream": True})
    assert json.loads(openai[1])["error"]["message"] == "slot died" and openai[2] == "[DONE]"


# -- faults ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/completion", {"prompt": "p", "stream": True}),
        ("/v1/completions", {"prompt": "p", "stream": True}),
        ("/api/generate", {"model": "codellama", "prompt": "p"}),
    ],
)
def test_a_disconnect_mid_stream_is_a_truncated_stream(
    server: MockInferenceServer, client: httpx.Client, path: str, body: dict[str, Any]
) -> None:
    server.script(Reply(["a", "b", "c"], disconnect_after=2))
    lines: list[str] = []
    with pytest.raises(httpx.RemoteProtocolError), client.stream("POST", path, json=body) as answer:
        assert answer.status_code == 200
        lines.extend(line for line in answer.iter_lines() if line)
    assert len(lines) == 2  # two pieces, no final event, no [DONE]
    assert all("[DONE]" not in line and '"done":true' not in line for line in lines)
    request = only(server)
    assert request.end == "server_closed" and request.pieces_sent == ["a", "b"]
    # The pool recovers: the next request works.
    assert client.post("/completion", json={"prompt": "p"}).status_code == 200


def test_a_disconnect_instead_of_a_whole_answer(
    server: MockInferenceServer, client: httpx.Client
) -> None:
    server.script(Reply(["a"], disconnect_after=0))
    with pytest.raises(httpx.RemoteProtocolError):
        client.post("/completion", json={"prompt": "p"})
    assert only(server).end == "server_closed" and only(server).status is None


def test_garbage_is_delivered_as_an_event_or_raw(
    server: MockInferenceServer, client: httpx.Client
) -> None:
    server.script(
        Reply(["a"], garbage=b"{not json"),
        Reply(["a"], garbage=b"<html>502</html>\n", garbage_framed=False),
    )
    data = stream_sse(client, "/v1/completions", {"prompt": "p", "stream": True})
    assert data[1] == "{not json" and data[-1] == "[DONE]"
    with client.stream("POST", "/api/generate", json={"model": "codellama", "prompt": "p"}) as r:
        lines = [line for line in r.iter_lines() if line]
    assert lines[1] == "<html>502</html>"
    assert json.loads(lines[0])["response"] == "a" and json.loads(lines[2])["done"] is True


def test_closing_a_slow_drip_is_recorded_within_50_ms(
    server: MockInferenceServer, client: httpx.Client
) -> None:
    server.script(Reply(list("abcdefgh"), piece_delay=0.15))
    with client.stream("POST", "/completion", json={"prompt": "p", "stream": True}) as answer:
        lines = answer.iter_lines()  # held: a dropped generator would close the stream itself
        assert next(lines).startswith("data: ")  # one piece read; the next is 150 ms away
        closing = time.monotonic()
        answer.close()  # what a client does to cancel a superseded generation
        closed = time.monotonic()
    request = only(server)
    assert server.wait_ended(request, 2)
    assert request.end == "client_closed"
    assert request.closed_by_client_at is not None
    assert closing <= request.closed_by_client_at < closed + 0.05
    assert request.pieces_sent == ["a"]  # seen during the delay, before the next write


def test_a_client_giving_up_before_the_first_byte_is_recorded(
    server: MockInferenceServer, client: httpx.Client
) -> None:
    server.script(Reply(["late"], first_byte_delay=2))
    sent = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        client.post("/completion", json={"prompt": "p"}, timeout=0.1)
    gave_up = time.monotonic()
    request = only(server)
    assert server.wait_ended(request, 2)
    assert request.end == "client_closed" and request.first_byte_at is None
    assert request.closed_by_client_at is not None
    assert sent + 0.1 <= request.closed_by_client_at < gave_up + 0.05


def test_in_flight_counts_concurrent_generations(
    server: MockInferenceServer, client: httpx.Client
) -> None:
    server.default_reply = Reply(["x"], first_byte_delay=0.2)
    documents = ["a.py", "a.py", "b.py"]

    def complete(doc: str) -> int:
        return client.post("/completion", json={"prompt": doc}).status_code

    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(complete, doc) for doc in documents]
        assert server.wait_for_requests(3, 2)
        assert server.in_flight == 3
        assert [f.result() for f in futures] == [200, 200, 200]
    assert server.wait_idle(2) and server.in_flight == 0
    assert server.max_in_flight == 3
    assert server.max_in_flight_by(lambda r: r.body["prompt"]) == 2
    client.get("/health")  # not a generation: not counted
    assert server.max_in_flight == 3


def test_sequential_requests_reuse_one_connection_and_never_overlap(
    server: MockInferenceServer, client: httpx.Client
) -> None:
    for _ in range(3):
        stream_sse(client, "/completion", {"prompt": "p", "stream": True})
        client.post("/v1/completions", json={"prompt": "p"})
    assert server.max_in_flight == 1
    assert len({r.peer_port for r in server.requests}) == 1  # keep-alive, chunked streams


def test_the_script_then_the_default(server: MockInferenceServer, client: httpx.Client) -> None:
    server.script(Reply(["one"]), Reply(["two"]))
    texts = [client.post("/completion", json={"prompt": "p"}).json()["content"] for _ in "abc"]
    assert texts == ["one", "two", "ok"]


def test_stop_refuses_and_restart_comes_back_on_the_same_port(
    server: MockInferenceServer, client: httpx.Client
) -> None:
    port = server.port
    assert client.get("/health").status_code == 200  # leaves a pooled connection
    server.stop()
    with pytest.raises(httpx.ConnectError):
        client.get("/health")
    server.restart()
    assert server.port == port
    assert client.get("/health").status_code == 200


def test_stop_cuts_a_stream_in_progress(server: MockInferenceServer, client: httpx.Client) -> None:
    server.script(Reply(list("abcdef"), piece_delay=0.1))
    started = threading.Event()
    outcome: list[BaseException | None] = []

    def read() -> None:
        try:
            with client.stream("POST", "/completion", json={"prompt": "p", "stream": True}) as r:
                for _ in r.iter_lines():
                    started.set()
            outcome.append(None)
        except httpx.HTTPError as error:
            outcome.append(error)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert started.wait(2)
    server.stop()
    reader.join(2)
    assert isinstance(outcome[0], httpx.RemoteProtocolError)
    assert only(server).end == "server_stopped"


def test_an_exception_while_answering_cuts_the_connection_and_is_kept() -> None:
    def broken(text: str, add_special: bool) -> list[int]:
        raise RuntimeError("tokenizer bug")

    with MockInferenceServer(tokenizer=broken) as mock, http_client(mock.base_url) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            http.post("/tokenize", json={"content": "x"})
        assert mock.wait_idle(2)
        assert mock.requests[0].end == "server_closed"
        assert mock.errors == ["POST /tokenize: RuntimeError('tokenizer bug')"]
