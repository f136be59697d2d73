"""End to end on real inference servers: `cl-lsp --stdio` with engine.kind llama-server (llama.cpp's
own server, built by tests/assets.py) and openai (llama-cpp-python's OpenAI-compatible server),
serving the tiny test models on loopback. The same answers as the local engine, token-exact
prompts where the server takes them, the server's cache visible in its own counters, and a
superseded generation's stream closed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import complete_json, status
from http_servers import llama_server, openai_server
from test_server import X48, change, inline, open_doc

from cl_lsp.engine import Vocabulary

SOURCE = "def f(y):\n    return y\n\nvalue = "


@pytest.fixture
def llama_x(x_model: Path, tmp_path: Path) -> Iterator[str]:
    with llama_server(x_model, tmp_path / "llama-server.log") as base:
        yield base


@pytest.fixture
def openai_x(x_model: Path, tmp_path: Path) -> Iterator[str]:
    with openai_server(x_model, tmp_path / "openai-server.log") as base:
        yield base


def _complete_json(tmp_path: Path, *args: str) -> dict:
    return complete_json(tmp_path, SOURCE, 3, 8, *args)


def test_complete_sends_llama_server_the_local_engines_token_ids(tmp_path, x_model, llama_x):
    local = _complete_json(tmp_path, "--model", str(x_model))
    remote = _complete_json(
        tmp_path, "--model", str(x_model), "--engine", "llama-server", "--url", llama_x
    )
    assert remote["engine"] == "llama-server" and remote["prompt_form"] == "tokens"
    assert remote["prompt_tokens"] == local["prompt_tokens"]
    assert remote["completion"] == local["completion"] != ""
    # The server says it received exactly that many prompt tokens, all evaluated (a fresh slot).
    assert remote["server"]["promptTokens"] == len(local["prompt_tokens"])
    assert remote["evaluated_tokens"] == len(local["prompt_tokens"])


def test_without_a_local_vocabulary_the_servers_tokenizer_gives_the_same_ids(
    tmp_path, x_model, llama_x
):
    local = _complete_json(tmp_path, "--model", str(x_model))
    remote = _complete_json(tmp_path, "--engine", "llama-server", "--url", llama_x)
    assert remote["model"] is None and remote["prompt_form"] == "tokens"
    assert remote["prompt_tokens"] == local["prompt_tokens"]
    assert remote["completion"] == local["completion"]


def test_complete_falls_back_to_text_on_a_server_that_refuses_token_ids(
    tmp_path, x_model, openai_x
):
    answer = _complete_json(
        tmp_path, "--model", str(x_model), "--engine", "openai", "--url", openai_x
    )
    assert answer["prompt_form"] == "text"
    assert answer["prompt_text"].startswith("▁<PRE>▁<SUF>")
    assert answer["completion"] == " x" * 47  # as the local engine answers (X48)


async def test_the_editor_gets_llama_servers_answers_and_its_cache_holds(
    start_server, x_model, llama_x, tmp_path
):
    client = await start_server(
        model=x_model, options={"engine": {"kind": "llama-server", "url": llama_x}}
    )
    ready = await status(client)
    assert (ready["engine"], ready["prompt"], ready["health"]["state"]) == (
        "llama-server",
        "tokens",
        "ok",
    )
    # Plain text: `value = 1 x x x` would not parse as Python, and an answer cut by the token
    # cap is shown only if it does.
    uri = (tmp_path / "a.txt").as_uri()
    open_doc(client, uri, SOURCE, language="plaintext")
    first = await inline(client, uri, 3, 8)
    assert [item.insert_text for item in first.items] == [X48]
    after_first = (await status(client))["server"]
    assert after_first["promptTokens"] == after_first["evaluatedTokens"] > 10

    # A keystroke at the cursor: SPM keeps everything before it; the server re-evaluates
    # only the tail (its own counters say so).
    change(client, uri, 2, (3, 8), (3, 8), "1")
    second = await inline(client, uri, 3, 9)
    assert second.items
    after = (await status(client))["server"]
    evaluated = after["evaluatedTokens"] - after_first["evaluatedTokens"]
    received = after["promptTokens"] - after_first["promptTokens"]
    assert received > 10 and evaluated <= 3, after


@pytest.mark.parametrize("reuse", [64, 0])
async def test_after_a_cursor_move_llama_server_shifts_the_cached_suffix(
    start_server, x_model, llama_x, tmp_path, reuse
):
    """Moving down 10 lines drops them from the suffix's start: with completion.cacheReuse the
    server moves the rest of the cached prompt left (its n_cache_reuse) and evaluates only the
    lines passed over; without it, everything after the suffix's first tokens again."""
    client = await start_server(
        model=x_model,
        options={
            "engine": {"kind": "llama-server", "url": llama_x},
            "completion": {"cacheReuse": reuse},
        },
    )
    text = "".join(f"def f{i}(a, b):\n    return a * {i} + b\n" for i in range(40))
    uri = (tmp_path / "a.txt").as_uri()
    open_doc(client, uri, text, language="plaintext")
    lines = text.split("\n")
    await inline(client, uri, 40, len(lines[40]))
    before = (await status(client))["server"]
    await inline(client, uri, 50, len(lines[50]))
    after = (await status(client))["server"]
    received = after["promptTokens"] - before["promptTokens"]
    evaluated = after["evaluatedTokens"] - before["evaluatedTokens"]
    vocab = Vocabulary(x_model)
    passed_over = vocab.count("\n".join(lines[40:50]))
    vocab.close()
    assert received > 400, after
    if reuse:
        assert evaluated <= passed_over + 16, (evaluated, passed_over, received)
    else:
        assert evaluated > received // 2, (evaluated, received)


async def test_a_superseded_generation_stops_on_the_server(start_server, slow_x_model, tmp_path):
    with llama_server(slow_x_model, tmp_path / "llama-server.log", n_ctx=2048) as base:
        client = await start_server(
            model=slow_x_model,
            options={
                "engine": {"kind": "llama-server", "url": base},
                "completion": {"maxTokens": 1500, "debounceMs": 0},
            },
        )
        uri = (tmp_path / "a.txt").as_uri()
        open_doc(client, uri, "notes:\n", language="plaintext")
        first = asyncio.ensure_future(inline(client, uri, 1, 0))
        deadline = time.monotonic() + 30
        while (await status(client))["inFlight"] == 0:
            assert time.monotonic() < deadline, "the first generation never started"
            await asyncio.sleep(0.01)
        change(client, uri, 2, (1, 0), (1, 0), "a")
        second = asyncio.ensure_future(inline(client, uri, 1, 1))
        await asyncio.wait_for(first, 30)  # answered (empty) at once: superseded
        await asyncio.wait_for(second, 120)
        state = await status(client)
        assert state["server"]["streamsClosed"] >= 1
        assert state["counters"]["generationsCancelled"] >= 1
        assert state["maxInFlight"] == 1  # one document: never two generations at once


async def test_a_code_action_is_written_by_llama_servers_chat_endpoint(
    start_server, smollm2_model, tmp_path
):
    # SmolLM2-Instruct on llama-server: /v1/chat/completions applies the model's own chat
    # template; cl-lsp turns the answer into an edit as it does with the local engine.
    from test_code_actions import PY, apply, at, code_actions, pick, resolve, text_edits

    with llama_server(smollm2_model, tmp_path / "llama-server.log", n_ctx=2048) as base:
        client = await start_server(
            model=smollm2_model,
            options={
                "engine": {"kind": "llama-server", "url": base},
                "actions": {"maxTokens": 160},
            },
        )
        uri = (tmp_path / "shapes.py").as_uri()
        open_doc(client, uri, PY)
        action = pick(await code_actions(client, uri, at(4, 2)), "Explain")
        resolved = await resolve(client, action)
        assert resolved.edit is not None, client.messages
        (edit,) = text_edits(resolved.edit, uri, 1)
        inserted = edit.new_text.rstrip("\n").split("\n")
        assert inserted and all(row.lstrip().startswith("#") for row in inserted)
        assert apply(PY, [edit]).replace(edit.new_text, "", 1) == PY
        state = await status(client)
        assert state["actionsStarted"] == 1 and state["health"]["state"] == "ok"


async def test_the_editor_gets_answers_from_an_openai_server_that_takes_text(
    start_server, x_model, openai_x, tmp_path
):
    client = await start_server(
        model=x_model, options={"engine": {"kind": "openai", "url": openai_x}}
    )
    uri = (tmp_path / "a.py").as_uri()
    open_doc(client, uri, SOURCE)
    first = await inline(client, uri, 3, 8)
    assert [item.insert_text for item in first.items] == [X48]
    state = await status(client)
    # It refused the token ids once; text from then on, and nobody was bothered with it.
    assert state["prompt"] == "text" and state["server"]["textPrompts"] == 1
    assert state["health"]["state"] == "ok" and not client.messages
