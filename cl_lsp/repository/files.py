"""Which workspace files repository context may read, and reading them.

Privacy first: a file is read only if it lies inside a workspace folder (after resolving
symlinks), no `.gitignore` on its way down from that folder ignores it, no user exclude
pattern matches it, its name is not a likely secret's (`.env`, keys, credentials), a language
cl-lsp knows names it (so binaries and data files are never opened), and it is not larger
than the size limit. After reading, text with a NUL byte or a secret-looking token (private
key blocks, cloud and forge tokens) is dropped. Every read goes through `read_source`.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..languages import grammar_named_by

# Names of files that hold secrets more often than code; never opened.
SECRET_NAMES = (
    ".env",
    ".env.*",
    "*.env",
    ".envrc",
    ".netrc",
    ".npmrc",
    ".pypirc",
    ".git-credentials",
    "credentials",
    "credentials.*",
    "*secret*",
    "*.pem",
    "*.key",
    "*.p12",
    "*.pfx",
    "*.jks",
    "*.keystore",
    "*.kdbx",
    "id_rsa*",
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
    "*.tfstate",
    "*.tfvars",
)
# Text that is a credential wherever it appears; a file holding one is dropped whole.
SECRET_TEXT = re.compile(
    r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----"
    r"|\bAKIA[0-9A-Z]{16}\b"  # AWS access key id
    r"|\bgh[pousr]_[A-Za-z0-9]{36,}\b"  # GitHub tokens
    r"|\bglpat-[A-Za-z0-9_-]{20,}\b"  # GitLab
    r"|\bxox[abposr]-[A-Za-z0-9-]{10,}\b"  # Slack
    r"|\bsk-(?:proj-)?[A-Za-z0-9_-]{20,}\b"  # OpenAI-style keys
    r"|\bAIza[0-9A-Za-z_-]{35}\b"  # Google API keys
)
SKIPPED_DIRS = {".git", ".hg", ".svn"}


@dataclass(frozen=True)
class FileRules:
    """What may be read: user excludes (globs on the path relative to its workspace folder,
    or on the file name) and the size limit."""

    exclude: Sequence[str] = ()
    max_bytes: int = 256 * 1024


@dataclass
class Ignores:
    """The `.gitignore` patterns in force in one folder: its own, after its parents'."""

    rules: list[tuple[Path, str, bool, bool]] = field(default_factory=list)

    def under(self, folder: Path) -> Ignores:
        """This folder's rules, its `.gitignore` (if any) added."""
        found = folder / ".gitignore"
        if not found.is_file():
            return self
        rules = list(self.rules)
        for line in found.read_text(encoding="utf-8", errors="replace").splitlines():
            line = line.rstrip()
            if not line or line.startswith("#"):
                continue
            negated = line.startswith("!")
            pattern = line[1:] if negated else line
            pattern = pattern.replace("\\#", "#").replace("\\!", "!")
            directory_only = pattern.endswith("/")
            rules.append((folder, pattern.rstrip("/"), negated, directory_only))
        return Ignores(rules)

    def ignores(self, path: Path, is_dir: bool) -> bool:
        """Whether the last rule matching `path` ignores it (git's order: later rules win)."""
        ignored = False
        for base, pattern, negated, directory_only in self.rules:
            if directory_only and not is_dir:
                continue
            if _matches(pattern, path.relative_to(base).as_posix()):
                ignored = not negated
        return ignored


def _matches(pattern: str, relative: str) -> bool:
    """gitignore matching: a pattern with a slash (other than at its end) is anchored to its
    `.gitignore`'s folder; one without matches a name at any depth. `**` spans folders."""
    anchored = "/" in pattern
    pattern = pattern.lstrip("/")
    if not anchored:
        return fnmatch.fnmatchcase(relative.rsplit("/", 1)[-1], pattern)
    regex = _glob_regex(pattern)
    return re.fullmatch(regex, relative) is not None


def _glob_regex(pattern: str) -> str:
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("/**", i) and i + 3 == len(pattern):
            out.append("/.*")
            i += 3
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                out.append(re.escape("["))
                i += 1
            else:
                body = pattern[i + 1 : end].replace("\\", "\\\\")
                out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
                i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)


def secret_name(name: str) -> bool:
    lowered = name.lower()
    return any(fnmatch.fnmatchcase(lowered, pattern) for pattern in SECRET_NAMES)


def excluded(relative: str, rules: FileRules) -> bool:
    name = relative.rsplit("/", 1)[-1]
    return any(
        fnmatch.fnmatchcase(relative, pattern) or fnmatch.fnmatchcase(name, pattern)
        for pattern in rules.exclude
    )


def inside(path: Path, roots: Sequence[Path]) -> Path | None:
    """The workspace folder `path` really lies in (symlinks resolved), or None."""
    try:
        real = path.resolve(strict=True)
    except OSError:
        return None
    for root in roots:
        try:
            real.relative_to(root.resolve())
        except ValueError:
            continue
        return root.resolve()
    return None


def source_files(roots: Sequence[Path], rules: FileRules) -> Iterator[Path]:
    """The files of the workspace folders that repository context may read, folder by folder
    (ignored folders are not entered, nothing is opened but `.gitignore` files)."""
    for root in roots:
        root = root.resolve()
        if root.is_dir():
            yield from _walk(root, root, Ignores().under(root), rules)


def _walk(root: Path, folder: Path, ignores: Ignores, rules: FileRules) -> Iterator[Path]:
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError:
        return
    for entry in entries:
        path = Path(entry.path)
        relative = path.relative_to(root).as_posix()
        is_dir = entry.is_dir()
        if ignores.ignores(path, is_dir) or excluded(relative, rules):
            continue
        if is_dir:
            if entry.name in SKIPPED_DIRS or entry.is_symlink():
                continue
            yield from _walk(root, path, ignores.under(path), rules)
        elif entry.is_file():
            # Only a symlink can lead out of the folder the walk is in.
            if entry.is_symlink() and inside(path, [root]) is None:
                continue
            if _permitted(entry.name, entry.stat().st_size, rules):
                yield path


def _permitted(name: str, size: int, rules: FileRules) -> bool:
    """The rules a file's name and size decide: not a secret's name, a known language's,
    within the size limit."""
    return not secret_name(name) and grammar_named_by(name) is not None and size <= rules.max_bytes


def allowed(path: Path, rules: FileRules, roots: Sequence[Path]) -> bool:
    """All the rules for one file (an open document's, a watched file's change): inside a
    workspace folder, permitted by name and size, not excluded, and not ignored by any
    `.gitignore` from that folder down to it."""
    root = inside(path, roots)
    if root is None:
        return False
    try:
        size = path.stat().st_size
    except OSError:
        return False
    if not _permitted(path.name, size, rules):
        return False
    real = path.resolve()
    relative = real.relative_to(root)
    if excluded(relative.as_posix(), rules):
        return False
    ignores = Ignores().under(root)
    folder = root
    for part in relative.parts[:-1]:
        folder = folder / part
        if part in SKIPPED_DIRS or ignores.ignores(folder, True):
            return False
        ignores = ignores.under(folder)
    return not ignores.ignores(real, False)


def read_source(path: Path, rules: FileRules) -> str | None:
    """A permitted file's text, or None when it turns out binary, oversized or to hold a
    credential. The only place repository context opens a workspace file."""
    try:
        with path.open("rb") as handle:
            data = handle.read(rules.max_bytes + 1)
    except OSError:
        return None
    if len(data) > rules.max_bytes or b"\0" in data:
        return None
    text = data.decode("utf-8", errors="replace")
    return None if SECRET_TEXT.search(text) else text
