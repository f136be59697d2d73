"""The one tree-sitter layer, and the text helpers every stage shares.

- **Parsing**: :func:`parse` parses a window of a document with the grammar from
  :func:`cl_lsp.languages.parser_for` (holding its lock: a parser is not thread-safe) and returns
  a :class:`Parsed`, which converts between the byte offsets tree-sitter counts and the ``str``
  indices everything else counts.
- **Checks on the prompt windows**: does a suggestion add parse errors (:func:`added_errors`),
  which scopes enclose the cursor and close in the suffix (:func:`enclosing_closers`). Only the
  windows are parsed (``prefix + middle + suffix``, each a few KB), never the whole file, so a
  check costs a few milliseconds whatever the document size. The parse of ``prefix + suffix``
  is the baseline and is cached, since every candidate suggestion of one request is compared
  with it. These return None (or nothing) when the language has no grammar: the callers then
  skip the check.
- **Text helpers**, each with one meaning: :func:`line_start`, :func:`line_end`,
  :func:`next_line_start`, :func:`is_identifier_char`, :func:`ends_inside_identifier`,
  :func:`block_opener`.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from . import languages

__all__ = [
    "Parsed",
    "ScopeCloser",
    "added_errors",
    "block_opener",
    "count_errors",
    "empty_nodes",
    "enclosing_closers",
    "ends_inside_identifier",
    "is_identifier_char",
    "line_end",
    "line_start",
    "next_line_start",
    "parse",
    "parse_errors",
    "unit_windows",
    "window_errors",
]

#: Closing tokens that end a scope (besides words such as ``end``, ``fi``, ``done``).
_BRACKET_CLOSERS = frozenset(")]}")


# --------------------------------------------------------------------------- parsing


def _encode(s: str) -> bytes:
    return s.encode("utf-8", "surrogatepass")


@dataclass(frozen=True)
class Parsed:
    """A tree and the bytes it was parsed from: tree-sitter counts bytes, we count str.

    ``source`` is ``prelude`` (text put in front so a window parses as it does in its file)
    followed by ``text``; :meth:`byte` and :meth:`index` convert ``str`` indices into ``text``
    to byte offsets into ``source`` and back.
    """

    root: Any
    source: bytes
    text: str
    prelude: str = ""

    @property
    def byte_shift(self) -> int:
        """Bytes of the prelude before ``text`` in ``source``."""
        return len(_encode(self.prelude))

    @property
    def row_shift(self) -> int:
        """Tree rows taken by the prelude before ``text``'s first line."""
        return self.prelude.count("\n")

    def byte(self, i: int) -> int:
        """The byte offset in ``source`` of ``str`` index ``i`` into ``text``."""
        shift = self.byte_shift
        if len(self.source) - shift == len(self.text):  # ASCII
            return shift + i
        return shift + len(_encode(self.text[:i]))

    def index(self, b: int) -> int:
        """The ``str`` index into ``text`` of byte offset ``b`` in ``source``."""
        shift = self.byte_shift
        if len(self.source) - shift == len(self.text):  # ASCII
            return b - shift
        return len(self.source[shift:b].decode("utf-8", "surrogatepass"))

    def node_text(self, node: Any) -> str:
        return self.source[node.start_byte : node.end_byte].decode("utf-8", "replace")


def _prelude(language: str, text: str, *, cut: bool, closed_tag_cuts: bool) -> str:
    """What a window of a file needs in front to parse as it does in the file: PHP's ``<?php``
    tag (without it the grammar reads everything as HTML). Needed when ``cut`` (the window
    does not start the file) and it has no ``<?``, or, with ``closed_tag_cuts``, when its first
    ``?>`` comes before its first ``<?``."""
    prelude = languages.get(language).prelude
    if not prelude or not cut:
        return ""
    open_at = text.find("<?")
    if open_at < 0:
        return prelude
    close_at = text.find("?>") if closed_tag_cuts else -1
    return prelude if 0 <= close_at < open_at else ""


def parse(
    language: str, text: str, *, cut: bool = True, closed_tag_cuts: bool = False
) -> Parsed | None:
    """Parse ``text`` (a window of a document; ``cut``: not from its start) with the
    language's grammar; None when there is none. Parser errors propagate."""
    entry = languages.parser_for(language)
    if entry is None:
        return None
    parser, lock = entry
    prelude = _prelude(language, text, cut=cut, closed_tag_cuts=closed_tag_cuts)
    source = _encode(prelude + text)
    with lock:
        tree = parser.parse(source)
    return None if tree is None else Parsed(tree.root_node, source, text, prelude)


# --------------------------------------------------------------------------- text helpers


def line_start(text: str, i: int, lookback: int | None = None) -> int:
    """The index of the first character of the line holding index ``i``. With ``lookback``,
    at most that many characters are searched: ``i - lookback`` if no line break is found."""
    floor = 0 if lookback is None else max(0, i - lookback)
    j = text.rfind("\n", floor, i)
    return j + 1 if j >= 0 else floor


def line_end(text: str, i: int) -> int:
    """The index of the ``\\n`` ending the line holding index ``i``, or ``len(text)``: the end
    of the line's content."""
    j = text.find("\n", i)
    return len(text) if j < 0 else j


def next_line_start(text: str, i: int, lookahead: int | None = None) -> int:
    """The index after the ``\\n`` ending the line holding index ``i`` (the line with its line
    break ends there), or ``len(text)``. With ``lookahead``, at most that many characters are
    searched: ``i + lookahead`` (within the text) if no line break is found."""
    top = len(text) if lookahead is None else min(len(text), i + lookahead)
    j = text.find("\n", i, top)
    return j + 1 if j >= 0 else top


def is_identifier_char(ch: str) -> bool:
    """A character that may be part of a name: letters (including non-ASCII), digits,
    combining marks, connector punctuation, ``_`` and ``$``."""
    return ch.isalnum() or ch in "_$" or unicodedata.category(ch) in ("Mn", "Mc", "Pc")


def ends_inside_identifier(prefix: str) -> bool:
    """True if ``prefix`` ends inside an identifier (a name that may go on).

    A run of identifier characters that starts with a digit is a number, not a name: ``(1``
    ends at a token boundary as far as the prompt layout is concerned.
    """
    end = len(prefix)
    start = end
    while start > 0 and is_identifier_char(prefix[start - 1]):
        start -= 1
    return start < end and not prefix[start].isdigit()


_OPENER_WORDS = re.compile(r"(?:^|[^\w$])(do|then|else|begin|repeat)\s*$")
_DO_BLOCK = re.compile(r"(?:^|[^\w$])do\s*\|[^|]*\|\s*$")


def _bracket_depth(s: str) -> int:
    return sum(s.count(c) for c in "([{") - sum(s.count(c) for c in ")]}")


def block_opener(line: str, language: str | None) -> str | None:
    """The block opener a line of code ends with, if any: the line right before it opens a
    block's body. ``{``, ``(``, ``[``, ``:`` outside brackets, ``=>``, keywords ``do``/``then``/
    ``else``/``begin``/``repeat``, ``do |x|``, ``->`` in languages whose record says so (and
    without a grammar), and the language's own line openers (shell's ``case x in``, Ruby's
    block keywords at line start). Compare ``postprocess.BLOCK_OPENERS``, a plain suffix check
    on a line without its trailing comment.
    """
    s = line.rstrip()
    if not s:
        return None
    if s[-1] in "{([":
        return s[-1]
    if s[-1] == ":" and not s.endswith("::") and _bracket_depth(s) <= 0:
        return ":"
    if s.endswith("=>"):
        return "=>"
    record = languages.get(language) if language is not None else None
    if s.endswith("->") and (record is None or record.arrow_opens_block):
        return "->"
    if _DO_BLOCK.search(s):
        return "do |...|"
    m = _OPENER_WORDS.search(s)
    if m:
        return m.group(1)
    for pattern in record.line_openers if record is not None else ():
        found = re.match(pattern, s)
        if found:
            return found.group("opener")
    return None


# --------------------------------------------------------------------------- checks


@dataclass(frozen=True)
class ScopeCloser:
    """The closing token of a scope that encloses the cursor and ends in the suffix."""

    token: str  # "}", ")", "end", "fi" ...
    offset: int  # str index of the token in the suffix
    indent: int  # indentation width (tabs = 4) of the line the token is on
    starts_line: bool  # the token is the first non-blank thing on its line


def count_errors(node: Any) -> int:
    """ERROR and MISSING nodes under ``node`` (error-free subtrees are not entered)."""
    if not node.has_error and not node.is_missing:
        return 0
    own = 1 if node.is_error or node.is_missing else 0
    return own + sum(count_errors(child) for child in node.children)


def parse_errors(language: str, text: str) -> int | None:
    """Parse errors in ``text`` (None: no grammar)."""
    parsed = parse(language, text)
    return None if parsed is None else count_errors(parsed.root)


@dataclass(frozen=True)
class _Window:
    """The parse of the windows as they are (prefix + suffix): the baseline of every check."""

    root: Any
    source: bytes
    cursor: int  # byte offset of the cursor in ``source``


@functools.lru_cache(maxsize=16)
def _window(language: str, prefix: str, suffix: str) -> _Window | None:
    parsed = parse(language, prefix + suffix)
    if parsed is None:
        return None
    return _Window(parsed.root, parsed.source, parsed.byte(len(prefix)))


def window_errors(language: str, prefix: str, suffix: str) -> int | None:
    """Parse errors of the windows as they are, without a suggestion (None: no grammar)."""
    window = _window(language, prefix, suffix)
    return None if window is None else count_errors(window.root)


def empty_nodes(node: Any, lo: int, hi: int) -> int:
    """Named zero-width nodes starting in bytes ``[lo, hi]``, MISSING ones aside.

    Tree-sitter accepts some incomplete code without an error: Python's ``for x in xs:`` with
    nothing after it gets an empty ``block``. Only nodes overlapping the range are entered.
    """
    count = 0
    for child in node.children:
        if child.end_byte < lo:
            continue
        if child.start_byte > hi:
            break
        if child.start_byte == child.end_byte:
            count += child.is_named and not child.is_missing and lo <= child.start_byte
        else:
            count += empty_nodes(child, lo, hi)
    return count


def added_errors(prefix: str, middle: str, suffix: str, language: str | None) -> int | None:
    """How many more parse errors ``prefix + middle + suffix`` has than ``prefix + suffix``.

    Errors are ERROR and MISSING nodes, plus empty nodes (:func:`empty_nodes`) where the
    suggestion goes. Zero or less means ``middle`` breaks nothing that was not broken already.
    None when there is no grammar for ``language``.
    """
    if language is None:
        return None
    window = _window(language, prefix, suffix)
    if window is None:
        return None
    parsed = parse(language, prefix + middle + suffix)
    if parsed is None:
        return None
    root = parsed.root
    cursor = window.cursor
    end = cursor + len(middle.encode("utf-8", "surrogatepass"))
    before = count_errors(window.root) + empty_nodes(window.root, cursor, cursor)
    return count_errors(root) + empty_nodes(root, cursor, end) - before


def _unit_start(line: str) -> bool:
    """A line at column 0 that may start a top-level unit (not a closer ending one)."""
    return bool(line.strip()) and line[0] not in " \t)]}*"


def unit_windows(prefix: str, suffix: str) -> tuple[str, str]:
    """The windows narrowed to the top-level unit around the cursor (a function, a class, a
    statement), so a parse judges the code near the suggestion, not the wreckage of a window
    that starts in the middle of a docstring.

    The unit starts at the last line at column 0 before the cursor (or on its line) that is
    not a closer, with the column-0 lines right above it (a signature on several lines); it
    ends before the next line at column 0 after the cursor's line, or after it if that line
    starts with a closer (C's ``}``). Without such lines the windows stay as they are.
    """
    lines = prefix.split("\n")
    start = next((i for i in range(len(lines) - 1, -1, -1) if _unit_start(lines[i])), None)
    if start is not None:
        while start > 0 and _unit_start(lines[start - 1]):
            start -= 1
        prefix = "\n".join(lines[start:])
    first_end = suffix.find("\n")
    if first_end >= 0:
        position = first_end
        while position >= 0:
            end = suffix.find("\n", position + 1)
            line = suffix[position + 1 : end if end >= 0 else len(suffix)]
            if line.strip() and line[0] not in " \t":
                if line[0] in ")]}":
                    position = len(suffix) if end < 0 else end
                suffix = suffix[:position]
                break
            position = end
    return prefix, suffix


def _closer_of(node: Any, cursor: int) -> Any | None:
    """The closing token of ``node`` if it is a scope closer after ``cursor``."""
    if node.child_count < 2:
        return None
    last = node.child(node.child_count - 1)
    if last is None or last.is_named or last.is_missing or last.start_byte < cursor:
        return None
    text = last.text.decode("utf-8", "replace") if last.text is not None else ""
    if text in _BRACKET_CLOSERS or (text.isalpha() and text.isascii()):
        return last
    return None


def enclosing_closers(prefix: str, suffix: str, language: str | None) -> tuple[ScopeCloser, ...]:
    """Scopes that enclose the cursor and whose closing token is in the suffix, innermost first.

    A scope is a syntax node without errors that starts before the cursor and ends with a
    closing token (``}``, ``)``, ``]``, or a word such as ``end``/``fi``) after it. Empty when
    there is no grammar.
    """
    window = None if language is None else _window(language, prefix, suffix)
    if window is None:
        return ()
    cursor = window.cursor
    closers: list[ScopeCloser] = []
    node = window.root.descendant_for_byte_range(cursor, cursor)
    while node is not None and node.parent is not None:
        if node.start_byte < cursor < node.end_byte and not node.has_error:
            last = _closer_of(node, cursor)
            if last is not None:
                closers.append(_describe(window.source, cursor, last))
        node = node.parent
    return tuple(closers)


def _describe(source: bytes, cursor: int, token: Any) -> ScopeCloser:
    start = token.start_byte
    line_start = source.rfind(b"\n", 0, start) + 1
    before = source[line_start:start].decode("utf-8", "replace")
    lead = before[: len(before) - len(before.lstrip())]
    return ScopeCloser(
        token=token.text.decode("utf-8", "replace"),
        offset=len(source[cursor:start].decode("utf-8", "replace")),
        indent=len(lead.expandtabs(4)),
        starts_line=not before.strip(),
    )
