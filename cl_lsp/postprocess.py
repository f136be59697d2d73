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

import itertools
import math
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from . import brackets, languages, syntax

__all__ = [
    "FILTERS",
    "Cleaned",
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

# Code Llama sometimes spells its control tokens as ordinary text instead of emitting the
# control token itself; anything after such a spelling is not code.
CONTROL_TEXT = re.compile(r"\s?<(?:EOT|PRE|SUF|MID|FILL_ME)>|</s>|<s>")


@dataclass(frozen=True)
class FilterInput:
    """The cursor context the filters judge a suggestion against."""

    prefix: str  # text before the cursor (a window of the document, may start mid-file)
    suffix: str  # text after the cursor (a window)
    single_line: bool
    language: str | None = None  # tree-sitter grammar name; None = line-based only
    truncated: bool = False  # the generation was cut short (token cap, deadline)


@dataclass(frozen=True)
class Cleaned:
    """The suggestion worth showing."""

    text: str  # what to insert at the cursor ("" = show nothing)
    # Characters right after the cursor that the suggestion replaces: auto-closed `)`, `]`,
    # `"` ... that the suggestion also types. The editor item's range covers them.
    replace_after: int = 0
    dropped_by: str | None = None  # name of the filter that emptied it, for logs


Filter = Callable[[str, FilterInput], str]


# --------------------------------------------------------------------------- helpers

BLOCK_OPENERS = (":", "{", "(", "[", "=>", " do", " then", "->")
#: Characters an editor inserts by itself after the cursor (auto-closing pairs).
AUTO_CLOSED = frozenset(")]}\"'`")


def indent_width(line: str) -> int:
    return brackets.width(line[: len(line) - len(line.lstrip())])


def _rest_of_line(ctx: FilterInput) -> str:
    return ctx.suffix.partition("\n")[0]


def _closing_run(ctx: FilterInput) -> str:
    """The auto-closed characters right after the cursor: ``)`` in ``f(|)``, ``")`` in ``f("|")``."""
    rest = _rest_of_line(ctx)
    end = 0
    while end < len(rest) and rest[end] in AUTO_CLOSED:
        end += 1
    return rest[:end]


def _is_word(ch: str) -> bool:
    return bool(ch) and (ch.isalnum() or ch == "_")


def _substantial(stripped: str) -> bool:
    """A line worth matching on its own: not a lone closer or a short keyword."""
    return len(stripped) >= 4 and any(ch.isalnum() or ch == "_" for ch in stripped)


def _line_cut_before(text: str, pos: int) -> int:
    """Where to cut so ``text[pos]`` is dropped: before its line if only blanks precede it."""
    start = text.rfind("\n", 0, pos) + 1
    if start > 0 and not text[start:pos].strip():
        return start - 1
    return pos


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


class _Walk:
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


class _Balance:
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
        self.run = _closing_run(ctx)

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
            and not _rest_of_line(self.ctx).strip()
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


# --------------------------------------------------------------------------- filters


def strip_control_tokens(text: str, ctx: FilterInput) -> str:
    match = CONTROL_TEXT.search(text)
    return text[: match.start()] if match else text


def drop_unfinished_end(text: str, ctx: FilterInput) -> str:
    """A generation cut short by the token cap or the deadline stops mid-thought: a multi-line
    one keeps its complete lines; a one-line one loses its last word, which may be half-written
    (``x + 1 if x > 0 el``). :func:`check_syntax` then judges what is left, in single-line mode
    too."""
    if not ctx.truncated:
        return text
    if not ctx.single_line and "\n" in text.rstrip():
        return text[: text.rstrip().rfind("\n")]
    line = text.partition("\n")[0].rstrip()
    end = len(line)
    while end and _is_word(line[end - 1]):
        end -= 1
    return line[:end].rstrip()


def cut_single_line(text: str, ctx: FilterInput) -> str:
    """In single-line mode keep the first line (a suggestion that starts with a newline is
    empty: the model wanted to finish the line as it is)."""
    if not ctx.single_line:
        return text
    line, _, _ = text.partition("\n")
    return line


def trim_suffix_overlap(text: str, ctx: FilterInput) -> str:
    """Drop what the model re-wrote of the text that already follows the cursor.

    - The rest of the cursor's line: if the suggestion's first line ends with it and more lines
      follow, everything from the copy on is dropped (those lines would land before the rest
      of the line); else if its last line ends with it, that copy is dropped. A rest of line made
      only of auto-closed characters (``)``, ``"]``...) is not trimmed: the suggestion replaces
      those (:func:`auto_closed_span`).
    - The lines after the cursor's line (multi-line only): from the first suggestion line (not
      the first) where the suggestion's non-blank lines repeat the suffix's next non-blank lines
      -- all of them, or until the suffix window ends; the suggestion's last line may be a cut
      copy -- everything is dropped. At least one matched line must be substantial (4+
      characters with a letter or digit; 8+ for a cut copy); lines that are not must also match
      in indentation, so a lone ``}`` or ``end`` never counts as a copy.
    """
    rest, newline, after = ctx.suffix.partition("\n")
    tail = rest.strip()
    if tail and not set(tail) <= AUTO_CLOSED:
        body = text.rstrip()
        first, nl, _ = text.partition("\n")
        if nl and first.rstrip().endswith(tail):
            return first.rstrip()[: -len(tail)].rstrip(" \t")
        if body.endswith(tail):
            text = body[: len(body) - len(tail)].rstrip(" \t")
    if not newline or ctx.single_line:
        return text
    following = [line for line in after.split("\n") if line.strip()][:_OVERLAP_LINES]
    if not following:
        return text
    lines = text.split("\n")
    for index in range(1, len(lines)):
        if lines[index].strip() and _repeats(lines[index:], following):
            return "\n".join(lines[:index]).rstrip()
    return text


_OVERLAP_LINES = 8


def _repeats(lines: list[str], following: list[str]) -> bool:
    """``lines`` (their non-blank ones) start like ``following`` (see trim_suffix_overlap).

    A match of one line is too little to decide on unless it is the suggestion's last line, at
    the suffix line's indentation: ``return False`` inside a new ``if``, or followed by more
    code where the suffix window holds one line, is not a copy of the function's last line."""
    mine = [line for line in lines if line.strip()]
    pairs = list(zip(mine, following))
    if len(pairs) == 1 and (len(mine) > 1 or indent_width(mine[0]) != indent_width(following[0])):
        return False
    substantial = False
    for i, (line, other) in enumerate(pairs):
        a, b = line.strip(), other.strip()
        last = i == len(mine) - 1
        if a == b:
            if _substantial(a):
                substantial = True
            elif indent_width(line) != indent_width(other):
                return False
        elif last and b.startswith(a):
            substantial = substantial or (_substantial(a) and len(a) >= 8)
        else:
            return False
    return substantial


def _block_base(prefix: str, first: str) -> tuple[int, bool]:
    """The indentation of the cursor's line, and whether the suggestion is the body of a block
    that line opens: the line ends with ``:``, ``{``, ``(``... before the cursor and the
    suggestion's first line adds nothing to it. (A suggestion that completes the line itself,
    ``if (`` + ``a) {``, writes the statement, its body and maybe more statements after it.)
    On a blank cursor line a suggestion whose first line brings its own indentation (a whole
    line written from column 0) sets the indentation with it."""
    start = prefix.rfind("\n") + 1
    cursor_line = prefix[start:]
    stripped = cursor_line.strip()
    if stripped:
        base = indent_width(cursor_line)
    elif first.strip() and first[:1] in " \t":
        base = indent_width(cursor_line + first)
    else:
        # A blank cursor line sets the indentation, unless the line above is less indented
        # and opens no block: a line aligned far right (`x = f(a);` then `    assert(x);` at
        # column 48) is still in the block of the line above.
        base = len(cursor_line.expandtabs(4))
        above = prefix[:start].rstrip().rpartition("\n")[2]
        if above.strip() and not _code_end(above.strip()).endswith(BLOCK_OPENERS):
            base = min(base, indent_width(above))
    opens = bool(stripped) and not first.strip() and _code_end(stripped).endswith(BLOCK_OPENERS)
    return base, opens


def _unit_floor(prefix: str, suffix: str) -> int | None:
    """The body level of the top-level unit around the cursor (a function, a class, a C
    function's braces): the lowest indentation above column 0 of its lines -- the prefix's after
    its last line at column 0, the rest of the cursor's line, the suffix's before its first
    line at column 0. None when the unit has no such line."""
    before = prefix.split("\n")
    start = next(
        (
            i
            for i in range(len(before) - 1, -1, -1)
            if before[i].strip() and not before[i][0].isspace()
        ),
        -1,
    )
    rest, _, after = suffix.partition("\n")
    lines = before[start + 1 : -1] + [before[-1] + rest]
    for line in after.split("\n"):
        if line.strip() and not line[0].isspace():
            break
        lines.append(line)
    widths = [indent_width(line) for line in lines if line.strip()]
    return min((w for w in widths if w), default=None)


_TRAILING_COMMENT = re.compile(r"\s+(?:#|//|/\*|--)[^\"'`]*$")


def _code_end(line: str) -> str:
    """A line without a trailing comment (a guess: no quote may follow the comment marker)."""
    return _TRAILING_COMMENT.sub("", line).rstrip()


def end_of_block_cut(text: str, prefix: str, suffix: str = "") -> int | None:
    """Where a multi-line suggestion leaves the block the cursor is in, or None.

    The cursor's line sets the block's indentation (:func:`_block_base`): a complete generated
    line indented less than it (or, when the suggestion is the body of a block the cursor's
    line opens with `:` or `{`..., not more) ends the block -- but only when it leaves the
    top-level unit around the cursor, whose body level is the floor (:func:`_unit_floor`): a
    suggestion written into a gap may finish the inner blocks and go on at any level of its
    function (the end of an ``if``, then the loop after it, before the function's last lines).
    A definition it starts below the cursor's level (``def``, ``class``, ``function``...) is
    the next unit and ends it. From inside a block it never reaches column 0. Everything from
    the first line that leaves is cut. The first generated line continues the cursor's line and
    never counts.

    The generation also ends where its last two complete lines copy the first two lines of the
    code after the cursor (:func:`trim_suffix_overlap` would cut them anyway; one line is too
    little to stop on, see :func:`_repeats`).
    """
    complete = text[: max(0, text.rfind("\n"))]  # the last piece is not a complete line yet
    cut = next((position for position, _, _ in _outdented_lines(complete, prefix, suffix)), None)
    return cut if cut is not None else _suffix_copy_start(complete, suffix)


def _suffix_copy_start(complete: str, suffix: str) -> int | None:
    """Where ``complete``'s last two non-blank lines (not its first line) begin, if they repeat
    the suffix's first two non-blank lines after the cursor's line."""
    rest, newline, after = suffix.partition("\n")
    following = [line for line in after.split("\n") if line.strip()][:2] if newline else []
    if rest.strip():  # the suggestion goes above the cursor's line: that line comes first
        following = [rest, *following[:1]]
    lines = complete.split("\n")
    mine = [i for i in range(1, len(lines)) if lines[i].strip()][-2:]
    if len(mine) < 2 or len(following) < 2 or not _repeats([lines[i] for i in mine], following):
        return None
    return sum(len(line) + 1 for line in lines[: mine[0]]) - 1


#: A line that starts a definition (a function, a class, a decorator...) in the languages
#: cl-lsp knows: written outside the cursor's block it is the next unit, never the end of this one.
_DEFINITION = re.compile(
    r"\s*(?:@\w|(?:export\s+|pub(?:\(\w+\))?\s+)?(?:async\s+)?"
    r"(?:def|class|function|func|fn|impl|struct|interface|enum|trait)\b)"
)


def _outdented_lines(text: str, prefix: str, suffix: str) -> Iterator[tuple[int, str, bool]]:
    """The generated lines after the first that leave the cursor's block by indentation (see
    :func:`end_of_block_cut`): where each starts (its newline), the line, and whether it sits
    at the indentation of the block the cursor's line opens (where a closer may end it)."""
    lines = text.split("\n")
    base, opens_block = _block_base(prefix, lines[0])
    if opens_block:
        floor = base + 1
    else:
        floor = min(base, _unit_floor(prefix, suffix) or 1)
    position = len(lines[0])
    for line in lines[1:]:
        width = indent_width(line)
        if line.strip() and (width < floor or width < base and _DEFINITION.match(line)):
            yield position, line, opens_block and width == base
        position += 1 + len(line)


def stop_at_scope_end(text: str, ctx: FilterInput) -> str:
    """Cut where the suggestion leaves the cursor's scope; the earliest of:

    - indentation (multi-line): the first line indented less than the cursor's line (not more,
      after a block opener) -- :func:`end_of_block_cut`, the final line counting as complete,
      except that the first line at the opener's indentation that starts with a closer
      (``})`` after ``run(``) is left to the bracket rules: it may close what the opener opened;
    - tree-sitter (multi-line, where a grammar exists): a line starting with the closing token
      (``}``, ``end``, ``fi``...) of a scope that encloses the cursor and is closed in the
      suffix, at that closer's indentation or less;
    - brackets (any mode): the first closer that closes a bracket opened before the cursor
      which the suffix closes too -- except closers that type over the auto-closed run right
      after the cursor (``f(x|)``: the suggestion may type ``)``, see :func:`auto_closed_span`).
    """
    cuts: list[int] = []
    if not ctx.single_line:
        cut = _indentation_cut(text, ctx.prefix, ctx.suffix)
        if cut is not None:
            cuts.append(cut)
        cut = _closer_line_cut(text, ctx)
        if cut is not None:
            cuts.append(cut)
    cut = _bracket_scope_cut(text, ctx)
    if cut is not None:
        cuts.append(cut)
    if not cuts:
        return text
    return text[: min(cuts)].rstrip()


def _indentation_cut(text: str, prefix: str, suffix: str) -> int | None:
    closing_line_seen = False
    for position, line, at_opener in _outdented_lines(text, prefix, suffix):
        if at_opener and line.strip()[0] in brackets.PAIRS and not closing_line_seen:
            closing_line_seen = True
            continue
        return position
    return None


def _closer_line_cut(text: str, ctx: FilterInput) -> int | None:
    run = len(_closing_run(ctx))
    closers = [
        c
        for c in syntax.enclosing_closers(ctx.prefix, ctx.suffix, ctx.language)
        if c.starts_line and c.offset >= run
    ]
    if not closers:
        return None
    position = text.find("\n")
    while position >= 0:
        end = text.find("\n", position + 1)
        line = text[position + 1 : end if end >= 0 else len(text)]
        body = line.lstrip()
        for closer in closers:
            token = closer.token
            if (
                body.startswith(token)
                and not (_is_word(token[-1]) and _is_word(body[len(token) : len(token) + 1]))
                and indent_width(line) <= closer.indent
            ):
                return position
        position = end
    return None


def _bracket_scope_cut(text: str, ctx: FilterInput) -> int | None:
    walk = _Walk(text, ctx)
    if not walk.outer_closes:
        return None
    balance = _Balance(ctx)
    typed_over = [c for c in balance.run if c in brackets.PAIRS]
    suffix_closes = balance.base.closed
    typed = 0
    for pos, token, index in walk.outer_closes:
        if typed < len(typed_over) and token == typed_over[typed]:
            typed += 1
            continue
        if index is None:
            return None  # a closer of nothing we know: for balance_brackets to judge
        if index in suffix_closes and not _reopens(text, pos, token, ctx):
            return _line_cut_before(text, pos)
    return None


def _reopens(text: str, pos: int, token: str, ctx: FilterInput) -> bool:
    """The closer at ``pos`` is followed on its line by an opener of its kind left open:
    ``} else {``, ``}, {`` -- the block goes on, the text after the cursor still closes it."""
    end = text.find("\n", pos)
    rest = text[pos + 1 : end if end >= 0 else len(text)]
    effect = brackets.bracket_effect(rest, languages.lexicon_for(ctx.language), None)
    return bool(effect.residual) and effect.residual[-1] == brackets.PAIRS[token]


def drop_repeated_lines(text: str, ctx: FilterInput) -> str:
    """Cut a loop: a block of 1-8 non-blank lines repeated back to back is kept once.

    One line must appear 3 times in a row (twice if the copy is on the very next line, the
    same, and 10+ characters long with a letter, or substantial and the suggestion's last
    line), a longer block twice; the block must contain a
    substantial line (so ``}`` / ``end`` runs are legitimate). Lines compare stripped; blank
    lines between copies are ignored. Repeats within a line are left alone: ``[0, 0, 0, 0]``
    is data as often as it is a loop.
    """
    lines = text.split("\n")
    rows = [(i, line.strip()) for i, line in enumerate(lines) if line.strip()]
    keys = [key for _, key in rows]
    for start in range(len(keys)):
        for size in range(1, min(_MAX_LOOP_BLOCK, (len(keys) - start) // 2) + 1):
            block = keys[start : start + size]
            if not any(_substantial(key) for key in block):
                continue
            copies = 1
            while keys[start + copies * size : start + (copies + 1) * size] == block:
                copies += 1
            needed = 2 if size > 1 or _doubled_line(lines, rows, start) else 3
            if copies >= needed:
                cut = rows[start + size][0]
                return "\n".join(lines[:cut]).rstrip()
    if len(rows) >= 2 and _doubled_line(lines, rows, len(rows) - 2, at_end=True):
        return "\n".join(lines[: rows[-1][0]]).rstrip()
    return text


_MAX_LOOP_BLOCK = 8
_DOUBLED_LINE = 10


def _doubled_line(
    lines: list[str], rows: list[tuple[int, str]], start: int, at_end: bool = False
) -> bool:
    """The row at ``start`` is repeated on the very next line, with the same indentation,
    and is long enough (10+ characters with a letter) not to be a legitimate ``i += 1;`` twice
    -- or, where the copy is the suggestion's last line (``at_end``), substantial: a model
    that writes ``return []`` or ``i += 1`` twice and stops has stuttered far more often than
    it meant it (``i += 1;`` twice followed by more code is kept)."""
    (i, key), (j, _) = rows[start], rows[start + 1]
    if j != i + 1 or lines[i] != lines[j]:
        return False
    if at_end:
        return _substantial(key)
    return len(key) >= _DOUBLED_LINE and any(ch.isalpha() for ch in key)


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
    walk = _Walk(text, ctx)
    balance = _Balance(ctx)
    for snap in reversed(walk.snapshots):
        if balance.replacement(snap) is not None:
            return text if snap.cut >= len(text) else text[: snap.cut].rstrip()
    return ""


def drop_empty_block(text: str, ctx: FilterInput) -> str:
    """A multi-line suggestion that ends with a block header (Python's ``if x:``, a ``{``
    elsewhere) whose body is neither in it nor after the cursor (the next line there is not
    indented more) loses that header: it is where an overrun was cut, not code to show. The
    first line is never dropped: completing the header the user is typing is fine."""
    lines = text.rstrip().split("\n")
    if len(lines) < 2 or _rest_of_line(ctx).strip():
        return text
    last = _code_end(lines[-1].strip())
    opener = ":" if ctx.language == "python" else "{"
    if not last.endswith(opener):
        return text
    following = next((line for line in ctx.suffix.split("\n")[1:] if line.strip()), None)
    if following is not None and indent_width(following) > indent_width(lines[-1]):
        return text
    return "\n".join(lines[:-1]).rstrip()


def auto_closed_span(text: str, ctx: FilterInput) -> int:
    """How many auto-closed characters right after the cursor the suggestion types over.

    ``f(|)`` + ``x)`` -> 1: the item's range covers the ``)`` so it is replaced, not doubled.
    Only characters of the closing run after the cursor (``)]}"'`` up to anything else) count,
    and only if the bracket structure with ``suffix[k:]`` is sound (see :class:`_Balance`);
    among sound choices the one leaving fewest brackets open, then the smallest, wins.
    """
    if not text or not _closing_run(ctx) or ("\n" in text and lines_above(ctx) is not None):
        return 0
    walk = _Walk(text, ctx)
    span = _Balance(ctx).replacement(walk.snapshots[-1])
    return span or 0


def normalize_indentation(text: str, ctx: FilterInput) -> str:
    """Re-indent the suggestion's lines (not the first: it continues the cursor's line) in the
    document's style, inferred from the windows (:func:`_document_style`):

    - tabs document: a line indented with spaces becomes tabs, at 4 spaces a level (2 if the
      suggestion's space indents are multiples of 2 but not all of 4); other widths are left;
    - spaces document of width ``w``: a leading tab becomes ``w`` spaces; if the suggestion
      indents in steps of ``u`` (2 or 4) finer than ``w`` (a divisor of it) relative to the
      cursor's line, every line being a whole number of steps from it, each step becomes ``w``
      spaces, provided its smallest step is ``u`` itself and the code near the cursor does not
      indent by ``u`` too (a 2-space block in a 4-space file stays as its neighbours are).
    Nothing changes when the style can't be inferred or a line doesn't fit the rule.
    """
    style = _document_style(ctx.prefix + ctx.suffix)
    lines = text.split("\n")
    if style is None or len(lines) < 2:
        return text
    tabs, width = style
    body = [i for i in range(1, len(lines)) if lines[i].strip()]
    leads = {i: lines[i][: len(lines[i]) - len(lines[i].lstrip())] for i in body}
    if tabs:
        spaced = [len(leads[i]) for i in body if leads[i] and set(leads[i]) == {" "}]
        unit = 4 if all(w % 4 == 0 for w in spaced) else 2
        if not spaced or any(w % unit for w in spaced):
            return text
        for i in body:
            if leads[i] and set(leads[i]) == {" "}:
                lines[i] = "\t" * (len(leads[i]) // unit) + lines[i].lstrip()
        return "\n".join(lines)
    assert width is not None
    for i in body:
        if "\t" in leads[i]:
            leads[i] = leads[i].replace("\t", " " * width)
            lines[i] = leads[i] + lines[i].lstrip()
    cursor_line = ctx.prefix[ctx.prefix.rfind("\n") + 1 :]
    base = indent_width(cursor_line) if cursor_line.strip() else len(cursor_line.expandtabs(4))
    offsets = [len(leads[i]) - base for i in body]
    steps = [o for o in offsets if o]
    if not steps:
        return "\n".join(lines)
    unit = math.gcd(*steps)
    # Only finer steps than the document's are rescaled: a coarser one is usually a
    # continuation indent (8 in a 4-space file), which is the author's choice. And only when
    # the suggestion indents one step at a time: continuation lines aligned under an opening
    # bracket (offsets 4, 8, 22) make a fine gcd but are not a finer style.
    if unit >= width or unit not in (2, 4) or width % unit or min(map(abs, steps)) != unit:
        return "\n".join(lines)
    if unit in _local_steps(ctx):  # the code around the cursor is written that way too
        return "\n".join(lines)
    for i, offset in zip(body, offsets):
        new = base + offset // unit * width
        if new < 0:
            return text
        lines[i] = " " * new + lines[i].lstrip()
    return "\n".join(lines)


_LOCAL_LINES = 12


def _local_steps(ctx: FilterInput) -> set[int]:
    """The indentation increases between consecutive non-blank lines near the cursor (the
    prefix's last and the suffix's first :data:`_LOCAL_LINES` lines)."""
    near = ctx.prefix.split("\n")[-_LOCAL_LINES:] + ctx.suffix.split("\n")[:_LOCAL_LINES]
    widths = [indent_width(line) for line in near if line.strip()]
    return {b - a for a, b in itertools.pairwise(widths) if b > a}


def _document_style(window: str) -> tuple[bool, int | None] | None:
    """(uses tabs, indent width for spaces) from the indented lines of the window, or None.

    Tabs win if more lines start with a tab than with spaces. The width is the most common
    increase of indentation from one non-blank line to the next, if it is 2, 3, 4 or 8 and
    at least two increases agree.
    """
    tab_lines = space_lines = 0
    increases: Counter[int] = Counter()
    previous: int | None = None
    for line in window.split("\n"):
        body = line.lstrip()
        if not body:
            continue
        lead = line[: len(line) - len(body)]
        if "\t" in lead:
            tab_lines += lead.startswith("\t")
            previous = None
            continue
        space_lines += bool(lead)
        if previous is not None and len(lead) > previous:
            increases[len(lead) - previous] += 1
        previous = len(lead)
    if tab_lines > space_lines:
        return True, None
    if not space_lines or not increases:
        return None
    width, count = increases.most_common(1)[0]
    if width not in (2, 3, 4, 8) or count < 2:
        return None
    return False, width


def trim_trailing_whitespace(text: str, ctx: FilterInput) -> str:
    """Trailing newlines and spaces would only push the text after the cursor around."""
    return text.rstrip()


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
    return text if not ctx.single_line and _closes_what_is_left_open(text, ctx) else ""


def _closes_what_is_left_open(text: str, ctx: FilterInput) -> bool:
    """``text`` soundly closes a bracket of the prefix that the suffix does not close."""
    if not any(ch in brackets.PAIRS for ch in text):
        return False
    walk, balance = _Walk(text, ctx), _Balance(ctx)
    if balance.replacement(walk.snapshots[-1]) is None:
        return False
    return any(i is not None and i not in balance.base.closed for _, _, i in walk.outer_closes)


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


def lines_above(ctx: FilterInput) -> str | None:
    """The indentation before the cursor when a suggestion written as whole lines goes in above
    the cursor's line (multi-line, only blanks before the cursor on its line, code after it,
    be it a closer: ``}`` at column 0 ends the block the lines go into), else None."""
    if ctx.single_line:
        return None
    cursor_line = ctx.prefix[ctx.prefix.rfind("\n") + 1 :]
    if cursor_line.strip() or not _rest_of_line(ctx).strip():
        return None
    return cursor_line


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
