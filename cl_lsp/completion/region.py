"""The parse of a bounded region around the cursor, and what it says about the cursor.

Only the chosen prompt window -- plus the cursor line and a short run-up to a line that starts
a construct (:func:`parse_start`) -- is parsed. Tree-sitter works in UTF-8 bytes; conversions
go through rows (lines) and byte columns computed from the same ``str``, so no code point is
ever split. The tree answers where a syntactic cut may go
(:meth:`RegionTree.shallowest_line_start`), whether the cursor is in a string or a comment, and
whether it ends a definition header.
"""

from __future__ import annotations

import bisect
import re
from typing import Any

from .. import languages, syntax
from ..syntax import Parsed, line_start, next_line_start
from .window import PARSE_MARGIN, line_starts

__all__ = ["LINE_LOOKBACK", "RegionTree", "parse_region", "parse_start"]

#: Max tree nodes visited when looking for a syntactic cut.
_MAX_SYNTAX_NODES = 4000
#: How far back the cursor line is looked at (and ahead for its end).
LINE_LOOKBACK = 10_000

_DEF_TYPE = re.compile(r"function|method|class|module|constructor|impl|trait|interface|struct|enum")
_NOT_DEF_TYPE = re.compile(
    r"call|invocation|body|identifier|name|parameter|argument|type|reference|access|modifier"
    r"|selector|signature|specifier|list|clause|field|expression_statement"
)


def _encode(s: str) -> bytes:
    return s.encode("utf-8", "surrogatepass")


_BLOCK_COMMENTS = (
    (b"/*", b"*/"),
    (b"--[", b"]"),
    (b"<!--", b"-->"),
    (b"=begin", b"=end"),
    (b"{-", b"-}"),
    (b"(*", b"*)"),
    (b"#|", b"|#"),
    (b"<#", b"#>"),
)
_NOT_STRING = ("concatenated", "interpolation", "substitution")
_STRING_TYPES = ("char_literal", "character_literal", "rune_literal", "heredoc", "nowdoc")


def _is_comment_type(t: str) -> bool:
    return "comment" in t


def _is_string_type(t: str) -> bool:
    return ("string" in t and not any(x in t for x in _NOT_STRING)) or t in _STRING_TYPES


def _is_code_island(t: str) -> bool:
    # Code embedded in a string: f"{x}", `${x}`, "#{x}", "$(cmd)"...
    return "interpolation" in t or "substitution" in t or t == "expansion"


def _scan_line(line: str, language: str) -> tuple[bool, bool]:
    """Lexically scan the cursor line up to the cursor: (in_string, in_comment).

    Used only where tree-sitter reports an error around the cursor (typically an unterminated
    string or block comment being typed).
    """
    record = languages.get(language)
    quotes, markers, block = record.cursor_scan
    quote: str | None = None
    i, n = 0, len(line)
    while i < n:
        ch = line[i]
        if quote is not None:
            if ch == "\\":
                i += 2
                continue
            if line.startswith(quote, i):
                i += len(quote)
                quote = None
                continue
            i += 1
            continue
        if block and line.startswith("/*", i):
            close = line.find("*/", i + 2)
            if close < 0:
                return False, True
            i = close + 2
            continue
        if any(line.startswith(m, i) for m in markers):
            return False, True
        if ch in quotes:
            triple = ch * 3
            long = triple in record.lexicon.long_quotes and line.startswith(triple, i)
            quote = triple if long else ch
            i += len(quote)
            continue
        i += 1
    return quote is not None, False


def _ends_missing(node: Any) -> bool:
    last = node.child(node.child_count - 1) if node.child_count else None
    return bool(last is not None and last.is_missing)


class RegionTree:
    """A tree-sitter parse of the bounded region ``text[lo:hi]`` (row i = ``starts[i]``)."""

    def __init__(self, text: str, lo: int, hi: int, language: str) -> None:
        self.text = text
        self.lo = lo
        self.hi = hi
        self.language = language
        self.starts = line_starts(text, lo, hi)
        self.root: Any = None
        self.parsed: Parsed | None = None
        self.src = b""
        self.row_shift = 0

    def parse(self) -> bool:
        """Parse the region (a window cut from a file: PHP gets its tag back); False without
        a grammar."""
        parsed = syntax.parse(
            self.language, self.text[self.lo : self.hi], cut=self.lo > 0, closed_tag_cuts=True
        )
        if parsed is None:
            return False
        self.parsed, self.root, self.src = parsed, parsed.root, parsed.source
        self.row_shift = parsed.row_shift
        return True

    def index_of_row(self, row: int) -> int:
        """Index into ``starts`` of a tree row."""
        return row - self.row_shift

    def row_of(self, pos: int) -> int:
        """Tree row of the line containing absolute str index ``pos``."""
        return bisect.bisect_right(self.starts, pos) - 1 + self.row_shift

    def byte_of(self, pos: int) -> int:
        """Byte offset in the parsed source of absolute str index ``pos``."""
        assert self.parsed is not None
        return self.parsed.byte(pos - self.lo)

    def _begins_line(self, node: Any) -> bool:
        """The node starts at the first non-blank character of its line."""
        i = self.index_of_row(node.start_point[0])
        if not 0 <= i < len(self.starts):
            return False
        start = self.starts[i]
        end = self.starts[i + 1] if i + 1 < len(self.starts) else self.hi
        line = self.text[start:end]
        body = line.lstrip()
        return bool(body) and node.start_point[1] == len(_encode(line[: len(line) - len(body)]))

    def shallowest_line_start(self, a: int, b: int, *, earliest: bool) -> int | None:
        """A line start in [a, b] where a node of minimal depth begins (None if none).

        Among equally shallow nodes the earliest (or latest) wins. Only named nodes that begin
        their line count; strings and comments are not entered.
        """
        if a > b:
            return None
        first = bisect.bisect_left(self.starts, a)
        last = bisect.bisect_right(self.starts, b) - 1
        if first > last:
            return None
        row_a, row_b = first + self.row_shift, last + self.row_shift
        level = [self.root]
        visited = 0
        while level and visited < _MAX_SYNTAX_NODES:
            found: list[tuple[int, Any]] = []
            deeper: list[Any] = []
            for node in level:
                for child in node.children:
                    visited += 1
                    r0, r1 = child.start_point[0], child.end_point[0]
                    if r1 < row_a:
                        continue
                    if r0 > row_b:
                        break
                    if (
                        r0 >= row_a
                        and child.is_named
                        and not child.is_error
                        and self._begins_line(child)
                    ):
                        found.append((r0, child))
                    t = child.type
                    if r1 > r0 and not (_is_string_type(t) or _is_comment_type(t)):
                        deeper.append(child)
            if found:
                pick = min if earliest else max
                row, node = pick(found, key=lambda f: f[0])
                # Keep a definition together with the comments right above it.
                prev = node.prev_named_sibling
                while (
                    prev is not None
                    and _is_comment_type(prev.type)
                    and prev.end_point[0] == row - 1
                    and prev.start_point[0] >= row_a
                    and self._begins_line(prev)
                ):
                    row, prev = prev.start_point[0], prev.prev_named_sibling
                return self.starts[self.index_of_row(row)]
            level = deeper
        return None

    def string_comment_at(self, offset: int) -> tuple[bool, bool]:
        """(in_string, in_comment) at the cursor."""
        if offset <= self.lo:
            return False, False
        b = self.byte_of(offset)
        node = self.root.descendant_for_byte_range(b - 1, b)
        erroneous = False
        while node is not None and node.parent is not None:
            t = node.type
            erroneous = erroneous or node.has_error or node.is_error
            if _is_code_island(t):
                return False, False
            if _is_comment_type(t):
                while node.parent is not None and _is_comment_type(node.parent.type):
                    node = node.parent
                if node.end_byte > b or node.has_error:
                    return False, True
                raw = self.src[node.start_byte : node.end_byte].rstrip()
                for opener, closer in _BLOCK_COMMENTS:
                    if raw.startswith(opener):
                        closed = len(raw) >= len(opener) + len(closer) and raw.endswith(closer)
                        return False, not closed
                return False, True  # a line comment runs to the end of the line
            if _is_string_type(t):
                while node.parent is not None and _is_string_type(node.parent.type):
                    node = node.parent
                inside = (
                    node.end_byte > b
                    or node.has_error
                    or _ends_missing(node)
                    # string contents with no enclosing string node: an unterminated string
                    or (node.parent is not None and node.parent.is_error)
                )
                return inside, False
            node = node.parent
        if erroneous:
            line = self.text[max(line_start(self.text, offset, LINE_LOOKBACK), self.lo) : offset]
            return _scan_line(line, self.language)
        return False, False

    def definition_header_ends_at(self, end: int) -> bool:
        """A definition (function, class...) starts on this line and its body is not written."""
        if end <= self.lo:
            return False
        b = self.byte_of(end)
        row = self.row_of(end)
        node = self.root.descendant_for_byte_range(b - 1, b)
        while node is not None and node.parent is not None:
            t = node.type
            if _DEF_TYPE.search(t) and not _NOT_DEF_TYPE.search(t):
                if node.start_point[0] != row:
                    return False
                body = node.child_by_field_name("body")
                return body is None or body.start_byte >= b or body.end_byte == body.start_byte
            node = node.parent
        return False


#: Lines that continue an enclosing construct: a bad place to start parsing.
_CONTINUATION = re.compile(
    r"[)\]}]|(?:end|fi|done|esac|else|elif|elsif|except|finally|catch|rescue|ensure|case|when"
    r"|default)\b"
)


def parse_start(text: str, lo: int, offset: int) -> int:
    """Where to start parsing so the region ``[lo, ...)`` is seen in its syntactic context.

    Parsing from the middle of a block makes tree-sitter see a stray tail of it (``}``, ``end``)
    at the same level as the complete definitions that follow. So the parse starts, if one is
    found within ``PARSE_MARGIN`` characters, at a line indented no deeper than any line
    between ``lo`` and the cursor and not continuing an enclosing construct.
    """
    if lo == 0 or text[lo - 1] != "\n":
        return lo
    indents = [
        len(line) - len(body)
        for line in text[lo : next_line_start(text, offset, LINE_LOOKBACK)].split("\n")
        if (body := line.lstrip())
    ]
    limit = min(indents, default=0)

    def good(p: int) -> bool:
        line = text[p : next_line_start(text, p, LINE_LOOKBACK)]
        body = line.lstrip()
        return bool(body) and len(line) - len(body) <= limit and not _CONTINUATION.match(body)

    floor = max(0, lo - PARSE_MARGIN)
    p = lo
    while not good(p):
        if p <= floor:
            return 0 if p == 0 else lo
        q = text.rfind("\n", floor, p - 1)
        p = q + 1 if q >= 0 else floor
        if q < 0 and floor > 0:
            return lo
    return p


def parse_region(text: str, lo: int, hi: int, offset: int, language: str) -> RegionTree | None:
    """Parse ``text[lo:hi]`` (starting a little earlier, see :func:`_parse_start`)."""
    tree = RegionTree(text, parse_start(text, lo, offset), hi, language)
    return tree if tree.parse() else None
