"""Download progress for people: a one-line bar on a terminal (never on stdout in the server:
stdout carries the protocol), and a throttle for any progress callback."""

from __future__ import annotations

import shutil
import sys
import time
from collections import deque
from typing import TextIO

from .models import ProgressCallback


def throttled(callback: ProgressCallback, interval: float = 0.2) -> ProgressCallback:
    """Wrap *callback* to pass at most one report per *interval* seconds.

    The first report, and any report where ``bytes_done == bytes_total``, always pass.
    """
    last = -float("inf")

    def report(done: int, total: int | None) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= interval or (total is not None and done >= total):
            last = now
            callback(done, total)

    return report


class TerminalProgress:
    """A one-line progress bar for downloads, drawn on a text stream (stderr by default).

    Call it as ``progress(bytes_done, bytes_total)``. On a terminal the line is redrawn in place
    (carriage returns, at most ten times a second); otherwise a line is printed every 10 %.
    The final newline is written when ``bytes_done`` reaches ``bytes_total``, or by
    :meth:`close` if the download stops earlier.
    """

    def __init__(self, stream: TextIO | None = None, *, interval: float = 0.1) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        try:
            self.tty = self.stream.isatty()
        except (AttributeError, ValueError):
            self.tty = False
        self._samples: deque[tuple[float, int]] = deque()
        self._last_draw = -float("inf")
        self._last_decile = -1
        self._width = 0
        self._open = False
        self._finished: tuple[int, int | None] | None = None

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        self._samples.append((now, done))
        while len(self._samples) > 2 and now - self._samples[0][0] > 5.0:
            self._samples.popleft()
        finished = total is not None and done >= total
        if finished:
            if self._finished == (done, total):
                return  # already drawn, with its newline
            self._finished = (done, total)
        elif self.tty:
            if now - self._last_draw < self.interval:
                return
        elif total:
            decile = int(10 * done / total)
            if decile == self._last_decile:
                return
            self._last_decile = decile
        elif now - self._last_draw < 5.0:
            return
        self._last_draw = now
        self._draw(done, total, finished)

    def _rate(self) -> float | None:
        if len(self._samples) < 2:
            return None
        (t0, b0), (t1, b1) = self._samples[0], self._samples[-1]
        return (b1 - b0) / (t1 - t0) if t1 > t0 else None

    def _line(self, done: int, total: int | None) -> str:
        mb = 1_000_000
        rate = self._rate()
        speed = f"  {rate / mb:6.1f} MB/s" if rate is not None and rate >= 0 else ""
        if total:
            frac = min(max(done / total, 0.0), 1.0)
            bar_width = 30
            if self.tty:
                columns = shutil.get_terminal_size((80, 24)).columns
                bar_width = max(10, min(40, columns - 50))
            filled = int(frac * bar_width)
            bar = "#" * filled + "-" * (bar_width - filled)
            return f"[{bar}] {frac:4.0%}  {done / mb:,.1f}/{total / mb:,.1f} MB{speed}"
        return f"{done / mb:,.1f} MB{speed}"

    def _draw(self, done: int, total: int | None, finished: bool) -> None:
        line = self._line(done, total)
        try:
            if self.tty:
                pad = " " * max(0, self._width - len(line))
                self.stream.write("\r" + line + pad)
                self._width = len(line)
                self._open = True
                if finished:
                    self.stream.write("\n")
                    self._open = False
            else:
                self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass  # a closed or broken stream must not break the download

    def close(self) -> None:
        """End the line if a bar is still drawn (e.g. the download failed half way)."""
        if self._open:
            try:
                self.stream.write("\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass
            self._open = False


def terminal_progress(stream: TextIO | None = None) -> TerminalProgress:
    """A progress callback drawing a one-line bar on *stream* (``sys.stderr`` when None).

    Never draw on stdout in the server: stdout carries the LSP protocol.
    """
    return TerminalProgress(stream)
