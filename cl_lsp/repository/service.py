"""Repository context for a running server: the index kept current, the open documents'
chunks and recent edits, and each document's context block kept stable while the user types.

The event loop only records what happened (`opened`, `changed`, `saved`, `closed`,
`files_changed`): reading and parsing files happen on the index's own thread, which builds the
index once and then re-reads what changed after a short pause. That thread runs at the lowest
CPU priority, waits while the model runs or the user types, and lets go of the GIL between
files, so building the index of a large workspace next to the model does not slow typing
(BENCHMARKS.md). `block_for` runs on the completion planner's thread. New settings or workspace folders make a new
`RepositoryContext`.

**Stability.** A document's block is chosen again only when the cursor moves to another unit
(the definition it is in, by the index's last reading of the file) or a name used near the
cursor now resolves to a definition the block lacks. Otherwise the previous block is used as
it was, so the prompt before the code does not change while the user types and the model's
cache holds.
"""

from __future__ import annotations

import bisect
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from urllib.parse import unquote, urlparse

from ..config import ContextSettings
from .chunks import ChunkPool
from .definitions import definition_snippets
from .edits import RecentEdits
from .files import FileRules
from .index import RepositoryIndex
from .selection import (
    FILE_SEPARATOR,
    ContextBlock,
    edit_snippets,
    fit,
    similar_snippets,
)
from .snippets import Cursor, Snippet

log = logging.getLogger(__name__)

#: An open document is read into the index again after this long without another change.
REINDEX_PAUSE = 0.5
#: How often the index checks whether the model still runs, while it waits.
BUSY_POLL = 0.05
#: The index also waits until the user has stopped typing this long: parsing a file holds
#: the GIL, and each keystroke's request would wait for it (measured: 6 ms a keystroke, up to
#: 100 ms, while a large workspace was being indexed).
TYPING_PAUSE = 0.5


def _lower_priority() -> None:
    """Run this thread at the lowest CPU priority (Linux takes a thread's id here): reading
    and parsing the workspace must not take cores from the model."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):  # not Linux, or not allowed: the build just competes
        log.debug("could not lower the index thread's priority", exc_info=True)


def uri_path(uri: str) -> Path | None:
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        return None
    return Path(unquote(parsed.path))


class RepositoryContext:
    def __init__(
        self,
        settings: ContextSettings,
        text_of: Callable[[str], str | None],
        busy: Callable[[], bool] = lambda: False,
    ) -> None:
        self.settings = settings
        self.text_of = text_of  # an open document's current text
        self.busy = busy  # the model is running: the index waits (it would take its cores)
        self.index: RepositoryIndex | None = None
        self.chunks = ChunkPool()
        self.edits = RecentEdits()
        self._blocks: dict[str, ContextBlock] = {}
        self._dirty: dict[str, float] = {}  # open documents to read again, and when changed
        self._typed_at = -TYPING_PAUSE  # the last change to an open document (monotonic)
        self._wake = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._roots: list[Path] = []
        self.ready = threading.Event()  # the first build finished

    # -- the index's thread ------------------------------------------------------------------

    def start(self, roots: Iterable[Path]) -> None:
        """Index `roots` (the workspace folders) in the background, then keep it current."""
        self._roots = [root for root in roots if root.is_dir()]
        if not self.settings.enabled or not self._roots or self._thread is not None:
            self.ready.set()
            return
        self.index = self._new_index()
        self._thread = threading.Thread(target=self._run, name="cl-lsp-index", daemon=True)
        self._thread.start()

    def build_now(
        self, roots: Iterable[Path], near: Path | None = None, seconds: float | None = None
    ) -> None:
        """Index `roots` on this thread (`cl-lsp complete`): the files of `near`'s folder
        first, then the rest for at most `seconds` (a command run from a home folder must
        not read all of it)."""
        self._roots = [root for root in roots if root.is_dir()]
        if self.settings.enabled and self._roots:
            self.index = self._new_index()
            if near is not None and near.parent.is_dir():
                for sibling in sorted(near.parent.iterdir()):
                    if sibling.is_file():
                        self.index.update_file(sibling)
            self.index.build(seconds=seconds)
        self.ready.set()

    def _new_index(self) -> RepositoryIndex:
        """An empty index of the workspace folders under the `context.*` file rules."""
        rules = FileRules(exclude=self.settings.exclude, max_bytes=self.settings.max_file_kb << 10)
        return RepositoryIndex(self._roots, rules, self.settings.index_mb << 20)

    def stop(self) -> None:
        self._stop.set()
        with self._wake:
            self._wake.notify_all()

    def _run(self) -> None:
        assert self.index is not None
        _lower_priority()
        try:
            self.index.build(self._stop, self._wait_for_turn)
        except Exception:  # the index is a help: without it completion goes on
            log.exception("repository index failed")
        self.ready.set()
        while not self._stop.is_set():
            with self._wake:
                while not self._dirty and not self._stop.is_set():
                    self._wake.wait()
                if self._stop.is_set():
                    return
                wait = min(self._dirty.values()) + REINDEX_PAUSE - time.monotonic()
                if wait > 0:
                    self._wake.wait(wait)
                    continue
                now = time.monotonic()
                due = [uri for uri, at in self._dirty.items() if now - at >= REINDEX_PAUSE]
                for uri in due:
                    del self._dirty[uri]
            for uri in due:
                self._wait_for_turn()
                self._reindex(uri)

    def _wait_for_turn(self) -> None:
        """Hold the index's work while the model runs (parsing files would take a core from it,
        2 cores: a third of its speed, and the GIL from its thread) and while the user types."""
        while (self.busy() or self.typing()) and not self._stop.is_set():
            self._stop.wait(BUSY_POLL)
        time.sleep(0)  # and let the event loop and the planner have the GIL between files

    def typing(self) -> bool:
        """An open document changed less than `TYPING_PAUSE` ago."""
        return time.monotonic() - self._typed_at < TYPING_PAUSE

    def _reindex(self, uri: str) -> None:
        path, index = uri_path(uri), self.index
        if path is None or index is None:
            return
        text = self.text_of(uri)
        try:
            if text is not None:
                index.update_text(path, text)
            else:
                index.update_file(path)
        except Exception:
            log.debug("could not index %s", uri, exc_info=True)

    def _mark(self, uri: str) -> None:
        if self._thread is None:
            return
        with self._wake:
            self._dirty[uri] = time.monotonic()
            self._wake.notify_all()

    # -- what the editor did -----------------------------------------------------------------

    def opened(self, uri: str, version: int, text: str) -> None:
        self.chunks.update(uri, version, text)
        self._mark(uri)

    def changed(
        self, uri: str, version: int, text: str, lines: Iterable[tuple[int, int, int]]
    ) -> None:
        """`lines`: each incremental change's (first line, old last line, new last line)."""
        self._typed_at = time.monotonic()
        self.chunks.update(uri, version, text)
        for start, old_end, new_end in lines:
            self.edits.record(uri, start, old_end, new_end)
        self._mark(uri)

    def saved(self, uri: str) -> None:
        self._mark(uri)

    def closed(self, uri: str) -> None:
        self.chunks.forget(uri)
        self.edits.forget(uri)
        self._blocks.pop(uri, None)
        self._mark(uri)  # the file on disk replaces the text as typed

    def files_changed(self, uris: Iterable[str]) -> None:
        """Files changed, created or deleted on disk (`workspace/didChangeWatchedFiles`)."""
        for uri in uris:
            if self.text_of(uri) is None:  # an open document's text wins over the disk
                self._mark(uri)

    # -- the block -----------------------------------------------------------------------------

    def path_of(self, uri: str) -> str:
        path = uri_path(uri)
        if path is None:
            return uri
        if self.index is not None:
            return self.index.relative(path.resolve().as_posix())
        return path.name

    def block_for(
        self,
        uri: str,
        text: str,
        offset: int,
        window: tuple[int, int],
        grammar: str | None,
        count: Callable[[str], int],
        budget: int | None = None,
        style: str = "comments",
    ) -> ContextBlock:
        """The context block for a prompt at `offset` whose window is `window` (character
        offsets): the previous one while it stands (module docstring), else chosen anew.
        `style` "files": for a family's repository format, whose repository name and file
        path are counted in the budget too."""
        budget = self.settings.repo_tokens if budget is None else budget
        if not self.settings.enabled or budget <= 0:
            return ContextBlock(budget=budget)
        path = uri_path(uri)
        # The document's lines are counted once per request, the window's from the cursor.
        line = text.count("\n", 0, offset)
        lines = (
            line - text.count("\n", window[0], offset),
            line + text.count("\n", offset, window[1]) + 1,
        )
        resolved = path.resolve().as_posix() if path is not None else ""
        cursor = Cursor(uri, resolved, text, offset, lines, grammar, line)
        unit = self._unit(cursor)
        definitions = self.definitions(cursor)
        near = frozenset(s.key for s in definitions if s.near)
        previous = self._blocks.get(uri)
        if (
            previous is not None
            and previous.unit == unit
            and previous.budget == budget
            and previous.style == style
            and near <= previous.considered
        ):
            return replace(previous, kept=True)
        candidates = {"definition": definitions, **self.others(cursor)}
        repo, relative = self._roots[0].name if self._roots else "", self.path_of(uri)
        room = budget
        if style == "files":
            room -= count(f"{FILE_SEPARATOR}{repo}\n{FILE_SEPARATOR}{relative}\n")
        block = fit(candidates, room, count, grammar, style)
        block = replace(block, unit=unit, considered=near, budget=budget, repo=repo, path=relative)
        self._blocks[uri] = block
        return block

    def definitions(self, cursor: Cursor) -> list[Snippet]:
        if not self.settings.definitions or self.index is None or not cursor.path:
            return []
        return definition_snippets(cursor, self.index)

    def others(self, cursor: Cursor) -> dict[str, list[Snippet]]:
        """The similar chunks and recent edits (computed only when the block is chosen)."""
        found: dict[str, list[Snippet]] = {}
        if self.settings.edits:
            found["edit"] = edit_snippets(cursor, self.edits, self.text_of, self.path_of)
        if self.settings.similar:
            found["similar"] = similar_snippets(cursor, self.chunks, self.path_of)
        return found

    def _unit(self, cursor: Cursor) -> object:
        """The top-level definition the cursor is in (by the index's last reading of the
        file), or the gap after one."""
        tags = self.index.tags(cursor.path) if self.index is not None else None
        line = cursor.line
        if not tags:
            return (cursor.uri, None)
        tops = [d for d in tags.definitions if d.container is None]
        starts = [d.line for d in tops]
        at = bisect.bisect_right(starts, line) - 1
        if at >= 0 and tops[at].line <= line < tops[at].end_line:
            return (cursor.uri, tops[at].name, tops[at].line)
        return (cursor.uri, "after", at)

    def table_sizes(self) -> dict[str, int]:
        """Tables that live as long as the server (each bounded by the open documents)."""
        return {
            "contextBlocks": len(self._blocks),
            "chunkDocuments": len(self.chunks),
            "recentEdits": len(self.edits),
            "reindexQueue": len(self._dirty),
        }

    def status(self) -> dict[str, object]:
        stats = self.index.stats if self.index is not None else None
        return {
            "enabled": self.settings.enabled,
            "roots": [root.as_posix() for root in self._roots],
            "ready": self.ready.is_set(),
            "files": stats.files if stats else 0,
            "definitions": stats.definitions if stats else 0,
            "indexBytes": stats.bytes if stats else 0,
            "indexFull": stats.full if stats else False,
            "indexTimedOut": stats.timed_out if stats else False,
            "indexSeconds": round(stats.seconds, 3) if stats else 0.0,
        }
