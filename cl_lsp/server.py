"""LSP wiring: handlers fetch the document, call the pipeline, wrap results in lsprotocol types.

State (documents, settings, the engine) lives on `ClLanguageServer`; handlers receive it as
`ls`. Nothing here blocks the event loop: the model runs on the engine's worker thread.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import sys
import threading
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any, ClassVar

from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer

from . import __version__
from .action_jobs import ActionRecord, ActionRequest, offer, write_action
from .actions import ActionKind, Diagnostic, TargetTooLarge
from .config import Settings, parse_settings
from .documents import UTF16, Document, DocumentStore, PositionError
from .engine import Engine, EngineError
from .languages import language_for
from .models import ModelError, locate_model, terminal_progress, throttled
from .pipeline import Completions, replace_span
from .protocol import ClProtocol
from .protocol import first_line as _first_line
from .syntax import is_identifier_char

log = logging.getLogger(__name__)

STATUS_COMMAND = "cl-lsp.status"
RUN_ACTION_COMMAND = "cl-lsp.runAction"
ACCEPT_COMMAND = "cl-lsp.accept"  # editors run an item's command when the user accepts it
ACTION_KINDS = {
    ActionKind.FIX: types.CodeActionKind.QuickFix,
    ActionKind.DOCUMENT: types.CodeActionKind.RefactorRewrite,
    ActionKind.EXPLAIN: "refactor.cl-lsp.explain",
    ActionKind.TESTS: "refactor.cl-lsp.tests",
}
COMPLETION_TRIGGERS = [".", "(", "[", "{", ",", ":", "="]
# Documents above this size are still synced but not completed: the context window is a few
# kilobytes anyway, and the editor should not wait on a multi-megabyte scan.
MAX_DOCUMENT_CHARS = 8_000_000
# An explicitly invoked completion waits this long for a model that is loading; an action the
# user chose waits for the load however long it takes (it shows progress and can be cancelled).
INVOKED_WAIT_SECONDS = 30.0
MODEL_WAIT_POLL = 0.2  # how often a waiting action checks its cancel flag


class ClLanguageServer(LanguageServer):
    def __init__(self, cli_model: str | None = None) -> None:
        super().__init__(
            "cl-lsp",
            __version__,
            protocol_cls=ClProtocol,
            text_document_sync_kind=types.TextDocumentSyncKind.Incremental,
        )
        self.cli_model = cli_model
        self.settings = Settings()
        self.documents = DocumentStore()
        self.engine = Engine()
        self.position_encoding = UTF16
        self.completions = Completions(self.engine, lambda: self.settings.completion)
        self.pending_problems: list[str] = []
        self.load_task: asyncio.Task[None] | None = None
        self.progress_supported = False
        self.markdown_documentation = False
        self.resolve_edits = False  # the client resolves code actions' edits lazily
        self.versioned_edits = False  # the client takes `documentChanges` (with versions)
        self.log_handler: LspLogHandler | None = None
        self.action_records: deque[ActionRecord] = deque(maxlen=50)
        self.accepted = 0  # suggestions the user accepted (the items' command ran)
        self.progress_cancels: dict[str, threading.Event] = {}
        self.background: set[asyncio.Future[None]] = set()  # actions run by command

    # -- messages ----------------------------------------------------------------------------

    def tell(self, kind: types.MessageType, message: str) -> None:
        """Show a message to the user and log it."""
        log.log(logging.ERROR if kind == types.MessageType.Error else logging.WARNING, message)
        self.window_show_message(types.ShowMessageParams(type=kind, message=f"cl-lsp: {message}"))

    def apply_settings(self, raw: Any) -> bool:
        """Overlay settings; report problems; return whether the model must be reloaded."""
        new, problems = parse_settings(raw, self.settings)
        for problem in problems:
            self.tell(types.MessageType.Warning, f"setting {problem}")
        # A model that failed to load is tried again when the editor sends model settings,
        # even unchanged ones: the file they name may have been fixed on disk meanwhile.
        retry = not self.engine.ready and not self.loading and _mentions_model(raw)
        reload = new.model != self.settings.model or retry
        if new != self.settings:
            self.completions.clear()
        self.settings = new
        return reload

    # -- the model ---------------------------------------------------------------------------

    def start_loading(self) -> None:
        if self.load_task and not self.load_task.done():
            self.load_task.cancel()
        self.load_task = asyncio.ensure_future(self.load_model())

    @property
    def loading(self) -> bool:
        return self.load_task is not None and not self.load_task.done()

    async def wait_for_model(
        self, seconds: float | None = None, cancel: threading.Event | None = None
    ) -> bool:
        """Wait while the model loads (a newer load replaces the awaited one); True if it is
        ready. Gives up after `seconds` (None: no limit) or once `cancel` is set."""
        loop = asyncio.get_running_loop()
        deadline = None if seconds is None else loop.time() + seconds
        while self.loading and not (cancel is not None and cancel.is_set()):
            remaining = MODEL_WAIT_POLL if deadline is None else deadline - loop.time()
            if remaining <= 0:
                break
            assert self.load_task is not None
            await asyncio.wait({self.load_task}, timeout=min(remaining, MODEL_WAIT_POLL))
        return self.engine.ready

    def reload_if_changed(self) -> bool:
        """If the model file changed on disk since it was loaded, load it again (before
        anything touches the stale mapping) and say so; True if it did."""
        if self.loading or not self.engine.model_file_changed():
            return False
        self.tell(
            types.MessageType.Warning,
            f"the model file {self.engine.model_path} changed on disk; loading it again",
        )
        self.start_loading()
        return True

    async def model_for_action(self, progress: Progress, cancel: threading.Event) -> bool:
        """Make sure the model that writes actions can run: wait for a load in progress (with
        progress, cancellable), reload a model whose file changed. False if there is none."""
        if self.settings.actions.model:
            return True  # loaded on the writer thread, which reports its own errors
        self.reload_if_changed()
        if self.loading:
            await progress.report("waiting for the model to load")
        return await self.wait_for_model(cancel=cancel)

    def no_model_reason(self) -> str:
        return self.engine.error or "no model is loaded: set model.path (or actions.model)"

    async def load_model(self) -> None:
        progress = Progress(self, "cl-lsp: model")
        await progress.begin("resolving model")
        try:
            path = await self.find_model(progress)
            await progress.report(f"loading {path.name}")
            await self.engine.load(path, self.settings.model)
        except (ModelError, EngineError) as error:
            self.tell(types.MessageType.Error, str(error))
            if isinstance(error, ModelError):
                self.engine.no_model(str(error))
            await progress.end("no model")
            return
        except asyncio.CancelledError:
            await progress.end("cancelled")
            raise
        except Exception as error:
            log.exception("loading the model failed")
            self.tell(types.MessageType.Error, f"loading the model failed: {error}")
            await progress.end("no model")
            return
        self.completions.clear()  # answers cached for the previous model no longer hold
        log.info("ready: %s", path)
        await progress.end(f"ready ({path.name})")

    async def find_model(self, progress: Progress) -> Path:
        loop = asyncio.get_running_loop()

        def announce_download() -> None:  # called on the download thread
            loop.call_soon_threadsafe(self._announce_download, progress)

        return await asyncio.to_thread(
            locate_model,
            self.cli_model,
            self.settings.model.path,
            progress.threadsafe_bytes(loop),
            announce_download,
        )

    def _announce_download(self, progress: Progress) -> None:
        progress.send_report("downloading the default model (about 4 GB, once)")
        self.tell(
            types.MessageType.Info,
            "no model configured: downloading the default Code Llama 7B (about 4 GB) "
            "into the Hugging Face cache",
        )

    # -- completion --------------------------------------------------------------------------

    async def suggest(
        self, uri: str, position: types.Position, *, invoked: bool = False
    ) -> tuple[Document, str, int]:
        """The suggestion text for a cursor (and the document and cursor offset), or raise
        `Unanswerable` with why there is none. A request the user `invoked` explicitly waits
        (within a bound) for a model that is loading; automatic ones are answered at once."""
        self.reload_if_changed()
        if invoked and self.loading:
            await self.wait_for_model(INVOKED_WAIT_SECONDS)
        document = self.documents.get(uri)
        if document is None:
            raise Unanswerable(f"{uri} is not open")
        if not self.settings.completion.enabled:
            raise Unanswerable("completion.enabled is off")
        if not self.engine.ready or self.loading:
            raise Unanswerable(f"model not ready ({self.engine.state.value})")
        text = document.text
        if len(text) > MAX_DOCUMENT_CHARS:
            raise Unanswerable(f"{uri} is too large ({len(text)} characters)")
        if "\x00" in text:
            raise Unanswerable(f"{uri} looks binary (contains NUL characters)")
        try:
            offset = document.offset_at(
                position.line, position.character, self.position_encoding, strict=True
            )
        except PositionError as error:
            raise Unanswerable(f"{uri}: {error}") from error

        def current_version() -> int | None:
            return document.version if self.documents.get(uri) is document else None

        suggestion, record = await self.completions.suggest(
            uri, text, document.version, offset, current_version, language_id=document.language_id
        )
        log.info(
            "%s:%d:%d %s %s/%s prompt=%d evaluated=%d generated=%d stop=%s debounce=%.0fms "
            "model=%.0fms overhead=%.1fms",
            Path(uri).name,
            position.line,
            position.character,
            record.outcome,
            record.mode,
            record.layout,
            record.prompt_tokens,
            record.evaluated_tokens,
            record.generated_tokens,
            record.stop_reason,
            record.debounce_ms,
            record.model_ms,
            record.overhead_ms,
        )
        return document, suggestion, offset

    def replaced_end(
        self, document: Document, offset: int, suggestion: str
    ) -> types.Position | None:
        """Where the item's range ends when the suggestion types over auto-closed characters
        after the cursor (``f(|)`` + ``x)``), None when it types over nothing."""
        language = language_for(document.language_id, document.uri)
        span = replace_span(document.text, offset, suggestion, language)
        if not span:
            return None
        line, character = document.position_at(offset + span, self.position_encoding)
        return types.Position(line=line, character=character)

    # -- code actions ------------------------------------------------------------------------

    def offer_actions(self, params: types.CodeActionParams) -> list[types.CodeAction] | None:
        """Titled actions for a selection or cursor; nothing here touches the model."""
        document = self.documents.get(params.text_document.uri)
        if document is None or not self.settings.actions.enabled:
            return None
        where, encoding = params.range, self.position_encoding
        try:
            start = document.offset_at(where.start.line, where.start.character, encoding)
            end = document.offset_at(where.end.line, where.end.character, encoding)
        except PositionError as error:
            raise JsonRpcInvalidParams(f"codeAction: {error}") from error
        reported = list(params.context.diagnostics)
        diagnostics = [
            Diagnostic(
                d.range.start.line, d.message, d.source, None if d.code is None else str(d.code)
            )
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
            if not self.resolve_edits:  # the editor runs the command, we apply the edit
                action.command = types.Command(
                    title=action.title, command=RUN_ACTION_COMMAND, arguments=[data]
                )
            actions.append(action)
        return actions

    async def write_action(self, request: ActionRequest) -> types.WorkspaceEdit | None:
        """Have the model write the action; the edit, or None after telling the user why."""
        record = ActionRecord(request.kind.value, request.title)
        self.action_records.append(record)
        title = request.title
        document = self.documents.get(request.uri)
        if document is None or document.version != request.version:
            return self._refuse(
                record,
                "stale",
                f"{title}: the document changed since the action was offered; run it again",
            )
        text = document.text
        cancel = threading.Event()
        progress = Progress(self, f"cl-lsp: {title}", cancel)
        await progress.begin("waiting for the model")
        loop = asyncio.get_running_loop()
        reported = [0.0]

        def on_text(answer: str) -> None:  # on the writer thread, at every token
            if time.monotonic() - reported[0] >= 0.5:
                reported[0] = time.monotonic()
                loop.call_soon_threadsafe(progress.send_report, f"{len(answer)} characters written")

        job = functools.partial(
            write_action,
            request=request,
            text=text,
            path=request.uri,
            record=record,
            on_text=on_text,
        )
        try:
            if not await self.model_for_action(progress, cancel):
                if cancel.is_set():
                    record.outcome = "cancelled"
                    return self._refuse(
                        record, "cancelled", f"{title}: cancelled", types.MessageType.Info
                    )
                return self._refuse(
                    record, "failed", f"{title}: {self.no_model_reason()}", types.MessageType.Error
                )
            result = await self.engine.write(job, self.settings.actions, cancel)
        except TargetTooLarge as error:
            return self._refuse(record, "too_large", f"{title}: {error}")
        except EngineError as error:
            return self._refuse(record, "failed", f"{title}: {error}", types.MessageType.Error)
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
        if cancel.is_set():
            return self._refuse(record, "cancelled", f"{title}: cancelled", types.MessageType.Info)
        if self.documents.get(request.uri) is not document or document.version != (request.version):
            return self._refuse(
                record,
                "stale",
                f"{title}: the document changed while the "
                "model was writing; nothing was applied, run it again",
            )
        if request.kind is ActionKind.EXPLAIN and result.message:
            self.window_show_message(
                types.ShowMessageParams(type=types.MessageType.Info, message=result.message)
            )
        if result.edit is None:
            return self._refuse(record, "nothing", f"{title}: {result.message}")
        record.outcome = "edit"
        start = document.position_at(result.edit.start, self.position_encoding)
        end = document.position_at(result.edit.end, self.position_encoding)
        edit = types.TextEdit(
            range=types.Range(start=types.Position(*start), end=types.Position(*end)),
            new_text=result.edit.new_text,
        )
        if not self.versioned_edits:
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
        self,
        record: ActionRecord,
        outcome: str,
        message: str,
        kind: types.MessageType = types.MessageType.Warning,
    ) -> None:
        record.outcome = outcome
        self.tell(kind, message)


def _mentions_model(raw: Any) -> bool:
    if isinstance(raw, dict) and isinstance(raw.get("cl-lsp"), dict):
        raw = raw["cl-lsp"]
    return isinstance(raw, dict) and "model" in raw


class Unanswerable(Exception):
    """There is no suggestion for this request; the reason goes to the log."""


class Progress:
    """Work-done progress if the client supports it; otherwise only the log."""

    def __init__(
        self, ls: ClLanguageServer, title: str, cancel: threading.Event | None = None
    ) -> None:
        self.ls, self.title = ls, title
        self.token: str | None = None
        self.cancel = cancel  # set when the user cancels the progress in the editor

    async def begin(self, message: str) -> None:
        log.info("%s: %s", self.title, message)
        if not self.ls.progress_supported:
            return
        token = f"cl-lsp-{uuid.uuid4()}"
        try:
            await asyncio.wait_for(self.ls.work_done_progress.create_async(token), 10)
        except (JsonRpcException, asyncio.TimeoutError) as error:  # refused or no answer
            log.debug("work done progress refused: %s", error)
            return
        self.token = token
        if self.cancel is not None:
            self.ls.progress_cancels[token] = self.cancel
        self.ls.work_done_progress.begin(
            token,
            types.WorkDoneProgressBegin(
                title=self.title, message=message, cancellable=self.cancel is not None
            ),
        )

    async def report(self, message: str, percentage: int | None = None) -> None:
        log.info("%s: %s", self.title, message)
        self.send_report(message, percentage)

    def send_report(self, message: str, percentage: int | None = None) -> None:
        if self.token is not None:
            self.ls.work_done_progress.report(
                self.token, types.WorkDoneProgressReport(message=message, percentage=percentage)
            )

    async def end(self, message: str) -> None:
        if self.token is not None:
            self.ls.progress_cancels.pop(self.token, None)
            self.ls.work_done_progress.end(self.token, types.WorkDoneProgressEnd(message=message))
            # pygls keeps every token it ever created (issue 12): one per action, forever.
            self.ls.work_done_progress.tokens.pop(self.token, None)
            self.token = None

    def threadsafe_bytes(self, loop: asyncio.AbstractEventLoop) -> Any:
        """A download progress callback usable from any thread: a bar on stderr, and
        `$/progress` reports to the editor at most twice a second."""
        bar = terminal_progress()

        def to_editor(done: int, total: int | None) -> None:
            if total:
                percentage = int(done * 100 / total)
                message = f"downloading {done / 1e6:.0f}/{total / 1e6:.0f} MB"
            else:
                percentage, message = None, f"downloading {done / 1e6:.0f} MB"
            loop.call_soon_threadsafe(self.send_report, message, percentage)

        editor = throttled(to_editor, 0.5)

        def on_bytes(done: int, total: int | None) -> None:
            bar(done, total)
            editor(done, total)

        on_bytes.close = bar.close  # type: ignore[attr-defined]
        return on_bytes


# -- handlers ----------------------------------------------------------------------------------


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


def initialized(ls: ClLanguageServer, params: types.InitializedParams) -> None:
    for problem in ls.pending_problems:
        ls.tell(types.MessageType.Warning, f"setting {problem}")
    ls.pending_problems = []
    if ls.log_handler is not None:
        ls.log_handler.loop = asyncio.get_running_loop()
    ls.start_loading()


def did_change_configuration(
    ls: ClLanguageServer, params: types.DidChangeConfigurationParams
) -> None:
    if ls.apply_settings(params.settings):
        ls.start_loading()


def did_open(ls: ClLanguageServer, params: types.DidOpenTextDocumentParams) -> None:
    item = params.text_document
    ls.completions.forget(item.uri)
    ls.documents.open(item.uri, item.text, item.version, item.language_id)


def did_change(ls: ClLanguageServer, params: types.DidChangeTextDocumentParams) -> None:
    uri = params.text_document.uri
    document = ls.documents.get(uri)
    if document is None:
        log.warning("change for %s, which is not open; ignored", uri)
        return
    for change in params.content_changes:
        if isinstance(change, types.TextDocumentContentChangePartial):
            start, end = change.range.start, change.range.end
            document.apply_change(
                (start.line, start.character),
                (end.line, end.character),
                change.text,
                ls.position_encoding,
            )
        else:
            document.apply_change(None, None, change.text)
    document.version = params.text_document.version
    ls.completions.changed(uri)


def did_close(ls: ClLanguageServer, params: types.DidCloseTextDocumentParams) -> None:
    uri = params.text_document.uri
    ls.documents.close(uri)
    ls.completions.forget(uri)


async def inline_completion(
    ls: ClLanguageServer, params: types.InlineCompletionParams
) -> types.InlineCompletionList:
    try:
        invoked = params.context.trigger_kind == types.InlineCompletionTriggerKind.Invoked
        document, suggestion, offset = await ls.suggest(
            params.text_document.uri, params.position, invoked=invoked
        )
    except Unanswerable as why:
        log.debug("no inline completion: %s", why)
        return types.InlineCompletionList(items=[])
    except EngineError as error:
        log.error("%s", error)
        return types.InlineCompletionList(items=[])
    if not suggestion:
        return types.InlineCompletionList(items=[])
    # the cursor as the document has it (never inside a character, never past the line end)
    cursor = types.Position(*document.position_at(offset, ls.position_encoding))
    end = ls.replaced_end(document, offset, suggestion) or cursor
    return types.InlineCompletionList(
        items=[
            types.InlineCompletionItem(
                insert_text=suggestion,
                range=types.Range(start=cursor, end=end),
                command=accept_command(params.text_document.uri, suggestion),
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
    empty = types.CompletionList(is_incomplete=True, items=[])
    try:
        invoked = bool(params.context) and (
            params.context.trigger_kind == types.CompletionTriggerKind.Invoked
        )
        document, suggestion, offset = await ls.suggest(
            params.text_document.uri, params.position, invoked=invoked
        )
    except Unanswerable as why:
        log.debug("no completion: %s", why)
        return empty
    except EngineError as error:
        log.error("%s", error)
        return empty
    if not suggestion:
        return empty
    # Replace the word being typed, so clients that filter by it (eglot, Helix) keep the item.
    text = document.text
    word_start = offset
    while word_start > 0 and offset - word_start < 256 and is_identifier_char(text[word_start - 1]):
        word_start -= 1
    start = document.position_at(word_start, ls.position_encoding)
    new_text = text[word_start:offset] + suggestion
    first_line = new_text.split("\n", 1)[0]
    item = types.CompletionItem(
        label=first_line,
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


def code_action(
    ls: ClLanguageServer, params: types.CodeActionParams
) -> list[types.CodeAction] | None:
    return ls.offer_actions(params)


async def resolve_code_action(ls: ClLanguageServer, action: types.CodeAction) -> types.CodeAction:
    try:
        request = ActionRequest.from_data(action.data)
    except ValueError as error:
        raise JsonRpcInvalidParams(f"codeAction/resolve: {error}") from error
    action.edit = await ls.write_action(request)
    return action


async def run_action_command(ls: ClLanguageServer, *args: Any) -> None:
    """For editors without codeAction/resolve: answer at once, then write the action and apply
    its edit in the background (with progress the user can cancel). Editors such as eglot wait
    for the answer to `workspace/executeCommand` before anything else: the user keeps typing."""
    try:
        request = ActionRequest.from_data(args[0] if args else None)
    except ValueError as error:
        raise JsonRpcInvalidParams(f"{RUN_ACTION_COMMAND}: {error}") from error
    task = asyncio.ensure_future(_write_and_apply(ls, request))
    ls.background.add(task)
    task.add_done_callback(ls.background.discard)


async def _write_and_apply(ls: ClLanguageServer, request: ActionRequest) -> None:
    try:
        edit = await ls.write_action(request)
        if edit is None:
            return
        result = await ls.workspace_apply_edit_async(
            types.ApplyWorkspaceEditParams(edit=edit, label=f"cl-lsp: {request.title}")
        )
    except asyncio.CancelledError:
        raise
    except Exception as error:
        log.exception("%s failed", request.title)
        ls.tell(types.MessageType.Error, f"{request.title} failed: {_first_line(error)}")
        return
    if not result.applied:
        ls.tell(
            types.MessageType.Warning,
            f"{request.title}: the editor did not apply the "
            f"edit ({result.failure_reason or 'no reason given'})",
        )


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
    status["recent"] = [record.as_dict() for record in records[-count:]] if count else []
    status["loading"] = ls.load_task is not None and not ls.load_task.done()
    status["documents"] = len(ls.documents)
    status["positionEncoding"] = ls.position_encoding
    status["pid"] = os.getpid()
    status["actions"] = [record.as_dict() for record in ls.action_records]
    status["actionsStarted"] = ls.engine.actions_started
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
        "shown": len(completions.shown),
        "anchors": len(completions.anchors),
        "suffixes": len(completions.suffixes),
        "resultCache": len(completions.cache),
        "recent": len(completions.recent),
        "actionRecords": len(ls.action_records),
        "lineCacheFirst": len(getattr(lines, "_first", ())),
        "lineCacheLater": len(getattr(lines, "_later", ())),
        "plannerQueue": planner._work_queue.qsize() if planner is not None else 0,
        "asyncioTasks": len(asyncio.all_tasks()),
        "threads": threading.active_count(),
    }
    # Memory blocks Python has allocated: RSS growth without these growing is native.
    status["pythonBlocks"] = sys.getallocatedblocks()
    return status


def shutdown(ls: ClLanguageServer, params: None) -> None:
    ls.completions.scheduler.cancel_all()
    for task in list(ls.background):
        task.cancel()
    if ls.load_task and not ls.load_task.done():
        ls.load_task.cancel()


def build_server(cli_model: str | None = None) -> ClLanguageServer:
    ls = ClLanguageServer(cli_model=cli_model)
    ls.feature(types.INITIALIZE)(initialize)
    ls.feature(types.INITIALIZED)(initialized)
    ls.feature(types.SHUTDOWN)(shutdown)
    ls.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)(did_change_configuration)
    ls.feature(types.TEXT_DOCUMENT_DID_OPEN)(did_open)
    ls.feature(types.TEXT_DOCUMENT_DID_CHANGE)(did_change)
    ls.feature(types.TEXT_DOCUMENT_DID_CLOSE)(did_close)
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


class LspLogHandler(logging.Handler):
    """Forward log records to the client's `window/logMessage`, from any thread."""

    LEVELS: ClassVar = {
        logging.ERROR: types.MessageType.Error,
        logging.WARNING: types.MessageType.Warning,
        logging.INFO: types.MessageType.Info,
    }

    def __init__(self, ls: ClLanguageServer, level: int) -> None:
        super().__init__(level)
        self.ls = ls
        self.loop: asyncio.AbstractEventLoop | None = None

    def emit(self, record: logging.LogRecord) -> None:
        loop = self.loop
        if loop is None or loop.is_closed() or record.name.startswith("pygls"):
            return
        kind = next(
            (kind for level, kind in self.LEVELS.items() if record.levelno >= level),
            types.MessageType.Log,
        )
        params = types.LogMessageParams(type=kind, message=self.format(record))
        try:
            loop.call_soon_threadsafe(self.ls.window_log_message, params)
        except RuntimeError:  # loop closed while shutting down
            pass


def install_lsp_log_handler(ls: ClLanguageServer, level: int) -> LspLogHandler:
    handler = LspLogHandler(ls, level)
    logging.getLogger("cl_lsp").addHandler(handler)
    ls.log_handler = handler
    return handler
