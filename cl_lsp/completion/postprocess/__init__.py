"""From raw model text to the text worth showing: named, pure filters applied in order.

Each filter takes the text so far and the cursor context (:class:`FilterInput`) and returns the
new text; "" drops the suggestion. :func:`clean_completion` runs :data:`FILTERS` in this order,
then :func:`auto_closed_span` says how many characters after the cursor the suggestion types
over (:attr:`Cleaned.replace_after`):

1. ``strip_control_tokens`` -- first, so no later filter sees ``<EOT>`` spelled as text.
2. ``drop_unfinished_end`` -- a generation cut short by the token cap keeps its complete lines
   (or loses its half-written last word); before any filter reads the half line as code.
3. ``cut_single_line`` -- a single-line request never needs the multi-line reasoning below.
4. ``trim_suffix_overlap`` -- before any bracket or scope counting: a copy of the text after
   the cursor would count its closers twice.
5. ``stop_at_scope_end`` -- the suggestion ends where the cursor's block ends (indentation, the
   tree-sitter scope, a closer the suffix already has); what follows is another block.
6. ``drop_repeated_lines`` -- after the scope cut, so only the loop inside the block is judged.
7. ``balance_brackets`` -- after every cut that can unbalance the text.
8. ``drop_empty_block`` -- after the bracket cut, which can leave an ``if x:`` with no body.
9. ``normalize_indentation`` -- cosmetic, but before the syntax check: Python's parse depends
   on it.
10. ``trim_trailing_whitespace``
11. ``check_syntax`` -- the most expensive check (a tree-sitter parse per candidate), so it
    runs on the smallest text; multi-line requests (and single-line ones cut short) only.
12. ``drop_trivial`` -- last, since every cut above can leave a lone ``}`` behind.

Then ``auto_closed_span`` (not a text filter: it only measures) -- computed on the final text.

Bracket bookkeeping is lexical (per language: which quotes and comments hide brackets); parse
errors and scopes come from tree-sitter (:mod:`cl_lsp.syntax`) when a grammar exists.
"""

from __future__ import annotations

from dataclasses import replace

from .balance import auto_closed_span, balance_brackets
from .checks import check_syntax, drop_trivial
from .indentation import normalize_indentation
from .repetition import drop_repeated_lines, trim_suffix_overlap
from .scope import drop_empty_block, end_of_block_cut, stop_at_scope_end
from .text import (
    AUTO_CLOSED,
    BLOCK_OPENERS,
    CONTROL_TEXT,
    Cleaned,
    Filter,
    FilterInput,
    cut_single_line,
    drop_unfinished_end,
    indent_width,
    lines_above,
    strip_control_tokens,
    trim_trailing_whitespace,
)

__all__ = [
    "AUTO_CLOSED",
    "BLOCK_OPENERS",
    "CONTROL_TEXT",
    "FILTERS",
    "Cleaned",
    "Filter",
    "FilterInput",
    "auto_closed_span",
    "balance_brackets",
    "check_syntax",
    "clean_completion",
    "cut_single_line",
    "drop_empty_block",
    "drop_repeated_lines",
    "drop_trivial",
    "drop_unfinished_end",
    "end_of_block_cut",
    "indent_width",
    "lines_above",
    "normalize_indentation",
    "stop_at_scope_end",
    "strip_control_tokens",
    "trim_suffix_overlap",
    "trim_trailing_whitespace",
]


FILTERS: tuple[Filter, ...] = (
    strip_control_tokens,
    drop_unfinished_end,
    cut_single_line,
    trim_suffix_overlap,
    stop_at_scope_end,
    drop_repeated_lines,
    balance_brackets,
    drop_empty_block,
    normalize_indentation,
    trim_trailing_whitespace,
    check_syntax,
    drop_trivial,
)


def clean_completion(
    raw: str,
    *,
    prefix: str,
    suffix: str,
    single_line: bool,
    language: str | None = None,
    truncated: bool = False,
) -> Cleaned:
    """Run :data:`FILTERS` on ``raw``, then measure :func:`auto_closed_span`.

    Where the suggestion goes above the cursor's line (:func:`lines_above`) the model writes
    whole lines and a line break (and the indentation the cursor's line had): the filters judge
    those lines as if written on a blank line of their own before the cursor's line, and the
    suggestion ends with the line break and that indentation again, so the code after the
    cursor moves down unchanged. Output with no line break there is typed at the cursor, in
    front of the code (``x = `` before ``f()``).
    """
    ctx = FilterInput(
        prefix=prefix,
        suffix=suffix,
        single_line=single_line,
        language=language,
        truncated=truncated,
    )
    if not raw:
        return Cleaned("")
    indent = lines_above(ctx)
    lines = strip_control_tokens(raw, ctx).rstrip(" \t")
    if indent is not None and "\n" not in lines and truncated:
        return Cleaned("", dropped_by=drop_unfinished_end.__name__)  # no line finished
    if indent is None or "\n" not in lines:  # (a word typed before the code, glued to it)
        cleaned = _run_filters(raw, ctx)
        if not cleaned.text:
            return cleaned
        return replace(cleaned, replace_after=auto_closed_span(cleaned.text, ctx))
    if lines.endswith("\n"):  # the line break before the cursor's line, written in full
        lines = lines[:-1]
        ctx = replace(ctx, truncated=False)  # what is left ends with a complete line
    cleaned = _run_filters(lines, replace(ctx, suffix="\n" + indent + suffix))
    return replace(cleaned, text=cleaned.text + "\n" + indent) if cleaned.text else cleaned


def _run_filters(text: str, ctx: FilterInput) -> Cleaned:
    for step in FILTERS:
        text = step(text, ctx)
        if not text:
            return Cleaned("", dropped_by=step.__name__)
    return Cleaned(text)
