"""Fill-in-the-middle model families as data: each family's control tokens, the prompt layouts
it was trained with, and the tokens that end its middle; and which family a model is.

Each family's format is quoted from its authors' own code or documentation (`source`). A
layout is the order of the parts after BOS (which the prompt gets when the vocabulary adds
one, as the model's own tokenizer does): control tokens by role (``pre``, ``suf``, ``mid``)
and the user's text (``prefix``, ``suffix``). Control tokens are always ids, never tokenized
from text; the text is encoded with special tokens off, so code that spells ``<fim_prefix>``
stays text.

Which family a model is comes from the model itself: the FIM token ids llama.cpp reads from
the GGUF's metadata (``tokenizer.ggml.fim_pre_token_id`` and friends) or finds by their text,
then the token texts each family is known by. The model's file name decides only when there is
no vocabulary to ask (an inference server that takes text); ``completion.template`` overrides.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..engine.interface import Tokenizer


class Layout(str, enum.Enum):
    """The layout of one prompt."""

    SPM = "spm"  # suffix first, prefix last: a keystroke changes only the prompt's end
    PSM = "psm"  # prefix, suffix, then the middle
    PREFIX = "prefix"  # a model without FIM tokens: continue the prefix


# A layout's parts: control-token roles and the two texts.
Part = str  # "pre", "suf", "mid", "prefix", "suffix"


@dataclass(frozen=True)
class RepoFormat:
    """How a family was trained on several files of one repository: its repository-name and
    file-separator tokens, and where the file being completed names its path."""

    repo_name: str
    file_sep: str
    # StarCoder2: `<file_sep><fim_prefix>path\nprefix`; Qwen2.5-Coder: `<|file_sep|>path\n`
    # before `<|fim_prefix|>`.
    path_in_prefix: bool
    # Qwen2.5-Coder: a line break after the repository's name.
    line_breaks: bool
    source: str


@dataclass(frozen=True)
class Family:
    name: str  # the `completion.template` value
    title: str
    # Each role's token texts, the first as the family writes it in text prompts.
    pre: tuple[str, ...]
    suf: tuple[str, ...]
    mid: tuple[str, ...]  # empty: the model answers right after its prompt (Codestral)
    ends: tuple[str, ...]  # what ends the middle
    stops: tuple[str, ...]  # other tokens that end it (file and repository separators)
    layouts: Mapping[Layout, tuple[Part, ...]]  # trained layouts, the preferred one first
    source: str
    # Tokens only this family has, to tell it from another with the same markers.
    signature: tuple[str, ...] = ()
    # Words in a model's file name that name the family (when nothing else can tell).
    names: tuple[str, ...] = ()
    # The repository format, for vocabularies with its tokens (StarCoder has none, StarCoder2
    # has them): other files' code goes in as the family read repositories in training.
    repository: RepoFormat | None = None

    @property
    def default_layout(self) -> Layout:
        return next(iter(self.layouts))

    def roles(self) -> dict[str, tuple[str, ...]]:
        roles = {"pre": self.pre, "suf": self.suf}
        if self.mid:
            roles["mid"] = self.mid
        return roles

    def marker_texts(self) -> tuple[str, ...]:
        return self.pre + self.suf + self.mid


_PSM: tuple[Part, ...] = ("pre", "prefix", "suf", "suffix", "mid")
_SPM: tuple[Part, ...] = ("pre", "suf", "suffix", "mid", "prefix")

CODE_LLAMA = Family(
    name="codellama",
    title="Code Llama",
    pre=("▁<PRE>", "<PRE>"),
    suf=("▁<SUF>", "<SUF>"),
    mid=("▁<MID>", "<MID>"),
    ends=("▁<EOT>", "<EOT>"),
    stops=(),
    # SPM first: better single-line infilling (paper, Table 14), and a keystroke at the
    # cursor changes only the prompt's last tokens.
    layouts={Layout.SPM: _SPM, Layout.PSM: _PSM},
    source="facebookresearch/codellama llama/generation.py (infilling_prompt_tokens); paper §2.3",
    names=("codellama", "code-llama", "code_llama"),
)

STARCODER = Family(
    name="starcoder",
    title="StarCoder, StarCoder2, Granite Code",
    pre=("<fim_prefix>",),
    suf=("<fim_suffix>",),
    mid=("<fim_middle>",),
    ends=("<|endoftext|>",),
    stops=("<file_sep>", "<repo_name>", "<fim_pad>", "<fim_prefix>", "<fim_suffix>"),
    layouts={Layout.PSM: _PSM},
    source="bigcode-project/starcoder README (fill-in-the-middle); bigcode/starcoder2 model card",
    names=("starcoder", "granite"),
    repository=RepoFormat(
        "<repo_name>",
        "<file_sep>",
        path_in_prefix=True,
        line_breaks=False,
        source="StarCoder 2 paper §5.1: <repo_name>reponame<file_sep>filepath0\\ncode0"
        "<file_sep><fim_prefix>filepath1\\ncode1_pre<fim_suffix>code1_suf<fim_middle>",
    ),
)

DEEPSEEK_CODER = Family(
    name="deepseek-coder",
    title="DeepSeek-Coder",
    pre=("<｜fim▁begin｜>",),
    suf=("<｜fim▁hole｜>",),
    mid=("<｜fim▁end｜>",),
    ends=("<｜end▁of▁sentence｜>", "<|EOT|>"),
    stops=("<｜fim▁begin｜>", "<｜fim▁hole｜>"),
    # Trained with PSM only (DeepSeek-Coder paper, §3.1: "PSM mode").
    layouts={Layout.PSM: _PSM},
    source="deepseek-ai/DeepSeek-Coder README (code insertion); paper §3.1",
    names=("deepseek-coder", "deepseekcoder", "deepseek"),
)

CODEGEMMA = Family(
    name="codegemma",
    title="CodeGemma",
    pre=("<|fim_prefix|>",),
    suf=("<|fim_suffix|>",),
    mid=("<|fim_middle|>",),
    ends=("<|file_separator|>", "<eos>"),
    stops=("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),
    layouts={Layout.PSM: _PSM},
    source="google/codegemma-2b model card (prompt format; stop at <|file_separator|>)",
    signature=("<|file_separator|>",),
    names=("codegemma",),
)

QWEN_CODER = Family(
    name="qwen2.5-coder",
    title="Qwen2.5-Coder",
    pre=("<|fim_prefix|>",),
    suf=("<|fim_suffix|>",),
    mid=("<|fim_middle|>",),
    ends=("<|endoftext|>",),
    stops=(
        "<|fim_pad|>",
        "<|repo_name|>",
        "<|file_sep|>",
        "<|im_end|>",
        "<|fim_prefix|>",
        "<|fim_suffix|>",
    ),
    layouts={Layout.PSM: _PSM},
    source="QwenLM/Qwen2.5-Coder README (file-level code completion, fill-in-the-middle)",
    names=("qwen",),
    repository=RepoFormat(
        "<|repo_name|>",
        "<|file_sep|>",
        path_in_prefix=False,
        line_breaks=True,
        source="QwenLM/Qwen2.5-Coder README (repository-level code completion): "
        "<|repo_name|>{repo}\\n<|file_sep|>{path}\\n{code}\\n...<|file_sep|>{path}\\n"
        "<|fim_prefix|>...",
    ),
)

CODESTRAL = Family(
    name="codestral",
    title="Codestral",
    pre=("[PREFIX]",),
    suf=("[SUFFIX]",),
    mid=(),
    ends=("</s>",),
    stops=("[PREFIX]", "[SUFFIX]"),
    # Suffix first and the answer right after the prefix: SPM, with no middle token.
    layouts={Layout.SPM: ("suf", "suffix", "pre", "prefix")},
    source="mistralai/mistral-common InstructTokenizerV2.encode_fim: [BOS, SUFFIX] + suffix + "
    "[PREFIX] + prefix",
    names=("codestral",),
)

# Order matters where markers are shared: CodeGemma (by its signature) before Qwen.
FAMILIES: tuple[Family, ...] = (
    CODE_LLAMA,
    STARCODER,
    DEEPSEEK_CODER,
    CODEGEMMA,
    QWEN_CODER,
    CODESTRAL,
)
BY_NAME = {family.name: family for family in FAMILIES}

#: Every family's control-token texts, for post-processing answers that arrive as text.
CONTROL_TEXTS: frozenset[str] = frozenset(
    text for family in FAMILIES for text in family.marker_texts() + family.ends + family.stops
)


@dataclass(frozen=True)
class FimFormat:
    """A family as one vocabulary spells it: the ids of its control tokens."""

    family: Family
    ids: Mapping[str, int]  # role ("pre", "suf", "mid") -> token id
    stop_ids: frozenset[int]  # the family's end tokens
    detected_by: str  # "llama.cpp", "token texts", "setting", "model name", "default"
    bos: int | None = None  # the vocabulary adds BOS: the prompt starts with it
    space_prefix: bool = False  # the vocabulary adds an implicit leading space
    # The repository tokens' ids ("repo_name", "file_sep"), when the vocabulary has them.
    repo_ids: Mapping[str, int] | None = None

    @property
    def repository(self) -> RepoFormat | None:
        """The family's repository format, if this vocabulary can spell it."""
        return self.family.repository if self.repo_ids is not None else None

    @property
    def name(self) -> str:
        return self.family.name

    @property
    def layouts(self) -> Mapping[Layout, tuple[Part, ...]]:
        return self.family.layouts

    @property
    def default_layout(self) -> Layout:
        return next(iter(self.layouts))

    def text_of(self, role: str) -> str:
        return self.family.roles()[role][0]


class TemplateError(ValueError):
    """`completion.template` names a family the model does not have the tokens of."""


def detect_family(vocab: Tokenizer, template: str = "auto") -> FimFormat | None:
    """The model's FIM format (None: not a fill-in-the-middle model).

    ``template``: "auto" (detect), "prefix" (no FIM), or a family's name (its tokens must be
    in the vocabulary: raises `TemplateError` otherwise)."""
    if template == "prefix":
        return None
    if template != "auto":
        family = BY_NAME.get(template)
        if family is None:
            raise TemplateError(f"unknown completion.template {template!r}")
        found = _resolve(vocab, family, "setting")
        if found is None:
            missing = ", ".join(text[0] for text in family.roles().values())
            raise TemplateError(
                f"completion.template is {template!r} but the model has no {missing} tokens"
            )
        return found
    return _detect(vocab)


def family_by_file_name(name: str) -> Family | None:
    """The family a model's (or a served model's) name suggests: the last resort."""
    lowered = name.lower()
    for family in FAMILIES:
        if any(word in lowered for word in family.names):
            return family
    return None


def _detect(vocab: Tokenizer) -> FimFormat | None:
    """The family of the prefix token llama.cpp names (from the GGUF's metadata or its own
    list of token texts), else the first family whose tokens the vocabulary has."""
    pre = vocab.fim_ids.get("pre")
    if pre is not None:
        named = vocab.token_text(pre)
        found = _first_found(vocab, [f for f in FAMILIES if named in f.pre], "llama.cpp")
        if found is not None:
            return found
    return _first_found(vocab, FAMILIES, "token texts")


def _first_found(
    vocab: Tokenizer, families: Sequence[Family], detected_by: str
) -> FimFormat | None:
    for family in families:
        if _has_signature(vocab, family):
            found = _resolve(vocab, family, detected_by)
            if found is not None:
                return found
    return None


def _has_signature(vocab: Tokenizer, family: Family) -> bool:
    return all(vocab.token_id(text) is not None for text in family.signature)


def _resolve(vocab: Tokenizer, family: Family, detected_by: str) -> FimFormat | None:
    ids: dict[str, int] = {}
    for role, texts in family.roles().items():
        token = _first_id(vocab, texts)
        if token is None:
            return None
        ids[role] = token
    stops = {
        token for text in family.ends + family.stops if (token := vocab.token_id(text)) is not None
    }
    bos = vocab.bos if vocab.add_bos and vocab.bos >= 0 else None
    repo_ids = None
    if family.repository is not None:
        named = vocab.token_id(family.repository.repo_name)
        separator = vocab.token_id(family.repository.file_sep)
        if named is not None and separator is not None:
            repo_ids = {"repo_name": named, "file_sep": separator}
    return FimFormat(family, ids, frozenset(stops), detected_by, bos, vocab.space_prefix, repo_ids)


def _first_id(vocab: Tokenizer, texts: tuple[str, ...]) -> int | None:
    for text in texts:
        token = vocab.token_id(text)
        if token is not None:
            return token
    return None


def text_format(family: Family, detected_by: str) -> FimFormat:
    """A family for a server that takes text: placeholder ids (never sent), the family's
    spellings in the text form (the server adds BOS)."""
    ids = {role: -(index + 2) for index, role in enumerate(family.roles())}
    # No repository format: without the vocabulary nobody can tell StarCoder2 (which has the
    # tokens) from StarCoder (which would read them as text).
    return FimFormat(family, ids, frozenset(), detected_by)


@functools.lru_cache(maxsize=16)
def fim_format(vocab: Tokenizer, template: str = "auto") -> FimFormat | None:
    """`detect_family` once per vocabulary (a server's tokenizer answers over HTTP). Without a
    vocabulary (a server that takes text): the family `template` names, else the one the
    served model's name suggests, else Code Llama."""
    if not vocab.placeholder_ids:
        return detect_family(vocab, template)
    if template == "prefix":
        return None
    if template != "auto" and template in BY_NAME:
        return text_format(BY_NAME[template], "setting")
    family = family_by_file_name(vocab.model_name)
    return text_format(family or CODE_LLAMA, "model name" if family else "default")


_CONTROL_PATTERN = "|".join(
    re.escape(text.removeprefix("▁")) for text in sorted(CONTROL_TEXTS, key=len, reverse=True)
)
#: A control token spelled out in an answer (a server that streams text may print one).
SPELLED_CONTROL = re.compile(rf"\s?(?:{_CONTROL_PATTERN})")
