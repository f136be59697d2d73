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
from collections.abc import Sequence
from dataclasses import dataclass

from ..config import PromptFormat
from ..engine.interface import FimTokens
from ..engine.tokenizer import Encode, encode_nospace
from ..syntax import ends_inside_identifier, is_identifier_char


class Layout(str, enum.Enum):
    """The layout actually used for one prompt."""

    SPM = "spm"
    PSM = "psm"
    PREFIX = "prefix"  # model without FIM tokens: continue the prefix


@dataclass(frozen=True)
class FimPrompt:
    layout: Layout
    tokens: tuple[int, ...]
    heal: str = ""  # text left out of the prompt that the answer must start with
    text: str = ""  # the same prompt as text, for servers that take no token ids (`fim_text`)


def build_prompt(
    setting: PromptFormat,
    prefix: str,
    suffix: str,
    encode: Encode,
    fim: FimTokens | None,
    bos: int | None,
    *,
    healing: bool = True,
) -> FimPrompt:
    """The prompt for `setting`: a plain prefix prompt for models without FIM tokens; SPM or PSM
    when forced; by default (auto) SPM, with token healing when the prefix ends inside a name.
    An engine that cannot constrain the answer's start (`healing` False: inference servers)
    gets PSM inside a name instead, the layout Code Llama's own rules give there."""
    if fim is None:
        return build_prefix_prompt(encode(prefix) if prefix else [], bos, prefix)
    if setting is PromptFormat.PSM:
        return build_fim_prompt(prefix, suffix, encode, fim, Layout.PSM)
    if setting is PromptFormat.SPM:
        return build_fim_prompt(prefix, suffix, encode, fim, Layout.SPM)
    if not healing:
        layout = Layout.PSM if ends_inside_identifier(prefix) else Layout.SPM
        return build_fim_prompt(prefix, suffix, encode, fim, layout)
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
    return FimPrompt(layout, tuple(tokens), text=fim_text(layout, prefix, suffix))


def fim_text(layout: Layout, prefix: str, suffix: str) -> str:
    """The FIM prompt as text, for servers that tokenize it themselves with control tokens
    parsed (Ollama, TGI, llama-cpp-python's server). The control tokens are spelled as Code
    Llama's vocabulary spells them, with SentencePiece's word-start mark (``▁<PRE>``): plain
    ``<PRE>`` is tokenized as text. A llama.cpp tokenizer then gives exactly the token-exact
    prompt except that the suffix, like all text after a control token, gets the implicit
    leading space that training did not give it (``enc`` instead of ``enc_nospace``); the
    server adds BOS. `tests/test_prompts.py` checks this against llama.cpp's tokenizer."""
    if layout is Layout.SPM:
        return f"{TEXT_PRE}{TEXT_SUF}{suffix}{TEXT_MID}{prefix}"
    if layout is Layout.PSM:
        return f"{TEXT_PRE}{prefix}{TEXT_SUF}{suffix}{TEXT_MID}"
    raise ValueError(f"not a FIM layout: {layout}")


TEXT_PRE, TEXT_SUF, TEXT_MID = "▁<PRE>", "▁<SUF>", "▁<MID>"


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


def build_prefix_prompt(prefix_ids: Sequence[int], bos: int | None, text: str = "") -> FimPrompt:
    """Plain continuation for models without FIM tokens (`text`: the prefix itself)."""
    tokens = ([bos] if bos is not None and bos >= 0 else []) + list(prefix_ids)
    return FimPrompt(Layout.PREFIX, tuple(tokens), text=text)
