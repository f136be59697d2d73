"""Open documents, kept in sync with the editor, and LSP positions <-> string offsets.

pygls's own workspace splits lines with `str.splitlines`, which also breaks at form feeds,
U+2028 and other characters that LSP does not count as line ends, so a file containing one
would drift out of sync; it also re-splits the whole document on every change. This store
follows the LSP definition (`\\n`, `\\r\\n`, `\\r`), converts columns in the negotiated
encoding (UTF-16 by default, UTF-8 or UTF-32 when the client asks) and never lands inside a
character: a column in the middle of a UTF-16 surrogate pair or a UTF-8 sequence falls back to
the start of that character, and handlers answer with that normalised position, so an edit the
editor applies never splits a character.

The text never holds a lone surrogate: JSON can carry half a pair ("\\ud83d"), which nothing
downstream can encode (the tokenizer and tree-sitter need UTF-8). It is stored as U+FFFD, which
takes the same room in UTF-16 and UTF-32 (one unit), so positions stay in sync with the editor.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field

LINE_BREAK = re.compile(r"\r\n|\r|\n")
LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # json.loads joins escaped pairs

UTF8, UTF16, UTF32 = "utf-8", "utf-16", "utf-32"


class PositionError(ValueError):
    """A position that does not exist in the document."""


@dataclass
class Document:
    uri: str
    text: str
    version: int
    language_id: str | None = None
    _line_starts: list[int] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.text = whole_characters(self.text)

    @property
    def line_starts(self) -> list[int]:
        if self._line_starts is None:
            self._line_starts = [0] + [m.end() for m in LINE_BREAK.finditer(self.text)]
        return self._line_starts

    @property
    def line_count(self) -> int:
        return len(self.line_starts)

    def line_span(self, line: int) -> tuple[int, int]:
        """Offsets of the start and end of `line`, without its line break."""
        starts = self.line_starts
        start = starts[line]
        end = starts[line + 1] if line + 1 < len(starts) else len(self.text)
        while end > start and self.text[end - 1] in "\r\n":
            end -= 1
        return start, end

    def offset_at(
        self, line: int, character: int, encoding: str = UTF16, *, strict: bool = False
    ) -> int:
        """String offset of an LSP position.

        A column past the end of its line means the end of the line (the LSP rule). A line
        past the end of the document raises PositionError when `strict`, else means the end.
        """
        if line < 0 or character < 0:
            raise PositionError(f"negative position {line}:{character}")
        if line >= self.line_count:
            if strict:
                raise PositionError(
                    f"line {line} is past the end of the document ({self.line_count} lines)"
                )
            return len(self.text)
        start, end = self.line_span(line)
        return start + column_to_index(self.text[start:end], character, encoding)

    def position_at(self, offset: int, encoding: str = UTF16) -> tuple[int, int]:
        """LSP position of a string offset; between `\\r` and `\\n` means the end of the line."""
        offset = max(0, min(offset, len(self.text)))
        if 0 < offset < len(self.text) and self.text[offset - 1 : offset + 1] == "\r\n":
            offset -= 1
        line = bisect.bisect_right(self.line_starts, offset) - 1
        start = self.line_starts[line]
        return line, units(self.text[start:offset], encoding)

    def apply_change(
        self,
        start: tuple[int, int] | None,
        end: tuple[int, int] | None,
        new_text: str,
        encoding: str = UTF16,
    ) -> int | None:
        """Apply one content change; `start`/`end` None means the whole document. Ends inside a
        character fall back to its start, as in `offset_at`. Returns the offset right after
        the new text (where the user's cursor is after typing it), None for a whole document."""
        new_text = whole_characters(new_text)
        if start is None or end is None:
            self.text = new_text
            self._line_starts = None
            return None
        begin = self.offset_at(*start, encoding)
        finish = self.offset_at(*end, encoding)
        if finish < begin:
            begin, finish = finish, begin
        old_starts = self.line_starts
        self.text = self.text[:begin] + new_text + self.text[finish:]
        self._line_starts = _updated_line_starts(
            old_starts, self.text, begin, finish, len(new_text) - (finish - begin)
        )
        return begin + len(new_text)


def _updated_line_starts(
    old: list[int], text: str, begin: int, finish: int, delta: int
) -> list[int]:
    """Line starts after replacing old[begin:finish) (now `text`), rescanning only the lines
    around the change: a keystroke in a 20,000-line file must not rescan the whole file.

    The rescanned region starts one line before the change (a `\\r` there may now pair with a
    `\\n`) and ends at a line start after it, where the text is unchanged."""
    first = max(0, bisect.bisect_right(old, begin) - 2)
    last = bisect.bisect_right(old, finish) + 1  # first old line start kept (shifted)
    region_start = old[first]
    if last < len(old):
        region_end = old[last] + delta
        middle = [
            m.end()
            for m in LINE_BREAK.finditer(text, region_start, region_end)
            if m.end() < region_end
        ]
        return old[: first + 1] + middle + [start + delta for start in old[last:]]
    middle = [m.end() for m in LINE_BREAK.finditer(text, region_start)]
    return old[: first + 1] + middle


def whole_characters(text: str) -> str:
    """`text` with each lone surrogate replaced by U+FFFD (same width in UTF-16 and UTF-32)."""
    return text if text.isascii() else LONE_SURROGATE.sub("\ufffd", text)


def units(text: str, encoding: str) -> int:
    """Length of `text` in the code units of `encoding`."""
    if encoding == UTF32 or text.isascii():
        return len(text)
    if encoding == UTF8:
        return len(text.encode("utf-8"))
    return len(text) + sum(1 for char in text if ord(char) > 0xFFFF)


def column_to_index(line_text: str, column: int, encoding: str) -> int:
    """Index into `line_text` of an LSP column, clamped to the line, never inside a character."""
    if encoding == UTF32 or line_text.isascii():
        return min(column, len(line_text))
    if encoding == UTF8:
        head = line_text.encode("utf-8")[:column]
    else:
        head = line_text.encode("utf-16-le")[: 2 * column]
        encoding = "utf-16-le"
    return len(head.decode(encoding, errors="ignore"))


class DocumentStore:
    """The documents the editor has opened, by URI."""

    def __init__(self) -> None:
        self._documents: dict[str, Document] = {}

    def open(self, uri: str, text: str, version: int, language_id: str | None) -> Document:
        document = Document(uri=uri, text=text, version=version, language_id=language_id)
        _ = document.line_starts  # index now, at open, not in the first request's time
        self._documents[uri] = document
        return document

    def close(self, uri: str) -> None:
        self._documents.pop(uri, None)

    def get(self, uri: str) -> Document | None:
        return self._documents.get(uri)

    def __contains__(self, uri: str) -> bool:
        return uri in self._documents

    def uris(self) -> list[str]:
        return list(self._documents)

    def __len__(self) -> int:
        return len(self._documents)
