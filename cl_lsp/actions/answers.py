"""What a small model's answer holds: code (:func:`extract_code`), prose
(:func:`extract_prose`) or documentation (:func:`extract_documentation`), without the chatter,
stray fences and template tokens around it."""

from __future__ import annotations

import re
import textwrap

from .lines import blank, strip_blank_lines

__all__ = ["BULLET", "extract_code", "extract_documentation", "extract_prose"]


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
    while lines and (blank(lines[0]) or _is_prose(lines[0])):
        lines = lines[1:]
    while lines:
        lines = strip_blank_lines(lines)
        while lines and _is_prose(lines[-1]):
            lines = lines[:-1]
        last = max((n for n, line in enumerate(lines) if blank(line)), default=-1) + 1
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
    return "\n".join(line.rstrip() for line in strip_blank_lines(lines))


# Headings and labels ("**Explanation:**") only announce what follows.
_LABEL = re.compile(
    r"^\s{0,3}(#{1,6}\s.*|[*_]*(explanation|summary|answer|documentation|"
    r"docstring|description)[*_]*:?[*_]*)$",
    re.IGNORECASE,
)
#: A list item's marker (``-``, ``*``, ``1.``), with the indentation before it.
BULLET = re.compile(r"^(\s*)(?:[-*+\u2022]|\d+[.)])\s+")
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
    return BULLET.sub(lambda m: f"{m.group(1)}- ", line)


def _paragraph_lines(lines: list[str]) -> list[str]:
    """One paragraph's lines joined where they only wrap; list items, indented lines and lines
    after a colon ("Args:") keep their own line."""
    joined: list[str] = []
    for line in textwrap.dedent("\n".join(lines)).split("\n"):
        starts_own = bool(BULLET.match(line)) or line[:1].isspace()
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
        if blank(line) or _LABEL.match(line):
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
