"""Recently edited regions: one source of repository context.

What the user changed a moment ago, in this document or another open one, is often what the
code at the cursor is about to use. Edits are kept as line ranges, moved along as later edits
insert or delete lines above them, and turned into text only when a prompt is built, from the
documents' current text.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from .chunks import document_lines


@dataclass(frozen=True)
class Region:
    """Lines around a recent edit, as the document reads now."""

    uri: str
    start_line: int
    """0-based, inclusive."""
    end_line: int
    """Exclusive."""
    text: str
    """Those lines of the document's current text, ending with "\\n"."""


@dataclass(frozen=True)
class _Edit:
    uri: str
    first_line: int
    last_line: int
    """Inclusive: an edit inside one line still touches that line."""


class RecentEdits:
    """Where the user edited last, in any open document, most recent first."""

    def __init__(self, limit: int = 16) -> None:
        self.limit = limit
        self._edits: list[_Edit] = []
        """Most recent first."""
        self._lock = threading.Lock()

    def record(self, uri: str, start_line: int, old_end_line: int, new_end_line: int) -> None:
        """One incremental change: lines [start_line, old_end_line] (an LSP range's start and
        end lines) were replaced by text now spanning [start_line, new_end_line]. Later edits
        of the document shift by the lines gained or lost; earlier edits overlapping or
        touching the change (within one line), including those inside deleted lines, merge
        into it, and it becomes the most recent."""
        old_end_line = max(old_end_line, start_line)
        new_end_line = max(new_end_line, start_line)
        shift = new_end_line - old_end_line
        first, last = start_line, new_end_line
        kept: list[_Edit] = []
        with self._lock:
            for edit in self._edits:
                if edit.uri != uri or edit.last_line < start_line - 1:
                    kept.append(edit)
                elif edit.first_line > old_end_line + 1:
                    kept.append(_Edit(uri, edit.first_line + shift, edit.last_line + shift))
                else:
                    # Lines past the change move with it; lines inside it collapse onto it.
                    first = min(first, edit.first_line)
                    if edit.last_line > old_end_line:
                        last = max(last, edit.last_line + shift)
            self._edits = [_Edit(uri, first, last), *kept][: self.limit]

    def __len__(self) -> int:
        return len(self._edits)

    def forget(self, uri: str) -> None:
        """The document was closed: its edits no longer say where the user works."""
        with self._lock:
            self._edits = [edit for edit in self._edits if edit.uri != uri]

    def regions(
        self,
        text_of: Callable[[str], str | None],
        *,
        around: int = 3,
        exclude: tuple[str, int, int] | None = None,
        limit: int = 8,
    ) -> list[Region]:
        """Each edit widened by `around` lines each side and clamped to its document
        (`text_of(uri)` gives the current text; None: skipped), most recent first. A region
        overlapping `exclude` (uri, first_line, end_line: the prompt window, which the model
        sees already) is left out; regions of one document that overlap or touch are merged
        into the more recent one, so no line is shown twice. At most `limit` regions."""
        with self._lock:
            edits = list(self._edits)
        lines_of: dict[str, list[str]] = {}
        spans: list[_Span] = []  # most recent first
        for edit in edits:
            if edit.uri not in lines_of:
                # No text (closed meanwhile): no lines, so every span of it comes out empty.
                lines_of[edit.uri] = document_lines(text_of(edit.uri) or "")
            lines = lines_of[edit.uri]
            span = _Span(
                edit.uri,
                max(edit.first_line - around, 0),
                min(edit.last_line + 1 + around, len(lines)),
                lines,
            )
            if span.start_line < span.end_line and not _overlaps(span, exclude):
                _merge_into(spans, span)
        return [
            Region(span.uri, span.start_line, span.end_line, span.text()) for span in spans[:limit]
        ]


@dataclass
class _Span:
    """A region being assembled: lines [start_line, end_line) of `lines`."""

    uri: str
    start_line: int
    end_line: int
    lines: list[str]

    def reaches(self, other: _Span) -> bool:
        """Same document, overlapping or touching."""
        return (
            self.uri == other.uri
            and self.start_line <= other.end_line
            and other.start_line <= self.end_line
        )

    def text(self) -> str:
        return "\n".join(self.lines[self.start_line : self.end_line]) + "\n"


def _merge_into(spans: list[_Span], new: _Span) -> None:
    """Add `new` to `spans` (whose spans never reach one another), or widen the most recent
    span it reaches over it and every other span it reaches."""
    reached = [span for span in spans if span.reaches(new)]
    if not reached:
        spans.append(new)
        return
    kept = reached[0]
    kept.start_line = min(span.start_line for span in [new, *reached])
    kept.end_line = max(span.end_line for span in [new, *reached])
    for span in reached[1:]:
        spans.remove(span)


def _overlaps(span: _Span, exclude: tuple[str, int, int] | None) -> bool:
    if exclude is None:
        return False
    uri, first_line, end_line = exclude
    return span.uri == uri and span.start_line < end_line and first_line < span.end_line
