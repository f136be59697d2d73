"""End to end: the protocol's edges, driven with raw bytes on the server's stdin.

Each test starts `python -m cl_lsp --stdio` as a real subprocess, writes bytes the way a broken
or hostile client might (bad framing, bad JSON, bad params, requests out of lifecycle order),
then checks the server still answers, answers with the error code the protocol names, shows
no "Error in server" popup and sends or prints no Python traceback.
"""

from __future__ import annotations

import json
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import offline_env

PARSE_ERROR, INVALID_REQUEST, INVALID_PARAMS, INTERNAL_ERROR = -32700, -32600, -32602, -32603
SERVER_NOT_INITIALIZED = -32002
ANSWER_TIMEOUT = 8.0  # a status request is answered in milliseconds; this is only a bound
MAX_FRAME = 64 * 1024 * 1024  # what the test reader accepts from the server


def frame(message: Any) -> bytes:
    body = json.dumps(message).encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def status_request(msg_id: Any) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": msg_id,
        "method": "workspace/executeCommand",
        "params": {"command": "cl-lsp.status"},
    }


class RawServer:
    """`cl-lsp --stdio` in a subprocess: raw bytes in, parsed frames out, stderr collected."""

    def __init__(self, model: Path, tmp_path: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cl_lsp", "--stdio", "--model", str(model)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=offline_env(tmp_path),
        )
        self.frames: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.received: list[dict[str, Any]] = []  # every frame taken from the queue
        self.stderr_lines: list[str] = []
        self.bad_output: list[str] = []  # anything on stdout that is not a well-formed frame
        self._threads = [
            threading.Thread(target=self._read_frames, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    # -- the server's output -----------------------------------------------------------------

    def _read_frames(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        try:
            while True:
                length = None
                while True:
                    line = stdout.readline(4096)
                    if not line:
                        return
                    if line == b"\r\n":
                        break
                    name, _, value = line.decode("ascii").partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                if length is None or length > MAX_FRAME:
                    self.bad_output.append(f"frame without a usable length ({length})")
                    return
                body = stdout.read(length)
                try:
                    self.frames.put(json.loads(body))
                except ValueError:
                    self.bad_output.append(body.decode("utf-8", "replace"))
        finally:
            self.frames.put(None)

    def _read_stderr(self) -> None:
        stderr = self.process.stderr
        assert stderr is not None
        for line in iter(stderr.readline, b""):
            self.stderr_lines.append(line.decode("utf-8", "replace"))

    def next_frame(self, deadline: float) -> dict[str, Any] | None:
        """The next frame from the server, or None when it closed stdout or time ran out."""
        try:
            message = self.frames.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return None
        if message is None:
            self.frames.put(None)  # stay closed for later callers
            return None
        self.received.append(message)
        return message

    def answer(self, msg_id: Any, timeout: float = ANSWER_TIMEOUT) -> dict[str, Any]:
        """The server's response to `msg_id` (None for the id-less error answers)."""
        for message in self.received:
            if "method" not in message and message.get("id", "?") == msg_id:
                return message
        deadline = time.monotonic() + timeout
        while (message := self.next_frame(deadline)) is not None:
            if "method" not in message and message.get("id", "?") == msg_id:
                return message
        raise AssertionError(
            f"no answer to id {msg_id!r} within {timeout}s "
            f"(alive: {self.process.poll() is None}); stderr:\n{self.stderr}"
        )

    def drain(self, seconds: float) -> None:
        """Collect whatever the server sends within `seconds`."""
        deadline = time.monotonic() + seconds
        while self.next_frame(deadline) is not None:
            pass

    @property
    def stderr(self) -> str:
        return "".join(self.stderr_lines)

    # -- the client's input ------------------------------------------------------------------

    def send_raw(self, data: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def send(self, message: Any) -> None:
        self.send_raw(frame(message))

    def request(self, msg_id: Any, method: str, params: Any = None) -> dict[str, Any]:
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": msg_id, "method": method}
        if params is not None:
            message["params"] = params
        self.send(message)
        return self.answer(msg_id)

    def notify(self, method: str, params: Any = None) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        self.send(message)

    def initialize(self) -> None:
        answer = self.request(
            "init",
            "initialize",
            {
                "processId": None,
                "rootUri": None,
                "capabilities": {},
                "initializationOptions": {"completion": {"debounceMs": 0}},
            },
        )
        assert "result" in answer, answer
        self.notify("initialized", {})

    def status(self, msg_id: Any) -> dict[str, Any]:
        """Ask for cl-lsp.status and return the answer: the server is not deaf."""
        self.send(status_request(msg_id))
        answer = self.answer(msg_id)
        assert "result" in answer, answer
        return answer["result"]

    def wait_exit(self, timeout: float = ANSWER_TIMEOUT) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the server did not exit; stderr:\n{self.stderr}") from None

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        for thread in self._threads:
            thread.join(5)
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()

    # -- what must never happen --------------------------------------------------------------

    def assert_clean(self) -> None:
        """No popup about internal errors, no traceback to the client or on stderr."""
        self.drain(0.2)
        popups = [
            m
            for m in self.received
            if m.get("method") == "window/showMessage"
            and "Error in server" in m["params"]["message"]
        ]
        assert not popups, popups
        leaked = [
            m
            for m in self.received
            if "Traceback" in json.dumps(m) or "traceback" in json.dumps(m.get("error", {}))
        ]
        assert not leaked, leaked
        assert not self.bad_output, self.bad_output
        assert "Traceback" not in self.stderr, self.stderr
        assert "MemoryError" not in self.stderr, self.stderr


@pytest.fixture
def server(eot_model: Path, tmp_path: Path):
    servers: list[RawServer] = []

    def start(initialize: bool = True) -> RawServer:
        started = RawServer(eot_model, tmp_path)
        servers.append(started)
        if initialize:
            started.initialize()
        return started

    yield start
    for started in servers:
        started.close()


def error_of(answer: dict[str, Any]) -> dict[str, Any]:
    assert "error" in answer, answer
    error = answer["error"]
    assert "\n" not in error["message"] and len(error["message"]) < 300, error
    assert "traceback" not in json.dumps(error.get("data")).lower(), error
    return error


def parse_errors(server: RawServer) -> list[dict[str, Any]]:
    return [
        m["error"]
        for m in server.received
        if "method" not in m and m.get("id") is None and "error" in m
    ]


# -- bug 4: framing -------------------------------------------------------------------------------


def test_stray_bytes_without_a_line_end_are_skipped(server):
    lsp = server()
    lsp.send_raw(b"garbage without a line end")
    lsp.send(status_request(1))
    assert lsp.answer(1)["result"]["pid"] == lsp.process.pid
    lsp.status(2)
    assert "stray" in lsp.stderr  # logged once, on stderr
    assert lsp.stderr.count("stray") == 1
    lsp.assert_clean()


def test_a_lower_case_content_length_is_accepted(server):
    lsp = server()
    body = json.dumps(status_request(1)).encode()
    lsp.send_raw(b"content-length: %d\r\n\r\n" % len(body) + body)
    assert "result" in lsp.answer(1)
    lsp.assert_clean()


def test_a_frame_without_content_length_is_skipped(server):
    lsp = server()
    body = json.dumps(status_request(1)).encode()
    lsp.send_raw(b"Content-Type: application/vscode-jsonrpc; charset=utf-8\r\n\r\n" + body)
    lsp.status(2)
    lsp.assert_clean()


@pytest.mark.parametrize("delta", [-10, 40], ids=["shorter", "longer"])
def test_a_content_length_that_does_not_match_the_body(server, delta):
    lsp = server()
    body = json.dumps(status_request(1)).encode()
    lsp.send_raw(b"Content-Length: %d\r\n\r\n" % (len(body) + delta) + body)
    lsp.status(2)
    lsp.status(3)
    # the broken frame is reported as a parse error (id null), not acted on
    assert [e["code"] for e in parse_errors(lsp)] == [PARSE_ERROR]
    assert not [m for m in lsp.received if m.get("id") == 1]
    lsp.assert_clean()


def peak_virtual_memory(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"^VmPeak:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else None


@pytest.mark.parametrize("length", [10**16, 10**10])
def test_a_huge_content_length_is_refused_not_allocated(server, length):
    lsp = server()
    before = peak_virtual_memory(lsp.process.pid)
    lsp.send_raw(
        b"Content-Length: %d\r\n\r\n" % length + json.dumps(status_request("huge")).encode()
    )
    lsp.status(1)
    assert lsp.process.poll() is None
    # the oversized request is answered (its id is read from the head of the frame), not run
    error = error_of(lsp.answer("huge"))
    assert error["code"] == INVALID_REQUEST and "too large" in error["message"]
    after = peak_virtual_memory(lsp.process.pid)
    if before is not None and after is not None:
        assert after - before < 1 << 30  # nothing sized by the client was allocated
    lsp.assert_clean()


# -- bug 5: malformed messages --------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"jsonrpc": "2.0", "id": 7, "method": ',
        b'{"jsonrpc": "2.0", "id": 7, "method": "\xff\xfe"}',
    ],
    ids=["invalid-json", "invalid-utf8"],
)
def test_a_body_that_cannot_be_parsed_gets_a_parse_error(server, body):
    lsp = server()
    lsp.send_raw(b"Content-Length: %d\r\n\r\n" % len(body) + body)
    lsp.status(1)
    errors = parse_errors(lsp)
    assert [e["code"] for e in errors] == [PARSE_ERROR], lsp.received
    error_of({"error": errors[0]})
    assert "parse error" in lsp.stderr.lower()  # and a log line
    lsp.assert_clean()


@pytest.mark.parametrize(
    "message, code, answer_id",
    [
        ({"jsonrpc": "1.0", "id": 5, "method": "shutdown"}, INVALID_REQUEST, 5),
        ({"id": 5, "method": "shutdown"}, INVALID_REQUEST, 5),
        ({"jsonrpc": "2.0", "id": {"nested": 1}, "method": "shutdown"}, INVALID_REQUEST, None),
        ({"jsonrpc": "2.0", "id": 5, "method": 42}, INVALID_REQUEST, 5),
        ([status_request(5)], INVALID_REQUEST, None),
        ("just a string", INVALID_REQUEST, None),
    ],
    ids=["version", "no-version", "object-id", "method-type", "batch", "string"],
)
def test_an_invalid_request_object_gets_invalid_request(server, message, code, answer_id):
    lsp = server()
    lsp.send(message)
    lsp.status(1)
    assert error_of(lsp.answer(answer_id))["code"] == code
    lsp.status(2)  # still serving, and `shutdown` above was not run
    lsp.assert_clean()


def test_a_notification_without_params_is_dropped_quietly(server, tmp_path):
    lsp = server()
    for method in (
        "textDocument/didOpen",
        "textDocument/didChange",
        "workspace/didChangeConfiguration",
        "$/cancelRequest",
    ):
        lsp.notify(method)
    assert lsp.status(1)["documents"] == 0
    lsp.assert_clean()


def test_wrong_types_in_params_get_invalid_params(server, tmp_path):
    lsp = server()
    uri = (tmp_path / "a.py").as_uri()
    lsp.notify(
        "textDocument/didOpen",
        {"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": "value = "}},
    )
    bad_position = {
        "textDocument": {"uri": uri},
        "position": {"line": "zero", "character": 0},
        "context": {"triggerKind": 1},
    }
    error = error_of(lsp.request(1, "textDocument/inlineCompletion", bad_position))
    assert error["code"] == INVALID_PARAMS and "position.line" in error["message"]
    error = error_of(lsp.request(2, "workspace/executeCommand", {"command": 5}))
    assert error["code"] == INVALID_PARAMS
    error = error_of(lsp.request(3, "textDocument/completion", [uri, 0, 0]))
    assert error["code"] == INVALID_PARAMS
    error = error_of(lsp.request(4, "textDocument/inlineCompletion"))
    assert error["code"] == INVALID_PARAMS
    # notifications with wrong types are dropped with a log line
    lsp.notify(
        "textDocument/didChange",
        {"textDocument": {"uri": uri, "version": "two"}, "contentChanges": "all of it"},
    )
    lsp.notify("textDocument/didClose", {"textDocument": 5})
    assert lsp.status(5)["documents"] == 1
    lsp.assert_clean()


def test_a_failing_notification_handler_is_logged_not_shown(server):
    lsp = server()
    # pygls's own notebook handler fails on a notebook it never saw (KeyError)
    lsp.notify(
        "notebookDocument/didChange",
        {"notebookDocument": {"uri": "file:///never-opened.ipynb", "version": 2}, "change": {}},
    )
    lsp.status(1)
    lsp.drain(0.5)
    logged = [
        m["params"]["message"] for m in lsp.received if m.get("method") == "window/logMessage"
    ]
    assert any("notebookDocument/didChange failed" in message for message in logged), logged
    assert "notebookDocument/didChange failed: KeyError" in lsp.stderr
    lsp.assert_clean()


def test_a_lone_surrogate_is_replaced_not_a_crash(server, tmp_path):
    lsp = server()
    uri = (tmp_path / "s.py").as_uri()
    # JSON may carry a lone UTF-16 surrogate (JavaScript strings can hold one)
    text = 'name = \\"\\ud800\\"\\nvalue = '  # JSON-escaped: name = "<lone surrogate>"
    body = (
        '{"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"textDocument": '
        f'{{"uri": "{uri}", "languageId": "python", "version": 1, "text": "{text}"}}}}}}'
    )
    lsp.send_raw(b"Content-Length: %d\r\n\r\n" % len(body.encode()) + body.encode())
    change = (
        '{"jsonrpc": "2.0", "method": "textDocument/didChange", "params": {"textDocument": '
        f'{{"uri": "{uri}", "version": 2}}, "contentChanges": [{{"range": {{"start": '
        '{"line": 1, "character": 8}, "end": {"line": 1, "character": 8}}, '
        '"text": "\\udc00"}]}}'
    )
    lsp.send_raw(b"Content-Length: %d\r\n\r\n" % len(change.encode()) + change.encode())
    for msg_id, method in enumerate(
        ("textDocument/inlineCompletion", "textDocument/completion", "textDocument/codeAction")
    ):
        params: dict[str, Any] = {
            "textDocument": {"uri": uri},
            "position": {"line": 1, "character": 9},
        }
        if method == "textDocument/inlineCompletion":
            params["context"] = {"triggerKind": 1}
        if method == "textDocument/codeAction":
            del params["position"]
            params["range"] = {
                "start": {"line": 0, "character": 0},
                "end": {"line": 1, "character": 9},
            }
            params["context"] = {"diagnostics": []}
        answer = lsp.request(msg_id, method, params)
        assert "result" in answer, answer
    assert lsp.status(9)["documents"] == 1
    # ... and in any other string: a model path is looked up, not a crash with a traceback
    setting = (
        '{"jsonrpc": "2.0", "method": "workspace/didChangeConfiguration", "params": '
        '{"settings": {"model": {"path": "/no/such/model-\\ud800.gguf"}}}}'
    )
    lsp.send_raw(b"Content-Length: %d\r\n\r\n" % len(setting) + setting.encode())
    deadline = time.monotonic() + ANSWER_TIMEOUT
    while not [m for m in lsp.received if m.get("method") == "window/showMessage"]:
        assert lsp.next_frame(deadline) is not None, lsp.stderr
    shown = [
        m["params"]["message"] for m in lsp.received if m.get("method") == "window/showMessage"
    ]
    assert "model file not found: /no/such/model-\ufffd.gguf" in shown[0], shown
    lsp.assert_clean()


# -- bug 6: lifecycle ------------------------------------------------------------------------------


def test_requests_before_initialize_get_server_not_initialized(server, tmp_path):
    lsp = server(initialize=False)
    lsp.send(status_request(1))
    assert error_of(lsp.answer(1))["code"] == SERVER_NOT_INITIALIZED
    # notifications before initialize are dropped
    lsp.notify(
        "textDocument/didOpen",
        {
            "textDocument": {
                "uri": (tmp_path / "a.py").as_uri(),
                "languageId": "python",
                "version": 1,
                "text": "x",
            }
        },
    )
    lsp.initialize()
    assert lsp.status(2)["documents"] == 0
    # initialize only once
    error = error_of(
        lsp.request(3, "initialize", {"processId": None, "rootUri": None, "capabilities": {}})
    )
    assert error["code"] == INVALID_REQUEST
    lsp.assert_clean()


def test_requests_after_shutdown_get_invalid_request_and_exit_is_0(server):
    lsp = server()
    # eglot sends "params": null where there are none
    lsp.send({"jsonrpc": "2.0", "id": 1, "method": "shutdown", "params": None})
    assert lsp.answer(1) == {"jsonrpc": "2.0", "id": 1, "result": None}
    lsp.send(status_request(2))
    assert error_of(lsp.answer(2))["code"] == INVALID_REQUEST
    lsp.send({"jsonrpc": "2.0", "method": "exit", "params": None})
    assert lsp.wait_exit() == 0  # stdin is still open: exit does not wait for it
    lsp.assert_clean()


def test_shutdown_with_a_request_to_the_client_unanswered(server):
    """A client that has not answered the server's progress request when it shuts down (an
    editor closed during the model load) still gets its answer to `shutdown`."""
    lsp = server(initialize=False)
    answer = lsp.request(
        "init",
        "initialize",
        {
            "processId": None,
            "rootUri": None,
            "capabilities": {"window": {"workDoneProgress": True}},
        },
    )
    assert "result" in answer, answer
    lsp.notify("initialized", {})
    deadline = time.monotonic() + ANSWER_TIMEOUT
    while (message := lsp.next_frame(deadline)) is not None:
        if message.get("method") == "window/workDoneProgress/create":
            break
    assert message is not None, f"no progress request; stderr:\n{lsp.stderr}"
    # left unanswered on purpose
    assert lsp.request(1, "shutdown") == {"jsonrpc": "2.0", "id": 1, "result": None}
    lsp.notify("exit")
    assert lsp.wait_exit() == 0
    lsp.assert_clean()
    assert "shutdown failed" not in lsp.stderr, lsp.stderr


def test_exit_without_shutdown_exits_with_1(server):
    lsp = server()
    lsp.status(1)
    lsp.notify("exit")
    assert lsp.wait_exit() == 1
    lsp.assert_clean()


def test_exit_before_initialize_exits_with_1(server):
    lsp = server(initialize=False)
    lsp.notify("exit")
    assert lsp.wait_exit() == 1
    lsp.assert_clean()


def test_end_of_input_exits(server):
    """An editor that dies closes our stdin: the server goes too, without a traceback."""
    lsp = server()
    lsp.status(1)
    assert lsp.process.stdin is not None
    lsp.process.stdin.close()
    assert lsp.wait_exit() != 0  # no shutdown was asked for
    lsp.assert_clean()


# -- in process: a failing request handler, and the framing parser as a table ---------------------


def test_a_failing_request_handler_answers_internal_error_without_traceback(caplog):
    """No request reaches a failing handler black-box today, so fail two on purpose."""
    from cl_lsp.lsp.handlers import build_server

    ls = build_server()
    sent: list[dict[str, Any]] = []

    class Writer:
        def write(self, data: bytes) -> None:
            sent.append(json.loads(data.split(b"\r\n\r\n", 1)[1]))

        def close(self) -> None:
            pass

    @ls.command("test.fail")
    def fail(ls: Any, *args: Any) -> None:
        raise KeyError("boom")

    @ls.command("test.unserializable")
    def unserializable(ls: Any, *args: Any) -> Any:
        return {"answer": {1, 2}}  # a set: JSON cannot hold it

    protocol = ls.protocol
    protocol.set_writer(Writer())
    for message in (
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {"processId": None, "rootUri": None, "capabilities": {}},
        },
        {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "workspace/executeCommand",
            "params": {"command": "test.fail"},
        },
        {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "workspace/executeCommand",
            "params": {"command": "test.unserializable"},
        },
    ):
        protocol.handle_message(protocol.structure_message(message))
    answer = next(m for m in sent if m.get("id") == 2)
    assert answer["error"]["code"] == INTERNAL_ERROR
    assert answer["error"]["message"] == (
        "internal error in workspace/executeCommand: KeyError: 'boom'"
    )
    assert "data" not in answer["error"]
    answer = next(m for m in sent if m.get("id") == 3)
    assert answer["error"]["code"] == INTERNAL_ERROR
    assert "could not be serialized" in answer["error"]["message"]
    assert not [m for m in sent if m.get("method") == "window/showMessage"]
    assert "workspace/executeCommand failed: KeyError: 'boom'" in caplog.text


def framed(body: bytes, length: int | None = None, name: bytes = b"Content-Length") -> bytes:
    return name + b": %d\r\n\r\n" % (len(body) if length is None else length) + body


GOOD = json.dumps(status_request(1)).encode()


@pytest.mark.parametrize(
    "stream, expected",
    [
        pytest.param(framed(GOOD) * 2, [GOOD, GOOD], id="two-frames"),
        pytest.param(b"Content-Type: x\r\n" + framed(GOOD), [GOOD], id="content-type-first"),
        pytest.param(framed(GOOD, name=b"CONTENT-length"), [GOOD], id="any-case"),
        pytest.param(b"junk" + framed(GOOD), [GOOD], id="stray-prefix"),
        pytest.param(b"junk\r\nmore junk\n" + framed(GOOD), [GOOD], id="stray-lines"),
        pytest.param(b"x" * 100_000 + framed(GOOD), [GOOD], id="long-stray"),
        pytest.param(b"\r\n" + GOOD + framed(GOOD), [GOOD], id="no-length"),
        pytest.param(framed(GOOD, len(GOOD) - 5) + framed(GOOD), [GOOD[:-5], GOOD], id="short"),
        pytest.param(framed(GOOD, len(GOOD) + 50) + framed(GOOD), ["Broken", GOOD], id="long"),
        pytest.param(framed(GOOD, 10**16) + framed(GOOD), ["Oversized:1", GOOD], id="huge"),
        pytest.param(
            framed(GOOD, 10**12)[: -len(GOOD)] + b"{" + b" " * 300_000 + framed(GOOD),
            ["Oversized:None", GOOD],
            id="huge-without-id",
        ),
        pytest.param(framed(GOOD, len(GOOD) + 10), [], id="ends-inside-a-frame"),
    ],
)
@pytest.mark.parametrize("chunk", [1, 7, 1 << 20], ids=["bytewise", "chunks", "whole"])
def test_frame_parser(stream: bytes, expected: list[Any], chunk: int):
    from cl_lsp.lsp.framing import Broken, FrameParser, Oversized

    parser = FrameParser()
    frames = []
    for start in range(0, len(stream), chunk):
        frames += parser.feed(stream[start : start + chunk])
    frames += parser.feed(b"")
    found = []
    for frame in frames:
        if isinstance(frame, Oversized):
            found.append(f"Oversized:{frame.request_id}")
        elif isinstance(frame, Broken):
            found.append("Broken")
        else:
            found.append(frame)
    assert found == expected
    assert len(parser.buffer) < 2 * 64 * 1024  # nothing sized by the client was held
