"""LSP handlers: each fetches the document, calls one or two domain functions, builds the reply.

`build_server` registers them, with the capabilities they declare, on a `ClLanguageServer`,
where all state lives.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcException

from ..config import Settings, parse_settings
from ..engine import EngineError
from ..engine.endpoint import EngineUnavailable
from ..repository.service import uri_path
from ..syntax import is_identifier_char
from .code_actions import (
    ACTION_KINDS,
    RUN_ACTION_COMMAND,
    action_request,
    offer_actions,
    resolve_action,
    run_in_background,
)
from .documents import Document
from .server import ClLanguageServer, Unanswerable

log = logging.getLogger(__name__)

STATUS_COMMAND = "cl-lsp.status"
ACCEPT_COMMAND = "cl-lsp.accept"  # editors run an item's command when the user accepts it
COMPLETION_TRIGGERS = [".", "(", "[", "{", ",", ":", "="]


def initialize(ls: ClLanguageServer, params: types.InitializeParams) -> None:
    from pygls.capabilities import ServerCapabilitiesBuilder

    encoding = ServerCapabilitiesBuilder.choose_position_encoding(params.capabilities)
    ls.position_encoding = getattr(encoding, "value", encoding)
    window = params.capabilities.window
    ls.progress_supported = bool(window and window.work_done_progress)
    completion_caps = (
        params.capabilities.text_document and params.capabilities.text_document.completion
    )
    item_caps = completion_caps and completion_caps.completion_item
    ls.markdown_documentation = bool(
        item_caps and types.MarkupKind.Markdown in (item_caps.documentation_format or ())
    )
    code_actions = params.capabilities.text_document and (
        params.capabilities.text_document.code_action
    )
    resolvable = code_actions and code_actions.resolve_support
    ls.resolve_edits = bool(resolvable and "edit" in resolvable.properties)
    workspace = params.capabilities.workspace
    ls.versioned_edits = bool(
        workspace and workspace.workspace_edit and workspace.workspace_edit.document_changes
    )
    new, problems = parse_settings(params.initialization_options, ls.settings)
    ls.settings = new
    ls.pending_problems = problems
    ls.workspace_roots = workspace_roots(params)
    watched = workspace and workspace.did_change_watched_files
    ls.watch_files = bool(watched and watched.dynamic_registration)


def workspace_roots(params: types.InitializeParams) -> list[Path]:
    """The workspace folders the editor names, else its rootUri (or the older rootPath)."""
    uris = [folder.uri for folder in params.workspace_folders or ()]
    if not uris and params.root_uri:
        uris = [params.root_uri]
    roots = [path for uri in uris if (path := uri_path(uri)) is not None]
    if not roots and params.root_path:
        roots = [Path(params.root_path)]
    return roots


def initialized(ls: ClLanguageServer, params: types.InitializedParams) -> None:
    for problem in ls.pending_problems:
        ls.tell(types.MessageType.Warning, f"setting {problem}")
    ls.pending_problems = []
    if ls.log_handler is not None:
        ls.log_handler.loop = asyncio.get_running_loop()
    ls.start_loading()
    ls.start_repository()
    if ls.watch_files and ls.workspace_roots:
        ls.track(watch_files(ls))


async def watch_files(ls: ClLanguageServer) -> None:
    """Ask the editor to report files changed on disk (`workspace/didChangeWatchedFiles`)."""
    registration = types.Registration(
        id="cl-lsp-watched-files",
        method=types.WORKSPACE_DID_CHANGE_WATCHED_FILES,
        register_options=types.DidChangeWatchedFilesRegistrationOptions(
            watchers=[types.FileSystemWatcher(glob_pattern="**/*")]
        ),
    )
    try:
        await ls.client_register_capability_async(
            types.RegistrationParams(registrations=[registration])
        )
    except JsonRpcException as error:  # the index still follows open documents and saves
        log.info("the editor did not register file watching: %s", error)


def did_change_configuration(
    ls: ClLanguageServer, params: types.DidChangeConfigurationParams
) -> None:
    template, actions_model = ls.settings.completion.template, ls.settings.actions.model
    if ls.apply_settings(params.settings):
        ls.start_loading()
        return
    if ls.settings.completion.template != template and ls.engine.ready:
        ls.track(ls.tell_model_format())
    if ls.settings.actions.model != actions_model:
        ls.track(ls.fetch_actions_model())


def did_open(ls: ClLanguageServer, params: types.DidOpenTextDocumentParams) -> None:
    item = params.text_document
    ls.completions.forget(item.uri)
    document = ls.documents.open(item.uri, item.text, item.version, item.language_id)
    ls.completions.opened(item.uri)
    if ls.repository is not None:
        ls.repository.opened(item.uri, item.version, document.text)


def did_change(ls: ClLanguageServer, params: types.DidChangeTextDocumentParams) -> None:
    uri = params.text_document.uri
    document = ls.documents.get(uri)
    if document is None:
        log.warning("change for %s, which is not open; ignored", uri)
        return
    cursor: int | None = None
    lines: list[tuple[int, int, int]] = []  # each change's first, old last and new last line
    for change in params.content_changes:
        if isinstance(change, types.TextDocumentContentChangePartial):
            start, end = change.range.start, change.range.end
            cursor = document.apply_change(
                (start.line, start.character),
                (end.line, end.character),
                change.text,
                ls.position_encoding,
            )
            new_end = document.position_at(cursor, ls.position_encoding)[0]
            lines.append((min(start.line, end.line), max(start.line, end.line), new_end))
        else:
            document.apply_change(None, None, change.text)
    document.version = params.text_document.version
    ls.completions.changed(uri, cursor)
    if ls.repository is not None:
        ls.repository.changed(uri, document.version, document.text, lines)


def did_save(ls: ClLanguageServer, params: types.DidSaveTextDocumentParams) -> None:
    if ls.repository is not None:
        ls.repository.saved(params.text_document.uri)


def did_change_workspace_folders(
    ls: ClLanguageServer, params: types.DidChangeWorkspaceFoldersParams
) -> None:
    """Folders added to or removed from the workspace: index the new set."""
    removed = {path for f in params.event.removed if (path := uri_path(f.uri)) is not None}
    added = [path for f in params.event.added if (path := uri_path(f.uri)) is not None]
    roots = [root for root in ls.workspace_roots if root not in removed]
    ls.workspace_roots = roots + [root for root in added if root not in roots]
    ls.start_repository()


def did_change_watched_files(
    ls: ClLanguageServer, params: types.DidChangeWatchedFilesParams
) -> None:
    if ls.repository is not None:
        ls.repository.files_changed(change.uri for change in params.changes)


def did_close(ls: ClLanguageServer, params: types.DidCloseTextDocumentParams) -> None:
    uri = params.text_document.uri
    ls.documents.close(uri)
    ls.completions.forget(uri)
    if ls.repository is not None:
        ls.repository.closed(uri)


async def suggestion_at(
    ls: ClLanguageServer, uri: str, position: types.Position, *, invoked: bool, what: str
) -> tuple[Document, str, int] | None:
    """The document, a non-empty suggestion and the cursor offset, or None when there is
    nothing to show (why goes to the log): the completion handlers' shared error handling."""
    try:
        document, suggestion, offset = await ls.suggest(uri, position, invoked=invoked)
    except Unanswerable as why:
        log.debug("no %s: %s", what, why)
        return None
    except EngineUnavailable as error:
        # The user heard of it once (`ClLanguageServer._engine_health_threadsafe`); while
        # the server stays down, each request fails at once and quietly.
        log.log(logging.WARNING if error.news else logging.DEBUG, "no %s: %s", what, error)
        return None
    except EngineError as error:
        log.error("%s", error)
        return None
    return (document, suggestion, offset) if suggestion else None


async def inline_completion(
    ls: ClLanguageServer, params: types.InlineCompletionParams
) -> types.InlineCompletionList:
    invoked = params.context.trigger_kind == types.InlineCompletionTriggerKind.Invoked
    uri = params.text_document.uri
    found = await suggestion_at(ls, uri, params.position, invoked=invoked, what="inline completion")
    if found is None:
        return types.InlineCompletionList(items=[])
    document, suggestion, offset = found
    # the cursor as the document has it (never inside a character, never past the line end)
    cursor = types.Position(*document.position_at(offset, ls.position_encoding))
    end = ls.replaced_end(document, offset, suggestion) or cursor
    return types.InlineCompletionList(
        items=[
            types.InlineCompletionItem(
                insert_text=suggestion,
                range=types.Range(start=cursor, end=end),
                command=accept_command(uri, suggestion),
            )
        ]
    )


def accept_command(uri: str, suggestion: str) -> types.Command:
    return types.Command(
        title="cl-lsp: accepted",
        command=ACCEPT_COMMAND,
        arguments=[{"uri": uri, "characters": len(suggestion)}],
    )


async def completion(ls: ClLanguageServer, params: types.CompletionParams) -> types.CompletionList:
    invoked = bool(params.context) and (
        params.context.trigger_kind == types.CompletionTriggerKind.Invoked
    )
    found = await suggestion_at(
        ls, params.text_document.uri, params.position, invoked=invoked, what="completion"
    )
    if found is None:
        return types.CompletionList(is_incomplete=True, items=[])
    document, suggestion, offset = found
    # Replace the word being typed, so clients that filter by it (eglot, Helix) keep the item.
    word_start = typed_word_start(document.text, offset)
    start = document.position_at(word_start, ls.position_encoding)
    new_text = document.text[word_start:offset] + suggestion
    item = types.CompletionItem(
        label=new_text.split("\n", 1)[0],
        kind=types.CompletionItemKind.Text,
        detail="Code Llama",
        documentation=types.MarkupContent(
            kind=types.MarkupKind.Markdown,
            value=f"```{document.language_id or ''}\n{new_text}\n```",
        )
        if ls.markdown_documentation
        else new_text,
        sort_text="0",
        filter_text=new_text,
        command=accept_command(document.uri, suggestion),
        preselect=True,
        insert_text_format=types.InsertTextFormat.PlainText,
        text_edit=types.TextEdit(
            range=types.Range(
                start=types.Position(line=start[0], character=start[1]),
                end=ls.replaced_end(document, offset, suggestion)
                or types.Position(*document.position_at(offset, ls.position_encoding)),
            ),
            new_text=new_text,
        ),
    )
    return types.CompletionList(is_incomplete=True, items=[item])


def typed_word_start(text: str, offset: int) -> int:
    """Where the name being typed at `offset` starts (at most 256 characters back)."""
    word_start = offset
    while word_start > 0 and offset - word_start < 256 and is_identifier_char(text[word_start - 1]):
        word_start -= 1
    return word_start


def code_action(
    ls: ClLanguageServer, params: types.CodeActionParams
) -> list[types.CodeAction] | None:
    return offer_actions(ls, params)


async def resolve_code_action(ls: ClLanguageServer, action: types.CodeAction) -> types.CodeAction:
    request = action_request(action.data, "codeAction/resolve")
    action.edit = await resolve_action(ls, request)
    return action


async def run_action_command(ls: ClLanguageServer, *args: Any) -> None:
    """For editors without codeAction/resolve: answer at once, then write the action and apply
    its edit in the background (with progress the user can cancel). Editors such as eglot wait
    for the answer to `workspace/executeCommand` before anything else: the user keeps typing."""
    run_in_background(ls, action_request(args[0] if args else None, RUN_ACTION_COMMAND))


def execute_accept(ls: ClLanguageServer, *args: Any) -> None:
    """The user accepted a suggestion. Counted; a partial accept needs nothing more, because
    the rest is answered from the shown suggestion as the user goes on (typed-ahead reuse)."""
    ls.accepted += 1
    details = args[0] if args and isinstance(args[0], dict) else {}
    log.info(
        "accepted %s characters in %s", details.get("characters", "?"), details.get("uri", "?")
    )


def cancel_progress(ls: ClLanguageServer, params: types.WorkDoneProgressCancelParams) -> None:
    if (cancel := ls.progress_cancels.get(str(params.token))) is not None:
        cancel.set()


def execute_status(ls: ClLanguageServer, *args: Any) -> dict[str, Any]:
    """The server's state for tests and benches. An optional argument `{"recent": N}` asks
    for the last N request records (200 by default, at most the 1000 kept)."""
    options = args[0] if args and isinstance(args[0], dict) else {}
    wanted = options.get("recent", 200)
    count = max(0, wanted) if isinstance(wanted, int) else 200
    records = list(ls.completions.recent)
    status = ls.engine.status()
    status["answersWithoutModel"] = ls.completions.answers_without_model
    fim = ls.completions.model_format() if ls.engine.ready else None
    status["fim"] = fim is not None
    status["family"] = (
        {
            "name": fim.name,
            "title": fim.family.title,
            "detectedBy": fim.detected_by,
            "layouts": [layout.value for layout in fim.layouts],
            "ids": dict(fim.ids),
        }
        if fim is not None
        else None
    )
    status["recent"] = [record.as_dict() for record in records[-count:]] if count else []
    status["loading"] = ls.load_task is not None and not ls.load_task.done()
    status["documents"] = len(ls.documents)
    status["positionEncoding"] = ls.position_encoding
    status["pid"] = os.getpid()
    status["actions"] = [record.as_dict() for record in ls.action_records]
    status["actionsStarted"] = ls.actions_engine.actions_started
    status["accepted"] = ls.accepted
    # Sizes of every table that lives as long as the server: a soak checks that none of them
    # grows with the number of requests (tests/test_load.py, bench/soak.py). Private fields
    # are read defensively: this is a diagnostic, and must not break when they move.
    completions, protocol = ls.completions, ls.protocol
    scheduler = completions.scheduler
    lines = getattr(ls.engine.vocab, "_lines", None)
    planner = getattr(completions, "_planner", None)
    status["tables"] = {
        "requestFutures": len(getattr(protocol, "_request_futures", ())),
        "resultTypes": len(getattr(protocol, "_result_types", ())),
        "progressTokens": len(ls.work_done_progress.tokens),
        "progressCancels": len(ls.progress_cancels),
        "background": len(ls.background),
        "workspaceDocuments": len(getattr(ls.workspace, "_text_documents", ())),
        "schedulerLatest": len(getattr(scheduler, "_latest", ())),
        "schedulerPace": len(getattr(scheduler, "_pace", ())),
        **completions.table_sizes(),
        "actionRecords": len(ls.action_records),
        "lineCacheFirst": len(getattr(lines, "_first", ())),
        "lineCacheLater": len(getattr(lines, "_later", ())),
        "plannerQueue": planner._work_queue.qsize() if planner is not None else 0,
        # A warm-up waiting for a pause is one task at most, counted apart.
        "asyncioTasks": len(asyncio.all_tasks()) - completions.warm_up_pending,
        "warmUpPending": completions.warm_up_pending,
        "threads": threading.active_count(),
    }
    repository = ls.repository
    if repository is not None:
        status["tables"].update(repository.table_sizes())
    status["repository"] = repository.status() if repository is not None else None
    # Memory blocks Python has allocated: RSS growth without these growing is native.
    status["pythonBlocks"] = sys.getallocatedblocks()
    return status


def shutdown(ls: ClLanguageServer, params: None) -> None:
    ls.completions.scheduler.cancel_all()
    ls.completions.stop_warm_up()
    if ls.repository is not None:
        ls.repository.stop()
    for task in list(ls.background):
        task.cancel()
    if ls.load_task and not ls.load_task.done():
        ls.load_task.cancel()


def build_server(cli_model: str | None = None, base: Settings | None = None) -> ClLanguageServer:
    ls = ClLanguageServer(cli_model=cli_model, base=base)
    ls.feature(types.INITIALIZE)(initialize)
    ls.feature(types.INITIALIZED)(initialized)
    ls.feature(types.SHUTDOWN)(shutdown)
    ls.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)(did_change_configuration)
    ls.feature(types.TEXT_DOCUMENT_DID_OPEN)(did_open)
    ls.feature(types.TEXT_DOCUMENT_DID_CHANGE)(did_change)
    ls.feature(types.TEXT_DOCUMENT_DID_CLOSE)(did_close)
    ls.feature(types.TEXT_DOCUMENT_DID_SAVE, types.SaveOptions(include_text=False))(did_save)
    ls.feature(types.WORKSPACE_DID_CHANGE_WATCHED_FILES)(did_change_watched_files)
    ls.feature(types.WORKSPACE_DID_CHANGE_WORKSPACE_FOLDERS)(did_change_workspace_folders)
    ls.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())(
        inline_completion
    )
    ls.feature(
        types.TEXT_DOCUMENT_COMPLETION,
        types.CompletionOptions(trigger_characters=COMPLETION_TRIGGERS, resolve_provider=False),
    )(completion)
    ls.feature(
        types.TEXT_DOCUMENT_CODE_ACTION,
        types.CodeActionOptions(
            code_action_kinds=sorted(set(ACTION_KINDS.values())), resolve_provider=True
        ),
    )(code_action)
    ls.feature(types.CODE_ACTION_RESOLVE)(resolve_code_action)
    ls.feature(types.WINDOW_WORK_DONE_PROGRESS_CANCEL)(cancel_progress)
    ls.command(STATUS_COMMAND)(execute_status)
    ls.command(RUN_ACTION_COMMAND)(run_action_command)
    ls.command(ACCEPT_COMMAND)(execute_accept)
    return ls
