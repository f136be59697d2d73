"""Model references: the short names, ``hf:`` files and ``OWNER/REPO:QUANT`` (the rules are in
the package docstring), parsed without any network access."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from .files import DEFAULT, ModelError

# --------------------------------------------------------------------------------------------
# Model references: names and Hub files
# --------------------------------------------------------------------------------------------

DEFAULT_QUANT = "Q4_K_M"
THEBLOKE_QUANTS = (
    "Q2_K",
    "Q3_K_S",
    "Q3_K_M",
    "Q3_K_L",
    "Q4_0",
    "Q4_K_S",
    "Q4_K_M",
    "Q5_0",
    "Q5_K_S",
    "Q5_K_M",
    "Q6_K",
    "Q8_0",
)
"""The quantizations in each of TheBloke's Code Llama GGUF repositories."""


@dataclass(frozen=True)
class KnownModel:
    """A short name for one of TheBloke's Code Llama GGUF repositories, whose files are named
    ``<name>.<QUANT>.gguf``."""

    name: str
    repo: str
    approx_size: int
    """Bytes of the Q4_K_M file, as the Hub lists it (to 10 MB)."""

    def filename(self, quant: str = DEFAULT_QUANT) -> str:
        return f"{self.name}.{quant}.gguf"


KNOWN_MODELS: dict[str, KnownModel] = {
    m.name: m
    for m in (
        KnownModel("codellama-7b", "TheBloke/CodeLlama-7B-GGUF", 4_080_000_000),
        KnownModel("codellama-13b", "TheBloke/CodeLlama-13B-GGUF", 7_870_000_000),
        KnownModel("codellama-7b-instruct", "TheBloke/CodeLlama-7B-Instruct-GGUF", 4_080_000_000),
        KnownModel("codellama-13b-instruct", "TheBloke/CodeLlama-13B-Instruct-GGUF", 7_870_000_000),
    )
}
DEFAULT_NAME = "codellama-7b"
DEFAULT_REPO = KNOWN_MODELS[DEFAULT_NAME].repo
DEFAULT_FILE = KNOWN_MODELS[DEFAULT_NAME].filename()

RefKind = Literal["path", "name", "hub-file", "hub-quant"]


@dataclass(frozen=True)
class ModelRef:
    """What a model setting names; see the module docstring for the rules."""

    text: str
    """The value as configured (expanded)."""
    source: str
    """The setting's label, for messages."""
    kind: RefKind
    repo: str = ""
    filename: str = ""
    """The file in ``repo`` (names and ``hf:``); found by listing the repository for
    ``OWNER/REPO:QUANT``."""
    quant: str = ""

    @property
    def is_path(self) -> bool:
        return self.kind == "path"

    def describe(self) -> str:
        """How messages name it: ``codellama-13b (TheBloke/CodeLlama-13B-GGUF/codellama-13b.Q4_K_M.gguf)``."""
        if self.kind == "name":
            return f"{self.text} ({self.repo}/{self.filename})"
        return self.text


@dataclass(frozen=True)
class HubDownload:
    """A model about to be downloaded, announced before the bytes flow."""

    ref: ModelRef
    files: tuple[str, ...]
    """The file to load, then the other parts of a split model."""
    size: int | None
    """Bytes of all files, when the Hub says."""

    @property
    def name(self) -> str:
        return self.ref.text

    def describe(self) -> str:
        """``codellama-13b (TheBloke/CodeLlama-13B-GGUF/codellama-13b.Q4_K_M.gguf, 7.87 GB)``."""
        parts = [] if self.ref.kind == "hub-file" else [f"{self.ref.repo}/{self.files[0]}"]
        if len(self.files) > 1:
            parts.append(f"{len(self.files)} parts")
        if self.size:
            parts.append(format_size(self.size))
        return f"{self.name} ({', '.join(parts)})" if parts else self.name


def format_size(size: int) -> str:
    """Bytes for people, in the Hub's decimal units: ``4.08 GB``, ``12.3 MB``."""
    for unit, scale, digits in (("GB", 1e9, 2), ("MB", 1e6, 1), ("kB", 1e3, 1)):
        if size >= scale:
            return f"{size / scale:.{digits}f} {unit}"
    return f"{size} bytes"


_ASCII = re.ASCII
_HUB_QUANT = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*):(?P<quant>\w+)$", _ASCII)
_NAME = re.compile(r"^(?P<name>[A-Za-z0-9][\w.-]*)(?::(?P<quant>\w+))?$", _ASCII)
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$", _ASCII)
_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")
_SPLIT = re.compile(r"^(?P<stem>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)
_TAG = re.compile(r"[-.]([A-Za-z0-9_]+)$")  # llama.cpp's: the quantization ends the stem
_NOT_MODELS = ("mmproj", "imatrix")
_HOW_TO_NAME = (
    "a file needs a path (./model.gguf, ~/models/model.gguf), a model on the Hugging Face Hub "
    "is hf:OWNER/REPO/FILE.gguf or OWNER/REPO:QUANT"
)


def _looks_like_path(text: str) -> bool:
    return (
        text.startswith((".", "~", "/", os.sep))
        or "\\" in text
        or _DRIVE.match(text) is not None
        or text.count("/") > 1
        or text.lower().endswith(".gguf")
    )


def parse_model_ref(text: str, source: str) -> ModelRef:
    """Classify a configured model value (see the module docstring). Raises :class:`ModelError`
    for an unknown name, an unknown quantization of a name, or a malformed ``hf:`` reference;
    touches neither the network nor the Hugging Face cache."""
    if text[:3].lower() == "hf:":
        return _hub_file_ref(text, source)
    if os.path.lexists(text) or _looks_like_path(text):
        return ModelRef(text, source, "path")
    if match := _HUB_QUANT.match(text):
        return ModelRef(text, source, "hub-quant", repo=match["repo"], quant=match["quant"].upper())
    if match := _NAME.match(text):
        return _named_ref(text, source, match["name"], match["quant"])
    return ModelRef(text, source, "path")


def _hub_file_ref(text: str, source: str) -> ModelRef:
    owner, _, rest = text[3:].partition("/")
    name, _, filename = rest.partition("/")
    segments = filename.split("/")
    if (
        not _REPO_ID.match(f"{owner}/{name}")
        or not filename.lower().endswith(".gguf")
        or any(part in ("", ".", "..") for part in segments)
        or "\\" in filename
    ):
        raise ModelError(
            f"not a Hugging Face file reference: {text!r} (from {source}); write "
            f"hf:OWNER/REPO/FILE.gguf, e.g. hf:{DEFAULT_REPO}/{DEFAULT_FILE}"
        )
    parts = _split_parts(filename)
    if filename != parts[0]:
        raise ModelError(
            f"{text} is not the first part of a split model (from {source}); name the first "
            f"part, hf:{owner}/{name}/{parts[0]}: the others are downloaded with it"
        )
    return ModelRef(text, source, "hub-file", repo=f"{owner}/{name}", filename=filename)


def default_model_ref() -> ModelRef:
    """The default model, :data:`DEFAULT_NAME`, whatever files the working folder holds."""
    return _named_ref(DEFAULT_NAME, DEFAULT.label, DEFAULT_NAME, None)


def _named_ref(text: str, source: str, name: str, quant: str | None) -> ModelRef:
    known = KNOWN_MODELS.get(name.lower())
    if known is None:
        raise ModelError(
            f"unknown model name {name!r} (from {source}). The known names are "
            f"{', '.join(KNOWN_MODELS)}, each with an optional :QUANT (e.g. "
            f"codellama-13b:Q5_K_M); {_HOW_TO_NAME}."
        )
    quant = (quant or DEFAULT_QUANT).upper()
    if quant not in THEBLOKE_QUANTS:
        raise ModelError(
            f"unknown quantization {quant} for {known.name} (from {source}); {known.repo} has "
            f"{', '.join(THEBLOKE_QUANTS)} ({DEFAULT_QUANT} without :QUANT)"
        )
    return ModelRef(
        text, source, "name", repo=known.repo, filename=known.filename(quant), quant=quant
    )


def _split_parts(filename: str) -> tuple[str, ...]:
    """All parts of a split GGUF (``x-00001-of-00003.gguf`` ...), or just ``filename``."""
    match = _SPLIT.match(filename)
    if match is None:
        return (filename,)
    count = int(match["count"])
    return tuple(f"{match['stem']}-{i:05d}-of-{count:05d}.gguf" for i in range(1, count + 1))


def _quant_tag(path: str) -> str | None:
    """The quantization a GGUF's name ends with, as llama.cpp reads it (``Q4_K_M``)."""
    stem = path.rsplit("/", 1)[-1]
    if split := _SPLIT.match(stem):
        stem = split["stem"]
    elif stem.lower().endswith(".gguf"):
        stem = stem[: -len(".gguf")]
    tag = _TAG.search(stem)
    return tag[1].upper() if tag else None


def pick_quant(repo: str, quant: str, files: Iterable[str], source: str) -> tuple[str, ...]:
    """The files of ``repo`` that ``OWNER/REPO:QUANT`` names: its one GGUF whose path has
    ``quant`` as a whole tag (with the other parts of a split model). Raises
    :class:`ModelError` naming the quantizations there are when none or several match."""
    models = sorted(
        f
        for f in files
        if f.lower().endswith(".gguf")
        and not any(word in f.rsplit("/", 1)[-1].lower() for word in _NOT_MODELS)
    )
    firsts = [f for f in models if _split_parts(f)[0] == f]
    pattern = re.compile(rf"(?:^|[^A-Za-z0-9]){re.escape(quant)}[.-]", re.IGNORECASE)
    matches = [f for f in firsts if pattern.search(f)]
    if len(matches) == 1:
        return _split_parts(matches[0])
    if not firsts:
        raise ModelError(
            f"{repo} has no GGUF model files (from {source}); cl-lsp needs a model in GGUF "
            "format: look for a repository of GGUF conversions (often named ...-GGUF)"
        )
    if not matches:
        tags = sorted({tag for f in firsts if (tag := _quant_tag(f))})
        example = DEFAULT_QUANT if DEFAULT_QUANT in tags else tags[0] if tags else ""
        there = f"the quantizations there are {', '.join(tags)}" if tags else "it has none"
        then = f"name a file as hf:{repo}/FILE.gguf"
        then = f"write e.g. {repo}:{example}, or {then}" if example else then
        raise ModelError(
            f"{repo} has no GGUF file with the quantization {quant} (from {source}); {there}: "
            f"{then}"
        )
    shown = ", ".join(matches[:6]) + (", ..." if len(matches) > 6 else "")
    raise ModelError(
        f"{repo}:{quant} is ambiguous (from {source}): {len(matches)} GGUF files match "
        f"({shown}); name one as hf:{repo}/FILE.gguf"
    )
