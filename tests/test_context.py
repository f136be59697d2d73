"""Tests for cl_lsp.completion.context: grammar choice, window cuts, anchor stability, completion mode.

``█`` marks the cursor in source snippets. Token counts use a fake counter (UTF-8 bytes / 4), as
this is a pure-stage unit test.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cl_lsp import languages
from cl_lsp.completion import region
from cl_lsp.completion.context import CompletionMode, CursorContext, extract_context
from cl_lsp.completion.window import MAX_CHARS_PER_TOKEN
from cl_lsp.languages import language_for
from cl_lsp.syntax import ends_inside_identifier

CURSOR = "█"
NONE, SINGLE, MULTI = CompletionMode.NONE, CompletionMode.SINGLE_LINE, CompletionMode.MULTI_LINE


def count(s: str) -> int:
    """Fake tokenizer: ~4 UTF-8 bytes per token (monotone in the text length)."""
    return len(s.encode("utf-8", "surrogatepass")) // 4 + 1


class Counter:
    """A fake tokenizer that records every call."""

    def __init__(self) -> None:
        self.lengths: list[int] = []

    def __call__(self, s: str) -> int:
        self.lengths.append(len(s))
        return count(s)


def split(src: str) -> tuple[str, int]:
    assert src.count(CURSOR) == 1, src
    offset = src.index(CURSOR)
    return src.replace(CURSOR, ""), offset


def ctx(src: str, lang: str | None, path: str | None = None, **kw: object) -> CursorContext:
    text, offset = split(src)
    kw.setdefault("count_tokens", count)
    return extract_context(text, offset, language_id=lang, path=path, **kw)  # type: ignore[arg-type]


def is_line_start(text: str, i: int) -> bool:
    return i == 0 or text[i - 1] == "\n"


def check_invariants(text: str, offset: int, c: CursorContext, ptok: int, stok: int) -> None:
    assert 0 <= c.window_start <= offset <= c.window_end <= len(text)
    assert c.prefix == text[c.window_start : offset]
    assert c.suffix == text[offset : c.window_end]
    assert c.offset == offset
    assert (count(c.prefix) if c.prefix else 0) <= ptok
    assert (count(c.suffix) if c.suffix else 0) <= stok
    assert len(c.prefix) <= max(ptok, 0) * MAX_CHARS_PER_TOKEN
    assert len(c.suffix) <= max(stok, 0) * MAX_CHARS_PER_TOKEN


def python_module(n_funcs: int, body_lines: int = 3) -> str:
    out = []
    for i in range(n_funcs):
        out.append(f"def func_{i}(a, b):")
        out.append(f'    """Docstring {i}."""')
        out.append("    total = a + b")
        for k in range(body_lines):
            out.append(f"    total += {k} * {i}")
        out.append("    return total")
        out.append("")
        out.append("")
    return "\n".join(out)


# --------------------------------------------------------------------------- languages

REQUIRED = [
    ("python", "python"),
    ("javascript", "javascript"),
    ("javascriptreact", "javascript"),
    ("typescript", "typescript"),
    ("typescriptreact", "tsx"),
    ("java", "java"),
    ("c", "c"),
    ("cpp", "cpp"),
    ("csharp", "csharp"),
    ("go", "go"),
    ("rust", "rust"),
    ("php", "php"),
    ("shellscript", "bash"),
    ("sh", "bash"),
    ("bash", "bash"),
    ("lua", "lua"),
    ("ruby", "ruby"),
    ("kotlin", "kotlin"),
    ("swift", "swift"),
    ("scala", "scala"),
    ("yaml", "yaml"),
    ("Python", "python"),
]


@pytest.mark.parametrize(("language_id", "grammar"), [pytest.param(*r, id=r[0]) for r in REQUIRED])
def test_language_id_maps_to_a_loadable_grammar(language_id: str, grammar: str) -> None:
    assert language_for(language_id, None) == grammar
    c = ctx("x█\n", language_id)
    assert c.language == grammar


@pytest.mark.parametrize(
    ("path", "grammar"),
    [
        pytest.param("/src/a.py", "python", id="py"),
        pytest.param("file:///src/app.jsx", "javascript", id="jsx-uri"),
        pytest.param("C:\\src\\app.ts", "typescript", id="ts-windows"),
        pytest.param("app.tsx", "tsx", id="tsx"),
        pytest.param("Main.java", "java", id="java"),
        pytest.param("x.h", "c", id="h"),
        pytest.param("x.hpp", "cpp", id="hpp"),
        pytest.param("x.cc", "cpp", id="cc"),
        pytest.param("Program.cs", "csharp", id="cs"),
        pytest.param("main.go", "go", id="go"),
        pytest.param("lib.rs", "rust", id="rs"),
        pytest.param("index.php", "php", id="php"),
        pytest.param("run.sh", "bash", id="sh"),
        pytest.param("init.lua", "lua", id="lua"),
        pytest.param("app.rb", "ruby", id="rb"),
        pytest.param("/repo/Gemfile", "ruby", id="gemfile"),
        pytest.param("/repo/Dockerfile", "dockerfile", id="dockerfile"),
        pytest.param("notes.xyz", None, id="unknown-ext"),
        pytest.param("README", None, id="no-ext"),
        pytest.param(None, None, id="no-path"),
    ],
)
def test_language_for_path(path: str | None, grammar: str | None) -> None:
    assert language_for(None, path) == grammar


@pytest.mark.parametrize(
    ("language_id", "path", "grammar"),
    [
        pytest.param("python", "x.js", "python", id="language-id-wins"),
        pytest.param("plaintext", "x.rb", "ruby", id="unknown-id-falls-back-to-path"),
        pytest.param("plaintext", "notes.xyz", None, id="plaintext-xyz"),
        pytest.param("plaintext", None, None, id="plaintext"),
        pytest.param("markdown", "README.md", None, id="markdown-is-line-based"),
    ],
)
def test_language_for_precedence(language_id: str, path: str | None, grammar: str | None) -> None:
    assert language_for(language_id, path) == grammar


def test_parsers_are_cached() -> None:
    assert languages.parser_for("python") is languages.parser_for("python")
    assert languages.parser_for("no-such-grammar") is None


# --------------------------------------------------------------------------- mode rules

MODE_CASES = [
    # (language, source, mode, reason fragment)
    ("python", "def f():\n    return fo█o\n", NONE, "inside identifier"),
    ("python", "x = █foo\n", NONE, "before identifier"),
    ("python", "def f(x):\n█    return y\n", MULTI, "lines above"),
    ("python", "def f(x):\n    █return y\n", MULTI, "lines above"),
    ("javascript", "function f() {\n  █foo();\n}\n", MULTI, "lines above"),
    ("python", "def f(x):\n    █)\n", MULTI, "empty line"),
    ("python", "x = 한█글\n", NONE, "inside identifier"),
    ("python", "def f(a):█\n", MULTI, "':'"),
    ("python", "class A(B):\n    █\n", MULTI, "empty line after block opener"),
    ("python", "x = 1\n█\n", MULTI, "empty line"),
    ("python", "x = foo(█)\n", MULTI, "'('"),
    ("python", "x = foo(a, █) + 1\n", MULTI, "text after cursor"),
    ("python", "x = 1█\n", SINGLE, "end of line"),
    ("python", "y = a[1:█]\n", SINGLE, "end of line"),
    ("python", "█", MULTI, "empty line"),
    ("javascript", "function f() {█}\n", MULTI, "'{'"),
    ("javascript", "const f = (a) =>█\n", MULTI, "'=>'"),
    ("javascript", "let xs = [█];\n", MULTI, "'['"),
    ("javascript", "foo(bar█);\n", SINGLE, "end of line"),
    ("javascript", "if (x) { y(); }█ else { z(); }\n", MULTI, "text after cursor"),
    ("typescript", "class A {\n  m(): void {█\n  }\n}\n", MULTI, "'{'"),
    ("tsx", "const a = () => <div>█</div>;\n", MULTI, "text after cursor"),
    ("java", "public class A {\n  public void f()█\n}\n", MULTI, "definition header"),
    ("java", "int x = 1;█\n", SINGLE, "end of line"),
    ("c", "int main(void) {█\n", MULTI, "'{'"),
    ("cpp", "auto v = std::█\n", SINGLE, "end of line"),
    ("csharp", "class A {\n  void F() {█\n  }\n}\n", MULTI, "'{'"),
    ("go", "func main()█\n", MULTI, "definition header"),
    ("go", "x := 1█\n", SINGLE, "end of line"),
    ("rust", "fn main() {█\n", MULTI, "'{'"),
    ("rust", "let v = vec![█];\n", MULTI, "'['"),
    ("php", "<?php\nfunction f($a) {█\n", MULTI, "'{'"),
    ("php", "<?php\n$x = 1;█\n", SINGLE, "end of line"),
    ("shellscript", "if [ -f x ]; then█\n", MULTI, "'then'"),
    ("shellscript", "for f in *; do█\n", MULTI, "'do'"),
    ("shellscript", "case $1 in█\n", MULTI, "'in'"),
    ("shellscript", "echo hi█\n", SINGLE, "end of line"),
    ("lua", "function foo(a)█\n", MULTI, "definition header"),
    ("lua", "local function foo(a)█\nend\n", MULTI, "definition header"),
    ("lua", "if x then█\n", MULTI, "'then'"),
    ("lua", "local x = 1█\n", SINGLE, "end of line"),
    ("ruby", "def foo(a)█\nend\n", MULTI, "definition header"),
    ("ruby", "class Foo < Bar█\n", MULTI, "definition header"),
    ("ruby", "[1].each do |x|█\n", MULTI, "do |"),
    ("ruby", "if ready█\n", MULTI, "'if'"),
    ("ruby", "def foo(a) = a + 1█\n", SINGLE, "end of line"),
    ("ruby", 'puts "hi"█\n', SINGLE, "end of line"),
    ("plaintext", "some words█\n", SINGLE, "end of line"),
    ("plaintext", "wor█ds\n", NONE, "inside identifier"),
    ("plaintext", "items: █\n", MULTI, "':'"),
]


@pytest.mark.parametrize(
    ("lang", "src", "mode", "reason"),
    [pytest.param(*c, id=f"{c[0]}-{i}") for i, c in enumerate(MODE_CASES)],
)
def test_mode(lang: str, src: str, mode: CompletionMode, reason: str) -> None:
    c = ctx(src, lang)
    assert (c.mode, c.mode.value) == (mode, mode.value), c.reason
    assert reason in c.reason


# --------------------------------------------------------------------------- strings / comments

S, C, N = "string", "comment", "code"
STRING_COMMENT_CASES = [
    ("python", 'x = "ab█c"', S),
    ("python", 'x = "abc█"', S),
    ("python", 'x = "abc"█', N),
    ("python", "x = 1  # c█", C),
    ("python", 'x = f"{a█}"', N),
    ("python", '"""doc█\n"""', S),
    ("python", 'x = "abc█', S),  # unterminated
    ("python", 's = "한글 😀█"', S),
    ("python", 'x = "한글😀"  # 주석█', C),
    ("python", 'x = "한글😀"█ + y', N),
    ("javascript", "let x = 'ab█';", S),
    ("javascript", "let x = 1; // c█", C),
    ("javascript", "/* c█ */", C),
    ("javascript", "/* c */ █", N),
    ("javascript", "let t = `a${b█}`;", N),
    ("javascript", "let t = `a█`;", S),
    ("javascript", 'let x = "abc█', S),  # unterminated
    ("javascript", 'let s = "😀👩‍💻 한█";', S),
    ("typescript", 'let s: string = "a█";', S),
    ("typescript", "// c█", C),
    ("typescriptreact", 'const a = "x█";', S),
    ("typescriptreact", "/* c█ */", C),
    ("java", 'String s = "a█";', S),
    ("java", "// c█", C),
    ("java", "/** doc█ */", C),
    ("java", "char c = 'x█';", S),
    ("c", 'char *s = "a█";', S),
    ("c", "/* c█ */", C),
    ("c", "// c█", C),
    ("c", "/* abc█", C),  # unterminated
    ("cpp", 'auto s = R"(ra█w)";', S),
    ("cpp", "// c█", C),
    ("csharp", 'var s = "a█";', S),
    ("csharp", 'var t = $"x{y█}z";', N),
    ("csharp", 'var v = @"ve█r";', S),
    ("csharp", "// c█", C),
    ("go", 's := "a█"', S),
    ("go", "r := `ra█w`", S),
    ("go", "// c█", C),
    ("rust", 'let s = "a█";', S),
    ("rust", 'let r = r#"ra█w"#;', S),
    ("rust", "// c█", C),
    ("rust", "/* b█ */", C),
    ("php", '<?php $s = "a█";', S),
    ("php", "<?php $t = 'a█';", S),
    ("php", "<?php // c█", C),
    ("php", "<?php # c█", C),
    ("shellscript", 'echo "a█"', S),
    ("shellscript", "echo 'a█'", S),
    ("shellscript", 'echo "$(ls█)"', N),
    ("shellscript", "# c█", C),
    ("lua", 'local s = "a█"', S),
    ("lua", "local t = [[lo█ng]]", S),
    ("lua", "-- c█", C),
    ("lua", "--[[ bl█ock ]]", C),
    ("lua", "--[[ x ]]█", N),
    ("ruby", 's = "a█"', S),
    ("ruby", 's = "#{x█}"', N),
    ("ruby", "# c█", C),
    ("ruby", "=begin\nbl█ock\n=end\n", C),
    ("plaintext", 'x = "ab █"', N),  # line-based fallback doesn't guess
    ("plaintext", "# not a comment █", N),
]


@pytest.mark.parametrize(
    ("lang", "src", "where"),
    [pytest.param(*c, id=f"{c[0]}-{i}") for i, c in enumerate(STRING_COMMENT_CASES)],
)
def test_string_and_comment_detection(lang: str, src: str, where: str) -> None:
    c = ctx(src, lang)
    assert (c.in_string, c.in_comment) == (where == S, where == C)
    if where != N:
        assert c.mode in (SINGLE, NONE)


@pytest.mark.parametrize(
    ("lang", "src", "in_strings", "in_comments", "mode", "reason"),
    [
        pytest.param("python", "x = 1  # note█\n", True, False, NONE, "completion.inComments is off",
                     id="py-comment-off"),
        pytest.param("python", "x = 1  # note█\n", False, True, SINGLE, "inside comment",
                     id="py-comment-on"),
        pytest.param("python", 'x = "ab █"\n', False, True, NONE, "completion.inStrings is off",
                     id="py-string-off"),
        pytest.param("python", 'x = "ab █"\n', True, False, SINGLE, "inside string",
                     id="py-string-on"),
        pytest.param("rust", "/// doc █\nfn f() {}\n", True, False, NONE, "inComments is off",
                     id="rust-doc-comment-off"),
        pytest.param("go", "s := `raw █`\n", False, True, NONE, "inStrings is off",
                     id="go-raw-string-off"),
        pytest.param("ruby", 'puts "#{x █}"\n', False, True, SINGLE, "end of line",
                     id="ruby-interpolation-is-code"),
        pytest.param("plaintext", 'x = "ab █"\n', False, False, SINGLE, "end of line",
                     id="fallback-treats-as-code"),
    ],
)  # fmt: skip
def test_string_comment_settings(
    lang: str, src: str, in_strings: bool, in_comments: bool, mode: CompletionMode, reason: str
) -> None:
    c = ctx(src, lang, in_strings=in_strings, in_comments=in_comments)
    assert c.mode == mode, c.reason
    assert reason in c.reason


def test_identifier_rule_wins_over_settings() -> None:
    c = ctx('x = "fo█o"\n', "python", in_strings=False)
    assert c.mode == NONE and c.in_string


# --------------------------------------------------------------------------- budgets and cuts


@pytest.mark.parametrize(
    ("ptok", "stok"),
    [
        pytest.param(0, 0, id="zero"),
        pytest.param(1, 1, id="one"),
        pytest.param(50, 20, id="small"),
        pytest.param(300, 100, id="medium"),
        pytest.param(1500, 500, id="default"),
        pytest.param(100_000, 100_000, id="everything-fits"),
    ],
)
@pytest.mark.parametrize("lang", ["python", "plaintext"])
def test_budgets_are_respected(lang: str, ptok: int, stok: int) -> None:
    text = python_module(120)
    for frac in (0.0, 0.1, 0.5, 0.93, 1.0):
        offset = int(len(text) * frac)
        c = extract_context(
            text, offset, language_id=lang, path=None, count_tokens=count,
            prefix_tokens=ptok, suffix_tokens=stok,
        )  # fmt: skip
        check_invariants(text, offset, c, ptok, stok)
        if ptok == 100_000:
            assert (c.window_start, c.window_end) == (0, len(text))


def test_fresh_prefix_uses_about_three_quarters_of_the_budget() -> None:
    text = python_module(200)
    offset = text.index("    return total", len(text) // 2)
    for lang in ("python", "plaintext"):
        c = extract_context(
            text, offset, language_id=lang, path=None, count_tokens=count, prefix_tokens=400
        )
        # 3/4 of the budget, possibly nudged forward to a top-level definition (<= 1/3 further)
        assert 0.45 * 400 <= count(c.prefix) <= 0.75 * 400 + 2


def test_prefix_cut_lands_on_a_top_level_definition() -> None:
    text = python_module(200)
    offset = text.index("total += 2 * 150") + len("total += 2 * 150")
    for ptok, stok in ((100, 30), (250, 200), (600, 200), (1500, 500)):
        c = extract_context(
            text, offset, language_id="python", path=None, count_tokens=count,
            prefix_tokens=ptok, suffix_tokens=stok,
        )  # fmt: skip
        check_invariants(text, offset, c, ptok, stok)
        assert is_line_start(text, c.window_start)
        assert text.startswith("def func_", c.window_start), text[c.window_start :][:40]
        assert c.suffix.endswith("\n")
        if stok >= 200:  # the last third of the suffix window holds a definition start
            assert text.startswith("def func_", c.window_end), text[c.window_end :][:40]


def test_line_based_cut_for_unknown_language_lands_on_line_starts() -> None:
    text = python_module(200)
    offset = text.index("total += 1 * 150") + 4
    c = extract_context(
        text, offset, language_id="plaintext", path="notes.xyz", count_tokens=count,
        prefix_tokens=200, suffix_tokens=50,
    )  # fmt: skip
    assert c.language is None
    check_invariants(text, offset, c, 200, 50)
    assert is_line_start(text, c.window_start)
    assert c.suffix.endswith("\n")


def test_java_cut_lands_on_a_member_start() -> None:
    methods = "\n".join(
        f"    /** Method {i}. */\n    public int m{i}(int a) {{\n"
        f"        int b = a * {i};\n        return b + {i};\n    }}\n"
        for i in range(150)
    )
    src = f"package p;\n\npublic class Big {{\n{methods}}}\n"
    offset = src.index("return b + 120;")
    c = extract_context(
        src, offset, language_id="java", path=None, count_tokens=count,
        prefix_tokens=300, suffix_tokens=100,
    )  # fmt: skip
    check_invariants(src, offset, c, 300, 100)
    assert src[c.window_start :].startswith("    /** Method "), src[c.window_start :][:40]
    assert src[c.window_end :].startswith("    /** Method ")


def test_php_window_without_open_tag_still_detects_strings() -> None:
    body = "\n".join(f'$v{i} = "value {i}"; // line {i}' for i in range(3000))
    text = "<?php\n" + body + "\n"
    offset = text.index('"value 2500') + 3
    c = extract_context(text, offset, language_id="php", path=None, count_tokens=count)
    assert c.window_start > 0 and "<?php" not in c.prefix
    assert c.in_string and not c.in_comment
    offset = text.index("// line 2600") + 6
    c = extract_context(text, offset, language_id="php", path=None, count_tokens=count)
    assert c.in_comment


# --------------------------------------------------------------------------- unicode


def test_korean_and_emoji_before_cursor_and_in_the_cut() -> None:
    lines = [f"s{i} = '안녕하세요 세계 😀👩‍💻 {i}'  # 주석 {i} 🎉" for i in range(400)]
    text = "\n".join(lines) + "\n"
    offset = text.index("# 주석 300") + len("# 주석 300")
    c = extract_context(
        text, offset, language_id="python", path=None, count_tokens=count,
        prefix_tokens=200, suffix_tokens=60,
    )  # fmt: skip
    check_invariants(text, offset, c, 200, 60)
    assert is_line_start(text, c.window_start)
    assert c.prefix.endswith("# 주석 300") and c.in_comment
    # A string position after multi-byte text: byte/str conversion must be exact.
    offset = text.index("세계 😀👩‍💻 350") + len("세계 😀")
    c = extract_context(text, offset, language_id="python", path=None, count_tokens=count)
    assert c.in_string and not c.in_comment
    offset = text.index("' ", text.index("세계 😀👩‍💻 350")) + 1
    c = extract_context(text, offset, language_id="python", path=None, count_tokens=count)
    assert not c.in_string and not c.in_comment


@pytest.mark.parametrize("lang", ["javascript", "plaintext"])
def test_single_huge_line_is_cut_at_a_character_boundary(lang: str) -> None:
    unit = "한글😀👩‍💻é"  # includes a ZWJ sequence and a combining-friendly letter
    text = "const s = '" + unit * 20_000 + "';"
    offset = len(text) // 2
    calls = Counter()
    c = extract_context(
        text, offset, language_id=lang, path=None, count_tokens=calls,
        prefix_tokens=100, suffix_tokens=50,
    )  # fmt: skip
    check_invariants(text, offset, c, 100, 50)
    assert c.prefix and c.suffix
    assert count(c.prefix) >= 50  # not needlessly short
    for cut in (c.window_start, c.window_end):
        assert text[cut] != "\u200d" and text[cut - 1] != "\u200d"
    assert len(calls.lengths) <= 40
    # The anchor inside the overflowing line is kept while it fits.
    c2 = extract_context(
        text, offset + 1, language_id=lang, path=None, count_tokens=count,
        prefix_tokens=100, suffix_tokens=50, anchor=c.window_start,
    )  # fmt: skip
    assert c2.window_start == c.window_start


def test_combining_marks_are_not_split() -> None:
    text = "e\u0301" * 5000  # é as e + combining acute
    c = extract_context(
        text, 5000, language_id=None, path=None, count_tokens=count, prefix_tokens=30,
        suffix_tokens=30,
    )  # fmt: skip
    assert c.prefix[0] == "e" and c.window_start % 2 == 0
    assert c.window_end % 2 == 0


# --------------------------------------------------------------------------- anchor


def type_chars(
    text: str, offset: int, typed: str, lang: str, ptok: int, first_anchor: int | None = None
) -> list[CursorContext]:
    """Simulate typing `typed` at `offset` one char at a time, feeding back window_start."""
    out: list[CursorContext] = []
    anchor = first_anchor
    for k in range(len(typed) + 1):
        cur = text[:offset] + typed[:k] + text[offset:]
        c = extract_context(
            cur, offset + k, language_id=lang, path=None, count_tokens=count,
            prefix_tokens=ptok, anchor=anchor,
        )  # fmt: skip
        check_invariants(cur, offset + k, c, ptok, 500)
        anchor = c.window_start
        out.append(c)
    return out


@pytest.mark.parametrize("lang", ["python", "plaintext"])
@pytest.mark.parametrize("ptok", [25, 40, 80, 200, 1500])
def test_anchor_is_stable_while_typing(lang: str, ptok: int) -> None:
    text = python_module(300)
    offset = text.index("total += 2 * 200") + len("total += 2 * 200")
    typed = " + compute_value(a, b) * 100"[:30].ljust(30, "x")
    results = type_chars(text, offset, typed, lang, ptok)
    starts = [c.window_start for c in results]
    moves = [(a, b) for a, b in itertools.pairwise(starts) if a != b]
    assert len(moves) <= 1, starts
    for old, new in moves:
        assert new > old
        # a large step: at least a quarter of the budget is dropped at once
        assert count(text[old:new]) >= ptok // 4


def test_anchor_moves_once_when_typing_outgrows_the_budget() -> None:
    text = python_module(300)
    offset = text.index("total += 2 * 200") + len("total += 2 * 200")
    ptok = 40
    fresh = extract_context(
        text, offset, language_id="python", path=None, count_tokens=count, prefix_tokens=ptok
    )
    # Start from an anchor that (just) fits, so typing 30 chars must overflow it.
    anchor = max(
        s
        for s in range(fresh.window_start + 1)
        if is_line_start(text, s) and count(text[s:offset]) <= ptok
        and count(text[s:offset]) > ptok - 5
    )  # fmt: skip
    results = type_chars(text, offset, "y" * 30, "python", ptok, first_anchor=anchor)
    starts = [c.window_start for c in results]
    assert starts[0] == anchor
    assert len(set(starts)) == 2, starts
    assert count(text[anchor : starts[-1]]) >= ptok // 4


def test_anchor_kept_exactly_even_if_a_fresh_cut_differs() -> None:
    text = python_module(200)
    offset = text.index("total += 1 * 150") + 5
    fresh = extract_context(
        text, offset, language_id="python", path=None, count_tokens=count, prefix_tokens=300
    )
    # an indented line start a bit before the fresh start that still fits the budget
    anchor = text.rfind("\n    total", 0, fresh.window_start) + 1
    assert count(text[anchor:offset]) <= 300
    c = extract_context(
        text, offset, language_id="python", path=None, count_tokens=count, prefix_tokens=300,
        anchor=anchor,
    )  # fmt: skip
    assert c.window_start == anchor != fresh.window_start


def run_with_anchor(text: str, offset: int, anchor: int, ptok: int = 300) -> CursorContext:
    return extract_context(
        text, offset, language_id="python", path=None, count_tokens=count, prefix_tokens=ptok,
        anchor=anchor,
    )  # fmt: skip


def test_anchor_dropped_when_cursor_is_above_it() -> None:
    text = python_module(200)
    anchor = text.index("def func_150")
    offset = text.index("def func_100") + 8
    c = run_with_anchor(text, offset, anchor)
    assert c.window_start <= offset and c.window_start != anchor
    assert is_line_start(text, c.window_start)


def test_anchor_dropped_when_no_longer_a_line_start() -> None:
    text = python_module(200)
    offset = text.index("total += 1 * 150") + 5
    first = run_with_anchor(text, offset, None)  # type: ignore[arg-type]
    assert first.window_start > 0
    # The user deletes a character on a line above the anchor: it now points mid-line.
    i = first.window_start - 1
    while text[i] == "\n":
        i -= 1
    edited = text[:i] + text[i + 1 :]
    assert not is_line_start(edited, first.window_start)
    c = run_with_anchor(edited, offset - 1, first.window_start)
    assert c.window_start != first.window_start
    assert is_line_start(edited, c.window_start)
    # mid-line anchors in other lines are rejected too
    c = run_with_anchor(text, offset, first.window_start + 3)
    assert is_line_start(text, c.window_start)


def test_anchor_dropped_when_the_prefix_no_longer_fits() -> None:
    text = python_module(200)
    anchor = text.index("def func_100")
    offset = text.index("def func_160")
    c = run_with_anchor(text, offset, anchor)
    assert c.window_start > anchor
    assert count(c.prefix) <= 300


def test_short_anchor_moves_back_when_more_text_exists() -> None:
    text = python_module(200)
    offset = text.index("total += 1 * 150") + 5
    anchor = text.rfind("\n", 0, offset) + 1  # the cursor's own line: a tiny prefix
    c = run_with_anchor(text, offset, anchor)
    assert c.window_start < anchor
    assert count(c.prefix) >= 300 // 4
    # ... but a short anchor at 0 is kept (there is nothing before it)
    c = run_with_anchor("x = 1\ny = 2\n", 8, 0)
    assert c.window_start == 0


def test_whole_prefix_fits_starts_at_zero() -> None:
    text = python_module(3)
    c = extract_context(text, len(text) - 3, language_id="python", path=None, count_tokens=count)
    assert c.window_start == 0 and c.window_end == len(text)


# --------------------------------------------------------------------------- size and speed


def best_of(n: int, fn: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(n):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def big_python(lines: int) -> str:
    out = []
    i = 0
    while len(out) < lines:
        out.append(f"class C{i}:")
        out.append(f'    """Docstring {i} 한글 😀."""')
        for m in range(5):
            out += [
                f"    def m{m}(self, x):",
                f"        y = x * {m} + {i}  # comment",
                "        if y > 3:",
                "            return y",
                "        return -y",
                "",
            ]
        out.append("")
        i += 1
    return "\n".join(out[:lines]) + "\n"


@pytest.mark.parametrize(
    ("lines", "lang"),
    [
        pytest.param(20_000, "python", id="20k-lines-python"),
        pytest.param(20_000, "plaintext", id="20k-lines-plaintext"),
        pytest.param(300_000, "python", id="5MB-python"),
    ],
)
def test_large_documents_are_fast_and_bounded(lines: int, lang: str) -> None:
    text = big_python(lines)
    if lines > 100_000:
        assert len(text.encode()) > 5_000_000
    for frac in (0.5, 0.999):
        offset = text.index("\n", int(len(text) * frac))
        calls = Counter()
        c = extract_context(text, offset, language_id=lang, path=None, count_tokens=calls)
        check_invariants(text, offset, c, 1500, 500)
        assert len(calls.lengths) <= 12  # interpolation search: typically 2-4 per side
        assert max(calls.lengths) <= 1500 * MAX_CHARS_PER_TOKEN
        # next keystroke with the anchor: one token count on the prefix side
        calls2 = Counter()
        extract_context(
            text, offset, language_id=lang, path=None, count_tokens=calls2, anchor=c.window_start
        )
        assert len(calls2.lengths) <= 6

        def run(offset: int = offset) -> None:
            extract_context(text, offset, language_id=lang, path=None, count_tokens=count)

        assert best_of(3, run) < 0.1


def test_huge_single_line_document_is_bounded() -> None:
    text = "a = 1; " * 750_000  # 5 MB, no newline
    calls = Counter()
    c = extract_context(text, len(text) // 2, language_id="javascript", path=None,
                        count_tokens=calls)  # fmt: skip
    check_invariants(text, len(text) // 2, c, 1500, 500)
    assert len(calls.lengths) <= 12
    assert max(calls.lengths) <= 1500 * MAX_CHARS_PER_TOKEN


def skewed(s: str) -> int:
    """A monotone but very non-linear tokenizer: '#' lines are 50x more expensive."""
    return count(s) + 50 * s.count("#")


def words(s: str) -> int:
    return len(s.split())


@pytest.mark.parametrize("counter", [count, skewed, words], ids=["bytes", "skewed", "words"])
def test_budget_search_is_bounded_for_any_monotone_counter(counter: Callable[[str], int]) -> None:
    text = big_python(20_000)
    offset = text.index("\n", len(text) // 2)
    calls: list[int] = []

    def wrapped(s: str) -> int:
        calls.append(len(s))
        return counter(s)

    c = extract_context(text, offset, language_id="python", path=None, count_tokens=wrapped)
    assert counter(c.prefix) <= 1500 and counter(c.suffix) <= 500
    lines_in_window = 2 * 1500 * MAX_CHARS_PER_TOKEN // 20
    assert len(calls) <= 2 * 2 * lines_in_window.bit_length() + 6


# --------------------------------------------------------------------------- robustness


@pytest.mark.parametrize("lang", ["python", "javascript", "c", "plaintext", None])
def test_binaryish_text_does_not_raise(lang: str | None) -> None:
    blob = bytes(range(256)).decode("latin-1") * 50 + "\x00\x00\ud800\udfff\x00"
    text = "def f():\n    x = '\x00\x01'\n" + blob + "\n\x00 y = 1\n" + blob
    for offset in (0, 5, len(text) // 3, len(text) // 2, len(text) - 1, len(text)):
        c = extract_context(
            text, offset, language_id=lang, path=None, count_tokens=count, prefix_tokens=200,
            suffix_tokens=100,
        )  # fmt: skip
        check_invariants(text, offset, c, 200, 100)


def test_out_of_range_offset_is_clamped() -> None:
    c = extract_context("abc", 99, language_id="python", path=None, count_tokens=count)
    assert (c.prefix, c.suffix) == ("abc", "")
    c = extract_context("abc", -5, language_id="python", path=None, count_tokens=count)
    assert (c.prefix, c.suffix) == ("", "abc")


def test_parser_failure_falls_back_to_line_based(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(self: object) -> bool:
        raise RuntimeError("parser exploded")

    monkeypatch.setattr(region.RegionTree, "parse", boom)
    c = ctx('x = "ab █"\n', "python")
    assert c.language is None
    assert not c.in_string
    assert c.mode == SINGLE


ALPHABET = list("ab_ (){}[]:;,\"'#/*\n\t\\=") + ["한", "😀", "\u200d", "\u0301", "\x00", "\r"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=st.text(alphabet=st.sampled_from(ALPHABET), max_size=600),
    where=st.floats(min_value=0, max_value=1),
    ptok=st.integers(min_value=0, max_value=60),
    stok=st.integers(min_value=0, max_value=30),
    lang=st.sampled_from(["python", "javascript", "ruby", "plaintext"]),
    anchor=st.one_of(st.none(), st.integers(min_value=-5, max_value=700)),
)
def test_property_window_invariants(
    text: str, where: float, ptok: int, stok: int, lang: str, anchor: int | None
) -> None:
    offset = int(len(text) * where)
    c = extract_context(
        text, offset, language_id=lang, path=None, count_tokens=count, prefix_tokens=ptok,
        suffix_tokens=stok, anchor=anchor,
    )  # fmt: skip
    check_invariants(text, offset, c, ptok, stok)
    assert isinstance(c.mode, CompletionMode) and c.reason


# --------------------------------------------------------------------------- helpers


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        pytest.param("", False, id="empty"),
        pytest.param("foo", True, id="ascii"),
        pytest.param("x = foo_", True, id="underscore"),
        pytest.param("$var", True, id="dollar"),
        pytest.param("x1", True, id="digit"),
        pytest.param("(12", False, id="number"),
        pytest.param("x = 3e", False, id="number-with-letter"),
        pytest.param("변수", True, id="korean"),
        pytest.param("e\u0301", True, id="combining-mark"),
        pytest.param("foo(", False, id="paren"),
        pytest.param("foo ", False, id="space"),
        pytest.param("😀", False, id="emoji"),
        pytest.param("x.", False, id="dot"),
    ],
)
def test_ends_inside_identifier(prefix: str, expected: bool) -> None:
    assert ends_inside_identifier(prefix) is expected


# --------------------------------------------------------------------------- end anchor


def window_at(text: str, line: int, end_anchor: int | None) -> CursorContext:
    offset = line_offset(text, line)
    return extract_context(
        text, offset, language_id="python", path=None, count_tokens=count, prefix_tokens=300,
        suffix_tokens=200, end_anchor=end_anchor,
    )  # fmt: skip


def line_offset(text: str, line: int) -> int:
    return sum(len(row) + 1 for row in text.split("\n")[:line])


def test_the_suffix_end_stays_while_the_cursor_moves_within_the_window() -> None:
    text = python_module(200)
    first = window_at(text, 300, None)
    assert count(first.suffix) > 150
    # Down a few lines: the suffix loses its start only.
    down = window_at(text, 305, first.window_end)
    assert down.window_end == first.window_end and first.suffix.endswith(down.suffix)
    # Up a few lines: it gains lines at its start, while it fits.
    up = window_at(text, 298, first.window_end)
    assert up.window_end == first.window_end and up.suffix.endswith(first.suffix)
    # Without the anchor, both ends would have moved.
    assert window_at(text, 305, None).window_end != first.window_end


def test_the_suffix_end_is_cut_afresh_when_it_no_longer_fits_or_gets_short() -> None:
    text = python_module(200)
    first = window_at(text, 300, None)
    far_up = window_at(text, 250, first.window_end)
    assert far_up.window_end < first.window_end and count(far_up.suffix) <= 200
    nearly_past = first.window_end - 10
    line = text.count("\n", 0, nearly_past)
    short = window_at(text, line, first.window_end)
    assert short.window_end > first.window_end  # a suffix of a few tokens is extended
    assert count(short.suffix) > 50
    # Not a line start (the text changed under it): not used.
    inside = next(p for p in range(first.window_end - 20, first.window_end) if text[p - 1] != "\n")
    assert window_at(text, 305, inside).window_end != inside
