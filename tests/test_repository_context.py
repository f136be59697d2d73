"""Repository context: definitions read with tree-sitter, the workspace index kept current, the
snippets chosen for a cursor within one budget (counted with the model's tokenizer), and the
block kept stable while the user types."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from test_repository_files import RULES, opened, workspace, write  # noqa: F401 (fixtures)
from tree_sitter_language_pack import get_parser

from cl_lsp.config import ContextSettings
from cl_lsp.repository.definitions import (
    IMPORTED,
    UNUSED_IMPORT,
    _members_folded,
    definition_snippets,
)
from cl_lsp.repository.files import FileRules, allowed
from cl_lsp.repository.index import RepositoryIndex
from cl_lsp.repository.selection import SHARES, fit, render
from cl_lsp.repository.service import RepositoryContext
from cl_lsp.repository.snippets import Cursor, Snippet
from cl_lsp.repository.tags import Import, file_tags


def built(root: Path) -> RepositoryIndex:
    """The index of the workspace folder `root`, built."""
    index = RepositoryIndex([root], FileRules())
    index.build()
    return index


def cursor_in(root: Path, name: str, *args) -> Cursor:
    """A cursor in the workspace file `name` (`Cursor`'s fields from `text` on)."""
    path = (root / name).resolve()
    return Cursor(path.as_uri(), path.as_posix(), *args)


def tags_of(grammar: str, source: str):
    return file_tags("f", source.encode(), grammar, get_parser(grammar))


# --------------------------------------------------------------------------- definitions

PYTHON = '''\
import os.path
from .parser import FeedParser, Policy as P
from . import utils

@cached
def parse(text, *, strict=False):
    """Parse text."""
    lines = text.split()
    total = 0
    for line in lines:
        total += len(line)
    return total

class Message(Base):
    """A message."""
    kind = "text"

    def get_payload(self, i=None):
        return self._payload[i]

    def set_payload(self, payload):
        self._payload = payload

LIMIT = 10
'''


def test_python_definitions_imports_and_snippets():
    tags = tags_of("python", PYTHON)
    found = {(d.name, d.kind, d.container) for d in tags.definitions}
    assert found == {
        ("parse", "function", None),
        ("Message", "class", None),
        ("get_payload", "method", "Message"),
        ("set_payload", "method", "Message"),
        ("LIMIT", "variable", None),
    }
    by_name = {d.name: d for d in tags.definitions}
    # A long function: decorator and signature, its body left out; locals are no definitions.
    assert by_name["parse"].snippet == "@cached\ndef parse(text, *, strict=False):\n    ...\n"
    assert (by_name["parse"].line, by_name["parse"].end_line) == (4, 12)
    # A class: its header and its members' first lines (not the docstring).
    assert by_name["Message"].snippet.split("\n")[:4] == [
        "class Message(Base):",
        '    kind = "text"',
        "    def get_payload(self, i=None):",
        "    def set_payload(self, payload):",
    ]
    # A member under its class's header line.
    assert by_name["get_payload"].snippet == (
        "class Message(Base):\n    def get_payload(self, i=None):\n        return self._payload[i]\n"
    )
    assert tags.imports == (
        Import("os", "os.path", None),
        Import("FeedParser", ".parser", "FeedParser"),
        Import("P", ".parser", "Policy"),
        Import("utils", ".", "utils"),
    )


@pytest.mark.parametrize(
    ("grammar", "source", "definitions", "imports"),
    [
        pytest.param(
            "javascript",
            'import React, { useState as use } from "react";\n'
            'const { join } = require("./paths");\nconst Cmd = require("../cmd.js");\n'
            "export function f(a) { return a; }\n"
            "class K extends B {\n  static params = [];\n  m(a) {\n    return a;\n  }\n}\n"
            "const g = async (x) => {\n  return x;\n};\n",
            {("f", "function", None), ("K", "class", None), ("params", "variable", "K"),
             ("m", "method", "K"), ("g", "variable", None)},
            [("React", "react", "default"), ("use", "react", "useState"),
             ("join", "./paths", "join"), ("Cmd", "../cmd.js", None)],
            id="javascript",
        ),
        pytest.param(
            "typescript",
            'import { A, B as C } from "./a";\n'
            "export interface Shape { area(): number; name: string }\n"
            "export type Id = string;\nexport enum Color { Red }\n"
            "export class Box implements Shape {\n  area(): number {\n    return 1;\n  }\n"
            '  name = "box";\n}\n',
            {("Shape", "type", None), ("area", "method", "Shape"), ("Id", "type", None),
             ("Color", "type", None), ("Box", "class", None), ("area", "method", "Box"),
             ("name", "variable", "Box")},
            [("A", "./a", "A"), ("C", "./a", "B")],
            id="typescript",
        ),
        pytest.param(
            "typescript",
            "declare class Builder<T = X> {\n  crawl(root?: string): Builder<T>;\n}\n"
            "declare function fdir(path: string): Builder;\ndeclare const VERSION: string;\n"
            "export { Builder, fdir };\n",
            {("Builder", "class", None), ("crawl", "method", "Builder"),
             ("fdir", "function", None), ("VERSION", "variable", None)},
            [],
            id="typescript declarations (.d.ts)",
        ),
        pytest.param(
            "go",
            'package main\nimport (\n  "fmt"\n  m "example.com/x/mathx"\n)\n'
            "type Point struct {\n  X int\n}\ntype Shape interface {\n  Area() float64\n}\n"
            "func Dist(a Point) int { return a.X }\nfunc (p *Point) Move() {}\nconst Max = 3\n",
            {("Point", "type", None), ("Shape", "type", None), ("Area", "method", "Shape"),
             ("Dist", "function", None), ("Move", "method", None), ("Max", "constant", None)},
            [("fmt", "fmt", None), ("m", "example.com/x/mathx", None)],
            id="go",
        ),
        pytest.param(
            "rust",
            "use std::io::{self, Read as R};\nuse crate::geo::point::Point;\n"
            "pub struct S { a: i32 }\ntrait T { fn f(&self); }\n"
            "impl T for S {\n    fn f(&self) {}\n}\npub fn g(a: i32) -> i32 { a }\n"
            "const C: i32 = 1;\nmacro_rules! mac { () => {} }\n",
            {("S", "type", None), ("T", "type", None), ("f", "method", "T"),
             ("f", "method", "S"), ("g", "function", None), ("C", "constant", None),
             ("mac", "macro", None)},
            [("R", "std::io", "Read"), ("Point", "crate::geo::point", "Point")],
            id="rust",
        ),
    ],
)  # fmt: skip
def test_definitions_and_imports_of_each_language(grammar, source, definitions, imports):
    tags = tags_of(grammar, source)
    assert {(d.name, d.kind, d.container) for d in tags.definitions} == definitions
    assert [(i.bound, i.module, i.name) for i in tags.imports] == imports
    for definition in tags.definitions:
        assert definition.snippet.endswith("\n") and definition.name in definition.snippet


def test_a_long_class_snippet_is_capped_and_bodies_are_elided():
    methods = "".join(f"    def m{i}(self):\n        return {i}\n\n" for i in range(40))
    tags = tags_of("python", "class Big:\n" + methods)
    big = next(d for d in tags.definitions if d.name == "Big")
    lines = big.snippet.rstrip("\n").split("\n")
    assert lines[0] == "class Big:" and lines[1] == "    def m0(self):"
    assert len(lines) <= 16 and lines[-1].strip() == "..."
    assert "return" not in big.snippet


# --------------------------------------------------------------------------- the index


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "shop"
    write(root, "shop/__init__.py", "")
    write(
        root,
        "shop/cart.py",
        "from .pricing import total_price, Discount\nfrom . import tax\n\n\n"
        "class Cart:\n    def __init__(self):\n        self.items = []\n\n"
        "    def add(self, item):\n        self.items.append(item)\n\n\n"
        "def checkout(cart):\n    price = total_price(cart.items)\n"
        "    price = tax.with_vat(price)\n    return price\n",
    )
    write(
        root,
        "shop/pricing.py",
        "class Discount:\n    def __init__(self, rate):\n        self.rate = rate\n\n"
        "    def apply(self, price):\n        return price * (1 - self.rate)\n\n\n"
        "def total_price(items, discount=None):\n    total = sum(i.price for i in items)\n"
        "    if discount:\n        total = discount.apply(total)\n    return total\n",
    )
    write(
        root, "shop/tax.py", "VAT = 0.2\n\n\ndef with_vat(price):\n    return price * (1 + VAT)\n"
    )
    write(root, "shop/shipping.py", "def ship_cost(weight, express=False):\n    return weight\n")
    write(root, "web/app.js", 'const { render } = require("./view");\nrender(1);\n')
    write(
        root,
        "web/view.js",
        "function render(page) {\n  return page;\n}\nmodule.exports = { render };\n",
    )
    write(root, "ignored/.gitignore", "*\n")
    write(root, "ignored/secret_algo.py", "def total_price():\n    pass\n")
    return root


def test_the_index_finds_definitions_across_files_and_resolves_imports(project):
    index = RepositoryIndex([project], FileRules())
    index.build()
    assert len(index) == 7 and not index.stats.full
    [total] = index.named("total_price")  # the ignored folder's one is not read
    assert total.path.endswith("shop/pricing.py") and total.line == 8
    cart = (project / "shop/cart.py").resolve().as_posix()
    pricing = (project / "shop/pricing.py").resolve().as_posix()
    tax = (project / "shop/tax.py").resolve().as_posix()
    assert index.module_files(cart, Import("Discount", ".pricing", "Discount")) == [pricing]
    assert tax in index.module_files(cart, Import("tax", ".", "tax"))
    app = (project / "web/app.js").resolve().as_posix()
    view = (project / "web/view.js").resolve().as_posix()
    assert index.module_files(app, Import("render", "./view", "render")) == [view]
    assert index.relative(pricing) == "shop/pricing.py"


def test_the_index_follows_edits_and_removals(project):
    index = RepositoryIndex([project], FileRules())
    index.build()
    tax = project / "shop/tax.py"
    assert index.update_text(tax, "def with_vat(price, rate):\n    return price\n")
    [vat] = index.named("with_vat")
    assert "rate" in vat.snippet and index.named("VAT") == []
    tax.unlink()
    index.update_file(tax)
    assert index.named("with_vat") == [] and len(index) == 6
    before = index.stats.definitions
    write(project, "shop/new.py", "def fresh():\n    return 1\n")
    index.update_file(project / "shop/new.py")
    assert [d.name for d in index.named("fresh")] == ["fresh"]
    assert index.stats.definitions == before + 1
    # A file outside the rules is never indexed, even when the editor has it open.
    assert not index.update_text(project / "ignored/secret_algo.py", "def x(): pass\n")


def test_the_index_stops_at_its_memory_cap_but_keeps_open_documents(tmp_path):
    root = tmp_path / "big"
    for i in range(30):
        write(
            root, f"m{i:02}.py", "".join(f"def f{i}_{j}(a, b):\n    return a\n" for j in range(20))
        )
    whole = RepositoryIndex([root], FileRules())
    whole.build()
    capped = RepositoryIndex([root], FileRules(), max_bytes=whole.stats.bytes // 3)
    capped.build()
    assert capped.stats.full and 0 < len(capped) < 30
    assert capped.stats.bytes <= whole.stats.bytes // 3
    assert capped.named("f29_0") == []
    assert capped.update_text(root / "m29.py", "def typed_now():\n    pass\n")
    assert capped.named("typed_now")  # an open document always gets in


def test_the_index_opens_only_permitted_files(workspace, opened):  # noqa: F811
    index = RepositoryIndex([workspace], RULES)
    index.build()
    for name in ("app/util.py", ".env", "src/settings.py", "build/out.py", "vendor/lib.py"):
        index.update_file(workspace / name)  # as when the editor reports a watched file
    read = {
        Path(p).relative_to(workspace.resolve()).as_posix()
        for p in opened
        if p.startswith(str(workspace.resolve()))
    }
    read -= {p for p in read if p.endswith(".gitignore")}
    permitted = {p for p in read if allowed(workspace / p, RULES, [workspace])}
    assert read == permitted
    assert {"app/main.py", "app/util.py"} <= read
    assert not read & {".env", "build/out.py", "vendor/lib.py", "top_only.py", "src/link.py"}
    assert not any(p.startswith("elsewhere") for p in opened)
    assert index.named("SECRET") == [] and index.named("AWS") == []


# --------------------------------------------------------------------------- the selection


def cursor_at(project: Path, relative: str, marker: str, text: str | None = None) -> Cursor:
    path = project / relative
    text = path.read_text() if text is None else text
    offset = text.index(marker)
    line = text.count("\n", 0, offset)
    return Cursor(
        path.resolve().as_uri(), path.resolve().as_posix(), text, offset, (line, line + 1), "python"
    )


def test_definitions_of_the_names_around_the_cursor_come_from_the_files_they_are_imported_from(
    project,
):
    index = RepositoryIndex([project], FileRules())
    index.build()
    cursor = cursor_at(project, "shop/cart.py", "    return price")
    snippets = definition_snippets(cursor, index)
    paths = {(s.path, s.text.split("\n")[0]) for s in snippets}
    assert ("shop/pricing.py", "def total_price(items, discount=None):") in paths
    assert ("shop/tax.py", "def with_vat(price):") in paths  # `tax.with_vat`
    assert ("shop/pricing.py", "class Discount:") in paths  # imported, not used near
    assert not any("secret" in s.path for s in snippets)
    # Nearest names first: those used on the lines just above the cursor before the names
    # of the import line and the class further up.
    firsts = [s.text.split("(")[0] for s in snippets]
    assert set(firsts[:2]) == {"def total_price", "def with_vat"}
    assert {"class Discount:\n    def __init__", "class Cart:\n    def __init__"} <= set(firsts[2:])


def test_an_ambiguous_name_is_not_guessed_but_the_files_own_definition_wins(tmp_path):
    root = tmp_path / "p"
    for i in range(5):
        write(root, f"m{i}.py", "def run(job):\n    return job\n")
    write(root, "main.py", "def run(x):\n    return x\n\n\n\n" + "\n" * 60 + "run(1)\n")
    index = built(root)
    text = (root / "m0.py").read_text() + "\n\n\nrun(2)\n"
    far = cursor_at(root, "m0.py", "run(2)", text)
    far = Cursor(far.uri, far.path, far.text, far.offset, (3, 6), "python")
    index.update_text(root / "m0.py", text)
    [own] = definition_snippets(far, index)
    assert own.path == "m0.py"  # six files define run: the file's own one is meant
    other = cursor_at(root, "main.py", "run(1)")
    index.update_text(root / "main.py", "\n" * 70 + "run(1)\n")
    assert definition_snippets(other, index) == []  # five candidates elsewhere: no guess


def snippet(source: str, text: str, score: float, path: str = "a.py", line: int = 0) -> Snippet:
    return Snippet(source, path, line, text, "test", score, (source, path, line))


def test_the_block_never_exceeds_the_budget_in_the_models_tokens(tiny_vocab):
    candidates = {
        "definition": [
            snippet("definition", f"def f{i}(a, b):\n    ...\n", 1 / (i + 1), f"d{i % 3}.py", i)
            for i in range(30)
        ],
        "similar": [
            snippet("similar", f"x{i} = compute({i})\n" * 8, 0.5, f"s{i}.py") for i in range(6)
        ],
        "edit": [snippet("edit", f"edited_{i}()\n" * 3, 1.0, f"e{i}.py") for i in range(6)],
    }
    for budget in (0, 1, 7, 40, 100, 256, 512, 1024, 4096):
        block = fit(candidates, budget, tiny_vocab.count, "python")
        assert block.total == (tiny_vocab.count(block.text) if block.text else 0)
        assert block.total <= budget
        assert sum(block.tokens) >= block.total - len(block.snippets)  # parts add up
    block = fit(candidates, 512, tiny_vocab.count, "python")
    counts = {
        source: sum(
            t for s, t in zip(block.snippets, block.tokens, strict=True) if s.source == source
        )
        for source, _ in SHARES
    }
    # Each source had more than its share to give: each got about its share.
    for source, share in SHARES:
        assert counts[source] <= 512 * share + 60, source
        assert counts[source] >= 512 * share - 80, source
    # Everything fits a large budget: all snippets, the best definitions last.
    everything = fit(candidates, 100_000, tiny_vocab.count, "python")
    assert len(everything.snippets) == 42
    assert everything.snippets[-1].source == "definition"


def test_the_block_is_comments_in_the_target_language_with_each_files_path():
    snippets = [
        snippet("definition", "class A:\n    def m(self):\n        ...\n", 1.0, "pkg/a.py", 3),
        snippet("definition", "class A:\n    def n(self):\n        ...\n", 0.9, "pkg/a.py", 8),
        snippet("similar", "y = 2\n", 0.2, "b.py"),
    ]
    assert render(snippets, "python") == (
        "# Path: pkg/a.py\n# class A:\n#     def m(self):\n#         ...\n"
        "#     def n(self):\n#         ...\n# Path: b.py\n# y = 2\n"
    )
    assert render(snippets[2:], "javascript") == "// Path: b.py\n// y = 2\n"
    assert render(snippets[2:], "css") == "/*\nPath: b.py\ny = 2\n*/\n"
    assert render([], "python") == ""


# --------------------------------------------------------------------------- stability


def test_the_block_stays_the_same_while_typing_in_one_unit(project, tiny_vocab):
    cart = project / "shop/cart.py"
    uri = cart.resolve().as_uri()
    texts: dict[str, str] = {uri: cart.read_text()}
    repository = RepositoryContext(ContextSettings(), texts.get)
    repository.build_now([project])
    repository.opened(uri, 0, texts[uri])

    def block_at(text: str, marker: str):
        offset = text.index(marker) + len(marker)
        return repository.block_for(
            uri, text, offset, (offset - 40, offset), "python", tiny_vocab.count
        )

    original = texts[uri]
    first = block_at(original, "return price")
    assert first.text and not first.kept
    assert "def total_price" in first.text and "def with_vat" in first.text
    typed = " + 0 if cart else None"
    for i in range(1, len(typed) + 1):
        text = original.replace("return price", "return price" + typed[:i])
        block = block_at(text, "return price" + typed[:i])
        assert block.kept and block.text == first.text, typed[:i]
    # A name typed near the cursor that resolves to a definition not shown: chosen again.
    text = original.replace("return price", "return price + ship_cost(2)")
    again = block_at(text, "return price + ship_cost(2)")
    assert not again.kept and "def ship_cost(weight, express=False):" in again.text
    assert "def ship_cost" not in first.text
    # Another unit (the class above): chosen again.
    moved = block_at(original, "self.items.append(item)")
    assert not moved.kept


def test_context_off_gives_no_block_and_reads_nothing(project, tiny_vocab, opened):  # noqa: F811
    repository = RepositoryContext(ContextSettings(enabled=False), lambda uri: None)
    repository.build_now([project])
    uri = (project / "shop/cart.py").resolve().as_uri()
    block = repository.block_for(
        uri, "x = total_price(1)\n", 5, (0, 18), "python", tiny_vocab.count
    )
    assert block.text == "" and repository.index is None
    assert not [p for p in opened if p.startswith(str(project.resolve()))]


def test_a_file_being_typed_keeps_its_definitions_and_imports():
    broken = "from .parser import FeedParser\n\n\nclass Box:\n    def open(self):\n        raise errors.\n"
    tags = tags_of("python", broken + "            'unterminated')\n")
    assert [i.bound for i in tags.imports] == ["FeedParser"]
    assert {d.name for d in tags.definitions} == {"Box", "open"}


def test_after_module_dot_the_modules_outline_comes_first(project):
    index = RepositoryIndex([project], FileRules())
    index.build()
    text = "from shop import pricing as p\n\n\ndef total(items):\n    return p."
    cart = project / "shop/cart.py"
    index.update_text(cart, text)
    cursor = Cursor(cart.as_uri(), cart.resolve().as_posix(), text, len(text), (3, 5), "python")
    best = definition_snippets(cursor, index)[0]
    assert best.path == "shop/pricing.py" and best.why.startswith("p. is before the cursor")
    assert best.text == "class Discount:\ndef total_price(items, discount=None):\n"
    # What the project calls most comes first: two files write `pricing.total_price`.
    for name in ("a", "b"):
        write(project, f"shop/{name}.py", "from shop import pricing\npricing.total_price([])\n")
        index.update_file(project / f"shop/{name}.py")
    best = definition_snippets(cursor, index)[0]
    assert best.text == "def total_price(items, discount=None):\nclass Discount:\n"
    # An aliased module's member used near the cursor is found in that module.
    text = "from shop import tax as t\n\n\ndef total(x):\n    y = t.with_vat(x)\n    return "
    index.update_text(cart, text)
    cursor = replace(cursor, text=text, offset=len(text))
    assert [s.text.split("(")[0] for s in definition_snippets(cursor, index)][:1] == [
        "def with_vat"
    ]


def test_definitions_come_from_the_same_language_family_only(tmp_path):
    root = tmp_path / "mixed"
    write(root, "tool.py", "def render_page(page):\n    return page\n")
    write(root, "web/view.ts", "export function renderPage(page: number) {\n  return page;\n}\n")
    write(root, "web/app.js", "render_page(1)\nrenderPage(2)\n")
    index = built(root)
    app = (root / "web/app.js").resolve()
    text = app.read_text()
    cursor = Cursor(app.as_uri(), app.as_posix(), text, len(text), (5, 6), "javascript")
    assert [s.path for s in definition_snippets(cursor, index)] == ["web/view.ts"]


def test_members_of_one_class_do_not_fold_each_other():
    shown = [
        snippet("definition", "class M:\n    def get(self):\n", 1.0, "m.py", 10),
        snippet("definition", "class M:\n    def items(self):\n", 0.9, "m.py", 20),
        snippet(
            "definition", "class M:\n    def get(self):\n    def items(self):\n", 0.8, "m.py", 1
        ),
    ]
    shown = [replace(s, member_of="M") for s in shown[:2]] + [
        replace(shown[2], key=("definition", "m.py", 1, "M"))
    ]
    assert len(_members_folded(shown)) == 3  # the class came last: nothing folded
    folded = _members_folded([shown[2], *shown[:2]])
    assert folded == [shown[2]]  # the class lists both members


def test_the_best_snippet_of_a_source_is_cut_to_fit_rather_than_dropped(tiny_vocab):
    outline = "".join(f"def function_number_{i}(argument):\n" for i in range(200))
    block = fit(
        {"definition": [snippet("definition", outline, 4.0)]}, 200, tiny_vocab.count, "python"
    )
    [cut] = block.snippets
    assert block.total <= 200 and cut.text.endswith("\n...\n")
    assert cut.text.startswith("def function_number_0(argument):\n") and len(cut.text) < len(
        outline
    )


def test_a_one_shot_index_reads_the_files_folder_first_then_stops_in_time(project):
    repository = RepositoryContext(ContextSettings(), lambda uri: None)
    repository.build_now([project], project / "web/app.js", seconds=0)
    index = repository.index
    assert index is not None and index.stats.timed_out
    assert sorted(index.relative(p) for p in index.paths()) == ["web/app.js", "web/view.js"]
    assert repository.status()["indexTimedOut"]


def test_after_self_dot_the_class_and_what_it_inherits(tmp_path):
    root = tmp_path / "inherit"
    write(
        root,
        "base.py",
        "class Store:\n    def save(self, item):\n        pass\n\n    def load(self, key):\n        pass\n",
    )
    write(
        root,
        "mid.py",
        "from base import Store\n\n\nclass CachedStore(Store):\n    def evict(self):\n        pass\n",
    )
    text = "import mid\n\n\nclass Cart(mid.CachedStore):\n    def add(self, item):\n        self."
    write(root, "cart.py", text)
    index = built(root)
    cart = (root / "cart.py").resolve()
    cursor = Cursor(cart.as_uri(), cart.as_posix(), text, len(text), (4, 6), "python")
    outlines = {s.path: s for s in definition_snippets(cursor, index) if s.key[0] == "outline"}
    assert outlines["mid.py"].text == "class CachedStore(Store):\n    def evict(self):\n"
    assert outlines["base.py"].text == (
        "class Store:\n    def save(self, item):\n    def load(self, key):\n"
    )
    assert outlines["mid.py"].score > outlines["base.py"].score  # the nearer generation first
    assert all(s.next_word for s in outlines.values())
    # What a class overrides is listed under it only, not again under its base.
    override = text.replace(
        "def add(self, item)", "def save(self, item):\n        pass\n\n    def x(self)"
    )
    write(root, "cart.py", override)
    index.update_text(cart, override)
    cursor = Cursor(cart.as_uri(), cart.as_posix(), override, len(override), (4, 9), "python")
    outlines = {s.path: s for s in definition_snippets(cursor, index) if s.key[0] == "outline"}
    assert outlines["base.py"].text == "class Store:\n    def load(self, key):\n"


def test_after_an_untyped_name_dot_the_classes_named_like_it(tmp_path):
    root = tmp_path / "guess"
    write(
        root,
        "futures.py",
        "class Future:\n    def done(self):\n        pass\n\n    def add_done_callback(self, fn):\n        pass\n",
    )
    write(root, "loops.py", "class EventLoop:\n    def call_soon(self, callback):\n        pass\n")
    write(root, "other.py", "class Unrelated:\n    def done(self):\n        pass\n")
    text = (
        "from futures import Future\n\n\ndef wait(fut, loop):\n    loop.call_soon(print)\n    fut."
    )
    write(root, "app.py", text)
    index = built(root)
    cursor = cursor_in(root, "app.py", text, len(text), (3, 6), "python")
    best = definition_snippets(cursor, index)[0]
    assert (
        best.path == "futures.py"
        and best.why == "fut. is before the cursor: the members of Future (named like it)"
    )
    assert best.text == "class Future:\n    def done(self):\n    def add_done_callback(self, fn):\n"


def test_after_an_untyped_name_dot_the_classes_whose_members_the_file_uses_on_it(tmp_path):
    root = tmp_path / "duck"
    write(
        root,
        "message.py",
        "class Message:\n    def get_payload(self):\n        pass\n\n"
        "    def is_multipart(self):\n        pass\n\n    def set_payload(self, p):\n"
        "        pass\n",
    )
    # Shares one member: covered less. Many classes define `close`: it says nothing.
    write(root, "parts.py", "class Part:\n    def get_payload(self):\n        pass\n")
    write(
        root,
        "closers.py",
        "".join(f"class C{i}:\n    def close(self):\n        pass\n" for i in range(8)),
    )
    text = (
        "def walk(msg):\n    if msg.is_multipart():\n        return msg.get_payload()\n"
        "    msg.close()\n    msg.\n"
    )
    write(root, "walk.py", text)
    index = built(root)
    walk = (root / "walk.py").resolve()
    offset = text.index("msg.\n") + 4
    cursor = Cursor(walk.as_uri(), walk.as_posix(), text, offset, (0, 5), "python", 4)
    found = definition_snippets(cursor, index)
    guessed = [s for s in found if s.why.startswith("msg. is before the cursor")]
    assert [(s.path, s.why.rsplit(": ", 1)[1]) for s in guessed] == [
        ("message.py", "the members of Message (the file uses msg's members)"),
        ("parts.py", "the members of Part (the file uses msg's members)"),
    ]
    assert "def set_payload(self, p):" in guessed[0].text
    assert guessed[0].score > guessed[1].score
    # The same file with the name used on nothing else guesses nothing from members.
    alone = "def walk(msg):\n    msg.\n"
    cursor = Cursor(walk.as_uri(), walk.as_posix(), alone, len(alone) - 1, (0, 2), "python", 1)
    assert not [s for s in definition_snippets(cursor, index) if "msg's members" in s.why]


def test_after_a_compound_name_dot_the_classes_named_like_its_last_word(tmp_path):
    root = tmp_path / "words"
    write(root, "events.py", "class EventLoop:\n    def call_soon(self, callback):\n        pass\n")
    text = "def wake(dest_loop):\n    dest_loop."
    write(root, "app.py", text)
    index = built(root)
    cursor = cursor_in(root, "app.py", text, len(text), (0, 2), "python", 1)
    best = definition_snippets(cursor, index)[0]
    assert best.why == "dest_loop. is before the cursor: the members of EventLoop (named like it)"


def test_what_the_next_word_is_one_of_may_take_the_whole_budget(tiny_vocab):
    members = "".join(f"    def member_number_{i}(self, argument):\n" for i in range(80))
    outline = replace(snippet("definition", "class Big:\n" + members, 3.0), next_word=True)
    chunk = snippet("similar", "total = price * count\n", 0.5)
    budget = 300
    block = fit({"definition": [outline], "similar": [chunk]}, budget, tiny_vocab.count, "python")
    [cut] = block.snippets
    assert cut.text.endswith("\n...\n") and block.total <= budget
    # More than the definitions' share: the share alone would have cut it shorter.
    share = dict(SHARES)["definition"]
    assert block.total > budget * share
    plain = fit(
        {"definition": [replace(outline, next_word=False)], "similar": [chunk]},
        budget,
        tiny_vocab.count,
        "python",
    )
    assert len(plain.snippets) == 2 and len(plain.snippets[1].text) < len(cut.text)


def test_a_package_name_is_found_in_node_modules_nearest_first(tmp_path):
    root = tmp_path / "node"
    write(root, "node_modules/fund/lib/index.js", "function normalize (x) {\n  return x\n}\n")
    write(root, "node_modules/@scope/tool/index.js", "class Tool {\n  run () {}\n}\n")
    write(root, "node_modules/semver/classes/range.js", "class Range {\n  test () {}\n}\n")
    write(root, "lib/node_modules/fund/index.js", "function normalize (y) {\n  return y\n}\n")
    write(root, "lib/app.js", "const x = 1\n")
    write(root, "bin/cli.js", "const y = 2\n")
    index = built(root)

    def found(importer: str, module: str) -> list[str]:
        path = (root / importer).resolve().as_posix()
        return [index.relative(p) for p in index.module_files(path, Import("n", module, None))]

    assert found("bin/cli.js", "fund") == ["node_modules/fund/lib/index.js"]
    assert found("lib/app.js", "fund") == ["lib/node_modules/fund/index.js"]  # the nearest
    assert found("bin/cli.js", "@scope/tool") == ["node_modules/@scope/tool/index.js"]
    assert found("bin/cli.js", "semver/classes/range") == ["node_modules/semver/classes/range.js"]
    assert found("bin/cli.js", "fs") == [] and found("bin/cli.js", "node:fs") == []


def test_an_import_the_file_does_not_use_yet_ranks_its_definition_higher(tmp_path):
    root = tmp_path / "unused"
    write(root, "shapes.py", "class Circle:\n    pass\n\n\nclass Square:\n    pass\n")
    filler = "".join(f"WIDTH_{i} = {i}\n" for i in range(50))  # the import is not near
    text = f"from shapes import Circle, Square\n{filler}\n\ndef draw():\n    c = Circle()\n    return \n"
    write(root, "draw.py", text)
    assert tags_of("python", text).unused == frozenset({"Square"})
    assert tags_of("javascript", "const { a, b } = require('x')\nb()\n").unused == {"a"}
    index = built(root)
    draw = (root / "draw.py").resolve()
    offset = text.index("return ") + 7
    cursor = Cursor(draw.as_uri(), draw.as_posix(), text, offset, (40, 56), "python")
    found = {s.text.split("\n")[0]: s for s in definition_snippets(cursor, index)}
    assert found["class Square:"].why == "imported from shapes, not used in the file yet"
    assert found["class Circle:"].why == "Circle is used near the cursor, imported from shapes"
    # Not used yet: ahead of any import the file uses away from the cursor.
    assert found["class Square:"].score == UNUSED_IMPORT > IMPORTED


def test_after_exports_dot_no_class_is_guessed(tmp_path):
    root = tmp_path / "exports"
    write(
        root,
        "cache.js",
        "class Exports {\n  get () {}\n}\nclass Entry {\n  a () {}\n  b () {}\n}\n",
    )
    text = "exports.a = 1\nexports.b = 2\nexports."
    write(root, "index.js", text)
    index = built(root)
    cursor = cursor_in(root, "index.js", text, len(text), (0, 3), "javascript")
    assert not [s for s in definition_snippets(cursor, index) if s.next_word]


def test_an_outline_lists_the_members_the_project_calls_most_first(tmp_path):
    root = tmp_path / "popular"
    write(
        root,
        "loops.py",
        "class EventLoop:\n    def close(self):\n        pass\n\n    def call_soon(self, fn):\n"
        "        pass\n\n    def time(self):\n        pass\n",
    )
    for i in range(3):
        write(root, f"user{i}.py", f"def f{i}(loop):\n    loop.call_soon(print)\n")
    write(root, "timer.py", "def t(loop):\n    return loop.time()\n")
    text = "def run(loop):\n    loop."
    write(root, "run.py", text)
    index = built(root)
    assert (index.member_uses("call_soon"), index.member_uses("time")) == (3, 1)
    cursor = cursor_in(root, "run.py", text, len(text), (0, 2), "python", 1)

    def outline() -> list[str]:
        [guess] = [s for s in definition_snippets(cursor, index) if s.next_word]
        return [line.strip() for line in guess.text.split("\n")[1:] if line]

    assert outline() == ["def call_soon(self, fn):", "def time(self):", "def close(self):"]
    for i in range(3):
        index.remove((root / f"user{i}.py").resolve())
    assert index.member_uses("call_soon") == 0
    assert outline() == ["def time(self):", "def close(self):", "def call_soon(self, fn):"]


def test_the_index_waits_while_the_user_types(project, monkeypatch):
    from cl_lsp.repository import service

    monkeypatch.setattr(service, "TYPING_PAUSE", 0.3)
    repository = RepositoryContext(ContextSettings(), lambda uri: None)
    uri = (project / "shop/cart.py").resolve().as_uri()
    repository.changed(uri, 2, "x = 1\n", [(0, 0, 0)])
    assert repository.typing()
    repository.start([project])
    try:
        assert not repository.ready.wait(0.15)  # typed 0.15 s ago: nothing read yet
        assert repository.index is not None and len(repository.index) == 0
        assert repository.ready.wait(5)  # the user paused: the build runs
        assert not repository.typing() and len(repository.index) == 7
    finally:
        repository.stop()
