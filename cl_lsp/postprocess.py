"""From raw model text to the text worth showing: named, pure filters applied in order.

Each filter takes the text so far and the cursor context and returns the new text ("" drops
the suggestion). The order matters: control tokens go first so later filters never see them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

# Code Llama sometimes spells its control tokens as ordinary text instead of emitting the
# control token itself; anything after such a spelling is not code.
CONTROL_TEXT = re.compile(r"\s?<(?:EOT|PRE|SUF|MID|FILL_ME)>|</s>|<s>")


@dataclass(frozen=True)
class FilterInput:
    prefix: str
    suffix: str
    single_line: bool


Filter = Callable[[str, FilterInput], str]


def strip_control_tokens(text: str, ctx: FilterInput) -> str:
    match = CONTROL_TEXT.search(text)
    return text[: match.start()] if match else text


def cut_single_line(text: str, ctx: FilterInput) -> str:
    """In single-line mode keep the first line, skipping newlines the model starts with only
    when the cursor is at the end of a line that already has code."""
    if not ctx.single_line:
        return text
    line, _, _ = text.partition("\n")
    return line


def trim_suffix_overlap(text: str, ctx: FilterInput) -> str:
    """Drop what the model re-wrote of the text that already follows the cursor: the rest of
    the current line at the end of the suggestion, and, for multi-line suggestions, everything
    from a line equal to the next non-blank line after the cursor's line."""
    rest_of_line, newline, after = ctx.suffix.partition("\n")
    tail = rest_of_line.strip()
    body = text.rstrip()
    if tail and body.endswith(tail):
        text = body[: len(body) - len(tail)].rstrip(" \t")
    if not newline or ctx.single_line:
        return text
    following = next((line.strip() for line in after.split("\n") if line.strip()), "")
    if len(following) < 3:  # "}" or "end" repeat legitimately
        return text
    lines = text.split("\n")
    for index in range(1, len(lines)):
        if lines[index].strip() == following:
            return "\n".join(lines[:index])
    return text


def drop_blank(text: str, ctx: FilterInput) -> str:
    return text if text.strip() else ""


def trim_trailing_whitespace(text: str, ctx: FilterInput) -> str:
    """Trailing newlines and spaces would only push the text after the cursor around."""
    return text.rstrip()


BLOCK_OPENERS = (":", "{", "(", "[", "=>", " do", " then", "->")


def indent_width(line: str) -> int:
    return len(line.expandtabs(4)) - len(line.expandtabs(4).lstrip())


def end_of_block_cut(text: str, prefix: str) -> int | None:
    """Where a multi-line suggestion leaves the block the cursor is in, or None.

    The cursor's line sets the block's indentation: a complete generated line indented less
    (or, after a block opener such as `:` or `{`, not more) ends the block; everything from
    that line on is cut. The first generated line continues the cursor's line and never counts.
    """
    cursor_line = prefix[prefix.rfind("\n") + 1:]
    stripped = cursor_line.strip()
    base = indent_width(cursor_line) if stripped else len(cursor_line.expandtabs(4))
    opens_block = bool(stripped) and stripped.endswith(BLOCK_OPENERS)
    lines = text.split("\n")
    position = len(lines[0])
    for line in lines[1:-1]:  # the last piece is not a complete line yet
        width = indent_width(line)
        if line.strip() and (width <= base if opens_block else width < base):
            return position
        position += 1 + len(line)
    return None


FILTERS: tuple[Filter, ...] = (
    strip_control_tokens,
    cut_single_line,
    trim_suffix_overlap,
    trim_trailing_whitespace,
    drop_blank,
)


def clean_completion(raw: str, prefix: str, suffix: str, single_line: bool) -> str:
    ctx = FilterInput(prefix=prefix, suffix=suffix, single_line=single_line)
    text = raw
    for step in FILTERS:
        text = step(text, ctx)
        if not text:
            return ""
    return text
