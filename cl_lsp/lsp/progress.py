"""Work-done progress: `$/progress` reports the user can watch (and cancel) in the editor.

Clients that do not support it get the same messages in the log only.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from lsprotocol import types
from pygls.exceptions import JsonRpcException

from ..progress_bar import terminal_progress, throttled

log = logging.getLogger(__name__)


class ProgressHost(Protocol):
    """What `Progress` needs of the server: whether the client shows progress, the pygls
    progress API, and where the editor's cancel buttons land."""

    progress_supported: bool
    progress_cancels: dict[str, threading.Event]

    @property
    def work_done_progress(self) -> Any: ...


class Progress:
    """Work-done progress if the client supports it; otherwise only the log."""

    def __init__(self, ls: ProgressHost, title: str, cancel: threading.Event | None = None) -> None:
        self.ls, self.title = ls, title
        self.token: str | None = None
        self.cancel = cancel  # set when the user cancels the progress in the editor

    async def begin(self, message: str) -> None:
        log.info("%s: %s", self.title, message)
        if not self.ls.progress_supported:
            return
        token = f"cl-lsp-{uuid.uuid4()}"
        try:
            await asyncio.wait_for(self.ls.work_done_progress.create_async(token), 10)
        except (JsonRpcException, asyncio.TimeoutError) as error:  # refused or no answer
            log.debug("work done progress refused: %s", error)
            return
        self.token = token
        if self.cancel is not None:
            self.ls.progress_cancels[token] = self.cancel
        self.ls.work_done_progress.begin(
            token,
            types.WorkDoneProgressBegin(
                title=self.title, message=message, cancellable=self.cancel is not None
            ),
        )

    async def report(self, message: str, percentage: int | None = None) -> None:
        log.info("%s: %s", self.title, message)
        self.send_report(message, percentage)

    def send_report(self, message: str, percentage: int | None = None) -> None:
        if self.token is not None:
            self.ls.work_done_progress.report(
                self.token, types.WorkDoneProgressReport(message=message, percentage=percentage)
            )

    async def end(self, message: str) -> None:
        if self.token is not None:
            self.ls.progress_cancels.pop(self.token, None)
            self.ls.work_done_progress.end(self.token, types.WorkDoneProgressEnd(message=message))
            # pygls keeps every token it ever created (issue 12): one per action, forever.
            self.ls.work_done_progress.tokens.pop(self.token, None)
            self.token = None

    def threadsafe_bytes(
        self, loop: asyncio.AbstractEventLoop, name: Callable[[], str] = lambda: ""
    ) -> Any:
        """A download progress callback usable from any thread: a bar on stderr, and
        `$/progress` reports to the editor at most twice a second, naming what downloads
        (`downloading codellama-13b: 512/7870 MB`)."""
        bar = terminal_progress()

        def to_editor(done: int, total: int | None) -> None:
            what = f"downloading {name()}: " if name() else "downloading "
            if total:
                percentage = int(done * 100 / total)
                message = f"{what}{done / 1e6:.0f}/{total / 1e6:.0f} MB"
            else:
                percentage, message = None, f"{what}{done / 1e6:.0f} MB"
            loop.call_soon_threadsafe(self.send_report, message, percentage)

        editor = throttled(to_editor, 0.5)

        def on_bytes(done: int, total: int | None) -> None:
            bar(done, total)
            editor(done, total)

        on_bytes.close = bar.close  # type: ignore[attr-defined]
        return on_bytes
