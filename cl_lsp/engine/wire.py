"""The inference servers' wire formats: what a request's JSON body holds and what each line of
the streamed answer means. Pure: no sockets here (`remote.py` does the talking), so every
format is tested line by line.

- llama.cpp's llama-server, ``POST /completion``: the prompt as token ids (or text), SSE events
  ``data: {"content": ..., "stop": false}``, the last one with ``"stop": true``, the stop type
  and ``timings`` (``prompt_n``: prompt tokens evaluated, ``cache_n``: taken from the cache).
  ``cache_prompt`` and a fixed ``id_slot`` keep one editor's prompts in one KV cache.
- OpenAI-compatible ``POST {base}/completions`` (vLLM, SGLang, TGI, LM Studio, llama-cpp-python's
  server): token ids where the server takes them (vLLM, SGLang), SSE chunks
  ``data: {"choices": [{"text": ..., "finish_reason": null}]}``, a usage chunk when asked for
  (``stream_options.include_usage``), then ``data: [DONE]``.
- Ollama, ``POST /api/generate`` with ``raw: true`` (our template, not the model's): NDJSON
  lines ``{"response": ..., "done": false}``, the last with ``done: true``, ``done_reason`` and
  ``prompt_eval_count``.

Code actions use each server's chat endpoint instead (``/v1/chat/completions``,
``{base}/chat/completions``, ``/api/chat``), so the server applies the instruct model's own
chat template.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..config import EngineKind


class WireError(Exception):
    """The server sent something that is not its format; the message says what."""


@dataclass(frozen=True)
class Piece:
    """What one line of a streamed answer says."""

    text: str = ""
    tokens: tuple[int, ...] = ()
    done: bool = False  # the server's last word on this answer
    stop_reason: str | None = None  # in Generation's terms: "eot", "max_tokens", "stop"
    prompt_tokens: int | None = None
    evaluated_tokens: int | None = None  # prompt tokens the server ran (not from its cache)
    error: str | None = None  # an error reported inside the stream


@dataclass(frozen=True)
class Format:
    """One server's completion and chat endpoints."""

    kind: EngineKind
    completion_path: str
    chat_path: str
    takes_tokens: bool  # the completion endpoint may take the prompt as token ids
    framing: str  # "sse" or "ndjson"
    health_path: str


FORMATS = {
    EngineKind.LLAMA_SERVER: Format(
        EngineKind.LLAMA_SERVER, "/completion", "/v1/chat/completions", True, "sse", "/health"
    ),
    EngineKind.OPENAI: Format(
        EngineKind.OPENAI, "/completions", "/chat/completions", True, "sse", "/models"
    ),
    EngineKind.OLLAMA: Format(
        EngineKind.OLLAMA, "/api/generate", "/api/chat", False, "ndjson", "/api/version"
    ),
}


def completion_body(
    kind: EngineKind,
    prompt: Sequence[int] | str,
    *,
    max_tokens: int,
    temperature: float,
    stop: Sequence[str] = (),
    model: str | None = None,
    slot: int | None = None,
    cache_prompt: bool = True,
    cache_reuse: int = 0,
) -> dict[str, Any]:
    """The JSON body of a streamed completion request. `cache_reuse` > 0 asks llama-server to
    keep cached runs of that many tokens at new positions (its `n_cache_reuse`)."""
    greedy = temperature <= 0
    if kind is EngineKind.LLAMA_SERVER:
        body: dict[str, Any] = {
            "prompt": list(prompt) if not isinstance(prompt, str) else prompt,
            "n_predict": max_tokens,
            "temperature": temperature,
            "stream": True,
            "cache_prompt": cache_prompt,
            "return_tokens": True,
            "stop": list(stop),
        }
        if greedy:
            body["top_k"] = 1
        if cache_prompt and cache_reuse > 0:
            body["n_cache_reuse"] = cache_reuse
        if slot is not None:
            body["id_slot"] = slot
        return body
    if kind is EngineKind.OPENAI:
        body = {
            "prompt": list(prompt) if not isinstance(prompt, str) else prompt,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if stop:
            body["stop"] = list(stop)
        if model:
            body["model"] = model
        return body
    if kind is EngineKind.OLLAMA:
        if not isinstance(prompt, str):
            raise ValueError("Ollama takes prompts as text only")
        options: dict[str, Any] = {"num_predict": max_tokens, "temperature": temperature}
        if greedy:
            options["top_k"] = 1
        if stop:
            options["stop"] = list(stop)
        return {
            "model": model or "",
            "prompt": prompt,
            "raw": True,
            "stream": True,
            "options": options,
        }
    raise ValueError(f"not a server engine: {kind.value}")


def chat_body(
    kind: EngineKind,
    system: str,
    user: str,
    *,
    max_tokens: int,
    temperature: float,
    model: str | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """The JSON body of a streamed chat request (code actions)."""
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    if kind is EngineKind.OLLAMA:
        options: dict[str, Any] = {"num_predict": max_tokens, "temperature": temperature}
        if seed is not None:
            options["seed"] = seed
        return {"model": model or "", "messages": messages, "stream": True, "options": options}
    body: dict[str, Any] = {
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "stream": True,
    }
    if seed is not None:
        body["seed"] = seed
    if model:
        body["model"] = model
    elif kind is EngineKind.OPENAI:
        body["model"] = ""
    return body


def stream_payload(framing: str, line: str) -> str | None:
    """The JSON text a stream line carries; None for lines that carry none (blank lines
    between SSE events, comments, ``event:`` fields, ``[DONE]``, which `is_done_marker`
    recognises). An SSE ``error:`` line is returned as a JSON error object."""
    line = line.strip()
    if not line:
        return None
    if framing == "ndjson":
        return line
    if line.startswith((":", "event:", "id:")):
        return None
    if line.startswith("error:"):  # llama-server reports a failure inside the stream so
        return json.dumps({"error": _loads(line[len("error:") :].strip())})
    if not line.startswith("data:"):
        raise WireError(f"not a server-sent event: {line[:80]!r}")
    data = line[len("data:") :].strip()
    return None if data == "[DONE]" else data


def is_done_marker(line: str) -> bool:
    return line.strip() == "data: [DONE]" or line.strip() == "data:[DONE]"


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as error:
        raise WireError(f"the server sent something that is not JSON: {text[:80]!r}") from error


def parse_completion(kind: EngineKind, payload: str) -> Piece:
    """One streamed completion event."""
    if kind is EngineKind.LLAMA_SERVER:
        return _parse(payload, _llama_server_piece)
    if kind is EngineKind.OPENAI:
        return _parse(payload, lambda data: _openai_piece(data, chat=False))
    if kind is EngineKind.OLLAMA:
        return _parse(payload, lambda data: _ollama_piece(data, chat=False))
    raise ValueError(f"not a server engine: {kind.value}")


def parse_chat(kind: EngineKind, payload: str) -> Piece:
    """One streamed chat event (llama-server speaks OpenAI's format here)."""
    if kind is EngineKind.OLLAMA:
        return _parse(payload, lambda data: _ollama_piece(data, chat=True))
    return _parse(payload, lambda data: _openai_piece(data, chat=True))


def _parse(payload: str, read: Callable[[dict[str, Any]], Piece]) -> Piece:
    """A JSON object read by `read`; an error object as an error piece; anything else (not
    JSON, not an object, fields missing or of the wrong type) as a WireError."""
    data = _loads(payload)
    if not isinstance(data, dict):
        raise WireError(f"expected a JSON object, got {payload[:80]!r}")
    if "error" in data:
        return Piece(done=True, error=error_text(data))
    try:
        return read(data)
    except (KeyError, TypeError, IndexError, AttributeError) as error:
        raise WireError(f"unexpected answer from the server: {payload[:120]!r}") from error


_LLAMA_STOPS = {"eos": "eot", "limit": "max_tokens", "word": "stop"}
_OPENAI_STOPS = {"stop": "eot", "length": "max_tokens"}


def _llama_server_piece(data: dict[str, Any]) -> Piece:
    text = data["content"]
    tokens = tuple(data.get("tokens") or ())
    if not data.get("stop"):
        return Piece(text=text, tokens=tokens)
    timings = data.get("timings") or {}
    prompt = data.get("tokens_evaluated")
    evaluated = timings.get("prompt_n")
    if data.get("truncated"):
        return Piece(text=text, tokens=tokens, done=True, error="context_full")
    return Piece(
        text=text,
        tokens=tokens,
        done=True,
        stop_reason=_LLAMA_STOPS.get(str(data.get("stop_type")), "eot"),
        prompt_tokens=prompt if isinstance(prompt, int) else None,
        evaluated_tokens=evaluated if isinstance(evaluated, int) else None,
    )


def _openai_piece(data: dict[str, Any], *, chat: bool) -> Piece:
    usage = data.get("usage") or None
    choices = data.get("choices") or []
    text, finish = "", None
    if choices:
        choice = choices[0]
        text = (choice["delta"].get("content") or "") if chat else (choice.get("text") or "")
        finish = choice.get("finish_reason")
    if usage:
        prompt = usage.get("prompt_tokens")
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
        return Piece(
            text=text,
            done=True,  # the usage chunk comes last, after the finish reason
            stop_reason=_OPENAI_STOPS.get(str(finish), "eot") if finish else None,
            prompt_tokens=prompt if isinstance(prompt, int) else None,
            evaluated_tokens=prompt - cached if isinstance(prompt, int) else None,
        )
    if finish:
        # Not yet done: a usage chunk may follow (vLLM, SGLang); `[DONE]` ends the stream.
        return Piece(text=text, stop_reason=_OPENAI_STOPS.get(str(finish), "eot"))
    return Piece(text=text)


def _ollama_piece(data: dict[str, Any], *, chat: bool) -> Piece:
    text = data["message"].get("content", "") if chat and "message" in data else ""
    if not chat:
        text = data["response"]
    if not data.get("done"):
        return Piece(text=text)
    prompt = data.get("prompt_eval_count")
    return Piece(
        text=text,
        done=True,
        stop_reason=_OPENAI_STOPS.get(str(data.get("done_reason")), "eot"),
        prompt_tokens=prompt if isinstance(prompt, int) else None,
        evaluated_tokens=prompt if isinstance(prompt, int) else None,
    )


def error_text(data: Any) -> str:
    """The message in a server's JSON error body, whichever shape it has."""
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict):
            message = error.get("message") or error.get("detail") or error.get("msg")
            if message:
                return message if isinstance(message, str) else json.dumps(message)[:300]
            return json.dumps(error)[:300]
        if isinstance(error, str):
            return error
        detail = data.get("detail")
        if detail:
            return json.dumps(detail)[:300] if not isinstance(detail, str) else detail
    return json.dumps(data)[:300]
