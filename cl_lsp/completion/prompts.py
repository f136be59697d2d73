"""Fill-in-the-middle prompts as token ids, exactly as each family was trained on them.

The families and their layouts are data (`families.py`). For Code Llama (facebookresearch/
codellama `generation.py`, `infilling_prompt_tokens`, and the paper §2.3), with `enc` the
SentencePiece encoding (implicit leading space, no BOS/EOS) and `enc_nospace` the same without
the implicit leading space:

    PSM = [BOS, PRE] + enc(prefix) + [SUF] + enc_nospace(suffix) + [MID]
    SPM = [BOS, PRE, SUF] + enc_nospace(suffix) + [MID] + enc(prefix)

Every family follows the same rules: BOS when the vocabulary adds one, control tokens as ids,
the prefix encoded as the tokenizer encodes a text, the suffix without the implicit leading
space where the vocabulary has one (byte-level BPE vocabularies have none).

SPM is the default where a family was trained with it: the paper reports better single-line
infilling for it (Table 14), and the prefix comes last, so a keystroke at the cursor changes
only the last few tokens and the model's KV cache stays valid for everything before them. When
the prefix ends inside an identifier the model would have to continue a word from a token
split it never saw in training (SPM puts the prefix's last token right before the middle), so
the prompt is healed (the partial word left out) or PSM is used there.

Models without FIM tokens get a plain prefix prompt ("prefix" layout).
User text is always encoded with special tokens disabled: code containing `<PRE>` stays text.
This module is pure: the tokenizer is passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..config import PromptFormat
from ..engine.tokenizer import Encode, encode_nospace
from ..syntax import ends_inside_identifier, is_identifier_char
from .families import FimFormat, Layout, RepoFormat

__all__ = [
    "FimPrompt",
    "Layout",
    "RepoFiles",
    "build_fim_prompt",
    "build_prefix_prompt",
    "build_prompt",
]


@dataclass(frozen=True)
class RepoFiles:
    """Other files' code for a family with repository tokens (`families.RepoFormat`): the
    repository's name, the path of the file being completed, and (path, code) per file."""

    repo: str
    path: str
    files: tuple[tuple[str, str], ...]


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
    fim: FimFormat | None,
    bos: int | None,
    *,
    healing: bool = True,
    files: RepoFiles | None = None,
) -> FimPrompt:
    """The prompt for `setting`: a plain prefix prompt for models without FIM tokens; SPM or PSM
    when forced (and the family was trained with it); by default (auto) the family's preferred
    layout, SPM with token healing when the prefix ends inside a name. An engine that cannot
    constrain the answer's start (`healing` False: inference servers) gets PSM inside a name
    instead, the layout Code Llama's own rules give there. `files`: other files' code, in the
    family's repository format (only families with one get it)."""
    if fim is None:
        return build_prefix_prompt(encode(prefix) if prefix else [], bos, prefix)
    forced = {PromptFormat.PSM: Layout.PSM, PromptFormat.SPM: Layout.SPM}.get(setting)
    if forced in fim.layouts:
        return build_fim_prompt(prefix, suffix, encode, fim, forced, files)
    layout = fim.default_layout
    if layout is not Layout.SPM:
        return build_fim_prompt(prefix, suffix, encode, fim, layout, files)
    if not healing:
        if ends_inside_identifier(prefix) and Layout.PSM in fim.layouts:
            layout = Layout.PSM
        return build_fim_prompt(prefix, suffix, encode, fim, layout)
    return build_healed_prompt(prefix, suffix, encode, fim)


def build_fim_prompt(
    prefix: str,
    suffix: str,
    encode: Encode,
    fim: FimFormat,
    layout: Layout,
    files: RepoFiles | None = None,
) -> FimPrompt:
    try:
        parts = fim.layouts[layout]
    except KeyError:
        raise ValueError(f"{fim.family.title} has no {layout.value} layout") from None
    tokens = [] if fim.bos is None else [fim.bos]
    repository = fim.repository if files is not None else None
    if repository is not None and files is not None and fim.repo_ids is not None:
        head, prefix = _repository_head(repository, files, prefix)
        for piece in head:
            tokens.extend((fim.repo_ids[piece],) if piece in fim.repo_ids else encode(piece))
    texts = {
        "prefix": encode(prefix) if prefix else [],
        "suffix": encode_nospace(encode, suffix) if fim.space_prefix else encode(suffix),
    }
    for part in parts:
        tokens.extend(texts[part] if part in texts else (fim.ids[part],))
    text = fim_text(fim, layout, prefix, suffix)
    if repository is not None and files is not None:
        spelled = {"repo_name": repository.repo_name, "file_sep": repository.file_sep}
        text = "".join(spelled.get(piece, piece) for piece in head) + text
    return FimPrompt(layout, tuple(tokens), text=text)


def _repository_head(
    repository: RepoFormat, files: RepoFiles, prefix: str
) -> tuple[list[str], str]:
    """The prompt's start in the family's repository format, as pieces ("repo_name" and
    "file_sep" stand for the tokens, anything else is text), and the prefix (StarCoder2 starts
    it with the file's path)."""
    head = ["repo_name", files.repo + ("\n" if repository.line_breaks else "")]
    for path, code in files.files:
        head += ["file_sep", f"{path}\n{code.rstrip(chr(10))}\n"]  # a file ends its line
    head.append("file_sep")
    if repository.path_in_prefix:
        return head, f"{files.path}\n{prefix}"
    head.append(f"{files.path}\n")
    return head, prefix


def fim_text(fim: FimFormat, layout: Layout, prefix: str, suffix: str) -> str:
    """The FIM prompt as text, for servers that tokenize it themselves with control tokens
    parsed (Ollama, TGI, llama-cpp-python's server); the server adds BOS. The control tokens are
    spelled as the family's vocabulary spells them: Code Llama's with SentencePiece's
    word-start mark (``▁<PRE>``), since plain ``<PRE>`` is tokenized as text. A llama.cpp
    tokenizer then gives exactly the token-exact prompt except that, in a vocabulary with an
    implicit leading space, the suffix (like all text after a control token) gets the space
    that training did not give it (``enc`` instead of ``enc_nospace``).
    `tests/test_prompts.py` checks this against llama.cpp's tokenizer."""
    texts = {"prefix": prefix, "suffix": suffix}
    return "".join(
        texts[part] if part in texts else fim.text_of(part) for part in fim.layouts[layout]
    )


def build_healed_prompt(prefix: str, suffix: str, encode: Encode, fim: FimFormat) -> FimPrompt:
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
        return _unhealed(prefix, suffix, encode, fim)
    cut = len(prefix)
    while cut > 0 and is_identifier_char(prefix[cut - 1]):
        cut -= 1
    if cut > 0 and prefix[cut - 1] == " ":
        cut -= 1
    head = prefix[:cut]
    head_ids = encode(head) if head else []
    if encode(prefix)[: len(head_ids)] != head_ids:
        return _unhealed(prefix, suffix, encode, fim)
    prompt = build_fim_prompt(head, suffix, encode, fim, Layout.SPM)
    return FimPrompt(Layout.SPM, prompt.tokens, heal=prefix[cut:])


def _unhealed(prefix: str, suffix: str, encode: Encode, fim: FimFormat) -> FimPrompt:
    """Where healing cannot cut the prompt at a token boundary: PSM if the family has it."""
    layout = Layout.PSM if Layout.PSM in fim.layouts else Layout.SPM
    return build_fim_prompt(prefix, suffix, encode, fim, layout)


def build_prefix_prompt(prefix_ids: Sequence[int], bos: int | None, text: str = "") -> FimPrompt:
    """Plain continuation for models without FIM tokens (`text`: the prefix itself)."""
    tokens = ([bos] if bos is not None and bos >= 0 else []) + list(prefix_ids)
    return FimPrompt(Layout.PREFIX, tuple(tokens), text=text)
