"""Brackets, lexically (any language, no grammar needed).

:class:`Lexer` walks text skipping strings and comments (the language's
:class:`~cl_lsp.languages.Lexicon`); :func:`bracket_effect` sums up what a piece of text does to
the brackets open before it, so a suffix is scanned once per request, not once per candidate
suggestion; :func:`align` matches closers against open brackets the way a reader would.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass

from .languages import Lexicon

__all__ = [
    "PAIRS",
    "Alignment",
    "BracketEffect",
    "IndentTracker",
    "Lexer",
    "align",
    "apply_effect",
    "bracket_effect",
    "width",
]

#: Closer -> opener.
PAIRS = {")": "(", "]": "[", "}": "{"}


@functools.lru_cache(maxsize=64)
def _token_pattern(lex: Lexicon) -> re.Pattern[str]:
    markers = {*lex.line_comments, *(lex.block_comment or ()), *lex.quotes, *lex.long_quotes}
    parts = [r"'(?:\\.[^'\n]{0,8}|[^'\\\n])'"] if lex.char_literals else []
    parts += [re.escape(m) for m in sorted(markers, key=len, reverse=True)]
    parts += [r"\\.", r"\n", "[" + re.escape(lex.brackets) + "]"]
    return re.compile("|".join(parts), re.DOTALL)


class Lexer:
    """Walks text, yielding ``(pos, token)`` for what code structure is made of: brackets outside
    strings and comments, every newline (``"\\n"``, before the line's string ends) and the end of
    a line whose one-line string is not closed (``"!"``). ``mode`` is the lexical state: None in
    code, else the quote or comment marker whose string or comment is open."""

    def __init__(self, lex: Lexicon, mode: str | None = None) -> None:
        self.lex = lex
        self.mode = mode

    def run(self, text: str) -> Iterator[tuple[int, str]]:
        lex = self.lex
        block_open, block_close = lex.block_comment or ("", "")
        for match in _token_pattern(lex).finditer(text):
            token, pos = match.group(), match.start()
            mode = self.mode
            if token == "\n":
                yield pos, token
                if mode in lex.line_comments:
                    self.mode = None
                elif mode in lex.quotes:
                    self.mode = None
                    yield pos, "!"
            elif mode is None:
                if len(token) == 1 and token in lex.brackets:
                    yield pos, token
                elif token in lex.openings or token == block_open:
                    self.mode = token
                elif token[0] not in "\\'":  # a stray comment closer such as Lua's `]]`
                    for i, ch in enumerate(token):
                        if ch in lex.brackets:
                            yield pos + i, ch
            elif mode == block_open:
                if token == block_close:
                    self.mode = None
            elif token == mode and mode not in lex.line_comments:  # only a newline ends those
                self.mode = None


@dataclass(frozen=True)
class BracketEffect:
    """What a piece of text does to the brackets open before it."""

    demand: tuple[str, ...]  # closers that close something opened before the text, in order
    residual: tuple[str, ...]  # openers the text leaves open
    errors: int  # mismatched closers and unclosed one-line strings within the text
    mode: str | None  # lexical mode at the end
    # The indentation of each demand closer's line if the closer starts it (a `}` on its own
    # line), else None; the indentation of the statement each residual opener is on.
    demand_indents: tuple[int | None, ...] = ()
    residual_indents: tuple[int, ...] = ()
    logical_end: int = 0  # the statement indentation of the text's last line


_LEAD = re.compile(r"[ \t]*")


def width(lead: str) -> int:
    """Indentation width, tabs counting 4."""
    return len(lead.expandtabs(4))


class IndentTracker:
    """Follows the indentation of the statement each bracket is opened in: a line inside an
    open ``(`` or ``[`` continues the statement of that bracket's line; other lines are
    statements of their own."""

    def __init__(self, text: str, head: str, logical: int | None = None) -> None:
        self.text = text
        self.head = head  # the line's text before ``text`` starts
        self.line_start = 0
        lead = _LEAD.match(head + text).group()  # type: ignore[union-attr]
        self.logical = width(lead) if logical is None else logical

    def newline(self, pos: int, top: tuple[str, int] | None) -> None:
        self.line_start = pos + 1
        self.head = ""
        if top is not None and top[0] in "([":
            self.logical = top[1]
        else:
            self.logical = width(_LEAD.match(self.text, pos + 1).group())  # type: ignore[union-attr]

    def closer_indent(self, pos: int) -> int | None:
        """The indentation of the closer's line if it is the first thing on it."""
        before = self.head + self.text[self.line_start : pos]
        return None if before.strip() else width(before)


@functools.lru_cache(maxsize=256)
def bracket_effect(text: str, lex: Lexicon, mode: str | None, head: str = "") -> BracketEffect:
    """Scan ``text`` once, starting in lexical ``mode``, on a line that starts with ``head``
    (cached: a request's suffix is judged against many candidate suggestions)."""
    lexer = Lexer(lex, mode)
    lines = IndentTracker(text, head)
    own: list[tuple[str, int]] = []
    demand: list[str] = []
    indents: list[int | None] = []
    errors = 0
    for pos, token in lexer.run(text):
        if token == "\n":
            lines.newline(pos, own[-1] if own else None)
        elif token in "([{":
            own.append((token, lines.logical))
        elif token in ")]}":
            if not own:
                demand.append(token)
                indents.append(lines.closer_indent(pos))
            elif own.pop()[0] != PAIRS[token]:
                errors += 1
        elif token == "!":
            errors += 1
    return BracketEffect(
        tuple(demand),
        tuple(o for o, _ in own),
        errors,
        lexer.mode,
        tuple(indents),
        tuple(i for _, i in own),
        lines.logical,
    )


@dataclass(frozen=True)
class Alignment:
    """Closers after a stack of openers, matched the way a reader would: a closer closes the
    innermost opener of its kind (on its own line, one not indented more than the closer);
    the openers above that one were left open by mistake."""

    errors: int  # the text's own errors, skipped openers, closers that match nothing open
    left: int  # openers still open at the end (the stack's and the text's own)
    closed: frozenset[int]  # indices into the stack of the openers the closers close


def align(
    demand: tuple[str, ...],
    open_before: tuple[str, ...],
    errors: int = 0,
    demand_indents: tuple[int | None, ...] = (),
    open_indents: tuple[int, ...] = (),
) -> Alignment:
    """Match ``demand`` (closers, in order) against ``open_before`` (openers, innermost last).

    With indentations, a closer that starts its line skips openers of its kind on statements
    indented more than it (``if (x) {`` left open inside a block whose ``}`` follows), unless
    none is left to match. A closer with no opener of its kind on the stack counts as an error
    (with nothing open it may close something before the window; it counts the same with or
    without a suggestion, so comparisons stay fair).
    """
    stack = list(range(len(open_before)))
    closed: set[int] = set()
    for n, closer in enumerate(demand):
        want = PAIRS[closer]
        indent = demand_indents[n] if n < len(demand_indents) else None
        candidates = [d for d in range(len(stack) - 1, -1, -1) if open_before[stack[d]] == want]
        if indent is not None and len(open_indents) == len(open_before):
            fitting = [d for d in candidates if open_indents[stack[d]] <= indent]
            candidates = fitting or candidates
        if not candidates:
            errors += 1
            continue
        depth = candidates[0]
        errors += len(stack) - 1 - depth
        closed.add(stack[depth])
        del stack[depth:]
    return Alignment(errors, len(stack), frozenset(closed))


def apply_effect(
    effect: BracketEffect, open_before: tuple[str, ...], open_indents: tuple[int, ...] = ()
) -> Alignment:
    """What text with ``effect`` does after ``open_before`` (see :func:`align`)."""
    found = align(effect.demand, open_before, effect.errors, effect.demand_indents, open_indents)
    return Alignment(found.errors, found.left + len(effect.residual), found.closed)
