"""The protocol's edges: JSON-RPC message checks, the LSP lifecycle, and how errors are
answered (framing is `framing.py`'s, the transports `transport.py`'s).

pygls 2.1 leaves these to chance (see `ClProtocol`): bad
JSON, bad params and handler failures become "Error in server" popups and tracebacks; requests
before `initialize` run, requests after `shutdown` are never answered, and `exit`'s exit code is
lost. Here malformed input gets the JSON-RPC error the protocol names and one log line, and the
server keeps serving.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import itertools
import json
import logging
from collections.abc import Callable
from typing import Any

import cattrs
from lsprotocol import types
from pygls.exceptions import (
    JsonRpcException,
    JsonRpcInternalError,
    JsonRpcMethodNotFound,
    JsonRpcRequestCancelled,
)
from pygls.protocol import LanguageServerProtocol, lsp_method
from pygls.protocol.json_rpc import (
    JsonRPCNotification,
    JsonRPCRequestMessage,
    JsonRPCResponseMessage,
)

from ..errors import first_line
from .documents import whole_characters
from .framing import MAX_FRAME_BYTES, Broken, Frame, Oversized

log = logging.getLogger(__name__)

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
SERVER_NOT_INITIALIZED = -32002

# -- messages --------------------------------------------------------------------------------------


class _Handled:
    """Marker for a message already dealt with while being decoded (answered or dropped)."""

    jsonrpc = None


HANDLED = _Handled()


def _valid_id(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _params_problem(error: BaseException) -> str:
    """A short reason why params did not fit their type: "position.line: expected int"."""
    cause = error.__cause__ or error
    if isinstance(cause, cattrs.BaseValidationError):
        found = cattrs.transform_error(cause, path="$")
        reasons = []
        for item in found[:2]:
            what, _, where = item.partition(" @ ")
            where = where.removeprefix("$").removeprefix(".params").lstrip(".") or "params"
            reasons.append(f"{where}: {what.removeprefix('invalid value for type, ')}")
        more = f" (and {len(found) - 2} more)" if len(found) > 2 else ""
        return "; ".join(reasons) + more
    return first_line(cause)


def _replace_lone_surrogates(data: dict[str, Any] | list[Any]) -> None:
    """Replace lone UTF-16 surrogates in every string of a message with U+FFFD, in place.

    JSON can carry half a pair ("\\ud800"; JavaScript strings hold them), which no encoder
    takes: a file name, a setting or a log file would fail on it. Document text gets the
    same treatment in documents.py; U+FFFD keeps positions in step with the editor."""
    stack = [data]
    while stack:
        node = stack.pop()
        for key, value in node.items() if isinstance(node, dict) else enumerate(node):
            if isinstance(value, str):
                node[key] = whole_characters(value)  # type: ignore[index]
            elif isinstance(value, dict | list):
                stack.append(value)


class ClProtocol(LanguageServerProtocol):
    """pygls's protocol with cl-lsp's own document sync, the LSP lifecycle, and an answer for
    every request.

    pygls 2.1 drops a request whose params fail to deserialize (a negative position, say)
    without answering, turns malformed input and handler failures into "Error in server"
    popups with tracebacks, runs requests before `initialize` and ignores them after
    `shutdown`. Here each gets the JSON-RPC error the protocol names and one log line.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.initialize_received = False
        self.on_exit: Callable[[int], None] | None = None  # set by serve_stdio
        self.exiting = False
        self._notification_ids = itertools.count()

    # -- decoding ----------------------------------------------------------------------------

    def receive(self, frame: Frame) -> None:
        """Decode and handle one frame from FrameParser. Never raises: a bug in handling one
        message is logged, and the transport goes on reading the next."""
        try:
            self._receive(frame)
        except Exception as error:
            log.error("could not handle a message: %s: %s", type(error).__name__, first_line(error))
            log.debug("could not handle a message", exc_info=error)

    def _receive(self, frame: Frame) -> None:
        if isinstance(frame, Oversized):
            self.refuse_oversized(frame)
            return
        if isinstance(frame, Broken):
            self.answer_parse_error(
                f"a frame of {frame.length} bytes was cut short after "
                f"{frame.received} bytes by the next header"
            )
            return
        try:
            data = json.loads(frame.decode("utf-8"))
        except UnicodeDecodeError as error:
            self.answer_parse_error(
                f"the message is not UTF-8 ({error.reason} at byte {error.start})"
            )
            return
        except json.JSONDecodeError as error:
            self.answer_parse_error(f"invalid JSON: {error.msg} at character {error.pos}")
            return
        except ValueError as error:  # a number too long to convert, say
            self.answer_parse_error(f"invalid JSON: {first_line(error)}")
            return
        except RecursionError:
            self.answer_parse_error("JSON nested too deeply")
            return
        self.handle_message(self.structure_message(data) if isinstance(data, dict) else data)

    def answer_parse_error(self, reason: str) -> None:
        log.warning("parse error: %s", reason)
        self._send_error(None, PARSE_ERROR, f"parse error: {reason}")

    def refuse_oversized(self, frame: Oversized) -> None:
        reason = (
            f"message too large: {frame.length} bytes, the limit is "
            f"{MAX_FRAME_BYTES} bytes; skipped"
        )
        log.warning("%s", reason)
        if frame.request_id is not None:
            self._send_error(frame.request_id, INVALID_REQUEST, reason)

    def input_ended(self) -> None:
        if self.exiting:
            return
        code = 0 if self._shutdown else 1
        if code:
            log.warning("the client closed the connection without shutdown and exit")
        if self.on_exit is not None:
            self.on_exit(code)

    def structure_message(self, data: dict[str, Any]) -> Any:
        if "jsonrpc" not in data:  # a nested object, or a message without "jsonrpc"
            return data
        _replace_lone_surrogates(data)
        if (problem := self._envelope_problem(data)) is not None:
            return self._reject_envelope(data, problem)
        method = data.get("method")
        if method is None:
            return self._structure_response(data)
        default = JsonRPCRequestMessage if "id" in data else JsonRPCNotification
        message_type = self.get_message_type(method) or default
        candidates = [{**data, "params": data.get("params")}]
        if data.get("params") is None:  # `initialized` and friends sent without their {}
            candidates.append({**data, "params": {}})
        failure: Exception | None = None
        for candidate in candidates:
            try:
                return self._converter.structure(candidate, message_type)
            except Exception as error:  # any failure here is the client's message
                log.debug("%s did not fit %s", method, message_type.__name__, exc_info=True)
                failure = failure or error
        assert failure is not None
        return self._reject_params(data, failure)

    def _envelope_problem(self, data: dict[str, Any]) -> str | None:
        if data.get("jsonrpc") != "2.0":
            return f'jsonrpc must be "2.0", not {json.dumps(data.get("jsonrpc"))[:40]}'
        if "id" in data and not _valid_id(data["id"]) and "method" in data:
            return "id must be an integer or a string"
        if "method" in data and not isinstance(data["method"], str):
            return "method must be a string"
        if data.get("params") is not None and not isinstance(data["params"], dict | list):
            return "params must be an object or an array"  # null is sent for none (eglot)
        if "method" not in data and not ("id" in data and ("result" in data or "error" in data)):
            return "neither a request, a notification nor a response"
        return None

    def _reject_envelope(self, data: Any, problem: str) -> _Handled:
        if (
            isinstance(data, dict)
            and "method" not in data
            and ("result" in data or "error" in data)
        ):
            log.warning("dropped a malformed response: %s", problem)  # never answer a response
            return HANDLED
        msg_id = data.get("id") if isinstance(data, dict) else None
        msg_id = msg_id if _valid_id(msg_id) else None
        log.warning("invalid request: %s", problem)
        self._send_error(msg_id, INVALID_REQUEST, f"invalid request: {problem}")
        return HANDLED

    def _reject_params(self, data: dict[str, Any], error: BaseException) -> _Handled:
        method = data["method"]
        problem = "params are missing" if data.get("params") is None else _params_problem(error)
        reason = f"invalid params for {method}: {problem}"
        if "id" in data:
            log.warning("%s", reason)
            self._send_error(data["id"], INVALID_PARAMS, reason)
        else:
            log.warning("dropped notification: %s", reason)
        return HANDLED

    def _structure_response(self, data: dict[str, Any]) -> Any:
        msg_id = data["id"] if _valid_id(data["id"]) else None
        message_type = (
            types.ResponseErrorMessage
            if "error" in data
            else self._result_types.pop(msg_id, None) or JsonRPCResponseMessage
        )
        try:
            return self._converter.structure(data, message_type)
        except Exception as error:  # any failure here is the client's message
            log.debug("response did not fit %s", message_type.__name__, exc_info=True)
            # The request's sender is told instead of waiting forever.
            reason = f"malformed response to request {msg_id}: {_params_problem(error)}"
            log.warning("%s", reason)
            if (future := self._request_futures.pop(msg_id, None)) is not None:
                future.set_exception(JsonRpcInternalError(reason))
            return HANDLED

    # -- the lifecycle -----------------------------------------------------------------------

    def handle_message(self, message: Any) -> None:
        if message is HANDLED:
            return
        if not hasattr(message, "jsonrpc"):  # not an object, or an object without "jsonrpc"
            self._reject_envelope(message, "not a JSON-RPC 2.0 message object")
            return
        method = getattr(message, "method", None)
        is_request = method is not None and hasattr(message, "id")
        if method is None or method == types.EXIT:
            super().handle_message(message)
        elif not self.initialize_received:
            if method == types.INITIALIZE and is_request:
                self.initialize_received = True
                super().handle_message(message)
            else:
                self._turn_away(
                    message,
                    is_request,
                    "before initialize",
                    "the server is not initialized",
                    SERVER_NOT_INITIALIZED,
                    f"server not initialized: send initialize before {method}",
                )
        elif self._shutdown:
            self._turn_away(
                message,
                is_request,
                "after shutdown",
                "the server is shutting down",
                INVALID_REQUEST,
                f"the server is shutting down: {method} after shutdown",
            )
        elif method == types.INITIALIZE and is_request:
            self._send_error(message.id, INVALID_REQUEST, "initialize was already received")
        else:
            super().handle_message(message)

    def _turn_away(
        self, message: Any, is_request: bool, when: str, why: str, code: int, answer: str
    ) -> None:
        """A message outside the lifecycle: a request gets the error `answer`, a notification
        is dropped; one log line each."""
        if is_request:
            log.warning("%s %s: refused", message.method, when)
            self._send_error(message.id, code, answer)
        else:
            log.info("dropped %s: %s", message.method, why)

    @lsp_method(types.SHUTDOWN)
    def lsp_shutdown(self, *args: Any) -> Any:
        # pygls cancels the pending futures while iterating over their table, and cancelling
        # one runs `_forget_future`, which removes it: with a request to the client still
        # unanswered (a progress token during the model load) `shutdown` failed with
        # "dictionary changed size during iteration". Cancel over a snapshot.
        if (handler := self.fm.features.get(types.SHUTDOWN)) is not None:
            yield handler, args, None
        current_id = self.msg_id
        for msg_id, future in list(self._request_futures.items()):
            if msg_id != current_id and not future.done():
                future.cancel()
        self._shutdown = True
        return None

    @lsp_method(types.EXIT)
    def lsp_exit(self, *args: Any) -> Any:
        if (handler := self.fm.features.get(types.EXIT)) is not None:
            yield handler, args, None
        code = 0 if self._shutdown else 1
        log.info("exit%s: exit code %d", "" if self._shutdown else " without shutdown", code)
        self.exiting = True
        if self.on_exit is None:  # served by pygls's own loop (TCP)
            raise SystemExit(code)
        self.on_exit(code)

    # -- handling and answering --------------------------------------------------------------

    def _handle_request(self, msg_id: Any, method_name: str, params: Any) -> None:
        try:
            handler = self._get_handler(method_name)
        except JsonRpcMethodNotFound as error:
            log.warning("unknown request %s", method_name)
            self._send_response(msg_id, error=error.to_response_error())
            return
        self._ctx_msg_id.set(msg_id)
        callback = functools.partial(self._send_handler_result, msg_id=msg_id, method=method_name)
        try:
            self._execute_handler(msg_id=msg_id, handler=handler, args=(params,), callback=callback)
        except Exception as error:  # noqa: BLE001 - the handler could not even start; logged there
            self._answer_failure(msg_id, method_name, error)

    def _send_handler_result(self, future: Any, *, msg_id: Any, method: str = "") -> None:
        self._request_futures.pop(msg_id, None)
        if future.cancelled():
            self._send_response(
                msg_id,
                error=JsonRpcRequestCancelled(
                    f"request {msg_id} was cancelled"
                ).to_response_error(),
            )
        elif (error := future.exception()) is not None:
            self._answer_failure(msg_id, method, error)
        else:
            self._send_response(msg_id, result=future.result())

    def _answer_failure(self, msg_id: Any, method: str, error: BaseException) -> None:
        if isinstance(error, JsonRpcException):  # raised on purpose: the message says why
            message = first_line(error)
            log.warning("%s", message if method in message else f"{method}: {message}")
            self._send_error(msg_id, error.code, message)
            return
        log.error("%s failed: %s: %s", method, type(error).__name__, first_line(error))
        log.debug("%s failed", method, exc_info=error)  # the traceback, only at -vv
        self._send_error(
            msg_id,
            INTERNAL_ERROR,
            f"internal error in {method}: {type(error).__name__}: {first_line(error)}",
        )

    def _handle_notification(self, method_name: str, params: Any) -> None:
        if method_name == types.CANCEL_REQUEST:
            self._handle_cancel_notification(params.id)
            return
        try:
            handler = self._get_handler(method_name)
        except JsonRpcMethodNotFound:
            log.debug("ignored notification %s", method_name)
            return
        # pygls files a notification's future under a made-up id and never removes it.
        key = f"notification-{next(self._notification_ids)}"
        callback = functools.partial(self._check_handler_result, method=method_name, key=key)
        try:
            self._execute_handler(msg_id=key, handler=handler, args=(params,), callback=callback)
        except Exception as error:  # noqa: BLE001 - the handler could not even start; logged there
            self._request_futures.pop(key, None)
            self._log_notification_failure(method_name, error)

    def _check_handler_result(self, future: Any, *, method: str = "", key: str = "") -> None:
        self._request_futures.pop(key, None)
        if not future.cancelled() and (error := future.exception()) is not None:
            self._log_notification_failure(method, error)

    def _log_notification_failure(self, method: str, error: BaseException) -> None:
        log.error("%s failed: %s: %s", method, type(error).__name__, first_line(error))
        log.debug("%s failed", method, exc_info=error)

    def _send_error(self, msg_id: Any, code: int, message: str) -> None:
        # Not a ResponseErrorMessage: lsprotocol's converter drops an id of None, and JSON-RPC
        # wants `"id": null` when the id could not be read.
        self._send_data(
            {"jsonrpc": "2.0", "id": msg_id, "error": {"code": code, "message": message}}
        )

    def _send_data(self, data: Any) -> None:
        """pygls's, except that an answer JSON cannot hold becomes an InternalError answer and a
        log line, not an "Error in server" popup and a request left unanswered."""
        if self.writer is None:
            log.error("no transport to send on")
            return
        try:
            body = json.dumps(data, default=self._serialize_message)
        except Exception as error:  # a handler returned something JSON cannot hold
            log.debug("could not serialize %r", data, exc_info=True)
            log.error(
                "could not serialize a message: %s: %s", type(error).__name__, first_line(error)
            )
            if hasattr(data, "result") and _valid_id(msg_id := getattr(data, "id", None)):
                self._send_error(
                    msg_id, INTERNAL_ERROR, "internal error: the answer could not be serialized"
                )
            return
        header = (
            f"Content-Length: {len(body)}\r\n"  # json.dumps writes ASCII only
            f"Content-Type: {self.CONTENT_TYPE}; charset={self.CHARSET}\r\n\r\n"
        )
        written = self.writer.write(((header if self._include_headers else "") + body).encode())
        if inspect.isawaitable(written):
            asyncio.ensure_future(written)

    def _send_response(
        self, msg_id: Any, result: Any = None, error: types.ResponseError | None = None
    ) -> None:
        if error is not None and isinstance(error.data, dict) and "traceback" in error.data:
            error = types.ResponseError(code=error.code, message=error.message)  # the log has it
        super()._send_response(msg_id, result, error)

    # Document sync goes to our DocumentStore only; pygls's workspace copy is not kept.
    @lsp_method(types.TEXT_DOCUMENT_DID_OPEN)
    def lsp_text_document__did_open(self, params: types.DidOpenTextDocumentParams) -> Any:
        if (handler := self.fm.features.get(types.TEXT_DOCUMENT_DID_OPEN)) is not None:
            yield handler, (params,), None

    @lsp_method(types.TEXT_DOCUMENT_DID_CHANGE)
    def lsp_text_document__did_change(self, params: types.DidChangeTextDocumentParams) -> Any:
        if (handler := self.fm.features.get(types.TEXT_DOCUMENT_DID_CHANGE)) is not None:
            yield handler, (params,), None

    @lsp_method(types.TEXT_DOCUMENT_DID_CLOSE)
    def lsp_text_document__did_close(self, params: types.DidCloseTextDocumentParams) -> Any:
        if (handler := self.fm.features.get(types.TEXT_DOCUMENT_DID_CLOSE)) is not None:
            yield handler, (params,), None

    # -- tables pygls never prunes (issue 12) ------------------------------------------------
    # pygls 2.1.1 files the future of a generator handler's inner call under a made-up id
    # nobody removes (one per `cl-lsp.runAction`, an async command), and keeps the result type
    # of a request to the client that was answered with an error or never answered (a refused
    # or timed-out progress token): both grew for as long as the server ran.

    _server_request_ids = itertools.count(1)

    def _execute_handler(
        self, msg_id: Any, handler: Any, callback: Any, args: Any = None, kwargs: Any = None
    ) -> None:
        super()._execute_handler(msg_id, handler, callback, args, kwargs)
        if (future := self._request_futures.get(msg_id)) is not None:
            future.add_done_callback(functools.partial(self._forget_future, msg_id))

    def send_request(
        self, method: str, params: Any = None, callback: Any = None, msg_id: Any = None
    ) -> Any:
        if msg_id is None:
            msg_id = f"cl-lsp-{next(self._server_request_ids)}"
        future = super().send_request(method, params, callback, msg_id)
        future.add_done_callback(functools.partial(self._forget_sent, msg_id))
        return future

    def _forget_future(self, msg_id: Any, future: Any) -> None:
        if self._request_futures.get(msg_id) is future:
            del self._request_futures[msg_id]

    def _forget_sent(self, msg_id: Any, future: Any) -> None:
        """However a request to the client ended (answer, error, cancelled, timed out)."""
        self._forget_future(msg_id, future)
        self._result_types.pop(msg_id, None)
