"""Code actions end to end: `cl-lsp --stdio`, the real llama.cpp engine, SmolLM2-Instruct.

Listing never touches the model; resolving writes with it; edits carry the document version
and are refused once the document has changed.
"""

from __future__ import annotations

import ast
import asyncio
import time

import pytest
from conftest import status
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from test_server import inline, open_doc

ACTIONS = {"actions": {"maxTokens": 160}}

PY = """import math


def area(radius):
    return math.pi * radius ** 2


class Shape:
    def scale(self, factor):
        self.size = self.size * factor
        return self
"""
JS = """const factor = 2;

function double(values) {
  return values.map((v) => v * factor);
}
"""
GO = """package shapes

func Area(width int, height int) int {
	return width * height
}
"""
RUST = """fn area(width: u32, height: u32) -> u32 {
    width * height
}
"""
SOURCES = {"python": (PY, "py"), "javascript": (JS, "js"), "go": (GO, "go"), "rust": (RUST, "rs")}
# A line inside each sample's function, and the comment its language writes.
INSIDE = {"python": 4, "javascript": 3, "go": 3, "rust": 1}
COMMENT = {"python": "#", "javascript": "//", "go": "//", "rust": "//"}


def at(line: int, character: int = 0) -> types.Position:
    return types.Position(line=line, character=character)


async def code_actions(
    client,
    uri: str,
    start: types.Position,
    end: types.Position | None = None,
    diagnostics: list[types.Diagnostic] | None = None,
    only: list[str] | None = None,
) -> list[types.CodeAction]:
    result = await asyncio.wait_for(
        client.text_document_code_action_async(
            types.CodeActionParams(
                text_document=types.TextDocumentIdentifier(uri=uri),
                range=types.Range(start=start, end=end or start),
                context=types.CodeActionContext(diagnostics=diagnostics or [], only=only),
            )
        ),
        30,
    )
    return result or []


def pick(actions: list[types.CodeAction], title_start: str) -> types.CodeAction:
    found = [a for a in actions if a.title.startswith(f"cl-lsp: {title_start}")]
    assert found, [a.title for a in actions]
    return found[0]


async def resolve(client, action: types.CodeAction, timeout: float = 120) -> types.CodeAction:
    return await asyncio.wait_for(client.code_action_resolve_async(action), timeout)


def text_edits(edit: types.WorkspaceEdit, uri: str, version: int) -> list[types.TextEdit]:
    (change,) = edit.document_changes
    assert change.text_document.uri == uri and change.text_document.version == version
    return list(change.edits)


def apply(text: str, edits: list[types.TextEdit]) -> str:
    lines = text.split("\n")
    starts = [0]
    for line in lines[:-1]:
        starts.append(starts[-1] + len(line) + 1)
    for edit in sorted(
        edits, key=lambda e: (e.range.start.line, e.range.start.character), reverse=True
    ):
        begin = starts[edit.range.start.line] + edit.range.start.character
        end = starts[edit.range.end.line] + edit.range.end.character
        text = text[:begin] + edit.new_text + text[end:]
    return text


def _get(value, name: str):
    return value.get(name) if isinstance(value, dict) else getattr(value, name, None)


def shown(client, kind: types.MessageType) -> list[str]:
    return [m.message for m in client.messages if m.type == kind]


def open_notes(client, tmp_path) -> str:
    """A document without a grammar, where the noise models' " x x x" is a fine suggestion
    (in Python the syntax check rightly drops it)."""
    uri = (tmp_path / "notes.txt").as_uri()
    open_doc(client, uri, "def f():\n    \n", language="plaintext")
    return uri


def open_source(client, tmp_path, language: str) -> tuple[str, str]:
    text, extension = SOURCES[language]
    uri = (tmp_path / f"sample.{extension}").as_uri()
    open_doc(client, uri, text, language=language)
    return uri, text


async def test_listing_is_instant_and_never_touches_the_model(
    start_server, smollm2_model, tmp_path
):
    client = await start_server(model=smollm2_model, options=ACTIONS)
    uri, _ = open_source(client, tmp_path, "python")
    problem = types.Diagnostic(
        range=types.Range(start=at(9, 8), end=at(9, 17)),
        message='Cannot access attribute "size" for class "Shape"',
        source="Pyright",
        severity=types.DiagnosticSeverity.Error,
    )
    started = time.perf_counter()
    actions = await code_actions(client, uri, at(9, 12), diagnostics=[problem])
    listed_in = time.perf_counter() - started
    titles = [a.title for a in actions]
    assert titles == [
        'cl-lsp: Fix: Cannot access attribute "size" for class "Shape"',
        "cl-lsp: Explain method scale",
        "cl-lsp: Fix method scale",
        "cl-lsp: Add docstring to method scale",
        "cl-lsp: Write unit tests for method scale",
    ]
    assert all(a.edit is None and a.command is None and a.data for a in actions)
    assert actions[0].kind == types.CodeActionKind.QuickFix
    assert list(actions[0].diagnostics) == [problem]
    assert listed_in < 2.0
    # only= filters by kind hierarchy
    fixes = await code_actions(client, uri, at(9, 12), only=["quickfix"])
    assert [a.title for a in fixes] == ["cl-lsp: Fix method scale"]
    # a selection is its own target
    selected = await code_actions(client, uri, at(3, 0), at(5, 0))
    assert "cl-lsp: Explain the selection" in [a.title for a in selected]
    current = await status(client)
    assert current["actionsStarted"] == 0
    assert current["counters"]["generationsStarted"] == 0


async def test_an_empty_file_offers_nothing(start_server, smollm2_model, tmp_path):
    client = await start_server(model=smollm2_model, options=ACTIONS)
    uri = (tmp_path / "empty.py").as_uri()
    open_doc(client, uri, "")
    assert await code_actions(client, uri, at(0)) == []


@pytest.mark.parametrize("language", ["python", "javascript", "go", "rust"])
async def test_explain_inserts_a_comment_above_in_the_language_syntax(
    start_server, smollm2_model, tmp_path, language
):
    client = await start_server(model=smollm2_model, options=ACTIONS)
    uri, text = open_source(client, tmp_path, language)
    line = INSIDE[language]
    action = pick(await code_actions(client, uri, at(line, 2)), "Explain")
    resolved = await resolve(client, action)
    assert resolved.edit is not None, client.messages
    (edit,) = text_edits(resolved.edit, uri, 1)
    assert edit.range.start == edit.range.end and edit.range.start.character == 0
    new = apply(text, [edit])
    inserted = edit.new_text.rstrip("\n").split("\n")
    assert inserted and all(row.lstrip().startswith(COMMENT[language]) for row in inserted)
    target_line = text.split("\n")[edit.range.start.line]
    indent = target_line[: len(target_line) - len(target_line.lstrip())]
    assert all(row.startswith(indent + COMMENT[language]) for row in inserted)
    assert new.replace(edit.new_text, "", 1) == text  # nothing else changed
    explained = shown(client, types.MessageType.Info)
    assert any(len(m) > 20 for m in explained), client.messages
    if language == "python":
        ast.parse(new)


@pytest.mark.parametrize(
    ("language", "opening"),
    [("python", '"""'), ("javascript", "/**"), ("go", "// Area"), ("rust", "///")],
)
async def test_document_uses_the_language_doc_syntax(
    start_server, smollm2_model, tmp_path, language, opening
):
    client = await start_server(model=smollm2_model, options=ACTIONS)
    uri, text = open_source(client, tmp_path, language)
    action = pick(await code_actions(client, uri, at(INSIDE[language], 2)), "Add ")
    resolved = await resolve(client, action)
    assert resolved.edit is not None, client.messages
    edits = text_edits(resolved.edit, uri, 1)
    new = apply(text, edits)
    assert new != text
    (edit,) = edits
    assert edit.new_text.lstrip().startswith(opening), edit.new_text
    if language == "python":
        tree = ast.parse(new)
        (function,) = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
        assert ast.get_docstring(function)


async def test_fix_replaces_the_target_and_tests_go_after_it(start_server, smollm2_model, tmp_path):
    client = await start_server(model=smollm2_model, options=ACTIONS)
    text = PY.replace("radius ** 2", "radius ^ 2")  # XOR: a bug to fix
    uri = (tmp_path / "buggy.py").as_uri()
    open_doc(client, uri, text)
    actions = await code_actions(client, uri, at(4, 8))
    fixed = await resolve(client, pick(actions, "Fix function"))
    assert fixed.edit is not None, client.messages
    (edit,) = text_edits(fixed.edit, uri, 1)
    assert (edit.range.start, edit.range.end) == (at(3, 0), at(4, len(text.split("\n")[4])))
    assert edit.new_text.strip() and "```" not in edit.new_text
    tests = await resolve(client, pick(actions, "Write unit tests"))
    assert tests.edit is not None, client.messages
    (edit,) = text_edits(tests.edit, uri, 1)
    assert edit.range.start == edit.range.end and edit.range.start.line >= 4
    assert "```" not in edit.new_text
    new = apply(text, [edit])
    assert new.startswith(text[: text.index("    return math.pi")])


async def test_a_fix_from_a_diagnostic_puts_it_in_the_prompt(start_server, smollm2_model, tmp_path):
    client = await start_server(model=smollm2_model, options=ACTIONS)
    uri, _ = open_source(client, tmp_path, "python")
    problem = types.Diagnostic(
        range=types.Range(start=at(4, 11), end=at(4, 15)),
        message='"math" is possibly unbound',
        source="Pyright",
        code="reportPossiblyUnbound",
    )
    actions = await code_actions(client, uri, at(4, 12), diagnostics=[problem])
    action = pick(actions, "Fix: ")
    await resolve(client, action)
    (record,) = (await status(client))["actions"]
    assert record["kind"] == "fix"
    assert '"math" is possibly unbound' in record["prompt"]
    assert "reportPossiblyUnbound" in record["prompt"]
    assert record["generatedTokens"] > 0


async def test_an_edit_is_refused_once_the_document_changed(start_server, smollm2_model, tmp_path):
    client = await start_server(model=smollm2_model, options=ACTIONS)
    uri, text = open_source(client, tmp_path, "python")
    action = pick(await code_actions(client, uri, at(4, 8)), "Explain")
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
            content_changes=[types.TextDocumentContentChangeWholeDocument(text="x = 1\n" + text)],
        )
    )
    resolved = await resolve(client, action)
    assert resolved.edit is None
    assert any("changed" in m for m in shown(client, types.MessageType.Warning))
    assert (await status(client))["actionsStarted"] == 0


async def test_a_change_while_the_model_writes_is_refused(start_server, x_model, tmp_path):
    client = await start_server(model=x_model, options={"actions": {"maxTokens": 3000}})
    uri, text = open_source(client, tmp_path, "python")
    action = pick(await code_actions(client, uri, at(4, 8)), "Explain")
    pending = asyncio.ensure_future(resolve(client, action))
    await wait_writing(client)
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
            content_changes=[types.TextDocumentContentChangeWholeDocument(text=text + "\n")],
        )
    )
    # the x model never stops by itself: cancel through the progress the server shows
    await cancel_progress(client)
    resolved = await asyncio.wait_for(pending, 30)
    assert resolved.edit is None


async def wait_writing(client, timeout: float = 30) -> None:
    deadline = time.perf_counter() + timeout
    while not (await status(client))["writing"]:
        assert time.perf_counter() < deadline, "the action never started writing"
        await asyncio.sleep(0.01)


async def cancel_progress(client) -> None:
    tokens = [
        token
        for token, values in client.progress_reports.items()
        if any(getattr(v, "cancellable", False) for v in values)
    ]
    assert tokens, client.progress_reports
    client.window_work_done_progress_cancel(types.WorkDoneProgressCancelParams(token=tokens[-1]))


async def test_cancelling_stops_the_writing_and_completions_keep_priority(
    start_server, slow_x_model, tmp_path
):
    client = await start_server(model=slow_x_model, options={"actions": {"maxTokens": 3000}})
    uri, _ = open_source(client, tmp_path, "python")
    action = pick(await code_actions(client, uri, at(4, 8)), "Explain")
    future = asyncio.ensure_future(
        client.protocol.send_request_async(
            types.CODE_ACTION_RESOLVE, action, msg_id="action-to-cancel"
        )
    )
    await wait_writing(client)
    # A completion while the action writes is answered by the model, not after the action.
    started = time.perf_counter()
    answer = await inline(client, open_notes(client, tmp_path), 1, 4, timeout=30)
    assert answer.items and time.perf_counter() - started < 10
    cancelled_at = time.perf_counter()
    client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id="action-to-cancel"))
    with pytest.raises(JsonRpcException):
        await asyncio.wait_for(future, 10)
    for _ in range(500):
        current = await status(client)
        if not current["writing"]:
            break
        await asyncio.sleep(0.01)
    assert not current["writing"] and time.perf_counter() - cancelled_at < 2
    assert current["actions"][-1]["outcome"] == "cancelled"
    assert current["actions"][-1]["generatedTokens"] < 3000


async def test_without_resolve_support_the_command_applies_the_edit(
    start_server, smollm2_model, tmp_path
):
    client = await start_server(model=smollm2_model, options=ACTIONS, resolve=False)
    applied: list[types.ApplyWorkspaceEditParams] = []

    @client.feature(types.WORKSPACE_APPLY_EDIT)
    def apply_edit(params: types.ApplyWorkspaceEditParams) -> types.ApplyWorkspaceEditResult:
        applied.append(params)
        return types.ApplyWorkspaceEditResult(applied=True)

    uri, text = open_source(client, tmp_path, "python")
    # Read the answer as JSON: lsprotocol's client-side parser takes a code action that has a
    # command for a Command (the union's first member) and garbles it.
    answer: asyncio.Future = asyncio.get_running_loop().create_future()
    client.protocol._request_futures["raw-actions"] = answer
    client.protocol._send_data(
        {
            "jsonrpc": "2.0",
            "id": "raw-actions",
            "method": types.TEXT_DOCUMENT_CODE_ACTION,
            "params": {
                "textDocument": {"uri": uri},
                "range": {"start": {"line": 4, "character": 8}, "end": {"line": 4, "character": 8}},
                "context": {"diagnostics": []},
            },
        }
    )
    actions = await asyncio.wait_for(answer, 30)
    (action,) = [a for a in actions if str(_get(a, "title")).startswith("cl-lsp: Add docstring")]
    command = _get(action, "command")
    assert _get(command, "command") == "cl-lsp.runAction" and _get(action, "edit") is None
    started = time.perf_counter()
    await asyncio.wait_for(
        client.workspace_execute_command_async(
            types.ExecuteCommandParams(
                command=_get(command, "command"), arguments=_get(command, "arguments")
            )
        ),
        30,
    )
    answered = time.perf_counter() - started
    # The command answers at once (eglot waits for it); the edit comes when it is written.
    assert not applied and answered < 2, answered
    deadline = time.perf_counter() + 120
    while not applied:
        assert time.perf_counter() < deadline, "the edit was never applied"
        await asyncio.sleep(0.05)
    (params,) = applied
    new = apply(text, text_edits(params.edit, uri, 1))
    (function,) = [n for n in ast.parse(new).body if isinstance(n, ast.FunctionDef)]
    assert ast.get_docstring(function)


async def test_a_target_larger_than_the_window_is_refused_clearly(
    start_server, smollm2_model, tmp_path
):
    client = await start_server(model=smollm2_model, options={"actions": {"nCtx": 512}})
    body = "".join(f"    total += compute_{n}(value, {n})\n" for n in range(200))
    uri = (tmp_path / "big.py").as_uri()
    open_doc(client, uri, f"def big(value):\n    total = 0\n{body}    return total\n")
    action = pick(await code_actions(client, uri, at(3, 4)), "Explain")
    resolved = await resolve(client, action)
    assert resolved.edit is None
    warnings = shown(client, types.MessageType.Warning)
    assert any("smaller" in m for m in warnings), client.messages
    assert (await status(client))["actionsStarted"] == 0


async def test_no_model_lists_actions_and_explains_on_resolve(start_server, tmp_path):
    client = await start_server(model=tmp_path / "missing.gguf")
    uri, _ = open_source(client, tmp_path, "python")
    action = pick(await code_actions(client, uri, at(4, 8)), "Explain")
    resolved = await resolve(client, action)
    assert resolved.edit is None
    errors = shown(client, types.MessageType.Error)
    assert any("Explain function area: model file not found" in m for m in errors), errors
    assert (await status(client))["actionsStarted"] == 0


async def test_actions_model_writes_actions_while_the_base_model_completes(
    start_server, x_model, smollm2_model, tmp_path
):
    client = await start_server(
        model=x_model, options={"actions": {"model": str(smollm2_model), "maxTokens": 96}}
    )
    uri, _ = open_source(client, tmp_path, "python")
    resolved = await resolve(client, pick(await code_actions(client, uri, at(4, 8)), "Explain"))
    assert resolved.edit is not None, client.messages
    (edit,) = text_edits(resolved.edit, uri, 1)
    words = edit.new_text.replace("#", " ").split()
    assert len(set(words)) > 5  # SmolLM2's prose, not the base model's " x x x"
    completion = await inline(client, open_notes(client, tmp_path), 1, 4)
    assert completion.items and set(completion.items[0].insert_text.split()) == {"x"}


async def test_a_missing_actions_model_is_explained(start_server, x_model, tmp_path):
    client = await start_server(
        model=x_model, options={"actions": {"model": str(tmp_path / "instruct.gguf")}}
    )
    uri, _ = open_source(client, tmp_path, "python")
    resolved = await resolve(client, pick(await code_actions(client, uri, at(4, 8)), "Explain"))
    assert resolved.edit is None
    errors = shown(client, types.MessageType.Error)
    assert any("actions model not found" in m and "actions.model" in m for m in errors), errors
    # completions unaffected
    assert (await inline(client, open_notes(client, tmp_path), 1, 4)).items
