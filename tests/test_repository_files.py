"""Repository context's file rules: what may be read from the workspace, asserted on the
files really opened (a Python audit hook sees every open)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cl_lsp.repository.files import FileRules, allowed, read_source, source_files

_opened: list[str] | None = None


def _audit(event: str, args: tuple) -> None:
    if event == "open" and _opened is not None and isinstance(args[0], str | bytes | Path):
        _opened.append(
            str(Path(str(args[0]) if not isinstance(args[0], bytes) else args[0].decode()))
        )


sys.addaudithook(_audit)


@pytest.fixture
def opened() -> Iterator[list[str]]:
    global _opened
    _opened = []
    try:
        yield _opened
    finally:
        _opened = None


def write(root: Path, relative: str, content: str | bytes = "x = 1\n") -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    write(root, ".gitignore", "build/\n*.log\n/top_only.py\n!keep.log\ngenerated/**/*.py\n")
    write(root, "app/main.py", "def main():\n    return helper()\n")
    write(root, "app/util.py", "def helper():\n    return 1\n")
    write(root, "app/.gitignore", "local_*.py\n!local_ok.py\n")
    write(root, "app/local_secret_notes.py")
    write(root, "app/local_ok.py")
    write(root, "app/deep/top_only.py")  # only the root's /top_only.py is ignored
    write(root, "top_only.py")
    write(root, "build/out.py")
    write(root, "generated/a/b/gen.py")
    write(root, "debug.log")
    write(root, "keep.log")  # not a language cl-lsp knows: never opened anyway
    write(root, ".env", "TOKEN=abc\n")
    write(root, "config/credentials.json", '{"key": "x"}\n')
    write(root, "deploy/server.pem", "-----BEGIN PRIVATE KEY-----\n")
    write(root, "assets/logo.png", b"\x89PNG\r\n\x1a\n\0\0")
    write(root, "data/blob.bin", b"\0" * 64)
    write(root, "src/settings.py", 'AWS = "AKIAABCDEFGHIJKLMNOP"\n')
    write(root, "src/nul.py", b"x = 1\0\n")
    write(root, "src/big.py", "x = 1\n" * 20000)
    write(root, "vendor/lib.py")
    write(root, ".git/config.py")
    outside = write(tmp_path, "elsewhere/private.py", "SECRET = 1\n")
    (root / "src/link.py").symlink_to(outside)
    (root / "linked_dir").symlink_to(outside.parent, target_is_directory=True)
    return root


RULES = FileRules(exclude=("vendor/*",), max_bytes=64 * 1024)


def test_the_walk_lists_only_permitted_source_files_and_opens_only_gitignores(workspace, opened):
    files = sorted(p.relative_to(workspace).as_posix() for p in source_files([workspace], RULES))
    assert files == [
        "app/deep/top_only.py",
        "app/local_ok.py",
        "app/main.py",
        "app/util.py",
        "src/nul.py",
        "src/settings.py",
    ]
    assert {Path(p).name for p in opened} == {".gitignore"}


def test_reading_drops_binary_text_and_credentials_and_opens_nothing_else(workspace, opened):
    texts = {
        p.relative_to(workspace).as_posix(): read_source(p, RULES)
        for p in source_files([workspace], RULES)
    }
    assert texts["app/util.py"] == "def helper():\n    return 1\n"
    assert texts["src/nul.py"] is None  # a NUL byte: not text
    assert texts["src/settings.py"] is None  # holds an AWS key id
    read = {Path(p).relative_to(workspace).as_posix() for p in opened if not p.endswith("ignore")}
    assert read == set(texts)
    for never in (".env", "deploy/server.pem", "assets/logo.png", "data/blob.bin", "src/big.py"):
        assert never not in read


@pytest.mark.parametrize(
    ("relative", "expected"),
    [
        pytest.param("app/main.py", True, id="plain source"),
        pytest.param("app/local_secret_notes.py", False, id="nested gitignore"),
        pytest.param("app/local_ok.py", True, id="negated in the nested gitignore"),
        pytest.param("top_only.py", False, id="anchored pattern"),
        pytest.param("app/deep/top_only.py", True, id="anchored pattern elsewhere"),
        pytest.param("build/out.py", False, id="ignored folder"),
        pytest.param("generated/a/b/gen.py", False, id="double star"),
        pytest.param("vendor/lib.py", False, id="user exclude"),
        pytest.param(".env", False, id="secret name"),
        pytest.param("config/credentials.json", False, id="credentials"),
        pytest.param("assets/logo.png", False, id="binary by name"),
        pytest.param("src/big.py", False, id="over the size limit"),
        pytest.param("src/link.py", False, id="symlink out of the workspace"),
        pytest.param(".git/config.py", False, id="inside .git"),
    ],
)
def test_one_file_is_judged_as_the_walk_judges_it(workspace, opened, relative, expected):
    assert allowed(workspace / relative, RULES, [workspace]) is expected
    assert all(Path(p).name == ".gitignore" for p in opened)


def test_nothing_outside_the_workspace_folders_is_listed_or_read(workspace, tmp_path, opened):
    listed = list(source_files([workspace], RULES))
    assert all(workspace in p.resolve().parents for p in listed)
    assert not allowed(tmp_path / "elsewhere/private.py", RULES, [workspace])
    assert not any("elsewhere" in p for p in opened)
