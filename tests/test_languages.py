"""Tests for cl_lsp.languages: one registry, no other table, a language added in one record."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from cl_lsp import languages, syntax
from cl_lsp.actions import Target, document_edit, explain_edit, instruction
from cl_lsp.actions.instruction import ActionKind
from cl_lsp.completion.context import CompletionMode, extract_context
from cl_lsp.languages import language_for

PACKAGE = Path(languages.__file__).parent
GRAMMARS = {lang.grammar for lang in languages.LANGUAGES}


def _literal_strings(node: ast.AST) -> set[str]:
    """The string constants a dict's keys, a set's or a sequence's elements hold."""
    if isinstance(node, ast.Dict):
        items = [k for k in node.keys if k is not None]
    elif isinstance(node, (ast.Set, ast.Tuple, ast.List)):
        items = node.elts
    elif isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("set", "frozenset"):
        return set().union(*(_literal_strings(a) for a in node.args))
    else:
        return set()
    return {i.value for i in items if isinstance(i, ast.Constant) and isinstance(i.value, str)}


def _module_tables(path: Path) -> list[tuple[int, set[str]]]:
    found = []
    for statement in ast.parse(path.read_text()).body:
        if isinstance(statement, (ast.Assign, ast.AnnAssign)) and statement.value is not None:
            names = _literal_strings(statement.value) & GRAMMARS
            # A sequence naming one grammar in passing ("markdown" among prose fence tags) is
            # not a language table; a dict keyed by one, or a set holding one, is.
            one_is_enough = not isinstance(statement.value, (ast.Tuple, ast.List))
            if len(names) >= (1 if one_is_enough else 2):
                found.append((statement.lineno, names))
    return found


@pytest.mark.parametrize(
    "path",
    [p for p in sorted(PACKAGE.rglob("*.py")) if p.name != "languages.py"],
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_no_module_keeps_its_own_language_table(path: Path) -> None:
    assert _module_tables(path) == []


def test_the_check_finds_a_table() -> None:
    tree = ast.parse('NAMES = {"python": "Python"}\nQUOTES = frozenset({"rust"})\n')
    assert [_literal_strings(s.value) for s in tree.body] == [{"python"}, {"rust"}]


def test_lsp_ids_extensions_and_file_names_name_one_language_each() -> None:
    ids = [i for lang in languages.LANGUAGES for i in lang.lsp_ids]
    extensions = [e for lang in languages.LANGUAGES for e in lang.extensions]
    assert len(ids) == len(set(ids)) and len(extensions) == len(set(extensions))
    assert len(GRAMMARS) == len(languages.LANGUAGES)


def test_unknown_grammars_get_the_defaults() -> None:
    assert languages.lexicon_for("no-such-grammar") == languages.C_LIKE
    assert languages.lexicon_for(None) == languages.PLAIN
    assert languages.comment_style(None) == ("#", None)
    assert languages.comment_style("no-such-grammar") == ("//", None)
    assert languages.get("no-such-grammar").name == "No-such-grammar"


# --------------------------------------------------------------------------- a new language

# Fortran is known only by its record in languages.py: grammar, extensions, comments and the
# headers that open a program unit's body.


def test_the_new_language_is_named_in_one_file_only() -> None:
    holders = [p.name for p in PACKAGE.rglob("*.py") if "fortran" in p.read_text().lower()]
    assert holders == ["languages.py"]


def test_the_new_language_gets_its_grammar() -> None:
    assert language_for("fortran", None) == "fortran"
    assert language_for(None, "/src/solver.f90") == "fortran"
    assert languages.parser_for("fortran") is not None


def _context(document: str):
    offset = document.index("█")
    text = document.replace("█", "")
    return extract_context(
        text, offset, language_id="fortran", path=None, count_tokens=lambda s: len(s) // 4 + 1
    )


def test_the_new_language_gets_its_block_openers() -> None:
    c = _context("program demo\n  implicit none\ncontains\n  subroutine greet(name)█\n")
    assert c.language == "fortran"
    assert (c.mode, c.reason) == (CompletionMode.MULTI_LINE, "after block opener 'subroutine'")
    c = _context("program demo\n  call greet(name)█\nend program demo\n")
    assert c.mode is CompletionMode.SINGLE_LINE
    assert syntax.block_opener("end subroutine greet", "fortran") is None


def test_the_new_language_gets_syntax_checks() -> None:
    prefix = "program demo\n  integer :: x\n  x = 1\n  "
    suffix = "\nend program demo\n"
    assert syntax.added_errors(prefix, "x = x + 1", suffix, "fortran") == 0
    assert syntax.added_errors(prefix, "x = (x + 1", suffix, "fortran") == 1


def test_the_new_language_gets_its_comments_in_actions() -> None:
    text = "program demo\n  integer :: x\n  x = 1\nend program demo\n"
    target = Target(text.index("x = 1"), text.index("x = 1") + 5, "block", None, "fortran")
    explained = explain_edit(text, target, "Sets x to one.")
    assert explained is not None and explained.new_text == "  ! Sets x to one.\n"
    documented = document_edit(text, target, "Sets x to one.")
    assert documented is not None and documented.new_text == "  ! Sets x to one.\n"
    told = instruction(
        ActionKind.EXPLAIN, text, target, path="demo.f90", count_tokens=len, budget=4000
    )
    assert "expert Fortran programmer" in told.system
    assert "```fortran\n" in told.user and "! ... the code shown below ..." in told.user
