"""Edits from answers: the model's answer turned into one :class:`Edit` in the language's own
comment and documentation syntax, indented to fit."""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass

from .. import languages
from ..languages import comment_style
from ..syntax import line_end, line_start
from .answers import BULLET, extract_code, extract_documentation, extract_prose
from .lines import blank, indent_at, strip_blank_lines
from .target import Target, parse_document

__all__ = [
    "Edit",
    "comment_block",
    "document_edit",
    "explain_edit",
    "fit_indentation",
    "fix_edit",
    "tests_edit",
]

WIDTH = 80  # comments and docstrings wrap here


@dataclass(frozen=True)
class Edit:
    start: int  # replace text[start:end] with new_text
    end: int
    new_text: str


def _edit(text: str, start: int, end: int, new_text: str) -> Edit:
    """The edit, written with the file's own line breaks."""
    if "\r\n" in text:
        new_text = new_text.replace("\n", "\r\n")
    return Edit(start, end, new_text)


def _wrap(prose: str, width: int) -> list[str]:
    """Prose lines wrapped to `width`; "" between paragraphs; list items hang."""
    out: list[str] = []
    for line in prose.split("\n"):
        if blank(line):
            out.append("")
            continue
        lead = line[: len(line) - len(line.lstrip())]
        bullet = BULLET.match(line)
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
    at = line_start(text, target.start)
    return _edit(text, at, at, comment_block(prose, target.language, indent_at(text, at)))


def fit_indentation(code: str, text: str, target: Target) -> str:
    """`code` dedented, its first line placed at the target's start, the others at the
    indentation of the target's first line."""
    lines = textwrap.dedent(code).split("\n")
    lead = text[line_start(text, target.start) : target.start]
    indent = indent_at(text, target.start)
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
    parsed = parse_document(text, "python")
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
    at = line_start(text, start)
    if text[at:start].strip():  # `def f(): return 1`
        return None
    indent = text[at:start]
    first = body.named_children[0]
    if first.type == "expression_statement" and first.named_child_count == 1:
        first = first.named_children[0]
    if first.type == "string":
        return _edit(text, at, parsed.index(first.end_byte), _docstring(prose, indent)[:-1])
    return _edit(text, at, at, _docstring(prose, indent))


def document_edit(text: str, target: Target, answer: str) -> Edit | None:
    """Documentation in the language's own syntax: a Python docstring, `/** */`, Rust `///`,
    a Go comment starting with the name; a plain comment above for selections and blocks."""
    prose = extract_documentation(answer)
    if not prose:
        return None
    language = target.language
    style = languages.get(language).doc_comment if language else "comment"
    definition = target.kind not in ("selection", "block")
    if style == "docstring" and definition:
        edit = _python_docstring_edit(text, target, prose)
        if edit is not None:
            return edit
    at = line_start(text, target.start)
    indent = indent_at(text, at)
    if definition and style == "javadoc":
        return _edit(text, at, at, _block_comment(prose, "/**", "*/", indent, WIDTH))
    if definition and style == "triple-slash":
        return _edit(text, at, at, _line_comments(prose, "///", indent, WIDTH))
    if definition and style == "go" and target.name:
        prose = _go_lead(prose, target.name)
    return _edit(text, at, at, comment_block(prose, language, indent))


def _top_level_end(text: str, target: Target) -> int:
    """Where the top-level statement or definition holding the target's end ends."""
    parsed = parse_document(text, target.language)
    if parsed is None or target.end == 0:
        return target.end
    b = parsed.byte(target.end)
    node = parsed.root.descendant_for_byte_range(max(b - 1, 0), b)
    while node is not None and node.parent is not None and node.parent.parent is not None:
        node = node.parent
    if node is None or node.parent is None:
        return target.end
    return max(target.end, parsed.index(node.end_byte))


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
    record = languages.get(target.language or "")
    if record.header_only is not None:
        header = re.compile(record.header_only)
        lines = strip_blank_lines(_without_header(lines, header))
    code = "\n".join(lines)
    if not code.strip():
        return None
    end = line_end(text, _top_level_end(text, target))
    gap = record.tests_gap
    at = min(end + 1, len(text))
    new_text = ("\n" if end == len(text) else "") + gap + code + "\n"
    following = text[at : line_end(text, at)]
    if following.strip():
        new_text += gap
    return _edit(text, at, at, new_text)
