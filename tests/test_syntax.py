"""Tree-sitter checks of a suggestion in its windows (cl_lsp/syntax.py) and the check_syntax
filter built on them."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from cl_lsp import syntax
from cl_lsp.completion.postprocess import FilterInput, check_syntax

CURSOR = "█"


def _split(document: str) -> tuple[str, str]:
    prefix, suffix = document.split(CURSOR)
    return prefix, suffix


@pytest.mark.parametrize(
    ("language", "document", "middle", "broken"),
    [
        pytest.param("python", "def f(xs):\n    █\n", "return [x for x in xs]", False,
                     id="python-valid"),
        pytest.param("python", "def f(xs):\n    █\n", "return [x for x in xs", True,
                     id="python-unclosed-bracket"),
        pytest.param("python", "def f(xs):\n    █\n", "for x in xs:", True,
                     id="python-empty-block"),
        pytest.param("javascript", "function f() {\n  █\n}\n", "const a = [1, 2];\n  return a;",
                     False, id="javascript-valid"),
        pytest.param("javascript", "function f() {\n  █\n}\n", "const = 1;", True,
                     id="javascript-missing-name"),
        pytest.param("typescript", "function f(): number {\n  █\n}\n",
                     "const n: number = 1;\n  return n;", False, id="typescript-valid"),
        pytest.param("typescript", "function f(): number {\n  █\n}\n",
                     "const n: = 1;", True, id="typescript-missing-type"),
        pytest.param("tsx", "const App = () => (\n  █\n);\n", "<div>{name}</div>", False,
                     id="tsx-valid"),
        pytest.param("go", "func main() {\n\t█\n}\n", "x := 1\n\tfmt.Println(x)", False,
                     id="go-valid"),
        pytest.param("go", "func main() {\n\t█\n}\n", "if x {", True, id="go-unclosed-if"),
        pytest.param("rust", "fn main() {\n    █\n}\n", "let v = vec![1, 2];", False,
                     id="rust-valid"),
        pytest.param("rust", "fn main() {\n    █\n}\n", "let v = vec![1, 2;", True,
                     id="rust-unclosed-macro"),
        pytest.param("c", "int main(void) {\n    █\n}\n", "int a = 1;\n    return a;", False,
                     id="c-valid"),
        pytest.param("c", "int main(void) {\n    █\n}\n", "int a = ;", True,
                     id="c-missing-value"),
        pytest.param("cpp", "int main() {\n    █\n}\n", "std::vector<int> v{1, 2};", False,
                     id="cpp-valid"),
        pytest.param("cpp", "int main() {\n    █\n}\n", "std::vector<int v;", True,
                     id="cpp-unclosed-template"),
    ],
)  # fmt: skip
def test_added_errors(language, document, middle, broken):
    prefix, suffix = _split(document)
    added = syntax.added_errors(prefix, middle, suffix, language)
    assert added is not None
    assert (added > 0) is broken


def test_errors_already_in_the_windows_are_not_added():
    prefix, suffix = _split("int broken( {\nint main(void) {\n    █\n}\n")
    assert syntax.window_errors("c", prefix, suffix)
    assert syntax.added_errors(prefix, "return 0;", suffix, "c") == 0


def test_filling_a_hole_removes_errors():
    prefix, suffix = _split("def f(x):\n    if x:\n        █\n    else:\n        pass\n")
    assert syntax.added_errors(prefix, "x += 1", suffix, "python") <= 0


@pytest.mark.parametrize("language", [None, "no-such-grammar"])
def test_no_grammar_means_no_verdict(language):
    assert syntax.added_errors("a(", "b", ")", language) is None
    assert syntax.enclosing_closers("a(", ")", language) == ()


def test_count_errors_counts_missing_nodes():
    from cl_lsp.languages import parser_for

    parser, _ = parser_for("javascript")
    root = parser.parse(b"function f() {\n  if (x) \n}\n").root_node
    assert syntax.count_errors(root) >= 1


@pytest.mark.parametrize(
    ("language", "document", "expected"),
    [
        pytest.param("c", "int f(void) {\n    █\n}\n", [("}", 0, True)], id="c-function-body"),
        pytest.param("javascript", "function f() {\n  if (a) {\n    █\n  }\n}\n",
                     [("}", 2, True), ("}", 0, True)], id="javascript-nested"),
        pytest.param("lua", "function f(a)\n  if a then\n    █\n  end\nend\n",
                     [("end", 2, True), ("end", 0, True)], id="lua-keywords"),
        pytest.param("python", "x = foo(█)\n", [(")", 0, False)], id="python-call"),
        pytest.param("go", "func f() {\n\tg(█\n", [], id="go-broken-scopes-skipped"),
        pytest.param("python", "def f():\n    █\n", [], id="python-blocks-have-no-closer"),
    ],
)  # fmt: skip
def test_enclosing_closers(language, document, expected):
    prefix, suffix = _split(document)
    closers = syntax.enclosing_closers(prefix, suffix, language)
    assert [(c.token, c.indent, c.starts_line) for c in closers] == expected
    for closer in closers:
        assert suffix[closer.offset :].startswith(closer.token)


@pytest.mark.parametrize(
    ("language", "document", "raw", "expected"),
    [
        pytest.param("python", "def f(xs):\n    █\n", "ys = []\n    for x in xs:\n"
                     "        ys.append(x\n    return ys", "ys = []", id="python-shortened"),
        pytest.param("javascript", "function f() {\n  █\n}\n", "let a = 1;\n  let b = ;\n"
                     "  return a;", "let a = 1;", id="javascript-shortened"),
        pytest.param("go", "func main() {\n\t█\n}\n", "a := 1\n\tb := 2\n\t_ = a + b",
                     "a := 1\n\tb := 2\n\t_ = a + b", id="go-valid-kept"),
        pytest.param("rust", "fn main() {\n    █\n}\n", "let x: = 1;\n    let y = 2;", "",
                     id="rust-dropped"),
        pytest.param("c", "int main(void) {\n    █\n}\n", "int a = 1;\n    return a", "int a = 1;",
                     id="c-missing-semicolon"),
        pytest.param(None, "x = (█\n", "1 +\n  2 +", "1 +\n  2 +", id="no-grammar-unchecked"),
    ],
)  # fmt: skip
def test_check_syntax(language, document, raw, expected):
    prefix, suffix = _split(document)
    assert check_syntax(raw, FilterInput(prefix, suffix, False, language)) == expected


def test_python_shortened_suggestion_has_no_empty_block():
    # `for x in xs:` alone parses without an ERROR: the empty block is what gives it away.
    prefix, suffix = _split("def f(xs):\n    █\n")
    assert syntax.added_errors(prefix, "ys = []\n    for x in xs:", suffix, "python") > 0


def test_concurrent_checks_agree():
    prefix, suffix = _split("function g() {}\n" * 40 + "function f() {\n  █\n}\n")
    middles = ["return 1;", "return (1;", "if (a) {", "const x = [1, 2];"] * 10
    expected = [syntax.added_errors(prefix, m, suffix, "javascript") for m in middles]
    with ThreadPoolExecutor(4) as pool:
        got = list(
            pool.map(lambda m: syntax.added_errors(prefix, m, suffix, "javascript"), middles)
        )
    assert got == expected


def test_long_broken_suggestion_is_bisected():
    prefix, suffix = _split("def f(xs):\n    █\n")
    lines = [f"a{i} = {i}" for i in range(30)]
    lines[20] = "a20 = = 20"
    raw = "\n    ".join(lines)
    assert check_syntax(raw, FilterInput(prefix, suffix, False, "python")) == "\n    ".join(
        lines[:20]
    )


def test_unit_windows_narrow_to_the_top_level_unit_around_the_cursor():
    prefix = (
        '"""a docstring the window starts in\n"""\n\nx = 1\n\ndef f(a,\n      b):\n    y = 2\n    '
    )
    suffix = "\n    return y\n\ndef g():\n    pass\n"
    got = syntax.unit_windows(prefix, suffix)
    assert got == ("def f(a,\n      b):\n    y = 2\n    ", "\n    return y\n")
    # C: the closing brace at column 0 belongs to the unit.
    got = syntax.unit_windows("int\nf(void)\n{\n    ", "\n}\nint g;\n")
    assert got == ("int\nf(void)\n{\n    ", "\n}")
    assert syntax.unit_windows("    a\n    ", "\n    b") == ("    a\n    ", "\n    b")
