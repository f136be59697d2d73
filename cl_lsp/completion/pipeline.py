"""One completion, stage by stage: context -> prompt -> (engine) -> post-processing.

`plan_completion` does everything before the model (pure, cheap, on the caller's thread);
the caller runs the plan's request on the engine; `finish_completion` turns the raw text into
the suggestion. The language server (through `completions.Completions`) and `cl-lsp complete`
share these, so the terminal shows exactly what an editor would get.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ..config import CompletionSettings
from ..engine import Generation, GenerationRequest, Tokenizer, kv_cache
from ..repository.selection import ContextBlock
from .context import CompletionMode, CursorContext, extract_context
from .families import FimFormat, Layout, TemplateError, fim_format
from .postprocess import (
    AUTO_CLOSED,
    FilterInput,
    auto_closed_span,
    clean_completion,
    end_of_block_cut,
)
from .prompts import FimPrompt, RepoFiles, build_prompt, fim_text

if TYPE_CHECKING:
    from ..repository.service import RepositoryContext

log = logging.getLogger(__name__)

# Room kept free in the context window besides prompt and generation (control tokens etc.).
CONTEXT_MARGIN = 8

#: The context block from other files for a cursor context, within a token budget, rendered
#: as comments or as the family's repository format ("files")
#: (`repository.service.RepositoryContext.block_for`, bound to the document).
RepositoryBlock = Callable[[CursorContext, int, str], ContextBlock]


def repository_block(
    repository: RepositoryContext, uri: str, text: str, count: Callable[[str], int]
) -> RepositoryBlock:
    """`repository`'s block for the document `uri` holding `text`, as `plan_completion`
    asks for it (the server, `cl-lsp complete` and the benches bind it alike)."""

    def block(context: CursorContext, budget: int, style: str) -> ContextBlock:
        window = (context.window_start, context.window_end)
        return repository.block_for(
            uri, text, context.offset, window, context.language, count, budget, style
        )

    return block


@dataclass(frozen=True)
class CompletionPlan:
    context: CursorContext
    prompt: FimPrompt | None  # None when nothing should be completed here
    request: GenerationRequest | None
    fim: FimFormat | None = None  # the model's FIM family (None: not a FIM model)
    cold: bool = False  # the window was cut to completion.coldBudgetMs (see `plan_within`)
    repository: ContextBlock | None = None  # code from elsewhere, before the prefix

    def describe_format(self) -> dict[str, str | None]:
        """The family and the template the prompt followed (for `complete --json`)."""
        fim, prompt = self.fim, self.prompt
        layout = prompt.layout if prompt is not None else None
        return {
            "family": fim.name if fim else None,
            "family_detected_by": fim.detected_by if fim else None,
            "template": (
                fim_text(fim, layout, "{prefix}", "{suffix}")
                if fim is not None and layout is not None and layout in fim.layouts
                else "{prefix}"
            ),
        }


@dataclass(frozen=True)
class Suggestion:
    text: str  # what to insert at the cursor ("" = nothing worth showing)
    raw: str
    plan: CompletionPlan
    generation: Generation | None
    replace_after: int = 0  # auto-closed characters after the cursor the text types over
    dropped_by: str | None = None  # the filter that emptied the suggestion, if one did


def budgets(
    settings: CompletionSettings, n_ctx: int, max_tokens: int, repo_tokens: int = 0
) -> tuple[int, int]:
    """Prefix and suffix budgets, shrunk proportionally if they would overflow the window
    (with `repo_tokens` of context from other files in it too)."""
    prefix, suffix = settings.prefix_tokens, settings.suffix_tokens
    room = max(16, n_ctx - max_tokens - CONTEXT_MARGIN - repo_tokens)
    if prefix + suffix > room:
        scale = room / (prefix + suffix)
        prefix, suffix = max(8, int(prefix * scale)), int(suffix * scale)
    return prefix, suffix


def plan_completion(
    text: str,
    offset: int,
    *,
    vocab: Tokenizer,
    settings: CompletionSettings,
    n_ctx: int,
    language_id: str | None = None,
    path: str | None = None,
    anchor: int | None = None,
    suffix_anchor: str | None = None,
    end_anchor: int | None = None,
    healing: bool = True,
    repository: RepositoryBlock | None = None,
    repo_tokens: int = 0,
) -> CompletionPlan:
    """The plan for a completion at `offset`; `repository` (with `repo_tokens` of the window
    kept for it) gives the context block that goes before the prefix: code from other files,
    as the prefix's first lines, so it is where the model expects a file's start and a
    keystroke at the cursor, which changes the prompt after it, leaves it in the cache."""
    multi_line_tokens = settings.max_tokens
    repo_tokens = repo_tokens if repository is not None else 0
    prefix_budget, suffix_budget = budgets(settings, n_ctx, multi_line_tokens, repo_tokens)
    fim = model_format(vocab, settings.template.value)
    if fim is not None and fim.default_layout is Layout.PSM:
        # Each keystroke re-evaluates a PSM prompt's suffix: keep it short.
        suffix_budget = min(suffix_budget, settings.psm_suffix_tokens)
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
        end_anchor=end_anchor,
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
        return CompletionPlan(context, None, None, fim)
    block = None
    if repository is not None and repo_tokens:
        style = "files" if fim is not None and fim.repository is not None else "comments"
        block = repository(context, repo_tokens, style)
    files = (
        RepoFiles(block.repo, block.path, block.files())
        if block is not None and block.style == "files" and block.snippets
        else None
    )
    prompt = build_prompt(
        settings.prompt_format,
        block.text + context.prefix if block is not None and files is None else context.prefix,
        context.suffix,
        vocab.encode,
        fim,
        vocab.bos if vocab.add_bos else None,
        healing=healing,
        files=files,
    )
    single = context.mode is CompletionMode.SINGLE_LINE
    request = GenerationRequest(
        tokens=prompt.tokens,
        max_tokens=settings.max_tokens_single_line if single else multi_line_tokens,
        temperature=settings.temperature,
        stop_at_newline=single,
        heal=prompt.heal,
        text=prompt.text,
        stop_ids=fim.stop_ids if fim is not None else frozenset(),
        max_seconds=settings.generation_timeout_ms / 1000 or None,
        reuse_min_run=settings.cache_reuse,
        draft=settings.draft_tokens,
        stop_check=None
        if single
        else functools.partial(end_of_block_cut, prefix=context.prefix, suffix=context.suffix),
    )
    return CompletionPlan(context, prompt, request, fim, repository=block)


#: Window sizes tried, largest first, when the whole window would take too long to evaluate.
COLD_SCALES = (0.7, 0.5, 0.35, 0.25, 0.18, 0.12, 0.08, 0.05)


def plan_within(
    text: str,
    offset: int,
    *,
    held: Sequence[int],
    rate: float | None,
    settings: CompletionSettings,
    **kwargs: Any,
) -> CompletionPlan:
    """`plan_completion`, with the window cut when evaluating what the model's cache does not
    hold of it (`held`, at `rate` prompt tokens/s) would take longer than
    completion.coldBudgetMs: the largest of COLD_SCALES of the window that fits. A later
    request at that place gets a larger window, reusing what this one evaluated (all of it
    with cache reuse; without it, what comes before the first new token)."""
    plan = plan_completion(text, offset, settings=settings, **kwargs)
    budget = settings.cold_budget_ms / 1000
    if budget <= 0 or not rate or plan.request is None:
        return plan
    allowed = rate * budget

    def cost(candidate: CompletionPlan) -> int:
        assert candidate.request is not None
        tokens = candidate.request.tokens[:-1]
        return kv_cache.plan(held, tokens, min_run=settings.cache_reuse).to_evaluate + 1

    if cost(plan) <= allowed:
        return plan
    # Not last time's edges; no code from other files (the next request adds it back).
    kwargs.update(anchor=None, suffix_anchor=None, end_anchor=None, repo_tokens=0)
    smaller = plan
    for scale in COLD_SCALES:
        cut = replace(
            settings,
            prefix_tokens=max(16, int(settings.prefix_tokens * scale)),
            suffix_tokens=int(settings.suffix_tokens * scale),
            psm_suffix_tokens=int(settings.psm_suffix_tokens * scale),
        )
        candidate = plan_completion(text, offset, settings=cut, **kwargs)
        if candidate.request is None:
            break
        smaller = candidate
        if cost(candidate) <= allowed:
            break
    log.debug(
        "cold start: window cut to %d tokens", len(smaller.request.tokens) if smaller.request else 0
    )
    return replace(smaller, cold=True)


def model_format(vocab: Tokenizer, template: str) -> FimFormat | None:
    """The model's FIM format; a `completion.template` the model has not the tokens of is
    ignored here (the server tells the user once, when the model loads)."""
    try:
        return fim_format(vocab, template)
    except TemplateError:
        return fim_format(vocab, "auto")


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
