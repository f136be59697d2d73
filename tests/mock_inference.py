"""A scriptable loopback inference server that speaks llama-server, OpenAI and Ollama wire formats.

Real servers (llama.cpp's llama-server, llama-cpp-python's OpenAI server) serve the other engine
tests. This mock exists for what a real server cannot be made to do on cue: answer with chosen raw
text (so post-processing is tested end to end through HTTP), wait before the first byte, drip
pieces slowly, fail with a 4xx/5xx and the server's own error body, hang up mid-stream, send a
non-JSON line, or refuse connections (stopped) and come back on the same port. It records every
request, and when the client closed a stream, to the millisecond: a superseded generation is
cancelled by closing its stream, and tests assert how soon that happened.

Standard library only: ``http.server`` on threads, HTTP/1.1 with keep-alive, streams sent with
chunked transfer encoding (so a pooled connection is reused after a complete stream, and a stream
cut short is visibly incomplete to the client). JSON is written compactly (``{"a":1}``), as
llama-server (nlohmann), vLLM (pydantic) and Ollama (Go) write it.

The format is chosen by the path; one mock serves all three at once:

* llama-server: ``POST /completion`` (and ``/completions``), ``POST /tokenize``, ``GET /health``,
  ``GET /props``. A stream is ``text/event-stream``, one ``data: {...}\\n\\n`` event per piece
  (``index, content, tokens, stop=false, id_slot, tokens_predicted, tokens_evaluated``), then a
  final event (``content="", stop=true, stop_type, stopping_word, tokens_predicted,
  tokens_evaluated, tokens_cached, truncated, timings{cache_n, prompt_n, predicted_n, ...}``)
  and no ``[DONE]``. Errors: ``{"error":{"code","message","type"}}`` (context overflow: 400
  ``exceed_context_size_error`` "request (N tokens) exceeds the available context size (C tokens),
  try increasing it", plus ``n_prompt_tokens`` and ``n_ctx``), an error during a stream is a
  ``data: {"error":{...}}`` event. While :attr:`MockInferenceServer.loading`, every llama-server
  and ``/v1`` path answers 503 ``Loading model`` (``unavailable_error``), ``/health`` included.
* OpenAI-compatible, as vLLM words it: ``POST /v1/completions``, ``POST /v1/chat/completions``,
  ``GET /v1/models``. A stream is one ``data:`` event per piece (``choices[0].text`` or
  ``choices[0].delta.content``; chat opens with a ``delta: {"role":"assistant","content":""}``
  event), then an event whose choice carries ``finish_reason`` ("stop" / "length"), then with
  ``stream_options.include_usage`` an event with ``"choices":[]`` and ``usage`` (with
  ``prompt_tokens_details.cached_tokens``), then ``data: [DONE]``. Errors:
  ``{"error":{"message","type","param","code"}}`` (400 ``BadRequestError`` for context overflow,
  404 ``NotFoundError`` "The model `x` does not exist."), 401 ``{"error":"Unauthorized"}``.
* Ollama: ``POST /api/generate``, ``POST /api/chat``, ``GET /api/tags``, ``GET /api/version``.
  A stream (the default: ``stream`` is true unless false) is ``application/x-ndjson``, one object
  per line with ``response`` (or ``message``) and ``done: false``, then a ``done: true`` line with
  ``done_reason``, ``prompt_eval_count`` (prompt tokens not cached), ``eval_count`` and durations
  in nanoseconds. Errors: ``{"error": "..."}`` (404 "model 'x' not found").

The fake tokenizer (unless one is given): one id per UTF-8 byte, ``byte + 3`` -- the ids of the
``<0x00>``..``<0xFF>`` byte-fallback tokens of the Llama / Code Llama vocabulary -- with BOS id 1
in front when special tokens are added. A string prompt counts as ``len(tokenize(p, True))``
prompt tokens, a token-id prompt as its length, a chat as its message contents joined.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from typing_extensions import Self

StopReason = Literal["eos", "limit", "word"]
"""Why a generation ended, in llama-server's words; "limit" is OpenAI's and Ollama's "length"."""

End = Literal["completed", "client_closed", "server_closed", "server_stopped"]
"""How a response ended: sent whole; the client hung up; the script cut it short
(``disconnect_after``); :meth:`MockInferenceServer.stop` cut it short."""

Format = Literal["llama", "openai", "ollama"]

BOS_ID = 1
"""The BOS id the fake tokenizer puts in front when special tokens are added."""

_IDLE_TIMEOUT = 10.0
"""Socket timeout: an idle keep-alive connection is closed after this, every read is bounded."""

_STOP_GRACE = 2.0
"""How long :meth:`MockInferenceServer.stop` waits for handler threads to let go."""

_GENERATION: dict[str, tuple[Format, str]] = {
    "/completion": ("llama", "completion"),
    "/completions": ("llama", "completion"),
    "/v1/completions": ("openai", "completion"),
    "/v1/chat/completions": ("openai", "chat"),
    "/api/generate": ("ollama", "completion"),
    "/api/chat": ("ollama", "chat"),
}

_LLAMA_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    500: "server_error",
    501: "not_supported_error",
    503: "unavailable_error",
}

_VLLM_TYPES = {
    400: "BadRequestError",
    404: "NotFoundError",
    500: "InternalServerError",
    501: "NotImplementedError",
    503: "ServiceUnavailableError",
}


def byte_tokenize(text: str, add_special: bool = False) -> list[int]:
    """The default fake tokenizer: ``byte + 3`` per UTF-8 byte, BOS (1) first if `add_special`.

    Deterministic and trivially predictable, so a client test can state the expected ids and
    counts without a vocabulary; byte + 3 is where Llama's byte-fallback tokens sit."""
    return ([BOS_ID] if add_special else []) + [b + 3 for b in text.encode()]


@dataclass
class Reply:
    """What the mock answers to one generation request (any format).

    With ``status`` 200 the ``pieces`` are streamed one event each (or joined, when the request
    did not ask for a stream). Any other status answers the format's error body instead, with
    ``error`` as the message (a default per status otherwise); ``error_kind="context_overflow"``
    words it as that format's context-size refusal (see :meth:`context_overflow`).
    """

    pieces: Sequence[str] = ()
    status: int = 200
    error: str | None = None
    error_type: str | None = None
    """Overrides the ``type`` of an error body (llama-server and OpenAI formats)."""
    error_kind: Literal["context_overflow"] | None = None
    first_byte_delay: float = 0.0
    """Seconds before the status line (the client may give up meanwhile: that is recorded)."""
    piece_delay: float = 0.0
    """Seconds before every piece (slow drip); for a non-streamed answer, summed up front."""
    disconnect_after: int | None = None
    """Close the connection after this many pieces, with no final event and no end of the chunked
    body (a non-streamed answer: close before sending anything)."""
    garbage: bytes | None = None
    """Bytes sent after the pieces, before the final event: framed as one event (``data: `` +
    bytes + blank line) or line (bytes + newline), or as they are if not ``garbage_framed``."""
    garbage_framed: bool = True
    stream_error: str | None = None
    """Ends the stream, after the pieces, with the format's in-stream error event instead of the
    final event (llama-server and vLLM: ``data: {"error":{...}}``; Ollama: ``{"error":...}``)."""
    stop_reason: StopReason = "eos"
    stopping_word: str = ""
    prompt_tokens: int | None = None
    """Prompt tokens reported (default: counted with the mock's tokenizer)."""
    cache_n: int = 0
    """Of those, how many were reused from the cache (llama-server ``timings.cache_n``,
    OpenAI ``prompt_tokens_details.cached_tokens``; Ollama counts only the others)."""
    predicted_n: int | None = None
    """Generated tokens reported (default: one per piece sent)."""
    finish_with_last_piece: bool = False
    """OpenAI formats: put ``finish_reason`` on the last piece's event, as vLLM does, instead of
    an event of its own with empty text (as llama-server's ``/v1`` does)."""

    @classmethod
    def text(cls, text: str, piece_len: int = 1, **options: Any) -> Reply:
        """`text` cut into pieces of `piece_len` characters: the usual way to script raw output."""
        pieces = [text[i : i + piece_len] for i in range(0, len(text), piece_len)]
        return cls(pieces, **options)

    @classmethod
    def context_overflow(cls, prompt_tokens: int | None = None, **options: Any) -> Reply:
        """The format's HTTP 400 for a prompt too long for the context (``MockInferenceServer.n_ctx``,
        4096 if unset); `prompt_tokens` overrides the count the message quotes."""
        return cls(
            status=400, error_kind="context_overflow", prompt_tokens=prompt_tokens, **options
        )


@dataclass
class RecordedRequest:
    """One request as the mock saw it, and how its answer went (times are ``time.monotonic()``)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    """Header names lower-cased."""
    raw_body: bytes
    body: Any
    """The body parsed as JSON; None if empty or not JSON."""
    format: Format | None
    kind: str
    """One of completion, chat, tokenize, health, props, models, version, other."""
    received_at: float
    peer_port: int = 0
    """The client's port: the same on two requests means one kept-alive connection served both."""
    reply: Reply | None = None
    """The scripted reply used (None for refusals the mock made itself: auth, model, loading)."""
    status: int | None = None
    stream: bool = False
    first_byte_at: float | None = None
    ended_at: float | None = None
    end: End | None = None
    pieces_sent: list[str] = field(default_factory=list)

    @property
    def generation(self) -> bool:
        return self.kind in ("completion", "chat")

    @property
    def closed_by_client_at(self) -> float | None:
        """When the mock saw the client hang up (a read of EOF or reset, or a failed write)."""
        return self.ended_at if self.end == "client_closed" else None

    @property
    def text_sent(self) -> str:
        return "".join(self.pieces_sent)

    @property
    def prompt(self) -> Any:
        """The ``prompt`` (or chat ``messages``) of the body."""
        if not isinstance(self.body, dict):
            return None
        return self.body.get("prompt", self.body.get("messages"))


class _Server(ThreadingHTTPServer):
    """The listening socket of one start of the mock; a restart makes a new one on the same port."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], mock: MockInferenceServer) -> None:
        self.mock = mock
        self.stopped = False
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        # Tracked at accept time, in the serving thread, so that stop() can't miss a connection
        # whose handler thread has not started yet.
        sock, address = super().get_request()
        # As real servers do: a small event goes out now, not after the previous one's ACK.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.mock.tls is not None:  # a failed handshake is an OSError: the request is dropped
            sock = self.mock.tls.wrap_socket(sock, server_side=True)
        with self.connections_lock:
            self.connections.add(sock)
        return sock, address

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Connections cut by stop() or by the client are expected: no tracebacks on stderr."""


class MockInferenceServer:
    """The mock, on 127.0.0.1 and a free port (or `port`), served from a background thread.

    Use as a context manager (or :meth:`start` / :meth:`close`). Generation requests take the
    scripted replies in order (:meth:`script`), then `default_reply`. With `api_key`, the
    llama-server paths (not ``/health``) and ``/v1`` paths want ``Authorization: Bearer <key>``.
    Requests naming a model not in `models` get the format's 404 (OpenAI, Ollama). With `n_ctx`,
    a prompt too long for it gets the context-overflow 400 without taking a scripted reply
    (llama-server: prompt tokens >= n_ctx; OpenAI: prompt + max_tokens > n_ctx; Ollama never).
    """

    def __init__(
        self,
        *,
        default_reply: Reply | None = None,
        api_key: str | None = None,
        models: Sequence[str] = ("codellama",),
        n_ctx: int | None = None,
        tokenizer: Callable[[str, bool], list[int]] = byte_tokenize,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.tls = tls  # serve HTTPS with this context (client-close timing is not measured)
        self.default_reply = default_reply if default_reply is not None else Reply(["ok"])
        self.api_key = api_key
        self.models = list(models)
        self.n_ctx = n_ctx
        self.tokenizer = tokenizer
        self.loading = False
        """When true, llama-server and /v1 paths answer 503 "Loading model" (as llama-server
        does while it loads a model)."""
        self.host = host
        self.port = port
        self._lock = threading.Condition()
        self._script: list[Reply] = []
        self._requests: list[RecordedRequest] = []
        self._errors: list[str] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> Self:
        """Listen (on the same port as before, after a stop) and serve in a daemon thread."""
        if self._server is not None:
            return self
        server = _Server((self.host, self.port), self)
        self.port = server.server_address[1]
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.01},
            name=f"mock-inference-{self.port}",
            daemon=True,
        )
        self._server, self._thread = server, thread
        thread.start()
        return self

    def stop(self) -> None:
        """Stop listening (connections are refused) and cut every open connection, as a server
        that died would: streams in progress end as ``server_stopped``; pooled keep-alive
        connections are closed, so the client can't reach the stopped server through them."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        server.stopped = True
        server.shutdown()
        server.server_close()
        with server.connections_lock:
            connections = list(server.connections)
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + _STOP_GRACE
        while server.connections and time.monotonic() < deadline:
            time.sleep(0.005)
        if thread is not None:
            thread.join(_STOP_GRACE)

    def restart(self) -> None:
        """Stop if running, then listen again on the same port."""
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- scripting --------------------------------------------------------------------------

    def script(self, *replies: Reply) -> None:
        """Queue replies: each generation request takes the next; then `default_reply`."""
        with self._lock:
            self._script.extend(replies)

    @property
    def pending(self) -> int:
        """Scripted replies not yet taken."""
        with self._lock:
            return len(self._script)

    def tokenize(self, text: str, add_special: bool = False) -> list[int]:
        return self.tokenizer(text, add_special)

    # -- observations -----------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request so far, in the order received (a copy of the list; live records)."""
        with self._lock:
            return list(self._requests)

    @property
    def errors(self) -> list[str]:
        """Exceptions raised while answering (the connection was cut): empty unless the mock,
        or a tokenizer given to it, has a bug. A fixture can assert it stays empty."""
        with self._lock:
            return list(self._errors)

    @property
    def generations(self) -> list[RecordedRequest]:
        """The generation requests (completion and chat, any format)."""
        return [r for r in self.requests if r.generation]

    @property
    def in_flight(self) -> int:
        """Generation requests received whose answer has not ended."""
        return sum(1 for r in self.generations if r.ended_at is None)

    @property
    def max_in_flight(self) -> int:
        """The most generation requests being answered at once, so far."""
        return self.max_in_flight_by(lambda _: "")

    def max_in_flight_by(self, key: Callable[[RecordedRequest], Any]) -> int:
        """The most generation requests with the same `key` (e.g. the document) answered at once.

        Computed from the records' [received_at, ended_at) intervals; one that ends exactly when
        another starts does not overlap it."""
        events: dict[Any, list[tuple[float, int]]] = {}
        for r in self.generations:
            span = events.setdefault(key(r), [])
            span.append((r.received_at, 1))
            span.append((r.ended_at if r.ended_at is not None else float("inf"), -1))
        most = 0
        for span in events.values():
            now = 0
            for _, delta in sorted(span):
                now += delta
                most = max(most, now)
        return most

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is being answered; False if `timeout` passed first."""
        with self._lock:
            return self._lock.wait_for(
                lambda: all(r.ended_at is not None for r in self._requests), timeout
            )

    def wait_for_requests(self, count: int, timeout: float) -> bool:
        """Wait until `count` generation requests have arrived; False on timeout."""
        with self._lock:
            return self._lock.wait_for(
                lambda: sum(r.generation for r in self._requests) >= count, timeout
            )

    def wait_ended(self, request: RecordedRequest, timeout: float) -> bool:
        """Wait until `request`'s answer has ended (whichever way); False on timeout."""
        with self._lock:
            return self._lock.wait_for(lambda: request.ended_at is not None, timeout)

    # -- internals used by the handler ------------------------------------------------------

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)
            self._lock.notify_all()

    def _finish(self, request: RecordedRequest, end: End, *, amend: bool = False) -> None:
        """Record how `request` ended (the first word stands, unless `amend`)."""
        with self._lock:
            if request.ended_at is None or amend:
                request.ended_at = time.monotonic()
                request.end = end
            self._lock.notify_all()

    def _next_reply(self) -> Reply:
        with self._lock:
            return self._script.pop(0) if self._script else self.default_reply

    def _prompt_tokens(self, body: dict[str, Any], kind: str) -> int:
        if kind == "chat":
            messages = body.get("messages") or []
            text = "".join(
                m.get("content") or "" for m in messages if isinstance(m.get("content"), str)
            )
            return len(self.tokenize(text, True))
        prompt = body.get("prompt", "")
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], (list, str)):
            prompt = prompt[0]  # a batch: the first prompt
        if isinstance(prompt, list):
            return len(prompt)
        return len(self.tokenize(str(prompt), True))


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _sse(obj: Any) -> bytes:
    return b"data: " + _dumps(obj) + b"\n\n"


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


def _iso_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def error_body(
    fmt: Format | None,
    status: int,
    message: str,
    error_type: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The error body `fmt` sends with `status` (llama-server's shape for no format)."""
    if fmt == "ollama":
        return {"error": message}
    if fmt == "openai":
        if error_type is None:
            fallback = _phrase(status).replace(" ", "").replace("-", "") + "Error"
            error_type = _VLLM_TYPES.get(status, fallback)
        return {"error": {"message": message, "type": error_type, "param": None, "code": status}}
    if error_type is None:
        fallback = "invalid_request_error" if status < 500 else "server_error"
        error_type = _LLAMA_TYPES.get(status, fallback)
    return {"error": {"code": status, "message": message, "type": error_type, **(extra or {})}}


class _Generation:
    """One generation's counts and its format's events: what is sent, in the format's words."""

    def __init__(
        self,
        mock: MockInferenceServer,
        request: RecordedRequest,
        reply: Reply,
        fmt: Format,
        kind: str,
    ) -> None:
        body: dict[str, Any] = request.body
        self.request, self.reply, self.fmt, self.kind = request, reply, fmt, kind
        self.model = body.get("model") or (mock.models[0] if mock.models else "mock")
        self.prompt_tokens = (
            reply.prompt_tokens
            if reply.prompt_tokens is not None
            else mock._prompt_tokens(body, kind)
        )
        self.started = time.monotonic()
        self.created = int(time.time())
        self.id = ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex
        id_slot = body.get("id_slot")
        # llama-server answers with the slot it used: the one asked for, else (here) slot 0.
        self.id_slot = id_slot if isinstance(id_slot, int) and id_slot >= 0 else 0
        options = body.get("stream_options")
        self.include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        self.max_tokens = body.get("max_tokens", body.get("n_predict"))
        self.n_ctx = mock.n_ctx if mock.n_ctx is not None else 4096

    @property
    def sent(self) -> list[str]:
        return self.request.pieces_sent

    @property
    def predicted_n(self) -> int:
        return self.reply.predicted_n if self.reply.predicted_n is not None else len(self.sent)

    @property
    def finish_reason(self) -> str:
        return "length" if self.reply.stop_reason == "limit" else "stop"

    # -- errors -----------------------------------------------------------------------------

    def error(self) -> dict[str, Any]:
        reply = self.reply
        if reply.error_kind == "context_overflow":
            return overflow_body(self.fmt, self.prompt_tokens, self.n_ctx, self.max_tokens)
        message = reply.error or f"mock error: {_phrase(reply.status)}"
        return error_body(self.fmt, reply.status, message, reply.error_type)

    def stream_error(self, message: str) -> list[bytes]:
        if self.fmt == "ollama":
            return [_dumps({"error": message}) + b"\n"]
        body = error_body(self.fmt, 500, message, self.reply.error_type)
        events = [_sse(body)]
        if self.fmt == "openai":
            events.append(b"data: [DONE]\n\n")  # vLLM ends its error stream with [DONE]
        return events

    # -- streamed events --------------------------------------------------------------------

    @property
    def content_type(self) -> str:
        return "application/x-ndjson" if self.fmt == "ollama" else "text/event-stream"

    def opening(self) -> list[bytes]:
        if self.fmt == "openai" and self.kind == "chat":
            return [_sse(self._chat_chunk({"role": "assistant", "content": ""}, None))]
        return []

    def piece(self, text: str, last: bool) -> bytes:
        """The event for one piece; `self.sent` already holds it."""
        if self.fmt == "llama":
            return _sse(
                {
                    "index": 0,
                    "content": text,
                    "tokens": [],
                    "stop": False,
                    "id_slot": self.id_slot,
                    "tokens_predicted": len(self.sent),
                    "tokens_evaluated": self.prompt_tokens,
                }
            )
        if self.fmt == "openai":
            finish = self.finish_reason if last and self.reply.finish_with_last_piece else None
            if self.kind == "chat":
                return _sse(self._chat_chunk({"content": text}, finish))
            return _sse(self._text_chunk(text, finish))
        return _dumps(self._ollama_piece(text, done=False)) + b"\n"

    def garbage(self, raw: bytes, framed: bool) -> bytes:
        if not framed:
            return raw
        return raw + b"\n" if self.fmt == "ollama" else b"data: " + raw + b"\n\n"

    def closing(self, finished_with_last_piece: bool) -> list[bytes]:
        if self.fmt == "llama":
            return [_sse(self._llama_final(content=""))]
        if self.fmt == "ollama":
            return [_dumps(self._ollama_final(content="")) + b"\n"]
        events = []
        if not finished_with_last_piece:
            if self.kind == "chat":
                events.append(_sse(self._chat_chunk({}, self.finish_reason)))
            else:
                events.append(_sse(self._text_chunk("", self.finish_reason)))
        if self.include_usage:
            events.append(_sse({**self._openai_head(), "choices": [], "usage": self._usage()}))
        events.append(b"data: [DONE]\n\n")
        return events

    # -- whole (non-streamed) answers -------------------------------------------------------

    def whole(self) -> dict[str, Any]:
        text = "".join(self.sent)
        if self.fmt == "llama":
            return self._llama_final(content=text)
        if self.fmt == "ollama":
            return self._ollama_final(content=text)
        if self.kind == "chat":
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": self.finish_reason,
            }
            head = {**self._openai_head(), "object": "chat.completion"}
        else:
            choice = {
                "index": 0,
                "text": text,
                "logprobs": None,
                "finish_reason": self.finish_reason,
                "stop_reason": self.reply.stopping_word or None,
            }
            head = self._openai_head()
        return {**head, "choices": [choice], "usage": self._usage()}

    # -- pieces of the above ----------------------------------------------------------------

    def _timings(self) -> dict[str, Any]:
        elapsed_ms = max((time.monotonic() - self.started) * 1000, 0.001)
        prompt_n = max(self.prompt_tokens - self.reply.cache_n, 0)
        predicted_n = self.predicted_n
        return {
            "cache_n": self.reply.cache_n,
            "prompt_n": prompt_n,
            "prompt_ms": 0.001,
            "prompt_per_token_ms": 0.001 / max(prompt_n, 1),
            "prompt_per_second": prompt_n / 0.000001,
            "predicted_n": predicted_n,
            "predicted_ms": elapsed_ms,
            "predicted_per_token_ms": elapsed_ms / max(predicted_n, 1),
            "predicted_per_second": predicted_n * 1000 / elapsed_ms,
        }

    def _llama_final(self, content: str) -> dict[str, Any]:
        body = self.request.body
        prompt = body.get("prompt") if isinstance(body.get("prompt"), str) else ""
        return {
            "index": 0,
            "content": content,
            "tokens": [],
            "id_slot": self.id_slot,
            "stop": True,
            "model": self.model,
            "tokens_predicted": self.predicted_n,
            "tokens_evaluated": self.prompt_tokens,
            "generation_settings": {
                "n_predict": body.get("n_predict", -1),
                "temperature": body.get("temperature", 0.8),
                "stop": body.get("stop", []),
            },
            "prompt": prompt,
            "has_new_line": "\n" in "".join(self.sent),
            "truncated": False,
            "stop_type": self.reply.stop_reason,
            "stopping_word": self.reply.stopping_word,
            "tokens_cached": self.prompt_tokens + self.predicted_n,
            "timings": self._timings(),
        }

    def _openai_head(self) -> dict[str, Any]:
        obj = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def _text_chunk(self, text: str, finish: str | None) -> dict[str, Any]:
        choice = {
            "index": 0,
            "text": text,
            "logprobs": None,
            "finish_reason": finish,
            "stop_reason": (self.reply.stopping_word or None) if finish else None,
        }
        return {**self._openai_head(), "choices": [choice]}

    def _chat_chunk(self, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**self._openai_head(), "choices": [choice]}

    def _usage(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.predicted_n,
            "total_tokens": self.prompt_tokens + self.predicted_n,
            "prompt_tokens_details": {"cached_tokens": self.reply.cache_n},
        }

    def _ollama_piece(self, text: str, done: bool) -> dict[str, Any]:
        head = {"model": self.model, "created_at": _iso_now()}
        if self.kind == "chat":
            return {**head, "message": {"role": "assistant", "content": text}, "done": done}
        return {**head, "response": text, "done": done}

    def _ollama_final(self, content: str) -> dict[str, Any]:
        total = int((time.monotonic() - self.started) * 1e9)
        return {
            **self._ollama_piece(content, done=True),
            "done_reason": self.finish_reason,
            "total_duration": total,
            "load_duration": 1000,
            "prompt_eval_count": max(self.prompt_tokens - self.reply.cache_n, 0),
            "prompt_eval_duration": 1000,
            "eval_count": self.predicted_n,
            "eval_duration": max(total - 2000, 0),
        }


def overflow_body(
    fmt: Format, prompt_tokens: int, n_ctx: int, max_tokens: Any = None
) -> dict[str, Any]:
    """The context-overflow refusal (HTTP 400) in `fmt`'s words."""
    if fmt == "llama":
        message = (
            f"request ({prompt_tokens} tokens) exceeds the available context size "
            f"({n_ctx} tokens), try increasing it"
        )
        extra = {"n_prompt_tokens": prompt_tokens, "n_ctx": n_ctx}
        return error_body("llama", 400, message, "exceed_context_size_error", extra)
    output = max_tokens if isinstance(max_tokens, int) and max_tokens > 0 else 0
    message = (
        f"This model's maximum context length is {n_ctx} tokens. However, you requested "
        f"{output} output tokens and your prompt contains {prompt_tokens} input tokens, for a "
        f"total of {prompt_tokens + output} tokens. Please reduce the length of the input "
        "prompt or the number of requested output tokens."
    )
    return error_body(fmt, 400, message)


class _Lost(Exception):
    """The connection went away (client hung up, or stop() cut it) while answering."""


class _Handler(BaseHTTPRequestHandler):
    """One connection: HTTP/1.1 keep-alive, requests answered one after another."""

    protocol_version = "HTTP/1.1"
    timeout = _IDLE_TIMEOUT
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the records say what happened."""

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    # -- plumbing ---------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _peer_gone(self, timeout: float) -> bool:
        """Whether the client hung up (EOF or reset), waiting up to `timeout` for it to.

        select() wakes the moment the FIN or RST arrives, so the time recorded is when the
        client closed, not when the next piece would have been written."""
        if self.server.stopped:
            return True
        sock = self.connection
        try:
            readable, _, _ = select.select([sock], [], [], max(timeout, 0))
        except (OSError, ValueError):
            return True
        if not readable:
            return False
        try:
            data = sock.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, ValueError):  # ValueError: TLS sockets cannot peek
            return False
        except OSError:
            return True
        if data:  # the client sent bytes (a pipelined request): not a hang-up
            time.sleep(min(max(timeout, 0), 0.01))
            return False
        return True

    def _wait(self, seconds: float) -> None:
        """Wait `seconds`, raising :class:`_Lost` as soon as the client hangs up."""
        deadline = time.monotonic() + seconds
        while True:
            remaining = deadline - time.monotonic()
            if self._peer_gone(remaining):
                raise _Lost
            if remaining <= 0:
                return

    def _write(self, data: bytes, last_of: RecordedRequest | None = None) -> None:
        """Send `data`; for the last bytes of `last_of`'s answer, record it as completed first,
        so that the record is final by the time the client has seen the end of the answer."""
        if self._peer_gone(0):
            raise _Lost
        if last_of is not None:
            self.server.mock._finish(last_of, "completed")
        try:
            self.wfile.write(data)
        except OSError as error:
            if last_of is not None:
                end: End = "server_stopped" if self.server.stopped else "client_closed"
                self.server.mock._finish(last_of, end, amend=True)
            raise _Lost from error

    def _chunk(self, data: bytes) -> None:
        self._write(b"%x\r\n" % len(data) + data + b"\r\n")

    def _head(self, request: RecordedRequest, status: int, headers: dict[str, str]) -> None:
        if self._peer_gone(0):
            raise _Lost
        request.status = status
        request.first_byte_at = time.monotonic()
        try:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
        except OSError as error:
            raise _Lost from error

    def _send_json(self, request: RecordedRequest, status: int, obj: Any) -> None:
        data = _dumps(obj)
        headers = {"Content-Type": "application/json; charset=utf-8"}
        headers["Content-Length"] = str(len(data))
        self._head(request, status, headers)
        self._write(data, last_of=request)

    # -- requests ---------------------------------------------------------------------------

    def _dispatch(self) -> None:
        mock = self.server.mock
        received = time.monotonic()
        try:
            raw = self._read_body()
        except (OSError, ValueError):
            self.close_connection = True
            return
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        url = urlsplit(self.path)
        path = url.path
        fmt, kind = _GENERATION.get(path, (None, ""))
        if not kind:
            fmt, kind = _classify(path)
        request = RecordedRequest(
            method=self.command,
            path=path,
            query=url.query,
            headers={k.lower(): v for k, v in self.headers.items()},
            raw_body=raw,
            body=body,
            format=fmt,
            kind=kind,
            received_at=received,
            peer_port=self.client_address[1],
        )
        mock._record(request)
        end: End = "completed"
        try:
            self._answer(mock, request)
        except _Lost:
            end = "server_stopped" if self.server.stopped else "client_closed"
            self.close_connection = True
        except _Disconnect:
            end = "server_closed"
            self.close_connection = True
            mock._finish(request, end)  # before the client can see the hang-up
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
        except Exception as error:  # noqa: BLE001 - a bug in the mock or a tokenizer: kept
            end = "server_closed"
            self.close_connection = True
            mock._errors.append(f"{request.method} {request.path}: {error!r}")
            mock._finish(request, end)
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
        finally:
            if self.server.stopped and end == "completed" and request.ended_at is None:
                end = "server_stopped"
            mock._finish(request, end)

    def _answer(self, mock: MockInferenceServer, request: RecordedRequest) -> None:
        refusal = self._refusal(mock, request)
        if refusal is not None:
            self._send_json(request, *refusal)
            return
        path, kind = request.path, request.kind
        if kind in ("completion", "chat"):
            self._generate(mock, request)
        elif kind == "tokenize":
            body = request.body if isinstance(request.body, dict) else {}
            # llama-server's body, or vLLM's (served beside /v1, not under it)
            content = body.get("content", body.get("prompt", ""))
            special = body.get("add_special", body.get("add_special_tokens", False))
            tokens = mock.tokenize(content, bool(special))
            self._send_json(request, 200, {"tokens": tokens})
        elif kind == "health":
            self._send_json(request, 200, {"status": "ok"})
        elif kind == "props":
            n_ctx = mock.n_ctx if mock.n_ctx is not None else 4096
            props = {
                "default_generation_settings": {"n_ctx": n_ctx},
                "total_slots": 1,
                "model_path": mock.models[0] if mock.models else "mock",
            }
            self._send_json(request, 200, props)
        elif kind == "models" and request.format == "openai":
            now = int(time.time())
            data = [
                {"id": m, "object": "model", "created": now, "owned_by": "vllm"}
                for m in mock.models
            ]
            if mock.n_ctx is not None:
                for entry in data:
                    entry["max_model_len"] = mock.n_ctx
            self._send_json(request, 200, {"object": "list", "data": data})
        elif kind == "models":
            tags = [
                {
                    "name": m,
                    "model": m,
                    "modified_at": _iso_now(),
                    "size": 0,
                    "digest": uuid.uuid5(uuid.NAMESPACE_URL, m).hex * 2,
                    "details": {"format": "gguf", "family": "llama"},
                }
                for m in mock.models
            ]
            self._send_json(request, 200, {"models": tags})
        elif kind == "version":
            self._send_json(request, 200, {"version": "0.6.0"})
        else:
            message = f"mock: no route for {request.method} {path}"
            self._send_json(request, 404, error_body(request.format, 404, message))

    def _refusal(
        self, mock: MockInferenceServer, request: RecordedRequest
    ) -> tuple[int, dict[str, Any]] | None:
        """What a real server answers before generating anything: no key, loading, bad body,
        unknown model, prompt too long. None to go on."""
        fmt, path = request.format, request.path
        guarded = fmt == "openai" or (fmt == "llama" and request.kind != "health")
        if mock.api_key is not None and guarded:
            given = request.headers.get("authorization", "")
            if given.removeprefix("Bearer ").strip() != mock.api_key:
                if fmt == "openai":
                    return 401, {"error": "Unauthorized"}
                return 401, error_body("llama", 401, "Invalid API Key")
        if mock.loading and fmt in ("llama", "openai"):
            return 503, error_body("llama", 503, "Loading model")
        if request.kind not in ("completion", "chat"):
            return None
        if not isinstance(request.body, dict) or request.method != "POST":
            return 400, error_body(fmt, 400, f"mock: {path} wants a JSON object body")
        model = request.body.get("model")
        if fmt in ("openai", "ollama") and model is not None and model not in mock.models:
            if fmt == "openai":
                message = f"The model `{model}` does not exist."
                return 404, {
                    "error": {
                        "message": message,
                        "type": "NotFoundError",
                        "param": "model",
                        "code": 404,
                    }
                }
            return 404, {"error": f"model '{model}' not found"}
        if mock.n_ctx is not None and fmt in ("llama", "openai"):
            prompt_tokens = mock._prompt_tokens(request.body, request.kind)
            wanted = request.body.get("max_tokens") if fmt == "openai" else None
            wanted = wanted if isinstance(wanted, int) and wanted > 0 else 0
            too_long = (
                prompt_tokens >= mock.n_ctx
                if fmt == "llama"
                else prompt_tokens + wanted > mock.n_ctx
            )
            if too_long:
                return 400, overflow_body(fmt, prompt_tokens, mock.n_ctx, wanted)
        return None

    def _generate(self, mock: MockInferenceServer, request: RecordedRequest) -> None:
        fmt = request.format
        assert fmt is not None
        reply = mock._next_reply()
        request.reply = reply
        default_stream = fmt == "ollama"
        request.stream = bool(request.body.get("stream", default_stream))
        gen = _Generation(mock, request, reply, fmt, request.kind)
        self._wait(reply.first_byte_delay)
        if reply.status != 200:
            self._send_json(request, reply.status, gen.error())
            return
        pieces = list(reply.pieces)
        limit = reply.disconnect_after
        if not request.stream:
            self._wait(reply.piece_delay * len(pieces))
            if limit is not None:
                raise _Disconnect
            request.pieces_sent.extend(pieces)
            self._send_json(request, 200, gen.whole())
            return
        self._head(
            request,
            200,
            {
                "Content-Type": gen.content_type,
                "Cache-Control": "no-cache",
                "Transfer-Encoding": "chunked",
            },
        )
        for event in gen.opening():
            self._chunk(event)
        for i, text in enumerate(pieces):
            if limit is not None and i >= limit:
                raise _Disconnect
            self._wait(reply.piece_delay)
            request.pieces_sent.append(text)
            last = i == len(pieces) - 1
            self._chunk(gen.piece(text, last))
        if reply.garbage is not None:
            self._chunk(gen.garbage(reply.garbage, reply.garbage_framed))
        if limit is not None:
            raise _Disconnect
        if reply.stream_error is not None:
            events = gen.stream_error(reply.stream_error)
        else:
            events = gen.closing(reply.finish_with_last_piece and bool(pieces))
        for event in events:
            self._chunk(event)
        self._write(b"0\r\n\r\n", last_of=request)


class _Disconnect(Exception):
    """The script says: hang up now (``Reply.disconnect_after``)."""


def _classify(path: str) -> tuple[Format | None, str]:
    if path in ("/health", "/v1/health"):
        return "llama", "health"
    if path == "/tokenize":
        return "llama", "tokenize"
    if path == "/props":
        return "llama", "props"
    if path in ("/v1/models", "/models"):
        return "openai", "models"
    if path == "/api/tags":
        return "ollama", "models"
    if path == "/api/version":
        return "ollama", "version"
    if path.startswith("/v1/"):
        return "openai", "other"
    if path.startswith("/api/"):
        return "ollama", "other"
    return "llama", "other"


@contextlib.contextmanager
def mock_inference(**options: Any) -> Iterator[MockInferenceServer]:
    """``with mock_inference(api_key="k") as server:`` -- a started mock, stopped afterwards."""
    with MockInferenceServer(**options) as server:
        yield server
