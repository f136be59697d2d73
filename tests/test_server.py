"""End to end: `cl-lsp --stdio` driven over the real protocol, with the real llama.cpp engine."""

from __future__ import annotations

import asyncio
import time

import pytest
from conftest import offline_env, status, wait_for_state
from lsprotocol import types
from pygls.exceptions import JsonRpcException

X48 = " x" * 47  # the x model's answer at the default single-line budget of 48 tokens: the
# last, cut by the cap, may be half a word and is dropped


def open_doc(client, uri: str, text: str, language: str = "python", version: int = 1) -> None:
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(
                uri=uri, language_id=language, version=version, text=text
            )
        )
    )


def change(
    client, uri: str, version: int, start: tuple[int, int], end: tuple[int, int], text: str
) -> None:
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[
                types.TextDocumentContentChangePartial(
                    range=types.Range(start=types.Position(*start), end=types.Position(*end)),
                    text=text,
                )
            ],
        )
    )


async def inline(client, uri: str, line: int, character: int, timeout: float = 60):
    return await asyncio.wait_for(
        client.text_document_inline_completion_async(
            types.InlineCompletionParams(
                text_document=types.TextDocumentIdentifier(uri=uri),
                position=types.Position(line=line, character=character),
                context=types.InlineCompletionContext(
                    trigger_kind=types.InlineCompletionTriggerKind.Automatic
                ),
            )
        ),
        timeout,
    )


async def complete(client, uri: str, line: int, character: int, timeout: float = 60):
    return await asyncio.wait_for(
        client.text_document_completion_async(
            types.CompletionParams(
                text_document=types.TextDocumentIdentifier(uri=uri),
                position=types.Position(line=line, character=character),
            )
        ),
        timeout,
    )


async def wait_busy(client, timeout: float = 20) -> None:
    deadline = time.perf_counter() + timeout
    while not (await status(client))["busy"]:
        assert time.perf_counter() < deadline, "the generation never started"
        await asyncio.sleep(0.01)


def progress_messages(client) -> list:
    return [value for values in client.progress_reports.values() for value in values]


async def test_initialize_advertises_the_features(start_server, x_model):
    client = await start_server(model=x_model, wait_ready=False)
    capabilities = client.init_result.capabilities
    assert capabilities.inline_completion_provider is not None
    assert capabilities.completion_provider is not None
    assert "." in capabilities.completion_provider.trigger_characters
    assert capabilities.text_document_sync.change == types.TextDocumentSyncKind.Incremental
    assert capabilities.position_encoding == types.PositionEncodingKind.Utf16
    assert "cl-lsp.status" in capabilities.execute_command_provider.commands
    assert client.init_result.server_info.name == "cl-lsp"


async def test_the_model_loads_in_the_background_with_progress(start_server, x_model):
    started = time.perf_counter()
    client = await start_server(model=x_model, wait_ready=False)
    answered = time.perf_counter() - started
    ready = await wait_for_state(client, {"ready"})
    assert ready["model"] == str(x_model)
    assert answered < 20
    kinds = [type(value).__name__ for value in progress_messages(client)]
    assert kinds[0] == "WorkDoneProgressBegin" and kinds[-1] == "WorkDoneProgressEnd"
    assert "ready" in progress_messages(client)[-1].message


async def test_inline_completion_and_completion_item(start_server, x_model, tmp_path):
    client = await start_server(model=x_model)
    uri = (tmp_path / "a.py").as_uri()
    open_doc(client, uri, "def f(y):\n    return y\n\nvalue = ")
    result = await inline(client, uri, 3, 8)
    assert len(result.items) == 1
    item = result.items[0]
    assert item.insert_text == X48
    cursor = types.Position(line=3, character=8)
    assert item.range == types.Range(start=cursor, end=cursor)

    listing = await complete(client, uri, 3, 8)
    assert listing.is_incomplete is True
    (entry,) = listing.items
    assert entry.text_edit.new_text == X48
    assert entry.label == X48.split("\n")[0]
    assert entry.text_edit.range == types.Range(start=cursor, end=cursor)
    assert entry.sort_text == "0" and entry.preselect
    # the same version and position: answered from the last result, not a second generation
    assert (await status(client))["counters"]["generationsStarted"] == 1


async def test_completion_item_replaces_the_word_being_typed(start_server, x_model, tmp_path):
    client = await start_server(model=x_model)
    # Plain text: in Python `result = tot x x x` would not parse, and an answer cut by the
    # token cap is shown only if it does.
    uri = (tmp_path / "b.txt").as_uri()
    open_doc(client, uri, "total = 0\nresult = tot", language="plaintext")
    listing = await complete(client, uri, 1, 12)
    (entry,) = listing.items
    assert entry.text_edit.range.start == types.Position(line=1, character=9)
    assert entry.text_edit.new_text == "tot" + X48
    assert entry.filter_text.startswith("tot")


async def test_random_model_answers_are_well_formed(start_server, tiny_model, tmp_path):
    client = await start_server(model=tiny_model)
    uri = (tmp_path / "c.txt").as_uri()
    text = "import os\n\n\ndef main(argv):\n    \n\nif __name__ == '__main__':\n    main(x)\n"
    # Plain text: in Python the random model's noise, cut by the token cap, rightly never parses.
    open_doc(client, uri, text, language="plaintext")
    answered = 0
    for line, character in [(4, 4), (7, 9), (0, 9), (3, 15)]:
        result = await inline(client, uri, line, character)
        for item in result.items:
            answered += 1
            assert item.insert_text.strip()
            assert "<EOT>" not in item.insert_text and "<MID>" not in item.insert_text
            assert item.range.start == item.range.end == types.Position(line, character)
    counters = (await status(client))["counters"]
    assert counters["generationsStarted"] >= 3  # (7, 9) is mid-identifier: no generation
    assert answered >= 1


async def test_smollm2_writes_real_text(start_server, smollm2_model, tmp_path):
    client = await start_server(model=smollm2_model, options={"completion": {"maxTokens": 24}})
    assert (await status(client))["fim"] is False
    uri = (tmp_path / "greet.py").as_uri()
    text = (
        'def greet(name):\n    """Return a friendly greeting for name."""\n    return "Hello, " + '
    )
    open_doc(client, uri, text)
    result = await inline(client, uri, 2, 22)
    (item,) = result.items
    words = [word for word in item.insert_text.replace('"', " ").split() if word.isalpha()]
    assert words, item.insert_text
    assert item.insert_text.isprintable()


@pytest.mark.parametrize("encoding", ["utf-16", "utf-8"])
async def test_edits_with_korean_and_emoji_keep_positions_right(
    start_server, x_model, tmp_path, encoding
):
    client = await start_server(model=x_model, encodings=[encoding])
    assert client.init_result.capabilities.position_encoding == encoding

    def col(text: str) -> int:
        return len(text.encode("utf-16-le")) // 2 if encoding == "utf-16" else len(text.encode())

    uri = (tmp_path / "k.txt").as_uri()
    head = "# 한국어 주석 😀\nname = '😀' + '한'"
    # Plain text: the x model's answer is cut by the token cap, and in Python `word x x` would
    # not parse, so nothing would be shown.
    open_doc(client, uri, head + "\n", language="plaintext")
    # type " + wor" after the last quote, then delete "r" and type "rd"
    change(client, uri, 2, (1, col("name = '😀' + '한'")), (1, col("name = '😀' + '한'")), " + wor")
    line = "name = '😀' + '한' + wor"
    change(client, uri, 3, (1, col(line) - 1), (1, col(line)), "")
    change(client, uri, 4, (1, col(line) - 1), (1, col(line) - 1), "rd")
    line = "name = '😀' + '한' + word"
    listing = await complete(client, uri, 1, col(line))
    (entry,) = listing.items
    assert entry.text_edit.range.start == types.Position(1, col("name = '😀' + '한' + "))
    # token healing may finish the word with a longer token, then the model's " x"s follow
    assert entry.text_edit.new_text.startswith("word") and " x x" in entry.text_edit.new_text
    # the emoji line above is intact: completing after it sees the same text
    result = await inline(client, uri, 0, col("# 한국어 주석 😀"))
    assert result.items and result.items[0].insert_text.startswith(" x")


async def test_a_cheap_request_is_not_delayed_by_a_running_generation(
    start_server, slow_x_model, tmp_path
):
    client = await start_server(model=slow_x_model, options={"completion": {"maxTokens": 600}})
    uri = (tmp_path / "slow.txt").as_uri()
    other = (tmp_path / "other.py").as_uri()
    open_doc(client, uri, "def f():\n    \n", language="plaintext")
    open_doc(client, other, "value = total_count + 1\n")
    slow = asyncio.ensure_future(inline(client, uri, 1, 4))
    await wait_busy(client)
    started = time.perf_counter()
    await status(client)
    in_identifier = await inline(client, other, 0, 12)  # mid-identifier: no model needed
    cheap = time.perf_counter() - started
    assert list(in_identifier.items) == []
    assert (await status(client))["busy"], "the generation should still be running"
    assert cheap < 0.5
    result = await slow
    assert result.items[0].insert_text == " x" * 599
    slow_took = time.perf_counter() - started
    assert slow_took > 4 * cheap


async def test_cancel_request_stops_the_generation(start_server, slow_x_model, tmp_path):
    client = await start_server(model=slow_x_model, options={"completion": {"maxTokens": 3000}})
    uri = (tmp_path / "cancel.py").as_uri()
    open_doc(client, uri, "def f():\n    \n")
    params = types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        position=types.Position(line=1, character=4),
        context=types.InlineCompletionContext(
            trigger_kind=types.InlineCompletionTriggerKind.Invoked
        ),
    )
    future = asyncio.ensure_future(
        client.protocol.send_request_async(
            types.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id="to-cancel"
        )
    )
    await wait_busy(client)
    cancelled_at = time.perf_counter()
    client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id="to-cancel"))
    with pytest.raises(JsonRpcException):
        await asyncio.wait_for(future, 10)
    answered = time.perf_counter() - cancelled_at
    assert answered < 1.0
    for _ in range(1000):
        current = await status(client)
        if not current["busy"]:
            break
        await asyncio.sleep(0.01)
    assert current["counters"]["generationsCancelled"] == 1
    assert current["counters"]["generatedTokens"] < 3000


async def test_bad_input_gets_clear_answers_and_the_server_keeps_serving(
    start_server, x_model, tmp_path
):
    client = await start_server(model=x_model)
    uri = (tmp_path / "ok.py").as_uri()
    open_doc(client, uri, "value = ")
    # unknown document, line past the end, binary content
    assert (await inline(client, (tmp_path / "nope.py").as_uri(), 0, 0)).items == ()
    assert (await inline(client, uri, 40, 0)).items == ()
    binary = (tmp_path / "blob.bin").as_uri()
    open_doc(client, binary, "ELF\x00\x01\x02 garbage \x00", language="plaintext")
    assert (await inline(client, binary, 0, 5)).items == ()
    # a negative position cannot be deserialized: answered with InvalidParams, not ignored
    bad = {
        "textDocument": {"uri": uri},
        "position": {"line": -1, "character": 0},
        "context": {"triggerKind": 1},
    }
    answer: asyncio.Future = asyncio.get_running_loop().create_future()
    client.protocol._request_futures["negative"] = answer
    client.protocol._send_data(
        {
            "jsonrpc": "2.0",
            "id": "negative",
            "params": bad,
            "method": types.TEXT_DOCUMENT_INLINE_COMPLETION,
        }
    )
    with pytest.raises(JsonRpcException) as error:
        await asyncio.wait_for(answer, 10)
    assert "invalid params" in str(error.value).lower()
    # a 5 MB document is synced and answered quickly (only a window around the cursor is read)
    big_uri = (tmp_path / "big.py").as_uri()
    big = "".join(f"def function_{i}(a, b):\n    return a + b * {i}\n\n" for i in range(120_000))
    assert len(big) > 5_000_000
    open_doc(client, big_uri, big + "value = ")
    started = time.perf_counter()
    result = await inline(client, big_uri, big.count("\n"), 8)
    assert result.items[0].insert_text == X48
    assert time.perf_counter() - started < 10
    # and the server is still fine
    assert (await inline(client, uri, 0, 8)).items[0].insert_text == X48
    assert (await status(client))["state"] == "ready"


async def test_a_missing_model_is_explained_and_the_server_stays_up(start_server, tmp_path):
    missing = tmp_path / "models" / "codellama-7b.Q4_K_M.gguf"
    client = await start_server(model=missing)
    current = await wait_for_state(client, {"failed", "empty"})
    assert current["state"] == "empty"
    errors = [m.message for m in client.messages if m.type == types.MessageType.Error]
    assert errors and "model file not found" in errors[0] and "--model" in errors[0]
    uri = (tmp_path / "a.py").as_uri()
    open_doc(client, uri, "value = ")
    assert (await inline(client, uri, 0, 8)).items == ()
    assert (await complete(client, uri, 0, 8)).items == ()


async def test_a_corrupt_model_is_explained(start_server, tmp_path):
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 4000)
    client = await start_server(model=corrupt)
    assert (await wait_for_state(client, {"failed"}))["state"] == "failed"
    errors = [m.message for m in client.messages if m.type == types.MessageType.Error]
    assert errors and "could not load the model" in errors[0]


async def test_no_model_offline_says_how_to_get_one(start_server, tmp_path):
    client = await start_server()
    await wait_for_state(client, {"empty"})
    errors = [m.message for m in client.messages if m.type == types.MessageType.Error]
    assert errors, client.messages
    assert "cl-lsp download" in errors[0] and "model.path" in errors[0]


async def test_settings_are_validated_and_applied(start_server, x_model, tmp_path):
    client = await start_server(
        model=x_model, options={"completion": {"maxTokensSingleLine": "lots"}}
    )
    warnings = [m.message for m in client.messages if m.type == types.MessageType.Warning]
    assert any("completion.maxTokensSingleLine" in message for message in warnings)
    uri = (tmp_path / "a.py").as_uri()
    open_doc(client, uri, "value = ")
    assert (await inline(client, uri, 0, 8)).items[0].insert_text == X48  # default kept
    client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(
            settings={"cl-lsp": {"completion": {"maxTokensSingleLine": 5, "temperature": -1}}}
        )
    )
    change(client, uri, 2, (0, 8), (0, 8), "1 +")
    assert (await inline(client, uri, 0, 11)).items[0].insert_text == " x" * 4
    warnings = [m.message for m in client.messages if m.type == types.MessageType.Warning]
    assert any("completion.temperature" in message for message in warnings)


async def test_default_model_is_downloaded_once_with_progress(start_server, x_model, tmp_path):
    from hubmock import serve_hub

    from cl_lsp.models import DEFAULT_FILE, DEFAULT_REPO

    with serve_hub({(DEFAULT_REPO, DEFAULT_FILE): x_model}) as hub:
        hub.release.clear()  # hold the download half-way
        env = offline_env(tmp_path, HF_ENDPOINT=hub.endpoint)
        del env["HF_HUB_OFFLINE"]
        client = await start_server(env=env, wait_ready=False)
        uri = (tmp_path / "a.py").as_uri()
        open_doc(client, uri, "value = ")
        while not hub.file_requests("GET"):
            await asyncio.sleep(0.05)
        # while the model is still downloading, requests get an empty answer at once
        started = time.perf_counter()
        assert (await inline(client, uri, 0, 8)).items == ()
        assert time.perf_counter() - started < 2
        assert (await status(client))["loading"]
        hub.release.set()
        ready = await wait_for_state(client, {"ready", "failed"})
        assert ready["state"] == "ready", client.messages
        assert (await inline(client, uri, 0, 8)).items[0].insert_text == X48
        messages = [getattr(v, "message", "") or "" for v in progress_messages(client)]
        assert any("downloading" in message for message in messages)
        assert len(hub.file_requests("GET")) == 1


async def test_accepting_runs_the_items_command_and_a_partial_accept_reuses_the_rest(
    start_server, x_model, tmp_path
):
    client = await start_server(model=x_model)
    uri = (tmp_path / "accept.py").as_uri()
    open_doc(client, uri, "value = ")
    (item,) = (await inline(client, uri, 0, 8)).items
    assert item.command is not None and item.command.command == "cl-lsp.accept"
    # The editor accepts one word (" x"), inserts it, and runs the item's command.
    change(client, uri, 2, (0, 8), (0, 8), " x")
    await asyncio.wait_for(
        client.workspace_execute_command_async(
            types.ExecuteCommandParams(
                command=item.command.command, arguments=item.command.arguments
            )
        ),
        10,
    )
    (rest,) = (await inline(client, uri, 0, 10)).items
    assert rest.insert_text == X48[2:]  # the rest of the shown suggestion, no new generation
    current = await status(client)
    assert current["accepted"] == 1
    assert current["counters"]["generationsStarted"] == 1
    assert current["recent"][-1]["outcome"] == "typed_ahead"


async def test_notifications_the_server_does_not_know_are_ignored(start_server, x_model, tmp_path):
    client = await start_server(model=x_model)
    uri = (tmp_path / "n.py").as_uri()
    open_doc(client, uri, "value = ")
    for method, params in [
        ("textDocument/didSave", {"textDocument": {"uri": uri}}),
        ("$/setTrace", {"value": "verbose"}),
        ("workspace/didChangeWatchedFiles", {"changes": []}),
        ("workspace/didChangeWorkspaceFolders", {"event": {"added": [], "removed": []}}),
        ("nvim/someExtension", {"x": 1}),
    ]:
        client.protocol._send_data({"jsonrpc": "2.0", "method": method, "params": params})
    assert (await inline(client, uri, 0, 8)).items[0].insert_text == X48
    assert not [m for m in client.messages if m.type <= types.MessageType.Warning]
    assert (await status(client))["state"] == "ready"
