"""Load and soak driver for `cl-lsp --stdio`: a lean JSON-RPC client, a typist for many
documents, and the checks a loaded server must pass.

Shared by tests/test_load.py (a few seconds of load, a short soak) and bench/soak.py (the
ten-minute soak with figures). The client speaks raw JSON-RPC rather than through pygls, so
that at a few hundred requests a second the client's own cost stays small next to the
server's on a shared machine, and every answer is timed at the byte it arrives.

What is checked (`LoadResult.problems`):

* every request is answered, without an error;
* newest wins per document: in the server's request records, a request still running when a
  newer request for the same document started was answered empty (superseded or stale);
* no stale edit: every item (inline or completion) is checked against the client's mirror of
  the document at the version it was requested for, and every code action carries that
  version (see `check_answer`). The typist types what x_model suggests, one character at a
  time, so an answer reused from before the last keystroke is one character off and shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import os
import random
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The typed line's text never grows past this before the typist starts it over.
LINE_LIMIT = 40


# -- the client -------------------------------------------------------------------------------


class ServerGone(RuntimeError):
    """The server closed its stdout (crashed or exited)."""


class RawClient:
    """An LSP client over a child process's stdin/stdout, with nothing but json.

    Requests from the server (progress tokens, workspace edits) are answered with `null` or
    `{"applied": true}`; notifications are counted, and `window/showMessage` kept.
    """

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self._ids = iter(range(1, 1 << 62))
        self._pending: dict[int, asyncio.Future[tuple[Any, float]]] = {}
        self.messages: list[str] = []  # window/showMessage texts
        self.notifications = 0
        self.refuse_progress = False  # answer window/workDoneProgress/create with an error
        self.stderr_tail: deque[str] = deque(maxlen=200)
        self._reader = asyncio.ensure_future(self._read())
        self._stderr = asyncio.ensure_future(self._drain_stderr())

    @classmethod
    async def start(cls, command: list[str], env: dict[str, str] | None = None) -> RawClient:
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            limit=1 << 24,
        )
        return cls(process)

    # sending

    def _write(self, message: dict[str, Any]) -> None:
        body = json.dumps(message, separators=(",", ":")).encode()
        assert self.process.stdin is not None
        self.process.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)

    def notify(self, method: str, params: Any) -> None:
        self._write({"jsonrpc": "2.0", "method": method, "params": params})

    def send(self, method: str, params: Any) -> tuple[int, asyncio.Future[tuple[Any, float]]]:
        """Send a request: its id, and a future that gives (result, time.monotonic() at
        arrival) or raises `ResponseError`."""
        msg_id = next(self._ids)
        future: asyncio.Future[tuple[Any, float]] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = future
        self._write({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
        return msg_id, future

    def cancel(self, msg_id: int) -> None:
        self.notify("$/cancelRequest", {"id": msg_id})

    async def request(self, method: str, params: Any, timeout: float = 30) -> Any:
        result, _ = await asyncio.wait_for(self.send(method, params)[1], timeout)
        return result

    async def drain(self) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.drain()

    # receiving

    async def _read(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        try:
            while True:
                length = None
                while True:
                    line = await stdout.readline()
                    if not line:
                        raise ServerGone("the server closed its output")
                    line = line.strip()
                    if not line:
                        break
                    name, _, value = line.partition(b":")
                    if name.lower() == b"content-length":
                        length = int(value)
                if length is None:
                    raise ServerGone("a frame without Content-Length")
                self._dispatch(json.loads(await stdout.readexactly(length)), time.monotonic())
        except (ServerGone, asyncio.IncompleteReadError, ValueError) as error:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ServerGone(str(error)))
            self._pending.clear()

    def _dispatch(self, message: dict[str, Any], arrived: float) -> None:
        if "method" not in message:
            future = self._pending.pop(message.get("id"), None)
            if future is None or future.done():
                return
            if "error" in message:
                future.set_exception(ResponseError(message["error"]))
            else:
                future.set_result((message.get("result"), arrived))
            return
        if "id" in message:  # a request from the server
            if self.refuse_progress and message["method"] == "window/workDoneProgress/create":
                self._write(
                    {
                        "jsonrpc": "2.0",
                        "id": message["id"],
                        "error": {"code": -32603, "message": "no progress here"},
                    }
                )
                return
            result = {"applied": True} if message["method"] == "workspace/applyEdit" else None
            self._write({"jsonrpc": "2.0", "id": message["id"], "result": result})
            return
        self.notifications += 1
        if message["method"] == "window/showMessage":
            self.messages.append(message["params"]["message"])

    async def _drain_stderr(self) -> None:
        stderr = self.process.stderr
        assert stderr is not None
        while line := await stderr.readline():
            self.stderr_tail.append(line.decode(errors="replace").rstrip())

    # session

    async def initialize(self, options: dict[str, Any], root: Path) -> Any:
        capabilities = {
            "window": {"workDoneProgress": True},
            "workspace": {"applyEdit": True, "workspaceEdit": {"documentChanges": True}},
            "textDocument": {
                "inlineCompletion": {},
                "completion": {},
                "synchronization": {},
                "codeAction": {"dataSupport": True, "resolveSupport": {"properties": ["edit"]}},
            },
        }
        result = await self.request(
            "initialize",
            {
                "processId": os.getpid(),
                "rootUri": root.as_uri(),
                "capabilities": capabilities,
                "initializationOptions": options,
            },
            timeout=60,
        )
        self.notify("initialized", {})
        return result

    async def status(self, timeout: float = 30) -> dict[str, Any]:
        return await self.request(
            "workspace/executeCommand", {"command": "cl-lsp.status", "arguments": []}, timeout
        )

    async def wait_ready(self, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            current = await self.status()
            if current["state"] in {"ready", "failed", "empty"} and not current["loading"]:
                return current
            if time.monotonic() > deadline:
                raise AssertionError(f"server stuck in {current['state']}")
            await asyncio.sleep(0.05)

    async def stop(self, timeout: float = 15) -> None:
        with contextlib.suppress(Exception):
            await self.request("shutdown", None, timeout)
            self.notify("exit", None)
            await self.drain()
        try:
            await asyncio.wait_for(self.process.wait(), timeout)
        except asyncio.TimeoutError:
            self.process.kill()
            await self.process.wait()
        for task in (self._reader, self._stderr):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


class ResponseError(RuntimeError):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error.get('code')}: {error.get('message')}")
        self.error = error


def server_command(model: Path | str) -> list[str]:
    return [sys.executable, "-m", "cl_lsp", "--stdio", "--model", str(model)]


def rss_kb(pid: int) -> int:
    """Resident set size of a process, from /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


# -- the typist -------------------------------------------------------------------------------

#: `completion.maxTokensSingleLine` for the load: `x_model` answers at the typed line in
#: single-line mode with this many "▁x" tokens (few, so the model is not all the work).
ANSWER_TOKENS = 8


def x_answer(tokens: int = ANSWER_TOKENS) -> str:
    """What `x_model` suggests at the end of the typed line. Every correct answer there is
    this, or the rest of it after the user typed its start (typed-ahead reuse)."""
    return " x" * (tokens - 1)  # the last, cut by the cap, may be half a word: dropped


TYPED_LINE = 2  # the line the typist types on (0-based)
LINE_HEAD = "    total ="
WORD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_$")


@dataclass
class TypedDocument:
    """A document the typist edits: fixed text around one line it types the answer on.

    The typed text is always a start of " x x x"... (what `x_model` suggests): it types on one
    character at a time, now and then takes one back, and starts the line over when it is
    `LINE_LIMIT` long. Each document's text differs (its function name), so the server's
    result cache cannot answer one document from another.
    """

    uri: str
    index: int
    typed: str = ""
    version: int = 1

    @property
    def line(self) -> str:
        return LINE_HEAD + self.typed

    @property
    def text(self) -> str:
        return (
            f"def tally_{self.index}(values):\n    '''Add up the values.'''\n{self.line}\n"
            "    for value in values:\n        total += value\n    return total\n"
        )

    def keystroke(self, rng: random.Random) -> dict[str, Any]:
        """Type one key; the `didChange` params for it."""
        end = len(self.line)
        if len(self.typed) >= LINE_LIMIT:  # start the line over
            start, new, self.typed = len(LINE_HEAD), "", ""
        elif self.typed and rng.random() < 0.15:  # backspace
            start, new, self.typed = end - 1, "", self.typed[:-1]
        else:
            start, new = end, " x"[len(self.typed) % 2]
            self.typed += new
        self.version += 1
        where = {
            "start": {"line": TYPED_LINE, "character": start},
            "end": {"line": TYPED_LINE, "character": end},
        }
        return {
            "textDocument": {"uri": self.uri, "version": self.version},
            "contentChanges": [{"range": where, "text": new}],
        }

    def open_params(self) -> dict[str, Any]:
        return {
            "textDocument": {
                "uri": self.uri,
                "languageId": "python",
                "version": self.version,
                "text": self.text,
            }
        }


@dataclass(frozen=True)
class Sent:
    """A request as the client sent it, with the client's mirror of what it applies to."""

    kind: str  # "inline", "completion" or "codeAction"
    uri: str
    version: int
    line: str  # the typed line at `version`; the cursor is at its end
    sent_at: float


def _position(line: str) -> dict[str, int]:
    return {"line": TYPED_LINE, "character": len(line)}


def request_params(kind: str, sent: Sent) -> dict[str, Any]:
    document, position = {"uri": sent.uri}, _position(sent.line)
    if kind == "inline":
        return {"textDocument": document, "position": position, "context": {"triggerKind": 2}}
    if kind == "completion":
        return {"textDocument": document, "position": position}
    return {
        "textDocument": document,
        "range": {"start": position, "end": position},
        "context": {"diagnostics": []},
    }


METHODS = {
    "inline": "textDocument/inlineCompletion",
    "completion": "textDocument/completion",
    "codeAction": "textDocument/codeAction",
}


# -- the checks -------------------------------------------------------------------------------


def stale_answer(line: str, answer: str, full: str) -> str | None:
    """Why `answer`, shown at the end of `line`, cannot be the model's answer there (`full`,
    see `x_answer`); None if it can. The answer is all of `full` or, reused after the user
    typed its start, the rest of it: then the line must end with exactly the part typed. An
    answer computed before the last keystroke is one character off and fails."""
    if not answer or len(answer) > len(full) or not full.endswith(answer):
        return f"{answer[:12]!r}... is not (the rest of) the model's answer"
    typed = full[: len(full) - len(answer)]
    if not line.endswith(typed) or len(line) < len(LINE_HEAD) + len(typed):
        return f"{answer[:12]!r}... continues {typed[-12:]!r}, but the line is {line!r}"
    return None


def check_answer(sent: Sent, result: Any, full: str) -> str | None:
    """Why `result` is wrong for `sent` (checked against the mirror at its version); `full`
    is the model's whole answer at the typed line (`x_answer`)."""
    if sent.kind == "inline":
        return _check_inline(sent, result, full)
    if sent.kind == "completion":
        return _check_completion(sent, result, full)
    return _check_actions(sent, result)


def _check_inline(sent: Sent, result: Any, full: str) -> str | None:
    items = result["items"] if isinstance(result, dict) else result
    if not isinstance(items, list) or len(items) > 1:
        return f"inline answer {str(result)[:80]}"
    if not items:
        return None
    item, cursor = items[0], _position(sent.line)
    where = item.get("range")
    if where is not None and (where["start"] != cursor or where["end"] != cursor):
        return f"inline item range {where} at v{sent.version}, cursor {cursor}"
    return stale_answer(sent.line, item["insertText"], full)


def _check_completion(sent: Sent, result: Any, full: str) -> str | None:
    items = result.get("items") if isinstance(result, dict) else result
    if not isinstance(items, list) or len(items) > 1:
        return f"completion answer {str(result)[:80]}"
    if not items:
        return None
    edit = items[0]["textEdit"]
    word = len(sent.line) - len(sent.line.rstrip("".join(WORD_CHARS)))
    start = {"line": TYPED_LINE, "character": len(sent.line) - word}
    if edit["range"] != {"start": start, "end": _position(sent.line)}:
        return f"completion range {edit['range']} at v{sent.version} for {sent.line!r}"
    typed_word = sent.line[len(sent.line) - word :]
    if not edit["newText"].startswith(typed_word):
        return f"completion {edit['newText'][:12]!r} does not start with {typed_word!r}"
    return stale_answer(sent.line, edit["newText"][word:], full)


def _check_actions(sent: Sent, result: Any) -> str | None:
    if not isinstance(result, list) or not result:
        return f"code actions {str(result)[:80]} for a cursor in a function"
    for action in result:
        data = action.get("data", {}).get("cl-lsp", {})
        if data.get("uri") != sent.uri or data.get("version") != sent.version:
            return (
                f"code action for {data.get('uri')} v{data.get('version')}, asked at "
                f"v{sent.version}"
            )
    return None


# Outcomes answered empty ("none": nothing to complete at the cursor).
EMPTY_OUTCOMES = frozenset({"superseded", "stale", "cancelled", "none"})


def newest_wins_violations(records: list[dict[str, Any]]) -> list[str]:
    """Requests that were still running when a newer one for their document started, yet
    were not answered empty (from the server's request records)."""
    by_uri: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_uri.setdefault(record["uri"], []).append(record)
    problems = []
    for uri, mine in by_uri.items():
        mine.sort(key=lambda record: record["started"])
        for older, newer in itertools.pairwise(mine):
            finished = older["started"] + older["totalMs"] / 1000
            if finished > newer["started"] and older["outcome"] not in EMPTY_OUTCOMES:
                problems.append(
                    f"{uri} v{older['version']} ended {older['outcome']} "
                    f"{(finished - newer['started']) * 1000:.1f} ms after "
                    f"v{newer['version']}'s request started"
                )
    return problems


# -- the driver -------------------------------------------------------------------------------

#: How often each kind of request follows a keystroke (an editor asks for inline completions
#: on every keystroke; the menu and the code-action lightbulb less often).
MIX = (("inline", 0.7), ("completion", 0.15), ("codeAction", 0.15))


@dataclass
class Sample:
    """The server as seen between keystrokes, during a soak."""

    seconds: float  # since the soak started
    edits: int  # keystrokes sent so far
    rss_kb: int
    tables: dict[str, int]
    outstanding: int  # requests the client still waits for
    python_blocks: int = 0  # sys.getallocatedblocks() in the server


@dataclass
class LoadResult:
    sent: int = 0
    answered: int = 0
    cancelled_answers: int = 0  # answered RequestCancelled after a $/cancelRequest
    with_item: int = 0  # answers that showed something
    edits: int = 0
    seconds: float = 0.0
    latencies: dict[str, list[float]] = field(default_factory=dict)  # ms, by kind
    problems: list[str] = field(default_factory=list)  # the first 50
    problem_count: int = 0
    records: dict[tuple[str, int, float], dict[str, Any]] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)

    def problem(self, text: str) -> None:
        self.problem_count += 1
        if len(self.problems) < 50:
            self.problems.append(text)

    def percentile(self, fraction: float, kinds: tuple[str, ...] | None = None) -> float:
        values = sorted(
            v
            for kind, values in self.latencies.items()
            if kinds is None or kind in kinds
            for v in values
        )
        if not values:
            return float("nan")
        return values[min(len(values) - 1, int(fraction * len(values)))]


class Typist:
    """Types into many open documents at a steady rate, each keystroke followed by a request,
    and checks every answer against its mirror of the document at the request's version."""

    def __init__(
        self,
        client: RawClient,
        root: Path,
        documents: int,
        *,
        seed: int = 0,
        answer_tokens: int = ANSWER_TOKENS,
        cancel_fraction: float = 0.05,
        reopen_every: int = 0,
    ) -> None:
        self.client, self.root = client, root
        self.full_answer = x_answer(answer_tokens)
        self.rng = random.Random(seed)
        self.cancel_fraction = cancel_fraction
        self.reopen_every = reopen_every  # close a document and open a new one this often
        self.documents = [self._new_document(index) for index in range(documents)]
        self.result = LoadResult()
        self.outstanding: set[asyncio.Future[Any]] = set()
        self._last: dict[str, int] = {}  # uri -> id of its newest request
        self._opened = documents

    def _new_document(self, index: int) -> TypedDocument:
        return TypedDocument((self.root / f"typed_{index}.py").as_uri(), index)

    def open_all(self) -> None:
        for document in self.documents:
            self.client.notify("textDocument/didOpen", document.open_params())

    def close_all(self) -> None:
        for document in self.documents:
            self.client.notify("textDocument/didClose", {"textDocument": {"uri": document.uri}})

    def keystroke(self) -> None:
        number = self.result.edits
        if self.reopen_every and number and number % self.reopen_every == 0:
            self._reopen()
        document = self.rng.choice(self.documents)
        self.client.notify("textDocument/didChange", document.keystroke(self.rng))
        self.result.edits += 1
        kind = self.rng.choices([k for k, _ in MIX], [w for _, w in MIX])[0]
        sent = Sent(kind, document.uri, document.version, document.line, time.monotonic())
        previous = self._last.get(document.uri)
        msg_id, future = self.client.send(METHODS[kind], request_params(kind, sent))
        self._last[document.uri] = msg_id
        if previous is not None and self.rng.random() < self.cancel_fraction:
            self.client.cancel(previous)  # as VS Code does for a superseded request
        self.result.sent += 1
        self.outstanding.add(future)
        future.add_done_callback(functools.partial(self._answered, sent))

    def _reopen(self) -> None:
        """Close one document and open a new one in its place (per-document state must go)."""
        slot = self.rng.randrange(len(self.documents))
        old = self.documents[slot]
        self.client.notify("textDocument/didClose", {"textDocument": {"uri": old.uri}})
        self._last.pop(old.uri, None)
        self.documents[slot] = self._new_document(self._opened)
        self._opened += 1
        self.client.notify("textDocument/didOpen", self.documents[slot].open_params())

    def _answered(self, sent: Sent, future: asyncio.Future[tuple[Any, float]]) -> None:
        self.outstanding.discard(future)
        if future.cancelled():
            return
        error = future.exception()
        result = self.result
        if isinstance(error, ResponseError) and error.error.get("code") == -32800:
            result.answered += 1
            result.cancelled_answers += 1
            return
        if error is not None:
            result.problem(f"{sent.kind} v{sent.version}: {error}")
            return
        answer, arrived = future.result()
        result.answered += 1
        result.latencies.setdefault(sent.kind, []).append((arrived - sent.sent_at) * 1000)
        if _shows_something(answer):
            result.with_item += 1
        if (why := check_answer(sent, answer, self.full_answer)) is not None:
            result.problem(f"{sent.uri.rsplit('/', 1)[-1]} {sent.kind} v{sent.version}: {why}")

    async def type_for(
        self,
        seconds: float,
        rate: float,
        *,
        edits: int | None = None,
        sample_every: float = 0.0,
        sample_every_edits: int = 0,
        record_every: float = 0.0,
        max_outstanding: int = 5000,
    ) -> LoadResult:
        """Type `rate` keystrokes a second for `seconds` (or until `edits` more keystrokes,
        if that comes first), then wait for every answer.

        `sample_every` seconds or `sample_every_edits` keystrokes: take a `Sample` (RSS and
        table sizes). `record_every`: collect the server's request records that often (for
        `newest_wins_violations`)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        due = next_sample = next_records = started
        stop_at = None if edits is None else self.result.edits + edits
        sampled_at = self.result.edits
        while (now := loop.time()) < started + seconds:
            while due <= now and len(self.outstanding) < max_outstanding:
                if stop_at is not None and self.result.edits >= stop_at:
                    break
                self.keystroke()
                due += 1 / rate
            await self.client.drain()
            if stop_at is not None and self.result.edits >= stop_at:
                break
            if (sample_every and now >= next_sample) or (
                sample_every_edits and self.result.edits - sampled_at >= sample_every_edits
            ):
                # Sampled with nothing in flight, so queued messages and answers being built
                # do not count as growth; the keystrokes missed meanwhile are skipped.
                await self.settle()
                await self.sample(loop.time() - started)
                now, sampled_at = loop.time(), self.result.edits
                due, next_sample = max(due, now), now + sample_every
            if record_every and now >= next_records:
                next_records += record_every
                await self.collect_records()
            await asyncio.sleep(max(0.0, min(due, started + seconds) - loop.time()))
        self.result.seconds = loop.time() - started
        await self.settle()
        if record_every:
            await self.collect_records()
        return self.result

    async def settle(self, timeout: float = 120) -> None:
        """Wait until every request is answered (or record the ones that never were)."""
        if self.outstanding:
            _, late = await asyncio.wait(set(self.outstanding), timeout=timeout)
            for _ in late:
                self.result.problem(f"a request was not answered within {timeout:.0f} s")

    async def sample(self, seconds: float) -> Sample:
        current = await self.client.status()
        sample = Sample(
            seconds,
            self.result.edits,
            rss_kb(current["pid"]),
            current["tables"],
            len(self.outstanding),
            current.get("pythonBlocks", 0),
        )
        self.result.samples.append(sample)
        return sample

    async def collect_records(self) -> None:
        current = await self.client.request(
            "workspace/executeCommand",
            {"command": "cl-lsp.status", "arguments": [{"recent": 1000}]},
        )
        for record in current["recent"]:
            self.result.records[(record["uri"], record["version"], record["started"])] = record


def _shows_something(answer: Any) -> bool:
    if isinstance(answer, dict):
        return bool(answer.get("items"))
    return bool(answer)


def rss_slope_kb_per_1000(samples: list[Sample], *, skip: float = 0.5) -> float:
    """Least-squares growth of RSS in kB per thousand edits, over the samples after the first
    `skip` fraction of the run (bounded caches fill up during the first part)."""
    return slope_per_1000(samples, lambda sample: sample.rss_kb, skip=skip)


def blocks_slope_per_1000(samples: list[Sample], *, skip: float = 0.5) -> float:
    """Growth of the memory blocks Python has allocated, per thousand edits. RSS also moves
    with how the C allocator keeps freed memory (a few MB drift up over the first thousands of
    edits, and come back with malloc_trim); this counts live Python objects only, so a leaked
    object per request shows as a steady ~10,000 blocks per thousand edits."""
    return slope_per_1000(samples, lambda sample: sample.python_blocks, skip=skip)


def slope_per_1000(
    samples: list[Sample], value: Callable[[Sample], float], *, skip: float = 0.5
) -> float:
    kept = samples[int(len(samples) * skip) :]
    if len(kept) < 3:
        return float("nan")
    xs = [sample.edits for sample in kept]
    ys = [value(sample) for sample in kept]
    slope = statistics.linear_regression(xs, ys).slope if len(set(xs)) > 1 else 0.0
    return slope * 1000


async def start_server(
    model: Path | str, root: Path, options: dict[str, Any], env: dict[str, str] | None = None
) -> RawClient:
    client = await RawClient.start(server_command(model), env)
    await client.initialize(options, root)
    current = await client.wait_ready()
    if current["state"] != "ready":
        await client.stop()
        raise RuntimeError(f"the model did not load: {current.get('error')}")
    return client


def supersede_delays_ms(records: list[dict[str, Any]]) -> list[float]:
    """For each request answered after a newer one for its document started: how long after
    (the wait newest-wins should keep short)."""
    by_uri: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_uri.setdefault(record["uri"], []).append(record)
    delays = []
    for mine in by_uri.values():
        mine.sort(key=lambda record: record["started"])
        for older, newer in itertools.pairwise(mine):
            finished = older["started"] + older["totalMs"] / 1000
            if finished > newer["started"]:
                delays.append((finished - newer["started"]) * 1000)
    return delays
