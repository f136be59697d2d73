"""What the sources of repository context hand on: a snippet of code from elsewhere, and the
cursor it is chosen for."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Snippet:
    source: str  # "definition", "similar", "edit"
    path: str  # as the block names it: relative to its workspace folder
    line: int  # first line (0-based)
    text: str  # the code, ending with a line break
    why: str  # for `complete --json`
    score: float  # higher: more relevant
    key: tuple[object, ...]  # what it is, for comparing selections
    near: bool = False  # a definition of a name used near the cursor
    member_of: str | None = None  # a member's class (impl, interface)
    #: What the word about to be typed is one of (the members after `thing.`): it may take
    #: the whole budget, cut to fit, before any other snippet.
    next_word: bool = False

    def as_dict(self, tokens: int) -> dict[str, object]:
        return {
            "source": self.source,
            "path": self.path,
            "line": self.line + 1,
            "why": self.why,
            "tokens": tokens,
            "text": self.text,
        }


@dataclass(frozen=True)
class Cursor:
    """Where the prompt is for: the document, its text, the cursor, the window shown."""

    uri: str
    path: str  # the file's path ("" for a document with no file)
    text: str
    offset: int
    window: tuple[int, int]  # first and after-last line of the prompt window
    grammar: str | None
    line: int = -1  # the cursor's line (counted from `text` when not given)

    def __post_init__(self) -> None:
        if self.line < 0:
            object.__setattr__(self, "line", self.text.count("\n", 0, self.offset))


def lines_around(text: str, offset: int, above: int, below: int) -> tuple[list[int], int]:
    """The starts of the lines from `above` lines before the cursor's line to `below` after
    it, and where the last of them ends: a bounded scan, whatever the document's size."""
    lo = text.rfind("\n", 0, offset) + 1
    for _ in range(above):
        if lo == 0:
            break
        lo = text.rfind("\n", 0, lo - 1) + 1
    hi = offset
    for _ in range(below + 1):
        found = text.find("\n", hi)
        if found < 0:
            hi = len(text)
            break
        hi = found + 1
    starts = [lo]
    position = text.find("\n", lo, hi - 1)
    while position >= 0:
        starts.append(position + 1)
        position = text.find("\n", position + 1, hi - 1)
    return starts, hi
