"""One completion, stage by stage: context -> prompt -> (engine) -> post-processing.

`plan_completion` does everything before the model (pure, cheap, on the caller's thread);
the caller runs the plan's request on the engine; `finish_completion` turns the raw text into
the suggestion. The language server and `cl-lsp complete` share these, so the terminal shows
exactly what an editor would get.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from .config import CompletionSettings, camel_dict
from .context import CompletionMode, CursorContext, extract_context
from .engine import Engine, Generation, GenerationRequest, Vocabulary
from .postprocess import (
    AUTO_CLOSED,
    FilterInput,
    auto_closed_span,
    clean_completion,
    end_of_block_cut,
)
from .prompts import FimPrompt, build_prompt
from .reuse import ResultCache, Shown, typed_ahead
from .scheduler import Scheduler, Ticket

log = logging.getLogger(__name__)

# Room kept free in the context window besides prompt and generation (control tokens etc.).
CONTEXT_MARGIN = 8


@dataclass(frozen=True)
class CompletionPlan:
    context: CursorContext
    prompt: FimPrompt | None  # None when nothing should be completed here
    request: GenerationRequest | None


@dataclass(frozen=True)
class Suggestion:
    text: str  # what to insert at the cursor ("" = nothing worth showing)
    raw: str
    plan: CompletionPlan
    generation: Generation | None
    replace_after: int = 0  # auto-closed characters after the cursor the text types over
    dropped_by: str | None = None  # the filter that emptied the suggestion, if one did


def budgets(settings: CompletionSettings, n_ctx: int, max_tokens: int) -> tuple[int, int]:
    """Prefix and suffix budgets, shrunk proportionally if they would overflow the window."""
    prefix, suffix = settings.prefix_tokens, settings.suffix_tokens
    room = max(16, n_ctx - max_tokens - CONTEXT_MARGIN)
    if prefix + suffix > room:
        scale = room / (prefix + suffix)
        prefix, suffix = max(8, int(prefix * scale)), int(suffix * scale)
    return prefix, suffix


def plan_completion(
    text: str,
    offset: int,
    *,
    vocab: Vocabulary,
    settings: CompletionSettings,
    n_ctx: int,
    language_id: str | None = None,
    path: str | None = None,
    anchor: int | None = None,
    suffix_anchor: str | None = None,
) -> CompletionPlan:
    multi_line_tokens = settings.max_tokens
    prefix_budget, suffix_budget = budgets(settings, n_ctx, multi_line_tokens)
    context = extract_context(
        text,
        offset,
        language_id=language_id,
        path=path,
        count_tokens=vocab.count,
        prefix_tokens=prefix_budget,
        suffix_tokens=suffix_budget,
        in_strings=settings.in_strings,
        in_comments=settings.in_comments,
        anchor=anchor,
    )
    if (
        suffix_anchor is not None
        and context.suffix != suffix_anchor
        and text.startswith(suffix_anchor, offset)
        and vocab.count(suffix_anchor) <= suffix_budget
    ):
        # Typing at the cursor leaves the text after it as it was: keep the suffix window
        # exactly as last time, so the SPM prompt (suffix first) keeps its KV cache.
        context = replace(context, suffix=suffix_anchor, window_end=offset + len(suffix_anchor))
    if context.mode is CompletionMode.NONE:
        return CompletionPlan(context, None, None)
    prompt = build_prompt(
        settings.prompt_format,
        context.prefix,
        context.suffix,
        vocab.encode,
        vocab.fim,
        vocab.bos if vocab.add_bos else None,
    )
    single = context.mode is CompletionMode.SINGLE_LINE
    request = GenerationRequest(
        tokens=prompt.tokens,
        max_tokens=settings.max_tokens_single_line if single else multi_line_tokens,
        temperature=settings.temperature,
        stop_at_newline=single,
        heal=prompt.heal,
        max_seconds=settings.generation_timeout_ms / 1000 or None,
        stop_check=None
        if single
        else functools.partial(end_of_block_cut, prefix=context.prefix, suffix=context.suffix),
    )
    return CompletionPlan(context, prompt, request)


#: Stop reasons that cut a generation short, wherever it was.
TRUNCATED = frozenset(("max_tokens", "context_full", "timeout"))


def finish_completion(plan: CompletionPlan, generation: Generation | None) -> Suggestion:
    if generation is None or generation.stop_reason == "cancelled":
        return Suggestion("", generation.text if generation else "", plan, generation)
    context = plan.context
    raw = generation.text
    if generation.stop_reason == "end_of_block":
        raw += "\n"  # cut at a line break: whole lines (which matters above the cursor's line)
    cleaned = clean_completion(
        raw,
        prefix=context.prefix,
        suffix=context.suffix,
        single_line=context.mode is CompletionMode.SINGLE_LINE,
        language=context.language,
        truncated=generation.stop_reason in TRUNCATED,
    )
    if cleaned.dropped_by:
        log.debug("suggestion dropped by %s: %r", cleaned.dropped_by, raw[:200])
    return Suggestion(
        cleaned.text, generation.text, plan, generation, cleaned.replace_after, cleaned.dropped_by
    )


#: Characters around the cursor judged when measuring what a suggestion types over.
SPAN_WINDOW = 4000


def replace_span(text: str, offset: int, suggestion: str, language: str | None) -> int:
    """How many auto-closed characters after the cursor ``suggestion`` types over (the item's
    range covers them, so ``f(|)`` + ``x)`` gives ``f(x)``, not ``f(x))``). Measured on the
    document as it is, so answers from the cache or typed-ahead reuse get it right too."""
    if not suggestion or offset >= len(text) or text[offset] not in AUTO_CLOSED:
        return 0
    ctx = FilterInput(
        prefix=text[max(0, offset - SPAN_WINDOW) : offset],
        suffix=text[offset : offset + SPAN_WINDOW],
        single_line="\n" not in suggestion,
        language=language,
    )
    return auto_closed_span(suggestion, ctx)


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


def _discard(future: asyncio.Future[object]) -> None:
    """A plan nobody waits for any more: retrieve its outcome so no error goes unobserved."""
    if not future.cancelled():
        future.exception()


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
    record.generated_tokens = len(generation.token_ids)
    record.stop_reason = generation.stop_reason
    if ticket.superseded_at is not None:
        record.stop_latency_ms = max(0.0, (generation.stopped_at - ticket.superseded_at) * 1000)


class Completions:
    """Completion requests for all documents: reuse first, then debounce, newest wins, model.

    Owns the per-document state that makes typing cheap: the stable prefix-window start, the
    suggestion last shown, the result cache, and the scheduler's tickets.
    """

    def __init__(self, engine: Engine, settings: Callable[[], CompletionSettings]) -> None:
        self.engine = engine
        self.settings = settings
        self.scheduler = Scheduler()
        self.cache = ResultCache()
        self.shown: dict[str, Shown] = {}
        self.anchors: dict[str, int] = {}
        self.suffixes: dict[str, str] = {}  # suffix window last used, per document
        self.recent: deque[RequestRecord] = deque(maxlen=1000)
        self.answers_without_model = 0
        # One thread plans every request, so the vocabulary's caches see one thread at a time.
        self._planner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cl-lsp-plan")

    def forget(self, uri: str) -> None:
        """The document closed: drop its state and stop its work."""
        self.scheduler.forget(uri)
        self.shown.pop(uri, None)
        self.anchors.pop(uri, None)
        self.suffixes.pop(uri, None)

    def changed(self, uri: str) -> None:
        """The document changed: whatever runs for it computes for old text."""
        self.scheduler.cancel(uri)

    def clear(self) -> None:
        """Settings or model changed: cached answers no longer hold."""
        self.cache.clear()
        self.shown.clear()

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
        record = RequestRecord(uri, version, offset, time.monotonic())
        self.recent.append(record)
        ticket = self.scheduler.take(uri)
        try:
            return await self._suggest(
                ticket, record, text, offset, current_version, language_id
            ), record
        except asyncio.CancelledError:
            record.outcome = "cancelled"
            raise
        finally:
            self.scheduler.release(ticket)
            record.total_ms = (time.monotonic() - record.started) * 1000

    async def _suggest(
        self,
        ticket: Ticket,
        record: RequestRecord,
        text: str,
        offset: int,
        current_version: Callable[[], int | None],
        language_id: str | None,
    ) -> str:
        settings = self.settings()
        vocab = self.engine.vocab
        assert vocab is not None
        before, after = settings.prefix_tokens * 8, settings.suffix_tokens * 8
        key = ResultCache.key(text, offset, before, after, (settings, self.engine.model_path))
        if settings.reuse:
            shown = self.shown.get(record.uri)
            rest = shown and typed_ahead(shown, text, offset, before, after)
            if rest:
                record.outcome = "typed_ahead"
                self.answers_without_model += 1
                self.cache.put(key, rest)
                return rest
            cached = self.cache.get(key)
            if cached is not None:
                record.outcome = "cached"
                self.answers_without_model += 1
                if cached:
                    self.shown[record.uri] = Shown(text, offset, cached)
                return cached
        # Plan (tree-sitter, tokenizing) on the planner thread while the debounce runs: the
        # event loop never tokenizes, and a new spot's cold tokenization hides in the wait.
        planning = asyncio.get_running_loop().run_in_executor(
            self._planner,
            functools.partial(
                plan_completion,
                text,
                offset,
                vocab=vocab,
                settings=settings,
                n_ctx=self.engine.n_ctx,
                language_id=language_id,
                path=record.uri,
                anchor=self.anchors.get(record.uri) if settings.stable_window else None,
                suffix_anchor=self.suffixes.get(record.uri) if settings.stable_window else None,
            ),
        )
        waited = time.monotonic()
        wait = self.scheduler.debounce_seconds(
            record.uri, settings.debounce_ms / 1000, adaptive=settings.adaptive_debounce
        )
        go_on = await self.scheduler.debounce(ticket, wait)
        record.debounce_ms = (time.monotonic() - waited) * 1000
        if not go_on or current_version() != record.version:
            record.outcome = "superseded" if not go_on else "stale"
            planning.add_done_callback(_discard)
            return ""
        plan = await planning
        self.anchors[record.uri] = plan.context.window_start
        self.suffixes[record.uri] = plan.context.suffix
        record.mode = plan.context.mode.value
        if plan.request is None or plan.prompt is None:
            record.outcome = "none"
            self.cache.put(key, "")
            return ""
        record.layout = plan.prompt.layout.value
        generating = asyncio.ensure_future(
            self.engine.generate(replace(plan.request, cancel=ticket.cancel))
        )
        woken = asyncio.ensure_future(ticket._woken.wait())
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
            return ""
        generation = generating.result()
        _note_generation(record, ticket, generating)
        if generation.stop_reason == "cancelled" or ticket.superseded:
            record.outcome = "superseded"
            return ""
        if current_version() != record.version:
            record.outcome = "stale"
            return ""
        suggestion = finish_completion(plan, generation)
        record.outcome = "generated"
        self.cache.put(key, suggestion.text)
        if suggestion.text:
            self.shown[record.uri] = Shown(text, offset, suggestion.text)
        return suggestion.text
