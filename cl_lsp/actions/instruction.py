"""The request for the instruct model: what to do, how to reply, and as much of the file
around the target as fits the token budget (the target itself is never cut)."""

from __future__ import annotations

import enum
import re
import textwrap
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from .. import languages
from ..syntax import line_end, line_start
from .lines import strip_blank_lines
from .target import Target

__all__ = [
    "ActionKind",
    "Diagnostic",
    "Instruction",
    "TargetTooLarge",
    "instruction",
    "language_name",
]

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


def language_name(language: str | None) -> str:
    """The name a person uses for the language ("code" when unknown)."""
    return languages.get(language).name if language else "code"


def _noun(target: Target, language: str = "") -> str:
    """How the prompt names the target: "Python function `fib`", "selected Go code"..."""
    spaced = f"{language} " if language else ""
    if target.kind == "selection":
        return f"selected {spaced}code"
    if target.kind == "block":
        return f"{spaced}code"
    return f"{spaced}{target.kind}" + (f" `{target.name}`" if target.name else "")


_SYSTEM = (
    "You are an expert {language}programmer. You answer exactly in the format asked "
    "for, without greetings, apologies or remarks before or after."
)


def _fenced(code: str, tag: str) -> str:
    fence = "~~~~" if "```" in code else "```"  # Markdown inside the code must not end it
    return f"{fence}{tag}\n{code}\n{fence}"


def _target_code(text: str, target: Target) -> str:
    """The target as whole lines without their common indentation."""
    begin = line_start(text, target.start)
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
        doc_comment = languages.get(language).doc_comment if language else "comment"
        form = {"docstring": "docstring", "go": "Go doc comment"}.get(doc_comment, "doc comment")
        # Phrased like Explain on purpose: small models asked to "write a docstring" send
        # the code back; asked to describe it, they write prose.
        reply = (
            "Answer with one summary sentence, then, if useful, a sentence or two about "
            "the parameters and the result, in plain prose. Do not repeat the code, write "
            "no code, no comment markers (#, //, /**, *) and no quotes."
        )
        if doc_comment == "go" and target.name and target.kind not in ("selection", "block"):
            reply += f' Start with the name, as Go doc comments do: "{target.name} returns ...".'
        return f"Describe what this {what} does, for its {form}.", reply
    framework = languages.get(language or "").test_framework
    reply = (
        f"Reply with only the test code in one {fence} fenced code block. The tests go in the "
        "same file right after this code: do not repeat the code under test and do not "
        "import it from another module."
    )
    return f"Write unit tests for this {what}, using {framework}.", reply


def _comment_line(language: str | None, words: str) -> str:
    opener, closer = languages.comment_style(language)
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
    tag = languages.get(language).tag if language else ""
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
    return Instruction(system, render(strip_blank_lines(before[:b]), strip_blank_lines(after[:a])))


def _context_lines(text: str, target: Target, spare: int) -> tuple[list[str], list[str]]:
    """Lines before the target (nearest first) and after it, capped in count and in characters
    so no token count ever runs over more than the spare budget could hold."""
    chars = spare * 8  # no tokenizer packs more than ~8 characters of code into a token
    first = line_start(text, target.start)
    last = line_end(text, target.end)
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
