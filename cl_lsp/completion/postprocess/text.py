"""What every filter judges a suggestion against (:class:`FilterInput`), the line helpers they
share, and the filters that only look at text: control tokens, a cut-short end, one line,
trailing blanks."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from ... import brackets
from ..families import SPELLED_CONTROL

# Models sometimes spell a control token as ordinary text instead of emitting the token itself
# (Code Llama's `<EOT>`, any family's markers and end tokens, or a text-only server printing
# them); anything after such a spelling is not code.
CONTROL_TEXT = re.compile(rf"\s?<FILL_ME>|<s>|{SPELLED_CONTROL.pattern}")


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


BLOCK_OPENERS = (":", "{", "(", "[", "=>", " do", " then", "->")


#: Characters an editor inserts by itself after the cursor (auto-closing pairs).
AUTO_CLOSED = frozenset(")]}\"'`")


def indent_width(line: str) -> int:
    return brackets.width(line[: len(line) - len(line.lstrip())])


def rest_of_line(ctx: FilterInput) -> str:
    return ctx.suffix.partition("\n")[0]


def closing_run(ctx: FilterInput) -> str:
    """The auto-closed characters right after the cursor: ``)`` in ``f(|)``, ``")`` in ``f("|")``."""
    rest = rest_of_line(ctx)
    end = 0
    while end < len(rest) and rest[end] in AUTO_CLOSED:
        end += 1
    return rest[:end]


def is_word(ch: str) -> bool:
    return bool(ch) and (ch.isalnum() or ch == "_")


def is_substantial(stripped: str) -> bool:
    """A line worth matching on its own: not a lone closer or a short keyword."""
    return len(stripped) >= 4 and any(ch.isalnum() or ch == "_" for ch in stripped)


def line_cut_before(text: str, pos: int) -> int:
    """Where to cut so ``text[pos]`` is dropped: before its line if only blanks precede it."""
    start = text.rfind("\n", 0, pos) + 1
    if start > 0 and not text[start:pos].strip():
        return start - 1
    return pos


_TRAILING_COMMENT = re.compile(r"\s+(?:#|//|/\*|--)[^\"'`]*$")


def code_end(line: str) -> str:
    """A line without a trailing comment (a guess: no quote may follow the comment marker)."""
    return _TRAILING_COMMENT.sub("", line).rstrip()


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
    while end and is_word(line[end - 1]):
        end -= 1
    return line[:end].rstrip()


def cut_single_line(text: str, ctx: FilterInput) -> str:
    """In single-line mode keep the first line (a suggestion that starts with a newline is
    empty: the model wanted to finish the line as it is)."""
    if not ctx.single_line:
        return text
    line, _, _ = text.partition("\n")
    return line


def trim_trailing_whitespace(text: str, ctx: FilterInput) -> str:
    """Trailing newlines and spaces would only push the text after the cursor around."""
    return text.rstrip()


def lines_above(ctx: FilterInput) -> str | None:
    """The indentation before the cursor when a suggestion written as whole lines goes in above
    the cursor's line (multi-line, only blanks before the cursor on its line, code after it,
    be it a closer: ``}`` at column 0 ends the block the lines go into), else None."""
    if ctx.single_line:
        return None
    cursor_line = ctx.prefix[ctx.prefix.rfind("\n") + 1 :]
    if cursor_line.strip() or not rest_of_line(ctx).strip():
        return None
    return cursor_line
