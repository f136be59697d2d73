"""Post-processing: each filter on tables and golden fixtures, the whole chain, and a property
test over arbitrary input (see tests/fixtures/postprocess/README.md for the fixture format)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cl_lsp.completion import postprocess
from cl_lsp.completion.context import CompletionMode, extract_context
from cl_lsp.completion.postprocess import (
    FILTERS,
    Cleaned,
    FilterInput,
    clean_completion,
    end_of_block_cut,
    strip_control_tokens,
    trim_suffix_overlap,
)

FIXTURES = Path(__file__).parent / "fixtures" / "postprocess"
CURSOR = "█"
TAB = "⇥"


# --------------------------------------------------------------------------- fixtures


@dataclass
class Case:
    file: str
    name: str
    scalars: dict[str, str] = field(default_factory=dict)
    sections: dict[str, str] = field(default_factory=dict)

    @property
    def ctx(self) -> FilterInput:
        document = self.sections["document"] + "\n"
        assert document.count(CURSOR) == 1, f"{self.name}: one {CURSOR} expected"
        prefix, suffix = document.split(CURSOR)
        mode = self.scalars.get("mode", "multi")
        assert mode in ("single", "multi"), f"{self.name}: mode is single or multi"
        truncated = self.scalars.get("stop", "eot") in ("max_tokens", "timeout")
        return FilterInput(
            prefix, suffix, mode == "single", self.scalars.get("language"), truncated
        )


def load_cases(path: Path) -> list[Case]:
    """Cases of one fixture file: `=== name`, `key: value` lines, `--- section` blocks."""
    cases: list[Case] = []
    section: list[str] | None = None
    for line in path.read_text(encoding="utf-8").split("\n"):
        if line.startswith("=== "):
            cases.append(Case(path.stem, line[4:].strip()))
            section = None
        elif not cases:
            continue  # comments before the first case
        elif line.startswith("--- "):
            section = []
            cases[-1].sections[line[4:].strip()] = section  # type: ignore[assignment]
        elif section is not None:
            section.append(line)
        elif line.strip():
            key, sep, value = line.partition(":")
            assert sep, f"{path.name}: {line!r} is neither `key: value` nor a section"
            cases[-1].scalars[key.strip()] = value.strip()
    for case in cases:
        for key, lines in list(case.sections.items()):
            while lines and not lines[-1].strip():
                lines.pop()
            case.sections[key] = "\n".join(lines).replace(TAB, "\t")  # type: ignore[arg-type]
    return cases


FIXTURE_FILES = sorted(FIXTURES.glob("*.txt"))
CASES = [case for path in FIXTURE_FILES for case in load_cases(path)]


def test_every_filter_has_a_fixture_file():
    names = {path.stem for path in FIXTURE_FILES}
    wanted = {step.__name__ for step in FILTERS} | {"auto_closed_span", "clean_completion"}
    assert wanted == names


def test_fixtures_cover_the_main_languages():
    languages = {case.scalars.get("language") for case in CASES}
    assert {"python", "javascript", "typescript", "go", "rust", "c", None} <= languages


@pytest.mark.parametrize("case", CASES, ids=[f"{c.file}:{c.name}" for c in CASES])
def test_golden(case: Case):
    ctx = case.ctx
    raw = case.sections["raw"]
    if case.file == "auto_closed_span":
        assert postprocess.auto_closed_span(raw, ctx) == int(case.scalars["replace_after"])
        return
    expected = case.sections["expected"]
    if case.file == "clean_completion":
        got = clean_completion(
            raw,
            prefix=ctx.prefix,
            suffix=ctx.suffix,
            single_line=ctx.single_line,
            language=ctx.language,
            truncated=ctx.truncated,
        )
        assert got.text == expected
        if "replace_after" in case.scalars:
            assert got.replace_after == int(case.scalars["replace_after"])
        if "dropped_by" in case.scalars:
            assert got.dropped_by == case.scalars["dropped_by"]
        return
    assert getattr(postprocess, case.file)(raw, ctx) == expected


# --------------------------------------------------------------------------- tables


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("return x <EOT>", "return x", id="spelled-eot"),
        pytest.param("x = 1\n\n<EOT>\nnoise", "x = 1\n", id="eot-on-its-own-line"),
        pytest.param("a</s>b", "a", id="eos-text"),
        pytest.param("plain", "plain", id="nothing-to-strip"),
    ],
)
def test_strip_control_tokens(raw, expected):
    assert strip_control_tokens(raw, FilterInput("", "", False)) == expected


@pytest.mark.parametrize(
    ("raw", "suffix", "single", "expected"),
    [
        # An auto-closed rest of line is typed over (Cleaned.replace_after), not trimmed.
        pytest.param("b + c)", ")\n", True, "b + c)", id="auto-closed-rest-kept"),
        pytest.param("b + c, d)", ", d)\n", True, "b + c", id="rest-of-line-rewritten"),
        pytest.param("b + c", ")\n", True, "b + c", id="no-overlap"),
        pytest.param(
            "    x = 1\n    return x\n", "\n    return x\n", False, "    x = 1",
            id="next-line-rewritten",
        ),
        pytest.param(
            "    x = 1\n    y = 2", "\n    return x\n", False, "    x = 1\n    y = 2",
            id="multi-line-no-overlap",
        ),
        pytest.param(
            "    if a:\n        pass\n}", "\n}\n", False, "    if a:\n        pass\n}",
            id="short-lines-are-not-matched",
        ),
    ],
)  # fmt: skip
def test_trim_suffix_overlap(raw, suffix, single, expected):
    assert trim_suffix_overlap(raw, FilterInput("", suffix, single)) == expected


@pytest.mark.parametrize(
    ("raw", "suffix", "single", "expected"),
    [
        pytest.param(" total += x\n    return total", "\n", True, " total += x",
                     id="single-line-cut"),
        pytest.param("\nprint(x)", "", True, "", id="single-line-starting-with-newline"),
        pytest.param("   \n\n  ", "", False, "", id="blank-dropped"),
        pytest.param("<EOT>", "", False, "", id="only-control"),
        pytest.param("    return a + b\n\n\n", "\n\ndef g():\n    pass\n", False,
                     "    return a + b", id="trailing-newlines-trimmed"),
        pytest.param("fib(n - 1) + fib(n - 2)\n", "\n", False, "fib(n - 1) + fib(n - 2)",
                     id="multi-line-kept"),
    ],
)  # fmt: skip
def test_clean_completion(raw, suffix, single, expected):
    got = clean_completion(raw, prefix="", suffix=suffix, single_line=single)
    assert isinstance(got, Cleaned)
    assert got.text == expected


@pytest.mark.parametrize(
    ("raw", "language", "dropped_by"),
    [
        pytest.param("", None, None, id="empty-raw"),
        pytest.param("<EOT>", None, "strip_control_tokens", id="control-only"),
        pytest.param("\nx", None, "cut_single_line", id="newline-first"),
        pytest.param(")", "python", "balance_brackets", id="closer-of-nothing"),
        # Without a grammar a closer of nothing may be prose (`1)`): not an error.
        pytest.param(")", None, "drop_trivial", id="closer-of-nothing-no-grammar"),
        pytest.param(";", None, "drop_trivial", id="separator"),
    ],
)
def test_dropped_by_names_the_filter(raw, language, dropped_by):
    got = clean_completion(raw, prefix="x = 1", suffix="\n", single_line=True, language=language)
    assert got == Cleaned("", 0, dropped_by)


@pytest.mark.parametrize(
    ("document", "raw", "language", "expected"),
    [
        pytest.param("█\n", "1) first\n2) second", None, "1) first\n2) second",
                     id="prose-list-without-grammar"),
        pytest.param("const A = () => (\n  █\n);\n", "<p>Don't panic</p>", "javascript",
                     "<p>Don't panic</p>", id="apostrophe-in-jsx-text"),
        pytest.param("def f():\n    █\n", "x = 1\n    s = 'abc", "python", "x = 1",
                     id="string-left-open-at-the-end"),
    ],
)  # fmt: skip
def test_balance_brackets_and_prose(document, raw, language, expected):
    prefix, suffix = document.split(CURSOR)
    ctx = FilterInput(prefix, suffix, False, language)
    assert postprocess.balance_brackets(raw, ctx) == expected


def test_language_is_optional_and_keyword_only():
    got = clean_completion("1", prefix="x = ", suffix="\n", single_line=True)
    assert got == Cleaned("1")
    with pytest.raises(TypeError):
        clean_completion("1", "x = ", "\n", True)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("prefix", "text", "expected"),
    [
        pytest.param("def f(xs):\n    total = 0\n    ", "for x in xs:\n        total += x\n"
                     "    return total\n\ndef g():\n    pass\n",
                     "for x in xs:\n        total += x\n    return total\n", id="python-next-def"),
        pytest.param("def f(x):", "\n    return x\n\nprint(f(1))\n", "\n    return x\n",
                     id="after-opener"),
        pytest.param("if (a) {", "\n    b();\n}\nc();\n", "\n    b();", id="brace-block"),
        pytest.param("    ", "x = 1\n    y = 2\n", None, id="still-inside"),
        pytest.param("x = ", "1\ny = 2\n", None, id="top-level-never-ends"),
        pytest.param("\tif a:\n\t\t", "b()\n\t\tc()\nd()\n", "b()\n\t\tc()", id="tabs"),
    ],
)  # fmt: skip
def test_end_of_block_cut(prefix, text, expected):
    cut = end_of_block_cut(text, prefix)
    assert (None if cut is None else text[:cut]) == expected


@pytest.mark.parametrize(
    ("prefix", "text", "suffix", "expected"),
    [
        pytest.param("def f(xs):\n    for x in xs:\n        ", "y = x\n    total = y\n",
                     "\n    return total\n", None, id="finishes-the-loop-before-the-last-line"),
        pytest.param("def f(xs):\n    for x in xs:\n        ", "y = x\nprint(y)\n",
                     "\n    return total\n", "y = x", id="below-the-following-code"),
        pytest.param("def f(xs):\n    for x in xs:\n        ", "y = x\n    return y\n", "",
                     None, id="end-of-document-finishes-the-function"),
        pytest.param("def f(xs):\n    for x in xs:\n        ", "y = x\nf([])\n", "",
                     "y = x", id="end-of-document-never-column-0"),
        pytest.param("class A:\n    def f(self):\n        ", "pass\n\n    def g(self):\n",
                     "\n    def h(self):\n        pass\n", "pass\n", id="next-definition"),
    ],
)  # fmt: skip
def test_end_of_block_cut_follows_the_code_after_the_suggestion(prefix, text, suffix, expected):
    cut = end_of_block_cut(text, prefix, suffix)
    assert (None if cut is None else text[:cut]) == expected


# --------------------------------------------------------------------------- property

_CODE = st.text(
    alphabet=st.sampled_from(list("ab x_1(){}[]<>\"'`#/*\\;:,.=+-\n\t    ")) | st.characters(),
    max_size=60,
)
_RAW = st.lists(
    st.one_of(_CODE, st.sampled_from(["<EOT>", "</s>", "\n    ", "\n}", "end", ")"])),
    max_size=6,
).map("".join)


def _norm(line: str) -> str:
    return line.strip()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    raw=_RAW,
    prefix=_CODE,
    suffix=_CODE,
    single_line=st.booleans(),
    language=st.sampled_from([None, "python", "javascript", "go", "rust", "c", "lua", "bash"]),
)
def test_filters_only_cut_the_raw_text(raw, prefix, suffix, single_line, language):
    """The chain never raises and only ever *cuts* the model's text.

    Precisely: with R = raw.split("\\n") and T = text.split("\\n") (text = the result, "" when
    dropped), after undoing indentation normalisation and whitespace trimming by comparing
    lines stripped of leading and trailing whitespace: len(T) <= len(R); T[i] == R[i] for every
    line but the last of T; and T's last line is a prefix of R's line at that index (a line may
    be cut, never edited), but for the line break (and indentation) that ends whole lines
    written above the cursor's line (postprocess.lines_above). Also, replace_after only covers auto-closed characters right after
    the cursor: 0 <= replace_after and suffix[:replace_after] is made of `)]}"'` and backticks.
    """
    got = clean_completion(
        raw, prefix=prefix, suffix=suffix, single_line=single_line, language=language
    )
    assert got.replace_after >= 0
    assert set(suffix[: got.replace_after]) <= set(")]}\"'`")
    assert len(suffix) >= got.replace_after
    if not got.text:
        assert got.replace_after == 0
        return
    if single_line:
        assert "\n" not in got.text
    text = got.text
    indent = postprocess.lines_above(FilterInput(prefix, suffix, single_line, language))
    if indent is not None and text.endswith("\n" + indent):
        text = text[: -len(indent) - 1]  # whole lines above the cursor's: the break is added
        assert got.replace_after == 0
    _assert_cut_of(text, raw)


def _assert_cut_of(text: str, raw: str) -> None:
    raw_lines, lines = raw.split("\n"), text.split("\n")
    assert len(lines) <= len(raw_lines)
    for mine, theirs in zip(lines[:-1], raw_lines):
        assert _norm(mine) == _norm(theirs)
    assert _norm(raw_lines[len(lines) - 1]).startswith(_norm(lines[-1]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    raw=_RAW,
    prefix=_CODE,
    suffix=_CODE,
    single_line=st.booleans(),
    language=st.sampled_from([None, "python", "typescript", "go", "rust", "c"]),
)
def test_each_filter_alone_only_cuts(raw, prefix, suffix, single_line, language):
    """Every filter of FILTERS, applied alone to any text, returns a cut of it in the sense of
    test_filters_only_cut_the_raw_text; auto_closed_span stays within the auto-closed run."""
    ctx = FilterInput(prefix, suffix, single_line, language)
    for step in FILTERS:
        _assert_cut_of(step(raw, ctx), raw)
    span = postprocess.auto_closed_span(raw, ctx)
    assert 0 <= span <= len(suffix)
    assert set(suffix[:span]) <= set(")]}\"'`")


@pytest.mark.parametrize(
    ("document", "suggestion", "language", "span"),
    [
        pytest.param("print(█)\n", '"hi")', "python", 1, id="types-over-the-paren"),
        pytest.param('f("█")\n', 'a")', "javascript", 2, id="types-over-quote-and-paren"),
        pytest.param("print(█)\n", '"hi"', "python", 0, id="leaves-the-paren"),
        pytest.param("x = █\n", "1", "python", 0, id="nothing-after-the-cursor"),
    ],
)  # fmt: skip
def test_replace_span_measures_the_document_as_it_is(document, suggestion, language, span):
    from cl_lsp.completion.pipeline import replace_span

    offset = document.index(CURSOR)
    text = document.replace(CURSOR, "")
    assert replace_span(text, offset, suggestion, language) == span


def test_the_item_range_covers_the_auto_closed_characters_in_utf16():
    from cl_lsp.lsp.documents import Document
    from cl_lsp.lsp.server import ClLanguageServer

    server = ClLanguageServer()
    text = 'x = 1\nprint("😀", f(""))\n'
    offset = text.index('""))') + 1  # f("|")
    document = Document("file:///a.py", text, 1, "python")
    # The suggestion types the `")` after the cursor: the range ends after them, counted in
    # UTF-16 code units (the emoji is two).
    end = server.replaced_end(document, offset, 'b")')
    assert (end.line, end.character) == (1, len('print("😀", f("') + 1 + 2)
    assert server.replaced_end(document, offset, "b") is None


# --------------------------------------------------------------------------- correct code kept
# The reproductions of what cost correct code on HumanEval infilling (issue 13): each raw text
# is the right middle (sometimes with the model's usual overrun), and the suggestion must keep
# all of it, or exactly what the document needs.


@pytest.mark.parametrize(
    ("document", "raw", "stop", "expected"),
    [
        pytest.param("def f(x):\n█    return y\n", "    y = x + 1\n", "eot",
                     "    y = x + 1\n", id="column-0-whole-line-keeps-its-line-break"),
        pytest.param("def f(x):\n    █return y\n", "y = x + 1\n    return y\n", "eot",
                     "y = x + 1\n    ", id="indentation-cursor-doubled-last-line-caught"),
        pytest.param("def f(x):\n    █return y\n", "y = x + 1\n    z = y", "eot",
                     "y = x + 1\n    z = y\n    ", id="indentation-cursor-lines-above"),
        pytest.param("def f():\n    d = {\n        █\n    return d\n",
                     "'a': 1,\n        'b': 2,\n    }\n", "eot",
                     "'a': 1,\n        'b': 2,\n    }", id="dict-closer-the-document-needs-kept"),
        pytest.param("def f():\n    d = {\n        'a': 1,\n█\n    return d\n", "    }\n", "eot",
                     "    }", id="lone-closer-the-document-needs-kept"),
        pytest.param("def f(xs):\n  total = 0\n  █\n  return total\n",
                     "for x in xs:\n    total += x\n", "eot",
                     "for x in xs:\n    total += x", id="two-space-block-kept-as-written"),
        pytest.param("def f(xs):\n    for x in xs:\n        print(x)\n    for y in xs:\n"
                     "        print(y)\n    █\n    if xs:\n      return 1\n    return 0\n",
                     "if not xs:\n      return 0\n", "eot", "if not xs:\n      return 0",
                     id="two-space-block-in-a-four-space-file-kept-as-its-neighbours"),
        pytest.param("def f(a, b):\n    █\n    return b\n",
                     "if a:\n        b = 1\n    return b\n", "eot",
                     "if a:\n        b = 1", id="suffix-copy-trimmed"),
        pytest.param("def f(a, b):\n    █\n    return b\n",
                     "if a:\n        return b\n    b = 2\n", "eot",
                     "if a:\n        return b\n    b = 2",
                     id="one-line-suffix-window-is-not-a-copy"),
        pytest.param("def f(x, y):\n    if x:\n        if y:\n█    return False\n",
                     "            return True\n        return False\n", "eot",
                     "            return True\n        return False\n",
                     id="a-line-like-the-suffix-in-another-block-is-not-a-copy"),
        pytest.param("def f(x):\n    if x:\n        y = █ + 1\n    return y\n",
                     "x * 2\n    else:\n        y = x", "eot", "x * 2\n    else:\n        y = x",
                     id="a-middle-that-ends-inside-a-later-line"),
        pytest.param("def f(x):\n    if x:\n        y = █ + 1\n    return y\n",
                     "x * 2 + 1\n    return y\n", "eot", "x * 2",
                     id="a-copy-of-the-rest-of-the-line-and-after-is-cut"),
        pytest.param("def f(x):\n    return █\n", "x + 1 if x > 0 el", "max_tokens", "",
                     id="max-tokens-half-word-never-shown-broken"),
        pytest.param("def f(x):\n    return █\n", "x + 1 if x > 0 else 0 if x < -5 el", "max_tokens",
                     "", id="max-tokens-syntax-error-never-shown"),
        pytest.param("def f(x):\n    return █\n", "x + 1  # the next val",
                     "max_tokens", "x + 1  # the next", id="max-tokens-complete-part"),
    ],
)  # fmt: skip
def test_correct_code_survives(document, raw, stop, expected):
    text = document.replace(CURSOR, "")
    context = extract_context(
        text,
        document.index(CURSOR),
        language_id="python",
        path=None,
        count_tokens=lambda s: len(s) // 4 + 1,
    )
    assert context.mode is not CompletionMode.NONE, context.reason
    got = clean_completion(
        raw,
        prefix=context.prefix,
        suffix=context.suffix,
        single_line=context.mode is CompletionMode.SINGLE_LINE,
        language=context.language,
        truncated=stop == "max_tokens",
    )
    assert got.text == expected


@pytest.mark.parametrize(
    ("prefix", "text", "suffix", "expected"),
    [
        pytest.param("def f(x):\n    ", "y = x\n    z = y\n    return z\n", "\n    z = y\n"
                     "    return z\n", "y = x", id="two-lines-copied"),
        pytest.param("def f(x):\n    ", "y = x\n    return z\n", "\n    return z\n    w = 1\n",
                     None, id="one-line-is-too-little"),
        pytest.param("def f(x):\n", "    y = x\n    return y\n    w = 1\n", "    return y\n"
                     "    w = 1\n", "    y = x", id="lines-above-the-cursor-line"),
    ],
)  # fmt: skip
def test_the_generation_stops_where_it_copies_the_code_after_the_cursor(
    prefix, text, suffix, expected
):
    cut = end_of_block_cut(text, prefix, suffix)
    assert (None if cut is None else text[:cut]) == expected
