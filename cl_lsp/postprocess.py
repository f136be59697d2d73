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
