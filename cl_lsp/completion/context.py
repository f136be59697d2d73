"""Cursor context: (document text, cursor offset) -> :class:`CursorContext`.

A pure domain stage (no LSP, no model). It picks the grammar (:func:`languages.language_for`),
cuts the prompt window (:mod:`cl_lsp.completion.window`), parses only that region
(:mod:`cl_lsp.completion.region`) to refine the cuts and see strings and comments, and decides the
completion mode (:func:`_decide_mode`). Unknown languages and any parser failure fall back to
line-based context: never an error.
"""

from __future__ import annotations

import enum
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

from .. import languages
from ..languages import language_for
from ..syntax import block_opener, is_identifier_char, line_start, next_line_start
from .region import LINE_LOOKBACK, RegionTree, parse_region
from .window import MAX_CHARS_PER_TOKEN, TokenCost, choose_end, choose_start, scan_lines

__all__ = ["CompletionMode", "CursorContext", "extract_context"]

log = logging.getLogger(__name__)


class CompletionMode(str, enum.Enum):
    """What kind of completion (if any) fits the cursor position."""

    NONE = "none"
    SINGLE_LINE = "single_line"
    MULTI_LINE = "multi_line"


@dataclass(frozen=True)
class CursorContext:
    """The prompt window around the cursor and the completion mode."""

    prefix: str  # document text [window_start, offset)
    suffix: str  # document text [offset, window_end)
    language: str | None  # tree-sitter grammar used ("python", ...), None = line-based fallback
    mode: CompletionMode
    reason: str  # short human-readable why the mode was chosen
    window_start: int  # str index into the document where prefix begins
    window_end: int  # str index where suffix ends
    in_string: bool
    in_comment: bool

    @property
    def offset(self) -> int:
        """The cursor's str index in the document."""
        return self.window_start + len(self.prefix)


# --------------------------------------------------------------------------- mode

#: What may follow the cursor on its line and still leave it at the end of the line.
_CLOSERS = set(")]}\"'`;,")


def _definition_header(
    tree: RegionTree | None, offset: int, line: str, language: str | None
) -> bool:
    """The cursor sits at the end of a definition header whose body is not written yet."""
    header = languages.get(language).header_line if language is not None else None
    if header is not None and re.search(header, line.rstrip()):
        return True
    stripped = line.rstrip()
    if tree is None or not stripped:
        return False
    # Skip trailing blanks so `def foo(a) █` counts too.
    return tree.definition_header_ends_at(offset - (len(line) - len(stripped)))


def _decide_mode(
    text: str,
    offset: int,
    tree: RegionTree | None,
    language: str | None,
    in_string: bool,
    in_comment: bool,
    in_strings: bool,
    in_comments: bool,
) -> tuple[CompletionMode, str]:
    """The completion mode at the cursor and why: the first matching rule wins."""
    n = len(text)
    after = text[offset] if offset < n else ""
    before = text[offset - 1] if offset > 0 else ""
    ls = line_start(text, offset, LINE_LOOKBACK)
    line = text[ls:offset]
    # In front of a word after other code on its line, or inside one: nothing to complete.
    if after and is_identifier_char(after) and line.strip():
        if before and is_identifier_char(before):
            return CompletionMode.NONE, "cursor inside identifier"
        return CompletionMode.NONE, "cursor directly before identifier"
    # Strings and comments (tree-sitter node types at the cursor; an unterminated string on the
    # cursor line is recognised when the tree has an error there; without a grammar everything
    # is code): as the settings allow, one line.
    if in_comment and not in_comments:
        return CompletionMode.NONE, "inside comment (completion.inComments is off)"
    if in_string and not in_strings:
        return CompletionMode.NONE, "inside string (completion.inStrings is off)"
    if in_comment:
        return CompletionMode.SINGLE_LINE, "inside comment"
    if in_string:
        return CompletionMode.SINGLE_LINE, "inside string"

    # Something other than closers, `;`, `,` and blanks after the cursor on its line.
    nl = text.find("\n", offset, offset + LINE_LOOKBACK)
    rest = text[offset : nl if nl >= 0 else min(n, offset + LINE_LOOKBACK)]
    if any(not ch.isspace() and ch not in _CLOSERS for ch in rest):
        if not line.strip():
            # Whole lines go above the cursor's line, as Copilot and Continue insert them: the
            # model writes lines and a line break, and the code after the cursor moves down.
            return CompletionMode.MULTI_LINE, "only indentation before the cursor: lines above"
        # The middle may end inside a later line (`x = [` + `1,\n     2` + `]`): the model's end
        # token decides, and post-processing cuts what repeats or breaks the text after it.
        return CompletionMode.MULTI_LINE, "text after cursor on the line"

    # A blank line before the cursor (after a block opener or not).
    if not line.strip():
        p = ls
        for _ in range(50):  # the previous non-blank line, if close
            if p <= 0:
                break
            q = line_start(text, p - 1, LINE_LOOKBACK)
            prev = text[q : p - 1]
            if prev.strip():
                if block_opener(prev, language):
                    return CompletionMode.MULTI_LINE, "empty line after block opener"
                break
            p = q
        return CompletionMode.MULTI_LINE, "empty line"
    # The line before the cursor opens a block, or is a definition header without its body
    # (`def foo(a)` in Ruby, `function foo(a)` in Lua, `func f()` in Go...).
    op = block_opener(line, language)
    if op is not None:
        return CompletionMode.MULTI_LINE, f"after block opener {op!r}"
    try:
        if _definition_header(tree, offset, line, language):
            return CompletionMode.MULTI_LINE, "end of definition header"
    except Exception:  # a tree-sitter oddity must not break completion
        log.debug("definition-header check failed", exc_info=True)
    return CompletionMode.SINGLE_LINE, "end of line"


def extract_context(
    text: str,
    offset: int,
    *,
    language_id: str | None,
    path: str | None,
    count_tokens: Callable[[str], int],
    prefix_tokens: int = 1500,
    suffix_tokens: int = 500,
    in_strings: bool = True,
    in_comments: bool = True,
    anchor: int | None = None,
    end_anchor: int | None = None,
) -> CursorContext:
    """Cut the prompt window around ``offset`` and decide the completion mode.

    ``text`` is the whole document, ``offset`` a str index into it (clamped to
    ``0..len(text)``). ``count_tokens`` is called a few times (at worst O(log lines)), only on
    slices of at most ``budget * MAX_CHARS_PER_TOKEN`` characters. ``anchor`` is the ``window_start`` of the
    previous request on this document, ``end_anchor`` its ``window_end`` in this text (see
    :mod:`cl_lsp.completion.window`).
    """
    offset = min(max(offset, 0), len(text))
    prefix_tokens = max(prefix_tokens, 0)
    suffix_tokens = max(suffix_tokens, 0)
    language = language_for(language_id, path)
    lines = scan_lines(
        text, offset, prefix_tokens * MAX_CHARS_PER_TOKEN, suffix_tokens * MAX_CHARS_PER_TOKEN
    )
    cost = TokenCost(text, count_tokens)
    # 1. Cut by tokens at line boundaries (no parse needed).
    start, nudge_start = choose_start(text, offset, prefix_tokens, cost, lines, anchor)
    end, nudge_end = choose_end(text, offset, suffix_tokens, cost, lines, end_anchor)

    # 2. Parse only the chosen region (plus the cursor line), then refine.
    tree: RegionTree | None = None
    in_string = in_comment = False
    if language is not None:
        try:
            lo = min(start, line_start(text, offset, LINE_LOOKBACK))
            hi = max(end, next_line_start(text, offset, LINE_LOOKBACK))
            tree = parse_region(text, lo, hi, offset, language)
            if tree is None:
                language = None
            else:
                if nudge_start:
                    limit = start + (offset - start) // 3
                    s = tree.shallowest_line_start(start, limit, earliest=True)
                    if s is not None and s != start and cost(s, offset) <= prefix_tokens:
                        start = s
                if nudge_end:
                    floor = max(offset + 1, end - (end - offset) // 3)
                    e = tree.shallowest_line_start(floor, end, earliest=False)
                    if e is not None and e != end and cost(offset, e) <= suffix_tokens:
                        end = e
                in_string, in_comment = tree.string_comment_at(offset)
        except Exception:  # a parser failure falls back to line-based context
            log.warning("tree-sitter %r failed; using line-based context", language, exc_info=True)
            tree, language = None, None
            in_string = in_comment = False

    mode, reason = _decide_mode(
        text, offset, tree, language, in_string, in_comment, in_strings, in_comments
    )
    return CursorContext(
        prefix=text[start:offset],
        suffix=text[offset:end],
        language=language,
        mode=mode,
        reason=reason,
        window_start=start,
        window_end=end,
        in_string=in_string,
        in_comment=in_comment,
    )
