"""Similar chunks of open documents: one source of repository context (llama.vim's approach).

Every open document is cut into fixed-size chunks of lines; the chunks sharing the most words
with the text around the cursor go into the prompt as comments. Words are compared as sets
(Jaccard similarity), so the measure is cheap, needs no model, and ignores order and layout.
Documents are split lazily, once per version, on the planner thread; the event loop only
stores text.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

# Identifiers of two characters or more: one-letter names (`i`, `x`, `e`) occur everywhere and
# would make unrelated chunks look alike. `\b` keeps the tails of number literals (`0xFF`) out.
WORD = re.compile(r"\b[A-Za-z_][A-Za-z0-9_]+")
# The line breaks LSP counts lines by.
LINE_BREAK = re.compile(r"\r\n|\r|\n")


def document_lines(text: str) -> list[str]:
    """The lines of `text`, without their breaks; a final break does not start a line."""
    lines = LINE_BREAK.split(text)
    if lines[-1] == "":
        lines.pop()
    return lines


def words(text: str) -> frozenset[str]:
    return frozenset(WORD.findall(text))


def similarity(a: frozenset[str], b: frozenset[str]) -> float:
    """Jaccard similarity: shared words over all words; 0.0 when neither has any."""
    shared = len(a & b)
    union = len(a) + len(b) - shared
    return shared / union if union else 0.0


@dataclass(frozen=True)
class Chunk:
    """A run of lines of one document, with its words computed once."""

    uri: str
    start_line: int
    """0-based, inclusive."""
    end_line: int
    """Exclusive."""
    text: str
    """The lines, joined with "\\n", ending with "\\n"."""
    words: frozenset[str]


def split_chunks(uri: str, text: str, lines: int = 32) -> tuple[Chunk, ...]:
    """`text` cut into chunks of `lines` lines (the last may be shorter). Chunks without a
    word (blank, or only punctuation) are left out: they could never be similar to anything."""
    all_lines = document_lines(text)
    chunks = []
    for start in range(0, len(all_lines), lines):
        body = "\n".join(all_lines[start : start + lines]) + "\n"
        found = words(body)
        if found:
            end = min(start + lines, len(all_lines))
            chunks.append(Chunk(uri, start, end, body, found))
    return tuple(chunks)


@dataclass
class _Document:
    version: int
    text: str
    chunks: tuple[Chunk, ...] | None = None
    """None until the first query after this version arrived."""


class ChunkPool:
    """Every open document's chunks, split lazily once per document version."""

    def __init__(self, lines: int = 32) -> None:
        self.lines = lines
        self._documents: dict[str, _Document] = {}
        # `_lock` guards `_documents` and is held only briefly, so `update` on the event loop
        # never waits for a split; `_splitting` makes concurrent queries split a version once.
        self._lock = threading.Lock()
        self._splitting = threading.Lock()

    def update(self, uri: str, version: int, text: str) -> None:
        """Store a document's new text; it is split when a query next needs it."""
        with self._lock:
            known = self._documents.get(uri)
            if known is None or known.version != version:
                self._documents[uri] = _Document(version, text)

    def forget(self, uri: str) -> None:
        with self._lock:
            self._documents.pop(uri, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._documents)

    def similar(
        self,
        query: str,
        *,
        limit: int,
        exclude: tuple[str, int, int] | None = None,
        min_similarity: float = 0.1,
        evict_similarity: float = 0.9,
    ) -> list[tuple[float, Chunk]]:
        """The `limit` chunks most similar to `query` (the text around the cursor), best first,
        ties broken by (uri, start_line) so the prompt is stable. Chunks of `exclude`'s document
        overlapping its lines [first_line, end_line) (the prompt window, which the model sees
        already) are never picked, nor chunks below `min_similarity`. A chunk more similar
        than `evict_similarity` to one already picked is skipped: near-duplicates (a file open
        twice, copied code) would spend the budget saying the same thing again."""
        wanted = words(query)
        scored = [
            (score, chunk)
            for chunk in self._chunks()
            if not _overlaps(chunk, exclude)
            and (score := similarity(wanted, chunk.words)) >= min_similarity
        ]
        scored.sort(key=lambda pair: (-pair[0], pair[1].uri, pair[1].start_line))
        picked: list[tuple[float, Chunk]] = []
        for score, chunk in scored:
            if len(picked) >= limit:
                break
            if any(similarity(chunk.words, kept.words) > evict_similarity for _, kept in picked):
                continue
            picked.append((score, chunk))
        return picked

    def _chunks(self) -> list[Chunk]:
        """All chunks of all documents, splitting the versions not split yet."""
        with self._splitting:
            with self._lock:
                documents = list(self._documents.items())
            found: list[Chunk] = []
            for uri, document in documents:
                if document.chunks is None:
                    # Split outside `_lock`; a version replaced meanwhile is simply dropped.
                    document.chunks = split_chunks(uri, document.text, self.lines)
                found.extend(document.chunks)
            return found


def _overlaps(chunk: Chunk, exclude: tuple[str, int, int] | None) -> bool:
    if exclude is None:
        return False
    uri, first_line, end_line = exclude
    return chunk.uri == uri and chunk.start_line < end_line and first_line < chunk.end_line
