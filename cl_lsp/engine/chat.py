"""Chat prompts for the code actions' instruct model: its own GGUF chat template (rendered in
jinja's sandbox), else Code Llama Instruct's format; template text and user text kept apart so
control tokens are only ever parsed from the template."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class ChatPiece:
    """A run of prompt text. Template text may spell control tokens (`<|im_start|>`) and is
    tokenized with special tokens parsed; user text (code, messages) never is."""

    text: str
    special: bool


# Code Llama Instruct / Llama 2 chat (facebookresearch/codellama `generation.py`,
# `chat_completion`): the system prompt is folded into the first user turn and `[INST]` is
# plain text, so the whole prompt is user text after BOS.
B_INST, E_INST = "[INST]", "[/INST]"
B_SYS, E_SYS = "<<SYS>>\n", "\n<</SYS>>\n\n"
# Stand-ins for the messages while a GGUF chat template renders (invisible separators: no
# template produces them itself).
_SYSTEM_MARK, _USER_MARK = "\u2063system\u2063", "\u2063user\u2063"


class ChatTemplateError(ValueError):
    """The model's chat template cannot be rendered (broken, or reaching outside jinja's
    sandbox); the message is one line for a person."""


def render_chat(
    system: str, user: str, template: str | None, *, bos_token: str = "", eos_token: str = ""
) -> tuple[ChatPiece, ...]:
    """One system and one user message, ready for the assistant's answer.

    With the GGUF's own chat template (`tokenizer.chat_template`) when it has one, else in
    Code Llama Instruct's format. The caller adds BOS when the model wants it and the pieces
    do not start with it. Raises ChatTemplateError when the template cannot be used.
    """
    if not template:
        content = f"{B_SYS}{system}{E_SYS}{user}".strip()
        return (ChatPiece(f"{B_INST} {content} {E_INST}", special=False),)
    rendered = _render_template(template, bos_token, eos_token)
    pieces: list[ChatPiece] = []
    for part in re.split(f"({_SYSTEM_MARK}|{_USER_MARK})", rendered):
        if part == _SYSTEM_MARK:
            pieces.append(ChatPiece(system, special=False))
        elif part == _USER_MARK:
            pieces.append(ChatPiece(user, special=False))
        elif part:
            pieces.append(ChatPiece(part, special=True))
    if not any(piece.text == user and not piece.special for piece in pieces):
        raise ChatTemplateError("the model's chat template does not show the user's message")
    return tuple(pieces)


def _render_template(template: str, bos_token: str, eos_token: str) -> str:
    # The template comes with the model file, from anyone: it runs in jinja's immutable
    # sandbox (no attributes beginning with "_", no mutating methods, bounded ranges), and
    # whatever it raises becomes one ChatTemplateError.
    try:
        return _render_sandboxed(template, bos_token, eos_token)
    except Exception as error:
        lines = str(error).strip().splitlines()
        detail = lines[0] if lines else type(error).__name__
        raise ChatTemplateError(
            f"the model's chat template cannot be used ({type(error).__name__}: {detail})"
        ) from error


def _render_sandboxed(template: str, bos_token: str, eos_token: str) -> str:
    import jinja2.sandbox

    def raise_exception(message: str) -> None:
        raise jinja2.TemplateError(message)

    environment = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    compiled = environment.from_string(template)
    variables = {
        "bos_token": bos_token,
        "eos_token": eos_token,
        "add_generation_prompt": True,
        "raise_exception": raise_exception,
    }
    try:
        return compiled.render(
            messages=[
                {"role": "system", "content": _SYSTEM_MARK},
                {"role": "user", "content": _USER_MARK},
            ],
            **variables,
        )
    except jinja2.TemplateError:  # templates without a system role (Mistral's, say)
        return compiled.render(
            messages=[{"role": "user", "content": f"{_SYSTEM_MARK}\n\n{_USER_MARK}"}], **variables
        )
