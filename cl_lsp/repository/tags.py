"""What one source file defines and imports, read with tree-sitter (ctags-style).

A definition is a named module-level function, class, type, constant or variable, or a
class's (impl's, trait's, interface's) member; bodies are not entered, so locals are not
definitions. Each carries the snippet the prompt shows for it: a short definition whole, a
function's signature, a class's header with its members' first lines. Imports are what the
file binds and from where, so a name used near the cursor is looked up first in the files it
was imported from.

Python, JavaScript, TypeScript (and TSX), Go and Rust have tables here; other languages get
no definitions (their files are still read for similar chunks). Pure: the caller passes the
tree-sitter parser.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .. import languages
from ..languages import TagRules

#: A definition shorter than this many lines is shown whole.
WHOLE_LINES = 6
#: The most lines a snippet shows (a class's members beyond it are left out).
SNIPPET_LINES = 16
#: The most characters of one snippet line.
LINE_CHARS = 160


@dataclass(frozen=True)
class Definition:
    name: str
    kind: str  # function, method, class, type, constant, variable, macro
    path: str  # the file, as the index names it
    line: int  # first line (0-based; decorators and `export` included)
    end_line: int  # after the last line
    container: str | None  # the class, impl or interface a member belongs to
    snippet: str  # what the prompt shows, ending with a line break

    @property
    def key(self) -> tuple[str, int, str]:
        return (self.path, self.line, self.name)


@dataclass(frozen=True)
class Import:
    bound: str  # the name the file uses ("FeedParser", "utils", "np")
    module: str  # where from, as written ("email.parser", ".utils", "./a", "fmt")
    name: str | None  # the imported member's own name; None: the module itself is bound


@dataclass(frozen=True)
class FileTags:
    definitions: tuple[Definition, ...] = ()
    imports: tuple[Import, ...] = ()
    unused: frozenset[str] = frozenset()  # names imports bind that the file does not use yet
    members_used: tuple[str, ...] = ()  # the names the file writes as `x.name`, once each


#: Members are looked for this deep (a method of a class in a module; no deeper).
MAX_DEPTH = 2


def file_tags(path: str, source: bytes, grammar: str, parser: Any) -> FileTags:
    """The definitions and imports of one file (`source` in UTF-8)."""
    table = languages.get(grammar).tags
    if table is None:
        return FileTags()
    root = parser.parse(source).root_node
    reader = _Reader(path, source, table)
    definitions = tuple(reader.walk(root, None, 0))
    imports = tuple(_imports(root, source, table.imports))
    members_used = tuple(sorted({sys.intern(m.decode()) for m in _MEMBER.findall(source)}))
    return FileTags(definitions, imports, _unused(imports, source), members_used)


#: A member written after a dot (`x.name`, `module.name`).
_MEMBER = re.compile(rb"\.[ \t]*([A-Za-z_$][\w$]*)")


#: A name in code, as bytes.
_WORD = re.compile(rb"[A-Za-z_$][\w$]*")


def _unused(imports: tuple[Import, ...], source: bytes) -> frozenset[str]:
    """The names the imports bind that the file does not use elsewhere: written no more
    often than the imports write them (once each; in a comment or a string counts as used)."""
    if not imports:
        return frozenset()
    bound = Counter(i.bound.encode() for i in imports)
    written = Counter(word for word in _WORD.findall(source) if word in bound)
    return frozenset(name.decode() for name, n in bound.items() if written[name] <= n)


class _Reader:
    def __init__(self, path: str, source: bytes, table: TagRules) -> None:
        self.path, self.source, self.table = path, source, table

    def text(self, node: Any) -> str:
        return self.source[node.start_byte : node.end_byte].decode("utf-8", errors="replace")

    def walk(self, node: Any, container: str | None, depth: int) -> Iterator[Definition]:
        for child in node.named_children:
            kind = self.table.definitions.get(child.type)
            if kind is None:
                if child.type in self.table.wrappers or child.type in self.table.bodies:
                    yield from self.walk(child, container, depth)
                elif child.type == "ERROR":
                    # A file being typed rarely parses: what the parser could not place
                    # still holds whole definitions.
                    yield from self.walk(child, container, depth)
                continue
            if child.type == "assignment" and depth > 0:
                continue  # class attributes show in the class's snippet
            if kind == "variable" and _is_require(child, self.source):
                continue  # an import (CommonJS), not a definition
            name = self.name_of(child)
            outer = _outer(child, self.table)
            if name:
                yield Definition(
                    name=name,
                    kind="method" if container and kind == "function" else kind,
                    path=self.path,
                    line=outer.start_point[0],
                    end_line=child.end_point[0] + 1,
                    container=container,
                    snippet=self.snippet(child, outer, container),
                )
            if child.type in self.table.containers and depth + 1 < MAX_DEPTH:
                member_of = name or self.impl_name(child)
                body = child.child_by_field_name("body") or child.child_by_field_name("type")
                if body is not None:
                    yield from self.walk(body, member_of, depth + 1)

    def name_of(self, node: Any) -> str | None:
        if node.type == "assignment":
            left = node.child_by_field_name("left")
            if left is None or left.type != "identifier":
                return None
            name = self.text(left)
            return None if name.startswith("__") else name  # `__all__`, `__version__`
        if node.type == "impl_item":
            return None  # an impl is found by its methods
        # A JavaScript class field names its `property`; everything else its `name`.
        name = node.child_by_field_name("property" if node.type == "field_definition" else "name")
        if name is None or name.type not in _NAME_TYPES:
            return None
        return self.text(name)

    def impl_name(self, node: Any) -> str | None:
        kind = node.child_by_field_name("type")
        return self.text(kind) if kind is not None else None

    def snippet(self, node: Any, outer: Any, container: str | None) -> str:
        """A short definition whole; else its header, with its members' first lines for a
        class; a member under its container's header line."""
        lines = self.text_from(outer, node.end_byte).split("\n")
        body = _body(node)
        if len(lines) <= WHOLE_LINES or body is None:
            shown = lines[:SNIPPET_LINES] if body is None else lines
            if body is None and len(lines) > SNIPPET_LINES:
                shown = [*shown, _elided(lines[SNIPPET_LINES])]
        else:
            head = self.text_from(outer, body.start_byte).rstrip().split("\n")
            while len(head) > 1 and head[-1].lstrip().startswith(_COMMENT_STARTS):
                head.pop()  # comments before the body's first statement
            shown = head
            if node.type in self.table.containers:
                shown += self.members(body)
            body_indent = _indent_of(self.source, body.start_byte) if body.type == "block" else ""
            outer_indent = _indent_of(self.source, outer.start_byte)
            shown.append(_elided(body_indent.removeprefix(outer_indent)))
            if len(shown) > SNIPPET_LINES:
                shown = [*shown[: SNIPPET_LINES - 1], _elided(shown[-1])]
        text = "\n".join(line[:LINE_CHARS].rstrip() for line in shown)
        if container is not None:
            holder = _holder(outer, self.table)
            if holder is not None and holder.start_point[0] == outer.start_point[0]:
                text = text.split("\n", 1)[0]  # a one-line container: that line says it all
            elif holder is not None:
                first = self.source[holder.start_byte :].split(b"\n", 1)[0]
                header = first.decode("utf-8", errors="replace")[:LINE_CHARS].rstrip()
                indent = _indent_of(self.source, outer.start_byte)
                text = header + "\n" + "\n".join(indent + line for line in text.split("\n"))
        return text + "\n"

    def text_from(self, node: Any, end: int) -> str:
        """Text from `node`'s line start (keeping its indentation) to `end`."""
        start = self.source.rfind(b"\n", 0, node.start_byte) + 1
        raw = self.source[start:end].decode("utf-8", errors="replace")
        return _dedent(raw)

    def members(self, body: Any) -> list[str]:
        """Each member's first line, indented as in the file (relative to the class)."""
        lines: list[str] = []
        base = _indent_of(self.source, body.parent.start_byte)
        for member in body.named_children:
            if member.type in ("comment", "string") or (
                member.type == "expression_statement" and _is_docstring(member)
            ):
                continue
            first = self.source[member.start_byte :].split(b"\n", 1)[0]
            indent = _indent_of(self.source, member.start_byte)
            line = (indent.removeprefix(base) or "    ") + first.decode("utf-8", "replace")
            lines.append(line.rstrip())
            if len(lines) >= SNIPPET_LINES:
                break
        return lines


_COMMENT_STARTS = ("#", "//", "/*", "*")
_NAME_TYPES = frozenset(
    {
        "identifier",
        "type_identifier",
        "property_identifier",
        "field_identifier",
        "private_property_identifier",
    }
)


def _outer(node: Any, table: TagRules) -> Any:
    """The node whose start the snippet starts at: decorators, `export`, `const`, `type`."""
    outer = node
    while (
        outer.parent is not None
        and outer.parent.type in table.wrappers
        and outer.parent.named_child_count - _decorators(outer.parent) == 1
    ):
        outer = outer.parent
    return outer


_FUNCTION_VALUES = frozenset({"arrow_function", "function_expression", "function", "class"})


def _body(node: Any) -> Any | None:
    """A definition's body; a variable's whose value is a function (`const f = () => {}`)."""
    body = node.child_by_field_name("body")
    if body is None and node.type == "variable_declarator":
        value = node.child_by_field_name("value")
        if value is not None and value.type in _FUNCTION_VALUES:
            body = value.child_by_field_name("body")
    return body


def _is_require(node: Any, source: bytes) -> bool:
    value = node.child_by_field_name("value")
    if value is None or value.type != "call_expression":
        return False
    function = value.child_by_field_name("function")
    return function is not None and source[function.start_byte : function.end_byte] == b"require"


def _decorators(node: Any) -> int:
    return sum(child.type == "decorator" for child in node.named_children)


def _holder(node: Any, table: TagRules) -> Any | None:
    """The container definition a member's node sits in."""
    parent = node.parent
    while parent is not None:
        if parent.type in table.containers:
            return _outer(parent, table)
        parent = parent.parent
    return None


def _indent_of(source: bytes, at: int) -> str:
    start = source.rfind(b"\n", 0, at) + 1
    prefix = source[start:at].decode("utf-8", errors="replace")
    return prefix[: len(prefix) - len(prefix.lstrip())]


def _dedent(text: str) -> str:
    lines = text.split("\n")
    first = lines[0]
    indent = first[: len(first) - len(first.lstrip())]
    if not indent:
        return text
    return "\n".join(line.removeprefix(indent) for line in lines)


def _elided(model_line: str) -> str:
    """The `...` marking left-out lines, indented like the line it stands for."""
    stripped = model_line.lstrip()
    indent = model_line[: len(model_line) - len(stripped)]
    return f"{indent or '    '}..."


def _is_docstring(node: Any) -> bool:
    return node.named_child_count == 1 and node.named_children[0].type == "string"


# --------------------------------------------------------------------------- imports


def _imports(root: Any, source: bytes, syntax: str) -> Iterator[Import]:
    def text(node: Any) -> str:
        return source[node.start_byte : node.end_byte].decode("utf-8", errors="replace")

    reader = _IMPORT_READERS[syntax]
    nodes = list(root.named_children)
    while nodes:
        node = nodes.pop(0)
        if node.type == "ERROR":
            nodes[:0] = node.named_children  # as for definitions: a file being typed
        else:
            yield from reader(node, text)


def _python_imports(node: Any, text: Any) -> Iterator[Import]:
    if node.type == "import_statement":
        for name in node.children_by_field_name("name"):
            if name.type == "aliased_import":
                module, alias = name.child_by_field_name("name"), name.child_by_field_name("alias")
                yield Import(text(alias), text(module), None)
            else:
                dotted = text(name)
                yield Import(dotted.split(".")[0], dotted, None)
    elif node.type == "import_from_statement":
        module_node = node.child_by_field_name("module_name")
        module = text(module_node) if module_node is not None else ""
        for name in node.children_by_field_name("name"):
            if name.type == "aliased_import":
                real, alias = name.child_by_field_name("name"), name.child_by_field_name("alias")
                yield Import(text(alias), module, text(real))
            else:
                yield Import(text(name), module, text(name))


def _js_imports(node: Any, text: Any) -> Iterator[Import]:
    if node.type in ("lexical_declaration", "variable_declaration"):
        yield from _js_requires(node, text)
        return
    if node.type != "import_statement":
        return
    source = node.child_by_field_name("source")
    if source is None:
        return
    module = text(source).strip("\"'`")
    for clause in node.named_children:
        if clause.type != "import_clause":
            continue
        for part in clause.named_children:
            if part.type == "identifier":
                yield Import(text(part), module, "default")
            elif part.type == "namespace_import":
                for name in part.named_children:
                    yield Import(text(name), module, None)
            elif part.type == "named_imports":
                for spec in part.named_children:
                    name, alias = (
                        spec.child_by_field_name("name"),
                        spec.child_by_field_name("alias"),
                    )
                    if name is not None:
                        yield Import(text(alias or name), module, text(name))


def _js_requires(node: Any, text: Any) -> Iterator[Import]:
    """CommonJS: `const x = require("m")`, `const { a, b: c } = require("m")`."""
    for declarator in node.named_children:
        value = declarator.child_by_field_name("value")
        name = declarator.child_by_field_name("name")
        if value is None or name is None or value.type != "call_expression":
            continue
        function, arguments = (
            value.child_by_field_name("function"),
            value.child_by_field_name("arguments"),
        )
        if function is None or text(function) != "require" or arguments is None:
            continue
        strings = [a for a in arguments.named_children if a.type == "string"]
        if not strings:
            continue
        module = text(strings[0]).strip("\"'`")
        if name.type == "identifier":
            yield Import(text(name), module, None)
        elif name.type == "object_pattern":
            for part in name.named_children:
                if part.type == "shorthand_property_identifier_pattern":
                    yield Import(text(part), module, text(part))
                elif part.type == "pair_pattern":
                    key, bound = part.child_by_field_name("key"), part.child_by_field_name("value")
                    if key is not None and bound is not None:
                        yield Import(text(bound), module, text(key))


def _go_imports(node: Any, text: Any) -> Iterator[Import]:
    if node.type != "import_declaration":
        return
    specs = [n for n in _descendants(node) if n.type == "import_spec"]
    for spec in specs:
        path = spec.child_by_field_name("path")
        if path is None:
            continue
        module = text(path).strip('"`')
        alias = spec.child_by_field_name("name")
        bound = text(alias) if alias is not None else module.rsplit("/", 1)[-1]
        yield Import(bound, module, None)


def _rust_imports(node: Any, text: Any) -> Iterator[Import]:
    if node.type != "use_declaration":
        return
    argument = node.child_by_field_name("argument")
    if argument is not None:
        yield from _rust_use(argument, "", text)


def _rust_use(node: Any, path: str, text: Any) -> Iterator[Import]:
    if node.type == "scoped_identifier":
        inner = node.child_by_field_name("path")
        name = node.child_by_field_name("name")
        module = _join(path, text(inner) if inner is not None else "")
        if name is not None:
            yield Import(text(name), module, text(name))
    elif node.type == "identifier":
        yield Import(text(node), path, text(node))
    elif node.type == "use_as_clause":
        original, alias = node.child_by_field_name("path"), node.child_by_field_name("alias")
        if original is not None and alias is not None:
            module, _, name = _join(path, text(original)).rpartition("::")
            yield Import(text(alias), module, name)
    elif node.type == "scoped_use_list":
        inner = node.child_by_field_name("path")
        items = node.child_by_field_name("list")
        base = _join(path, text(inner) if inner is not None else "")
        if items is not None:
            for item in items.named_children:
                yield from _rust_use(item, base, text)
    elif node.type == "use_list":
        for item in node.named_children:
            yield from _rust_use(item, path, text)


def _join(path: str, more: str) -> str:
    return f"{path}::{more}" if path and more else path or more


def _descendants(node: Any) -> Iterator[Any]:
    for child in node.named_children:
        yield child
        yield from _descendants(child)


_IMPORT_READERS = {
    "from-import": _python_imports,
    "ecmascript": _js_imports,
    "go-import": _go_imports,
    "use-tree": _rust_imports,
}
