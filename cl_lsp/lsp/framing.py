"""LSP framing in bounded memory: `Content-Length` frames out of a byte stream, for any
transport (:class:`FrameParser`, :func:`read_frames`).

pygls 2.1's reader goes deaf on stray bytes or a wrong `Content-Length` and allocates whatever
length the client names; this one skips oversized frames as they arrive and resynchronises on
the next header.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass

log = logging.getLogger(__name__)

# Frames above this are skipped as they arrive, never held in memory. Documents above
# server.MAX_DOCUMENT_CHARS (8 M characters) are not completed anyway; JSON escapes can make
# such a document's frame several times larger, so the cap leaves room for that.
MAX_FRAME_BYTES = 128 * 1024 * 1024
READ_CHUNK = 64 * 1024
MAX_HEADER_LINE = 8 * 1024  # longer "lines" in the header area are stray bytes

# A Content-Length header ending at a line end. Valid JSON can never contain one (a raw line
# end is not allowed inside a string, and the words are not allowed outside one), so finding
# one inside a body means the body's length was wrong: resynchronise there.
_HEADER = re.compile(
    rb"content-length[ \t]{0,8}:[ \t]{0,8}(\d{1,20})[ \t]{0,8}\r?\n\Z", re.IGNORECASE
)
_HEADER_WINDOW = 80  # longer than the longest match of _HEADER
_OTHER_HEADER = re.compile(rb"[A-Za-z0-9-]{1,64}[ \t]*:[^\r\n]*\r?\n\Z")
# A request id at the head of a frame, before any nested object: safe to read without parsing
# the rest (used to answer a frame too large to read).
_HEAD_ID = re.compile(
    rb'\s*\{(?:\s*"(?:jsonrpc|method)"\s*:\s*"(?:[^"\\]|\\.){0,200}"\s*,)*'
    rb'\s*"id"\s*:\s*(-?\d{1,20}|"(?:[^"\\]|\\.){0,200}")\s*[,}]'
)


@dataclass(frozen=True)
class Oversized:
    """A frame longer than MAX_FRAME_BYTES, skipped; `request_id` read from its head, if any."""

    length: int
    request_id: int | str | None


@dataclass(frozen=True)
class Broken:
    """A frame cut short by the next header: its Content-Length was larger than its body."""

    length: int
    received: int


Frame = bytes | Oversized | Broken


def find_header(
    data: bytes | bytearray, start: int, end: int | None = None
) -> tuple[int, int] | None:
    """The first Content-Length header whose line ends in data[start:end]: (where it starts,
    the length it names)."""
    end = len(data) if end is None else end
    newline = data.find(b"\n", start, end)
    while newline != -1:
        match = _HEADER.search(data, max(0, newline + 1 - _HEADER_WINDOW), newline + 1)
        if match:
            return match.start(), int(match.group(1))
        newline = data.find(b"\n", newline + 1, end)
    return None


class _More:
    """What the parser yields when it needs more input."""


_MORE = _More()
Steps = Generator[Frame | _More, None, None]


class FrameParser:
    """Split a byte stream into LSP frames in bounded memory, resynchronising on the next
    Content-Length header after anything that is not a frame (stray bytes, a header block
    without a length, a body shorter or longer than its length) instead of going deaf; clangd,
    too, skips what it cannot frame and reads on.

    Push-style, so any transport can use it: `feed(data)` returns the frames completed by
    `data`; `feed(b"")` means the input ended.
    """

    def __init__(self, max_frame: int = MAX_FRAME_BYTES) -> None:
        self.max_frame = max_frame
        self.buffer = bytearray()
        self.ended = False
        self.stray = 0  # bytes skipped since the last frame
        self.stray_reason = ""
        self._steps = self._run()

    def feed(self, data: bytes) -> list[Frame]:
        self.buffer += data
        self.ended = self.ended or not data
        frames = []
        while not isinstance(step := next(self._steps), _More):
            frames.append(step)
        return frames

    def _more(self) -> Generator[_More, None, bool]:
        """Wait for input; whether there is more (False at the end)."""
        if self.ended:
            return False
        yield _MORE
        return not self.ended

    def _skip(self, count: int, reason: str) -> None:
        if not count:
            return
        del self.buffer[:count]
        self.stray += count
        self.stray_reason = self.stray_reason or reason

    def _report_stray(self) -> None:
        if self.stray:
            log.warning(
                "skipped %d stray bytes of input (%s); resynchronised on the next "
                "Content-Length header",
                self.stray,
                self.stray_reason,
            )
            self.stray, self.stray_reason = 0, ""

    def _run(self) -> Steps:
        while (length := (yield from self._headers())) is not None:
            self._report_stray()
            if length <= self.max_frame:
                frame = yield from self._body(length)
            else:
                frame = yield from self._oversized(length)
            if frame is None:
                log.warning("input ended inside a frame of %d bytes", length)
                break
            yield frame
        self._report_stray()
        while True:
            yield _MORE

    def _headers(self) -> Generator[_More, None, int | None]:
        """Read a header block; the Content-Length it names, or None at the end of input."""
        length: int | None = None
        scanned = 0
        while True:
            newline = self.buffer.find(b"\n", scanned)
            if newline == -1:
                if len(self.buffer) > MAX_HEADER_LINE:  # keep a tail: a header may start there
                    self._skip(len(self.buffer) - _HEADER_WINDOW, "no line end")
                scanned = len(self.buffer)
                if not (yield from self._more()):
                    if self.buffer.strip():
                        self._skip(len(self.buffer), "no line end")
                    return None
                continue
            line_end = newline + 1
            scanned = 0
            if self.buffer[:line_end].strip() == b"":
                if length is not None:
                    del self.buffer[:line_end]
                    return length
                self._skip(line_end, "a header block without Content-Length")
            elif header := find_header(self.buffer, 0, line_end):
                start, length = header
                self._skip(start, "bytes outside any frame")
                del self.buffer[: line_end - start]
            elif _OTHER_HEADER.match(self.buffer, 0, line_end):
                del self.buffer[:line_end]  # Content-Type and the like: not needed
            else:
                self._skip(line_end, "bytes outside any frame")

    def _body(self, length: int) -> Generator[_More, None, Frame | None]:
        scanned = 0
        while True:
            header = find_header(self.buffer, scanned)
            if header is not None and header[0] < length:
                received = header[0]
                del self.buffer[:received]
                return Broken(length, received)
            if len(self.buffer) >= length:
                body = bytes(self.buffer[:length])
                del self.buffer[:length]
                return body
            scanned = len(self.buffer)  # every line end so far was checked
            if not (yield from self._more()):
                return None

    def _oversized(self, length: int) -> Generator[_More, None, Frame | None]:
        """Skip a frame too large to hold as it arrives, up to its end or the next header."""
        head = b""
        skipped = 0
        while True:
            remaining = length - skipped
            if len(head) < 1024:  # the frame's first bytes; the buffer starts at `skipped`
                head += bytes(self.buffer[len(head) - skipped : min(1024, length) - skipped])
            header = find_header(self.buffer, 0, min(len(self.buffer), remaining))
            take = header[0] if header is not None else min(len(self.buffer), remaining)
            # keep a tail that may hold the start of a header whose line end is still to come
            if header is None and take < remaining and take == len(self.buffer):
                take = max(0, take - _HEADER_WINDOW)
            del self.buffer[:take]
            skipped += take
            if header is not None or skipped >= length:
                return Oversized(length, _head_id(head))
            if not (yield from self._more()):
                return None


def read_frames(read: Callable[[int], bytes]) -> Iterator[Frame]:
    """Frames from a blocking `read(n)` that returns at least one byte, or b"" at the end."""
    parser = FrameParser()
    while True:
        chunk = read(READ_CHUNK)
        yield from parser.feed(chunk)
        if not chunk:
            return


def _head_id(head: bytes) -> int | str | None:
    match = _HEAD_ID.match(head)
    if not match:
        return None
    try:
        value = json.loads(match.group(1))
    except ValueError:
        return None
    return value if isinstance(value, int | str) else None
