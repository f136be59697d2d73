"""Cursor context: (document text, cursor offset) -> :class:`CursorContext`.

This is a pure domain stage (no LSP, no model). It owns three decisions:

1. **Which grammar** parses the document (:func:`language_for`: LSP ``languageId`` first, then the
   file extension / file name). Grammars come from ``tree_sitter_language_pack`` (0.13.x, bundled
   grammars, no network). Unknown languages, and any parser failure, fall back to line-based
   context: never an error.

2. **The prompt window**: ``prefix = text[window_start:offset]`` and
   ``suffix = text[offset:window_end]``, each within its token budget as counted by the caller's
   ``count_tokens`` (the model's own tokenizer). Nothing proportional to the document size is
   done per request: candidate cuts are the line starts of a bounded slice around the cursor
   (``budget * MAX_CHARS_PER_TOKEN`` characters each side, which also caps the prefix and suffix
   length in characters), the cut is found by an interpolation search over them (typically 2-4
   ``count_tokens`` calls per side, at worst O(log lines), on bounded strings; a cut within
   1/16 of the target is good enough), and only the chosen window -- plus the cursor line and a
   short run-up to a line that starts a construct (see ``_parse_start``) -- is parsed.

   Cuts prefer syntactic boundaries: within the first third of the prefix window the start moves
   to the line where the shallowest syntax node (a top-level definition / statement, or a
   comment before one) begins; within the last third of the suffix window the end moves to just
   before such a node (the suffix always ends after a complete line). Failing that, any line
   boundary; failing that (a single huge line), a character boundary that does not split a
   combining sequence. Tree-sitter works in UTF-8 bytes; conversions go through rows (lines) and
   byte columns computed from the same ``str``, so no code point is ever split.

   **Stable window start** (KV-cache reuse: the model re-evaluates everything after the first
   changed token, so ``window_start`` should move rarely and in large steps). ``anchor`` is the
   ``window_start`` returned for the previous request on the same document. It is kept exactly
   when it is still usable: ``0 <= anchor <= offset``, it is a line start of the current text
   (or, only when the cursor line alone overflows the budget, a point inside the cursor line),
   and the prefix from it fits the budget -- unless that prefix is very short (< 1/4 of the
   budget) while more text exists before it. Otherwise a new start is chosen so the prefix uses
   about 3/4 of the budget (``HEADROOM``), leaving room to type before it must move again. If
   the whole text before the cursor fits, the start is 0.

3. **The completion mode** (first matching rule wins):

   - ``NONE`` -- the character right after the cursor is an identifier character (the cursor is
     inside an identifier, or in front of a word after other code on its line).
   - ``NONE`` -- inside a comment and ``in_comments`` is False, or inside a string and
     ``in_strings`` is False (tree-sitter node types at the cursor; an unterminated string on
     the cursor line is also recognised when the tree has an error there; the line-based
     fallback never guesses and treats everything as code).
   - ``SINGLE_LINE`` -- inside a comment or a string (allowed by the settings).
   - ``MULTI_LINE`` -- only indentation before the cursor on its line and code after it: the
     suggestion is whole lines inserted above the cursor's line (see
     :func:`cl_lsp.postprocess.clean_completion`).
   - ``MULTI_LINE`` -- the rest of the line after the cursor holds something other than
     closing brackets, quotes, ``;``, ``,`` and whitespace: the middle may end inside a later
     line, and the model's end token says where (a copy of the rest of the line, or lines that
     break it, are cut by post-processing).
   - ``MULTI_LINE`` -- the line before the cursor is blank / whitespace-only.
   - ``MULTI_LINE`` -- the line before the cursor ends with a block opener (``{``, ``(``, ``[``,
     ``:``, ``=>``, keywords ``do``/``then``/``else``/``begin``/``repeat``, ``do |x|``, ``->`` in
     languages that use it, ``in`` in shell ``case``, Ruby block keywords at line start).
   - ``MULTI_LINE`` -- the cursor is at the end of a definition header whose body has not been
     written yet (``def foo(a)`` in Ruby, ``function foo(a)`` in Lua, ``func f()`` in Go...).
   - ``SINGLE_LINE`` -- otherwise.
"""

from __future__ import annotations

import bisect
import enum
import itertools
import logging
import os
import re
import threading
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "HEADROOM",
    "MAX_CHARS_PER_TOKEN",
    "SHORT_ANCHOR",
    "CompletionMode",
    "CursorContext",
    "ends_inside_identifier",
    "extract_context",
    "language_for",
]

#: Upper bound on characters per budget token: the character window looked at (parsed and
#: tokenized) is ``budget * MAX_CHARS_PER_TOKEN`` on each side of the cursor, which also caps the
#: prefix/suffix length in characters. Code Llama averages ~3-4 characters per token on code.
MAX_CHARS_PER_TOKEN = 8
#: A freshly chosen window start makes the prefix use about this fraction of the budget.
HEADROOM = 0.75
#: An anchor whose prefix uses less than this fraction of the budget is dropped (if more text
#: exists before it).
SHORT_ANCHOR = 0.25
#: How far before the window the parse may start (see ``_parse_start``) and how far a line
#: boundary is looked for around the character window; text there is never part of the prompt.
_PARSE_MARGIN = 4000
#: Prior guess of characters per token, for the first probe of the budget search.
_GUESS_CHARS_PER_TOKEN = 3.5
#: Max tree nodes visited when looking for a syntactic cut.
_MAX_SYNTAX_NODES = 4000
#: How far back the cursor line is looked at for the mode decision.
_LINE_LOOKBACK = 10_000


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


# --------------------------------------------------------------------------- languages

_LANGUAGE_IDS: dict[str, str] = {
    "python": "python",
    "py": "python",
    "javascript": "javascript",
    "javascriptreact": "javascript",  # tree-sitter-javascript parses JSX
    "js": "javascript",
    "jsx": "javascript",
    "typescript": "typescript",
    "ts": "typescript",
    "typescriptreact": "tsx",
    "tsx": "tsx",
    "java": "java",
    "c": "c",
    "cpp": "cpp",
    "c++": "cpp",
    "cuda-cpp": "cuda",
    "cuda": "cuda",
    "csharp": "csharp",
    "c_sharp": "csharp",
    "c#": "csharp",
    "cs": "csharp",
    "go": "go",
    "golang": "go",
    "rust": "rust",
    "php": "php",
    "shellscript": "bash",
    "shell": "bash",
    "sh": "bash",
    "bash": "bash",
    "zsh": "bash",
    "lua": "lua",
    "ruby": "ruby",
    "kotlin": "kotlin",
    "swift": "swift",
    "scala": "scala",
    "haskell": "haskell",
    "elixir": "elixir",
    "erlang": "erlang",
    "dart": "dart",
    "zig": "zig",
    "ocaml": "ocaml",
    "julia": "julia",
    "perl": "perl",
    "r": "r",
    "sql": "sql",
    "css": "css",
    "scss": "scss",
    "html": "html",
    "json": "json",
    "jsonc": "json",
    "yaml": "yaml",
    "toml": "toml",
    "dockerfile": "dockerfile",
    "makefile": "make",
    "objective-c": "objc",
    "objc": "objc",
    "powershell": "powershell",
    "groovy": "groovy",
    "vue": "vue",
    "svelte": "svelte",
    "nix": "nix",
    "terraform": "hcl",
    "hcl": "hcl",
    "clojure": "clojure",
    "elm": "elm",
    "fsharp": "fsharp",
    "xml": "xml",
    "solidity": "solidity",
    "proto": "proto",
    "proto3": "proto",
    "graphql": "graphql",
}

_EXTENSIONS: dict[str, str] = {
    ".py": "python",
    ".pyi": "python",
    ".pyw": "python",
    ".js": "javascript",
    ".mjs": "javascript",
    ".cjs": "javascript",
    ".jsx": "javascript",
    ".ts": "typescript",
    ".mts": "typescript",
    ".cts": "typescript",
    ".tsx": "tsx",
    ".java": "java",
    ".c": "c",
    ".h": "c",
    ".cc": "cpp",
    ".cpp": "cpp",
    ".cxx": "cpp",
    ".c++": "cpp",
    ".hpp": "cpp",
    ".hh": "cpp",
    ".hxx": "cpp",
    ".h++": "cpp",
    ".ino": "cpp",
    ".cu": "cuda",
    ".cuh": "cuda",
    ".cs": "csharp",
    ".go": "go",
    ".rs": "rust",
    ".php": "php",
    ".phtml": "php",
    ".sh": "bash",
    ".bash": "bash",
    ".zsh": "bash",
    ".ksh": "bash",
    ".lua": "lua",
    ".rb": "ruby",
    ".rake": "ruby",
    ".gemspec": "ruby",
    ".kt": "kotlin",
    ".kts": "kotlin",
    ".swift": "swift",
    ".scala": "scala",
    ".sc": "scala",
    ".hs": "haskell",
    ".ex": "elixir",
    ".exs": "elixir",
    ".erl": "erlang",
    ".hrl": "erlang",
    ".dart": "dart",
    ".zig": "zig",
    ".ml": "ocaml",
    ".jl": "julia",
    ".pl": "perl",
    ".pm": "perl",
    ".r": "r",
    ".sql": "sql",
    ".css": "css",
    ".scss": "scss",
    ".html": "html",
    ".htm": "html",
    ".json": "json",
    ".jsonc": "json",
    ".yaml": "yaml",
    ".yml": "yaml",
    ".toml": "toml",
    ".m": "objc",
    ".ps1": "powershell",
    ".groovy": "groovy",
    ".gradle": "groovy",
    ".vue": "vue",
    ".svelte": "svelte",
    ".nix": "nix",
    ".tf": "hcl",
    ".hcl": "hcl",
    ".clj": "clojure",
    ".cljs": "clojure",
    ".elm": "elm",
    ".fs": "fsharp",
    ".fsx": "fsharp",
    ".xml": "xml",
    ".sol": "solidity",
    ".proto": "proto",
    ".graphql": "graphql",
}

_FILENAMES: dict[str, str] = {
    "dockerfile": "dockerfile",
    "makefile": "make",
    "gnumakefile": "make",
    "rakefile": "ruby",
    "gemfile": "ruby",
    "vagrantfile": "ruby",
    ".bashrc": "bash",
    ".bash_profile": "bash",
    ".profile": "bash",
    ".zshrc": "bash",
}

log = logging.getLogger(__name__)

_parser_lock = threading.Lock()
_parsers: dict[str, tuple[Any, threading.Lock] | None] = {}


def _parser(name: str) -> tuple[Any, threading.Lock] | None:
    """Cached tree-sitter parser (and its lock: a Parser is not thread-safe) or None."""
    with _parser_lock:
        if name in _parsers:
            return _parsers[name]
        entry: tuple[Any, threading.Lock] | None
        try:
            from tree_sitter_language_pack import get_parser

            entry = (get_parser(name), threading.Lock())
        except Exception:  # unknown name, missing binding, ABI mismatch...
            log.warning("no tree-sitter grammar %r; using line-based context", name, exc_info=True)
            entry = None
        _parsers[name] = entry
        return entry


def language_for(language_id: str | None, path: str | None) -> str | None:
    """The tree-sitter grammar name for a document, or None (line-based context).

    The LSP ``languageId`` wins when it is known; otherwise the file name / extension of ``path``
    (a path or a ``file:`` URI) decides. Returns None when nothing matches or the grammar can't
    be loaded.
    """
    name: str | None = None
    if language_id:
        name = _LANGUAGE_IDS.get(language_id.strip().lower())
    if name is None and path:
        base = re.split(r"[/\\]", path.split("?", 1)[0].split("#", 1)[0])[-1]
        lowered = base.lower()
        name = _FILENAMES.get(lowered)
        if name is None:
            ext = os.path.splitext(lowered)[1]
            name = _EXTENSIONS.get(ext)
        if name is None and lowered.startswith("dockerfile"):
            name = "dockerfile"
    if name is None:
        return None
    return name if _parser(name) is not None else None


# --------------------------------------------------------------------------- characters


def is_identifier_char(ch: str) -> bool:
    return ch.isalnum() or ch in "_$" or unicodedata.category(ch) in ("Mn", "Mc", "Pc")


def ends_inside_identifier(prefix: str) -> bool:
    """True if ``prefix`` ends inside an identifier (a name that may go on).

    Identifier characters: letters (including non-ASCII), digits, combining marks, ``_`` and
    ``$``. A run of them that starts with a digit is a number, not a name: ``(1`` ends at a
    token boundary as far as the prompt layout is concerned.
    """
    end = len(prefix)
    start = end
    while start > 0 and is_identifier_char(prefix[start - 1]):
        start -= 1
    return start < end and not prefix[start].isdigit()


def _is_joiner(ch: str) -> bool:
    """A character that continues the previous one (combining mark, ZWJ, selector, skin tone)."""
    cp = ord(ch)
    return (
        unicodedata.category(ch) in ("Mn", "Me", "Mc")
        or cp in (0x200D, 0xFE0E, 0xFE0F)
        or 0x1F3FB <= cp <= 0x1F3FF
        or 0xE0020 <= cp <= 0xE007F
    )


def _splits_cluster(text: str, p: int) -> bool:
    return 0 < p < len(text) and (_is_joiner(text[p]) or text[p - 1] == "\u200d")


# --------------------------------------------------------------------------- line window


def _encode(s: str) -> bytes:
    return s.encode("utf-8", "surrogatepass")


def _line_starts(text: str, lo: int, hi: int) -> list[int]:
    """``lo`` followed by the absolute index after every ``\\n`` in ``text[lo:hi]``."""
    parts = text[lo:hi].split("\n")
    return list(itertools.accumulate((len(p) + 1 for p in parts[:-1]), initial=lo))


def _line_start(text: str, offset: int) -> int:
    """Start of the line containing ``offset``, looking back at most ``_LINE_LOOKBACK`` chars."""
    floor = max(0, offset - _LINE_LOOKBACK)
    j = text.rfind("\n", floor, offset)
    return j + 1 if j >= 0 else floor


def _line_end(text: str, offset: int) -> int:
    """Index after the ``\\n`` ending the line at ``offset`` (bounded look-ahead)."""
    j = text.find("\n", offset, offset + _LINE_LOOKBACK)
    return j + 1 if j >= 0 else min(len(text), offset + _LINE_LOOKBACK)


@dataclass
class _Lines:
    """Candidate cut points: the line starts of a bounded slice around the cursor."""

    starts: list[int]  # starts[0] is the slice start, a line start iff lo_is_line_start
    lo_is_line_start: bool


def _scan_lines(text: str, offset: int, before: int, after: int) -> _Lines:
    n = len(text)
    lo_raw = max(0, offset - before)
    j = text.rfind("\n", max(0, lo_raw - _PARSE_MARGIN), lo_raw)
    if j >= 0:
        lo, lo_line = j + 1, True
    elif lo_raw - _PARSE_MARGIN <= 0:
        lo, lo_line = 0, True
    else:
        lo, lo_line = lo_raw, False  # a single huge line: cut inside it
    hi_raw = min(n, offset + after)
    k = text.find("\n", hi_raw, hi_raw + _PARSE_MARGIN)
    hi = k + 1 if k >= 0 else (n if n - hi_raw <= _PARSE_MARGIN else hi_raw)
    return _Lines(_line_starts(text, lo, max(hi, offset)), lo_line)


# --------------------------------------------------------------------------- syntax tree


class _Tree:
    """A tree-sitter parse of the bounded region ``text[lo:hi]`` (row i = ``starts[i]``)."""

    def __init__(self, text: str, lo: int, hi: int, language: str) -> None:
        self.text = text
        self.lo = lo
        self.hi = hi
        self.language = language
        self.starts = _line_starts(text, lo, hi)
        self.root: Any = None
        prelude = ""
        if language == "php" and lo > 0:
            # The php grammar treats text before `<?php` as HTML; a region cut from the middle
            # of a PHP file needs the tag back.
            region = text[lo:hi]
            open_at, close_at = region.find("<?"), region.find("?>")
            if open_at < 0 or 0 <= close_at < open_at:
                prelude = "<?php\n"
        pre = _encode(prelude)
        self.src = pre + _encode(text[lo:hi])
        self.row_shift = prelude.count("\n")
        self.byte_shift = len(pre)

    def parse(self) -> bool:
        entry = _parser(self.language)
        if entry is None:
            return False
        parser, lock = entry
        with lock:
            tree = parser.parse(self.src)
        if tree is None:
            return False
        self.root = tree.root_node
        return True

    def index_of_row(self, row: int) -> int:
        """Index into ``starts`` of a tree row."""
        return row - self.row_shift

    def row_of(self, pos: int) -> int:
        """Tree row of the line containing absolute str index ``pos``."""
        return bisect.bisect_right(self.starts, pos) - 1 + self.row_shift

    def byte_of(self, pos: int) -> int:
        """Byte offset in the parsed source of absolute str index ``pos``."""
        return self.byte_shift + len(_encode(self.text[self.lo : pos]))

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
            line = self.text[max(_line_start(self.text, offset), self.lo) : offset]
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


def _parse_start(text: str, lo: int, offset: int) -> int:
    """Where to start parsing so the region ``[lo, ...)`` is seen in its syntactic context.

    Parsing from the middle of a block makes tree-sitter see a stray tail of it (``}``, ``end``)
    at the same level as the complete definitions that follow. So the parse starts, if one is
    found within ``_PARSE_MARGIN`` characters, at a line indented no deeper than any line
    between ``lo`` and the cursor and not continuing an enclosing construct.
    """
    if lo == 0 or text[lo - 1] != "\n":
        return lo
    indents = [
        len(line) - len(body)
        for line in text[lo : _line_end(text, offset)].split("\n")
        if (body := line.lstrip())
    ]
    limit = min(indents, default=0)

    def good(p: int) -> bool:
        line = text[p : _line_end(text, p)]
        body = line.lstrip()
        return bool(body) and len(line) - len(body) <= limit and not _CONTINUATION.match(body)

    floor = max(0, lo - _PARSE_MARGIN)
    p = lo
    while not good(p):
        if p <= floor:
            return 0 if p == 0 else lo
        q = text.rfind("\n", floor, p - 1)
        p = q + 1 if q >= 0 else floor
        if q < 0 and floor > 0:
            return lo
    return p


def _parse_region(text: str, lo: int, hi: int, offset: int, language: str) -> _Tree | None:
    """Parse ``text[lo:hi]`` (starting a little earlier, see :func:`_parse_start`)."""
    tree = _Tree(text, _parse_start(text, lo, offset), hi, language)
    return tree if tree.parse() else None


# --------------------------------------------------------------------------- budgets


class _Cost:
    """Memoised ``count_tokens(text[a:b])``."""

    def __init__(self, text: str, count_tokens: Callable[[str], int]) -> None:
        self.text = text
        self.count_tokens = count_tokens
        self.memo: dict[tuple[int, int], int] = {}

    def __call__(self, a: int, b: int) -> int:
        key = (a, b)
        if key not in self.memo:
            self.memo[key] = self.count_tokens(self.text[a:b]) if b > a else 0
        return self.memo[key]


def _fit(spans: Sequence[int], measure: Callable[[int], int], limit: int, tol: int) -> int:
    """Largest index i with ``measure(i) <= limit``, or -1; any i within ``tol`` of it will do.

    ``spans`` (ascending) are the candidate lengths in characters and ``measure`` (token count,
    assumed non-decreasing in i) is expensive, so this is an interpolation search on tokens per
    character, with a bisection safeguard: typically 2-4 calls, at worst ~2*log2(len).
    """
    lo, lo_cost, lo_span = -1, 0, 0
    hi, hi_cost, hi_span = len(spans), -1, 0
    goal = limit - tol / 2
    stalls = 0
    while hi - lo > 1:
        if stalls >= 2:
            mid = (lo + hi) // 2
        else:
            if hi_cost < 0:  # no upper bound measured yet: extrapolate
                chars_per_token = lo_span / lo_cost if lo_cost > 0 else _GUESS_CHARS_PER_TOKEN
                want = goal * chars_per_token
            else:
                want = lo_span + (goal - lo_cost) * (hi_span - lo_span) / max(hi_cost - lo_cost, 1)
            mid = min(max(bisect.bisect_left(spans, want, lo + 1, hi), lo + 1), hi - 1)
        width = hi - lo
        c = measure(mid)
        if c <= limit:
            lo, lo_cost, lo_span = mid, c, spans[mid]
            if c >= limit - tol:
                break
        else:
            hi, hi_cost, hi_span = mid, c, spans[mid]
        stalls = stalls + 1 if 2 * (hi - lo) > width else 0
    return lo


def _choose_start(
    text: str, offset: int, budget: int, cost: _Cost, lines: _Lines, anchor: int | None
) -> tuple[int, bool]:
    """The prefix window start (module docstring) and whether a syntactic nudge may move it."""
    if budget <= 0 or offset == 0:
        return offset, False
    cap = budget * MAX_CHARS_PER_TOKEN
    starts = lines.starts
    cur_i = bisect.bisect_right(starts, offset) - 1
    cur_line = starts[cur_i] if (cur_i > 0 or lines.lo_is_line_start) else None

    def line_fits() -> bool:
        return (
            cur_line is not None and offset - cur_line <= cap and cost(cur_line, offset) <= budget
        )

    if anchor is not None and 0 <= anchor <= offset and offset - anchor <= cap:
        at_line_start = anchor == 0 or text[anchor - 1] == "\n"
        # A mid-line anchor can only come from a char-level cut in an overflowing cursor line.
        in_cursor_line = not at_line_start and text.find("\n", anchor, offset) < 0
        usable = at_line_start or (in_cursor_line and not line_fits())
        if (
            usable
            and cost(anchor, offset) <= budget
            and (anchor == 0 or cost(anchor, offset) >= budget * SHORT_ANCHOR)
        ):
            return anchor, False

    if offset <= cap and cost(0, offset) <= budget:
        return 0, False

    target = max(1, int(budget * HEADROOM))
    tol = budget // 16
    tcap = int(cap * HEADROOM)
    first = bisect.bisect_left(starts, offset - tcap)
    if first == 0 and not lines.lo_is_line_start:
        first = 1
    cands = starts[first : cur_i + 1][::-1]  # nearest first: cost grows with the index
    spans = [offset - s for s in cands]
    i = _fit(spans, lambda i: cost(cands[i], offset), target, tol)
    if i >= 0 and cands[i] < offset:
        return cands[i], True
    if line_fits():
        assert cur_line is not None
        return cur_line, False
    # A single line longer than the budget: cut inside it.
    lo = max(cur_line if cur_line is not None else starts[0], offset - tcap)
    chars = range(offset - lo + 1)
    p = offset - max(0, _fit(chars, lambda i: cost(offset - i, offset), target, tol))
    while _splits_cluster(text, p) and p < offset:
        p += 1
    return p, False


def _choose_end(
    text: str, offset: int, budget: int, cost: _Cost, lines: _Lines
) -> tuple[int, bool]:
    """The suffix window end (after a complete line) and whether a syntactic nudge may move it."""
    n = len(text)
    if budget <= 0 or offset == n:
        return offset, False
    cap = budget * MAX_CHARS_PER_TOKEN
    if n - offset <= cap and cost(offset, n) <= budget:
        return n, False
    tol = budget // 16
    starts = lines.starts
    cands = starts[bisect.bisect_right(starts, offset) : bisect.bisect_right(starts, offset + cap)]
    spans = [e - offset for e in cands]
    i = _fit(spans, lambda i: cost(offset, cands[i]), budget, tol)
    if i >= 0:
        return cands[i], True
    # The rest of the cursor line alone overflows: cut inside it.
    nl = text.find("\n", offset, offset + cap)
    top = nl if nl >= 0 else min(n, offset + cap)
    chars = range(top - offset + 1)
    p = offset + max(0, _fit(chars, lambda i: cost(offset, offset + i), budget, tol))
    while _splits_cluster(text, p) and p > offset:
        p -= 1
    return p, False


# --------------------------------------------------------------------------- string / comment

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


_LINE_COMMENT_MARKERS: dict[str, tuple[str, ...]] = {
    "python": ("#",),
    "ruby": ("#",),
    "bash": ("#",),
    "perl": ("#",),
    "r": ("#",),
    "elixir": ("#",),
    "yaml": ("#",),
    "toml": ("#",),
    "php": ("//", "#"),
    "lua": ("--",),
    "sql": ("--",),
    "haskell": ("--",),
    "elm": ("--",),
}
_QUOTES: dict[str, str] = {
    "javascript": "\"'`",
    "typescript": "\"'`",
    "tsx": "\"'`",
    "go": "\"'`",
    "rust": '"',
    "kotlin": '"',
    "swift": '"',
    "scala": '"',
    "haskell": '"',
    "ocaml": '"',
    "elm": '"',
    "fsharp": '"',
}


def _scan_line(line: str, language: str) -> tuple[bool, bool]:
    """Lexically scan the cursor line up to the cursor: (in_string, in_comment).

    Used only where tree-sitter reports an error around the cursor (typically an unterminated
    string or block comment being typed).
    """
    quotes = _QUOTES.get(language, "\"'")
    markers = _LINE_COMMENT_MARKERS.get(language, ("//",))
    block = language not in ("python", "ruby", "bash", "lua", "perl", "r", "yaml", "toml")
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
            quote = triple if language == "python" and line.startswith(triple, i) else ch
            i += len(quote)
            continue
        i += 1
    return quote is not None, False


def _ends_missing(node: Any) -> bool:
    last = node.child(node.child_count - 1) if node.child_count else None
    return bool(last is not None and last.is_missing)


# --------------------------------------------------------------------------- mode

_CLOSERS = set(")]}\"'`;,")
_ARROW_LANGS = ("elixir", "haskell", "ocaml", "kotlin", "erlang", "elm", "swift", "fsharp")
_OPENER_WORDS = re.compile(r"(?:^|[^\w$])(do|then|else|begin|repeat)\s*$")
_DO_BLOCK = re.compile(r"(?:^|[^\w$])do\s*\|[^|]*\|\s*$")
_RUBY_BLOCK = re.compile(r"^\s*(if|unless|while|until|case|for|begin)\b(?!.*\bend\b)")
_LUA_HEADER = re.compile(r"(?:^|[^\w$.])function\b[^()]*\([^()]*\)\s*$")
_DEF_TYPE = re.compile(r"function|method|class|module|constructor|impl|trait|interface|struct|enum")
_NOT_DEF_TYPE = re.compile(
    r"call|invocation|body|identifier|name|parameter|argument|type|reference|access|modifier"
    r"|selector|signature|specifier|list|clause|field|expression_statement"
)


def _bracket_depth(s: str) -> int:
    return sum(s.count(c) for c in "([{") - sum(s.count(c) for c in ")]}")


def _opener(line: str, language: str | None) -> str | None:
    """The block opener the (stripped) line before the cursor ends with, if any."""
    s = line.rstrip()
    if not s:
        return None
    if s[-1] in "{([":
        return s[-1]
    if s[-1] == ":" and not s.endswith("::") and _bracket_depth(s) <= 0:
        return ":"
    if s.endswith("=>"):
        return "=>"
    if s.endswith("->") and (language in _ARROW_LANGS or language is None):
        return "->"
    if _DO_BLOCK.search(s):
        return "do |...|"
    m = _OPENER_WORDS.search(s)
    if m:
        return m.group(1)
    if language == "bash" and re.search(r"(?:^|\s)in\s*$", s) and re.match(r"\s*case\b", s):
        return "in"
    if language == "ruby" and _RUBY_BLOCK.match(s):
        return s.split()[0]
    return None


def _definition_header(tree: _Tree | None, offset: int, line: str, language: str | None) -> bool:
    """The cursor sits at the end of a definition header whose body is not written yet."""
    if language == "lua" and _LUA_HEADER.search(line.rstrip()):
        return True
    stripped = line.rstrip()
    if tree is None or not stripped:
        return False
    # Skip trailing blanks so `def foo(a) █` counts too.
    return tree.definition_header_ends_at(offset - (len(line) - len(stripped)))


def _decide_mode(
    text: str,
    offset: int,
    tree: _Tree | None,
    language: str | None,
    in_string: bool,
    in_comment: bool,
    in_strings: bool,
    in_comments: bool,
) -> tuple[CompletionMode, str]:
    n = len(text)
    after = text[offset] if offset < n else ""
    before = text[offset - 1] if offset > 0 else ""
    ls = _line_start(text, offset)
    line = text[ls:offset]
    if after and is_identifier_char(after) and line.strip():
        if before and is_identifier_char(before):
            return CompletionMode.NONE, "cursor inside identifier"
        return CompletionMode.NONE, "cursor directly before identifier"
    if in_comment and not in_comments:
        return CompletionMode.NONE, "inside comment (completion.inComments is off)"
    if in_string and not in_strings:
        return CompletionMode.NONE, "inside string (completion.inStrings is off)"
    if in_comment:
        return CompletionMode.SINGLE_LINE, "inside comment"
    if in_string:
        return CompletionMode.SINGLE_LINE, "inside string"

    nl = text.find("\n", offset, offset + _LINE_LOOKBACK)
    rest = text[offset : nl if nl >= 0 else min(n, offset + _LINE_LOOKBACK)]
    if any(not ch.isspace() and ch not in _CLOSERS for ch in rest):
        if not line.strip():
            # Whole lines go above the cursor's line, as Copilot and Continue insert them: the
            # model writes lines and a line break, and the code after the cursor moves down.
            return CompletionMode.MULTI_LINE, "only indentation before the cursor: lines above"
        # The middle may end inside a later line (`x = [` + `1,\n     2` + `]`): the model's end
        # token decides, and post-processing cuts what repeats or breaks the text after it.
        return CompletionMode.MULTI_LINE, "text after cursor on the line"

    if not line.strip():
        p = ls
        for _ in range(50):  # the previous non-blank line, if close
            if p <= 0:
                break
            q = _line_start(text, p - 1)
            prev = text[q : p - 1]
            if prev.strip():
                if _opener(prev, language):
                    return CompletionMode.MULTI_LINE, "empty line after block opener"
                break
            p = q
        return CompletionMode.MULTI_LINE, "empty line"
    op = _opener(line, language)
    if op is not None:
        return CompletionMode.MULTI_LINE, f"after block opener {op!r}"
    try:
        if _definition_header(tree, offset, line, language):
            return CompletionMode.MULTI_LINE, "end of definition header"
    except Exception:  # a tree-sitter oddity must not break completion
        log.debug("definition-header check failed", exc_info=True)
    return CompletionMode.SINGLE_LINE, "end of line"


# --------------------------------------------------------------------------- entry point


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
) -> CursorContext:
    """Cut the prompt window around ``offset`` and decide the completion mode.

    ``text`` is the whole document, ``offset`` a str index into it (clamped to
    ``0..len(text)``). ``count_tokens`` is called a few times (at worst O(log lines)), only on
    slices of at most ``budget * MAX_CHARS_PER_TOKEN`` characters. ``anchor`` is the ``window_start`` of the
    previous request on this document (see the module docstring).
    """
    offset = min(max(offset, 0), len(text))
    prefix_tokens = max(prefix_tokens, 0)
    suffix_tokens = max(suffix_tokens, 0)
    language = language_for(language_id, path)
    lines = _scan_lines(
        text, offset, prefix_tokens * MAX_CHARS_PER_TOKEN, suffix_tokens * MAX_CHARS_PER_TOKEN
    )
    cost = _Cost(text, count_tokens)
    # 1. Cut by tokens at line boundaries (no parse needed).
    start, nudge_start = _choose_start(text, offset, prefix_tokens, cost, lines, anchor)
    end, nudge_end = _choose_end(text, offset, suffix_tokens, cost, lines)

    # 2. Parse only the chosen region (plus the cursor line), then refine.
    tree: _Tree | None = None
    in_string = in_comment = False
    if language is not None:
        try:
            lo = min(start, _line_start(text, offset))
            hi = max(end, _line_end(text, offset))
            tree = _parse_region(text, lo, hi, offset, language)
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
