"""One completion, stage by stage: context -> prompt -> (engine) -> post-processing.

`plan_completion` does everything before the model (pure, cheap, on the caller's thread);
the caller runs the plan's request on the engine; `finish_completion` turns the raw text into
the suggestion. The language server and `cl-lsp complete` share these, so the terminal shows
exactly what an editor would get.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import CompletionSettings
from .context import CompletionMode, CursorContext, extract_context
from .engine import Generation, GenerationRequest, Vocabulary
from .postprocess import clean_completion
from .prompts import FimPrompt, Layout, build_fim_prompt, build_prefix_prompt, choose_layout

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
    if context.mode is CompletionMode.NONE:
        return CompletionPlan(context, None, None)
    layout = choose_layout(settings.prompt_format, context.prefix, vocab.fim)
    if layout is Layout.PREFIX:
        prompt = build_prefix_prompt(vocab.encode(context.prefix),
                                     vocab.bos if vocab.add_bos else None)
    else:
        assert vocab.fim is not None
        prompt = build_fim_prompt(context.prefix, context.suffix, vocab.encode, vocab.fim, layout)
    single = context.mode is CompletionMode.SINGLE_LINE
    request = GenerationRequest(
        tokens=prompt.tokens,
        max_tokens=settings.max_tokens_single_line if single else multi_line_tokens,
        temperature=settings.temperature,
        stop_at_newline=single,
    )
    return CompletionPlan(context, prompt, request)


def finish_completion(plan: CompletionPlan, generation: Generation | None) -> Suggestion:
    if generation is None or generation.stop_reason == "cancelled":
        return Suggestion("", generation.text if generation else "", plan, generation)
    context = plan.context
    text = clean_completion(
        generation.text,
        prefix=context.prefix,
        suffix=context.suffix,
        single_line=context.mode is CompletionMode.SINGLE_LINE,
    )
    return Suggestion(text, generation.text, plan, generation)
