"""Code actions under stress (issue 12): chosen while the model loads (bug 3), data round-
tripped through a null-stripping client (bug 2), a storm of edits, a stale document.

The model load is held half-way with the loopback hub stand-in, so "while loading" is not a
race: the default model's download waits until the test releases it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
from conftest import offline_env, status, wait_for_state
from lsprotocol import types
from test_code_actions import (
    apply,
    at,
    code_actions,
    open_source,
    pick,
    resolve,
    shown,
    text_edits,
)
from test_server import inline, open_doc, progress_messages

from cl_lsp.actions import ActionKind, Diagnostic
from cl_lsp.actions.jobs import ActionRequest

SMALL = {"actions": {"maxTokens": 16}}


def explained(edited: str, text: str) -> bool:
    """Explain's edit: comment lines added, the code itself untouched."""
    return edited != text and [
        line for line in edited.split("\n") if not line.startswith("# ")
    ] == text.split("\n")


@contextlib.asynccontextmanager
async def held_download(start_server, tmp_path, model, options=None):
    """A server whose model (the default one, from the loopback hub) is still downloading."""
    from hubmock import serve_hub

    from cl_lsp.models import DEFAULT_FILE, DEFAULT_REPO

    with serve_hub({(DEFAULT_REPO, DEFAULT_FILE): model}) as hub:
        hub.release.clear()
        env = offline_env(tmp_path, HF_ENDPOINT=hub.endpoint)
        del env["HF_HUB_OFFLINE"]
        client = await start_server(env=env, wait_ready=False, options=options)
        deadline = time.perf_counter() + 30
        while not hub.file_requests("GET"):
            assert time.perf_counter() < deadline, "the download never started"
            await asyncio.sleep(0.05)
        try:
            yield client, hub
        finally:
            hub.release.set()


async def test_an_action_chosen_while_the_model_loads_waits_then_runs(
    start_server, x_model, tmp_path
):
    async with held_download(start_server, tmp_path, x_model, SMALL) as (client, hub):
        uri, text = open_source(client, tmp_path, "python")
        pending = asyncio.ensure_future(
            resolve(client, pick(await code_actions(client, uri, at(4, 8)), "Explain"))
        )
        await asyncio.sleep(1.0)
        assert not pending.done(), "the action gave up while the model was loading"
        assert (await status(client))["loading"]
        hub.release.set()
        resolved = await asyncio.wait_for(pending, 60)
    assert resolved.edit is not None, client.messages
    assert explained(apply(text, text_edits(resolved.edit, uri, 1)), text)
    assert (await status(client))["actions"][-1]["outcome"] == "edit"
    reports = [getattr(v, "message", "") or "" for v in progress_messages(client)]
    assert any("waiting for the model to load" in message for message in reports), reports
    assert shown(client, types.MessageType.Error) == []


async def test_an_action_on_actions_model_is_not_cancelled_by_the_first_load(
    start_server, x_model, slow_x_model, tmp_path
):
    """With actions.model set, the completion model's first load used to cancel the action
    being written (the unload path set its cancel flag)."""
    options = {"actions": {"model": str(slow_x_model), "maxTokens": 48}}
    async with held_download(start_server, tmp_path, x_model, options) as (client, hub):
        uri, _ = open_source(client, tmp_path, "python")
        pending = asyncio.ensure_future(
            resolve(client, pick(await code_actions(client, uri, at(4, 8)), "Explain"))
        )
        deadline = time.perf_counter() + 30
        while not (await status(client))["writing"]:
            assert time.perf_counter() < deadline, "the action never started writing"
            await asyncio.sleep(0.01)
        hub.release.set()  # the completion model now loads while the action writes
        resolved = await asyncio.wait_for(pending, 120)
        assert (await wait_for_state(client, {"ready", "failed", "empty"}))["state"] == "ready"
    record = (await status(client))["actions"][-1]
    assert record["outcome"] == "edit", (record, client.messages)
    assert resolved.edit is not None


async def test_an_invoked_completion_waits_for_the_load(start_server, x_model, tmp_path):
    async with held_download(start_server, tmp_path, x_model) as (client, hub):
        uri = (tmp_path / "notes.txt").as_uri()
        open_doc(client, uri, "value = ", language="plaintext")
        invoked = asyncio.ensure_future(
            asyncio.wait_for(
                client.text_document_inline_completion_async(
                    types.InlineCompletionParams(
                        text_document=types.TextDocumentIdentifier(uri=uri),
                        position=types.Position(line=0, character=8),
                        context=types.InlineCompletionContext(
                            trigger_kind=types.InlineCompletionTriggerKind.Invoked
                        ),
                    )
                ),
                60,
            )
        )
        started = time.perf_counter()
        assert (await inline(client, uri, 0, 8)).items == ()  # automatic: empty at once
        assert time.perf_counter() - started < 2
        await asyncio.sleep(0.5)
        assert not invoked.done()
        hub.release.set()
        items = (await invoked).items
    assert items and items[0].insert_text.startswith(" x x x"), items


async def test_an_action_during_a_storm_of_edits(start_server, x_model, tmp_path):
    """Edits to another document do not disturb an action; edits to its own make it refuse
    (never an edit on text it did not see)."""
    client = await start_server(
        model=x_model, options={"actions": {"maxTokens": 16}, "completion": {"debounceMs": 0}}
    )
    uri, text = open_source(client, tmp_path, "python")
    other = (tmp_path / "other.txt").as_uri()
    open_doc(client, other, "", language="plaintext")
    action = pick(await code_actions(client, uri, at(4, 8)), "Explain")
    pending = asyncio.ensure_future(resolve(client, action))
    typed = ""
    for version in range(2, 202):
        client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=other, version=version),
                content_changes=[
                    types.TextDocumentContentChangePartial(
                        range=types.Range(start=at(0, len(typed)), end=at(0, len(typed))), text="a"
                    )
                ],
            )
        )
        typed += "a"
        if version % 20 == 0:
            await asyncio.sleep(0)
    resolved = await asyncio.wait_for(pending, 60)
    assert resolved.edit is not None, client.messages
    assert explained(apply(text, text_edits(resolved.edit, uri, 1)), text)

    action = pick(await code_actions(client, uri, at(4, 8)), "Explain")
    pending = asyncio.ensure_future(resolve(client, action))
    current = text
    for version in range(2, 52):
        current += "#"
        client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
                content_changes=[types.TextDocumentContentChangeWholeDocument(text=current)],
            )
        )
    resolved = await asyncio.wait_for(pending, 60)
    assert resolved.edit is None
    assert (await status(client))["actions"][-1]["outcome"] == "stale"
    assert any("changed" in m for m in shown(client, types.MessageType.Warning))


def test_action_data_has_no_nulls_and_survives_their_removal():
    """Bug 2: Neovim 0.7 drops null fields before sending an action back to resolve."""
    request = ActionRequest(
        ActionKind.FIX,
        "Fix this block",
        "file:///a.py",
        3,
        0,
        10,
        "block",
        None,
        None,
        (Diagnostic(0, "boom"),),
    )
    data = request.to_data()

    def nulls(value) -> int:
        if isinstance(value, dict):
            return sum(nulls(v) for v in value.values()) + list(value.values()).count(None)
        if isinstance(value, list):
            return sum(nulls(v) for v in value)
        return 0

    assert nulls(data) == 0
    assert ActionRequest.from_data(data) == request
    del data["cl-lsp"]["diagnostics"]
    assert ActionRequest.from_data(data).diagnostics == ()


@pytest.mark.parametrize(
    "field, value",
    [
        ("version", "3"),
        ("start", None),
        ("uri", 7),
        ("name", 5),
        ("diagnostics", [{"line": "x", "message": 1}]),
    ],
)
def test_action_data_of_the_wrong_type_is_refused(field, value):
    request = ActionRequest(
        ActionKind.EXPLAIN, "Explain f", "file:///a.py", 1, 0, 4, "function", "f", "python"
    )
    data = request.to_data()
    data["cl-lsp"][field] = value
    with pytest.raises(ValueError, match="not a cl-lsp code action"):
        ActionRequest.from_data(data)
