"""Code actions without the model: targets, instructions, answer extraction and edits."""

from __future__ import annotations

import ast

import pytest

from cl_lsp.actions import (
    ActionKind,
    Diagnostic,
    Edit,
    Target,
    TargetTooLarge,
    comment_block,
    document_edit,
    explain_edit,
    extract_code,
    extract_documentation,
    extract_prose,
    find_target,
    fix_edit,
    instruction,
)
from cl_lsp.actions import tests_edit as add_tests  # a `test*` name would be collected


def count_tokens(text: str) -> int:
    return len(text) // 4


def marked(sample: str) -> tuple[str, int, int]:
    """The text and selection of a sample marked with █ (the cursor) or «...» (a selection)."""
    if "█" in sample:
        offset = sample.index("█")
        return sample.replace("█", ""), offset, offset
    start = sample.index("«")
    end = sample.index("»") - 1
    return sample.replace("«", "").replace("»", ""), start, end


def apply(text: str, edit: Edit) -> str:
    return text[: edit.start] + edit.new_text + text[edit.end :]


def target_in(text: str, snippet: str, kind: str, name: str | None, language: str | None) -> Target:
    start = text.index(snippet)
    return Target(start, start + len(snippet), kind, name, language)


# --------------------------------------------------------------------------- targets

PY_SHAPES = """import math


@cache
def area(radius):
    return math.pi * radius ** 2


class Shape:
    def scale(self, factor):
        def grow(x):
            return x * factor
        return grow(self.size)

size = Shape()
print(size)
"""


@pytest.mark.parametrize(
    ("sample", "language", "kind", "name", "expected"),
    [
        pytest.param(
            "def f(x):\n    return █x\n",
            "python",
            "function",
            "f",
            "def f(x):\n    return x",
            id="python-function",
        ),
        pytest.param(
            PY_SHAPES.replace("math.pi", "math.█pi"),
            "python",
            "function",
            "area",
            "@cache\ndef area(radius):\n    return math.pi * radius ** 2",
            id="python-decorated-from-body",
        ),
        pytest.param(
            PY_SHAPES.replace("@cache", "@ca█che"),
            "python",
            "function",
            "area",
            "@cache\ndef area(radius):\n    return math.pi * radius ** 2",
            id="python-decorated-from-decorator",
        ),
        pytest.param(
            PY_SHAPES.replace("return grow", "return gr█ow"),
            "python",
            "method",
            "scale",
            "def scale(self, factor):\n        def grow(x):\n"
            "            return x * factor\n        return grow(self.size)",
            id="python-method",
        ),
        pytest.param(
            PY_SHAPES.replace("  def scale", "█  def scale"),
            "python",
            "method",
            "scale",
            "def scale(self, factor):\n        def grow(x):\n"
            "            return x * factor\n        return grow(self.size)",
            id="python-cursor-in-indentation",
        ),
        pytest.param(
            PY_SHAPES.replace("x * factor", "x * fa█ctor"),
            "python",
            "function",
            "grow",
            "def grow(x):\n            return x * factor",
            id="python-nested-function",
        ),
        pytest.param(
            PY_SHAPES.replace("class Shape:", "class Shape:█"),
            "python",
            "class",
            "Shape",
            PY_SHAPES[PY_SHAPES.index("class") : PY_SHAPES.index("\n\nsize")],
            id="python-class-cursor-at-end-of-line",
        ),
        pytest.param(
            PY_SHAPES.replace("print(size)", "pr█int(size)"),
            "python",
            "block",
            None,
            "size = Shape()\nprint(size)",
            id="python-module-code-is-a-block",
        ),
        pytest.param(
            "def f():\n    return 1\n█\n\nx = 1\n",
            "python",
            "function",
            "f",
            "def f():\n    return 1",
            id="python-blank-line-takes-code-above",
        ),
        pytest.param(
            "\n\n█\nx = 1\n",
            "python",
            "block",
            None,
            "x = 1",
            id="python-blank-start-takes-code-below",
        ),
        pytest.param(
            "def f(x):\n    «\n    y = x + 1\n    return y\n»\n",
            "python",
            "selection",
            None,
            "y = x + 1\n    return y",
            id="python-selection-trimmed",
        ),
        pytest.param(
            "# é ünïcode ✓\ndef f():\n    return '✓'█\n",
            "python",
            "function",
            "f",
            "def f():\n    return '✓'",
            id="python-non-ascii-before",
        ),
        pytest.param(
            "def f():\r\n    return 1█\r\n",
            "python",
            "function",
            "f",
            "def f():\r\n    return 1",
            id="python-crlf",
        ),
        pytest.param(
            "a = 1\nb = █2\n\nc = 3\n",
            None,
            "block",
            None,
            "a = 1\nb = 2",
            id="no-grammar-paragraph",
        ),
        pytest.param(
            "function add(a, b) {\n  return a + █b;\n}\n",
            "javascript",
            "function",
            "add",
            "function add(a, b) {\n  return a + b;\n}",
            id="js-function",
        ),
        pytest.param(
            "export const inc = (x) => {\n  return x█ + 1;\n};\n",
            "javascript",
            "function",
            "inc",
            "export const inc = (x) => {\n  return x + 1;\n};",
            id="js-exported-arrow-function",
        ),
        pytest.param(
            "class A {\n  m() {\n    return █1;\n  }\n}\n",
            "javascript",
            "method",
            "m",
            "m() {\n    return 1;\n  }",
            id="js-method",
        ),
        pytest.param(
            "class █A {\n  m() {}\n}\n",
            "javascript",
            "class",
            "A",
            "class A {\n  m() {}\n}",
            id="js-class",
        ),
        pytest.param(
            "const k = █1;\nlet j = k;\n",
            "javascript",
            "block",
            None,
            "const k = 1;\nlet j = k;",
            id="js-statements-are-a-block",
        ),
        pytest.param(
            "interface Shape {\n  area(): █number;\n}\n",
            "typescript",
            "method",
            "area",
            "area(): number",
            id="ts-interface-method",
        ),
        pytest.param(
            "interface █Shape {\n  area(): number;\n}\n",
            "typescript",
            "interface",
            "Shape",
            "interface Shape {\n  area(): number;\n}",
            id="ts-interface",
        ),
        pytest.param(
            "package s\n\nfunc Area(w, h int) int {\n\treturn w █* h\n}\n",
            "go",
            "function",
            "Area",
            "func Area(w, h int) int {\n\treturn w * h\n}",
            id="go-function",
        ),
        pytest.param(
            "package s\n\nfunc (p *P) Area() int {\n\treturn █p.w\n}\n",
            "go",
            "method",
            "Area",
            "func (p *P) Area() int {\n\treturn p.w\n}",
            id="go-method",
        ),
        pytest.param(
            "package s\n\ntype P struct {\n\tw █int\n}\n",
            "go",
            "struct",
            "P",
            "type P struct {\n\tw int\n}",
            id="go-struct",
        ),
        pytest.param(
            "package █s\n\nfunc F() {}\n",
            "go",
            "block",
            None,
            "package s",
            id="go-package-clause-is-a-block",
        ),
        pytest.param(
            "fn area(w: u32) -> u32 {\n    w █* 2\n}\n",
            "rust",
            "function",
            "area",
            "fn area(w: u32) -> u32 {\n    w * 2\n}",
            id="rust-function",
        ),
        pytest.param(
            "impl P {\n    fn area(&self) -> u32 {\n        self.█w\n    }\n}\n",
            "rust",
            "method",
            "area",
            "fn area(&self) -> u32 {\n        self.w\n    }",
            id="rust-method-in-impl",
        ),
        pytest.param(
            "impl █P {\n    fn new() -> P { P }\n}\n",
            "rust",
            "impl",
            "P",
            "impl P {\n    fn new() -> P { P }\n}",
            id="rust-impl",
        ),
        pytest.param(
            "#[derive(Debug)]\nstruct P {\n    w: █u32,\n}\n",
            "rust",
            "struct",
            "P",
            "#[derive(Debug)]\nstruct P {\n    w: u32,\n}",
            id="rust-struct-with-attribute",
        ),
        pytest.param(
            "enum E {\n    A█,\n}\n", "rust", "enum", "E", "enum E {\n    A,\n}", id="rust-enum"
        ),
        pytest.param(
            "trait T {\n    fn t(&self)█;\n}\n",
            "rust",
            "method",
            "t",
            "fn t(&self);",
            id="rust-trait-method",
        ),
    ],
)
def test_find_target(sample, language, kind, name, expected):
    text, start, end = marked(sample)
    target = find_target(text, start, end, language=language)
    assert target is not None
    assert (target.kind, target.name, target.language) == (kind, name, language)
    assert text[target.start : target.end] == expected


@pytest.mark.parametrize(
    ("text", "offset"),
    [
        pytest.param("", 0, id="empty"),
        pytest.param("\n\n   \n", 2, id="only-blank-lines"),
    ],
)
def test_nothing_to_act_on(text, offset):
    assert find_target(text, offset, offset, language="python") is None


def test_a_whitespace_selection_acts_like_the_cursor():
    text = "def f():\n    return 1\n\n\n"
    target = find_target(text, len(text) - 2, len(text), language="python")
    assert target is not None and target.kind == "function"


# --------------------------------------------------------------------------- instructions

METHOD = PY_SHAPES.index("def scale")
METHOD_TARGET = find_target(PY_SHAPES, METHOD, METHOD, language="python")


@pytest.mark.parametrize(
    ("kind", "phrases"),
    [
        pytest.param(
            ActionKind.EXPLAIN,
            ["Explain what this Python method `scale` does", "plain prose"],
            id="explain",
        ),
        pytest.param(
            ActionKind.FIX,
            [
                "Fix the bugs in this Python method `scale`",
                "only the complete corrected code in one ```python",
            ],
            id="fix",
        ),
        pytest.param(
            ActionKind.DOCUMENT,
            [
                "Describe what this Python method `scale` does, for its docstring",
                "no comment markers",
                "no quotes",
            ],
            id="document",
        ),
        pytest.param(
            ActionKind.TESTS,
            [
                "Write unit tests for this Python method `scale`",
                "pytest",
                "one ```python fenced code block",
            ],
            id="tests",
        ),
    ],
)
def test_instruction_names_language_task_and_reply_format(kind, phrases):
    told = instruction(
        kind,
        PY_SHAPES,
        METHOD_TARGET,
        path="/src/shapes.py",
        count_tokens=count_tokens,
        budget=2000,
    )
    assert "Python programmer" in told.system
    for phrase in phrases:
        assert phrase in told.user
    # the target, dedented, in its own block; the file around it for reference
    assert "```python\ndef scale(self, factor):\n    def grow(x):\n" in told.user
    assert "`shapes.py`" in told.user
    assert "import math\n" in told.user and "print(size)" in told.user


def test_fix_lists_the_diagnostics():
    problems = [
        Diagnostic(12, '"size" is not a known attribute', "Pyright", "reportAttributeAccessIssue"),
        Diagnostic(3, "unused\n  import", None, None),
    ]
    told = instruction(
        ActionKind.FIX,
        PY_SHAPES,
        METHOD_TARGET,
        path=None,
        diagnostics=problems,
        count_tokens=count_tokens,
        budget=2000,
    )
    assert (
        '- line 13: "size" is not a known attribute (Pyright reportAttributeAccessIssue), '
        "in `return grow(self.size)`"
    ) in told.user
    assert "- line 4: unused import, in `@cache`" in told.user


@pytest.mark.parametrize(
    ("language", "framework"),
    [
        pytest.param("go", "Go's testing package", id="go"),
        pytest.param("rust", "#[cfg(test)] mod tests", id="rust"),
        pytest.param("javascript", "Jest", id="javascript"),
        pytest.param("java", "JUnit 5", id="java"),
        pytest.param("lua", "busted", id="lua"),
        pytest.param("zig", "the usual test framework", id="other"),
    ],
)
def test_tests_name_the_usual_framework(language, framework):
    target = Target(0, 5, "block", None, language)
    told = instruction(
        ActionKind.TESTS, "x = 1\n", target, path=None, count_tokens=count_tokens, budget=500
    )
    assert framework in told.user


def test_unknown_language_is_code():
    told = instruction(
        ActionKind.EXPLAIN,
        "x = 1\n",
        Target(0, 5, "block", None, None),
        path=None,
        count_tokens=count_tokens,
        budget=500,
    )
    assert told.system.startswith("You are an expert programmer.")
    assert "Explain what this code does." in told.user


LONG_FILE = (
    "".join(f"line_{n:03} = {n}\n" for n in range(300))
    + "def target():\n    pass\n"
    + "".join(f"after_{n:03} = {n}\n" for n in range(300))
)
LONG_TARGET = find_target(
    LONG_FILE, LONG_FILE.index("pass"), LONG_FILE.index("pass"), language="python"
)


@pytest.mark.parametrize("budget", [250, 300, 400, 600, 5000])
def test_context_fits_the_budget_nearest_lines_first_cut_at_lines(budget):
    told = instruction(
        ActionKind.EXPLAIN,
        LONG_FILE,
        LONG_TARGET,
        path=None,
        count_tokens=count_tokens,
        budget=budget,
    )
    assert count_tokens(told.system) + count_tokens(told.user) <= budget
    assert "def target():\n    pass" in told.user
    shown = [line for line in told.user.split("\n") if line.startswith(("line_", "after_"))]
    assert all(f"{line}\n" in LONG_FILE for line in shown)  # whole lines only
    before = [line for line in shown if line.startswith("line_")]
    after = [line for line in shown if line.startswith("after_")]
    if budget >= 300:
        assert before and before[-1] == "line_299 = 299"  # nearest first
        assert after and after[0] == "after_000 = 0"
        assert len(before) > len(after)
    assert len(before) <= 80 and len(after) <= 20


def test_a_target_too_large_is_refused_clearly():
    with pytest.raises(
        TargetTooLarge,
        match=r"the method `scale` is \d+ tokens; the model's "
        r"window holds 60 .*select a smaller part",
    ):
        instruction(
            ActionKind.FIX,
            PY_SHAPES,
            METHOD_TARGET,
            path=None,
            count_tokens=count_tokens,
            budget=60,
        )


# --------------------------------------------------------------------------- answers

CODE = "def f(x):\n    return x + 1"


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        pytest.param(f"```python\n{CODE}\n```", CODE, id="fence-with-tag"),
        pytest.param(f"```\n{CODE}\n```\n", CODE, id="fence-without-tag"),
        pytest.param(f"~~~py\n{CODE}\n~~~", CODE, id="tilde-fence"),
        pytest.param(f"Here is the fix:\n```python\n{CODE}", CODE, id="unclosed-fence"),
        pytest.param(
            f"Sure! Here is the fixed code:\n\n```python\n{CODE}\n```\n\nThis fixes "
            "the off-by-one error.",
            CODE,
            id="chatter-around-fence",
        ),
        pytest.param(
            f"```python\n{CODE}\n```\nUsage:\n```python\nf(1)\n```", CODE, id="longest-block-wins"
        ),
        pytest.param(CODE, CODE, id="no-fence"),
        pytest.param(
            f"Sure! Here is the corrected function:\n{CODE}\n\nThis returns one more "
            "than its argument.",
            CODE,
            id="no-fence-with-chatter",
        ),
        pytest.param(f"```python  \n{CODE}   \n\n```</s>garbage", CODE, id="end-token-and-spaces"),
        pytest.param("I am sorry, I cannot see a bug here.", "", id="only-prose"),
        pytest.param("", "", id="empty"),
    ],
)
def test_extract_code(answer, expected):
    assert extract_code(answer) == expected


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        pytest.param("It adds one.", "It adds one.", id="plain"),
        pytest.param(
            "Sure! Here's an explanation:\n\nIt **adds** one to *x*.\nThen it\n"
            "returns it.\n\nI hope this helps!",
            "It adds one to x. Then it returns it.",
            id="chatter-and-emphasis",
        ),
        pytest.param(
            "### Explanation\n\nIt adds one.\n\n```python\nf(1)\n```\n\nSecond part.",
            "It adds one.\n\nSecond part.",
            id="headings-and-code-dropped",
        ),
        pytest.param(
            "**Explanation:**\nIt adds one.\n\n- first\n- second",
            "It adds one.\n\n- first\n- second",
            id="labels-dropped-lists-kept",
        ),
        pytest.param(
            "Adds one.\n\nArgs:\n    x: the number.\n\nReturns:\n    x + 1.",
            "Adds one.\n\nArgs:\n    x: the number.\n\nReturns:\n    x + 1.",
            id="docstring-sections-kept",
        ),
        pytest.param("```text\nIt adds one.\n```", "It adds one.", id="fenced-prose"),
        pytest.param("```python\nf(1)\n```", "", id="only-code"),
    ],
)
def test_extract_prose(answer, expected):
    assert extract_prose(answer) == expected


@pytest.mark.parametrize(
    ("language", "indent", "expected"),
    [
        pytest.param("python", "    ", "    # Adds one.\n    #\n    # Twice.\n", id="python"),
        pytest.param("rust", "", "// Adds one.\n//\n// Twice.\n", id="rust"),
        pytest.param("lua", "\t", "\t-- Adds one.\n\t--\n\t-- Twice.\n", id="lua"),
        pytest.param(None, "", "# Adds one.\n#\n# Twice.\n", id="unknown"),
        pytest.param("html", "  ", "  <!--\n    Adds one.\n\n    Twice.\n  -->\n", id="html"),
        pytest.param("css", "", "/*\n * Adds one.\n *\n * Twice.\n */\n", id="css"),
    ],
)
def test_comment_block(language, indent, expected):
    assert comment_block("Adds one.\n\nTwice.", language, indent) == expected


def test_comment_block_wraps_at_80_columns():
    words = " ".join(["word"] * 40)
    block = comment_block(words, "python", "    ")
    assert all(len(line) <= 80 for line in block.splitlines())
    assert " ".join(line.removeprefix("    # ") for line in block.splitlines()) == words


# --------------------------------------------------------------------------- edits

PY_CLASS = """class Shape:
    def scale(self, factor):
        return self.size * factr

    def grow(self):
        pass
"""
JS = """const factor = 2;

function double(values) {
  return values.map((v) => v * factr);
}
"""
GO = """package shapes

func Area(width int, height int) int {
	return width * heigth
}
"""
RUST = """impl Rect {
    fn area(&self) -> u32 {
        self.width * self.heigth
    }
}
"""
PY_METHOD = target_in(
    PY_CLASS,
    PY_CLASS[PY_CLASS.index("def scale") : PY_CLASS.index("\n\n")],
    "method",
    "scale",
    "python",
)
JS_FUNCTION = target_in(JS, JS[JS.index("function") : -1], "function", "double", "javascript")
GO_FUNCTION = target_in(GO, GO[GO.index("func") : -1], "function", "Area", "go")
RUST_METHOD = target_in(
    RUST, RUST[RUST.index("fn") : RUST.index("    }\n}") + 5], "method", "area", "rust"
)


@pytest.mark.parametrize(
    ("text", "target", "answer", "expected"),
    [
        pytest.param(
            PY_CLASS,
            PY_METHOD,
            "Sure! Here is the fixed method:\n```python\n"
            "def scale(self, factor):\n    return self.size * factor\n```\n"
            "I renamed factr.",
            PY_CLASS.replace("factr", "factor"),
            id="python-method-reindented",
        ),
        pytest.param(
            PY_CLASS,
            PY_METHOD,
            "```\n        def scale(self, factor):\n            return self.size * factor\n```",
            PY_CLASS.replace("factr", "factor"),
            id="python-over-indented",
        ),
        pytest.param(
            JS,
            JS_FUNCTION,
            "```js\nfunction double(values) {\n  return values.map((v) => v * factor);\n}\n```",
            JS.replace("factr", "factor"),
            id="javascript",
        ),
        pytest.param(
            GO,
            GO_FUNCTION,
            "```go\nfunc Area(width int, height int) int {\n\treturn width * height\n}\n```",
            GO.replace("heigth", "height"),
            id="go",
        ),
        pytest.param(
            RUST,
            RUST_METHOD,
            "fn area(&self) -> u32 {\n    self.width * self.height\n}",
            RUST.replace("heigth", "height"),
            id="rust-method-without-fence",
        ),
        pytest.param(
            PY_CLASS.replace("\n", "\r\n"),
            target_in(
                PY_CLASS.replace("\n", "\r\n"),
                "def scale(self, factor):\r\n        return self.size * factr",
                "method",
                "scale",
                "python",
            ),
            "```python\ndef scale(self, factor):\n    return self.size * factor\n```",
            PY_CLASS.replace("factr", "factor").replace("\n", "\r\n"),
            id="crlf",
        ),
    ],
)
def test_fix_edit(text, target, answer, expected):
    edit = fix_edit(text, target, answer)
    assert edit is not None and (edit.start, edit.end) == (target.start, target.end)
    assert apply(text, edit) == expected


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param("The code is correct.", id="no-code"),
        pytest.param(
            "```python\ndef scale(self, factor):\n    return self.size * factr\n```", id="unchanged"
        ),
    ],
)
def test_fix_edit_without_a_change_is_none(answer):
    assert fix_edit(PY_CLASS, PY_METHOD, answer) is None


def test_fix_of_a_selection_from_mid_line():
    text = "def f():\n    x = g(1, 2)\n    return x\n"
    target = target_in(text, "g(1, 2)", "selection", None, "python")
    edit = fix_edit(text, target, "```\ng(2, 1)\n```")
    assert edit is not None and apply(text, edit) == text.replace("g(1, 2)", "g(2, 1)")


EXPLANATION = (
    "Sure! Here's what it does:\n\nIt multiplies the size of the shape by the factor "
    "and returns the **result**, leaving the shape itself unchanged."
)


@pytest.mark.parametrize(
    ("text", "target", "expected"),
    [
        pytest.param(
            PY_CLASS,
            PY_METHOD,
            PY_CLASS.replace(
                "    def scale",
                "    # It multiplies the size of the shape by the factor and returns"
                " the result,\n    # leaving the shape itself unchanged.\n    def scale",
            ),
            id="python-method",
        ),
        pytest.param(
            JS,
            JS_FUNCTION,
            JS.replace(
                "function",
                "// It multiplies the size of the shape by the factor and returns the "
                "result,\n// leaving the shape itself unchanged.\nfunction",
            ),
            id="javascript",
        ),
        pytest.param(
            GO,
            GO_FUNCTION,
            GO.replace(
                "func",
                "// It multiplies the size of the shape by the factor and returns the "
                "result,\n// leaving the shape itself unchanged.\nfunc",
            ),
            id="go",
        ),
        pytest.param(
            RUST,
            RUST_METHOD,
            RUST.replace(
                "    fn",
                "    // It multiplies the size of the shape by the factor and returns the "
                "result,\n    // leaving the shape itself unchanged.\n    fn",
            ),
            id="rust-method",
        ),
    ],
)
def test_explain_edit(text, target, expected):
    edit = explain_edit(text, target, EXPLANATION)
    assert edit is not None and edit.start == edit.end
    assert apply(text, edit) == expected


def test_explain_edit_without_prose_is_none():
    assert explain_edit(PY_CLASS, PY_METHOD, "```python\nscale(2)\n```") is None


SUMMARY = "Scale the size by a factor."
DETAILED = (
    "Scale the size by a factor. The size is multiplied by the factor and the result "
    "is returned, the shape itself is not changed.\n\nArgs:\n    factor: how much."
)


@pytest.mark.parametrize(
    ("text", "target", "answer", "expected"),
    [
        pytest.param(
            PY_CLASS,
            PY_METHOD,
            f"Sure!\n\n{SUMMARY}",
            PY_CLASS.replace("factor):\n", f'factor):\n        """{SUMMARY}"""\n'),
            id="python-one-line",
        ),
        pytest.param(
            PY_CLASS,
            PY_METHOD,
            DETAILED,
            PY_CLASS.replace(
                "factor):\n",
                (
                    'factor):\n        """Scale the size by a factor.\n\n'
                    "        The size is multiplied by the factor and the result is returned, the\n"
                    "        shape itself is not changed.\n\n"
                    "        Args:\n            factor: how much.\n"
                    '        """\n'
                ),
            ),
            id="python-multi-line",
        ),
        pytest.param(
            "@cache\ndef f(x):\n    '''Old.'''\n    return x\n",
            Target(0, 46, "function", "f", "python"),
            SUMMARY,
            f'@cache\ndef f(x):\n    """{SUMMARY}"""\n    return x\n',
            id="python-replaces-docstring",
        ),
        pytest.param(
            "def f(x): return x\n",
            Target(0, 18, "function", "f", "python"),
            SUMMARY,
            f"# {SUMMARY}\ndef f(x): return x\n",
            id="python-one-line-def",
        ),
        pytest.param(
            "x = 1\ny = 2\n",
            Target(6, 11, "selection", None, "python"),
            SUMMARY,
            f"x = 1\n# {SUMMARY}\ny = 2\n",
            id="python-selection",
        ),
        pytest.param(
            JS,
            JS_FUNCTION,
            "Doubles each value.\n\n@param values numbers",
            JS.replace(
                "function",
                "/**\n * Doubles each value.\n *\n * @param values numbers\n */\nfunction",
            ),
            id="javascript",
        ),
        pytest.param(
            GO,
            GO_FUNCTION,
            "Returns the area of a rectangle.",
            GO.replace("func", "// Area returns the area of a rectangle.\nfunc"),
            id="go-starts-with-the-name",
        ),
        pytest.param(
            GO,
            GO_FUNCTION,
            "This function computes the area.",
            GO.replace("func", "// Area computes the area.\nfunc"),
            id="go-this-function",
        ),
        pytest.param(
            RUST,
            RUST_METHOD,
            "Returns the area.",
            RUST.replace("    fn", "    /// Returns the area.\n    fn"),
            id="rust-method",
        ),
    ],
)
def test_document_edit(text, target, answer, expected):
    edit = document_edit(text, target, answer)
    assert edit is not None
    assert apply(text, edit) == expected


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param('Say "hi"', id="ends-with-quote"),
        pytest.param('Uses """ and \\n inside.', id="triple-quotes-and-backslash"),
        pytest.param(DETAILED + " " + "very " * 30, id="long"),
    ],
)
def test_python_docstrings_parse(answer):
    new = apply(PY_CLASS, document_edit(PY_CLASS, PY_METHOD, answer))
    method = ast.parse(new).body[0].body[0]
    assert isinstance(method, ast.FunctionDef)
    assert ast.get_docstring(method, clean=False).split()[0] == answer.split()[0]


PY_TESTS = "```python\nimport pytest\n\n\ndef test_scale():\n    assert Shape().scale(2)\n```"


@pytest.mark.parametrize(
    ("text", "target", "answer", "expected"),
    [
        pytest.param(
            PY_CLASS + "\n\nx = 1\n",
            PY_METHOD,
            PY_TESTS,
            PY_CLASS + "\n\nimport pytest\n\n\ndef test_scale():\n"
            "    assert Shape().scale(2)\n\n\nx = 1\n",
            id="python-after-class",
        ),
        pytest.param(
            PY_CLASS + "x = 1\n",
            PY_METHOD,
            PY_TESTS,
            PY_CLASS + "\n\nimport pytest\n\n\ndef test_scale():\n"
            "    assert Shape().scale(2)\n\n\nx = 1\n",
            id="python-next-line-busy",
        ),
        pytest.param(
            "def f():\n    return 1",
            Target(0, 21, "function", "f", "python"),
            "def test_f():\n    assert f() == 1",
            "def f():\n    return 1\n\n\ndef test_f():\n    assert f() == 1\n",
            id="python-no-newline-at-end",
        ),
        pytest.param(
            JS,
            JS_FUNCTION,
            "Here are the tests:\n```javascript\ntest('doubles', () => {"
            "\n  expect(double([1])).toEqual([2]);\n});\n```",
            JS + "\ntest('doubles', () => {\n  expect(double([1])).toEqual([2]);\n});\n",
            id="javascript",
        ),
        pytest.param(
            GO,
            GO_FUNCTION,
            '```go\npackage shapes\n\nimport (\n\t"testing"\n)\n\n'
            "func TestArea(t *testing.T) {\n\tif Area(2, 3) != 6 {\n\t\tt.Fail()\n\t}\n}"
            "\n```",
            GO + "\nfunc TestArea(t *testing.T) {\n\tif Area(2, 3) != 6 {\n\t\tt.Fail()\n\t}\n}\n",
            id="go-without-package-and-imports",
        ),
        pytest.param(
            RUST,
            RUST_METHOD,
            "```rust\n#[cfg(test)]\nmod tests {\n    use super::*;\n}\n```",
            RUST + "\n#[cfg(test)]\nmod tests {\n    use super::*;\n}\n",
            id="rust-after-impl",
        ),
    ],
)
def test_add_tests(text, target, answer, expected):
    edit = add_tests(text, target, answer)
    assert edit is not None and edit.start == edit.end
    assert apply(text, edit) == expected


def test_tests_for_a_selection_inside_a_function_go_after_the_function():
    text = "def f():\n    x = 1\n    return x\n\n\ny = 2\n"
    target = target_in(text, "x = 1", "selection", None, "python")
    new = apply(text, add_tests(text, target, "def test_f():\n    assert f() == 1"))
    assert new == (
        "def f():\n    x = 1\n    return x\n\n\ndef test_f():\n    assert f() == 1\n\n\ny = 2\n"
    )
    ast.parse(new)


def test_tests_edit_without_code_is_none():
    assert add_tests(PY_CLASS, PY_METHOD, "I cannot write tests for this.") is None


# --------------------------------------------------------------------------- well-formed files

SAMPLES = {
    "python": PY_SHAPES,
    "javascript": """import fs from "node:fs";

export class Store {
  constructor(path) {
    this.path = path;
  }

  load() {
    return JSON.parse(fs.readFileSync(this.path, "utf8"));
  }
}

const twice = (x) => {
  return x * 2;
};
console.log(twice(2));
""",
    "go": """package store

import "os"

// Store keeps data on disk.
type Store struct {
	path string
}

func (s *Store) Load() ([]byte, error) {
	return os.ReadFile(s.path)
}

func Twice(x int) int {
	return x * 2
}
""",
    "rust": """use std::fs;

#[derive(Debug)]
pub struct Store {
    path: String,
}

impl Store {
    pub fn load(&self) -> String {
        fs::read_to_string(&self.path).unwrap()
    }
}

pub trait Twice {
    fn twice(&self) -> u32;
}

fn twice(x: u32) -> u32 {
    x * 2
}
""",
}
COMMENT = {"python": "#", "javascript": "//", "go": "//", "rust": "//"}
TESTS = {
    "python": "```python\ndef test_it():\n    assert True\n```",
    "javascript": "```js\ntest('it', () => {\n  expect(1).toBe(1);\n});\n```",
    "go": '```go\npackage store\n\nimport "testing"\n\nfunc TestIt(t *testing.T) {}\n```',
    "rust": "```rust\n#[cfg(test)]\nmod tests {\n    #[test]\n    fn it() {}\n}\n```",
}
PROSE = (
    'Sure! Here is the explanation:\n\nIt **does** things: */ --> "quoted" and a \\ '
    "backslash, with a line long enough to be wrapped at least once or twice over.\n\n"
    '- one item\n- another "item"'
)


def parses(text: str, language: str) -> bool:
    from tree_sitter_language_pack import get_parser

    if language == "python":
        ast.parse(text)
    return not get_parser(language).parse(text.encode()).root_node.has_error


@pytest.mark.parametrize("language", list(SAMPLES))
def test_every_edit_at_every_line_leaves_the_file_well_formed(language):
    text = SAMPLES[language]
    assert parses(text, language)
    offset = 0
    for line in text.split("\n")[:-1]:
        cursor = offset + len(line) - len(line.lstrip())
        offset += len(line) + 1
        target = find_target(text, cursor, cursor, language=language)
        assert target is not None
        code = text[target.start : target.end]
        fixed = f"```\n{code}\n{COMMENT[language]} checked\n```"
        for edit in (
            explain_edit(text, target, PROSE),
            document_edit(text, target, PROSE),
            fix_edit(text, target, fixed),
            add_tests(text, target, TESTS[language]),
        ):
            assert edit is not None
            new = apply(text, edit)
            assert parses(new, language), (line, target, new)
            assert "```" not in new and "Sure" not in new


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        pytest.param("Returns the area.", "Returns the area.", id="prose"),
        pytest.param(
            '```python\ndef area(r):\n    """Returns the area."""\n    return r\n```',
            "Returns the area.",
            id="docstring-inside-code",
        ),
        pytest.param(
            "```rust\n/// Computes the area.\n/// Fast.\nfn area() {}\n```",
            "Computes the area. Fast.",
            id="doc-lines-inside-code",
        ),
        pytest.param(
            "```js\n/**\n * Doubles values.\n */\nfunction f() {}\n```",
            "Doubles values.",
            id="jsdoc-inside-code",
        ),
        pytest.param("```python\ndef area(r):\n    return r\n```", "", id="code-without-docs"),
    ],
)
def test_extract_documentation_finds_docs_written_into_code(answer, expected):
    assert extract_documentation(answer) == expected


def test_a_selected_identifier_counts_as_the_cursor():
    from cl_lsp.actions.jobs import offer

    text = "def area(w, h):\n    total = w * h\n    return total\n"
    word = text.index("total")
    kwargs = {"uri": "file:///a.py", "version": 1, "language": "python"}
    (explain, *_) = [
        r for r in offer(text, word, word + len("total"), **kwargs) if r.kind is ActionKind.EXPLAIN
    ]
    (at_cursor, *_) = [r for r in offer(text, word, word, **kwargs) if r.kind is ActionKind.EXPLAIN]
    assert explain.title == at_cursor.title and explain.target_kind != "selection"
    assert (explain.start, explain.end) == (at_cursor.start, at_cursor.end)
    # A real selection (more than one word) stays a selection.
    (chosen, *_) = [
        r
        for r in offer(text, word, word + len("total = w"), **kwargs)
        if r.kind is ActionKind.EXPLAIN
    ]
    assert chosen.target_kind == "selection"
