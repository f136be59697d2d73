"""Brackets around the cursor: which cuts of a suggestion leave them as the text after the
cursor expects (:func:`balance_brackets`), and which auto-closed characters it types over
(:func:`auto_closed_span`). Lexical, per language (:mod:`cl_lsp.syntax`)."""

from __future__ import annotations

from dataclasses import dataclass

from ... import brackets, languages
from .text import FilterInput, closing_run, lines_above, rest_of_line


@dataclass(frozen=True)
class _Snapshot:
    """The bracket state after ``text[:cut]`` of a suggestion."""

    cut: int
    open: tuple[str, ...]  # openers open after the cut (the prefix's survivors, then own)
    indents: tuple[int, ...]  # the statement indentation of each
    errors: int  # mismatched closers, closers of nothing (with a grammar)
    mode: str | None
    head: str  # the text of the line the suffix would continue, if blank; else "x"


def _head(line: str) -> str:
    """A line's text as :func:`brackets.bracket_effect` needs it: only a blank one matters (a
    closer first on the suffix's line then starts the line), so every other is one key."""
    return line if not line.strip() else "x"


class Walk:
    """A suggestion scanned after the prefix: snapshots at every candidate cut (line ends,
    before closing a bracket of the prefix, after closing its own outermost bracket, the end)
    and, for each closer of a prefix bracket it types, where it is and which of the prefix's
    open brackets it closes (an index into ``prefix_open``, None if it matches none)."""

    def __init__(self, text: str, ctx: FilterInput) -> None:
        lex = languages.lexicon_for(ctx.language)
        before = brackets.bracket_effect(ctx.prefix, lex, None)
        self.prefix_open = before.residual
        self.prefix_indents = before.residual_indents
        self.snapshots: list[_Snapshot] = []
        self.outer_closes: list[tuple[int, str, int | None]] = []
        outer = list(range(len(before.residual)))  # indices of the prefix's openers still open
        own: list[tuple[str, int]] = []
        errors = 0
        lexer = brackets.Lexer(lex, before.mode)
        cursor_line = ctx.prefix[ctx.prefix.rfind("\n") + 1 :]
        lines = brackets.IndentTracker(text, cursor_line, before.logical_end)

        def snap(cut: int) -> None:
            head = (
                cursor_line + text[:cut] if lines.line_start == 0 else text[lines.line_start : cut]
            )
            self.snapshots.append(
                _Snapshot(
                    cut,
                    (*(self.prefix_open[i] for i in outer), *(o for o, _ in own)),
                    (*(self.prefix_indents[i] for i in outer), *(i for _, i in own)),
                    errors,
                    lexer.mode,
                    _head(head),
                )
            )

        for pos, token in lexer.run(text):
            if token == "\n":
                snap(pos)
                top = (
                    own[-1]
                    if own
                    else (
                        (self.prefix_open[outer[-1]], self.prefix_indents[outer[-1]])
                        if outer
                        else None
                    )
                )
                lines.newline(pos, top)
            elif token == "!":
                # Not an error in itself: an apostrophe in JSX text or prose opens a "string"
                # too. Cuts inside such a string are refused (their mode), and the suffix's
                # strings are still checked.
                pass
            elif token in "([{":
                own.append((token, lines.logical))
            elif own:
                errors += own.pop()[0] != brackets.PAIRS[token]
                if not own and lines.line_start == 0:
                    snap(pos + 1)  # mid-line cuts only on the line the cursor is on
            else:
                snap(pos)
                found = brackets.align(
                    (token,),
                    tuple(self.prefix_open[i] for i in outer),
                    0,
                    (lines.closer_indent(pos),),
                    tuple(self.prefix_indents[i] for i in outer),
                )
                if outer and found.closed:
                    (depth,) = found.closed
                    self.outer_closes.append((pos, token, outer[depth]))
                    errors += found.errors
                    del outer[depth:]
                else:
                    self.outer_closes.append((pos, token, None))
                    # A closer of nothing closes something before the window: we can't tell
                    # what. Without a grammar it may just be prose (`1)` in a list).
                    errors += 1 if outer else lex.trust_closers
        snap(len(text))


class Balance:
    """Judges cuts of a suggestion against the brackets around the cursor."""

    def __init__(self, ctx: FilterInput) -> None:
        self.ctx = ctx
        self.lex = languages.lexicon_for(ctx.language)
        before = brackets.bracket_effect(ctx.prefix, self.lex, None)
        cursor_line = ctx.prefix[ctx.prefix.rfind("\n") + 1 :]
        self.base_effect = brackets.bracket_effect(
            ctx.suffix, self.lex, before.mode, _head(cursor_line)
        )
        self.base = brackets.apply_effect(
            self.base_effect, before.residual, before.residual_indents
        )
        # A suggestion that ends the string or comment the cursor is in makes the suffix read
        # as code (while the document as it is reads it inside out): judged against the
        # suffix read as code right after the cursor.
        self.closed_effect = brackets.bracket_effect(ctx.suffix, self.lex, None, _head(cursor_line))
        self.closed_base = brackets.apply_effect(
            self.closed_effect, before.residual, before.residual_indents
        )
        self.mode0 = before.mode
        self.run = closing_run(ctx)

    def replacement(self, snap: _Snapshot) -> int | None:
        """How many auto-closed characters the cut types over (0: none), None if it breaks the
        bracket structure.

        A cut is sound when the text after it (``suffix[k:]``) adds no bracket error: no
        closer that skips an opener left open, none that matches nothing open (fewer errors
        than before is fine: the suggestion may close what the text after the cursor leaves
        open); and it ends in the same lexical mode. Openers left open at the end of the
        windows are not errors (the suffix window may end before their closers) unless the
        language has no grammar to check the result with, or the text after the cursor
        closes nothing at all.
        """
        mode = snap.mode
        if (
            self.lex.prose_quotes
            and mode in self.lex.quotes
            and mode != self.mode0
            and not rest_of_line(self.ctx).strip()
        ):
            mode = None  # the "string" ends with the line, swallowing nothing
        if snap.errors or mode not in (self.mode0, None, *self.lex.line_comments):
            return None
        base, base_effect = self.base, self.base_effect
        if self.mode0 is not None and mode != self.mode0:
            base, base_effect = self.closed_base, self.closed_effect
        strict_left = self.ctx.language is None or not base_effect.demand
        best: tuple[int, int, int] | None = None
        for k in range(len(self.run) + 1):
            effect = brackets.bracket_effect(self.ctx.suffix[k:], self.lex, mode, snap.head)
            found = brackets.apply_effect(effect, snap.open, snap.indents)
            sound = found.errors <= base.errors and (not strict_left or found.left <= base.left)
            if (
                sound
                and effect.mode == base_effect.mode
                and (best is None or (found.errors, found.left, k) < best)
            ):
                best = (found.errors, found.left, k)
        return None if best is None else best[2]


def balance_brackets(text: str, ctx: FilterInput) -> str:
    """Keep the longest cut of the suggestion that leaves the brackets as the suffix expects.

    Brackets are counted outside strings and comments (per language, lexically) and matched
    the way a reader matches them (:func:`brackets.align`): a closer closes the innermost opener
    of its kind, and a closer that starts its line skips openers on statements indented more
    than it (``if (x) {`` left open by an overrun, whose ``}`` is really the outer block's).
    A cut is sound when the text after the cursor, read after it, makes no more bracket errors
    than it does now (skipped openers, closers of nothing): so the suggestion may close a
    bracket the suffix leaves open (the middle of ``for (i = 0;`` ... ``{``), may open a block
    the suffix's next ``}`` at its indentation closes, but may not leave an opener the suffix
    skips, nor close one the suffix closes (unless it types over the auto-closed characters
    right after the cursor, which the editor item then replaces), nor end inside a one-line
    string (in JavaScript and TypeScript it may when nothing follows on the cursor's line: JSX
    text says ``Don't``), nor contain a mismatched closer or, with a grammar, a closer of
    nothing. Openers still open at the end of the windows are no error (the suffix window may
    end before their closers) unless there is no grammar or the suffix closes nothing. Cuts
    are tried longest first at: the end, line ends, before a closer of an outer bracket, after
    the suggestion's own outermost closer on the cursor's line; the empty cut always passes.
    """
    walk = Walk(text, ctx)
    balance = Balance(ctx)
    for snap in reversed(walk.snapshots):
        if balance.replacement(snap) is not None:
            return text if snap.cut >= len(text) else text[: snap.cut].rstrip()
    return ""


def auto_closed_span(text: str, ctx: FilterInput) -> int:
    """How many auto-closed characters right after the cursor the suggestion types over.

    ``f(|)`` + ``x)`` -> 1: the item's range covers the ``)`` so it is replaced, not doubled.
    Only characters of the closing run after the cursor (``)]}"'`` up to anything else) count,
    and only if the bracket structure with ``suffix[k:]`` is sound (see :class:`Balance`);
    among sound choices the one leaving fewest brackets open, then the smallest, wins.
    """
    if not text or not closing_run(ctx) or ("\n" in text and lines_above(ctx) is not None):
        return 0
    walk = Walk(text, ctx)
    span = Balance(ctx).replacement(walk.snapshots[-1])
    return span or 0


def closes_what_is_left_open(text: str, ctx: FilterInput) -> bool:
    """``text`` soundly closes a bracket of the prefix that the suffix does not close."""
    if not any(ch in brackets.PAIRS for ch in text):
        return False
    walk, balance = Walk(text, ctx), Balance(ctx)
    if balance.replacement(walk.snapshots[-1]) is None:
        return False
    return any(i is not None and i not in balance.base.closed for _, _, i in walk.outer_closes)
