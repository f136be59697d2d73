"""Fill-in-the-middle prompts as token ids, exactly as Code Llama was trained on them.

Reference: facebookresearch/codellama `generation.py` (`infilling_prompt_tokens`) and the paper
§2.3. With `enc` the SentencePiece encoding (implicit leading space, no BOS/EOS) and
`enc_nospace` the same without the implicit leading space:

    PSM = [BOS, PRE] + enc(prefix) + [SUF] + enc_nospace(suffix) + [MID]
    SPM = [BOS, PRE, SUF] + enc_nospace(suffix) + [MID] + enc(prefix)

SPM is the default: the paper reports better single-line infilling for it (Table 14), and the
prefix comes last, so a keystroke at the cursor changes only the last few tokens and the model's
KV cache stays valid for everything before them. When the prefix ends inside an identifier the
model would have to continue a word from a token split it never saw in training (SPM puts the
prefix's last token right before the middle), so PSM is used there.

Models without Code Llama's FIM tokens get a plain prefix prompt ("prefix" format).
User text is always encoded with special tokens disabled: code containing `<PRE>` stays text.
This module is pure: the tokenizer is passed in.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .config import PromptFormat
from .syntax import ends_inside_identifier, is_identifier_char

Encode = Callable[[str], list[int]]
"""SentencePiece-style encoding of user text: implicit leading space, no BOS, special=False."""

# Code Llama writes its FIM tokens with SentencePiece's word-start marker.
FIM_TOKEN_TEXTS = {
    "pre": ("▁<PRE>", "<PRE>"),
    "suf": ("▁<SUF>", "<SUF>"),
    "mid": ("▁<MID>", "<MID>"),
    "eot": ("▁<EOT>", "<EOT>"),
}
# "☺" is a single token in the Llama vocabulary, so "☺" + s encodes as [▁, ☺] + the
# encoding of s with no implicit space before it (codellama `Tokenizer.encode_infilling`).
NOSPACE_MARKER = "☺"


class Layout(str, enum.Enum):
    """The layout actually used for one prompt."""

    SPM = "spm"
    PSM = "psm"
    PREFIX = "prefix"  # model without FIM tokens: continue the prefix


@dataclass(frozen=True)
class FimTokens:
    """Control-token ids of a Code Llama vocabulary."""

    bos: int
    pre: int
    suf: int
    mid: int
    eot: int | None

    @property
    def control_ids(self) -> frozenset[int]:
        ids = {self.bos, self.pre, self.suf, self.mid}
        if self.eot is not None:
            ids.add(self.eot)
        return frozenset(ids)


@dataclass(frozen=True)
class FimPrompt:
    layout: Layout
    tokens: tuple[int, ...]
    heal: str = ""  # text left out of the prompt that the answer must start with


def find_fim_tokens(
    n_vocab: int, token_text: Callable[[int], str], bos: int | None
) -> FimTokens | None:
    """Find Code Llama's FIM tokens by their text (many GGUFs lack the metadata keys).

    Code Llama's ids (32007..32010) are checked first; the whole vocabulary only if needed.
    """
    if bos is None or bos < 0:
        return None
    found: dict[str, int] = {}
    wanted = {text: role for role, texts in FIM_TOKEN_TEXTS.items() for text in texts}

    def look(ids: range) -> None:
        for token_id in ids:
            role = wanted.get(token_text(token_id))
            if role and role not in found:
                found[role] = token_id

    look(range(32007, min(32011, n_vocab)))
    if not {"pre", "suf", "mid"} <= found.keys():
        look(range(n_vocab))
    if not {"pre", "suf", "mid"} <= found.keys():
        return None
    return FimTokens(
        bos=bos, pre=found["pre"], suf=found["suf"], mid=found["mid"], eot=found.get("eot")
    )


def nospace_tokens(
    encode: Encode, text: str, marker: Sequence[int] | None = None
) -> list[int] | None:
    """`text` encoded without SentencePiece's implicit leading space, as `encode("☺" + text)`
    minus the marker's tokens (`marker`: `encode("☺")`, if already known); None when the
    marker merges with the start of `text` (a vocabulary without this shortcut)."""
    if not text:
        return []
    if marker is None:
        marker = encode(NOSPACE_MARKER)
    tokens = encode(NOSPACE_MARKER + text)
    if tokens[: len(marker)] != list(marker):
        return None
    return tokens[len(marker) :]


def encode_nospace(encode: Encode, text: str) -> list[int]:
    """Encode without SentencePiece's implicit leading space (Code Llama's `encode_infilling`)."""
    tokens = nospace_tokens(encode, text)
    if tokens is None:  # the marker merged with the text: vocabulary differs
        raise ValueError("tokenizer cannot encode without the leading space")
    return tokens


def build_prompt(
    setting: PromptFormat,
    prefix: str,
    suffix: str,
    encode: Encode,
    fim: FimTokens | None,
    bos: int | None,
) -> FimPrompt:
    """The prompt for `setting`: a plain prefix prompt for models without FIM tokens; SPM or PSM
    when forced; by default (auto) SPM, with token healing when the prefix ends inside a name."""
    if fim is None:
        return build_prefix_prompt(encode(prefix) if prefix else [], bos)
    if setting is PromptFormat.PSM:
        return build_fim_prompt(prefix, suffix, encode, fim, Layout.PSM)
    if setting is PromptFormat.SPM:
        return build_fim_prompt(prefix, suffix, encode, fim, Layout.SPM)
    return build_healed_prompt(prefix, suffix, encode, fim)


def build_fim_prompt(
    prefix: str, suffix: str, encode: Encode, fim: FimTokens, layout: Layout
) -> FimPrompt:
    prefix_ids = encode(prefix) if prefix else []
    suffix_ids = encode_nospace(encode, suffix)
    if layout is Layout.SPM:
        tokens = [fim.bos, fim.pre, fim.suf, *suffix_ids, fim.mid, *prefix_ids]
    elif layout is Layout.PSM:
        tokens = [fim.bos, fim.pre, *prefix_ids, fim.suf, *suffix_ids, fim.mid]
    else:
        raise ValueError(f"not a FIM layout: {layout}")
    return FimPrompt(layout, tuple(tokens))


def build_healed_prompt(prefix: str, suffix: str, encode: Encode, fim: FimTokens) -> FimPrompt:
    """SPM with token healing when the prefix ends inside a name.

    The partial word (with the space before it, which SentencePiece glues to the word) is left
    out, so the prompt ends at a token boundary as in training and stays the same while the
    word is typed; the answer is then constrained to begin with the left-out text. Falls back to
    PSM if the cut is not a token boundary of the whole prefix's encoding.
    """
    if not ends_inside_identifier(prefix):
        return build_fim_prompt(prefix, suffix, encode, fim, Layout.SPM)
    word_start = len(prefix)
    while word_start > 0 and is_identifier_char(prefix[word_start - 1]):
        word_start -= 1
    if not prefix[word_start:].isascii():  # non-ASCII words may need byte tokens: no healing
        return build_fim_prompt(prefix, suffix, encode, fim, Layout.PSM)
    cut = len(prefix)
    while cut > 0 and is_identifier_char(prefix[cut - 1]):
        cut -= 1
    if cut > 0 and prefix[cut - 1] == " ":
        cut -= 1
    head = prefix[:cut]
    head_ids = encode(head) if head else []
    if encode(prefix)[: len(head_ids)] != head_ids:
        return build_fim_prompt(prefix, suffix, encode, fim, Layout.PSM)
    prompt = build_fim_prompt(head, suffix, encode, fim, Layout.SPM)
    return FimPrompt(Layout.SPM, prompt.tokens, heal=prefix[cut:])


def build_prefix_prompt(prefix_ids: Sequence[int], bos: int | None) -> FimPrompt:
    """Plain continuation for models without FIM tokens."""
    tokens = ([bos] if bos is not None and bos >= 0 else []) + list(prefix_ids)
    return FimPrompt(Layout.PREFIX, tuple(tokens))


# -- instruct prompts (code actions) -------------------------------------------------------------


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
