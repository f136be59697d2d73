"""Line helpers the code actions share (offsets are ``str`` indices into the document)."""

from __future__ import annotations

from ..syntax import line_end, line_start

__all__ = ["blank", "indent_at", "strip_blank_lines"]


def indent_at(text: str, i: int) -> str:
    """The indentation of the line holding index ``i``."""
    line = text[line_start(text, i) : line_end(text, i)]
    return line[: len(line) - len(line.lstrip(" \t"))]


def blank(line: str) -> bool:
    return not line.strip()


def strip_blank_lines(lines: list[str]) -> list[str]:
    """The lines without the blank ones at either end."""
    start, end = 0, len(lines)
    while start < end and blank(lines[start]):
        start += 1
    while end > start and blank(lines[end - 1]):
        end -= 1
    return lines[start:end]
