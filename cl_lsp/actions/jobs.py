"""Code actions from offer to edit, without the protocol: what to offer for a selection, and
the job that writes one (instruction -> model -> edit) on the engine's writer thread.

Offering touches no model, so listing is instant; an offered action carries an `ActionRequest`
(the document version, the target, the diagnostics) and everything expensive happens when
the editor resolves or runs it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .. import languages
from ..config import camel_dict
from ..engine import EngineError, Writer
from ..engine.chat import ChatTemplateError
from ..syntax import is_identifier_char
from . import (
    ActionKind,
    Diagnostic,
    Edit,
    Target,
    TargetTooLarge,
    document_edit,
    explain_edit,
    extract_code,
    extract_prose,
    find_target,
    fix_edit,
    instruction,
    tests_edit,
)

# Tokens kept free besides the instruction and the answer (chat template, BOS...).
PROMPT_MARGIN = 64

EDITS: dict[ActionKind, Callable[[str, Target, str], Edit | None]] = {
    ActionKind.EXPLAIN: explain_edit,
    ActionKind.FIX: fix_edit,
    ActionKind.DOCUMENT: document_edit,
    ActionKind.TESTS: tests_edit,
}


@dataclass(frozen=True)
class ActionRequest:
    """One offered action; travels to the editor and back as the code action's `data`."""

    kind: ActionKind
    title: str
    uri: str
    version: int
    start: int  # the target, as offsets into the document text of `version`
    end: int
    target_kind: str
    name: str | None
    language: str | None
    diagnostics: tuple[Diagnostic, ...] = ()

    def target(self) -> Target:
        return Target(self.start, self.end, self.target_kind, self.name, self.language)

    def to_data(self) -> dict[str, Any]:
        """The `data` sent with the code action. Fields that are None are left out, not sent
        as JSON null: Neovim 0.7 drops null fields when it sends an action back to resolve."""
        data = _without_nones(asdict(self))
        data["kind"] = self.kind.value
        return {"cl-lsp": data}

    @classmethod
    def from_data(cls, data: Any) -> ActionRequest:
        """The request inside a code action's data; ValueError if it is not ours or broken.
        Optional fields may be missing (or null): they take their defaults."""
        try:
            fields = dict(data["cl-lsp"])
            fields["kind"] = ActionKind(fields["kind"])
            fields.setdefault("name", None)
            fields.setdefault("language", None)
            fields["diagnostics"] = tuple(Diagnostic(**d) for d in fields.get("diagnostics") or ())
            request = cls(**fields)
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"not a cl-lsp code action: {error}") from error
        if not _well_typed(request):
            raise ValueError("not a cl-lsp code action: a field has the wrong type")
        if not (0 <= request.start <= request.end):
            raise ValueError("not a cl-lsp code action: bad target")
        return request


def _without_nones(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _without_nones(item) for key, item in value.items() if item is not None}
    if isinstance(value, (list, tuple)):
        return [_without_nones(item) for item in value]
    return value


def _well_typed(request: ActionRequest) -> bool:
    """The editor sends `data` back as it likes: check the types before trusting it."""

    def optional_str(value: Any) -> bool:
        return value is None or isinstance(value, str)

    integers = (request.version, request.start, request.end)
    return (
        all(isinstance(n, int) and not isinstance(n, bool) for n in integers)
        and isinstance(request.title, str)
        and isinstance(request.uri, str)
        and isinstance(request.target_kind, str)
        and optional_str(request.name)
        and optional_str(request.language)
        and all(
            isinstance(d.line, int)
            and isinstance(d.message, str)
            and optional_str(d.source)
            and optional_str(d.code)
            for d in request.diagnostics
        )
    )


def describe(target: Target) -> str:
    """`function fib`, `the selection`, ..."""
    if target.kind == "selection":
        return "the selection"
    if target.kind == "block":
        return "this block"
    return f"{target.kind} {target.name}" if target.name else f"this {target.kind}"


def offer(
    text: str,
    start: int,
    end: int,
    *,
    uri: str,
    version: int,
    language: str | None,
    diagnostics: Sequence[Diagnostic] = (),
) -> list[ActionRequest]:
    """The actions for a selection (or the cursor), most specific first. No model involved.

    A "selection" of exactly one identifier counts as the cursor: eglot sends the bounds of the
    word at point when nothing is selected, and "Explain `total`" is rarely what was meant.
    """
    low, high = sorted((start, end))
    if low < high and all(is_identifier_char(ch) for ch in text[low:high]):
        start = end = low
    target = find_target(text, start, end, language=language)
    if target is None:
        return []
    what = describe(target)

    def request(kind: ActionKind, title: str, found: Sequence[Diagnostic] = ()) -> ActionRequest:
        return ActionRequest(
            kind,
            title,
            uri,
            version,
            target.start,
            target.end,
            target.kind,
            target.name,
            target.language,
            tuple(found),
        )

    offered = [
        request(ActionKind.FIX, f"Fix: {d.message.splitlines()[0][:80]}", [d]) for d in diagnostics
    ]
    if len(diagnostics) > 1:
        offered.append(
            request(ActionKind.FIX, f"Fix all {len(diagnostics)} problems in {what}", diagnostics)
        )
    document = (
        "Add docstring to"
        if language
        and languages.get(language).doc_comment == "docstring"
        and target.kind != "selection"
        else ("Add documentation comment to")
    )
    offered += [
        request(ActionKind.EXPLAIN, f"Explain {what}"),
        request(ActionKind.FIX, f"Fix {what}", diagnostics),
        request(ActionKind.DOCUMENT, f"{document} {what}"),
        request(ActionKind.TESTS, f"Write unit tests for {what}"),
    ]
    return offered


@dataclass
class ActionRecord:
    """What happened to one action (for the log and `cl-lsp.status`)."""

    kind: str
    title: str
    outcome: str = "running"  # edit, explained, nothing, too_large, stale, cancelled, failed
    prompt: str = ""  # the instruction's user message
    prompt_tokens: int = 0
    generated_tokens: int = 0
    stop_reason: str | None = None
    seconds: float = 0.0
    started: float = field(default_factory=time.monotonic)

    def as_dict(self) -> dict[str, Any]:
        return camel_dict(self, leave_out=("started",))


@dataclass(frozen=True)
class ActionResult:
    edit: Edit | None
    message: str | None  # for the user: the explanation, or why there is no edit
    answer: str  # the model's raw answer


def write_action(
    writer: Writer,
    request: ActionRequest,
    text: str,
    *,
    path: str | None,
    record: ActionRecord,
    on_text: Callable[[str], None] | None = None,
) -> ActionResult:
    """Runs on the writer thread: instruction, model, edit. Raises TargetTooLarge."""
    if request.end > len(text):  # the client sent back offsets that were never offered
        return ActionResult(
            None, "its target is not in the document; ask for the actions again", ""
        )
    target = request.target()
    budget = writer.n_ctx - writer.max_tokens - PROMPT_MARGIN
    told = instruction(
        request.kind,
        text,
        target,
        path=path,
        diagnostics=request.diagnostics,
        count_tokens=writer.count,
        budget=budget,
    )
    record.prompt = told.user
    try:
        tokens = writer.prompt(told.system, told.user)
    except ChatTemplateError as error:  # the model file's template: the user picks another
        raise EngineError(f"{error}; set actions.model to another model") from error
    record.prompt_tokens = len(tokens)
    written = writer.generate(tokens, on_text=on_text)
    record.generated_tokens, record.stop_reason = written.generated_tokens, written.stop_reason
    if written.stop_reason == "cancelled":
        return ActionResult(None, "cancelled", written.text)
    edit = EDITS[request.kind](text, target, written.text)
    message = None
    if request.kind is ActionKind.EXPLAIN:
        message = extract_prose(written.text) or None
    if edit is None and request.kind is ActionKind.FIX and extract_code(written.text):
        message = f"the model found nothing to change in {describe(target)}"
    elif edit is None:
        message = message or f"the model's answer had nothing usable for {describe(target)}"
    return ActionResult(edit, message, written.text)


__all__ = [
    "ActionRecord",
    "ActionRequest",
    "ActionResult",
    "TargetTooLarge",
    "describe",
    "offer",
    "write_action",
]
