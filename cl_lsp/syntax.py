"""The structure of code around the cursor, for judging a suggestion in its prompt windows.

Two tools, both bounded by the windows:

- **Brackets, lexically** (any language, no grammar needed): :class:`Lexer` walks text skipping
  strings and comments (per-language :class:`Lexicon`); :func:`bracket_effect` sums up what a
  piece of text does to the brackets open before it, so a suffix is scanned once per request,
  not once per candidate suggestion.
- **Tree-sitter**: does a suggestion add parse errors (:func:`added_errors`), which scopes
  enclose the cursor and close in the suffix (:func:`enclosing_closers`).

For tree-sitter, only the windows are parsed (``prefix + middle + suffix``, each a few KB),
never the whole file, so a check costs a few milliseconds whatever the document size (about
1 ms per parse of an 8 KB window). The parse of ``prefix + suffix`` (the document as it is) is
the baseline; it is cached, since every candidate suggestion for one request is compared with
it. The tree-sitter functions return None (or nothing) when the language has no grammar: the
callers then skip the check. A parser is not thread-safe: parsing holds its lock.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .context import _parser

__all__ = [
    "PAIRS",
    "Alignment",
    "BracketEffect",
    "Lexer",
    "Lexicon",
    "ScopeCloser",
    "added_errors",
    "align",
    "apply_effect",
    "bracket_effect",
    "count_errors",
    "empty_nodes",
    "enclosing_closers",
    "lexicon_for",
    "unit_windows",
    "width",
    "window_errors",
]

#: Closer -> opener.
PAIRS = {")": "(", "]": "[", "}": "{"}
#: Closing tokens that end a scope (besides words such as ``end``, ``fi``, ``done``).
_BRACKET_CLOSERS = frozenset(")]}")


@dataclass(frozen=True)
class ScopeCloser:
    """The closing token of a scope that encloses the cursor and ends in the suffix."""

    token: str  # "}", ")", "end", "fi" ...
    offset: int  # str index of the token in the suffix
    indent: int  # indentation width (tabs = 4) of the line the token is on
    starts_line: bool  # the token is the first non-blank thing on its line


def _source(language: str, text: str) -> bytes:
    # A php window cut from the middle of a file has lost its `<?php` tag: without it the
    # grammar reads everything as HTML.
    if language == "php" and "<?" not in text:
        text = "<?php\n" + text
    return text.encode("utf-8", "surrogatepass")


def _parse(language: str, source: bytes) -> Any | None:
    entry = _parser(language)
    if entry is None:
        return None
    parser, lock = entry
    with lock:
        tree = parser.parse(source)
    return None if tree is None else tree.root_node


def count_errors(node: Any) -> int:
    """ERROR and MISSING nodes under ``node`` (error-free subtrees are not entered)."""
    if not node.has_error and not node.is_missing:
        return 0
    own = 1 if node.is_error or node.is_missing else 0
    return own + sum(count_errors(child) for child in node.children)


def parse_errors(language: str, text: str) -> int | None:
    """Parse errors in ``text`` (None: no grammar)."""
    root = _parse(language, _source(language, text))
    return None if root is None else count_errors(root)


@dataclass(frozen=True)
class _Window:
    """The parse of the windows as they are (prefix + suffix): the baseline of every check."""

    root: Any
    source: bytes
    cursor: int  # byte offset of the cursor in ``source``


@functools.lru_cache(maxsize=16)
def _window(language: str, prefix: str, suffix: str) -> _Window | None:
    source = _source(language, prefix + suffix)
    root = _parse(language, source)
    if root is None:
        return None
    cursor = len(source) - len(suffix.encode("utf-8", "surrogatepass"))
    return _Window(root, source, cursor)


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
    source = _source(language, prefix + middle + suffix)
    root = _parse(language, source)
    if root is None:
        return None
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


# --------------------------------------------------------------------------- brackets, lexically


@dataclass(frozen=True)
class Lexicon:
    """What hides brackets in a language: comments and string quotes."""

    line_comments: tuple[str, ...] = ()
    block_comment: tuple[str, str] | None = None
    quotes: tuple[str, ...] = ('"',)  # strings that end at the end of the line
    long_quotes: tuple[str, ...] = ()  # strings that may span lines
    char_literals: bool = False  # `'` only starts 'x' / '\n' (Rust lifetimes, Haskell x')
    brackets: str = "()[]{}"
    trust_closers: bool = True  # a closer of nothing in a suggestion is an error
    # A one-line string left open at the end of a suggestion may be prose (JSX text: `Don't`)
    # when nothing follows on the cursor's line.
    prose_quotes: bool = False

    @property
    def openings(self) -> tuple[str, ...]:
        """Markers that open a string or a line comment."""
        return (*self.quotes, *self.long_quotes, *self.line_comments)


_C_LIKE = Lexicon(("//",), ("/*", "*/"), ('"', "'"))
_JS = Lexicon(("//",), ("/*", "*/"), ('"', "'"), ("`",), prose_quotes=True)
_HASH = Lexicon(("#",), None, ('"', "'"))
_LEXICONS: dict[str, Lexicon] = {
    "python": Lexicon(("#",), None, ('"', "'"), ('"""', "'''")),
    "javascript": _JS,
    "typescript": _JS,
    "tsx": _JS,
    "go": _JS,
    "rust": Lexicon(("//",), ("/*", "*/"), (), ('"',), char_literals=True),
    # `case` patterns (`a)`) close nothing: only [] and {} are counted in shell.
    "bash": Lexicon(("#",), None, ('"', "'"), brackets="[]{}"),
    "ruby": _HASH,
    "perl": _HASH,
    "r": _HASH,
    "elixir": _HASH,
    "yaml": _HASH,
    "toml": _HASH,
    "make": _HASH,
    "dockerfile": _HASH,
    "nix": Lexicon(("#",), ("/*", "*/"), ('"',)),
    "php": Lexicon(("//", "#"), ("/*", "*/"), ('"', "'")),
    "lua": Lexicon(("--",), ("--[[", "]]"), ('"', "'")),
    "sql": Lexicon(("--",), ("/*", "*/"), ('"', "'")),
    "haskell": Lexicon(("--",), ("{-", "-}"), ('"',), char_literals=True),
    "elm": Lexicon(("--",), ("{-", "-}"), ('"',), char_literals=True),
    "ocaml": Lexicon((), ("(*", "*)"), ('"',), char_literals=True),
    "fsharp": Lexicon(("//",), ("(*", "*)"), ('"',), char_literals=True),
    "scala": Lexicon(("//",), ("/*", "*/"), ('"',), char_literals=True),
    "css": Lexicon((), ("/*", "*/"), ('"', "'")),
}
#: No grammar: only double quotes are trusted to delimit strings (an apostrophe in prose would
#: otherwise open one) and nothing is known to start a comment.
_PLAIN = Lexicon(trust_closers=False)


def lexicon_for(language: str | None) -> Lexicon:
    if language is None:
        return _PLAIN
    return _LEXICONS.get(language, _C_LIKE)


@functools.lru_cache(maxsize=64)
def _token_pattern(lex: Lexicon) -> re.Pattern[str]:
    markers = {*lex.line_comments, *(lex.block_comment or ()), *lex.quotes, *lex.long_quotes}
    parts = [r"'(?:\\.[^'\n]{0,8}|[^'\\\n])'"] if lex.char_literals else []
    parts += [re.escape(m) for m in sorted(markers, key=len, reverse=True)]
    parts += [r"\\.", r"\n", "[" + re.escape(lex.brackets) + "]"]
    return re.compile("|".join(parts), re.DOTALL)


class Lexer:
    """Walks text, yielding ``(pos, token)`` for what code structure is made of: brackets outside
    strings and comments, every newline (``"\\n"``, before the line's string ends) and the end of
    a line whose one-line string is not closed (``"!"``). ``mode`` is the lexical state: None in
    code, else the quote or comment marker whose string or comment is open."""

    def __init__(self, lex: Lexicon, mode: str | None = None) -> None:
        self.lex = lex
        self.mode = mode

    def run(self, text: str) -> Iterator[tuple[int, str]]:
        lex = self.lex
        block_open, block_close = lex.block_comment or ("", "")
        for match in _token_pattern(lex).finditer(text):
            token, pos = match.group(), match.start()
            mode = self.mode
            if token == "\n":
                yield pos, token
                if mode in lex.line_comments:
                    self.mode = None
                elif mode in lex.quotes:
                    self.mode = None
                    yield pos, "!"
            elif mode is None:
                if len(token) == 1 and token in lex.brackets:
                    yield pos, token
                elif token in lex.openings or token == block_open:
                    self.mode = token
                elif token[0] not in "\\'":  # a stray comment closer such as Lua's `]]`
                    for i, ch in enumerate(token):
                        if ch in lex.brackets:
                            yield pos + i, ch
            elif mode == block_open:
                if token == block_close:
                    self.mode = None
            elif token == mode and mode not in lex.line_comments:  # only a newline ends those
                self.mode = None


@dataclass(frozen=True)
class BracketEffect:
    """What a piece of text does to the brackets open before it."""

    demand: tuple[str, ...]  # closers that close something opened before the text, in order
    residual: tuple[str, ...]  # openers the text leaves open
    errors: int  # mismatched closers and unclosed one-line strings within the text
    mode: str | None  # lexical mode at the end
    # The indentation of each demand closer's line if the closer starts it (a `}` on its own
    # line), else None; the indentation of the statement each residual opener is on.
    demand_indents: tuple[int | None, ...] = ()
    residual_indents: tuple[int, ...] = ()
    logical_end: int = 0  # the statement indentation of the text's last line


_LEAD = re.compile(r"[ \t]*")


def width(lead: str) -> int:
    """Indentation width, tabs counting 4."""
    return len(lead.expandtabs(4))


class IndentTracker:
    """Follows the indentation of the statement each bracket is opened in: a line inside an
    open ``(`` or ``[`` continues the statement of that bracket's line; other lines are
    statements of their own."""

    def __init__(self, text: str, head: str, logical: int | None = None) -> None:
        self.text = text
        self.head = head  # the line's text before ``text`` starts
        self.line_start = 0
        lead = _LEAD.match(head + text).group()  # type: ignore[union-attr]
        self.logical = width(lead) if logical is None else logical

    def newline(self, pos: int, top: tuple[str, int] | None) -> None:
        self.line_start = pos + 1
        self.head = ""
        if top is not None and top[0] in "([":
            self.logical = top[1]
        else:
            self.logical = width(_LEAD.match(self.text, pos + 1).group())  # type: ignore[union-attr]

    def closer_indent(self, pos: int) -> int | None:
        """The indentation of the closer's line if it is the first thing on it."""
        before = self.head + self.text[self.line_start : pos]
        return None if before.strip() else width(before)


@functools.lru_cache(maxsize=256)
def bracket_effect(text: str, lex: Lexicon, mode: str | None, head: str = "") -> BracketEffect:
    """Scan ``text`` once, starting in lexical ``mode``, on a line that starts with ``head``
    (cached: a request's suffix is judged against many candidate suggestions)."""
    lexer = Lexer(lex, mode)
    lines = IndentTracker(text, head)
    own: list[tuple[str, int]] = []
    demand: list[str] = []
    indents: list[int | None] = []
    errors = 0
    for pos, token in lexer.run(text):
        if token == "\n":
            lines.newline(pos, own[-1] if own else None)
        elif token in "([{":
            own.append((token, lines.logical))
        elif token in ")]}":
            if not own:
                demand.append(token)
                indents.append(lines.closer_indent(pos))
            elif own.pop()[0] != PAIRS[token]:
                errors += 1
        elif token == "!":
            errors += 1
    return BracketEffect(
        tuple(demand),
        tuple(o for o, _ in own),
        errors,
        lexer.mode,
        tuple(indents),
        tuple(i for _, i in own),
        lines.logical,
    )


@dataclass(frozen=True)
class Alignment:
    """Closers after a stack of openers, matched the way a reader would: a closer closes the
    innermost opener of its kind (on its own line, one not indented more than the closer);
    the openers above that one were left open by mistake."""

    errors: int  # the text's own errors, skipped openers, closers that match nothing open
    left: int  # openers still open at the end (the stack's and the text's own)
    closed: frozenset[int]  # indices into the stack of the openers the closers close


def align(
    demand: tuple[str, ...],
    open_before: tuple[str, ...],
    errors: int = 0,
    demand_indents: tuple[int | None, ...] = (),
    open_indents: tuple[int, ...] = (),
) -> Alignment:
    """Match ``demand`` (closers, in order) against ``open_before`` (openers, innermost last).

    With indentations, a closer that starts its line skips openers of its kind on statements
    indented more than it (``if (x) {`` left open inside a block whose ``}`` follows), unless
    none is left to match. A closer with no opener of its kind on the stack counts as an error
    (with nothing open it may close something before the window; it counts the same with or
    without a suggestion, so comparisons stay fair).
    """
    stack = list(range(len(open_before)))
    closed: set[int] = set()
    for n, closer in enumerate(demand):
        want = PAIRS[closer]
        indent = demand_indents[n] if n < len(demand_indents) else None
        candidates = [d for d in range(len(stack) - 1, -1, -1) if open_before[stack[d]] == want]
        if indent is not None and len(open_indents) == len(open_before):
            fitting = [d for d in candidates if open_indents[stack[d]] <= indent]
            candidates = fitting or candidates
        if not candidates:
            errors += 1
            continue
        depth = candidates[0]
        errors += len(stack) - 1 - depth
        closed.add(stack[depth])
        del stack[depth:]
    return Alignment(errors, len(stack), frozenset(closed))


def apply_effect(
    effect: BracketEffect, open_before: tuple[str, ...], open_indents: tuple[int, ...] = ()
) -> Alignment:
    """What text with ``effect`` does after ``open_before`` (see :func:`align`)."""
    found = align(effect.demand, open_before, effect.errors, effect.demand_indents, open_indents)
    return Alignment(found.errors, found.left + len(effect.residual), found.closed)
