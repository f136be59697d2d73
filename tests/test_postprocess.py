"""Minimal clean-up of raw model text (each filter, then the whole chain)."""

from __future__ import annotations

import pytest

from cl_lsp.postprocess import (
    FilterInput,
    clean_completion,
    strip_control_tokens,
    trim_suffix_overlap,
)


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
        pytest.param("b + c)", ")\n", True, "b + c", id="rest-of-line-rewritten"),
        pytest.param("b + c", ")\n", True, "b + c", id="no-overlap"),
        pytest.param("    x = 1\n    return x\n", "\n    return x\n", False, "    x = 1",
                     id="next-line-rewritten"),
        pytest.param("    x = 1\n    y = 2", "\n    return x\n", False, "    x = 1\n    y = 2",
                     id="multi-line-no-overlap"),
        pytest.param("    if a:\n        pass\n}", "\n}\n", False, "    if a:\n        pass\n}",
                     id="short-lines-are-not-matched"),
    ],
)
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
)
def test_clean_completion(raw, suffix, single, expected):
    assert clean_completion(raw, prefix="", suffix=suffix, single_line=single) == expected


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
        pytest.param("\tif a:\n\t\t", "b()\n\t\tc()\n\td()\n", "b()\n\t\tc()", id="tabs"),
    ],
)
def test_end_of_block_cut(prefix, text, expected):
    from cl_lsp.postprocess import end_of_block_cut

    cut = end_of_block_cut(text, prefix)
    assert (None if cut is None else text[:cut]) == expected
