"""The last judges: does the suggestion add parse errors (tree-sitter), is it worth showing."""

from __future__ import annotations

from ... import syntax
from .balance import auto_closed_span, closes_what_is_left_open
from .text import FilterInput


def check_syntax(text: str, ctx: FilterInput) -> str:
    """Multi-line mode, where a grammar exists: keep the longest cut of the suggestion at a line
    end (the whole first) that adds no parse error to the windows (``prefix + cut +
    suffix[k:]``, ``k`` the auto-closed characters it types over, vs. ``prefix + suffix``),
    narrowed to the top-level unit around the cursor (:func:`syntax.unit_windows`); drop it
    if none does.

    Up to ``_LINEAR_CUTS`` line cuts are tried longest first; beyond that the cut is found by
    bisection (assuming cuts before the first bad line pass and the others fail: a few parses,
    not one per line).
    """
    if (ctx.single_line and not ctx.truncated) or ctx.language is None:
        return text
    language = ctx.language
    prefix, _ = syntax.unit_windows(ctx.prefix, "")
    if syntax.window_errors(language, prefix, syntax.unit_windows("", ctx.suffix)[1]) is None:
        return text

    def passes(cut: int) -> bool:
        candidate = text[:cut].rstrip()
        if not candidate:
            return True
        span = auto_closed_span(candidate, ctx)
        _, suffix = syntax.unit_windows("", ctx.suffix[span:])
        added = syntax.added_errors(prefix, candidate, suffix, language)
        return added is None or added <= 0

    if passes(len(text)):
        return text
    cuts = [0] + [i for i in range(1, len(text)) if text[i] == "\n"]
    if len(cuts) <= _LINEAR_CUTS + 1:
        best = next(cut for cut in reversed(cuts) if passes(cut))
    else:
        good, bad = 0, len(cuts)  # cuts[good] passes (the empty cut), cuts[bad] (the whole) fails
        while bad - good > 1:
            mid = (good + bad) // 2
            good, bad = (mid, bad) if passes(cuts[mid]) else (good, mid)
        best = cuts[good]
    return text[:best].rstrip()


_LINEAR_CUTS = 8


#: Characters a suggestion made only of is not worth showing: closers and separators the
#: editor auto-closes or the user types in one keystroke.
_TRIVIAL = frozenset(")]}>\"'`;,:")


def drop_trivial(text: str, ctx: FilterInput) -> str:
    """Drop a suggestion too short to help: blank, or only closers and separators
    (``)``, ``});``, ``"``...). Anything with a letter, digit, operator or opening bracket is
    kept, however short: a single ``x`` or ``0`` can finish an expression. So are closers a
    multi-line suggestion types to close what the prefix opened and the text after the cursor
    leaves open (the ``}`` that ends a dict literal): the document needs them."""
    if any(not ch.isspace() and ch not in _TRIVIAL for ch in text):
        return text
    return text if not ctx.single_line and closes_what_is_left_open(text, ctx) else ""
