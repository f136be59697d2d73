"""Tests for cl_lsp.brackets: brackets outside strings and comments, matched like a reader."""

import pytest

from cl_lsp import brackets, languages


@pytest.mark.parametrize(
    ("language", "text", "demand", "residual", "mode"),
    [
        pytest.param("c", "a) + b[0]] /* ( */ { // )\n", ")]", "{", None, id="c-comments"),
        pytest.param("javascript", "x = `(${a}` + ')' + \"[\"", "", "", None,
                     id="javascript-strings"),
        pytest.param("python", '"""(\n"""] # )', "]", "", "#", id="python-docstring"),
        pytest.param("python", "f('(", "", "(", "'", id="python-open-string"),
        pytest.param("rust", "fn f<'a>(x: &'a str) -> char { '}' ", "", "{", None,
                     id="rust-lifetimes-and-chars"),
        pytest.param("go", "s := \"http://x\" // a // b )\n)", ")", "", None,
                     id="go-line-comment-until-newline"),
        pytest.param("bash", "case $x in a) echo ;; esac }", "}", "", None,
                     id="bash-parentheses-not-counted"),
        pytest.param(None, "it's (fine", "", "(", None, id="no-grammar-apostrophe"),
    ],
)  # fmt: skip
def test_bracket_effect(language, text, demand, residual, mode):
    effect = brackets.bracket_effect(text, languages.lexicon_for(language), None)
    assert "".join(effect.demand) == demand
    assert "".join(effect.residual) == residual
    assert effect.mode == mode


def test_apply_effect_matches_closers_like_a_reader():
    effect = brackets.bracket_effect(")}", languages.lexicon_for("c"), None)
    found = brackets.apply_effect(effect, ("{", "("))
    assert (found.errors, found.left, found.closed) == (0, 0, {0, 1})
    # `)` closes the `(` skipping the `{` above it, then `}` matches nothing open: two errors.
    found = brackets.apply_effect(effect, ("(", "{"))
    assert (found.errors, found.left, found.closed) == (2, 0, {0})
    found = brackets.apply_effect(effect, ("(",))  # `}` matches nothing open
    assert (found.errors, found.left, found.closed) == (1, 0, {0})
    found = brackets.apply_effect(effect, ("[", "{", "("))
    assert (found.errors, found.left, found.closed) == (0, 1, {1, 2})
    # The `(` a hole's middle would have closed: the suffix's `}` skips it.
    effect = brackets.bracket_effect("\n  x++;\n}", languages.lexicon_for("c"), None)
    found = brackets.apply_effect(effect, ("{", "("))
    assert (found.errors, found.left, found.closed) == (1, 0, {0})
