"""Inference-server engines: typing through each engine kind, then twenty editors on one server.

    python bench/server_engines.py [--bursts 16] [--editors 20] [--engines local,llama-server,...]
                                   [--model PATH] [--seed 0] [--json OUT]

**Part 1, typing through each engine.** bench/typing_replay.py's bursts (its `Server`, spots and
paces: the rest of a line deleted, one request awaited, then the text typed back 30-120 ms a
key, `didChange` + `inlineCompletion` per key) replayed through `python -m cl_lsp --stdio`
with each `engine.kind` against the same model served on loopback:

* `local`: llama.cpp in cl-lsp's process, the baseline;
* `llama-server`: llama.cpp's own server (tests/assets.py builds it) serving the same GGUF,
  prompts as token ids, once with `engine.cachePrompt` true and once false;
* `openai`: llama-cpp-python's server (`python -m llama_cpp.server`), which takes text prompts
  only: cl-lsp falls back to text after the first refusal;
* `ollama`: tests/mock_inference.py, scripted (there is no Ollama here): every answer is 48
  pieces of " x" dripped 5 ms apart, like a GPU server at 200 tokens/s. The mock runs in a
  process of its own (`MockProcess`), so what it records is not delayed by this one.

Each engine runs twice: `typing`, cl-lsp's defaults (150 ms debounce), and `no debounce`
(`completion.debounceMs` 0), where every keystroke starts a generation and the next keystroke
supersedes it, so streams are closed. The model is the tests' "x" model (a 2-layer F32
Code Llama-vocabulary GGUF whose greedy answer is " x x x ..." whatever the prompt): every
engine then does the same work per request (the same answer, to the token cap), whatever the
prompt form, so the answers can be compared with the local engine's, and the model costs
little, so what differs between rows is the engine path, not inference.
Evaluated-token counts depend on the prompts and the cache, not on the weights.

Figures per run: cl-lsp's overhead on top of the server (`overheadMs` of the answered
requests: request time minus debounce minus model time, where model time includes the HTTP
exchange), keystroke-to-suggestion, generations started per burst, superseded streams closed
(the status's `server.streamsClosed`), stop latency of superseded generations (cl-lsp's
`stopLatencyMs`; llama-server's log also says how many tasks it cancelled), prompt tokens
the server evaluated per keystroke (the engine's `evaluatedTokens` delta over the typing, as
the server reports it; llama-cpp-python's server reports none, so its log's "prefix-match
hit, remaining N prompt tokens to eval" lines are read instead), and per generated request;
whether each burst's last answer is the local engine's. Against the mock, also the time from
the superseding keystroke being written to cl-lsp's stdin to the mock seeing the stream
closed: which keystroke a generation was for is read from its prompt, whose prefix ends with
the text typed so far, and cl-lsp's request record says it was superseded.

**Part 2, twenty editors at once.** `--editors` processes of `cl-lsp --stdio`, each with
engine `llama-server` pointed at one mock (`model.path` = the x model, read for its
vocabulary only), `debounceMs` 0, each typing one burst into its own document, all at once;
the mock answers every generation with 48 pieces 20 ms apart (about 1 s). Every document
carries a marker line above the cursor (`# cl-lsp bench editor 07`), so each request's
document is read from its prompt (token ids, decoded with the vocabulary); each editor also
sends its own bearer token (`engine.apiKeyEnv`), a second key that needs no decoding. Figures:
the most generations in flight on the mock for one document (target 1), in total, and whether
anything was still running on the mock after the bursts (bounded wait). The mock sees a
hang-up on a handler thread woken by select(), so under load it can record the next request's
arrival before the previous stream's end: overlaps of one document's generations are listed
with their length, and those up to `DETECTION_SLACK_MS` are not counted as two streams.

Loopback only. Every wait is bounded (`--answer-timeout`, `--ready-timeout`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import json
import multiprocessing
import os
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

import assets
import http_servers
import typing_replay as replay
from mock_inference import MockInferenceServer, RecordedRequest, Reply

from cl_lsp.completion.prompts import TEXT_MID, TEXT_PRE, TEXT_SUF

X_MODEL = replay.MODELS_DIR / "x-codellama.F32.gguf"
N_CTX = 4096  # cl-lsp's default model.nCtx; the servers get the same context
ENGINES = ("local", "llama-server", "openai", "ollama")
OLLAMA_MODEL = "codellama"  # the mock's model name
# The mock's answers: 48 pieces of " x" (the x model's answer), dripped.
TYPING_DRIP = 0.005  # part 1: 200 tokens/s
EDITORS_DRIP = 0.02  # part 2: about 1 s an answer, so the editors' generations overlap
ANSWER_PIECES = 48
CLOSE_TARGET_MS = 50.0
# The mock notices a hang-up on a handler thread woken by select(); the next request's
# handler can record its arrival first. Overlaps of one document's generations up to this are
# read as that, not as two streams (strace showed cl-lsp closing before connecting again).
DETECTION_SLACK_MS = 2.0
OVERHEAD_TARGET_MS = 5.0
GENERATIONS_TARGET = 2


def log(message: str) -> None:
    print(f"[engines] {message}", file=sys.stderr, flush=True)


def drip(delay: float) -> Reply:
    return Reply.text(" x" * ANSWER_PIECES, piece_len=2, piece_delay=delay)


def x_model() -> Path:
    if not X_MODEL.is_file():
        log(f"building {X_MODEL}")
        assets.build_codellama_gguf(X_MODEL, vocab=assets.vocab_path(), forced_token=921)
    return X_MODEL


def llama_server_available() -> bool:
    try:
        assets.llama_server_path()
    except assets.AssetMissingError as error:
        log(f"{error}; skipping the llama-server runs")
        return False
    return True


# -- the mock, in a process of its own -------------------------------------------------------


def _serve_mock(conn: Any, reply: Reply, options: dict[str, Any]) -> None:
    """The mock's process: serve until told to stop, answering the parent's questions."""
    sys.setswitchinterval(0.0005)  # a handler thread woken by a hang-up records it promptly
    gc.freeze()
    with MockInferenceServer(default_reply=reply, **options) as mock:
        conn.send(mock.base_url)
        while conn.poll(3600):  # bounded, and EOF (the parent is gone) ends it too
            try:
                command, *arguments = conn.recv()
            except EOFError:
                return
            if command == "wait_idle":
                conn.send(mock.wait_idle(*arguments))
            elif command == "in_flight":
                conn.send(mock.in_flight)
            elif command == "record":
                conn.send((mock.requests, mock.errors))
            else:  # "stop"
                conn.send(None)
                return


class Recorded(MockInferenceServer):
    """What a `MockProcess` recorded, read with the mock's own methods (never started)."""

    def __init__(self, requests: list[RecordedRequest], errors: list[str]) -> None:
        super().__init__()
        self._requests, self._errors = requests, errors


class MockProcess:
    """tests/mock_inference.py's mock in a process of its own, like a real server: the times
    it records (a request received, a stream closed by the client) are not delayed by this
    process (its garbage collections, twenty clients' JSON on one GIL)."""

    def __init__(self, reply: Reply, **options: Any) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_serve_mock, args=(child, reply, options), daemon=True
        )
        self._process.start()
        self.base_url: str = self._receive(60)

    def _receive(self, timeout: float) -> Any:
        if not self._conn.poll(timeout):
            raise TimeoutError(f"the mock's process did not answer in {timeout} s")
        return self._conn.recv()

    def _ask(self, *command: Any, timeout: float = 60) -> Any:
        self._conn.send(command)
        return self._receive(timeout)

    def wait_idle(self, timeout: float) -> bool:
        return self._ask("wait_idle", timeout, timeout=timeout + 60)

    @property
    def in_flight(self) -> int:
        return self._ask("in_flight")

    def record(self) -> Recorded:
        return Recorded(*self._ask("record"))

    def close(self) -> None:
        with contextlib.suppress(OSError, EOFError, TimeoutError):
            self._ask("stop", timeout=10)
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(10)


@contextlib.contextmanager
def mock_process(reply: Reply, **options: Any) -> Iterator[MockProcess]:
    mock = MockProcess(reply, **options)
    try:
        yield mock
    finally:
        mock.close()


# -- which keystroke a prompt was for --------------------------------------------------------


@dataclass(frozen=True)
class Typed:
    """A document being typed into: its uri, the text before the cursor when the burst
    starts (its end), and the text typed back."""

    uri: str
    before: str
    span: str
    editor: int | None = None


def typed_doc(uri: str, spot: replay.Spot, editor: int | None = None) -> Typed:
    lines = spot.document().split("\n")
    before = "\n".join(lines[: spot.line + 1])  # the spot's line ends at the cursor
    return Typed(uri, before[-300:], spot.span, editor)


class PromptReader:
    """Reads a prompt the mock received: the FIM prefix (the text before the cursor), hence
    which document and how many characters of its burst had been typed."""

    def __init__(self, vocab: Path) -> None:
        from llama_cpp import Llama

        self._vocab = Llama(str(vocab), vocab_only=True, verbose=False)
        self._pre, self._suf, self._mid = assets.FIM_PRE_ID, assets.FIM_SUF_ID, assets.FIM_MID_ID

    def prefix(self, prompt: Any) -> str | None:
        """SPM: ... MID prefix; PSM: PRE prefix SUF ... MID (token ids or Code Llama's text)."""
        if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
            if self._mid not in prompt:
                return None
            if prompt[-1] == self._mid:  # PSM
                ids = prompt[prompt.index(self._pre) + 1 : prompt.index(self._suf)]
            else:
                ids = prompt[prompt.index(self._mid) + 1 :]
            return self._vocab.detokenize(ids).decode("utf-8", errors="replace")
        if isinstance(prompt, str) and TEXT_MID in prompt:
            if prompt.endswith(TEXT_MID):
                return prompt[len(TEXT_PRE) : prompt.index(TEXT_SUF)]
            return prompt[prompt.index(TEXT_MID) + len(TEXT_MID) :]
        return None

    def locate(self, request: RecordedRequest, docs: list[Typed]) -> tuple[Typed, int] | None:
        """The document a generation request was for and how many characters of its burst
        its prompt holds; None if no document's text matches."""
        prefix = self.prefix(request.prompt)
        if prefix is None:
            return None
        for doc in docs:
            for typed in range(len(doc.span), -1, -1):
                if prefix.endswith(doc.before + doc.span[:typed]):
                    return doc, typed
        return None


def close_latencies(
    mock: MockInferenceServer,
    located: dict[int, tuple[Typed, int] | None],
    keystrokes: dict[tuple[str, int], float],
    records: dict[tuple[str, int], dict[str, Any]],
) -> dict[str, Any]:
    """For each stream the client closed because a newer keystroke superseded it (cl-lsp's
    record says "superseded"): ms from sending that keystroke to the mock seeing the close.
    Streams closed for other reasons (a stop rule, such as the token cap) are counted apart."""
    latencies: list[float] = []
    details: list[dict[str, Any]] = []
    unlocated = without_newer = not_superseded = 0
    for request in mock.generations:
        closed = request.closed_by_client_at
        if closed is None:
            continue
        found = located.get(id(request))
        if found is None:
            unlocated += 1
            continue
        doc, typed = found
        # A prompt holding k typed characters is for version k + 1; the next keystroke makes
        # version k + 2 and supersedes it.
        record = records.get((doc.uri, typed + 1))
        if record is None or record["outcome"] != "superseded":
            not_superseded += 1
            continue
        sent = keystrokes.get((doc.uri, typed + 2))
        if sent is None:
            without_newer += 1
            continue
        latencies.append((closed - sent) * 1000)
        details.append(
            {
                "uri": doc.uri,
                "typed": typed,
                "ms": latencies[-1],
                "sentAt": sent,  # time.monotonic()
                "receivedAfterKeyMs": (request.received_at - sent) * 1000,
                "piecesSent": len(request.pieces_sent),
            }
        )
    return {
        "ms": latencies,
        "details": details,
        "unlocated": unlocated,
        "notSuperseded": not_superseded,
        "withoutNewerKeystroke": without_newer,
        "over50ms": sum(1 for x in latencies if x > CLOSE_TARGET_MS),
    }


def ends(mock: MockInferenceServer) -> dict[str, int]:
    return dict(Counter(str(r.end) for r in mock.generations))


# -- driving cl-lsp --------------------------------------------------------------------------


class Editor(replay.Server):
    """typing_replay's server, also remembering when each keystroke was written to cl-lsp's
    stdin (`time.monotonic()`: one clock for every process on the machine, the mock's too),
    every request's pending answer, and cl-lsp's record of each request."""

    def __init__(self, model: Path, options: dict[str, Any]) -> None:
        super().__init__(model, options)
        self.keystrokes: dict[tuple[str, int], float] = {}  # (uri, version) -> sent at
        self.answers: dict[str, list[replay.Pending]] = {}
        self.records: dict[tuple[str, int], dict[str, Any]] = {}  # (uri, version) -> record

    def insert(self, uri: str, line: int, column: int, text: str) -> None:
        super().insert(uri, line, column, text)  # written to cl-lsp's stdin at once
        self.keystrokes[(uri, self.versions[uri])] = time.monotonic()

    def request(self, uri: str, line: int, column: int) -> replay.Pending:
        pending = super().request(uri, line, column)
        self.answers.setdefault(uri, []).append(pending)
        return pending

    async def status(self) -> dict[str, Any]:
        """The status; its request records are kept too, by (uri, version)."""
        current = await super().status()
        for record in current.get("recent", ()):
            self.records[(record["uri"], record["version"])] = record
        return current

    def final_text(self, uri: str) -> str | None:
        answers = self.answers.get(uri)
        return answers[-1].text() if answers else None


def engine_options(kind: str, url: str | None, **engine: Any) -> dict[str, Any]:
    if kind == "local":
        return {}
    options = {"kind": kind, "url": url, **engine}
    if kind == "ollama":
        options["model"] = OLLAMA_MODEL
    return {"engine": options}


@dataclass(frozen=True)
class Run:
    kind: str
    phase: str  # "typing" (cl-lsp's defaults) or "no debounce"
    cache_prompt: bool = True

    @property
    def name(self) -> str:
        cache = "" if self.cache_prompt else ", cachePrompt off"
        return f"{self.kind}{cache}"

    @property
    def completion(self) -> dict[str, Any]:
        return {"debounceMs": 0} if self.phase == "no debounce" else {}


@contextlib.contextmanager
def inference_server(
    kind: str, model: Path, log_path: Path
) -> Iterator[tuple[str | None, MockProcess | None]]:
    """The server for one run, started on loopback and stopped afterwards: (url, mock)."""
    if kind == "local":
        yield None, None
    elif kind == "llama-server":
        with http_servers.llama_server(model, log_path, n_ctx=N_CTX) as url:
            yield url, None
    elif kind == "openai":
        with http_servers.openai_server(model, log_path, n_ctx=N_CTX) as url:
            # A first generation, so that every one of cl-lsp's logs its cache use (below).
            http_servers.post_json(url, "/completions", {"prompt": "x", "max_tokens": 1})
            yield url, None
    elif kind == "ollama":
        with mock_process(drip(TYPING_DRIP), models=(OLLAMA_MODEL,)) as mock:
            yield mock.base_url, mock
    else:
        raise ValueError(kind)


# llama-cpp-python's server streams no usage, but (verbose, its default) logs how much of each
# prompt it found in its cache; a generation after the first always shares BOS, so it logs one
# of these two lines.
LOGGED_EVALUATION = re.compile(
    r"Llama\.generate: (?:\d+ prefix-match hit, remaining (\d+) prompt tokens to eval"
    r"|full prompt already cached)"
)


def logged_evaluations(path: Path, offset: int) -> tuple[list[int], int]:
    """Prompt tokens llama-cpp-python's server evaluated for each generation it logged after
    `offset` (whole lines only), and the offset after them."""
    with path.open("rb") as log:
        log.seek(offset)
        data = log.read()
    data = data[: data.rfind(b"\n") + 1]
    text = data.decode("utf-8", errors="replace")
    return [int(m.group(1) or 0) for m in LOGGED_EVALUATION.finditer(text)], offset + len(data)


def delta(before: dict[str, Any], after: dict[str, Any], key: str) -> dict[str, int]:
    if key not in after:
        return {}
    return {name: after[key][name] - before[key].get(name, 0) for name in after[key]}


async def run_engine(
    run: Run,
    model: Path,
    spots: list[replay.Spot],
    reader: PromptReader,
    log_dir: Path,
    args: argparse.Namespace,
) -> dict[str, Any]:
    started = time.monotonic()
    label = f"{run.name}-{run.phase}".replace(" ", "-").replace(",", "")
    result: dict[str, Any] = {"name": run.name, "kind": run.kind, "phase": run.phase}
    result.update(cachePrompt=run.cache_prompt, bursts=[], error=None)
    docs: list[Typed] = []
    try:
        log_path = log_dir / f"{label}.log"
        with inference_server(run.kind, model, log_path) as (url, mock):
            options = {
                **engine_options(run.kind, url, cachePrompt=run.cache_prompt),
                "completion": run.completion,
            }
            result["options"] = options
            editor = Editor(model, options)
            try:
                await editor.start(args.ready_timeout)
                before = await editor.status()
                for index, spot in enumerate(spots):
                    uri = ROOT / "bench" / ".virtual" / f"b{index:03d}" / spot.source.name
                    uri_s = uri.as_uri()
                    docs.append(typed_doc(uri_s, spot))
                    paces = replay.paces(args.seed, str(index), len(spot.span))
                    offset = log_path.stat().st_size if run.kind == "openai" else 0
                    burst = await replay.run_burst(editor, spot, uri_s, paces, args.answer_timeout)
                    burst["finalText"] = editor.final_text(uri_s)
                    if run.kind == "openai":
                        # The first is the request at the new spot, awaited before the typing.
                        burst["serverLogEvaluated"], _ = logged_evaluations(log_path, offset)
                    result["bursts"].append(burst)
                after = await editor.status()
            finally:
                await editor.stop()
            if run.kind == "llama-server":
                # llama-server logs each generation it stopped because its client went away.
                result["serverCancelledTasks"] = log_path.read_text(errors="replace").count(
                    "stop: cancel task"
                )
            result["prompt"] = after.get("prompt", "tokens")
            result["server"] = delta(before, after, "server")
            result["counters"] = delta(before, after, "counters")
            result["maxInFlight"] = after.get("maxInFlight")
            if mock is not None:
                recorded = mock.record()
                located = {id(r): reader.locate(r, docs) for r in recorded.generations}
                result["mock"] = {
                    "closes": close_latencies(recorded, located, editor.keystrokes, editor.records),
                    "ends": ends(recorded),
                    "maxInFlight": recorded.max_in_flight,
                    "errors": recorded.errors,
                }
    except Exception as error:  # noqa: BLE001  (keep what was measured; report the failure)
        log(f"{run.name} / {run.phase}: failed: {type(error).__name__}: {error}")
        result["error"] = f"{type(error).__name__}: {error}"
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


# -- part 2: twenty editors ------------------------------------------------------------------


def marked_spot(spot: replay.Spot, editor: int) -> replay.Spot:
    """The spot with a marker comment line above the cursor's line, naming the editor."""
    lines = spot.source.text.split("\n")
    line = lines[spot.line]
    indent = line[: len(line) - len(line.lstrip())]
    comment = "#" if spot.source.language == "python" else "//"
    lines.insert(spot.line, f"{indent}{comment} cl-lsp bench editor {editor:02d}")
    source = replay.Source(
        spot.source.path,
        f"e{editor:02d}-{spot.source.name}",
        "\n".join(lines),
        spot.source.language,
    )
    return replay.Spot(source, spot.line + 1, spot.column, spot.span)


def token_variable(editor: int) -> str:
    return f"CL_BENCH_EDITOR_TOKEN_{editor:02d}"


async def run_editors(
    count: int, model: Path, sources: list[replay.Source], reader: PromptReader, args
) -> dict[str, Any]:
    started = time.monotonic()
    spots = [marked_spot(s, i) for i, s in enumerate(replay.make_bursts(sources, count, args.seed))]
    result: dict[str, Any] = {"editors": len(spots), "error": None}
    for index in range(len(spots)):
        os.environ[token_variable(index)] = f"editor-{index:02d}"
    mock = MockProcess(drip(EDITORS_DRIP))
    editors = [
        Editor(
            model,
            {
                **engine_options("llama-server", mock.base_url, apiKeyEnv=token_variable(i)),
                "completion": {"debounceMs": 0},
            },
        )
        for i in range(len(spots))
    ]
    uris = [
        (ROOT / "bench" / ".virtual" / f"editor{i:02d}" / s.source.name).as_uri()
        for i, s in enumerate(spots)
    ]
    docs = [typed_doc(uri, spot, i) for i, (uri, spot) in enumerate(zip(uris, spots))]
    starting = asyncio.Semaphore(4)  # 20 Python processes importing at once on 2 cores is slow

    async def start(editor: Editor) -> None:
        async with starting:
            await editor.start(args.ready_timeout)

    try:
        await asyncio.gather(*(start(e) for e in editors))
        log(f"{len(editors)} editors ready in {time.monotonic() - started:.1f} s; typing")
        typing_started = time.monotonic()
        bursts = await asyncio.gather(
            *(
                replay.run_burst(
                    editor,
                    spot,
                    uri,
                    replay.paces(args.seed, f"editor{i}", len(spot.span)),
                    args.answer_timeout,
                )
                for i, (editor, spot, uri) in enumerate(zip(editors, spots, uris))
            )
        )
        result["typingSeconds"] = round(time.monotonic() - typing_started, 1)
        result["bursts"] = bursts
        # Every answer has arrived: nothing may still run on the server (bounded wait).
        waited = time.monotonic()
        idle = await asyncio.to_thread(mock.wait_idle, args.idle_timeout)
        result["idleAfterSeconds"] = round(time.monotonic() - waited, 3)
        result["idle"] = idle
        result["inFlightAfter"] = mock.in_flight
        statuses = await asyncio.gather(*(e.status() for e in editors))
        result["clientMaxInFlight"] = [s.get("maxInFlight") for s in statuses]
        result["clientInFlightAfter"] = sum(s.get("inFlight") or 0 for s in statuses)
        result["streamsClosed"] = sum(s["server"]["streamsClosed"] for s in statuses)
        keystrokes = {k: t for e in editors for k, t in e.keystrokes.items()}
        records = {k: r for e in editors for k, r in e.records.items()}
    except Exception as error:  # noqa: BLE001
        log(f"editors: failed: {type(error).__name__}: {error}")
        result["error"] = f"{type(error).__name__}: {error}"
        keystrokes, records = {}, {}
    finally:
        await asyncio.gather(*(e.stop() for e in editors), return_exceptions=True)
        recorded = mock.record()
        mock.close()
        for index in range(len(spots)):
            os.environ.pop(token_variable(index), None)

    generations = recorded.generations
    located = {id(r): reader.locate(r, docs) for r in generations}
    by_token = {f"Bearer editor-{doc.editor:02d}": doc.uri for doc in docs}

    def bearer(request: RecordedRequest) -> str:
        return request.headers.get("authorization", "?")

    def document(request: RecordedRequest) -> str:
        """The document its prompt was made from; for a request whose body never arrived
        (cut off while it was sent), its editor's, by bearer token."""
        found = located.get(id(request))
        return found[0].uri if found else by_token.get(bearer(request), "?")

    unlocated = [r for r in generations if located.get(id(r)) is None]
    mismatched = sum(
        1
        for r in generations
        if (found := located.get(id(r))) is not None and by_token.get(bearer(r)) != found[0].uri
    )
    result.update(
        requests=len(generations),
        ends=ends(recorded),
        unended=sum(1 for r in generations if r.ended_at is None),
        maxInFlightPerDocument=recorded.max_in_flight_by(document),
        maxInFlightPerToken=recorded.max_in_flight_by(bearer),
        maxInFlightTotal=recorded.max_in_flight,
        unlocated=len(unlocated),
        unlocatedWithoutBody=sum(1 for r in unlocated if not r.raw_body),
        # The requests whose prompt matched no document (for the --json reader).
        unlocatedRequests=[
            {
                "path": r.path,
                "status": r.status,
                "end": r.end,
                "bodyBytes": len(r.raw_body),
                "contentLength": r.headers.get("content-length"),
                "prefixEnd": (reader.prefix(r.prompt) or "")[-200:],
            }
            for r in unlocated
        ],
        keyMismatches=mismatched,
        overlaps=overlaps(generations, document, located),
        # Every generation request the mock answered (for the --json reader).
        onMock=[
            {
                "document": document(r),
                "typed": found[1] if (found := located.get(id(r))) else None,
                "peerPort": r.peer_port,
                "end": r.end,
                "piecesSent": len(r.pieces_sent),
                "receivedAt": r.received_at,
                "endedAt": r.ended_at,
            }
            for r in generations
        ],
        closes=close_latencies(recorded, located, keystrokes, records),
        mockErrors=recorded.errors,
        seconds=round(time.monotonic() - started, 1),
    )
    return result


def overlaps(
    requests: list[RecordedRequest], key, located: dict[int, tuple[Typed, int] | None]
) -> list[dict[str, Any]]:
    """Each time a document's generation was still running on the mock when the document's
    next one arrived: for how long (ms), and how each went."""
    found: list[dict[str, Any]] = []
    by_key: dict[str, list[RecordedRequest]] = {}
    for request in requests:
        by_key.setdefault(key(request), []).append(request)

    def described(request: RecordedRequest) -> dict[str, Any]:
        where = located.get(id(request))
        return {
            "typed": where[1] if where else None,
            "end": request.end,
            "piecesSent": len(request.pieces_sent),
            "peerPort": request.peer_port,
            "receivedAt": request.received_at,
            "endedAt": request.ended_at,
        }

    for document, group in by_key.items():
        group.sort(key=lambda r: r.received_at)
        for earlier, later in itertools.pairwise(group):
            end = earlier.ended_at if earlier.ended_at is not None else float("inf")
            if end > later.received_at:
                found.append(
                    {
                        "document": document,
                        "ms": (end - later.received_at) * 1000,
                        "earlier": described(earlier),
                        "later": described(later),
                    }
                )
    return found


# -- figures ---------------------------------------------------------------------------------


def stats(values: list[float]) -> dict[str, Any]:
    return {
        "median": replay.percentile(values, 0.5),
        "p95": replay.percentile(values, 0.95),
        "max": max(values) if values else None,
        "n": len(values),
    }


def summarize(result: dict[str, Any], baseline: dict[str, Any] | None) -> dict[str, Any]:
    bursts = result["bursts"]
    keys = sum(b["keys"] for b in bursts)
    generated = [x for b in bursts for x in b["evaluatedPerGenerated"]]
    # Not figures: the mock's counts (scripted: every prompt token "evaluated"), and a server's
    # without debounce (a generation cut short reports nothing, and most are cut short).
    counted = "mock" not in result and (result["kind"] == "local" or result["phase"] == "typing")
    reported = [x for x in generated if x >= 0] if counted else []
    server = result.get("server") or {}
    local_answers = [b["finalText"] for b in baseline["bursts"]] if baseline else []
    same = sum(1 for b, a in zip(bursts, local_answers) if b["finalText"] == a)
    summary = {
        "bursts": len(bursts),
        "keystrokes": keys,
        "unanswered": sum(b["unanswered"] for b in bursts),
        "overheadMs": stats([x for b in bursts for x in b["overheadMs"]]),
        "keystrokeToSuggestionMs": stats(
            [b["keystrokeToSuggestionMs"] for b in bursts if b["keystrokeToSuggestionMs"]]
        ),
        "generationsPerBurst": stats([b["generationsStarted"] for b in bursts]),
        "stopLatencyMs": stats([x for b in bursts for x in b["stopLatencyMs"]]),
        "generationsCancelled": sum(b["generationsCancelled"] for b in bursts),
        "streamsClosed": server.get("streamsClosed"),
        "serverCancelledTasks": result.get("serverCancelledTasks"),
        # Prompt tokens the server (or the local engine) evaluated while typing, per key.
        "evaluatedPerKeystroke": (
            stats([b["evaluatedTokensBurst"] / b["keys"] for b in bursts]) if reported else None
        ),
        "evaluatedPerGenerated": stats(reported) if reported else None,
        "evaluatedFrom": "cl-lsp status" if reported else None,
        "generatedRequests": len(generated),
        "prompt": result.get("prompt"),
        "promptsAs": {k: server[k] for k in ("tokenPrompts", "textPrompts") if k in server},
        # The mock's answers are scripted, not the model's.
        "sameAnswerAsLocal": f"{same}/{len(bursts)}" if baseline and "mock" not in result else None,
        "outcomes": dict(Counter(o for b in bursts for o in b["outcomes"])),
    }
    logged = [b["serverLogEvaluated"] for b in bursts if "serverLogEvaluated" in b]
    if not reported and logged and len(logged) == len(bursts):
        summary["evaluatedPerKeystroke"] = stats(
            [sum(v[1:]) / b["keys"] for v, b in zip(logged, bursts)]
        )
        summary["evaluatedPerGenerated"] = stats([x for v in logged for x in v[1:]])
        summary["evaluatedFrom"] = "server log"
    if baseline is not None:
        base = summarize(baseline, None)["keystrokeToSuggestionMs"]["median"]
        mine = summary["keystrokeToSuggestionMs"]["median"]
        summary["keystrokeToSuggestionVsLocal"] = mine / base if mine and base else None
        base_overhead = summarize(baseline, None)["overheadMs"]["median"]
        overhead = summary["overheadMs"]["median"]
        summary["overheadMinusLocalMs"] = (
            overhead - base_overhead if overhead is not None and base_overhead is not None else None
        )
    if "mock" in result:
        summary["mockCloseMs"] = stats(result["mock"]["closes"]["ms"])
        summary["mockCloseOver50ms"] = result["mock"]["closes"]["over50ms"]
    return summary


def fmt(value: float | None, digits: int = 1) -> str:
    return replay.fmt(value, digits)


def print_part1(results: list[dict[str, Any]], summaries: list[dict[str, Any]]) -> None:
    for phase in ("typing", "no debounce"):
        rows = [(r, s) for r, s in zip(results, summaries) if r["phase"] == phase]
        if not rows:
            continue
        what = "cl-lsp's defaults, debounce 150 ms" if phase == "typing" else "debounceMs 0"
        print(f"\n== part 1, {phase} ({what})")
        header = (
            f"   {'engine':<28} {'prompt':<6} {'overhead p50/p95':>17} {'k2s p50':>8} "
            f"{'x local':>7} {'gens/burst':>10} {'closed':>6} {'stop p50/p95':>13} {'eval/key':>9} "
            f"{'eval/gen':>9} {'same':>5}"
        )
        print(header)
        for result, s in rows:
            if result["error"] and not result["bursts"]:
                print(f"   {result['name']:<28} ERROR: {result['error']}")
                continue
            o, g, st = s["overheadMs"], s["generationsPerBurst"], s["stopLatencyMs"]
            evk, evg = s["evaluatedPerKeystroke"], s["evaluatedPerGenerated"]
            closed = s["streamsClosed"] if s["streamsClosed"] is not None else "-"
            print(
                f"   {result['name']:<28} {s['prompt'] or '-':<6} "
                f"{fmt(o['median'], 2) + ' / ' + fmt(o['p95'], 2):>17} "
                f"{fmt(s['keystrokeToSuggestionMs']['median'], 0):>8} "
                f"{fmt(s.get('keystrokeToSuggestionVsLocal'), 2):>7} "
                f"{fmt(g['median'], 1) + ' (' + fmt(g['max'], 0) + ')':>10} {closed:>6} "
                f"{fmt(st['median']) + ' / ' + fmt(st['p95']):>13} "
                f"{fmt(evk['median'] if evk else None):>9} "
                f"{fmt(evg['median'] if evg else None, 0):>9} {s['sameAnswerAsLocal'] or '-':>5}"
            )
            if result["error"]:
                print(f"      ERROR: {result['error']}")
        for result, s in rows:
            if "mockCloseMs" in s:
                c = s["mockCloseMs"]
                closes = result["mock"]["closes"]
                print(
                    f"   {result['name']}: superseding keystroke sent -> mock saw the stream "
                    f"closed: p50 {fmt(c['median'])} ms, p95 {fmt(c['p95'])} ms, max "
                    f"{fmt(c['max'])} ms, n {c['n']}, over {CLOSE_TARGET_MS:.0f} ms: "
                    f"{s['mockCloseOver50ms']} (unlocated {closes['unlocated']}, closed by a stop "
                    f"rule, not superseded {closes['notSuperseded']}); mock ends "
                    f"{result['mock']['ends']}"
                )
        if phase == "no debounce":
            print(
                "   eval/key, eval/gen: local's, and llama-cpp-python's log; llama-server reports "
                "counts only for generations that end, and most are cut short here"
            )
        for result, s in rows:
            if s["evaluatedFrom"] == "server log":
                print(
                    f"   {result['name']}: eval/key and eval/gen from the server's log (no usage "
                    "in its stream); eval/gen counts every generation while typing"
                )
        for result, s in rows:
            print(
                f"   {result['name']}: overhead minus local's (medians) "
                f"{fmt(s.get('overheadMinusLocalMs'), 2)} ms; "
                f"{s['bursts']} bursts, {s['keystrokes']} keys, "
                f"{s['unanswered']} unanswered, {s['generatedRequests']} generated, "
                f"cancelled {s['generationsCancelled']}"
                + (
                    f" (llama-server's log: {s['serverCancelledTasks']} tasks cancelled)"
                    if s["serverCancelledTasks"] is not None
                    else ""
                )
                + f", prompts {s['promptsAs'] or '-'}, "
                f"outcomes {s['outcomes']}, {result['seconds']} s"
            )


def print_part2(result: dict[str, Any]) -> None:
    print(f"\n== part 2, {result['editors']} editors typing at once against one mock")
    if result.get("error"):
        print(f"   ERROR: {result['error']}")
    if "requests" not in result:
        return
    bursts = result.get("bursts") or []
    k2s = stats([b["keystrokeToSuggestionMs"] for b in bursts if b["keystrokeToSuggestionMs"]])
    closes = stats(result["closes"]["ms"])
    stop = stats([x for b in bursts for x in b["stopLatencyMs"]])
    ov = [o["ms"] for o in result["overlaps"]]
    lines = [
        (
            f"keystrokes {sum(b['keys'] for b in bursts)}, unanswered "
            f"{sum(b['unanswered'] for b in bursts)}, generation requests on the mock "
            f"{result['requests']}, typing {result.get('typingSeconds')} s"
        ),
        (
            f"most in flight for one document (by prompt marker): "
            f"{result['maxInFlightPerDocument']} (by bearer token: "
            f"{result['maxInFlightPerToken']}; cl-lsp's own maxInFlight per editor: "
            f"{sorted(set(result.get('clientMaxInFlight') or []))})"
        ),
        (
            f"overlaps of one document's generations on the mock: {len(ov)}"
            + (f" (longest {max(ov):.2f} ms)" if ov else "")
            + f", longer than {DETECTION_SLACK_MS:.0f} ms: "
            + str(sum(x > DETECTION_SLACK_MS for x in ov))
        ),
        f"most in flight in total: {result['maxInFlightTotal']}",
        (
            f"after the bursts: idle {result.get('idle')} after "
            f"{result.get('idleAfterSeconds')} s, in flight {result.get('inFlightAfter')} "
            f"(cl-lsp's count {result.get('clientInFlightAfter')}), never ended "
            f"{result['unended']}; ends {result['ends']}"
        ),
        (
            f"superseding keystroke sent -> mock saw the stream closed: p50 "
            f"{fmt(closes['median'])} ms, p95 {fmt(closes['p95'])} ms, max "
            f"{fmt(closes['max'])} ms, n {closes['n']}, over {CLOSE_TARGET_MS:.0f} ms: "
            f"{result['closes']['over50ms']}"
        ),
        (
            f"keystroke-to-suggestion p50 {fmt(k2s['median'], 0)} ms, p95 "
            f"{fmt(k2s['p95'], 0)} ms; streams closed (cl-lsp's count) "
            f"{result.get('streamsClosed')}"
        ),
        (
            f"cl-lsp's stop latency of superseded generations p50 {fmt(stop['median'])} ms, "
            f"p95 {fmt(stop['p95'])} ms (from the change reaching cl-lsp to the stream closed)"
        ),
        (
            f"requests whose prompt matched no document {result['unlocated']} (of them, cut off "
            f"before their body was sent: {result['unlocatedWithoutBody']}; keyed by bearer "
            f"token), prompt marker and bearer token disagree {result['keyMismatches']}, mock "
            f"errors {len(result['mockErrors'])}; {result['seconds']} s"
        ),
    ]
    for line in lines:
        print(f"   {line}")


def print_targets(
    results: list[dict[str, Any]], summaries: list[dict[str, Any]], editors: dict | None
) -> None:
    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT MET"

    print("\n== targets")
    for result, s in zip(results, summaries):
        if result["phase"] != "typing" or not result["bursts"]:
            continue
        o, g = s["overheadMs"], s["generationsPerBurst"]
        overhead_ok = o["p95"] is not None and o["p95"] < OVERHEAD_TARGET_MS
        print(
            f"   {result['name']}: overhead p95 {fmt(o['p95'], 2)} ms < "
            f"{OVERHEAD_TARGET_MS:.0f} ms {verdict(overhead_ok)}; generations per burst at most "
            f"{fmt(g['max'], 0)} <= {GENERATIONS_TARGET} "
            f"{verdict(g['max'] is not None and g['max'] <= GENERATIONS_TARGET)}"
        )
    for result, s in zip(results, summaries):
        if "mockCloseMs" in s and s["mockCloseMs"]["n"]:
            print(
                f"   {result['name']} / {result['phase']}: every superseded stream closed within "
                f"{CLOSE_TARGET_MS:.0f} ms of the keystroke "
                f"{verdict(s['mockCloseOver50ms'] == 0)} ({s['mockCloseOver50ms']} of "
                f"{s['mockCloseMs']['n']} over)"
            )
    if editors and "requests" in editors:
        print(
            f"   {editors['editors']} editors: at most one generation per document on the server "
            f"{verdict(editors['maxInFlightPerDocument'] <= 1)} by the mock's clock, "
            f"{verdict(all(o['ms'] <= DETECTION_SLACK_MS for o in editors['overlaps']))} allowing "
            f"{DETECTION_SLACK_MS:.0f} ms for it to see a hang-up; nothing running after the "
            f"bursts {verdict(bool(editors['idle']) and editors['inFlightAfter'] == 0)}"
        )


# -- main ------------------------------------------------------------------------------------


def plan_runs(engines: list[str]) -> list[Run]:
    runs: list[Run] = []
    for kind in engines:
        runs.append(Run(kind, "typing"))
        if kind == "llama-server":
            runs.append(Run(kind, "typing", cache_prompt=False))
    runs += [Run(kind, "no debounce") for kind in engines]
    return runs


async def main_async(args: argparse.Namespace) -> int:
    model = Path(args.model) if args.model else x_model()
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    for engine in engines:
        if engine not in ENGINES:
            raise SystemExit(f"unknown engine {engine!r}; known: {', '.join(ENGINES)}")
    if "llama-server" in engines and not llama_server_available():
        engines.remove("llama-server")
    paths = [Path(p) for p in args.files.split(",")] if args.files else replay.default_files()
    sources = [replay.read_source(p) for p in paths]
    spots = replay.make_bursts(sources, args.bursts, args.seed)
    reader = PromptReader(model)
    log_dir = Path(tempfile.mkdtemp(prefix="cl-lsp-bench-engines-"))
    info = replay.machine()
    gc.collect()
    gc.freeze()  # start-up objects are never collected again: shorter pauses in the client
    print(
        f"server engines bench: model {model.name} ({model.stat().st_size / 2**20:.0f} MiB), "
        f"{info['nproc']} CPUs ({info['cpu']}), llama-cpp-python {info['llamaCppPython']}"
    )
    print(
        f"{len(spots)} bursts per run ({sum(len(s.span) for s in spots)} keystrokes) from "
        f"{', '.join(s.name for s in sources)}; seed {args.seed}; server logs in {log_dir}"
    )
    print(f"load average at start: {info['loadavg']}")
    started = time.monotonic()
    results: list[dict[str, Any]] = []
    for run in plan_runs(engines):
        log(f"{run.name} / {run.phase}")
        results.append(await run_engine(run, model, spots, reader, log_dir, args))
    baselines = {r["phase"]: r for r in results if r["kind"] == "local" and not r["error"]}
    summaries = [summarize(r, baselines.get(r["phase"])) for r in results]
    editors = None
    if args.editors:
        log(f"{args.editors} editors")
        editors = await run_editors(args.editors, model, sources, reader, args)
    print_part1(results, summaries)
    if editors is not None:
        print_part2(editors)
    print_targets(results, summaries, editors)
    total = time.monotonic() - started
    end_load = replay.loadavg()
    print(f"\ntotal {total:.0f} s; load average at the end: {end_load}")
    if args.json:
        out = {
            "machine": info,
            "model": str(model),
            "args": vars(args),
            "spots": [s.label for s in spots],
            "runs": results,
            "summaries": summaries,
            "editors": editors,
            "seconds": round(total, 1),
            "loadavgEnd": end_load,
        }
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
        print(f"wrote {args.json}")
    failed = any(r["error"] for r in results) or bool(editors and editors.get("error"))
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Typing through each inference-server engine; twenty editors on one server."
    )
    parser.add_argument("--model", help=f"GGUF served to every engine (default: {X_MODEL.name})")
    parser.add_argument(
        "--engines", default=",".join(ENGINES), help=f"comma-separated, of: {', '.join(ENGINES)}"
    )
    parser.add_argument("--bursts", type=int, default=16, help="bursts per run (16)")
    parser.add_argument(
        "--editors", type=int, default=20, help="editors typing at once in part 2 (20; 0 skips)"
    )
    parser.add_argument("--files", help="comma-separated source files (typing_replay's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--answer-timeout", type=float, default=60, help="seconds to wait for an answer (60)"
    )
    parser.add_argument(
        "--ready-timeout", type=float, default=120, help="seconds to wait for cl-lsp (120)"
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=10,
        help="part 2: seconds to wait for the mock to be idle after the bursts (10)",
    )
    parser.add_argument("--json", help="write all figures and raw records here")
    args = parser.parse_args(argv)
    if args.bursts < 1:
        parser.error("--bursts must be at least 1")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
