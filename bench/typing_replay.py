"""Typing benchmark: replay realistic typing against the real server over stdio.

    python bench/typing_replay.py [--model PATH | --tiny] [--bursts 16] [--configs responsive,naive]
                           [--files A,B,...] [--seed 0] [--time-limit 720] [--json OUT]

For every configuration (one server each, started like an editor starts it:
``python -m cl_lsp --stdio --model PATH``, settings in ``initializationOptions``) the same
bursts are replayed. A burst: at a deterministic spot inside a function body of a real source
file (stdlib Python, JavaScript from an npm package), the rest of the line (10-40 characters)
is deleted and the document opened; one inline-completion request is made at the cursor and
awaited (the user arrives at the line); then the deleted text is typed back one character at a
time, 30-120 ms apart (seeded), each keystroke sending ``didChange`` and
``textDocument/inlineCompletion`` without waiting for earlier answers, like an editor.

Figures, per configuration (median and p95), from client timings, the engine's counters and
the server's per-request records (``cl-lsp.status``):

* evaluated tokens per generated request (headline): prompt tokens the model had to run
  (not in the KV cache) for each request answered by the model while typing;
* keystroke-to-suggestion: from the last keystroke of a burst to its answer;
* generations started per burst (while typing, after the first request);
* stop latency of superseded generations: from the newer request to the engine stopping;
* server overhead (``overheadMs``: request time minus debounce wait minus model time) on a
  20,000-line file, a few keystrokes each awaited;
* peak RSS (``VmHWM`` of the server process) against the model file size; and separately
  one start each with ``model.useMmap`` true and false (load + one completion).

Configurations: ``responsive`` is cl-lsp's defaults (auto SPM/PSM, stable prefix window,
150 ms debounce, typed-ahead + LRU reuse); ``naive`` is a baseline without them (PSM, a fresh
sliding window per request, no debounce, no reuse). A ratio table compares them.

Without ``--model`` the 7B-shaped random-weight Q4_K_M model of ``bench/make_model.py`` is
used (built on first use, ~4 GB). ``--tiny`` builds and uses a tiny random-weight Code Llama
GGUF instead (for trying the bench out: a minute or two). Only loopback is used, except an
optional ``npm pack lodash`` when no JavaScript package is found on the machine.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import concurrent.futures
import contextlib
import importlib.util
import json
import math
import os
import platform
import random
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CACHE_DIR = ROOT / "bench" / ".cache"
MODELS_DIR = ROOT / "bench" / ".models"
TINY_MODEL = MODELS_DIR / "tiny-codellama.F32.gguf"

CONFIGS: dict[str, dict[str, Any]] = {
    "responsive": {"promptFormat": "auto", "stableWindow": True, "debounceMs": 150, "reuse": True},
    "naive": {"promptFormat": "psm", "stableWindow": False, "debounceMs": 0, "reuse": False},
    # responsive without repository context (context.enabled false): the cost of the block
    "nocontext": {
        "promptFormat": "auto",
        "stableWindow": True,
        "debounceMs": 150,
        "reuse": True,
        "context": {"enabled": False},
    },
    # responsive with the debounce fitted to the typing pace (completion.adaptiveDebounce)
    "adaptive": {
        "promptFormat": "auto",
        "stableWindow": True,
        "debounceMs": 150,
        "adaptiveDebounce": True,
        "reuse": True,
    },
}
PY_FILES = ("textwrap.py", "shlex.py", "fractions.py", "dataclasses.py")
# JavaScript shipped with npm itself (present wherever npm is), relative to npm's global root.
JS_FILES = ("npm/node_modules/semver/classes/range.js", "npm/node_modules/ini/lib/ini.js")
LODASH = "lodash@4.17.21"
LODASH_FILES = ("debounce.js", "template.js")
BIG_FILE_LINES = 20_000
SPAN = (10, 40)  # characters deleted and typed back
PACE_MS = (30, 120)  # between keystrokes
# Outcomes of requests that ran to an answer (not cut short by a newer request).
ANSWERED = ("generated", "typed_ahead", "cached", "none")
LANGUAGES = {
    ".py": "python",
    ".js": "javascript",
    ".mjs": "javascript",
    ".cjs": "javascript",
    ".ts": "typescript",
}


def log(message: str) -> None:
    print(f"[typing] {message}", file=sys.stderr, flush=True)


# -- workload --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    path: Path
    name: str  # short label
    text: str
    language: str | None


@dataclass(frozen=True)
class Spot:
    """A cursor position and the text after it (to the end of the line) to type back."""

    source: Source
    line: int  # 0-based
    column: int
    span: str

    @property
    def label(self) -> str:
        return f"{self.source.name}:{self.line + 1}:{self.column}"

    def document(self) -> str:
        """The source with the span deleted."""
        lines = self.source.text.split("\n")
        lines[self.line] = lines[self.line][: self.column]
        return "\n".join(lines)


def read_source(path: Path, name: str | None = None) -> Source:
    text = path.read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n")
    return Source(path, name or path.name, text, LANGUAGES.get(path.suffix))


def python_body_lines(text: str) -> set[int]:
    """0-based lines of statements inside function bodies, outside multi-line strings."""
    tree = ast.parse(text)
    body: set[int] = set()
    strings: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            statements = node.body
            if (
                statements
                and isinstance(statements[0], ast.Expr)
                and isinstance(statements[0].value, ast.Constant)
                and isinstance(statements[0].value.value, str)
            ):
                statements = statements[1:]  # docstring
            for statement in statements:
                body.update(range(statement.lineno - 1, (statement.end_lineno or 0)))
        elif isinstance(node, (ast.Constant, ast.JoinedStr)) and node.end_lineno != node.lineno:
            strings.update(range(node.lineno - 1, node.end_lineno or node.lineno))
    return body - strings


def js_body_lines(text: str) -> set[int]:
    """0-based lines strictly inside function bodies (tree-sitter), outside multi-line
    comments and template strings."""
    from tree_sitter_language_pack import get_parser

    tree = get_parser("javascript").parse(text.encode("utf-8"))
    body: set[int] = set()
    excluded: set[int] = set()
    functions = {
        "function_declaration",
        "function_expression",
        "function",
        "arrow_function",
        "method_definition",
        "generator_function_declaration",
        "generator_function",
    }
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.type in functions:
            block = node.child_by_field_name("body")
            if block is not None and block.type == "statement_block":
                body.update(range(block.start_point[0] + 1, block.end_point[0]))
        elif node.type in ("comment", "template_string", "string") and (
            node.end_point[0] > node.start_point[0]
        ):
            excluded.update(range(node.start_point[0], node.end_point[0] + 1))
    return body - excluded


def indented_lines(text: str) -> set[int]:
    return {n for n, line in enumerate(text.split("\n")) if line[:1] in (" ", "\t")}


def body_lines(source: Source) -> set[int]:
    try:
        if source.language == "python":
            return python_body_lines(source.text)
        if source.language == "javascript":
            return js_body_lines(source.text)
    except (SyntaxError, ImportError, ValueError) as error:
        log(f"{source.name}: {error}; using indented lines")
    return indented_lines(source.text)


def is_word(char: str) -> bool:
    return char.isalnum() or char == "_"


def candidate_columns(line: str) -> list[int]:
    """Cursor columns whose rest of line is 10-40 characters, starting at a token boundary."""
    if not line.isascii() or line != line.rstrip():
        return []
    stripped = line.lstrip()
    if not stripped or stripped.startswith(("#", "//", "/*", "*")):
        return []
    indent = len(line) - len(stripped)
    low, high = SPAN
    return [
        col
        for col in range(max(indent, len(line) - high), len(line) - low + 1)
        if col == indent or not is_word(line[col - 1])
    ]


def pick_spots(
    source: Source, count: int, rng: random.Random, lines: set[int] | None = None
) -> list[Spot]:
    text_lines = source.text.split("\n")
    eligible = sorted(
        n
        for n in (body_lines(source) if lines is None else lines)
        if n < len(text_lines) and candidate_columns(text_lines[n])
    )
    chosen = sorted(rng.sample(eligible, min(count, len(eligible))))
    spots = []
    for n in chosen:
        column = rng.choice(candidate_columns(text_lines[n]))
        spots.append(Spot(source, n, column, text_lines[n][column:]))
    return spots


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def npm_root() -> Path | None:
    if shutil.which("npm") is None:
        return None
    try:
        out = subprocess.run(
            ["npm", "root", "-g"], capture_output=True, text=True, timeout=60, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(out) if out else None


def lodash_files() -> list[Path]:
    """lodash from `npm pack` into bench/.cache (the only network use, and only if no
    JavaScript package is on the machine)."""
    package = CACHE_DIR / "lodash" / "package"
    if not package.is_dir():
        if shutil.which("npm") is None:
            return []
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        (CACHE_DIR / ".gitignore").write_text("*\n")
        log(f"no JavaScript package found on this machine: npm pack {LODASH} into {CACHE_DIR}")
        try:
            out = subprocess.run(
                ["npm", "pack", LODASH, "--silent"],
                cwd=CACHE_DIR,
                capture_output=True,
                text=True,
                timeout=300,
                check=True,
            )
        except (OSError, subprocess.SubprocessError) as error:
            log(f"npm pack failed ({error}); skipping JavaScript")
            return []
        tarball = CACHE_DIR / out.stdout.strip().splitlines()[-1]
        with tarfile.open(tarball) as archive:
            try:
                archive.extractall(CACHE_DIR / "lodash", filter="data")
            except TypeError:  # Python without extraction filters
                archive.extractall(CACHE_DIR / "lodash")
    return [package / name for name in LODASH_FILES if (package / name).is_file()]


def default_files() -> list[Path]:
    files = [stdlib_dir() / name for name in PY_FILES]
    root = npm_root()
    js = [root / rel for rel in JS_FILES if (root / rel).is_file()] if root else []
    if not js:
        js = lodash_files()
    if not js:
        log("npm is not available and no JavaScript package was found: Python files only")
    return [f for f in files if f.is_file()] + js


def make_bursts(sources: list[Source], count: int, seed: int) -> list[Spot]:
    """`count` spots, round-robin over the files, deterministic for a seed."""
    per_file = math.ceil(count / len(sources))
    picked = [pick_spots(s, per_file, random.Random(f"{seed}:{s.name}")) for s in sources]
    spots: list[Spot] = []
    for index in range(per_file):
        spots.extend(p[index] for p in picked if index < len(p))
    return spots[:count]


def big_file(seed: int) -> tuple[Source, Spot]:
    """A 20,000-line Python file (stdlib modules concatenated, sorted by name) and a spot in
    a function body near its middle."""
    parts: list[tuple[int, Path, str]] = []
    total = 0
    for path in sorted(stdlib_dir().glob("*.py")):
        if total >= BIG_FILE_LINES:
            break
        text = path.read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n")
        text = text if text.endswith("\n") else text + "\n"
        parts.append((total, path, text))
        total += text.count("\n")
    lines = "".join(text for _, _, text in parts).split("\n")[:BIG_FILE_LINES]
    source = Source(
        Path("big.py"), f"stdlib-{BIG_FILE_LINES}-lines.py", "\n".join(lines) + "\n", "python"
    )
    middle = BIG_FILE_LINES // 2
    for start, _path, text in parts:
        if start <= middle < start + text.count("\n"):
            try:
                local = python_body_lines(text)
            except SyntaxError:
                local = indented_lines(text)
            shifted = {start + n for n in local if middle <= start + n < BIG_FILE_LINES}
            spots = pick_spots(source, 1, random.Random(f"{seed}:big"), lines=shifted)
            if spots:
                return source, spots[0]
    spots = pick_spots(
        source,
        1,
        random.Random(f"{seed}:big"),
        lines={n for n in indented_lines(source.text) if n >= middle},
    )
    return source, spots[0]


def paces(seed: int, key: str, count: int) -> list[float]:
    rng = random.Random(f"{seed}:pace:{key}")
    return [rng.uniform(*PACE_MS) / 1000 for _ in range(count)]


# -- driving the server ----------------------------------------------------------------------


def server_env() -> dict[str, str]:
    """No model from the user's setup, no way off the machine (like tests/conftest.py)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "CL_LSP"))}
    env.update(
        HF_HUB_OFFLINE="1",
        HF_ENDPOINT="http://127.0.0.1:9",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HOME=os.path.join(tempfile.gettempdir(), "cl-lsp-bench-hf-home"),
    )
    return env


class Pending:
    """A request in flight: its future, when it was sent and when its answer arrived."""

    def __init__(self, sent: concurrent.futures.Future) -> None:
        self.sent = time.perf_counter()
        self.arrived: float | None = None
        sent.add_done_callback(self._arrived)  # runs as the answer is read
        self.future = asyncio.wrap_future(sent)

    def _arrived(self, _: concurrent.futures.Future) -> None:
        self.arrived = time.perf_counter()

    def done(self) -> bool:
        return self.future.done()

    def failed(self) -> bool:
        return (
            not self.future.done() or self.future.cancelled() or self.future.exception() is not None
        )

    def text(self) -> str:
        if self.failed():
            return ""
        result = self.future.result()
        items = getattr(result, "items", result) or []
        return items[0].insert_text if items else ""

    def ms(self) -> float | None:
        return None if self.arrived is None or self.failed() else (self.arrived - self.sent) * 1000


class Server:
    """One `python -m cl_lsp --stdio` process and a pytest-lsp client talking to it."""

    def __init__(
        self,
        model: Path,
        options: dict[str, Any],
        root: Path = ROOT,
        workspace: Path | None = None,
    ) -> None:
        self.model, self.options = model, options
        self.root = root  # the checkout whose cl_lsp runs (another one: a baseline)
        self.workspace = workspace or root  # the editor's workspace folder
        self.client: Any = None
        self.pid: int | None = None
        self.versions: dict[str, int] = {}

    async def start(self, ready_timeout: float) -> dict[str, Any]:
        from lsprotocol import types
        from pytest_lsp.client import make_test_lsp_client

        self.client = make_test_lsp_client()
        command = [sys.executable, "-m", "cl_lsp", "--stdio", "--model", str(self.model)]
        # cwd: `-m` puts the working directory first on the server's sys.path.
        await self.client.start_io(*command, env=server_env(), cwd=str(self.root))
        capabilities = types.ClientCapabilities(
            window=types.WindowClientCapabilities(work_done_progress=False),
            text_document=types.TextDocumentClientCapabilities(
                inline_completion=types.InlineCompletionClientCapabilities(),
                completion=types.CompletionClientCapabilities(),
                synchronization=types.TextDocumentSyncClientCapabilities(),
            ),
        )
        await asyncio.wait_for(
            self.client.initialize_session(
                types.InitializeParams(
                    capabilities=capabilities,
                    initialization_options=self.options,
                    root_uri=self.workspace.as_uri(),
                )
            ),
            60,
        )
        deadline = time.monotonic() + ready_timeout
        while True:
            current = await self.status()
            if current["state"] in ("ready", "failed", "empty") and not current["loading"]:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not load the model in {ready_timeout} s")
            await asyncio.sleep(0.05)
        if current["state"] != "ready":
            raise RuntimeError(f"the server could not load the model: {current.get('error')}")
        self.pid = current["pid"]
        return current

    async def stop(self) -> None:
        if self.client is None:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.shutdown_session(), 30)
        with contextlib.suppress(Exception):
            await self.client.stop()

    async def status(self) -> dict[str, Any]:
        from lsprotocol import types

        return await asyncio.wait_for(
            self.client.workspace_execute_command_async(
                types.ExecuteCommandParams(command="cl-lsp.status")
            ),
            60,
        )

    def open(self, uri: str, text: str, language: str | None) -> None:
        from lsprotocol import types

        self.versions[uri] = 1
        self.client.text_document_did_open(
            types.DidOpenTextDocumentParams(
                text_document=types.TextDocumentItem(
                    uri=uri, language_id=language or "plaintext", version=1, text=text
                )
            )
        )

    def close(self, uri: str) -> None:
        from lsprotocol import types

        self.client.text_document_did_close(
            types.DidCloseTextDocumentParams(text_document=types.TextDocumentIdentifier(uri=uri))
        )

    def insert(self, uri: str, line: int, column: int, text: str) -> None:
        from lsprotocol import types

        self.versions[uri] += 1
        position = types.Position(line=line, character=column)
        self.client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(
                    uri=uri, version=self.versions[uri]
                ),
                content_changes=[
                    types.TextDocumentContentChangePartial(
                        range=types.Range(start=position, end=position), text=text
                    )
                ],
            )
        )

    def request(self, uri: str, line: int, column: int) -> Pending:
        """Send an inline-completion request now (not when a task gets to run)."""
        from lsprotocol import types

        params = types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=types.Position(line=line, character=column),
            context=types.InlineCompletionContext(
                trigger_kind=types.InlineCompletionTriggerKind.Automatic
            ),
        )
        # pygls's send_request writes at once (pytest-lsp's send_request_async is a coroutine,
        # which would send only when a task gets to run it).
        return Pending(self.client.protocol.send_request("textDocument/inlineCompletion", params))

    def memory(self) -> dict[str, int]:
        """VmHWM, VmRSS, RssAnon, RssFile of the server process, in bytes."""
        found: dict[str, int] = {}
        with contextlib.suppress(OSError):
            for row in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                key, _, value = row.partition(":")
                if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                    found[key] = int(value.split()[0]) * 1024
        return found


async def settle(requests: list[Pending], timeout: float) -> int:
    """Wait for all answers (at most `timeout`); return how many are unanswered or failed."""
    waiting = [r.future for r in requests if not r.done()]
    if waiting:
        await asyncio.wait(waiting, timeout=timeout)
    await asyncio.sleep(0)  # let the arrival callbacks run
    return sum(1 for r in requests if r.failed())


def counters_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    return {key: after["counters"][key] - before["counters"][key] for key in after["counters"]}


def records_for(current: dict[str, Any], uri: str) -> list[dict[str, Any]]:
    return [r for r in current["recent"] if r["uri"] == uri]


async def run_burst(
    server: Server, spot: Spot, uri: str, pace: list[float], answer_timeout: float
) -> dict[str, Any]:
    server.open(uri, spot.document(), spot.source.language)
    first = server.request(uri, spot.line, spot.column)
    first_unanswered = await settle([first], answer_timeout)
    before = await server.status()
    loop = asyncio.get_running_loop()
    futures: list[Pending] = []
    next_key = loop.time()
    for index, char in enumerate(spot.span):
        if index:
            next_key += pace[index - 1]
            await asyncio.sleep(max(0.0, next_key - loop.time()))
        server.insert(uri, spot.line, spot.column + index, char)
        futures.append(server.request(uri, spot.line, spot.column + index + 1))
    typing_s = time.perf_counter() - futures[0].sent
    unanswered = await settle(futures, answer_timeout)
    after = await server.status()
    server.close(uri)
    last = futures[-1]
    records = records_for(after, uri)
    typed = [r for r in records if r["version"] > 1]
    by_version = {r["version"]: r for r in typed}
    outside = [
        futures[v - 2].ms() - r["totalMs"]
        for v, r in by_version.items()
        if 0 <= v - 2 < len(futures) and futures[v - 2].ms() is not None
    ]
    first_record = next((r for r in records if r["version"] == 1), None)
    delta = counters_delta(before, after)
    last_record = typed[-1] if typed else None
    return {
        "spot": spot.label,
        "keys": len(spot.span),
        "typingSeconds": round(typing_s, 3),
        "firstRequestMs": first.ms(),
        "firstRecord": first_record,
        "keystrokeToSuggestionMs": last.ms(),
        "unanswered": unanswered + first_unanswered,
        "recordsSeen": len(typed),
        "finalOutcome": last_record["outcome"] if last_record else None,
        "finalNonEmpty": bool(last.text()),
        "generationsStarted": delta["generationsStarted"],
        "generationsCancelled": delta["generationsCancelled"],
        "evaluatedTokensBurst": delta["evaluatedTokens"],
        "evaluatedPerGenerated": [
            r["evaluatedTokens"] for r in typed if r["outcome"] == "generated"
        ],
        "stopLatencyMs": [
            r["stopLatencyMs"]
            for r in typed
            if r["outcome"] == "superseded" and r["stopLatencyMs"] is not None
        ],
        "overheadMs": [r["overheadMs"] for r in typed if r["outcome"] in ANSWERED],
        "outsideRequestMs": outside,
        "outcomes": [r["outcome"] for r in typed],
        "layouts": [r["layout"] for r in typed if r["layout"]],
    }


async def run_overhead(
    server: Server, source: Source, spot: Spot, keys: int, seed: int, answer_timeout: float
) -> dict[str, Any]:
    """A few keystrokes on the 20,000-line file, each answer awaited, at a typing pace."""
    uri = (ROOT / "bench" / ".virtual" / "big" / source.name).as_uri()
    server.open(uri, spot.document(), "python")
    futures = [server.request(uri, spot.line, spot.column)]
    unanswered = await settle(futures, answer_timeout)
    pace = paces(seed, "big", keys)
    for index, char in enumerate(spot.span[:keys]):
        await asyncio.sleep(pace[index])
        server.insert(uri, spot.line, spot.column + index, char)
        futures.append(server.request(uri, spot.line, spot.column + index + 1))
        unanswered += await settle(futures[-1:], answer_timeout)
    current = await server.status()
    server.close(uri)
    records = records_for(current, uri)
    by_version = {r["version"]: r for r in records}
    outside = []
    for version, future in enumerate(futures, start=1):
        record = by_version.get(version)
        if record and future.ms() is not None:
            outside.append(future.ms() - record["totalMs"])
    return {
        "spot": spot.label,
        "overheadMs": [r["overheadMs"] for r in records],
        "outcomes": [r["outcome"] for r in records],
        "outsideRequestMs": outside,  # client round trip minus the server's request time
        "unanswered": unanswered,
    }


def expected_seconds(
    bursts: list[dict[str, Any]], durations: list[float], big: bool, args: argparse.Namespace
) -> float:
    """Time another burst and then the large-file test would take, judging by the bursts so
    far (the large-file test: one request at a new spot, then its keystrokes one by one)."""
    if not durations:
        return 0.0
    needed = sum(durations) / len(durations)
    if big:
        first = percentile([b["firstRequestMs"] or 0 for b in bursts], 0.5) or 0
        k2s = percentile([b["keystrokeToSuggestionMs"] or 0 for b in bursts], 0.5) or 0
        needed += (first + args.overhead_keys * (k2s + sum(PACE_MS) / 2)) / 1000
    return needed


async def run_config(
    name: str,
    completion: dict[str, Any],
    model: Path,
    spots: list[Spot],
    big: tuple[Source, Spot] | None,
    args: argparse.Namespace,
) -> dict[str, Any]:
    completion = dict(completion)
    options = {"completion": completion}
    if "context" in completion:
        options["context"] = completion.pop("context")
    started = time.monotonic()
    server = Server(model, options, workspace=args.workspace)
    result: dict[str, Any] = {"name": name, "options": options, "bursts": [], "error": None}
    try:
        loaded = await server.start(args.ready_timeout)
        result["loadSeconds"] = round(time.monotonic() - started, 2)
        log(
            f"{name}: model loaded in {result['loadSeconds']} s (pid {server.pid}, "
            f"n_ctx {loaded.get('nCtx')})"
        )
        durations: list[float] = []
        for index, spot in enumerate(spots):
            elapsed = time.monotonic() - started
            needed = expected_seconds(result["bursts"], durations, big is not None, args)
            if index and elapsed + needed > args.time_limit:
                log(
                    f"{name}: stopping after {index} bursts: {elapsed:.0f} s spent, another "
                    f"burst and the large-file test would need ~{needed:.0f} s "
                    f"(--time-limit {args.time_limit:.0f})"
                )
                result["timeLimited"] = True
                break
            uri = (ROOT / "bench" / ".virtual" / f"b{index:03d}" / spot.source.name).as_uri()
            if args.workspace and spot.source.path.resolve().is_relative_to(args.workspace):
                uri = spot.source.path.resolve().as_uri()  # the real file: indexed, then typed
            burst_started = time.monotonic()
            burst = await run_burst(
                server, spot, uri, paces(args.seed, str(index), len(spot.span)), args.answer_timeout
            )
            durations.append(time.monotonic() - burst_started)
            result["bursts"].append(burst)
            k2s = burst["keystrokeToSuggestionMs"]
            log(
                f"{name} burst {index + 1}/{len(spots)} {spot.label} ({burst['keys']} keys): "
                f"first {fmt(burst['firstRequestMs'])} ms, keystroke-to-suggestion "
                f"{fmt(k2s)} ms, {burst['generationsStarted']} generations, final "
                f"{burst['finalOutcome']}, evaluated {burst['evaluatedPerGenerated']}"
            )
        if big is not None:
            result["overhead"] = await run_overhead(
                server, *big, args.overhead_keys, args.seed, args.answer_timeout
            )
            log(
                f"{name}: overhead on the {BIG_FILE_LINES}-line file: "
                f"{[round(x, 1) for x in result['overhead']['overheadMs']]} ms"
            )
        result["memory"] = server.memory()
    except Exception as error:  # noqa: BLE001  (keep what was measured; report the failure)
        log(f"{name}: failed: {type(error).__name__}: {error}")
        result["error"] = f"{type(error).__name__}: {error}"
        if server.pid:
            result["memory"] = server.memory()
    finally:
        await server.stop()
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


async def run_memory(model: Path, mmap: bool, args: argparse.Namespace) -> dict[str, Any]:
    """Load with model.useMmap = `mmap`, make one completion, read the peak RSS."""
    server = Server(model, {"model": {"useMmap": mmap}, "completion": {"debounceMs": 0}})
    started = time.monotonic()
    try:
        await server.start(args.ready_timeout)
        load = time.monotonic() - started
        uri = (ROOT / "bench" / ".virtual" / "mem.py").as_uri()
        server.open(uri, "def fibonacci(n):\n    \n", "python")
        unanswered = await settle([server.request(uri, 1, 4)], args.answer_timeout)
        memory = server.memory()
        return {"useMmap": mmap, "loadSeconds": round(load, 2), "unanswered": unanswered, **memory}
    except Exception as error:  # noqa: BLE001  (report it in the table)
        log(f"useMmap={mmap}: failed: {type(error).__name__}: {error}")
        return {
            "useMmap": mmap,
            "error": f"{type(error).__name__}: {error}",
            **(server.memory() if server.pid else {}),
        }
    finally:
        await server.stop()


# -- figures ---------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (like numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}"


def share(flags: list[bool]) -> float | None:
    """The share of true flags (None for none)."""
    return sum(flags) / len(flags) if flags else None


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


METRICS = (
    ("evaluated", "evaluated tokens / generated request", 0),
    ("k2s", "keystroke-to-suggestion (ms)", 0),
    ("generations", "generations started / burst", 1),
    ("stop", "superseded stop latency (ms)", 1),
    ("overhead", f"server overhead, {BIG_FILE_LINES // 1000}k-line file (ms)", 2),
    ("first", "first request at a new spot (ms)", 0),
    ("evaluatedBurst", "evaluated tokens / burst (all generations)", 0),
    ("typingOverhead", "server overhead, typing (ms)", 2),
    ("typingOutside", "round trip minus server time, typing (ms)", 1),
    ("outside", f"round trip minus server time, {BIG_FILE_LINES // 1000}k-line file (ms)", 1),
)
HEADLINE = 5  # METRICS[:HEADLINE] are the brief's figures; the rest are extra


def summarize(result: dict[str, Any], model_bytes: int) -> dict[str, Any]:
    bursts = result["bursts"]
    samples: dict[str, list[float]] = {
        "evaluated": [x for b in bursts for x in b["evaluatedPerGenerated"]],
        "k2s": [
            b["keystrokeToSuggestionMs"] for b in bursts if b["keystrokeToSuggestionMs"] is not None
        ],
        "generations": [b["generationsStarted"] for b in bursts],
        "stop": [x for b in bursts for x in b["stopLatencyMs"]],
        "overhead": list(result.get("overhead", {}).get("overheadMs", [])),
        "first": [b["firstRequestMs"] for b in bursts if b["firstRequestMs"] is not None],
        "evaluatedBurst": [b["evaluatedTokensBurst"] for b in bursts],
        "typingOverhead": [x for b in bursts for x in b["overheadMs"]],
        "typingOutside": [x for b in bursts for x in b["outsideRequestMs"]],
        "outside": list(result.get("overhead", {}).get("outsideRequestMs", [])),
    }
    stats = {
        key: {"median": percentile(values, 0.5), "p95": percentile(values, 0.95), "n": len(values)}
        for key, values in samples.items()
    }
    outcomes: dict[str, int] = {}
    layouts: dict[str, int] = {}
    for burst in bursts:
        for outcome in burst["outcomes"]:
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
        for layout in burst["layouts"]:
            layouts[layout] = layouts.get(layout, 0) + 1
    memory = result.get("memory", {})
    return {
        "stats": stats,
        "bursts": len(bursts),
        "keystrokes": sum(b["keys"] for b in bursts),
        "unanswered": sum(b["unanswered"] for b in bursts)
        + result.get("overhead", {}).get("unanswered", 0),
        "recordsMissing": sum(b["keys"] - b["recordsSeen"] for b in bursts),
        "finalGenerated": sum(1 for b in bursts if b["finalOutcome"] == "generated"),
        "finalNonEmpty": sum(1 for b in bursts if b["finalNonEmpty"]),
        "burstsOver2Generations": sum(1 for b in bursts if b["generationsStarted"] > 2),
        "outcomes": outcomes,
        "layouts": layouts,
        "peakRssBytes": memory.get("VmHWM"),
        "modelBytes": model_bytes,
    }


def mb(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.0f} MB"


def print_config(result: dict[str, Any], summary: dict[str, Any]) -> None:
    print(f"\n== {result['name']}  {json.dumps(result['options']['completion'])}")
    limited = " (stopped by --time-limit)" if result.get("timeLimited") else ""
    print(
        f"   {summary['bursts']} bursts{limited}, {summary['keystrokes']} keystrokes, "
        f"{summary['unanswered']} unanswered, {result['seconds']} s"
        + (f"  ERROR: {result['error']}" if result["error"] else "")
    )
    print(f"   {'metric':<52} {'median':>9} {'p95':>9} {'n':>5}")
    for index, (key, label, digits) in enumerate(METRICS):
        if index == HEADLINE:
            peak, size = summary["peakRssBytes"], summary["modelBytes"]
            ratio = f" ({peak / size:.2f}x)" if peak and size else ""
            print(f"   {'peak RSS (VmHWM) vs model file':<52} {mb(peak)} / {mb(size)}{ratio}")
            print("   -- more")
        s = summary["stats"][key]
        print(
            f"   {label:<52} {fmt(s['median'], digits):>9} {fmt(s['p95'], digits):>9} {s['n']:>5}"
        )
    print(
        f"   final answer: generated {summary['finalGenerated']}/{summary['bursts']}, "
        f"non-empty {summary['finalNonEmpty']}/{summary['bursts']}; bursts with more than "
        f"2 generations: {summary['burstsOver2Generations']}"
    )
    print(f"   outcomes {summary['outcomes']}  layouts {summary['layouts']}")


def print_ratios(summaries: dict[str, dict[str, Any]], base: str, other: str) -> dict:
    ratios: dict[str, float | None] = {}
    print(f"\n== {other} / {base} (ratio of medians; above 1: {base} is better)")
    for key, label, _ in METRICS:
        a = summaries[base]["stats"][key]["median"]
        b = summaries[other]["stats"][key]["median"]
        ratio = None if a is None or b is None else (b / a if a else (math.inf if b else 1.0))
        ratios[key] = ratio
        print(f"   {label:<52} {fmt(ratio, 1) + 'x' if ratio is not None else '-':>9}")
    a, b = summaries[base]["peakRssBytes"], summaries[other]["peakRssBytes"]
    ratios["peakRss"] = b / a if a and b else None
    print(f"   {'peak RSS (VmHWM)':<52} {fmt(ratios['peakRss'], 2) + 'x':>9}")
    return ratios


def print_memory(rows: list[dict[str, Any]], model_bytes: int) -> None:
    print(f"\n== peak memory, load + one completion (model file {mb(model_bytes)})")
    print(
        f"   {'useMmap':<8} {'VmHWM':>9} {'VmHWM/file':>11} {'RssAnon':>9} {'RssFile':>9} "
        f"{'load s':>7}"
    )
    for row in rows:
        if "error" in row:
            print(f"   {str(row['useMmap']).lower():<8} ERROR: {row['error']}")
            continue
        hwm = row.get("VmHWM")
        print(
            f"   {str(row['useMmap']).lower():<8} {mb(hwm):>9} "
            f"{(hwm / model_bytes if hwm else 0):>10.2f}x {mb(row.get('RssAnon')):>9} "
            f"{mb(row.get('RssFile')):>9} {row['loadSeconds']:>7}"
        )


def loadavg() -> list[float]:
    with contextlib.suppress(OSError, ValueError):
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    return []


def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for row in Path("/proc/cpuinfo").read_text().splitlines():
            if row.startswith("model name"):
                cpu = row.split(":", 1)[1].strip()
                break
    ram = 0
    with contextlib.suppress(OSError, ValueError):
        for row in Path("/proc/meminfo").read_text().splitlines():
            if row.startswith("MemTotal:"):
                ram = int(row.split()[1]) * 1024
    import llama_cpp

    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "ramBytes": ram,
        "loadavg": loadavg(),
        "python": platform.python_version(),
        "llamaCppPython": llama_cpp.__version__,
    }


# -- main ------------------------------------------------------------------------------------


def tiny_model() -> Path:
    if not TINY_MODEL.is_file():
        sys.path.insert(0, str(ROOT / "tests"))
        import assets

        log(f"building {TINY_MODEL}")
        assets.build_codellama_gguf(TINY_MODEL, vocab=assets.vocab_path(), forced_token=None)
    return TINY_MODEL


def bench_model() -> Path:
    """bench/make_model.py's 7B-shaped model (built on first use)."""
    spec = importlib.util.spec_from_file_location("make_model", ROOT / "bench" / "make_model.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return Path(module.ensure_model())


async def main_async(args: argparse.Namespace) -> int:
    if args.model:
        model = Path(args.model)
    elif args.tiny:
        model = tiny_model()
    else:
        model = bench_model()
    if not model.is_file():
        raise SystemExit(f"error: no model file at {model}")
    model_bytes = model.stat().st_size
    paths = [Path(p) for p in args.files.split(",")] if args.files else default_files()
    sources = [read_source(p) for p in paths]
    spots = make_bursts(sources, args.bursts, args.seed)
    big = None if args.no_overhead else big_file(args.seed)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    for name in configs:
        if name not in CONFIGS:
            raise SystemExit(f"unknown configuration {name!r}; known: {', '.join(CONFIGS)}")
    info = machine()
    print(
        f"typing bench: model {model} ({mb(model_bytes)}), {info['nproc']} CPUs "
        f"({info['cpu']}), {info['ramBytes'] / 2**30:.0f} GiB RAM, "
        f"llama-cpp-python {info['llamaCppPython']}"
    )
    print(
        f"files: {', '.join(s.name for s in sources)}; {len(spots)} bursts per configuration "
        f"({sum(len(s.span) for s in spots)} keystrokes), seed {args.seed}, "
        f"{PACE_MS[0]:.0f}-{PACE_MS[1]:.0f} ms between keystrokes"
    )
    print(f"load average at start: {info['loadavg']}")
    if info["loadavg"] and info["loadavg"][0] > info["nproc"] / 2:
        log(
            "warning: the machine is busy (load average above half the CPUs); "
            "timings will be inflated"
        )
    started = time.monotonic()
    results: dict[str, dict[str, Any]] = {}
    summaries: dict[str, dict[str, Any]] = {}
    for name in configs:
        results[name] = await run_config(name, CONFIGS[name], model, spots, big, args)
        summaries[name] = summarize(results[name], model_bytes)
    memory_rows = []
    if not args.no_rss:
        for mmap in (True, False):
            memory_rows.append(await run_memory(model, mmap, args))
    for name in configs:
        print_config(results[name], summaries[name])
    ratios = None
    if "responsive" in summaries and "naive" in summaries:
        ratios = print_ratios(summaries, "responsive", "naive")
    if memory_rows:
        print_memory(memory_rows, model_bytes)
    total = time.monotonic() - started
    end_load = loadavg()
    print(f"\ntotal {total:.0f} s; load average at the end: {end_load}")
    if args.json:
        out = {
            "machine": info,
            "model": str(model),
            "modelBytes": model_bytes,
            "args": {k: v for k, v in vars(args).items()},
            "files": [str(p) for p in paths],
            "spots": [s.label for s in spots],
            "bigFile": big[1].label if big else None,
            "configs": results,
            "summaries": summaries,
            "ratios": ratios,
            "memory": memory_rows,
            "seconds": round(total, 1),
            "loadavgEnd": end_load,
        }
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
        print(f"wrote {args.json}")
    failed = any(r["error"] for r in results.values())
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Replay realistic typing against cl-lsp over stdio; compare configurations."
    )
    parser.add_argument(
        "--model",
        help="GGUF file (default: bench/make_model.py's 7B-shaped model, built on first use)",
    )
    parser.add_argument(
        "--tiny",
        action="store_true",
        help=f"build and use a tiny random-weight model ({TINY_MODEL.name})",
    )
    parser.add_argument(
        "--files",
        help="comma-separated source files (default: stdlib "
        f"{', '.join(PY_FILES)} and JavaScript from npm's own packages)",
    )
    parser.add_argument("--bursts", type=int, default=16, help="bursts per configuration (16)")
    parser.add_argument(
        "--configs", default="responsive,naive", help=f"comma-separated, of: {', '.join(CONFIGS)}"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--pace",
        default="30,120",
        help="milliseconds between keystrokes, uniform in LO,HI (30,120)",
    )
    parser.add_argument(
        "--time-limit",
        type=float,
        default=720,
        help="seconds per configuration: no burst starts that would end it "
        "later, counting the large-file test (720)",
    )
    parser.add_argument(
        "--answer-timeout",
        type=float,
        default=600,
        help="seconds to wait for an answer before counting it unanswered",
    )
    parser.add_argument(
        "--ready-timeout", type=float, default=600, help="seconds to wait for the model to load"
    )
    parser.add_argument(
        "--overhead-keys",
        type=int,
        default=4,
        help=f"keystrokes on the {BIG_FILE_LINES}-line file (4)",
    )
    parser.add_argument(
        "--no-overhead", action="store_true", help=f"skip the {BIG_FILE_LINES}-line file"
    )
    parser.add_argument(
        "--no-rss", action="store_true", help="skip the model.useMmap true/false memory starts"
    )
    parser.add_argument(
        "--workspace",
        type=lambda p: Path(p).resolve(),
        help="the workspace folder the editor names (repository context indexes it; bursts in "
        "files under it use their real paths); default: this checkout",
    )
    parser.add_argument("--json", help="write all figures and raw records here")
    args = parser.parse_args(argv)
    if args.bursts < 1:
        parser.error("--bursts must be at least 1")
    global PACE_MS
    try:
        low, high = (float(part) for part in args.pace.split(","))
    except ValueError:
        parser.error("--pace takes LO,HI in milliseconds, e.g. 30,120")
    PACE_MS = (low, high)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
