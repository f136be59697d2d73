"""The code-action flow between LSP and the domain: offer, resolve, run.

Offering lists titled actions for a range without touching the model (`actions.jobs.offer`).
Resolving, or running the action's command in editors without resolve, has the model write
the action on the engine's writer thread (with progress the user can cancel) and turns the
result into a `WorkspaceEdit`; when there is none, the user is told why.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams

from ..actions import ActionKind, Diagnostic, Edit, TargetTooLarge
from ..actions.jobs import ActionRecord, ActionRequest, ActionResult, offer, write_action
from ..engine import EngineError
from ..errors import first_line
from ..languages import language_for
from .documents import Document, PositionError
from .progress import Progress

if TYPE_CHECKING:
    from .server import ClLanguageServer

log = logging.getLogger(__name__)

RUN_ACTION_COMMAND = "cl-lsp.runAction"
ACTION_KINDS = {
    ActionKind.FIX: types.CodeActionKind.QuickFix,
    ActionKind.DOCUMENT: types.CodeActionKind.RefactorRewrite,
    ActionKind.EXPLAIN: "refactor.cl-lsp.explain",
    ActionKind.TESTS: "refactor.cl-lsp.tests",
}


def offer_actions(
    ls: ClLanguageServer, params: types.CodeActionParams
) -> list[types.CodeAction] | None:
    """Titled actions for a selection or cursor; nothing here touches the model."""
    document = ls.documents.get(params.text_document.uri)
    if document is None or not ls.settings.actions.enabled:
        return None
    where, encoding = params.range, ls.position_encoding
    try:
        start = document.offset_at(where.start.line, where.start.character, encoding)
        end = document.offset_at(where.end.line, where.end.character, encoding)
    except PositionError as error:
        raise JsonRpcInvalidParams(f"codeAction: {error}") from error
    reported = list(params.context.diagnostics)
    diagnostics = [
        Diagnostic(d.range.start.line, d.message, d.source, None if d.code is None else str(d.code))
        for d in reported
    ]
    requests = offer(
        document.text,
        min(start, end),
        max(start, end),
        uri=document.uri,
        version=document.version,
        language=language_for(document.language_id, document.uri),
        diagnostics=diagnostics,
    )
    only = params.context.only or []
    actions = []
    for request in requests:
        kind = ACTION_KINDS[request.kind]
        if only and not any(kind == o or kind.startswith(f"{o}.") for o in only):
            continue
        data = request.to_data()
        action = types.CodeAction(
            title=f"cl-lsp: {request.title}",
            kind=kind,
            data=data,
            diagnostics=[reported[diagnostics.index(d)] for d in request.diagnostics] or None,
        )
        if not ls.resolve_edits:  # the editor runs the command, we apply the edit
            action.command = types.Command(
                title=action.title, command=RUN_ACTION_COMMAND, arguments=[data]
            )
        actions.append(action)
    return actions


def action_request(data: Any, method: str) -> ActionRequest:
    """The offered action inside `data` sent back by the editor; invalid params if it is not."""
    try:
        return ActionRequest.from_data(data)
    except ValueError as error:
        raise JsonRpcInvalidParams(f"{method}: {error}") from error


async def resolve_action(
    ls: ClLanguageServer, request: ActionRequest
) -> types.WorkspaceEdit | None:
    """Have the model write the action; the edit, or None after telling the user why."""
    record = ActionRecord(request.kind.value, request.title)
    ls.action_records.append(record)
    title = request.title
    document = ls.documents.get(request.uri)
    if document is None or document.version != request.version:
        return _refuse(
            ls,
            record,
            "stale",
            f"{title}: the document changed since the action was offered; run it again",
        )
    cancel = threading.Event()
    result = await _write(ls, request, document.text, record, cancel)
    if result is None:
        return None
    if cancel.is_set():
        return _refuse(ls, record, "cancelled", f"{title}: cancelled", types.MessageType.Info)
    if ls.documents.get(request.uri) is not document or document.version != (request.version):
        return _refuse(
            ls,
            record,
            "stale",
            f"{title}: the document changed while the "
            "model was writing; nothing was applied, run it again",
        )
    if request.kind is ActionKind.EXPLAIN and result.message:
        ls.window_show_message(
            types.ShowMessageParams(type=types.MessageType.Info, message=result.message)
        )
    if result.edit is None:
        return _refuse(ls, record, "nothing", f"{title}: {result.message}")
    record.outcome = "edit"
    return _workspace_edit(ls, document, request, result.edit)


async def _write(
    ls: ClLanguageServer,
    request: ActionRequest,
    text: str,
    record: ActionRecord,
    cancel: threading.Event,
) -> ActionResult | None:
    """Run the writing job with progress; its result, or None after telling the user why."""
    title = request.title
    progress = Progress(ls, f"cl-lsp: {title}", cancel)
    await progress.begin("waiting for the model")
    loop = asyncio.get_running_loop()
    reported = [0.0]

    def on_text(answer: str) -> None:  # on the writer thread, at every token
        if time.monotonic() - reported[0] >= 0.5:
            reported[0] = time.monotonic()
            loop.call_soon_threadsafe(progress.send_report, f"{len(answer)} characters written")

    job = functools.partial(
        write_action, request=request, text=text, path=request.uri, record=record, on_text=on_text
    )
    try:
        if not await _model_ready(ls, progress, cancel):
            if cancel.is_set():
                record.outcome = "cancelled"
                return _refuse(
                    ls, record, "cancelled", f"{title}: cancelled", types.MessageType.Info
                )
            return _refuse(
                ls, record, "failed", f"{title}: {ls.no_model_reason()}", types.MessageType.Error
            )
        result = await ls.actions_engine.write(job, ls.settings.actions, cancel)
    except TargetTooLarge as error:
        return _refuse(ls, record, "too_large", f"{title}: {error}")
    except EngineError as error:
        return _refuse(ls, record, "failed", f"{title}: {error}", types.MessageType.Error)
    except asyncio.CancelledError:
        record.outcome = "cancelled"
        raise
    finally:
        record.seconds = round(time.monotonic() - record.started, 3)
        await progress.end(record.outcome)
    log.info(
        "%s: %s, prompt %d tokens, wrote %d (%s) in %.1f s",
        title,
        record.outcome,
        record.prompt_tokens,
        record.generated_tokens,
        record.stop_reason,
        record.seconds,
    )
    return result


async def _model_ready(ls: ClLanguageServer, progress: Progress, cancel: threading.Event) -> bool:
    """Make sure the model that writes actions can run: wait for a load in progress (with
    progress, cancellable), reload a model whose file changed. False if there is none."""
    if ls.settings.actions.model:
        return True  # loaded on the writer thread, which reports its own errors
    ls.reload_if_changed()
    if ls.loading:
        await progress.report("waiting for the model to load")
    return await ls.wait_for_model(cancel=cancel)


def _workspace_edit(
    ls: ClLanguageServer, document: Document, request: ActionRequest, written: Edit
) -> types.WorkspaceEdit:
    """The written edit as the client takes it: versioned document changes, or plain ones."""
    start = document.position_at(written.start, ls.position_encoding)
    end = document.position_at(written.end, ls.position_encoding)
    edit = types.TextEdit(
        range=types.Range(start=types.Position(*start), end=types.Position(*end)),
        new_text=written.new_text,
    )
    if not ls.versioned_edits:
        return types.WorkspaceEdit(changes={request.uri: [edit]})
    return types.WorkspaceEdit(
        document_changes=[
            types.TextDocumentEdit(
                text_document=types.OptionalVersionedTextDocumentIdentifier(
                    uri=request.uri, version=request.version
                ),
                edits=[edit],
            )
        ]
    )


def _refuse(
    ls: ClLanguageServer,
    record: ActionRecord,
    outcome: str,
    message: str,
    kind: types.MessageType = types.MessageType.Warning,
) -> None:
    record.outcome = outcome
    ls.tell(kind, message)


def run_in_background(ls: ClLanguageServer, request: ActionRequest) -> None:
    """For editors without codeAction/resolve: write the action and apply its edit in the
    background (with progress the user can cancel), so the command is answered at once."""
    task = asyncio.ensure_future(_write_and_apply(ls, request))
    ls.background.add(task)
    task.add_done_callback(ls.background.discard)


async def _write_and_apply(ls: ClLanguageServer, request: ActionRequest) -> None:
    try:
        edit = await resolve_action(ls, request)
        if edit is None:
            return
        result = await ls.workspace_apply_edit_async(
            types.ApplyWorkspaceEditParams(edit=edit, label=f"cl-lsp: {request.title}")
        )
    except asyncio.CancelledError:
        raise
    except Exception as error:
        log.exception("%s failed", request.title)
        ls.tell(types.MessageType.Error, f"{request.title} failed: {first_line(error)}")
        return
    if not result.applied:
        ls.tell(
            types.MessageType.Warning,
            f"{request.title}: the editor did not apply the "
            f"edit ({result.failure_reason or 'no reason given'})",
        )
