"""The language server's state: documents, settings, the engine and its loading, completions.

All state lives on `ClLanguageServer`; the handlers (`handlers`) and the code-action flow
(`code_actions`) receive it as `ls`. Nothing here blocks the event loop: the model runs on the
engine's worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, ClassVar

from lsprotocol import types
from pygls.lsp.server import LanguageServer

from .. import __version__
from ..actions.jobs import ActionRecord
from ..completion.families import TemplateError, fim_format
from ..completion.pipeline import replace_span
from ..completion.service import Completions
from ..config import EngineKind, Settings, parse_settings
from ..engine import Engine, EngineError, LocalEngine
from ..engine.endpoint import Endpoint
from ..engine.remote import RemoteEngine
from ..languages import language_for
from ..models import (
    ACTIONS,
    DEFAULT,
    HubDownload,
    ModelError,
    cached_model_file,
    fetch_model,
    format_size,
    hub_cache_dir,
    locate_model,
    locate_vocabulary,
    parse_model_ref,
)
from ..repository.service import RepositoryContext
from .documents import UTF16, Document, DocumentStore, PositionError
from .progress import Progress
from .protocol import ClProtocol

log = logging.getLogger(__name__)

# Documents above this size are still synced but not completed: the context window is a few
# kilobytes anyway, and the editor should not wait on a multi-megabyte scan.
MAX_DOCUMENT_CHARS = 8_000_000
# An explicitly invoked completion waits this long for a model that is loading; an action the
# user chose waits for the load however long it takes (it shows progress and can be cancelled).
INVOKED_WAIT_SECONDS = 30.0
MODEL_WAIT_POLL = 0.2  # how often a waiting action checks its cancel flag


class ClLanguageServer(LanguageServer):
    """cl-lsp's server: the typed state every handler reads, and the model's loading."""

    def __init__(self, cli_model: str | None = None, base: Settings | None = None) -> None:
        super().__init__(
            "cl-lsp",
            __version__,
            protocol_cls=ClProtocol,
            text_document_sync_kind=types.TextDocumentSyncKind.Incremental,
        )
        self.cli_model = cli_model
        self.settings = base or Settings()  # --engine/--url; the editor's settings go over them
        self.documents = DocumentStore()
        self.engine: Engine = LocalEngine()
        self._actions_engine: Engine | None = None  # actions.engine names another engine
        self.event_loop: asyncio.AbstractEventLoop | None = None
        # Shown while an inference server is down: its begin, and the progress to end.
        self.outage: tuple[asyncio.Future[None], Progress] | None = None
        self.position_encoding = UTF16
        self.completions = Completions(
            self.engine,
            lambda: self.settings.completion,
            self._document_source,
            lambda: self.repository,
        )
        self.workspace_roots: list[Path] = []  # the editor's workspace folders (or rootUri)
        self.repository: RepositoryContext | None = None  # code from other files
        self.watch_files = False  # the client registers file watchers on request
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
        reload = new.model != self.settings.model or new.engine != self.settings.engine or retry
        if new.engine != self.settings.engine or new.actions.engine != self.settings.actions.engine:
            self._drop_actions_engine()
        if new != self.settings:
            self.completions.clear()
        context_changed = new.context != self.settings.context
        self.settings = new
        if context_changed and self.repository is not None:
            self.start_repository()
        return reload

    # -- repository context ------------------------------------------------------------------

    def start_repository(self) -> None:
        """(Re)start repository context for the workspace folders: the index builds on its own
        thread; the open documents are its first chunks."""
        if self.repository is not None:
            self.repository.stop()
        self.repository = RepositoryContext(
            self.settings.context, self._open_text, self._model_running
        )
        for uri in self.documents.uris():
            document = self.documents.get(uri)
            if document is not None:
                self.repository.opened(uri, document.version, document.text)
        self.repository.start(self.workspace_roots)

    def _model_running(self) -> bool:
        """A completion or a warm-up is running on the model (the index waits meanwhile)."""
        return self.engine.busy.is_set() or bool(getattr(self.engine, "warming", False))

    def _open_text(self, uri: str) -> str | None:
        document = self.documents.get(uri)
        return document.text if document is not None else None

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

    def no_model_reason(self) -> str:
        return self.engine.error or "no model is loaded: set model.path (or actions.model)"

    def _use_engine(self) -> None:
        """Make `engine` the one engine.kind names (a new one when the setting changed)."""
        wanted = self.settings.engine
        if wanted.kind is EngineKind.LOCAL:
            replace = not isinstance(self.engine, LocalEngine)
            engine: Engine = LocalEngine() if replace else self.engine
        else:
            replace = True
            engine = RemoteEngine(
                Endpoint.for_completions(wanted),
                Endpoint.for_actions(wanted, self.settings.actions.engine),
            )
            engine.on_health = self._engine_health_threadsafe
        if replace:
            old, self.engine = self.engine, engine
            self.completions.engine = engine
            old.close()

    @property
    def actions_engine(self) -> Engine:
        """The engine that writes code actions: the completion engine unless actions.engine
        names another kind of engine."""
        kind = self.settings.actions.engine.kind
        if kind is None or kind is self.settings.engine.kind:
            return self.engine
        if self._actions_engine is None:
            if kind is EngineKind.LOCAL:
                self._actions_engine = LocalEngine()
            else:
                endpoint = Endpoint.for_actions(self.settings.engine, self.settings.actions.engine)
                remote = RemoteEngine(endpoint)
                remote.on_health = self._engine_health_threadsafe
                self._actions_engine = remote
        return self._actions_engine

    def _drop_actions_engine(self) -> None:
        if self._actions_engine is not None:
            self._actions_engine.close()
            self._actions_engine = None

    def _engine_health_threadsafe(self, message: str, is_error: bool) -> None:
        """An inference server went down or came back: tell the user, once each way. Called
        from the event loop or from a code action's thread."""
        loop = self.event_loop
        if loop is None or loop.is_closed():
            return
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self._engine_health(message, is_error)
        else:
            loop.call_soon_threadsafe(self._engine_health, message, is_error)

    def _engine_health(self, message: str, is_error: bool) -> None:
        """One message each way, and, while the server is down, a `$/progress` that says so
        (editors show it in their status line) until it answers again."""
        self.tell(types.MessageType.Warning if is_error else types.MessageType.Info, message)
        if is_error and self.outage is None:
            progress = Progress(self, "cl-lsp: engine")
            self.outage = self.track(progress.begin(f"down: {message}; trying again")), progress
        elif not is_error and self.outage is not None:
            (began, progress), self.outage = self.outage, None
            self.track(_after(began, progress.end(message)))

    def track(self, work: Coroutine[Any, Any, None]) -> asyncio.Future[None]:
        """Run `work` in the background, kept until it is done."""
        task = asyncio.ensure_future(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task

    async def load_model(self) -> None:
        self.event_loop = asyncio.get_running_loop()
        self._use_engine()
        if isinstance(self.engine, RemoteEngine):
            await self.connect_engine(self.engine)
            return
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
        await self.tell_model_format()
        await self.fetch_actions_model()

    async def connect_engine(self, engine: RemoteEngine) -> None:
        """An inference-server engine: read the vocabulary of the GGUF model.path (or --model,
        CL_LSP_MODEL) names, if any (never download one), and ask the server how it is."""
        progress = Progress(self, "cl-lsp: engine")
        await progress.begin(f"connecting to {engine.endpoint.name}")
        try:
            # A name or Hub reference: its cached copy, if any; never a download.
            vocabulary = await asyncio.to_thread(
                locate_vocabulary, self.cli_model, self.settings.model.path
            )
            await engine.load(vocabulary, self.settings.model)
        except (ModelError, EngineError) as error:
            self.tell(types.MessageType.Error, str(error))
            await progress.end("no engine")
            return
        self.completions.clear()
        state = engine.health.state
        await progress.end(f"{engine.endpoint.name}: {'ready' if state == 'ok' else state}")
        await self.tell_model_format()
        await self.fetch_actions_model()

    async def fetch_actions_model(self) -> None:
        """An `actions.model` name or Hub reference not in the cache yet is downloaded now,
        with progress in the editor, rather than silently at the first code action. (With a
        server writing the actions, actions.model is the server's model name: nothing to
        fetch.)"""
        setting = self.settings.actions.model
        if not setting or not isinstance(self.actions_engine, LocalEngine):
            return
        try:
            ref = parse_model_ref(str(Path(setting).expanduser()), ACTIONS.label)
        except ModelError:
            return  # the first code action says what is wrong with it
        if ref.is_path or await asyncio.to_thread(cached_model_file, ref) is not None:
            return
        progress = Progress(self, "cl-lsp: actions model")
        await progress.begin(f"downloading {ref.text} for code actions")
        loop = asyncio.get_running_loop()
        try:
            path = await asyncio.to_thread(
                fetch_model, ref, progress.threadsafe_bytes(loop, lambda: ref.text)
            )
        except ModelError as error:
            self.tell(types.MessageType.Error, str(error))
            await progress.end("actions model: not downloaded")
            return
        log.info("actions model ready: %s", path)
        await progress.end(f"actions model ready ({ref.text})")

    async def tell_model_format(self) -> None:
        """Say once, when a model loads (or the template setting changes), what the prompts
        cannot be: a model that is not a fill-in-the-middle model, or a `completion.template`
        the model has not the tokens of. (Asking a server's tokenizer takes requests: not on
        the event loop.)"""
        vocab, template = self.engine.vocab, self.settings.completion.template.value
        if vocab is None:
            return
        try:
            fim = await asyncio.to_thread(fim_format, vocab, template)
        except TemplateError as error:
            self.tell(types.MessageType.Warning, f"{error}; detecting the family instead")
            return
        except EngineError as error:  # the server's tokenizer stopped answering
            log.warning("could not ask for the model's FIM tokens: %s", error)
            return
        if fim is None and template != "prefix":
            self.tell(
                types.MessageType.Info,
                f"{vocab.model_name or 'the model'} is not a fill-in-the-middle model (it has "
                "no FIM tokens): suggestions only continue the text before the cursor. If it "
                "is one, completion.template names its family.",
            )
        elif fim is not None:
            log.info(
                "FIM family %s (%s), layouts %s",
                fim.family.title,
                fim.detected_by,
                ", ".join(layout.value for layout in fim.layouts),
            )

    async def find_model(self, progress: Progress) -> Path:
        """The model file, from the Hugging Face cache or downloaded once for a name or Hub
        reference: the download is announced, and each `$/progress` report names it."""
        loop = asyncio.get_running_loop()
        downloading: list[HubDownload] = []

        def announce_download(plan: HubDownload) -> None:  # called on the download thread
            downloading.append(plan)
            loop.call_soon_threadsafe(self._announce_download, progress, plan)

        def name() -> str:
            return downloading[-1].name if downloading else "the model"

        return await asyncio.to_thread(
            locate_model,
            self.cli_model,
            self.settings.model.path,
            progress.threadsafe_bytes(loop, name),
            announce_download,
        )

    def _announce_download(self, progress: Progress, plan: HubDownload) -> None:
        size = f", {format_size(plan.size)}" if plan.size else ""
        progress.send_report(f"downloading {plan.name} (once{size})")
        what = (
            f"no model configured: downloading the default model {plan.describe()}"
            if plan.ref.source == DEFAULT.label
            else f"downloading {plan.describe()}"
        )
        self.tell(
            types.MessageType.Info,
            f"{what} into the Hugging Face cache ({hub_cache_dir()}), once",
        )

    # -- completion --------------------------------------------------------------------------

    def _document_source(self, uri: str) -> tuple[str, str | None] | None:
        document = self.documents.get(uri)
        if document is None or len(document.text) > MAX_DOCUMENT_CHARS:
            return None
        return document.text, document.language_id

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


async def _after(first: asyncio.Future[None], then: Coroutine[Any, Any, None]) -> None:
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await first
    await then


def _mentions_model(raw: Any) -> bool:
    if isinstance(raw, dict) and isinstance(raw.get("cl-lsp"), dict):
        raw = raw["cl-lsp"]
    return isinstance(raw, dict) and "model" in raw


class Unanswerable(Exception):
    """There is no suggestion for this request; the reason goes to the log."""


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
