"""The suggestion's indentation in the document's style (tabs or spaces, and their width)."""

from __future__ import annotations

import itertools
import math
from collections import Counter

from .text import FilterInput, indent_width


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
