"""Completion requests for open documents: reuse first, then debounce, newest wins, the model.

`Completions` takes each request through named steps (reuse, plan, debounce, generate,
finish) and keeps one `DocumentState` per document: what typing carries from one request to
the next. The pure stages are in `pipeline`; the per-document tickets in `scheduler`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from ..config import CompletionSettings, camel_dict
from ..engine import Engine, EngineError, Generation, Tokenizer
from ..repository.service import RepositoryContext
from .families import FimFormat
from .pipeline import (
    CompletionPlan,
    finish_completion,
    model_format,
    plan_completion,
    plan_within,
    repository_block,
)
from .reuse import CacheKey, ResultCache, Shown, typed_ahead
from .scheduler import Scheduler, Ticket

log = logging.getLogger(__name__)

# How long a request waits for its document's superseded generation to end before starting
# its own anyway (it ends within a token or a closed stream; this bounds a hung one).
PREVIOUS_GENERATION_WAIT = 2.0


@dataclass
class RequestRecord:
    """What happened to one completion request (for the log, `cl-lsp.status` and benches)."""

    uri: str
    version: int
    offset: int
    started: float  # time.monotonic()
    outcome: str = "pending"  # generated, typed_ahead, cached, none, superseded, stale, cancelled
    debounce_ms: float = 0.0
    model_ms: float = 0.0
    total_ms: float = 0.0
    prompt_tokens: int = 0
    evaluated_tokens: int = 0
    generated_tokens: int = 0
    stop_reason: str | None = None
    stop_latency_ms: float | None = None  # superseded generation: from supersede to stop
    layout: str | None = None
    mode: str | None = None

    @property
    def overhead_ms(self) -> float:
        """Everything but waiting out the debounce and running the model."""
        return self.total_ms - self.debounce_ms - self.model_ms

    def as_dict(self) -> dict[str, object]:
        fields = camel_dict(self)
        fields["overheadMs"] = self.overhead_ms
        return fields


@dataclass
class DocumentState:
    """What one document's completions carry from one request to the next."""

    shown: Shown | None = None  # the suggestion last shown, for typed-ahead reuse
    anchor: int | None = None  # where the prefix window started last time
    suffix: str | None = None  # the suffix window used last time
    tail: int | None = None  # characters after the suffix window last time (typing leaves it)
    # The generation last started for this document: the next one starts after it ended (a
    # superseded one ends within a token, or as its stream closes), so at most one runs.
    generating: asyncio.Future[Generation] | None = None
    cursor: int | None = None  # where the user was last: the last request, or the last edit

    def end_in(self, text: str) -> int | None:
        """Last time's suffix window end in `text` (edits before it do not move it)."""
        return None if self.tail is None else len(text) - self.tail


@dataclass
class Pending:
    """One request on its way through the steps."""

    record: RequestRecord
    ticket: Ticket
    state: DocumentState
    text: str
    offset: int
    language_id: str | None
    current_version: Callable[[], int | None]
    settings: CompletionSettings
    key: CacheKey  # the result cache's key for this request's context

    def stale(self) -> bool:
        """The document changed (or closed) since the request was made."""
        return self.current_version() != self.record.version


def _discard(future: asyncio.Future[object]) -> None:
    """A plan nobody waits for any more: retrieve its outcome so no error goes unobserved."""
    if not future.cancelled():
        future.exception()


def _answer_at_once(ticket: Ticket, planning: asyncio.Future[CompletionPlan]) -> None:
    """A plan with nothing to write (inside a name, a comment when those are off) needs no
    debounce: its empty answer costs nothing, so the editor gets it as soon as it is known."""
    if planning.cancelled() or planning.exception() is not None:
        return
    if planning.result().request is None:
        ticket.end_debounce()


def _note_generation(
    record: RequestRecord, ticket: Ticket, done: asyncio.Future[Generation]
) -> None:
    """Fill a request's record from its generation (also after it was answered)."""
    if done.cancelled() or done.exception() is not None:
        return
    generation = done.result()
    record.model_ms = generation.seconds * 1000
    record.prompt_tokens = generation.prompt_tokens
    record.evaluated_tokens = generation.evaluated_tokens
    record.generated_tokens = generation.generated_tokens
    record.stop_reason = generation.stop_reason
    if ticket.superseded_at is not None:
        record.stop_latency_ms = max(0.0, (generation.stopped_at - ticket.superseded_at) * 1000)


class Completions:
    """Completion requests for all documents: reuse first, then debounce, newest wins, model.

    Owns what makes typing cheap: each document's `DocumentState`, the result cache, and the
    scheduler's tickets.
    """

    def __init__(
        self,
        engine: Engine,
        settings: Callable[[], CompletionSettings],
        source: Callable[[str], tuple[str, str | None] | None] = lambda uri: None,
        repository: Callable[[], RepositoryContext | None] = lambda: None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.source = source  # an open document's text and language id, for warm-ups
        self.repository = repository  # code from other files, when the server has a workspace
        self._warm_up: asyncio.Task[None] | None = None
        self.scheduler = Scheduler()
        self.cache = ResultCache()
        self.documents: dict[str, DocumentState] = {}
        self.recent: deque[RequestRecord] = deque(maxlen=1000)
        self.answers_without_model = 0
        self.warmed_tokens = 0  # prompt tokens evaluated by warm-ups
        # One thread plans every request, so the vocabulary's caches see one thread at a time.
        self._planner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cl-lsp-plan")

    def forget(self, uri: str) -> None:
        """The document closed: drop its state and stop its work."""
        self.scheduler.forget(uri)
        self.documents.pop(uri, None)

    def opened(self, uri: str) -> None:
        """The document opened: warm the model's cache at its start after a pause."""
        self.documents.setdefault(uri, DocumentState()).cursor = 0
        self.warm_up_later(uri)

    def changed(self, uri: str, cursor: int | None = None) -> None:
        """The document changed (the user's cursor is at `cursor`, if known): whatever runs for
        it computes for old text; its cache is warmed at the cursor after a pause."""
        self.scheduler.cancel(uri)
        if cursor is not None:
            self.documents.setdefault(uri, DocumentState()).cursor = cursor
        self.warm_up_later(uri)

    # -- warming up ----------------------------------------------------------------------------

    def warm_up_later(self, uri: str) -> None:
        """After completion.warmUpMs without news, evaluate `uri`'s window around its last
        cursor into the model's cache (the engine's lowest priority). Only the newest place
        is warmed: a request or an edit anywhere starts the wait again."""
        self.stop_warm_up()
        delay = self.settings().warm_up_ms / 1000
        if delay > 0 and uri in self.documents and self.engine.warms:
            self._warm_up = asyncio.ensure_future(self._warm(uri, delay))

    @property
    def warm_up_pending(self) -> int:
        """1 while a warm-up waits or runs, else 0."""
        return int(self._warm_up is not None and not self._warm_up.done())

    def stop_warm_up(self) -> None:
        if self._warm_up is not None:
            self._warm_up.cancel()
            self._warm_up = None

    async def _warm(self, uri: str, delay: float) -> None:
        await asyncio.sleep(delay)
        source, state, vocab = self.source(uri), self.documents.get(uri), self.engine.vocab
        if source is None or state is None or vocab is None or not self.engine.ready:
            return
        text, language_id = source
        settings = self.settings()
        stable = settings.stable_window
        plan = await asyncio.get_running_loop().run_in_executor(
            self._planner,
            functools.partial(
                plan_completion,
                text,
                min(state.cursor or 0, len(text)),
                vocab=vocab,
                settings=settings,
                n_ctx=self.engine.n_ctx,
                language_id=language_id,
                path=uri,
                anchor=state.anchor if stable else None,
                suffix_anchor=state.suffix if stable else None,
                end_anchor=state.end_in(text) if stable else None,
                healing=self.engine.heals,
                **self._repository(uri, text, vocab),
            ),
        )
        if plan.request is None:
            return
        request = replace(plan.request, cancel=threading.Event())
        try:
            evaluated = await self.engine.warm(request)
        except asyncio.CancelledError:
            request.cancel.set()
            raise
        except EngineError as error:  # a warm-up is a guess: a failure only loses it
            log.debug("warm-up of %s failed: %s", uri, error)
            return
        self.warmed_tokens += evaluated

    def clear(self) -> None:
        """Settings or model changed: cached answers no longer hold."""
        self.cache.clear()
        for state in self.documents.values():
            state.shown = None

    def model_format(self) -> FimFormat | None:
        """The loaded model's FIM family (None: no model, or not a FIM model)."""
        vocab = self.engine.vocab
        return model_format(vocab, self.settings().template.value) if vocab is not None else None

    def table_sizes(self) -> dict[str, int]:
        """Entries in each table that lives as long as the server (for `cl-lsp.status`)."""
        states = self.documents.values()
        return {
            "shown": sum(state.shown is not None for state in states),
            "anchors": sum(state.anchor is not None for state in states),
            "suffixes": sum(state.suffix is not None for state in states),
            "resultCache": len(self.cache),
            "recent": len(self.recent),
        }

    async def suggest(
        self,
        uri: str,
        text: str,
        version: int,
        offset: int,
        current_version: Callable[[], int | None],
        *,
        language_id: str | None = None,
    ) -> tuple[str, RequestRecord]:
        """The suggestion for `offset` in `text` ("" for none) and the request's record."""
        record = RequestRecord(uri, version, offset, time.monotonic())
        self.recent.append(record)
        self.stop_warm_up()
        ticket = self.scheduler.take(uri)
        settings = self.settings()
        before, after = settings.prefix_tokens * 8, settings.suffix_tokens * 8
        key = ResultCache.key(text, offset, before, after, (settings, self.engine.model_path))
        state = self.documents.setdefault(uri, DocumentState())
        state.cursor = offset
        pending = Pending(
            record, ticket, state, text, offset, language_id, current_version, settings, key
        )
        try:
            return await self._suggest(pending), record
        except asyncio.CancelledError:
            record.outcome = "cancelled"
            raise
        finally:
            self.scheduler.release(ticket)
            record.total_ms = (time.monotonic() - record.started) * 1000
            if self._warm_up is None and not ticket.superseded:
                self.warm_up_later(uri)  # a window cut to the cold budget grows meanwhile

    async def _suggest(self, pending: Pending) -> str:
        if pending.settings.reuse and (reused := self._reuse(pending)) is not None:
            return reused
        planning = self._plan(pending)
        planning.add_done_callback(functools.partial(_answer_at_once, pending.ticket))
        if not await self._debounce(pending):
            planning.add_done_callback(_discard)
            return ""
        plan = await planning
        self._carry_windows(pending, plan)
        if plan.request is None or plan.prompt is None:
            pending.record.outcome = "none"
            self.cache.put(pending.key, "")
            return ""
        generation = await self._generate(pending, plan)
        if generation is None:
            return ""
        return self._finish(pending, plan, generation)

    def _reuse(self, pending: Pending) -> str | None:
        """The answer without the model: the rest of a suggestion the user is typing, or a
        cached one for the same context; None when the model must run."""
        record, settings, shown = pending.record, pending.settings, pending.state.shown
        before, after = settings.prefix_tokens * 8, settings.suffix_tokens * 8
        rest = shown and typed_ahead(shown, pending.text, pending.offset, before, after)
        if rest:
            record.outcome = "typed_ahead"
            self.answers_without_model += 1
            self.cache.put(pending.key, rest)
            return rest
        cached = self.cache.get(pending.key)
        if cached is None:
            return None
        record.outcome = "cached"
        self.answers_without_model += 1
        if cached:
            pending.state.shown = Shown(pending.text, pending.offset, cached)
        return cached

    def _plan(self, pending: Pending) -> asyncio.Future[CompletionPlan]:
        """Plan (tree-sitter, tokenizing) on the planner thread while the debounce runs: the
        event loop never tokenizes, and a new spot's cold tokenization hides in the wait."""
        vocab = self.engine.vocab
        assert vocab is not None
        stable = pending.settings.stable_window
        return asyncio.get_running_loop().run_in_executor(
            self._planner,
            functools.partial(
                plan_within,
                pending.text,
                pending.offset,
                held=self.engine.held_tokens(),
                rate=self.engine.prefill_rate,
                vocab=vocab,
                settings=pending.settings,
                n_ctx=self.engine.n_ctx,
                language_id=pending.language_id,
                path=pending.record.uri,
                anchor=pending.state.anchor if stable else None,
                suffix_anchor=pending.state.suffix if stable else None,
                end_anchor=pending.state.end_in(pending.text) if stable else None,
                healing=self.engine.heals,
                **self._repository(pending.record.uri, pending.text, vocab),
            ),
        )

    def _repository(self, uri: str, text: str, vocab: Tokenizer) -> dict[str, object]:
        """`plan_completion`'s arguments for the context block of `uri`, if there is one."""
        repository = self.repository()
        if repository is None or not repository.settings.enabled:
            return {}
        return {
            "repository": repository_block(repository, uri, text, vocab.count),
            "repo_tokens": repository.settings.repo_tokens,
        }

    async def _debounce(self, pending: Pending) -> bool:
        """Wait out the debounce; False (and why, in the record) if the request is superseded
        meanwhile or the document changed."""
        record, settings = pending.record, pending.settings
        waited = time.monotonic()
        wait = self.scheduler.debounce_seconds(
            record.uri, settings.debounce_ms / 1000, adaptive=settings.adaptive_debounce
        )
        go_on = await self.scheduler.debounce(pending.ticket, wait)
        record.debounce_ms = (time.monotonic() - waited) * 1000
        if not go_on or pending.stale():
            record.outcome = "superseded" if not go_on else "stale"
            return False
        return True

    def _carry_windows(self, pending: Pending, plan: CompletionPlan) -> None:
        """Keep the plan's window edges for the document's next request (stable window); not
        those of a window cut to the cold budget, which the next request grows."""
        state, context = pending.state, plan.context
        state.anchor = None if plan.cold else context.window_start
        state.suffix = None if plan.cold else context.suffix
        state.tail = None if plan.cold else len(pending.text) - context.window_end
        pending.record.mode = plan.context.mode.value

    async def _generate(self, pending: Pending, plan: CompletionPlan) -> Generation | None:
        """Run the plan on the engine until it ends or the request is superseded; None (and
        why, in the record) when there is nothing to finish."""
        assert plan.request is not None and plan.prompt is not None
        record, ticket = pending.record, pending.ticket
        record.layout = plan.prompt.layout.value
        previous = pending.state.generating
        if previous is not None and not previous.done():
            await asyncio.wait({previous}, timeout=PREVIOUS_GENERATION_WAIT)
            if ticket.superseded:
                record.outcome = "superseded"
                return None
        generating = asyncio.ensure_future(
            self.engine.generate(replace(plan.request, cancel=ticket.cancel))
        )
        pending.state.generating = generating
        woken = asyncio.ensure_future(ticket.superseded_wait())
        try:
            await asyncio.wait({generating, woken}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            generating.cancel()  # the engine sets the request's cancel flag
            raise
        finally:
            woken.cancel()
        if not generating.done():
            # Superseded while queued behind other work or running: answer at once; the
            # engine drops the request when it reaches it (or within a token).
            record.outcome = "superseded"
            generating.add_done_callback(functools.partial(_note_generation, record, ticket))
            return None
        generation = generating.result()
        _note_generation(record, ticket, generating)
        if generation.stop_reason == "cancelled" or ticket.superseded:
            record.outcome = "superseded"
            return None
        if pending.stale():
            record.outcome = "stale"
            return None
        return generation

    def _finish(self, pending: Pending, plan: CompletionPlan, generation: Generation) -> str:
        """Post-process the generation; remember it for reuse."""
        suggestion = finish_completion(plan, generation)
        pending.record.outcome = "generated"
        self.cache.put(pending.key, suggestion.text)
        if suggestion.text:
            pending.state.shown = Shown(pending.text, pending.offset, suggestion.text)
        return suggestion.text
