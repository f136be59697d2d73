"""Where a suggestion leaves the cursor's block: by indentation, by the scope's closing token
(tree-sitter), by a bracket the text after the cursor closes; and a block header left
without a body."""

from __future__ import annotations

import re
from collections.abc import Iterator

from ... import brackets, languages, syntax
from .balance import Balance, Walk
from .repetition import repeats
from .text import (
    BLOCK_OPENERS,
    FilterInput,
    closing_run,
    code_end,
    indent_width,
    is_word,
    line_cut_before,
    rest_of_line,
)


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
        if above.strip() and not code_end(above.strip()).endswith(BLOCK_OPENERS):
            base = min(base, indent_width(above))
    opens = bool(stripped) and not first.strip() and code_end(stripped).endswith(BLOCK_OPENERS)
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
    little to stop on, see :func:`repeats`).
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
    if len(mine) < 2 or len(following) < 2 or not repeats([lines[i] for i in mine], following):
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
    run = len(closing_run(ctx))
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
                and not (is_word(token[-1]) and is_word(body[len(token) : len(token) + 1]))
                and indent_width(line) <= closer.indent
            ):
                return position
        position = end
    return None


def _bracket_scope_cut(text: str, ctx: FilterInput) -> int | None:
    walk = Walk(text, ctx)
    if not walk.outer_closes:
        return None
    balance = Balance(ctx)
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
            return line_cut_before(text, pos)
    return None


def _reopens(text: str, pos: int, token: str, ctx: FilterInput) -> bool:
    """The closer at ``pos`` is followed on its line by an opener of its kind left open:
    ``} else {``, ``}, {`` -- the block goes on, the text after the cursor still closes it."""
    end = text.find("\n", pos)
    rest = text[pos + 1 : end if end >= 0 else len(text)]
    effect = brackets.bracket_effect(rest, languages.lexicon_for(ctx.language), None)
    return bool(effect.residual) and effect.residual[-1] == brackets.PAIRS[token]


def drop_empty_block(text: str, ctx: FilterInput) -> str:
    """A multi-line suggestion that ends with a block header (Python's ``if x:``, a ``{``
    elsewhere) whose body is neither in it nor after the cursor (the next line there is not
    indented more) loses that header: it is where an overrun was cut, not code to show. The
    first line is never dropped: completing the header the user is typing is fine."""
    lines = text.rstrip().split("\n")
    if len(lines) < 2 or rest_of_line(ctx).strip():
        return text
    last = code_end(lines[-1].strip())
    opener = languages.get(ctx.language).block_header_end if ctx.language else "{"
    if not last.endswith(opener):
        return text
    following = next((line for line in ctx.suffix.split("\n")[1:] if line.strip()), None)
    if following is not None and indent_width(following) > indent_width(lines[-1]):
        return text
    return "\n".join(lines[:-1]).rstrip()
