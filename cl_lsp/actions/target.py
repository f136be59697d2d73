"""What a code action acts on: a selection, else the innermost definition around the cursor
(tree-sitter), else the paragraph of lines around it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from ..syntax import Parsed, line_end, line_start, parse
from .lines import blank

__all__ = ["Target", "find_target", "parse_document"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    start: int  # the code acted on: text[start:end]
    end: int
    kind: str  # "selection", "block", "function", "method", "class", "struct", "enum", ...
    name: str | None  # the definition's name when known
    language: str | None  # tree-sitter grammar name


_FUNCTIONS = {
    "function_definition",
    "function_declaration",
    "function_item",
    "method",
    "function_signature_item",
    "generator_function_declaration",
    "singleton_method",
    "local_function_statement",
}
_METHODS = {
    "method_declaration",
    "method_definition",
    "method_signature",
    "abstract_method_signature",
    "constructor_declaration",
}
_TYPES = {
    "class_definition": "class",
    "class_declaration": "class",
    "class_specifier": "class",
    "abstract_class_declaration": "class",
    "class": "class",
    "record_declaration": "class",
    "object_declaration": "object",
    "object_definition": "object",
    "struct_item": "struct",
    "struct_specifier": "struct",
    "struct_declaration": "struct",
    "enum_item": "enum",
    "enum_declaration": "enum",
    "enum_specifier": "enum",
    "trait_item": "trait",
    "trait_definition": "trait",
    "protocol_declaration": "protocol",
    "interface_declaration": "interface",
    "impl_item": "impl",
    "type_declaration": "type",
    "type_alias_declaration": "type",
    "type_item": "type",
}
_NEEDS_BODY = {
    "class_specifier",
    "struct_specifier",
    "enum_specifier",
}  # C also writes `struct S x;`
_BINDINGS = {"lexical_declaration", "variable_declaration"}
_FUNCTION_VALUES = {"arrow_function", "function_expression", "function", "generator_function"}
_WRAPPERS = {"decorated_definition", "export_statement"}
_NAME_TYPES = {
    "identifier",
    "type_identifier",
    "simple_identifier",
    "constant",
    "word",
    "property_identifier",
    "field_identifier",
    "name",
}


def parse_document(text: str, language: str | None) -> Parsed | None:
    """The whole document parsed, or None (no grammar, or a parser failure: line-based targets,
    never an error)."""
    if not language:
        return None
    try:
        return parse(language, text, cut=False)
    except Exception:
        log.warning("tree-sitter %r failed; using lines", language, exc_info=True)
        return None


def _bound_function(node: Any) -> Any | None:
    """The declarator of `const f = (x) => ...` (one binding whose value is a function)."""
    declarators = [c for c in node.named_children if c.type == "variable_declarator"]
    if len(declarators) != 1:
        return None
    value = declarators[0].child_by_field_name("value")
    return declarators[0] if value is not None and value.type in _FUNCTION_VALUES else None


def _core(node: Any) -> Any | None:
    """The definition a node is or wraps (decorators, `export`, Rust attributes), or None."""
    while node.type == "attribute_item" and node.next_named_sibling is not None:
        node = node.next_named_sibling
    if not node.is_named:  # keywords: Python's `class` is not Ruby's class node
        return None
    if node.type == "decorated_definition":
        node = node.child_by_field_name("definition")
    elif node.type == "export_statement":
        node = node.child_by_field_name("declaration")
    if node is None:
        return None
    if node.type in _NEEDS_BODY and node.child_by_field_name("body") is None:
        return None
    if node.type in _FUNCTIONS or node.type in _METHODS or node.type in _TYPES:
        return node
    return node if node.type in _BINDINGS and _bound_function(node) is not None else None


def _inside_type(node: Any) -> bool:
    """Whether the nearest enclosing definition is a class, impl, trait..."""
    node = node.parent
    while node is not None:
        if node.type in _TYPES:
            return True
        if node.type in _FUNCTIONS or node.type in _METHODS:
            return False
        node = node.parent
    return False


def _kind(node: Any) -> str:
    if node.type in _METHODS:
        return "method"
    if node.type in _FUNCTIONS or node.type in _BINDINGS:
        return "method" if node.type in _FUNCTIONS and _inside_type(node) else "function"
    if node.type == "type_declaration":  # Go: say what the type is
        spec = next((c for c in node.named_children if c.type == "type_spec"), None)
        value = spec.child_by_field_name("type") if spec is not None else None
        if value is not None and value.type in ("struct_type", "interface_type"):
            return value.type.removesuffix("_type")
    return _TYPES[node.type]


def _name(node: Any, parsed: Parsed) -> str | None:
    if node.type in _BINDINGS:
        node = _bound_function(node)
    elif node.type == "type_declaration":
        node = next((c for c in node.named_children if c.type == "type_spec"), node)
    found = node.child_by_field_name("type" if node.type == "impl_item" else "name")
    if found is None and node.child_by_field_name("declarator") is not None:  # C, C++
        found = node
        while found.child_by_field_name("declarator") is not None:
            found = found.child_by_field_name("declarator")
    if found is None:
        found = next((c for c in node.named_children if c.type in _NAME_TYPES), None)
    name = parsed.node_text(found).strip() if found is not None else ""
    return name if name and "\n" not in name and len(name) <= 80 else None


def _span(node: Any) -> tuple[Any, Any]:
    """First and last node of a definition with what belongs to it: decorators, `export`,
    Rust attributes."""
    while node.parent is not None and node.parent.type in _WRAPPERS:
        node = node.parent
    first = node
    while (
        first.prev_named_sibling is not None and first.prev_named_sibling.type == "attribute_item"
    ):
        first = first.prev_named_sibling
    return first, node


def _definition_at(parsed: Parsed, i: int, language: str | None) -> Target | None:
    b = parsed.byte(i)
    node = parsed.root.descendant_for_byte_range(b, b)
    while node is not None:
        core = _core(node)
        if core is not None:
            first, last = _span(core)
            return Target(
                parsed.index(first.start_byte),
                parsed.index(last.end_byte),
                _kind(core),
                _name(core, parsed),
                language,
            )
        node = node.parent
    return None


def _paragraph(text: str, i: int) -> tuple[int, int]:
    """The run of non-blank lines around the (non-blank) line at i, without its indentation."""
    start = line_start(text, i)
    while start > 0:
        above = line_start(text, start - 1)
        if blank(text[above : start - 1]):
            break
        start = above
    end = line_end(text, i)
    while end < len(text):
        below = line_end(text, end + 1)
        if blank(text[end + 1 : below]):
            break
        end = below
    chunk = text[start:end]
    return start + len(chunk) - len(chunk.lstrip()), start + len(chunk.rstrip())


def _nearest_code(text: str, i: int) -> int | None:
    """A non-blank character on the nearest non-blank line above i, else below, else None."""
    before = text[:i].rstrip()
    if before:
        return len(before) - 1
    after = len(text) - len(text[i:].lstrip())
    return after if after < len(text) else None


def find_target(text: str, start: int, end: int, *, language: str | None) -> Target | None:
    """What an action at this selection acts on; None when there is nothing (a blank file).

    A selection is trimmed of surrounding whitespace. At a cursor: the innermost definition
    around it, else the paragraph of lines around it; a blank cursor line looks at the
    nearest code above (else below), unless it lies inside a definition.
    """
    start, end = sorted((min(max(start, 0), len(text)), min(max(end, 0), len(text))))
    chunk = text[start:end]
    if chunk.strip():
        return Target(
            start + len(chunk) - len(chunk.lstrip()),
            end - len(chunk) + len(chunk.rstrip()),
            "selection",
            None,
            language,
        )
    parsed = parse_document(text, language)
    begin = line_start(text, start)
    line = text[begin : line_end(text, start)]
    if line.strip():
        # On a non-blank character of the line, so a cursor in the indentation or after the
        # last `}` still belongs to the definition written on that line.
        first = begin + len(line) - len(line.lstrip())
        probe: int | None = min(max(start, first), begin + len(line.rstrip()) - 1)
    else:
        found = _definition_at(parsed, start, language) if parsed is not None else None
        if found is not None:
            return found
        probe = _nearest_code(text, start)
    if probe is None:
        return None
    found = _definition_at(parsed, probe, language) if parsed is not None else None
    if found is not None:
        return found
    block_start, block_end = _paragraph(text, probe)
    return Target(block_start, block_end, "block", None, language)
