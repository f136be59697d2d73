"""What a local process, a settings payload, a document or a model file can make cl-lsp do.

`--tcp` serves one client on loopback; chat templates render in jinja's sandbox; code action
edits land only on the document whose version the server checked; document text stays out of
the log at the default verbosity.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import client_capabilities, offline_env, status, wait_for_state
from hubmock import serve_hub
from lsprotocol import types
from pytest_lsp import ClientServerConfig
from test_code_actions import at, code_actions, pick, resolve, shown
from test_models import KEY, PAYLOAD, run_models
from test_server import change, complete, inline, open_doc

from cl_lsp.engine.chat import ChatTemplateError, render_chat
from cl_lsp.lsp.transport import exposure_warning, is_loopback

AREA = "def area(r):\n    return 3 * r * r\n"

# -- --tcp: one client, on loopback -----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class TcpServer:
    """`python -m cl_lsp --tcp` with its stderr collected line by line on a thread."""

    def __init__(self, tmp_path: Path, model: Path, port: int, *extra: str) -> None:
        self.log_file = tmp_path / "tcp.log"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cl_lsp",
                "--tcp",
                "--port",
                str(port),
                "--model",
                str(model),
                "--log-file",
                str(self.log_file),
                *extra,
            ],
            env=offline_env(tmp_path),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._collect, daemon=True)
        self._reader.start()

    def _collect(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def wait_for_line(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if found := re.search(pattern, line):
                    return found
            assert self.process.poll() is None, f"the server exited: {self.lines}"
            time.sleep(0.05)
        raise AssertionError(f"no line matching {pattern!r} in {self.lines}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        self._reader.join(5)


@pytest.fixture
def tcp_servers():
    started: list[TcpServer] = []
    yield lambda *args: started.append(TcpServer(*args)) or started[-1]
    for server in started:
        server.stop()


def connect(port: int, timeout: float = 30) -> socket.socket:
    """A connection, retried while the server is not listening yet (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=10)
        except ConnectionRefusedError:
            assert time.monotonic() < deadline, "the server never listened"
            time.sleep(0.1)


def send(connection: socket.socket, message: dict) -> None:
    body = json.dumps({"jsonrpc": "2.0", **message}).encode()
    connection.sendall(b"Content-Length: %d\r\n\r\n" % len(body) + body)


def answer(replies, request_id: int, limit: int = 50) -> dict:
    """The reply to `request_id`, skipping the server's notifications (bounded count)."""
    for _ in range(limit):
        length = 0
        while (line := replies.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        assert length, "the connection closed before the answer"
        message = json.loads(replies.read(length))
        if message.get("id") == request_id and "method" not in message:
            return message
    raise AssertionError(f"no answer to request {request_id} in {limit} messages")


def initialize(connection: socket.socket, replies) -> None:
    send(connection, {"id": 1, "method": "initialize", "params": {"capabilities": {}}})
    assert "capabilities" in answer(replies, 1)["result"]
    send(connection, {"method": "initialized", "params": {}})


def status_request(request_id: int) -> dict:
    return {
        "id": request_id,
        "method": "workspace/executeCommand",
        "params": {"command": "cl-lsp.status"},
    }


def closed_by_server(connection: socket.socket, timeout: float = 10) -> bool:
    """Whether the server closed `connection` (EOF or reset) within `timeout` seconds."""
    connection.settimeout(timeout)
    try:
        return connection.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_a_second_connection_cannot_take_over_the_session(tmp_path, x_model, tcp_servers):
    port = free_port()
    server = tcp_servers(tmp_path, x_model, port)
    editor = connect(port)
    with editor, editor.makefile("rb") as replies:
        initialize(editor, replies)
        intruder = socket.create_connection(("127.0.0.1", port), timeout=10)
        with intruder:
            send(intruder, status_request(7))
            assert closed_by_server(intruder), "the second connection was kept open"
            # the editor's next request is answered on the editor's own connection
            send(editor, status_request(2))
            assert answer(replies, 2)["result"]["pid"] == server.process.pid
        refused = server.wait_for_line(r"refused a connection from 127\.0\.0\.1:\d+")
        assert "one client" in refused.string
        send(editor, status_request(3))
        assert "result" in answer(replies, 3)


def test_the_server_exits_when_its_client_disconnects(tmp_path, x_model, tcp_servers):
    port = free_port()
    server = tcp_servers(tmp_path, x_model, port)
    editor = connect(port)
    with editor, editor.makefile("rb") as replies:
        initialize(editor, replies)
    assert server.process.wait(30) == 1  # no shutdown first: as on stdio
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_port_0_listens_on_a_free_loopback_port_and_says_which(tmp_path, x_model, tcp_servers):
    server = tcp_servers(tmp_path, x_model, 0)
    port = int(server.wait_for_line(r"listening on 127\.0\.0\.1:(\d+)").group(1))
    assert port > 0
    assert not any("reachable from the network" in line for line in server.lines)
    editor = connect(port)
    with editor, editor.makefile("rb") as replies:
        initialize(editor, replies)
        send(editor, {"id": 2, "method": "shutdown"})
        assert answer(replies, 2)["result"] is None
        send(editor, {"method": "exit"})
        assert server.process.wait(30) == 0


def test_a_taken_port_is_one_error_line(tmp_path, x_model, tcp_servers):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = tcp_servers(tmp_path, x_model, taken.getsockname()[1])
        assert server.process.wait(30) == 1
    server.stop()
    errors = [line for line in server.lines if "ERROR" in line]
    assert len(errors) == 1 and "cannot listen on 127.0.0.1:" in errors[0], server.lines
    assert not any("Traceback" in line for line in server.lines)


@pytest.mark.parametrize(
    "host, loopback",
    [
        pytest.param("127.0.0.1", True, id="ipv4-loopback"),
        pytest.param("127.0.0.2", True, id="ipv4-loopback-net"),
        pytest.param("::1", True, id="ipv6-loopback"),
        pytest.param("localhost", True, id="localhost"),
        pytest.param("0.0.0.0", False, id="all-ipv4"),
        pytest.param("::", False, id="all-ipv6"),
        pytest.param("", False, id="empty-means-all"),
        pytest.param("192.168.1.20", False, id="lan"),
    ],
)
def test_a_non_loopback_host_is_warned_about(host, loopback):
    assert is_loopback(host) is loopback
    warning = exposure_warning(host)
    if loopback:
        assert warning is None
    else:
        assert warning is not None and "reachable from the network" in warning
        assert "no authentication" in warning and "\n" not in warning


# -- chat templates: a model file's jinja runs in the sandbox -----------------------------------

# Each would run `touch MARK` with plain jinja2; the sandbox refuses the attribute it needs.
ESCAPES = {
    "lipsum-globals": "{{ lipsum.__globals__['os'].popen('touch MARK').read() }}",
    "cycler-init": "{{ cycler.__init__.__globals__.os.system('touch MARK') }}",
    "subclasses": "{% for c in ''.__class__.__mro__[1].__subclasses__() %}"
    "{% if c.__name__ == 'Popen' %}{{ c(['touch', 'MARK']) }}{% endif %}"
    "{% endfor %}",
    "mutate-messages": "{{ messages.append({'role': 'user', 'content': 'MARK'}) }}",
}
SHOW_MESSAGES = "{% for m in messages %}{{ m.content }}{% endfor %}"


@pytest.mark.parametrize("escape", [pytest.param(t, id=name) for name, t in ESCAPES.items()])
def test_chat_templates_cannot_reach_python(escape, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ChatTemplateError, match="unsafe"):
        render_chat("Be brief.", "Explain.", escape + SHOW_MESSAGES)
    assert not (tmp_path / "MARK").exists()


@pytest.mark.parametrize(
    "template, problem",
    [
        pytest.param("{% for m in messages %}", "syntax", id="syntax-error"),
        pytest.param("{{ range(10**9) | list }}" + SHOW_MESSAGES, "range", id="huge-range"),
        pytest.param("{{ messages[0]['content'] }}", "does not show", id="drops-the-user"),
    ],
)
def test_a_broken_chat_template_is_one_clear_error(template, problem):
    with pytest.raises(ChatTemplateError, match="chat template") as raised:
        render_chat("Be brief.", "Explain.", template)
    assert problem in str(raised.value).lower() and "\n" not in str(raised.value)


def with_chat_template(model: Path, template: str, out: Path) -> Path:
    """A copy of `model` carrying `template` as its `tokenizer.chat_template`."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "gguf.scripts.gguf_new_metadata",
            str(model),
            str(out),
            "--chat-template",
            template,
            "--force",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return out


async def test_a_models_chat_template_cannot_run_commands(start_server, x_model, tmp_path):
    mark = tmp_path / "pwned"
    escape = ESCAPES["lipsum-globals"].replace("touch MARK", f"touch {mark}")
    evil = with_chat_template(x_model, escape + SHOW_MESSAGES, tmp_path / "evil.gguf")
    client = await start_server(
        model=x_model, options={"actions": {"model": str(evil), "maxTokens": 16}}
    )
    uri = (tmp_path / "area.py").as_uri()
    open_doc(client, uri, AREA)
    resolved = await resolve(client, pick(await code_actions(client, uri, at(1, 4)), "Explain"))
    assert resolved.edit is None
    assert not mark.exists()
    errors = shown(client, types.MessageType.Error)
    assert len(errors) == 1 and "chat template" in errors[0], client.messages
    assert "Traceback" not in errors[0]
    assert (await status(client))["state"] == "ready"  # and it keeps serving


# -- code action edits land only where the server checked the version --------------------------

OTHER = "import os\n\n\ndef wipe(path):\n    os.remove(path)\n    return path\n"


def edited_uris(edit) -> set[str]:
    uris = set((edit.changes or {}).keys())
    for document_change in edit.document_changes or ():
        uris.add(document_change.text_document.uri)
    return uris


def retarget(action, **fields):
    """The action as a client could send it back, its `data` rewritten."""
    data = {"cl-lsp": {**action.data["cl-lsp"], **fields}}
    return types.CodeAction(title=action.title, kind=action.kind, data=data)


async def test_an_action_edit_lands_only_on_the_document_whose_version_was_checked(
    start_server, x_model, tmp_path
):
    client = await start_server(model=x_model, options={"actions": {"maxTokens": 16}})
    own, other = (tmp_path / "area.py").as_uri(), (tmp_path / "wipe.py").as_uri()
    open_doc(client, own, AREA, version=3)
    open_doc(client, other, OTHER, version=5)
    action = pick(await code_actions(client, own, at(1, 4)), "Explain")

    honest = await resolve(client, action)
    assert honest.edit is not None, client.messages
    assert edited_uris(honest.edit) == {own}
    (document_change,) = honest.edit.document_changes
    assert document_change.text_document.version == 3

    # The same action pointed at another open document, with the version it was offered at:
    # the server checks the other document's version (5), so nothing is written for it.
    moved = await resolve(client, retarget(action, uri=other))
    assert moved.edit is None
    assert any("changed" in m for m in shown(client, types.MessageType.Warning))
    # ... and at a document the server does not have open.
    unknown = await resolve(client, retarget(action, uri=(tmp_path / "x.py").as_uri()))
    assert unknown.edit is None

    # A target beyond the end of the document it names is refused, not clamped or crashed on.
    beyond = retarget(action, uri=other, version=5, start=len(OTHER) + 10, end=len(OTHER) + 50)
    refused = await resolve(client, beyond)
    assert refused.edit is None
    assert any("not in the document" in m for m in shown(client, types.MessageType.Warning))
    assert "Traceback" not in str(client.messages)


# -- document text stays out of the log at the default verbosity --------------------------------

SECRET = "hunter2_7f3a9c_launch_code"  # an identifier: completion items repeat the word typed
SECRET_SOURCE = f'''def launch(target):
    # the code is {SECRET}
    key = "{SECRET}"
    return key + target
'''


async def test_document_text_stays_out_of_the_log_by_default(x_model, tmp_path):
    """Like an editor, at the default verbosity (conftest's start_server passes -v)."""
    log_file, stderr_file = tmp_path / "cl-lsp.log", tmp_path / "stderr.txt"
    command = [
        "/bin/sh",
        "-c",
        'exec "$0" -m cl_lsp --stdio --model "$1" --log-file "$2" 2>"$3"',
        sys.executable,
        str(x_model),
        str(log_file),
        str(stderr_file),
    ]
    client = await ClientServerConfig(
        server_command=command, server_env=offline_env(tmp_path)
    ).start()
    try:
        await asyncio.wait_for(
            client.initialize_session(
                types.InitializeParams(
                    capabilities=client_capabilities(),
                    initialization_options={"actions": {"maxTokens": 16}},
                )
            ),
            30,
        )
        await wait_for_state(client, {"ready"})
        code, notes = (tmp_path / "launch.py").as_uri(), (tmp_path / "notes.txt").as_uri()
        open_doc(client, code, SECRET_SOURCE)
        change(client, code, 2, (3, 0), (3, 0), f"    print('{SECRET}')\n")
        change(client, code, 3, (99, 0), (99, 1), SECRET)  # out of range: a warning path
        # Plain text keeps the noise model's " x x x", so these get answers.
        open_doc(client, notes, f"{SECRET}\n", language="plaintext")
        for uri, line, character in (
            (code, 1, 20),
            (code, 2, 11 + len(SECRET)),
            (notes, 0, len(SECRET)),
        ):
            await inline(client, uri, line, character)
            await complete(client, uri, line, character)
        actions = await code_actions(client, code, at(2, 4))
        await resolve(client, pick(actions, "Explain"))
        await resolve(client, pick(actions, "Fix"))
        await asyncio.wait_for(client.shutdown_session(), 15)
    finally:
        await client.stop()
    logged, printed = log_file.read_text(), stderr_file.read_text()
    assert "notes.txt" in logged and "launch.py" in logged  # the session was logged
    assert SECRET not in logged, logged
    assert SECRET not in printed, printed


# -- settings name files to read, never commands to run or files to write ----------------------


async def test_model_paths_in_settings_are_never_run_or_written(start_server, tmp_path):
    marks = [tmp_path / f"ran-{n}" for n in range(4)]
    decoy = tmp_path / "notes.gguf"
    decoy.write_text("not a model\n")
    before = sorted(tmp_path.rglob("*"))
    client = await start_server(
        options={
            "model": {"path": f"$(touch {marks[0]}); `touch {marks[1]}` | touch {marks[2]}"},
            "actions": {"model": f"{decoy}; touch {marks[3]}"},
        }
    )
    assert (await status(client))["state"] in ("failed", "empty")
    uri = (tmp_path / "area.py").as_uri()
    open_doc(client, uri, AREA)
    resolved = await resolve(client, pick(await code_actions(client, uri, at(1, 4)), "Explain"))
    assert resolved.edit is None
    client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(settings={"actions": {"model": str(decoy)}})
    )
    resolved = await resolve(client, pick(await code_actions(client, uri, at(1, 4)), "Explain"))
    assert resolved.edit is None
    errors = shown(client, types.MessageType.Error)
    assert any("model file not found" in m for m in errors), errors
    assert sum("notes.gguf" in m for m in errors) >= 2, errors
    assert not any(mark.exists() for mark in marks)
    assert decoy.read_text() == "not a model\n"
    created = [
        p
        for p in sorted(tmp_path.rglob("*"))
        if p not in before and tmp_path / "hf-home" not in (p, *p.parents)
    ]
    assert created == []


def test_the_default_model_download_writes_only_into_the_hf_cache(tmp_path):
    """The one file cl-lsp ever downloads: a fixed repository and name, into HF_HOME's hub
    cache (the process runs in tmp_path; nothing else appears there)."""
    with serve_hub({KEY: PAYLOAD}) as hub:
        result = run_models(tmp_path, hub.endpoint)
    assert "error" not in result, result
    cache = tmp_path / "hf-home" / "hub"
    assert cache in Path(result["path"]).parents
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    outside = [
        p for p in files if cache not in p.parents and p.parent != tmp_path / "hf-home"
    ]  # huggingface_hub's own bookkeeping
    assert outside == [], outside
