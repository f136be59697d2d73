"""The transports: LSP on stdin/stdout (`cl-lsp --stdio`, :func:`serve_stdio`) and over TCP for
exactly one editor (`cl-lsp --tcp`).

On TCP, pygls's `start_tcp` hands every connection the same protocol object and makes the newest one
the writer, so a second local connection takes over the editor's session (its answers go to
the newcomer), and the first connection to end shuts the server down. Here the first client
owns the server: further connections are closed at once, with one log line each, and the
server exits when that client sends `exit` or disconnects, as a `--stdio` server exits with
its editor. A new session starts a new server, which never sees the previous client's
documents. Framing (`framing.py`) and the lifecycle (`protocol.py`) are the same as on stdin.

There is no authentication, so the listening address matters: loopback unless the user asks
for another, and then the log says the port is reachable from the network.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import ipaddress
import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Any, BinaryIO

from pygls.io_ import StdoutWriter
from pygls.lsp.server import LanguageServer

from .framing import READ_CHUNK, Frame, FrameParser, read_frames
from .protocol import ClProtocol

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """Whether every address `host` names is a loopback address (no DNS for literals)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    if not host:  # asyncio binds every interface
        return False
    try:
        found = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return False
    return bool(found) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in found)


def exposure_warning(host: str) -> str | None:
    """The log line for an address other people can reach; None for loopback."""
    if is_loopback(host):
        return None
    return (
        f"--host {host or '(all interfaces)'} is not a loopback address: the port is "
        "reachable from the network with no authentication, and whoever connects first "
        "can read the documents sent to cl-lsp and run the model; use --host 127.0.0.1 "
        "unless the network is trusted"
    )


def serve_tcp(server: LanguageServer, host: str, port: int) -> int:
    """Serve one client on host:port until `exit` or its disconnection; the exit code."""
    protocol = server.protocol
    assert isinstance(protocol, ClProtocol)
    try:
        return asyncio.run(_serve(protocol, host, port))
    except OSError as error:  # the port is taken, the address is not ours...
        log.error("cannot listen on %s:%d: %s", host, port, error)
        return 1
    finally:
        server.shutdown()


async def _serve(protocol: ClProtocol, host: str, port: int) -> int:
    done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    session: list[tuple[str, asyncio.StreamWriter, asyncio.Task[Any]]] = []  # the one client

    def finish(code: int) -> None:
        if not done.done():
            done.set_result(code)

    protocol.on_exit = finish

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = _address(writer.get_extra_info("peername"))
        if session:
            log.warning(
                "refused a connection from %s: cl-lsp serves one client per session "
                "and %s is connected",
                peer,
                session[0][0],
            )
            writer.close()
            return
        session.append((peer, writer, asyncio.current_task()))  # type: ignore[arg-type]
        log.info("client connected from %s", peer)
        protocol.set_writer(writer)  # type: ignore[arg-type]  # it has write() and close()
        await _read(protocol, reader, peer)
        if not done.done():  # the client left without `exit`
            protocol.input_ended()

    listener = await asyncio.start_server(on_connection, host, port)
    addresses = ", ".join(_address(sock.getsockname()) for sock in listener.sockets)
    log.warning("listening on %s for one client", addresses)
    if (warning := exposure_warning(host)) is not None:
        log.warning("%s", warning)
    async with listener:
        code = await done
    for _, writer, reading in session:
        writer.close()  # after sending what is buffered (the answer to `shutdown`)
        # The reader then sees the end of input and returns: cancelling it instead would make
        # asyncio log the cancellation as an error.
        await asyncio.wait([reading], timeout=5)
    return code


async def _read(protocol: ClProtocol, reader: asyncio.StreamReader, peer: str) -> None:
    """Hand the client's frames to the protocol, in order, until the connection ends."""
    parser = FrameParser()
    while True:
        try:
            chunk = await reader.read(READ_CHUNK)
        except ConnectionError as error:
            log.info("connection from %s lost: %s", peer, error)
            chunk = b""
        for frame in parser.feed(chunk):
            protocol.receive(frame)
        if not chunk:
            return


def _address(name: Any) -> str:
    """host:port (or [v6]:port) from a socket address tuple."""
    if isinstance(name, tuple) and len(name) >= 2:
        host = str(name[0])
        return f"[{host}]:{name[1]}" if ":" in host else f"{host}:{name[1]}"
    return str(name)


def serve_stdio(server: LanguageServer, stdin: BinaryIO, stdout: BinaryIO) -> int:
    """Serve LSP on stdin/stdout until `exit` or the end of input; the process's exit code."""
    protocol = server.protocol
    assert isinstance(protocol, ClProtocol)
    protocol.set_writer(StdoutWriter(stdout))
    # os.read on the descriptor, not stdin.read: a daemon thread blocked inside the buffered
    # reader would hold its lock and abort the interpreter at exit.
    read = functools.partial(os.read, stdin.fileno())
    try:
        return asyncio.run(_serve_stdin(protocol, read))
    finally:
        server.shutdown()


async def _serve_stdin(protocol: ClProtocol, read: Callable[[int], bytes]) -> int:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[int] = loop.create_future()

    def finish(code: int) -> None:
        if not done.done():
            done.set_result(code)

    protocol.on_exit = finish

    def deliver(frame: Frame, handled: concurrent.futures.Future[None]) -> None:
        try:
            protocol.receive(frame)
        finally:
            handled.set_result(None)

    def pump() -> None:  # on the reader thread: one frame at a time, each handled in order
        try:
            for frame in read_frames(read):
                handled: concurrent.futures.Future[None] = concurrent.futures.Future()
                loop.call_soon_threadsafe(deliver, frame, handled)
                handled.result()
        except BaseException:  # input gone, or the loop closed after `exit`
            log.debug("stopped reading", exc_info=True)
        finally:
            with contextlib.suppress(RuntimeError):  # the loop may be closed already
                loop.call_soon_threadsafe(protocol.input_ended)

    threading.Thread(target=pump, name="cl-lsp-stdin", daemon=True).start()
    return await done
