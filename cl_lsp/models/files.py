"""Model files: which setting names the model, and whether a path is a readable GGUF file."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

ENV_VAR = "CL_LSP_MODEL"
GGUF_MAGIC = b"GGUF"

ProgressCallback = Callable[[int, "int | None"], None]
"""``progress(bytes_done, bytes_total)``; ``bytes_total`` is ``None`` while unknown."""

_HOW_TO_SET = "set model.path in the settings, pass --model, or set CL_LSP_MODEL"


class ModelError(Exception):
    """A model problem the user can fix; ``str(error)`` says what is wrong and what to do."""


@dataclass(frozen=True)
class ModelSource:
    """Where a model path came from. ``label`` is the name used in messages."""

    label: str
    hint: str
    """How the user changes this source."""

    def __str__(self) -> str:
        return self.label


CLI = ModelSource("--model", "pass a different --model")
SETTING = ModelSource("model.path setting", "change model.path in the editor settings")
ENV = ModelSource(ENV_VAR, f"change or unset the {ENV_VAR} environment variable")
DEFAULT = ModelSource(
    "default", "run `cl-lsp download`, or set model.path / --model / CL_LSP_MODEL"
)
SOURCES: dict[str, ModelSource] = {s.label: s for s in (SETTING, CLI, ENV, DEFAULT)}
"""The sources by label, in precedence order."""
ACTIONS = ModelSource("actions.model setting", "change actions.model in the editor settings")


# --------------------------------------------------------------------------------------------
# Resolution and validation
# --------------------------------------------------------------------------------------------

_VAR_RE = re.compile(r"\$(\w+)|\$\{([^}]*)\}")


def _expand(path: str, env: Mapping[str, str]) -> str:
    """Expand ``$VAR`` / ``${VAR}`` from *env* (unknown ones are left alone) and a leading ``~``."""

    def var(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return env.get(name, match.group(0))

    path = _VAR_RE.sub(var, path)
    if path == "~" or path.startswith(("~/", "~" + os.sep)):
        home = env.get("HOME") or os.path.expanduser("~")
        return home + path[1:]
    return os.path.expanduser(path)  # ~user/...


def resolve_model_path(
    cli_path: str | None,
    setting_path: str | None,
    env: Mapping[str, str] = os.environ,
) -> tuple[str | None, str]:
    """Pick the configured model path: ``model.path``, then ``--model``, then ``CL_LSP_MODEL``.

    Blank values count as unset. Returns ``(path, source label)`` with ``~`` and environment
    variables expanded, or ``(None, "default")`` when nothing is configured. The path is not
    checked here; see :func:`check_model_file`.
    """
    for value, source in ((setting_path, SETTING), (cli_path, CLI), (env.get(ENV_VAR), ENV)):
        if value is not None and value.strip():
            return _expand(value.strip(), env), source.label
    return None, DEFAULT.label


def _display(path: str | os.PathLike[str]) -> str:
    """A path for messages, with the home directory shortened to ``~``."""
    text = os.fspath(path)
    home = os.path.expanduser("~")
    if home not in ("", "~", os.sep) and (text == home or text.startswith(home + os.sep)):
        return "~" + text[len(home) :]
    return text


def _describe_header(head: bytes) -> str:
    """Say what a file that is not GGUF looks like, judging by its first bytes."""
    if not head:
        return "the file is empty (an interrupted download?)"
    stripped = head.lstrip().lower()
    if stripped.startswith((b"<!doctype", b"<html", b"<head", b"<?xml", b"<")):
        return (
            "it looks like an HTML page (a saved web page or error page?); download the .gguf "
            "file itself, e.g. the Hugging Face 'resolve' link rather than the 'blob' page"
        )
    if stripped.startswith(b"version https://git-lfs"):
        return "it is a Git LFS pointer, not the model; run `git lfs pull` or download the file"
    if stripped.startswith((b"{", b"[")):
        return "it looks like JSON text"
    if head[:4] in (b"lmgg", b"fmgg", b"tjgg", b"algg", b"ggml", b"ggmf", b"ggjt", b"ggla"):
        return "it is an old GGML/GGJT model; llama.cpp needs GGUF, so get a .gguf version"
    if head[:2] == b"PK":
        return "it is a ZIP archive (a PyTorch checkpoint?); convert it to GGUF first"
    if len(head) >= 9 and head[8:9] == b"{":
        return "it looks like a safetensors file; convert it to GGUF first"
    if len(head) < len(GGUF_MAGIC):
        return f"the file is only {len(head)} byte(s) long"
    return f"it starts with {head[:16]!r}"


def _file_kind(mode: int) -> str:
    kinds = (
        (stat.S_ISFIFO, "named pipe (FIFO)"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISSOCK, "socket"),
    )
    return next((name for test, name in kinds if test(mode)), "special file")


def check_model_file(path: str, source: str) -> Path:
    """Check that *path* (configured via *source*) is a readable GGUF file; return it as a Path.

    Raises :class:`ModelError` when it is missing, a directory or any other file that is not a
    regular file (a FIFO, a device, /dev/stdin), unreadable, or not GGUF
    (the first four bytes of a GGUF file are ``b"GGUF"``).
    """
    p = Path(path)
    shown = _display(p)
    where = f"from {source}; " if source else ""
    try:
        # stat, never open, before knowing it is a regular file: opening a FIFO blocks, and
        # /dev/stdin would read the protocol's own input.
        mode = p.stat().st_mode
    except FileNotFoundError:
        broken = " (a broken symbolic link)" if p.is_symlink() else ""
        raise ModelError(f"model file not found: {shown}{broken} ({where}{_HOW_TO_SET})") from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ModelError(
            f"cannot read model file: {shown} ({reason}; {where}{_HOW_TO_SET})"
        ) from exc
    if stat.S_ISDIR(mode):
        candidates = sorted(p.glob("*.gguf"))[:3]
        hint = (
            "; it contains " + ", ".join(c.name for c in candidates)
            if candidates
            else "; point it at a .gguf file"
        )
        raise ModelError(
            f"model path is a directory, not a GGUF file: {shown} ({where}{_HOW_TO_SET}){hint}"
        )
    if not stat.S_ISREG(mode):
        raise ModelError(
            f"model path is not a regular file: {shown} is a {_file_kind(mode)} "
            f"({where}{_HOW_TO_SET} to a .gguf file)"
        )
    try:
        with p.open("rb") as f:
            head = f.read(64)
    except PermissionError:
        raise ModelError(
            f"cannot read model file: {shown} (permission denied; {where}fix the file's "
            f"permissions, or {_HOW_TO_SET} to a readable file)"
        ) from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ModelError(
            f"cannot read model file: {shown} ({reason}; {where}{_HOW_TO_SET})"
        ) from exc
    if head[:4] != GGUF_MAGIC:
        raise ModelError(
            f"not a GGUF file: {shown} ({where}{_describe_header(head)}). "
            f"cl-lsp needs a Code Llama model in GGUF format; {_HOW_TO_SET} to a .gguf file."
        )
    return p
