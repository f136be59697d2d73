"""The workspace's definitions, by name: built once off the event loop, then kept current file
by file (an open document's text as it is typed, a saved or watched file from disk).

Only `files.read_source` reads, and only files `files` permits. The index holds each file's
`FileTags`, never its text, and stops taking new files at a memory cap (estimated from what it
holds), so a huge workspace costs a bounded amount: the files indexed first (the walk's order,
open documents always) are kept.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .. import languages
from ..languages import grammar_named_by
from .files import FileRules, allowed, read_source, source_files
from .tags import Definition, FileTags, Import, file_tags

log = logging.getLogger(__name__)

#: Bytes counted per definition besides its texts (the objects, the name table's entry).
DEFINITION_OVERHEAD = 400
FILE_OVERHEAD = 600
#: A file's entry for one member name it writes: its slot in the file's tuple and a share of
#: the name and its count, which files share (measured on npm: 28 bytes).
MEMBER_USE_OVERHEAD = 28


@dataclass
class IndexStats:
    files: int = 0
    definitions: int = 0
    bytes: int = 0  # the estimate the cap is checked against
    full: bool = False  # the cap was reached: files were left out
    timed_out: bool = False  # the build's time ran out: files were left out
    seconds: float = 0.0  # the last full build


#: A line longer than this marks generated code (minified scripts): no definitions from it.
MINIFIED_LINE = 2000


def _minified(text: str) -> bool:
    return any(len(line) > MINIFIED_LINE for line in text.split("\n"))


def _cost(tags: FileTags) -> int:
    return (
        FILE_OVERHEAD
        + sum(
            DEFINITION_OVERHEAD + len(d.snippet) + len(d.name) + len(d.path)
            for d in tags.definitions
        )
        + MEMBER_USE_OVERHEAD * len(tags.members_used)
    )


class RepositoryIndex:
    """Definitions of the files of some workspace folders, by name; thread-safe."""

    def __init__(
        self, roots: Sequence[Path], rules: FileRules, max_bytes: int = 64 * 1024 * 1024
    ) -> None:
        self.roots = [root.resolve() for root in roots]
        self.rules = rules
        self.max_bytes = max_bytes
        self.stats = IndexStats()
        self._files: dict[str, FileTags] = {}
        self._by_name: dict[str, list[Definition]] = {}
        # Files by name and by folder name, so an import's "*/tail" looks at a few files.
        self._by_basename: dict[str, set[str]] = {}
        self._by_folder: dict[str, set[str]] = {}
        self._classes: set[str] = set()  # names that some class has
        self._member_uses: Counter[str] = Counter()  # how many files write `x.name`
        self._lock = threading.Lock()
        self._parsers: dict[str, object] = {}  # the indexing thread's own (parsers are per thread)

    # -- building ----------------------------------------------------------------------------

    def build(
        self,
        stop: threading.Event | None = None,
        between: Callable[[], None] | None = None,
        seconds: float | None = None,
    ) -> None:
        """Index every permitted file of the workspace folders (call off the event loop);
        `between` runs before each file (the server waits there while the model runs);
        after `seconds` the files not reached yet are left out."""
        started = time.monotonic()
        for path in source_files(self.roots, self.rules):
            if between is not None:
                between()
            if stop is not None and stop.is_set():
                return
            if self.stats.full:
                break
            if seconds is not None and time.monotonic() - started > seconds:
                self.stats.timed_out = True
                break
            key = path.as_posix()
            if key in self._files:
                continue  # an open document indexed meanwhile is newer than the disk
            text = read_source(path, self.rules)
            if text is not None:
                self._put(key, text, open_document=False)
        self.stats.seconds = time.monotonic() - started
        log.info(
            "repository index: %d files, %d definitions, ~%.1f MB in %.1f s%s",
            self.stats.files,
            self.stats.definitions,
            self.stats.bytes / 1e6,
            self.stats.seconds,
            " (memory cap reached: files left out)"
            if self.stats.full
            else " (time ran out: files left out)"
            if self.stats.timed_out
            else "",
        )

    def update_text(self, path: Path, text: str) -> bool:
        """An open document's text (as typed): indexed if the rules permit the file."""
        if not allowed(path, self.rules, self.roots):
            return False
        self._put(path.resolve().as_posix(), text, open_document=True)
        return True

    def update_file(self, path: Path) -> None:
        """A file changed on disk (saved, or a watched file): read it again, or drop it."""
        key = path.resolve().as_posix() if path.exists() else path.as_posix()
        text = read_source(path, self.rules) if allowed(path, self.rules, self.roots) else None
        if text is None:
            self.remove(Path(key))
        else:
            self._put(key, text, open_document=False)

    def remove(self, path: Path) -> None:
        with self._lock:
            old = self._files.pop(path.as_posix(), None)
            if old is not None:
                self._unlink(old)
                self._unfile(path.as_posix())
                self.stats.files -= 1

    def _put(self, key: str, text: str, *, open_document: bool) -> None:
        grammar = grammar_named_by(key)
        if grammar is None:
            return
        tags = FileTags()
        if languages.get(grammar).tags is not None and not _minified(text):
            parser = self._parser(grammar)
            if parser is not None:
                try:
                    tags = file_tags(key, text.encode("utf-8", errors="replace"), grammar, parser)
                except Exception:  # a grammar's oddity must not stop the index
                    log.debug("could not read definitions of %s", key, exc_info=True)
        cost = _cost(tags)
        with self._lock:
            old = self._files.get(key)
            room = self.max_bytes - self.stats.bytes + (_cost(old) if old else 0)
            if cost > room and not open_document:
                self.stats.full = True
                return
            if old is not None:
                self._unlink(old)
            else:
                self.stats.files += 1
                folder, _, name = key.rpartition("/")
                self._by_basename.setdefault(name, set()).add(key)
                self._by_folder.setdefault(folder.rpartition("/")[2], set()).add(key)
            self._files[key] = tags
            self._member_uses.update(tags.members_used)
            for definition in tags.definitions:
                self._by_name.setdefault(definition.name, []).append(definition)
                if definition.kind == "class":
                    self._classes.add(definition.name)
            self.stats.definitions += len(tags.definitions)
            self.stats.bytes += cost

    def _unfile(self, key: str) -> None:
        folder, _, name = key.rpartition("/")
        for table, entry in (
            (self._by_basename, name),
            (self._by_folder, folder.rpartition("/")[2]),
        ):
            files = table.get(entry)
            if files is not None:
                files.discard(key)
                if not files:
                    del table[entry]

    def _unlink(self, tags: FileTags) -> None:
        for definition in tags.definitions:
            same = self._by_name.get(definition.name)
            if same is not None:
                same[:] = [d for d in same if d is not definition]
                if not same:
                    del self._by_name[definition.name]
        self._member_uses.subtract(tags.members_used)
        for name in tags.members_used:
            if self._member_uses[name] <= 0:
                del self._member_uses[name]
        self.stats.definitions -= len(tags.definitions)
        self.stats.bytes -= _cost(tags)

    def _parser(self, grammar: str) -> object | None:
        if grammar not in self._parsers:
            try:
                from tree_sitter_language_pack import get_parser

                self._parsers[grammar] = get_parser(grammar)  # type: ignore[arg-type]
            except Exception:
                log.debug("no tree-sitter grammar %r for the index", grammar, exc_info=True)
                self._parsers[grammar] = None
        return self._parsers[grammar]

    # -- asking --------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._files)

    def __contains__(self, path: str) -> bool:
        return path in self._files

    def tags(self, path: str) -> FileTags | None:
        return self._files.get(path)

    def named(self, name: str) -> list[Definition]:
        with self._lock:
            return list(self._by_name.get(name, ()))

    def member_uses(self, name: str) -> int:
        """How many indexed files write `x.name`: how much the project calls on `name`."""
        return self._member_uses.get(name, 0)

    def class_names(self) -> list[str]:
        """The names classes have (some may since have gone: look them up with `named`)."""
        with self._lock:
            return list(self._classes)

    def paths(self) -> list[str]:
        with self._lock:
            return list(self._files)

    def module_files(self, importer: str, imported: Import) -> list[str]:
        """The indexed files `imported` names, seen from the file `importer`: those of the
        first reading of the import that names any (`from pkg import mod`: mod's file if
        there is one, else pkg's)."""
        with self._lock:
            for tier in _module_paths(importer, imported):
                found = [c for c in tier if c in self._files]
                for tail in (c[1:] for c in tier if c.startswith("*/")):
                    found += [p for p in self._near(tail) if _ends_with(p, tail)]
                if found:
                    return found
        return []

    def _near(self, tail: str) -> set[str]:
        """The files that may end with `tail`: those of its file name, or of its folder's."""
        if tail.endswith("/"):
            return self._by_folder.get(tail.rstrip("/").rpartition("/")[2], set())
        return self._by_basename.get(tail.rpartition("/")[2], set())

    def relative(self, path: str) -> str:
        """`path` relative to its workspace folder (as the prompt names it)."""
        for root in self.roots:
            try:
                return PurePosixPath(path).relative_to(root.as_posix()).as_posix()
            except ValueError:
                continue
        return os.path.basename(path)


def _ends_with(path: str, tail: str) -> bool:
    """`path` ends with `tail`; a tail ending with `/` names a folder the file is right in."""
    if tail.endswith("/"):
        return (path.rsplit("/", 1)[0] + "/").endswith(tail)
    return path.endswith(tail)


_SCRIPT_EXTENSIONS = (".ts", ".tsx", ".js", ".jsx", ".mjs", ".cjs", ".d.ts")
#: Where a package keeps its main module when its package.json is not read: the usual places
#: (those of 77% of the 143 packages npm 10 bundles; the rest mostly name a file after the
#: package, also tried).
_PACKAGE_MAINS = ("index", "lib/index", "dist/commonjs/index", "dist/index", "src/index")


def _script_paths(target: str) -> list[str]:
    """The files a script module path may name: itself, with an extension, or its index."""
    return [target] + [
        path for ext in _SCRIPT_EXTENSIONS for path in (target + ext, f"{target}/index{ext}")
    ]


def _package_paths(here: PurePosixPath, module: str) -> Iterator[list[str]]:
    """Node's resolution of a package name (`pkg`, `@scope/pkg`, `pkg/sub/path`): in the
    `node_modules` folder of each folder from the importer's up, its main module (by
    convention, see `_PACKAGE_MAINS`) or the subpath."""
    parts = module.split("/")
    size = 2 if module.startswith("@") else 1
    package, subpath = "/".join(parts[:size]), "/".join(parts[size:])
    if not package or package.startswith("@") and size > len(parts):
        return
    stems = [subpath] if subpath else [*_PACKAGE_MAINS, parts[size - 1], f"lib/{parts[size - 1]}"]
    for folder in (here, *here.parents):
        if folder.name == "node_modules":
            continue  # node_modules/node_modules is never looked in
        base = folder / "node_modules" / package
        yield [path for stem in stems for path in _script_paths((base / stem).as_posix())]


def _module_paths(importer: str, imported: Import) -> Iterator[list[str]]:
    """Where the module an import names may be, in tiers tried in turn: exact paths, or
    "*/tail" for a tail to look for anywhere (an absolute module name, a package path)."""
    module, grammar = imported.module, grammar_named_by(importer)
    tags = languages.get(grammar).tags if grammar is not None else None
    syntax = tags.imports if tags is not None else None
    here = PurePosixPath(importer).parent
    if syntax == "from-import":
        dots = len(module) - len(module.lstrip("."))
        parts = [p for p in module.lstrip(".").split(".") if p]
        # `from pkg import name`: name may be a module of pkg, else something pkg defines.
        readings = ([*parts, imported.name], parts) if imported.name is not None else (parts,)
        for names in readings:
            if dots:
                base = here
                for _ in range(dots - 1):
                    base = base.parent
                stem = base.joinpath(*names).as_posix()
                yield [stem + ".py", stem + "/__init__.py"] if names else [stem + "/__init__.py"]
            elif names:
                tail = "*/" + "/".join(names)
                yield [tail + ".py", tail + "/__init__.py"]
    elif syntax == "ecmascript":
        if module.startswith("."):
            yield _script_paths(os.path.normpath((here / module).as_posix()))
        elif not module.startswith(("node:", "/")):
            yield from _package_paths(here, module)
    elif syntax == "go-import":
        yield ["*/" + module.rsplit("/", 1)[-1] + "/"]
    elif syntax == "use-tree":
        parts = [p for p in module.split("::") if p not in ("crate", "self", "super", "")]
        readings = ([*parts, imported.name], parts) if imported.name else (parts,)
        for names in readings:
            if names:
                tail = "*/" + "/".join(names)
                yield [tail + ".rs", tail + "/mod.rs"]
