"""Code actions without the protocol or the model: what to act on, what to ask, what to write.

Four actions (explain, fix, document, write tests) share one shape:

1. :func:`find_target` picks the code: a selection, else the innermost definition around the
   cursor (tree-sitter), else the paragraph of lines around it.
2. :func:`instruction` writes the request for an instruct model, with as much of the file
   around the target as fits the token budget; the target itself is never cut.
3. ``*_edit`` turns the model's answer (small models: chatter, stray fences, cut off) into one
   :class:`Edit` in the language's own comment and documentation syntax, indented to fit.

Everything here is pure; offsets are ``str`` indices into the document text.
"""

from __future__ import annotations

import enum
import logging
import re
import textwrap
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .context import _parser

log = logging.getLogger(__name__)

WIDTH = 80  # comments and docstrings wrap here
# Context lines offered around the target: more costs prompt time on a CPU and small models
# lose track of the target in a long prompt.
CONTEXT_BEFORE_LINES = 80
CONTEXT_AFTER_LINES = 20
MAX_DIAGNOSTICS = 20


class ActionKind(str, enum.Enum):
    EXPLAIN = "explain"
    FIX = "fix"
    DOCUMENT = "document"
    TESTS = "tests"


@dataclass(frozen=True)
class Target:
    start: int  # the code acted on: text[start:end]
    end: int
    kind: str  # "selection", "block", "function", "method", "class", "struct", "enum", ...
    name: str | None  # the definition's name when known
    language: str | None  # tree-sitter grammar name


@dataclass(frozen=True)
class Diagnostic:
    """A problem another language server reported; `line` counts from 0 as in LSP."""

    line: int
    message: str
    source: str | None = None
    code: str | None = None


class TargetTooLarge(Exception):
    """The target alone does not fit the model's window; the message is for the user."""


@dataclass(frozen=True)
class Instruction:
    system: str
    user: str


@dataclass(frozen=True)
class Edit:
    start: int  # replace text[start:end] with new_text
    end: int
    new_text: str


# --------------------------------------------------------------------------- languages

_NAMES = {
    "python": "Python",
    "javascript": "JavaScript",
    "typescript": "TypeScript",
    "tsx": "TypeScript",
    "go": "Go",
    "rust": "Rust",
    "c": "C",
    "cpp": "C++",
    "cuda": "CUDA",
    "java": "Java",
    "csharp": "C#",
    "ruby": "Ruby",
    "lua": "Lua",
    "bash": "shell script",
    "php": "PHP",
    "kotlin": "Kotlin",
    "swift": "Swift",
    "scala": "Scala",
    "ocaml": "OCaml",
    "sql": "SQL",
    "css": "CSS",
    "scss": "SCSS",
    "html": "HTML",
    "objc": "Objective-C",
    "powershell": "PowerShell",
    "make": "Makefile",
    "fsharp": "F#",
    "hcl": "HCL",
}
_FENCE_TAGS = {"tsx": "tsx", "objc": "objectivec", "make": "makefile", "fsharp": "fsharp"}
_HASH = {
    "python",
    "ruby",
    "bash",
    "perl",
    "r",
    "elixir",
    "yaml",
    "toml",
    "make",
    "dockerfile",
    "powershell",
    "nix",
    "hcl",
    "julia",
    "graphql",
    "cmake",
}
_DASHES = {"lua", "sql", "haskell", "elm", "ada"}
_BLOCK_ONLY = {
    "html": ("<!--", "-->"),
    "xml": ("<!--", "-->"),
    "markdown": ("<!--", "-->"),
    "vue": ("<!--", "-->"),
    "svelte": ("<!--", "-->"),
    "css": ("/*", "*/"),
    "ocaml": ("(*", "*)"),
}
_JAVADOC = {
    "javascript",
    "typescript",
    "tsx",
    "java",
    "csharp",
    "php",
    "c",
    "cpp",
    "cuda",
    "kotlin",
    "swift",
    "scala",
    "dart",
    "groovy",
    "objc",
}
_JEST = "Jest (describe, test and expect)"  # globals: nothing to import in the same file
_TEST_FRAMEWORKS = {
    "python": "pytest (plain test_ functions with assert statements)",
    "javascript": _JEST,
    "typescript": _JEST,
    "tsx": _JEST,
    "go": "Go's testing package (func TestXxx(t *testing.T)); no package clause or imports",
    "rust": "a #[cfg(test)] mod tests module with use super::*; and #[test] functions",
    "java": "JUnit 5 (@Test methods in a test class); no package or import declarations",
    "csharp": "xUnit ([Fact] methods in a test class)",
    "cpp": "GoogleTest (TEST macros)",
    "c": "plain assert() calls in test functions",
    "ruby": "Minitest",
    "php": "PHPUnit",
    "kotlin": "kotlin.test",
    "swift": "XCTest",
    "lua": "busted",
    "bash": "bats",
}


def language_name(language: str | None) -> str:
    """The name a person uses for the language ("code" when unknown)."""
    if not language:
        return "code"
    return _NAMES.get(language, language.capitalize())


def comment_style(language: str | None) -> tuple[str, str | None]:
    """(line marker, None) for languages with line comments, else (opener, closer)."""
    if language in _BLOCK_ONLY:
        return _BLOCK_ONLY[language]
    if language in _DASHES:
        return "--", None
    if language in ("erlang", "latex", "matlab"):
        return "%", None
    if language in ("clojure", "scheme", "commonlisp", "elisp"):
        return ";", None
    # Without a grammar we can't know; "#" is the commonest in the files that have none.
    if language is None or language in _HASH:
        return "#", None
    return "//", None


# --------------------------------------------------------------------------- lines


def _line_start(text: str, i: int) -> int:
    return text.rfind("\n", 0, i) + 1


def _line_end(text: str, i: int) -> int:
    """The index of the newline ending the line at i (or len(text))."""
    j = text.find("\n", i)
    return len(text) if j < 0 else j


def _indent_at(text: str, i: int) -> str:
    line = text[_line_start(text, i) : _line_end(text, i)]
    return line[: len(line) - len(line.lstrip(" \t"))]


def _blank(line: str) -> bool:
    return not line.strip()


def _strip_blank_lines(lines: list[str]) -> list[str]:
    start, end = 0, len(lines)
    while start < end and _blank(lines[start]):
        start += 1
    while end > start and _blank(lines[end - 1]):
        end -= 1
    return lines[start:end]


def _edit(text: str, start: int, end: int, new_text: str) -> Edit:
    """The edit, written with the file's own line breaks."""
    if "\r\n" in text:
        new_text = new_text.replace("\n", "\r\n")
    return Edit(start, end, new_text)


# --------------------------------------------------------------------------- syntax

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


@dataclass(frozen=True)
class _Parsed:
    """A tree and the bytes it was parsed from: tree-sitter counts bytes, we count str."""

    root: Any
    data: bytes
    text: str

    def byte(self, i: int) -> int:
        ascii = len(self.data) == len(self.text)
        return i if ascii else len(self.text[:i].encode("utf-8", "surrogatepass"))

    def index(self, b: int) -> int:
        ascii = len(self.data) == len(self.text)
        return b if ascii else len(self.data[:b].decode("utf-8", "surrogatepass"))

    def node_text(self, node: Any) -> str:
        return self.data[node.start_byte : node.end_byte].decode("utf-8", "replace")


def _parse(text: str, language: str | None) -> _Parsed | None:
    entry = _parser(language) if language else None
    if entry is None:
        return None
    parser, lock = entry
    data = text.encode("utf-8", "surrogatepass")
    try:
        with lock:
            tree = parser.parse(data)
    except Exception:  # a parser failure means line-based targets, never an error
        log.warning("tree-sitter %r failed; using lines", language, exc_info=True)
        return None
    return _Parsed(tree.root_node, data, text)


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


def _name(node: Any, parsed: _Parsed) -> str | None:
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


def _definition_at(parsed: _Parsed, i: int, language: str | None) -> Target | None:
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
    start = _line_start(text, i)
    while start > 0:
        above = _line_start(text, start - 1)
        if _blank(text[above : start - 1]):
            break
        start = above
    end = _line_end(text, i)
    while end < len(text):
        below = _line_end(text, end + 1)
        if _blank(text[end + 1 : below]):
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
    parsed = _parse(text, language)
    line_start, line_end = _line_start(text, start), _line_end(text, start)
    line = text[line_start:line_end]
    if line.strip():
        # On a non-blank character of the line, so a cursor in the indentation or after the
        # last `}` still belongs to the definition written on that line.
        first = line_start + len(line) - len(line.lstrip())
        probe: int | None = min(max(start, first), line_start + len(line.rstrip()) - 1)
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


def _noun(target: Target, language: str = "") -> str:
    """How the prompt names the target: "Python function `fib`", "selected Go code"..."""
    spaced = f"{language} " if language else ""
    if target.kind == "selection":
        return f"selected {spaced}code"
    if target.kind == "block":
        return f"{spaced}code"
    return f"{spaced}{target.kind}" + (f" `{target.name}`" if target.name else "")


# --------------------------------------------------------------------------- prompts

_SYSTEM = (
    "You are an expert {language}programmer. You answer exactly in the format asked "
    "for, without greetings, apologies or remarks before or after."
)


def _fenced(code: str, tag: str) -> str:
    fence = "~~~~" if "```" in code else "```"  # Markdown inside the code must not end it
    return f"{fence}{tag}\n{code}\n{fence}"


def _target_code(text: str, target: Target) -> str:
    """The target as whole lines without their common indentation."""
    begin = _line_start(text, target.start)
    if text[begin : target.start].strip():
        begin = target.start  # a selection from mid-line: show what was selected
    code = text[begin : target.end].replace("\r\n", "\n")
    return textwrap.dedent(code)


def _diagnostic_lines(text: str, diagnostics: Sequence[Diagnostic]) -> str:
    lines = text.split("\n")
    shown = []
    for d in diagnostics[:MAX_DIAGNOSTICS]:
        origin = " ".join(part for part in (d.source, d.code) if part)
        message = " ".join(d.message.split())
        row = f"- line {d.line + 1}: {message}" + (f" ({origin})" if origin else "")
        if 0 <= d.line < len(lines) and lines[d.line].strip():
            row += f", in `{lines[d.line].strip()}`"
        shown.append(row)
    return "\n".join(shown)


def _task(
    kind: ActionKind, text: str, target: Target, diagnostics: Sequence[Diagnostic], fence: str
) -> tuple[str, str]:
    """(what to do, how to reply) for one action."""
    language = target.language
    what = _noun(target, language_name(language) if language else "")
    if kind is ActionKind.EXPLAIN:
        reply = (
            "Answer in a few sentences of plain prose for a programmer reading the code. "
            "Do not repeat the code, write no code, use no headings or lists."
        )
        return f"Explain what this {what} does.", reply
    if kind is ActionKind.FIX:
        task = f"Fix the bugs in this {what}."
        if diagnostics:
            task += (
                "\n\nProblems other tools report in the file (lines count from 1):\n"
                + _diagnostic_lines(text, diagnostics)
            )
        reply = (
            f"Reply with only the complete corrected code in one {fence} fenced code block, "
            "and nothing before or after it. Keep everything that is not part of the fix "
            "unchanged."
        )
        return task, reply
    if kind is ActionKind.DOCUMENT:
        form = {"python": "docstring", "go": "Go doc comment"}.get(language or "", "doc comment")
        # Phrased like Explain on purpose: small models asked to "write a docstring" send
        # the code back; asked to describe it, they write prose.
        reply = (
            "Answer with one summary sentence, then, if useful, a sentence or two about "
            "the parameters and the result, in plain prose. Do not repeat the code, write "
            "no code, no comment markers (#, //, /**, *) and no quotes."
        )
        if language == "go" and target.name and target.kind not in ("selection", "block"):
            reply += f' Start with the name, as Go doc comments do: "{target.name} returns ...".'
        return f"Describe what this {what} does, for its {form}.", reply
    framework = _TEST_FRAMEWORKS.get(language or "", "the usual test framework")
    reply = (
        f"Reply with only the test code in one {fence} fenced code block. The tests go in the "
        "same file right after this code: do not repeat the code under test and do not "
        "import it from another module."
    )
    return f"Write unit tests for this {what}, using {framework}.", reply


def _comment_line(language: str | None, words: str) -> str:
    opener, closer = comment_style(language)
    return f"{opener} {words}" + (f" {closer}" if closer else "")


def instruction(
    kind: ActionKind,
    text: str,
    target: Target,
    *,
    path: str | None,
    diagnostics: Sequence[Diagnostic] = (),
    count_tokens: Callable[[str], int],
    budget: int,
) -> Instruction:
    """The request for the instruct model, within `budget` tokens (system + user).

    The target is always shown whole; the file's lines around it (nearest first, a little
    after) fill what is left. Raises TargetTooLarge when the target alone does not fit.
    """
    language = target.language
    tag = _FENCE_TAGS.get(language or "", language or "")
    code = _target_code(text, target)
    task, reply = _task(kind, text, target, diagnostics, f"```{tag}")
    system = _SYSTEM.format(language=f"{language_name(language)} " if language else "")
    file_name = re.split(r"[/\\]", path)[-1] if path else None
    here = _comment_line(language, f"... the {_noun(target)} shown below ...")

    def render(before: list[str], after: list[str]) -> str:
        parts = []
        if before or after:
            around = "\n".join([*reversed(before), here, *after])
            source = f" in the file `{file_name}`" if file_name else ""
            parts.append(
                f"The code around the {_noun(target)}{source}, for reference:\n"
                + _fenced(around, tag)
            )
        parts += [task, _fenced(code, tag), reply]
        return "\n\n".join(parts)

    system_cost = count_tokens(system)
    fixed = system_cost + count_tokens(render([], []))
    if fixed > budget:
        raise TargetTooLarge(
            f"the {_noun(target)} is {count_tokens(code)} tokens; the model's window holds "
            f"{budget} with room for the answer: select a smaller part"
        )
    spare = budget - fixed
    before, after = _context_lines(text, target, spare)

    def fits(b: int, a: int, limit: int) -> bool:
        return system_cost + count_tokens(render(before[:b], after[:a])) <= limit

    a = _most_that_fit(len(after), lambda a: fits(0, a, fixed + spare // 4))
    b = _most_that_fit(len(before), lambda b: fits(b, a, budget))
    return Instruction(
        system, render(_strip_blank_lines(before[:b]), _strip_blank_lines(after[:a]))
    )


def _context_lines(text: str, target: Target, spare: int) -> tuple[list[str], list[str]]:
    """Lines before the target (nearest first) and after it, capped in count and in characters
    so no token count ever runs over more than the spare budget could hold."""
    chars = spare * 8  # no tokenizer packs more than ~8 characters of code into a token
    first = _line_start(text, target.start)
    last = _line_end(text, target.end)
    top = max(0, first - chars)
    above = text[top:first].split("\n")[:-1]
    if top > 0 and text[top - 1] != "\n":
        above = above[1:]  # never a part of a line
    below = text[last + 1 : last + 1 + chars // 4].split("\n") if last < len(text) else []
    return (
        _within(reversed(above), CONTEXT_BEFORE_LINES, chars),
        _within(below, CONTEXT_AFTER_LINES, chars // 4),
    )


def _within(lines: Iterable[str], count: int, chars: int) -> list[str]:
    """The first lines, up to `count` of them and `chars` characters in all."""
    taken: list[str] = []
    for line in lines:
        chars -= len(line) + 1
        if chars < 0 or len(taken) == count:
            break
        taken.append(line.rstrip())
    return taken


def _most_that_fit(count: int, fits: Callable[[int], bool]) -> int:
    """The largest n <= count with fits(n), given fits(0) and that fitting is monotone."""
    lo, hi = 0, count
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


# --------------------------------------------------------------------------- answers

# Where the model went on past its turn, or echoed template tokens.
_END_OF_TURN = re.compile(r"</s>|<\|im_end\|>|<\|endoftext\|>|<\|im_start\|>|<EOT>|\[INST\]")
_FENCE_LINE = re.compile(r"^\s*(`{3,}|~{3,})\s*([\w+#.-]*)")
_CHATTER = re.compile(
    r"^(sure|certainly|of course|okay|ok|here|this|these|note|i |i'|in this|"
    r"below|the (above|following|code|function|fixed|corrected|updated))\b",
    re.IGNORECASE,
)
_PROSE_TAGS = ("", "text", "txt", "markdown", "md", "plaintext")


def _clean(answer: str) -> str:
    answer = answer.replace("\r\n", "\n").replace("[/INST]", "")
    found = _END_OF_TURN.search(answer)
    return answer[: found.start()] if found else answer


def _split_fences(answer: str) -> tuple[list[tuple[str, str]], list[str]]:
    """The fenced blocks as (tag, code), an unclosed last one included, and the lines outside."""
    blocks: list[tuple[str, str]] = []
    outside: list[str] = []
    inside: list[str] | None = None
    tag = ""
    for line in answer.split("\n"):
        fence = _FENCE_LINE.match(line)
        if inside is None and fence:
            inside, tag = [], fence.group(2).lower()
        elif inside is None:
            outside.append(line)
        elif fence:  # any fence line closes: a fence never belongs in the file
            blocks.append((tag, "\n".join(inside)))
            inside = None
        else:
            inside.append(line)
    if inside is not None:
        blocks.append((tag, "\n".join(inside)))
    return blocks, outside


def _is_prose(line: str) -> bool:
    if not line or line[0].isspace():
        return False
    stripped = line.strip()
    ends_sentence = stripped[-1] in ".:!?"
    sentence = stripped[0].isupper() and len(stripped.split()) >= 3 and ends_sentence
    return sentence or (bool(_CHATTER.match(stripped)) and ends_sentence)


def _drop_chatter(lines: list[str]) -> list[str]:
    """Code written without fences: drop the prose lines before and after it, and the
    paragraphs after it that start as prose."""
    while lines and (_blank(lines[0]) or _is_prose(lines[0])):
        lines = lines[1:]
    while lines:
        lines = _strip_blank_lines(lines)
        while lines and _is_prose(lines[-1]):
            lines = lines[:-1]
        last = max((n for n, line in enumerate(lines) if _blank(line)), default=-1) + 1
        if last >= len(lines) or not _is_prose(lines[last]):
            return lines
        lines = lines[:last]
    return lines


def extract_code(answer: str) -> str:
    """The code in a model's answer: the longest fenced block (the answer, not a one-line
    usage example), else the answer without the prose around it; "" if none."""
    blocks, outside = _split_fences(_clean(answer))
    if blocks:
        lines = max((code for _, code in blocks), key=len).split("\n")
    else:
        lines = _drop_chatter(outside)
    return "\n".join(line.rstrip() for line in _strip_blank_lines(lines))


# Headings and labels ("**Explanation:**") only announce what follows.
_LABEL = re.compile(
    r"^\s{0,3}(#{1,6}\s.*|[*_]*(explanation|summary|answer|documentation|"
    r"docstring|description)[*_]*:?[*_]*)$",
    re.IGNORECASE,
)
_BULLET = re.compile(r"^(\s*)(?:[-*+\u2022]|\d+[.)])\s+")
_STRONG = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_EMPHASIS = re.compile(r"(?<![\w*])\*(?=\S)(.+?)(?<=\S)\*(?![\w*])")
_OPENING_CHATTER = re.compile(
    r"^((sure|certainly|of course|okay|absolutely)\b[^.!:\n]*[.!:]\s*)?"
    r"(here\b[^.!:\n]*:\s*)?",
    re.IGNORECASE,
)
_CLOSING_CHATTER = re.compile(r"^(i hope|hope this|let me know|feel free)", re.IGNORECASE)


def _prose_line(line: str) -> str:
    line = line.rstrip().removeprefix("> ")
    line = _STRONG.sub(r"\2", line)
    line = _EMPHASIS.sub(r"\1", line)
    return _BULLET.sub(lambda m: f"{m.group(1)}- ", line)


def _paragraph_lines(lines: list[str]) -> list[str]:
    """One paragraph's lines joined where they only wrap; list items, indented lines and lines
    after a colon ("Args:") keep their own line."""
    joined: list[str] = []
    for line in textwrap.dedent("\n".join(lines)).split("\n"):
        starts_own = bool(_BULLET.match(line)) or line[:1].isspace()
        if (
            joined
            and not starts_own
            and not joined[-1].endswith(":")
            and not joined[-1][:1].isspace()
        ):
            joined[-1] += " " + " ".join(line.split())
        else:
            indent = line[: len(line) - len(line.lstrip())]
            joined.append(indent + " ".join(line.split()))
    return joined


def extract_prose(answer: str) -> str:
    """Plain text from a model's answer: code blocks, headings, Markdown emphasis and
    greetings dropped; paragraphs separated by a blank line, wrapped lines joined."""
    blocks, outside = _split_fences(_clean(answer))
    if not "".join(outside).strip() and len(blocks) == 1 and blocks[0][0] in _PROSE_TAGS:
        outside = blocks[0][1].split("\n")  # the whole answer fenced as text
    paragraphs: list[list[str]] = [[]]
    for line in outside:
        if _blank(line) or _LABEL.match(line):
            paragraphs.append([])
        else:
            paragraphs[-1].append(_prose_line(line))
    texts = ["\n".join(_paragraph_lines(p)) for p in paragraphs if p]
    if texts:
        texts[0] = _OPENING_CHATTER.sub("", texts[0]).strip()
        texts[0] = texts[0][:1].upper() + texts[0][1:]
    if texts and _CLOSING_CHATTER.match(texts[-1]):
        texts.pop()
    return "\n\n".join(t for t in texts if t)


# --------------------------------------------------------------------------- edits


def _wrap(prose: str, width: int) -> list[str]:
    """Prose lines wrapped to `width`; "" between paragraphs; list items hang."""
    out: list[str] = []
    for line in prose.split("\n"):
        if _blank(line):
            out.append("")
            continue
        lead = line[: len(line) - len(line.lstrip())]
        bullet = _BULLET.match(line)
        hang = lead + " " * (len(bullet.group(0)) - len(lead)) if bullet else lead
        out += textwrap.wrap(
            line.strip(),
            width=max(width, 20),
            initial_indent=lead,
            subsequent_indent=hang,
            break_long_words=False,
            break_on_hyphens=False,
        )
    return out


def _line_comments(prose: str, marker: str, indent: str, width: int) -> str:
    rows = _wrap(prose, width - len(indent.expandtabs(4)) - len(marker) - 1)
    return "".join(f"{indent}{marker} {row}".rstrip() + "\n" for row in rows)


def _block_comment(prose: str, opener: str, closer: str, indent: str, width: int) -> str:
    """`/*`-style comments get a ` * ` margin, others (`<!--`, `(*`) a plain one."""
    margin = " *" if opener.startswith("/*") else " "
    safe = prose.replace(closer, f"{closer[0]} {closer[1:]}")  # the text must not end it
    rows = _wrap(safe, width - len(indent.expandtabs(4)) - len(margin) - 1)
    body = "".join(f"{indent}{margin} {row}".rstrip() + "\n" for row in rows)
    last = f"{indent} {closer}" if margin == " *" else f"{indent}{closer}"
    return f"{indent}{opener}\n{body}{last}\n"


def comment_block(lines_of_text: str, language: str | None, indent: str, width: int = WIDTH) -> str:
    """The text as a comment in the language's syntax, each line starting with `indent`,
    wrapped at `width` columns; ends with a newline."""
    opener, closer = comment_style(language)
    if closer is None:
        return _line_comments(lines_of_text, opener, indent, width)
    return _block_comment(lines_of_text, opener, closer, indent, width)


def _go_lead(prose: str, name: str) -> str:
    """Go doc comments start with the declared name: "Fib returns ..."."""
    if re.match(rf"(?:The |A |An )?{re.escape(name)}\b", prose):
        return prose
    subject = re.match(
        r"(?:(?:This|The)(?: Go)? (?:function|method|type|struct|interface)"
        rf"(?:\s+`?{re.escape(name)}`?)?|It)\s+",
        prose,
    )
    if subject is None and re.match(r"[A-Z][a-z]+s\b", prose):  # "Returns ..."
        return f"{name} {prose[:1].lower()}{prose[1:]}"
    if subject is None:
        return f"{name}: {prose}"
    rest = prose[subject.end() :]
    return f"{name} {rest[:1].lower()}{rest[1:]}"


def explain_edit(text: str, target: Target, answer: str) -> Edit | None:
    """The explanation as a comment on the lines right above the target."""
    prose = extract_prose(answer)
    if not prose:
        return None
    at = _line_start(text, target.start)
    return _edit(text, at, at, comment_block(prose, target.language, _indent_at(text, at)))


def fit_indentation(code: str, text: str, target: Target) -> str:
    """`code` dedented, its first line placed at the target's start, the others at the
    indentation of the target's first line."""
    lines = textwrap.dedent(code).split("\n")
    line_start = _line_start(text, target.start)
    lead = text[line_start : target.start]
    indent = _indent_at(text, target.start)
    first = lines[0] if lead.strip() else indent[len(lead) :] + lines[0]
    return "\n".join([first, *(indent + line if line.strip() else "" for line in lines[1:])])


def fix_edit(text: str, target: Target, answer: str) -> Edit | None:
    """The target replaced by the corrected code; None when there is none or it is unchanged."""
    code = extract_code(answer)
    if not code:
        return None
    new_text = fit_indentation(code, text, target)
    if new_text == text[target.start : target.end].replace("\r\n", "\n"):
        return None
    return _edit(text, target.start, target.end, new_text)


def _docstring(prose: str, indent: str) -> str:
    """A PEP 257 docstring at `indent`: one line when it fits, else summary, blank, rest."""
    prose = prose.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    width = WIDTH - len(indent.expandtabs(4))
    if "\n" not in prose and len(prose) + 6 <= width:
        if prose.endswith('"'):  # it would run into the closing quotes
            prose = prose[:-1] + '\\"'
        return f'{indent}"""{prose}"""\n'
    first, _, rest = prose.partition("\n\n")
    sentence = re.match(r"[^\n]*?[.!?](?=\s)", first)
    if "\n" not in first and len(first) + 3 <= width:
        summary = first
    elif sentence and len(sentence.group(0)) + 3 <= width:
        summary, extra = sentence.group(0), first[sentence.end() :].strip()
        rest = f"{extra}\n\n{rest}".strip() if extra else rest
    else:
        summary, rest = "", prose
    rows = [f'{indent}"""{summary}'] if summary else []
    wrapped = _wrap(rest, width if summary else width - 3)
    if summary and wrapped:
        rows.append("")
    if not summary and wrapped:
        wrapped[0] = '"""' + wrapped[0]
    rows += [f"{indent}{row}" if row else "" for row in wrapped]
    return "\n".join(rows) + f'\n{indent}"""\n'


def _python_docstring_edit(text: str, target: Target, prose: str) -> Edit | None:
    """The docstring as the body's first statement (replacing one already there); None when
    the body is on the definition's line."""
    parsed = _parse(text, "python")
    if parsed is None:
        return None
    node = parsed.root.descendant_for_byte_range(
        parsed.byte(target.start), parsed.byte(target.start)
    )
    while node is not None and node.type not in ("function_definition", "class_definition"):
        if node.type == "decorated_definition":
            node = node.child_by_field_name("definition")
            break
        node = node.parent
    body = node.child_by_field_name("body") if node is not None else None
    if body is None or not body.named_children:
        return None
    start = parsed.index(body.start_byte)
    at = _line_start(text, start)
    if text[at:start].strip():  # `def f(): return 1`
        return None
    indent = text[at:start]
    first = body.named_children[0]
    if first.type == "expression_statement" and first.named_child_count == 1:
        first = first.named_children[0]
    if first.type == "string":
        return _edit(text, at, parsed.index(first.end_byte), _docstring(prose, indent)[:-1])
    return _edit(text, at, at, _docstring(prose, indent))


_DOCSTRING = re.compile(r'("""|\'\'\')(.*?)\1', re.DOTALL)
_DOC_BLOCK = re.compile(r"/\*\*(.*?)\*/", re.DOTALL)
_DOC_LINE = re.compile(r"^\s*(///?|#|--)\s?(.*)$")


def extract_documentation(answer: str) -> str:
    """The documentation text in an answer. Asked for the text alone, models often send the
    code back with the documentation written into it: then the docstring, `/** */` block or
    first run of comment lines inside the code is the answer."""
    blocks, outside = _split_fences(_clean(answer))
    prose_outside = "".join(line for line in outside if not _LABEL.match(line)).strip()
    if not blocks or prose_outside and not _OPENING_CHATTER.fullmatch(prose_outside):
        return extract_prose(answer)
    code = max((code for _, code in blocks), key=len)
    found = _DOCSTRING.search(code) or _DOC_BLOCK.search(code)
    if found:
        inner = found.group(found.lastindex or 0)
        lines = [re.sub(r"^\s*\*\s?", "", line) for line in inner.split("\n")]
        return extract_prose("\n".join(lines))
    comments: list[str] = []
    for line in code.split("\n"):
        match = _DOC_LINE.match(line)
        if match and "shown below ..." in line:  # our own marker, echoed back
            continue
        if match:
            comments.append(match.group(2))
        elif comments:
            break
    return extract_prose("\n".join(comments)) if comments else ""


def document_edit(text: str, target: Target, answer: str) -> Edit | None:
    """Documentation in the language's own syntax: a Python docstring, `/** */`, Rust `///`,
    a Go comment starting with the name; a plain comment above for selections and blocks."""
    prose = extract_documentation(answer)
    if not prose:
        return None
    language = target.language
    definition = target.kind not in ("selection", "block")
    if language == "python" and definition:
        edit = _python_docstring_edit(text, target, prose)
        if edit is not None:
            return edit
    at = _line_start(text, target.start)
    indent = _indent_at(text, at)
    if definition and language in _JAVADOC:
        return _edit(text, at, at, _block_comment(prose, "/**", "*/", indent, WIDTH))
    if definition and language == "rust":
        return _edit(text, at, at, _line_comments(prose, "///", indent, WIDTH))
    if definition and language == "go" and target.name:
        prose = _go_lead(prose, target.name)
    return _edit(text, at, at, comment_block(prose, language, indent))


def _top_level_end(text: str, target: Target) -> int:
    """Where the top-level statement or definition holding the target's end ends."""
    parsed = _parse(text, target.language)
    if parsed is None or target.end == 0:
        return target.end
    b = parsed.byte(target.end)
    node = parsed.root.descendant_for_byte_range(max(b - 1, 0), b)
    while node is not None and node.parent is not None and node.parent.parent is not None:
        node = node.parent
    if node is None or node.parent is None:
        return target.end
    return max(target.end, parsed.index(node.end_byte))


# Languages whose package and import declarations may only open a file: in tests placed after
# existing code they would not parse, so they are left out (the prompt asks for none).
_HEADER_ONLY = {
    "go": re.compile(r"(package|import)\b"),
    "java": re.compile(r"(package|import)\b"),
    "kotlin": re.compile(r"(package|import)\b"),
    "csharp": re.compile(r"using [\w.]+;"),
}


def _without_header(lines: list[str], header: re.Pattern[str]) -> list[str]:
    kept: list[str] = []
    in_group = False  # Go's `import (` ... `)`
    for line in lines:
        if in_group:
            in_group = line.strip() != ")"
        elif header.match(line):
            in_group = line.rstrip().endswith("(")
        else:
            kept.append(line)
    return kept


def tests_edit(text: str, target: Target, answer: str) -> Edit | None:
    """The tests after the top-level definition holding the target, at column 0, separated by
    a blank line (two in Python)."""
    lines = textwrap.dedent(extract_code(answer)).split("\n")
    if target.language in _HEADER_ONLY:
        lines = _strip_blank_lines(_without_header(lines, _HEADER_ONLY[target.language]))
    code = "\n".join(lines)
    if not code.strip():
        return None
    line_end = _line_end(text, _top_level_end(text, target))
    gap = "\n" * (2 if target.language == "python" else 1)
    at = min(line_end + 1, len(text))
    new_text = ("\n" if line_end == len(text) else "") + gap + code + "\n"
    following = text[at : _line_end(text, at)]
    if following.strip():
        new_text += gap
    return _edit(text, at, at, new_text)


__all__ = [
    "ActionKind",
    "Diagnostic",
    "Edit",
    "Instruction",
    "Target",
    "TargetTooLarge",
    "comment_block",
    "comment_style",
    "document_edit",
    "explain_edit",
    "extract_code",
    "extract_documentation",
    "extract_prose",
    "find_target",
    "fit_indentation",
    "fix_edit",
    "instruction",
    "language_name",
    "tests_edit",
]
