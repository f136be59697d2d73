"""One record per language: what every other module needs to know about it.

A :class:`Language` is keyed by its tree-sitter grammar name ("python", "tsx", "cpp", "bash"...)
and holds every per-language fact: LSP ids, file extensions, what hides brackets (comments,
strings), what opens a block, how to write a comment and documentation, the test framework.
Adding a language is adding one record to :data:`LANGUAGES`; no other module keeps a table.
Grammars come from ``tree_sitter_language_pack`` (0.13.x, bundled grammars, no network).
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "LANGUAGES",
    "Language",
    "Lexicon",
    "comment_style",
    "get",
    "language_for",
    "lexicon_for",
    "parser_for",
]

log = logging.getLogger(__name__)


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


C_LIKE = Lexicon(("//",), ("/*", "*/"), ('"', "'"))
_JS = Lexicon(("//",), ("/*", "*/"), ('"', "'"), ("`",), prose_quotes=True)
_HASH = Lexicon(("#",), None, ('"', "'"))
#: No grammar: only double quotes are trusted to delimit strings (an apostrophe in prose would
#: otherwise open one) and nothing is known to start a comment.
PLAIN = Lexicon(trust_closers=False)

#: How documentation of a definition is written: a Python docstring, a `/** */` block, Rust's
#: `///` lines, a Go comment starting with the name, or a plain comment above it.
DocComment = Literal["docstring", "javadoc", "triple-slash", "go", "comment"]
_PACKAGE_IMPORT = r"(package|import)\b"


@dataclass(frozen=True)
class TagRules:
    """How repository context reads a file's definitions and imports (`repository/tags.py`):
    the definition node types (type -> kind), the definitions whose body holds members, the
    nodes walked through to reach definitions (`export`, decorators, `const`), the body nodes
    whose children are members, and the import syntax."""

    definitions: Mapping[str, str]
    containers: frozenset[str]
    wrappers: frozenset[str]
    bodies: frozenset[str]
    imports: Literal["from-import", "ecmascript", "go-import", "use-tree"]


@dataclass(frozen=True)
class Language:
    """Everything cl-lsp knows about one language; every field has the default of a language
    nothing special is known about (C-like comments and strings)."""

    grammar: str  # tree-sitter-language-pack name, the key used across the code
    display_name: str = ""  # what a person calls it; "" = the grammar name capitalised
    lsp_ids: tuple[str, ...] = ()  # LSP languageIds (lower case)
    extensions: tuple[str, ...] = ()  # ".py"...
    filenames: tuple[str, ...] = ()  # whole file names (lower case): "makefile"...
    filename_prefixes: tuple[str, ...] = ()  # "dockerfile" also names "Dockerfile.dev"
    #: Comments and strings for the lexical bracket scan (:mod:`cl_lsp.brackets`).
    lexicon: Lexicon = C_LIKE
    #: (line marker, None) or (opener, closer) for comments cl-lsp writes; None = the lexicon's
    #: first line comment, else its block comment.
    comment: tuple[str, str | None] | None = None
    #: The cursor-line scan that tells an unterminated string or comment being typed
    #: (``context``): quote characters (None = the lexicon's), line comment markers (None =
    #: the lexicon's, else ``//``), and whether ``/*`` opens a comment.
    scan_quotes: str | None = None
    scan_comments: tuple[str, ...] | None = None
    scan_slash_star: bool = True
    #: ``->`` at the end of a line opens a block (``case x of ... ->``, lambdas).
    arrow_opens_block: bool = False
    #: Regexes matched at the start of the (right-stripped) line before the cursor; a match
    #: opens a block, named by the group ``opener`` (shell's ``case x in``, Ruby's ``if x``).
    line_openers: tuple[str, ...] = ()
    #: A regex searched in the line before the cursor: a definition header still missing its
    #: body, for grammars whose tree does not show it (Lua's ``function f(a)``).
    header_line: str | None = None
    #: What ends a block header whose body goes on the next lines (``if x:`` / ``if (x) {``): a
    #: suggestion ending with one and no body after it was cut in an overrun.
    block_header_end: str = "{"
    doc_comment: DocComment = "comment"
    fence_tag: str = ""  # Markdown code fence tag; "" = the grammar name
    test_framework: str = "the usual test framework"
    #: Declarations that may only open a file (``package``, ``import``): left out of tests
    #: placed after existing code, where they would not parse.
    header_only: str | None = None
    blank_lines_between_definitions: int = 1
    #: Text a window cut from a file needs in front to parse as in the file (PHP's tag).
    prelude: str = ""
    #: How its definitions and imports are read for repository context (None: not read).
    tags: TagRules | None = None

    @property
    def name(self) -> str:
        """The name a person uses for the language."""
        return self.display_name or self.grammar.capitalize()

    @property
    def tag(self) -> str:
        """The tag of a Markdown code fence holding this language."""
        return self.fence_tag or self.grammar

    @property
    def comment_syntax(self) -> tuple[str, str | None]:
        """(line marker, None) for languages with line comments, else (opener, closer)."""
        if self.comment is not None:
            return self.comment
        if self.lexicon.line_comments:
            return self.lexicon.line_comments[0], None
        assert self.lexicon.block_comment is not None
        return self.lexicon.block_comment

    @property
    def cursor_scan(self) -> tuple[str, tuple[str, ...], bool]:
        """(quote characters, line comment markers, ``/*`` opens a comment) for the scan of
        the cursor line."""
        lex = self.lexicon
        quotes = self.scan_quotes
        if quotes is None:
            quotes = "".join(dict.fromkeys(q[0] for q in (*lex.quotes, *lex.long_quotes)))
        comments = self.scan_comments
        if comments is None:
            comments = lex.line_comments or ("//",)
        return quotes, comments, self.scan_slash_star

    @property
    def tests_gap(self) -> str:
        """The line breaks between added tests and the code around them."""
        return "\n" * self.blank_lines_between_definitions


_ARROW = {"arrow_opens_block": True}
_NO_SLASH_STAR = {"scan_slash_star": False}
_JEST = "Jest (describe, test and expect)"  # globals: nothing to import in the same file
_XML_COMMENT = ("<!--", "-->")
#: What JavaScript, TypeScript and TSX share: comments, strings and template literals, JSDoc,
#: Jest.
_JS_TAGS = TagRules(
    {
        "function_declaration": "function",
        "generator_function_declaration": "function",
        "function_signature": "function",  # `declare function f(): T;` (.d.ts)
        "class_declaration": "class",
        "abstract_class_declaration": "class",
        "method_definition": "method",
        "variable_declarator": "variable",
        "interface_declaration": "type",
        "type_alias_declaration": "type",
        "enum_declaration": "type",
        "method_signature": "method",
        "abstract_method_signature": "method",
        "public_field_definition": "variable",
        "field_definition": "variable",  # JavaScript's class fields (`static params = [...]`)
    },
    containers=frozenset(
        {"class_declaration", "abstract_class_declaration", "interface_declaration"}
    ),
    wrappers=frozenset(
        {"export_statement", "lexical_declaration", "variable_declaration", "ambient_declaration"}
    ),
    bodies=frozenset({"class_body", "interface_body", "object_type"}),
    imports="ecmascript",
)
_JS_FAMILY: dict[str, Any] = {
    "lexicon": _JS,
    "doc_comment": "javadoc",
    "test_framework": _JEST,
    "tags": _JS_TAGS,
}

LANGUAGES: tuple[Language, ...] = (
    Language(
        "python",
        "Python",
        ("python", "py"),
        (".py", ".pyi", ".pyw"),
        lexicon=Lexicon(("#",), None, ('"', "'"), ('"""', "'''")),
        block_header_end=":",
        doc_comment="docstring",
        test_framework="pytest (plain test_ functions with assert statements)",
        blank_lines_between_definitions=2,
        tags=TagRules(
            {
                "function_definition": "function",
                "class_definition": "class",
                "assignment": "variable",
            },
            containers=frozenset({"class_definition"}),
            wrappers=frozenset({"decorated_definition", "expression_statement"}),
            bodies=frozenset({"block"}),
            imports="from-import",
        ),
        **_NO_SLASH_STAR,
    ),
    Language(
        "javascript",
        "JavaScript",
        # tree-sitter-javascript parses JSX
        ("javascript", "javascriptreact", "js", "jsx"),
        (".js", ".mjs", ".cjs", ".jsx"),
        **_JS_FAMILY,
    ),
    Language(
        "typescript",
        "TypeScript",
        ("typescript", "ts"),
        (".ts", ".mts", ".cts"),
        **_JS_FAMILY,
    ),
    Language(
        "tsx",
        "TypeScript",
        ("typescriptreact", "tsx"),
        (".tsx",),
        fence_tag="tsx",
        **_JS_FAMILY,
    ),
    Language(
        "java",
        "Java",
        ("java",),
        (".java",),
        doc_comment="javadoc",
        test_framework="JUnit 5 (@Test methods in a test class); no package or import declarations",
        header_only=_PACKAGE_IMPORT,
    ),
    Language(
        "c",
        "C",
        ("c",),
        (".c", ".h"),
        doc_comment="javadoc",
        test_framework="plain assert() calls in test functions",
    ),
    Language(
        "cpp",
        "C++",
        ("cpp", "c++"),
        (".cc", ".cpp", ".cxx", ".c++", ".hpp", ".hh", ".hxx", ".h++", ".ino"),
        doc_comment="javadoc",
        test_framework="GoogleTest (TEST macros)",
    ),
    Language("cuda", "CUDA", ("cuda-cpp", "cuda"), (".cu", ".cuh"), doc_comment="javadoc"),
    Language(
        "csharp",
        "C#",
        ("csharp", "c_sharp", "c#", "cs"),
        (".cs",),
        doc_comment="javadoc",
        test_framework="xUnit ([Fact] methods in a test class)",
        header_only=r"using [\w.]+;",
    ),
    Language(
        "go",
        "Go",
        ("go", "golang"),
        (".go",),
        lexicon=_JS,
        doc_comment="go",
        test_framework="Go's testing package (func TestXxx(t *testing.T)); no package clause or imports",
        header_only=_PACKAGE_IMPORT,
        tags=TagRules(
            {
                "function_declaration": "function",
                "method_declaration": "method",
                "type_spec": "type",
                "const_spec": "constant",
                "var_spec": "variable",
                "method_elem": "method",
            },
            containers=frozenset({"type_spec"}),
            wrappers=frozenset({"type_declaration", "const_declaration", "var_declaration"}),
            bodies=frozenset({"interface_type"}),
            imports="go-import",
        ),
    ),
    Language(
        "rust",
        "Rust",
        ("rust",),
        (".rs",),
        lexicon=Lexicon(("//",), ("/*", "*/"), (), ('"',), char_literals=True),
        doc_comment="triple-slash",
        test_framework="a #[cfg(test)] mod tests module with use super::*; and #[test] functions",
        tags=TagRules(
            {
                "function_item": "function",
                "function_signature_item": "function",
                "struct_item": "type",
                "enum_item": "type",
                "union_item": "type",
                "trait_item": "type",
                "type_item": "type",
                "const_item": "constant",
                "static_item": "constant",
                "macro_definition": "macro",
                "impl_item": "impl",
                "mod_item": "module",
            },
            containers=frozenset({"trait_item", "impl_item", "mod_item"}),
            wrappers=frozenset(),
            bodies=frozenset({"declaration_list"}),
            imports="use-tree",
        ),
    ),
    Language(
        "php",
        "PHP",
        ("php",),
        (".php", ".phtml"),
        lexicon=Lexicon(("//", "#"), ("/*", "*/"), ('"', "'")),
        doc_comment="javadoc",
        test_framework="PHPUnit",
        prelude="<?php\n",
    ),
    Language(
        "bash",
        "shell script",
        ("shellscript", "shell", "sh", "bash", "zsh"),
        (".sh", ".bash", ".zsh", ".ksh"),
        (".bashrc", ".bash_profile", ".profile", ".zshrc"),
        # `case` patterns (`a)`) close nothing: only [] and {} are counted in shell.
        lexicon=Lexicon(("#",), None, ('"', "'"), brackets="[]{}"),
        line_openers=(r"\s*case\b.*\s(?P<opener>in)\s*$",),
        test_framework="bats",
        **_NO_SLASH_STAR,
    ),
    Language(
        "lua",
        "Lua",
        ("lua",),
        (".lua",),
        lexicon=Lexicon(("--",), ("--[[", "]]"), ('"', "'")),
        header_line=r"(?:^|[^\w$.])function\b[^()]*\([^()]*\)\s*$",
        test_framework="busted",
        **_NO_SLASH_STAR,
    ),
    Language(
        "ruby",
        "Ruby",
        ("ruby",),
        (".rb", ".rake", ".gemspec"),
        ("rakefile", "gemfile", "vagrantfile"),
        lexicon=_HASH,
        # Block keywords at line start, unless the block ends on the same line.
        line_openers=(
            r"\s*(?=(?:if|unless|while|until|case|for|begin)\b(?!.*\bend\b))(?P<opener>\S+)",
        ),
        test_framework="Minitest",
        **_NO_SLASH_STAR,
    ),
    Language(
        "kotlin",
        "Kotlin",
        ("kotlin",),
        (".kt", ".kts"),
        scan_quotes='"',
        doc_comment="javadoc",
        test_framework="kotlin.test",
        header_only=_PACKAGE_IMPORT,
        **_ARROW,
    ),
    Language(
        "swift",
        "Swift",
        ("swift",),
        (".swift",),
        scan_quotes='"',
        doc_comment="javadoc",
        test_framework="XCTest",
        **_ARROW,
    ),
    Language(
        "scala",
        "Scala",
        ("scala",),
        (".scala", ".sc"),
        lexicon=Lexicon(("//",), ("/*", "*/"), ('"',), char_literals=True),
        doc_comment="javadoc",
    ),
    Language(
        "haskell",
        lsp_ids=("haskell",),
        extensions=(".hs",),
        lexicon=Lexicon(("--",), ("{-", "-}"), ('"',), char_literals=True),
        **_ARROW,
    ),
    Language("elixir", lsp_ids=("elixir",), extensions=(".ex", ".exs"), lexicon=_HASH, **_ARROW),
    Language(
        "erlang", lsp_ids=("erlang",), extensions=(".erl", ".hrl"), comment=("%", None), **_ARROW
    ),
    Language("dart", lsp_ids=("dart",), extensions=(".dart",), doc_comment="javadoc"),
    Language("zig", lsp_ids=("zig",), extensions=(".zig",)),
    Language(
        "ocaml",
        "OCaml",
        ("ocaml",),
        (".ml",),
        lexicon=Lexicon((), ("(*", "*)"), ('"',), char_literals=True),
        **_ARROW,
    ),
    Language("julia", lsp_ids=("julia",), extensions=(".jl",), comment=("#", None)),
    Language("perl", lsp_ids=("perl",), extensions=(".pl", ".pm"), lexicon=_HASH, **_NO_SLASH_STAR),
    Language("r", lsp_ids=("r",), extensions=(".r",), lexicon=_HASH, **_NO_SLASH_STAR),
    Language("sql", "SQL", ("sql",), (".sql",), lexicon=Lexicon(("--",), ("/*", "*/"), ('"', "'"))),
    Language("css", "CSS", ("css",), (".css",), lexicon=Lexicon((), ("/*", "*/"), ('"', "'"))),
    Language("scss", "SCSS", ("scss",), (".scss",)),
    Language("html", "HTML", ("html",), (".html", ".htm"), comment=_XML_COMMENT),
    Language("json", lsp_ids=("json", "jsonc"), extensions=(".json", ".jsonc")),
    Language(
        "yaml", lsp_ids=("yaml",), extensions=(".yaml", ".yml"), lexicon=_HASH, **_NO_SLASH_STAR
    ),
    Language("toml", lsp_ids=("toml",), extensions=(".toml",), lexicon=_HASH, **_NO_SLASH_STAR),
    Language(
        "dockerfile",
        lsp_ids=("dockerfile",),
        filenames=("dockerfile",),
        filename_prefixes=("dockerfile",),
        lexicon=_HASH,
        scan_comments=("//",),
    ),
    Language(
        "make",
        "Makefile",
        ("makefile",),
        filenames=("makefile", "gnumakefile"),
        lexicon=_HASH,
        scan_comments=("//",),
        fence_tag="makefile",
    ),
    Language(
        "objc",
        "Objective-C",
        ("objective-c", "objc"),
        (".m",),
        doc_comment="javadoc",
        fence_tag="objectivec",
    ),
    Language("powershell", "PowerShell", ("powershell",), (".ps1",), comment=("#", None)),
    Language(
        "groovy", lsp_ids=("groovy",), extensions=(".groovy", ".gradle"), doc_comment="javadoc"
    ),
    Language("vue", lsp_ids=("vue",), extensions=(".vue",), comment=_XML_COMMENT),
    Language("svelte", lsp_ids=("svelte",), extensions=(".svelte",), comment=_XML_COMMENT),
    Language(
        "nix",
        lsp_ids=("nix",),
        extensions=(".nix",),
        lexicon=Lexicon(("#",), ("/*", "*/"), ('"',)),
        scan_quotes="\"'",
        scan_comments=("//",),
    ),
    Language("hcl", "HCL", ("terraform", "hcl"), (".tf", ".hcl"), comment=("#", None)),
    Language("clojure", lsp_ids=("clojure",), extensions=(".clj", ".cljs"), comment=(";", None)),
    Language(
        "elm",
        lsp_ids=("elm",),
        extensions=(".elm",),
        lexicon=Lexicon(("--",), ("{-", "-}"), ('"',), char_literals=True),
        **_ARROW,
    ),
    Language(
        "fsharp",
        "F#",
        ("fsharp",),
        (".fs", ".fsx"),
        lexicon=Lexicon(("//",), ("(*", "*)"), ('"',), char_literals=True),
        fence_tag="fsharp",
        **_ARROW,
    ),
    Language("xml", lsp_ids=("xml",), extensions=(".xml",), comment=_XML_COMMENT),
    Language("solidity", lsp_ids=("solidity",), extensions=(".sol",)),
    Language("proto", lsp_ids=("proto", "proto3"), extensions=(".proto",)),
    Language("graphql", lsp_ids=("graphql",), extensions=(".graphql",), comment=("#", None)),
    Language(
        "fortran",
        "Fortran",
        ("fortran", "fortran-modern", "fortranfreeform"),
        (".f90", ".f95", ".f03", ".f08"),
        lexicon=Lexicon(("!",), None, ('"', "'")),
        # A program unit's header opens its body (`end subroutine` closes it).
        line_openers=(
            r"(?i)\s*(?!end\b)(?:\w+\s+)*?(?P<opener>program|module|subroutine|function)\b",
        ),
        test_framework="test-drive (a testsuite of unittest_type entries calling check)",
        scan_slash_star=False,
    ),
    # Known by name only (no LSP id or extension maps to them yet).
    Language("markdown", comment=_XML_COMMENT),
    Language("latex", comment=("%", None)),
    Language("matlab", comment=("%", None)),
    Language("scheme", comment=(";", None)),
    Language("commonlisp", comment=(";", None)),
    Language("elisp", comment=(";", None)),
    Language("cmake", comment=("#", None)),
    Language("ada", comment=("--", None)),
)

_BY_GRAMMAR: dict[str, Language] = {lang.grammar: lang for lang in LANGUAGES}


def _index(key: str) -> dict[str, str]:
    table: dict[str, str] = {}
    for lang in LANGUAGES:
        for name in getattr(lang, key):
            assert name not in table, f"{name!r} names both {table[name]} and {lang.grammar}"
            table[name] = lang.grammar
    return table


_BY_LSP_ID = _index("lsp_ids")
_BY_EXTENSION = _index("extensions")
_BY_FILENAME = _index("filenames")


def get(grammar: str) -> Language:
    """The record of a grammar; a default one (C-like) for a grammar without a record."""
    found = _BY_GRAMMAR.get(grammar)
    return found if found is not None else Language(grammar)


def lexicon_for(grammar: str | None) -> Lexicon:
    """What hides brackets in the language; :data:`PLAIN` without a grammar."""
    return PLAIN if grammar is None else get(grammar).lexicon


def comment_style(grammar: str | None) -> tuple[str, str | None]:
    """(line marker, None) for languages with line comments, else (opener, closer).

    Without a grammar we can't know; "#" is the commonest in the files that have none.
    """
    return ("#", None) if grammar is None else get(grammar).comment_syntax


_parser_lock = threading.Lock()
_parsers: dict[str, tuple[Any, threading.Lock] | None] = {}


def parser_for(grammar: str) -> tuple[Any, threading.Lock] | None:
    """Cached tree-sitter parser (and its lock: a Parser is not thread-safe), or None when the
    grammar can't be loaded (unknown name, missing binding, ABI mismatch...)."""
    with _parser_lock:
        if grammar in _parsers:
            return _parsers[grammar]
        entry: tuple[Any, threading.Lock] | None
        try:
            from tree_sitter_language_pack import get_parser

            entry = (get_parser(grammar), threading.Lock())  # type: ignore[arg-type]
        except Exception:
            log.warning(
                "no tree-sitter grammar %r; using line-based context", grammar, exc_info=True
            )
            entry = None
        _parsers[grammar] = entry
        return entry


def language_for(language_id: str | None, path: str | None) -> str | None:
    """The tree-sitter grammar name for a document, or None (line-based context).

    The LSP ``languageId`` wins when it is known; otherwise the file name / extension of ``path``
    (a path or a ``file:`` URI) decides. Returns None when nothing matches or the grammar can't
    be loaded.
    """
    name: str | None = None
    if language_id:
        name = _BY_LSP_ID.get(language_id.strip().lower())
    if name is None and path:
        name = grammar_named_by(path)
    if name is None:
        return None
    return name if parser_for(name) is not None else None


def grammar_named_by(path: str) -> str | None:
    """The grammar a file's name or extension names (a path or a ``file:`` URI), without
    loading it; None for names no language claims."""
    base = re.split(r"[/\\]", path.split("?", 1)[0].split("#", 1)[0])[-1]
    lowered = base.lower()
    name = _BY_FILENAME.get(lowered)
    if name is None:
        name = _BY_EXTENSION.get(os.path.splitext(lowered)[1])
    if name is None:
        name = next(
            (
                lang.grammar
                for lang in LANGUAGES
                if any(lowered.startswith(p) for p in lang.filename_prefixes)
            ),
            None,
        )
    return name
