"""End to end against the scripted mock server (tests/mock_inference.py): `cl-lsp --stdio` on
an inference-server engine, for what real servers can't be made to do on cue. Chosen raw
answers go through the post-processing over HTTP; each server's wire format is spoken as its
docs give it (Ollama and vLLM can't run here); and every fault (down, slow, error statuses,
wrong model, garbage, a cut stream) gives the user one message, the server keeps serving,
and it recovers by itself when the server is back, without a storm of requests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from conftest import offline_env, status
from lsprotocol import types
from mock_inference import MockInferenceServer, Reply
from test_server import change, inline, open_doc


@pytest.fixture
def mock() -> Iterator[MockInferenceServer]:
    with MockInferenceServer() as server:
        yield server
        assert server.errors == []


def warnings(client) -> list[str]:
    return [
        m.message
        for m in client.messages
        if m.type in (types.MessageType.Warning, types.MessageType.Error)
    ]


def infos(client) -> list[str]:
    return [m.message for m in client.messages if m.type == types.MessageType.Info]


def engine(kind: str, url: str, **more: object) -> dict:
    return {"engine": {"kind": kind, "url": url, **more}, "completion": {"debounceMs": 0}}


async def settle(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_a_llama_server_answer_goes_through_the_post_processing(
    start_server, x_model, mock, tmp_path
):
    client = await start_server(model=x_model, options=engine("llama-server", mock.base_url))
    mock.script(Reply.text("1 + 2\nprint('more')\n", piece_len=3))
    uri = (tmp_path / "a.py").as_uri()
    open_doc(client, uri, "total = ")
    result = await inline(client, uri, 0, 8)
    assert [item.insert_text for item in result.items] == ["1 + 2"]
    (request,) = mock.generations
    body = request.body
    assert request.path == "/completion" and body["stream"] is True
    assert body["prompt"][:3] == [1, 32007, 32008]  # token ids, SPM: BOS, <PRE>, <SUF>
    assert body["cache_prompt"] is True and body["id_slot"] == 0  # the server's only slot
    assert body["stop"] == ["\n"] and body["n_predict"] == 48
    state = await status(client)
    assert state["prompt"] == "tokens" and state["health"]["state"] == "ok"


async def test_the_end_of_the_block_closes_the_stream(start_server, x_model, mock, tmp_path):
    client = await start_server(model=x_model, options=engine("llama-server", mock.base_url))
    answer = "return a + b\n\ndef g():\n    pass\n" + "x = 1\n" * 40
    mock.script(Reply.text(answer, piece_len=2, piece_delay=0.01))
    uri = (tmp_path / "a.py").as_uri()
    open_doc(client, uri, "def f(a, b):\n    \n\nprint(f(1, 2))\n")
    result = await inline(client, uri, 1, 4)
    assert [item.insert_text for item in result.items] == ["return a + b"]
    (request,) = mock.generations
    assert mock.wait_ended(request, 5)
    assert request.end == "client_closed" and request.text_sent != answer
    assert (await status(client))["server"]["streamsClosed"] == 1


async def test_ollama_gets_raw_text_and_streams_ndjson(start_server, mock, tmp_path):
    # No model.path: no vocabulary, so the prompt goes as text and budgets are estimated.
    client = await start_server(
        options=engine("ollama", mock.base_url, model="codellama"),
        env=offline_env(tmp_path),
    )
    mock.script(Reply.text("len(items)\n", piece_len=4))
    uri = (tmp_path / "a.py").as_uri()
    open_doc(client, uri, "items = [1]\ncount = \nprint(count)\n")
    result = await inline(client, uri, 1, 8)
    assert [item.insert_text for item in result.items] == ["len(items)"]
    (request,) = mock.generations
    assert request.path == "/api/generate" and request.body["raw"] is True
    assert request.body["model"] == "codellama"
    assert request.body["prompt"] == "▁<PRE>▁<SUF>\nprint(count)\n▁<MID>items = [1]\ncount = "
    assert request.body["options"]["num_predict"] == 48
    state = await status(client)
    assert (state["engine"], state["prompt"], state["model"]) == ("ollama", "text", None)


async def test_an_openai_server_with_a_key(start_server, x_model, tmp_path):
    with MockInferenceServer(api_key="s3cret", models=("cl-7b",)) as mock:
        env = offline_env(tmp_path, CL_TEST_KEY="s3cret")
        client = await start_server(
            model=x_model,
            options=engine("openai", mock.base_url + "/v1", model="cl-7b", apiKeyEnv="CL_TEST_KEY"),
            env=env,
        )
        mock.script(Reply.text("42\n", piece_len=1))
        uri = (tmp_path / "a.py").as_uri()
        open_doc(client, uri, "answer = ")
        result = await inline(client, uri, 0, 9)
        assert [item.insert_text for item in result.items] == ["42"]
        request = mock.generations[-1]
        assert request.path == "/v1/completions"
        assert request.headers["authorization"] == "Bearer s3cret"
        assert isinstance(request.body["prompt"], list)  # vLLM and SGLang take ids
        assert request.body["model"] == "cl-7b"
        log = (await status(client))["recent"]
        assert "s3cret" not in str(log) and "s3cret" not in str(client.log_messages)


FAULTS = {
    "error status": (Reply(status=500, error="CUDA out of memory"), "HTTP 500: CUDA out of memory"),
    "context": (Reply.context_overflow(), "longer than"),
    "garbage": (Reply(pieces=["1"], garbage=b"<html>oops</html>"), "not"),
    "cut stream": (Reply(pieces=["1", "2", "3"], disconnect_after=2), "before"),
    "slow": (Reply(pieces=["1"], first_byte_delay=3.0), "did not answer within 1 s"),
}


@pytest.mark.parametrize("fault", FAULTS)
async def test_a_fault_is_one_message_and_the_server_recovers(
    start_server, x_model, mock, tmp_path, fault
):
    reply, message = FAULTS[fault]
    options = engine("llama-server", mock.base_url, timeoutMs=1000)
    client = await start_server(model=x_model, options=options)
    mock.script(reply)
    uri = (tmp_path / "a.py").as_uri()
    open_doc(client, uri, "total = ")
    first = await inline(client, uri, 0, 8)
    assert not first.items
    # More keystrokes while it is down: answered at once, no second message, no storm.
    for version in range(2, 12):
        change(client, uri, version, (0, 6 + version), (0, 6 + version), "1")
        assert not (await inline(client, uri, 0, 7 + version)).items
    shown = warnings(client)
    assert len(shown) == 1 and message in shown[0], shown
    state = await status(client)
    assert state["health"]["state"] == "down" and message in state["health"]["error"]
    assert len(mock.generations) <= 2
    # The server is fine again: after the backoff (0.5 s), the next request gets through.
    mock.script(Reply.text(" + 1\n"))
    await asyncio.sleep(0.6)
    change(client, uri, 12, (0, 18), (0, 18), " ")
    again = await inline(client, uri, 0, 19)
    assert [item.insert_text for item in again.items] == [" + 1"]
    assert any("answers again" in text for text in infos(client)), client.messages
    assert (await status(client))["health"]["state"] == "ok"


async def test_a_stopped_server_comes_back_by_itself(start_server, x_model, mock, tmp_path):
    client = await start_server(model=x_model, options=engine("llama-server", mock.base_url))
    uri = (tmp_path / "a.py").as_uri()
    open_doc(client, uri, "total = ")
    mock.stop()
    assert not (await inline(client, uri, 0, 8)).items
    shown = warnings(client)
    assert len(shown) == 1 and "cannot reach llama-server" in shown[0], shown
    mock.restart()
    mock.script(Reply.text("0\n"))
    deadline = time.monotonic() + 10
    version = 2
    while True:  # an editor keeps asking as the user types; one of them gets through
        change(client, uri, version, (0, 8), (0, 8), "")
        result = await inline(client, uri, 0, 8)
        if result.items:
            break
        assert time.monotonic() < deadline, client.messages
        version += 1
        await asyncio.sleep(0.2)
    assert result.items[0].insert_text == "0"
    assert len(warnings(client)) == 1
    # While it was down, the editor's status line said so ($/progress), until it was back.
    await settle(lambda: any(_outage(values)[1:] for values in client.progress_reports.values()))
    (shown,) = [_outage(values) for values in client.progress_reports.values() if _outage(values)]
    begin, end = shown
    assert "down: cannot reach" in begin.message and "answers again" in end.message


def _outage(values: list) -> list:
    """The engine-outage progress among a token's values: its begin and end, if it is one."""
    begins = [v for v in values if getattr(v, "title", "") == "cl-lsp: engine"]
    if not begins or "down" not in (begins[0].message or ""):
        return []
    return begins[:1] + [v for v in values if type(v).__name__ == "WorkDoneProgressEnd"]


async def test_an_unreachable_server_at_start_is_one_message(start_server, x_model, tmp_path):
    from http_servers import free_port

    url = f"http://127.0.0.1:{free_port()}"
    client = await start_server(model=x_model, options=engine("llama-server", url))
    uri = (tmp_path / "a.py").as_uri()
    open_doc(client, uri, "total = ")
    for _ in range(3):
        assert not (await inline(client, uri, 0, 8)).items
    shown = warnings(client)
    assert len(shown) == 1 and url in shown[0], shown
    assert (await status(client))["state"] == "ready"  # and still serving


async def test_a_wrong_model_name_says_so(start_server, x_model, tmp_path):
    with MockInferenceServer(models=("cl-7b",)) as mock:
        client = await start_server(
            model=x_model, options=engine("openai", mock.base_url + "/v1", model="nope")
        )
        uri = (tmp_path / "a.py").as_uri()
        open_doc(client, uri, "total = ")
        assert not (await inline(client, uri, 0, 8)).items
        shown = warnings(client)
        assert len(shown) == 1 and "no model named 'nope'" in shown[0], shown


async def test_a_superseded_stream_is_closed_at_once(start_server, x_model, mock, tmp_path):
    client = await start_server(model=x_model, options=engine("llama-server", mock.base_url))
    mock.script(Reply.text("1 " * 400, piece_delay=0.02), Reply.text("2\n"))
    uri = (tmp_path / "a.py").as_uri()
    open_doc(client, uri, "total = ")
    first = asyncio.ensure_future(inline(client, uri, 0, 8))
    await settle(lambda: mock.in_flight == 1)
    change(client, uri, 2, (0, 8), (0, 8), "x")
    superseded = time.monotonic()
    second = await inline(client, uri, 0, 9)
    assert not (await first).items
    assert [item.insert_text for item in second.items] == ["2"]
    old = mock.generations[0]
    assert old.end == "client_closed"
    closed_after = old.closed_by_client_at - superseded
    assert closed_after < 0.25, closed_after  # within 50 ms on an idle machine (BENCHMARKS.md)
    # One document: never two generations on the server at once.
    assert mock.max_in_flight == 1


FIX = "def area(radius):\n    return math.pi * radius ^ 2\n"


async def _fix_action(client, uri: str):
    from test_code_actions import code_actions, pick, resolve

    actions = await code_actions(client, uri, types.Position(line=1, character=8))
    return await resolve(client, pick(actions, "Fix function"))


@pytest.mark.parametrize(
    ("kind", "path", "model"),
    [("ollama", "/api/chat", "codellama"), ("openai", "/v1/chat/completions", "codellama")],
)
async def test_actions_go_to_the_servers_chat_endpoint(
    start_server, x_model, mock, tmp_path, kind, path, model
):
    url = mock.base_url + ("/v1" if kind == "openai" else "")
    # Completions stay in process; code actions go to the server (actions.engine).
    options = {"actions": {"engine": {"kind": kind, "url": url, "model": model}}}
    client = await start_server(model=x_model, options=options)
    fixed = "def area(radius):\n    return math.pi * radius ** 2\n"
    mock.script(Reply.text(f"Here:\n```python\n{fixed}```\n", piece_len=5))
    uri = (tmp_path / "a.py").as_uri()
    open_doc(client, uri, FIX)
    resolved = await _fix_action(client, uri)
    assert resolved.edit is not None, client.messages
    (change_,) = resolved.edit.document_changes
    assert change_.edits[0].new_text.strip() == fixed.strip()
    (request,) = mock.generations
    assert request.path == path
    roles = [message["role"] for message in request.body["messages"]]
    assert roles == ["system", "user"] and "radius ^ 2" in request.body["messages"][1]["content"]
    state = await status(client)
    assert state["engine"] == "local" and state["actionsStarted"] == 1


async def test_an_action_on_a_server_that_is_down_says_so_once(start_server, x_model, tmp_path):
    from http_servers import free_port

    url = f"http://127.0.0.1:{free_port()}"
    options = {"engine": {"kind": "llama-server", "url": url}}
    client = await start_server(model=x_model, options=options)
    uri = (tmp_path / "a.py").as_uri()
    open_doc(client, uri, FIX)
    resolved = await _fix_action(client, uri)
    assert resolved.edit is None
    errors = [m.message for m in client.messages if "cannot reach" in m.message]
    assert errors and all(url in message for message in errors), client.messages
    assert (await status(client))["state"] == "ready"


async def test_the_engine_can_change_while_the_editor_runs(start_server, x_model, mock, tmp_path):
    from conftest import wait_for_state
    from test_server import X48

    client = await start_server(model=x_model)
    uri = (tmp_path / "a.py").as_uri()
    open_doc(client, uri, "total = ")

    def configure(engine_settings: dict) -> None:
        client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(settings={"engine": engine_settings})
        )

    configure({"kind": "llama-server", "url": mock.base_url})
    await settle(lambda: mock.requests)  # its health probe
    await wait_for_state(client, {"ready"})
    assert (await status(client))["engine"] == "llama-server"
    mock.script(Reply.text("7\n"))
    assert [item.insert_text for item in (await inline(client, uri, 0, 8)).items] == ["7"]
    configure({"kind": "local"})
    await wait_for_state(client, {"ready"})
    assert (await status(client))["engine"] == "local"
    change(client, uri, 2, (0, 8), (0, 8), "")
    assert [item.insert_text for item in (await inline(client, uri, 0, 8)).items] == [X48]
    assert len(mock.generations) == 1
