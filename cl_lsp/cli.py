"""Command line: `cl-lsp [--stdio|--tcp]` serves LSP; `complete`, `download` and `models` run
once.

In server mode stdout belongs to the protocol: every log line goes to stderr, `--log-file`
or the client's `window/logMessage`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from . import __version__
from .config import EngineKind, EngineSettings, Settings, describe_settings

if TYPE_CHECKING:
    from .completion.pipeline import CompletionPlan
    from .engine import Engine, Generation

log = logging.getLogger("cl_lsp")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--model",
        metavar="MODEL",
        help="GGUF model file, or a model name (codellama-7b, codellama-13b, "
        "codellama-7b-instruct, codellama-13b-instruct, optionally :QUANT), "
        "hf:OWNER/REPO/FILE.gguf or OWNER/REPO:QUANT, downloaded once; used unless the "
        "editor's model.path setting names one (else CL_LSP_MODEL, then codellama-7b)",
    )
    common.add_argument(
        "--engine",
        choices=[kind.value for kind in EngineKind],
        help="who runs the model: local (default: llama.cpp in this process), llama-server, "
        "openai (any OpenAI-compatible /v1/completions) or ollama; the engine.kind setting wins",
    )
    common.add_argument(
        "--url",
        metavar="URL",
        help="the inference server's base URL (http://host:8080 for llama-server, the /v1 "
        "base for OpenAI-compatible servers, http://host:11434 for Ollama)",
    )
    common.add_argument("--log-file", metavar="FILE", help="also write the log to FILE")
    common.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log detail (-vv for debug)"
    )

    settings_help = "\n".join(
        f"  {key} (default {default}): {doc}" for key, default, doc in describe_settings()
    )
    parser = argparse.ArgumentParser(
        prog="cl-lsp",
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="A language server with Code Llama fill-in-the-middle completions.",
        epilog="Settings (initializationOptions / workspace/didChangeConfiguration):\n"
        + settings_help,
    )
    parser.add_argument("--version", action="version", version=f"cl-lsp {__version__}")
    transport = parser.add_mutually_exclusive_group()
    transport.add_argument(
        "--stdio", action="store_true", help="speak LSP on stdin/stdout (the default)"
    )
    transport.add_argument("--tcp", action="store_true", help="listen for one LSP client on TCP")
    parser.add_argument("--host", default="127.0.0.1", help="TCP address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=2087, help="TCP port (default 2087)")

    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    complete = commands.add_parser(
        "complete",
        parents=[common],
        help="complete FILE at a position once and print the suggestion",
        description="Run the completion pipeline once, as the server would for an editor.",
    )
    complete.add_argument("file", type=Path, help="source file")
    complete.add_argument("--line", type=int, required=True, help="0-based line")
    complete.add_argument(
        "--character", type=int, required=True, help="0-based column in characters (code points)"
    )
    complete.add_argument(
        "--json",
        action="store_true",
        help="print the completion with the prompt ids and timings as JSON",
    )
    complete.add_argument(
        "--settings",
        metavar="JSON",
        default=None,
        help='settings as JSON, e.g. \'{"completion": {"maxTokens": 64}}\'',
    )
    download_command = commands.add_parser(
        "download",
        parents=[common],
        help="fetch a model into the Hugging Face cache (default: codellama-7b)",
        description="Download a model once into the Hugging Face cache and print its path.",
    )
    download_command.add_argument(
        "name",
        nargs="?",
        metavar="NAME",
        help="a model name (codellama-13b, codellama-13b:Q5_K_M, ...), hf:OWNER/REPO/FILE.gguf "
        "or OWNER/REPO:QUANT (default: --model if given, else the default model codellama-7b)",
    )
    commands.add_parser(
        "models",
        help="list the model names and the GGUF files in the Hugging Face cache (offline)",
        description="List the known model names, whether each is downloaded, and every other "
        "GGUF file in the Hugging Face cache. Reads only the local disk.",
    )
    return parser


def setup_logging(verbose: int, log_file: str | None) -> None:
    level = logging.DEBUG if verbose >= 2 else logging.INFO if verbose == 1 else logging.WARNING
    root = logging.getLogger()
    root.setLevel(logging.DEBUG)
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setLevel(level)
    stderr.setFormatter(logging.Formatter("cl-lsp %(levelname)s %(name)s: %(message)s"))
    root.addHandler(stderr)
    if log_file:
        to_file = logging.FileHandler(log_file, encoding="utf-8")
        to_file.setLevel(logging.DEBUG if verbose >= 2 else logging.INFO)
        to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(to_file)
    # pygls logs every message at INFO/DEBUG; keep it to warnings unless asked for debug.
    logging.getLogger("pygls").setLevel(logging.DEBUG if verbose >= 2 else logging.WARNING)
    # httpx logs every request at INFO: the engine logs what matters.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose >= 2 else logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.log_file)
    if args.command == "complete":
        return complete_once(args)
    if args.command == "download":
        return download(args.name or args.model)
    if args.command == "models":
        return list_models()
    from .lsp.handlers import build_server
    from .lsp.server import install_lsp_log_handler

    server = build_server(cli_model=args.model, base=cli_settings(args))
    install_lsp_log_handler(server, logging.INFO if args.verbose else logging.WARNING)
    if args.tcp:
        from .lsp.transport import serve_tcp

        # Not pygls's start_tcp: it lets a second connection take over the session.
        return serve_tcp(server, args.host, args.port)
    from .lsp.transport import serve_stdio

    # Not pygls's start_io: its reader goes deaf on bad framing and loses `exit`'s code.
    return serve_stdio(server, sys.stdin.buffer, claim_stdout())


def cli_settings(args: argparse.Namespace, base: Settings | None = None) -> Settings:
    """`base` with --engine and --url applied (editor settings are laid over these)."""
    import dataclasses

    base = base or Settings()
    engine: EngineSettings = base.engine
    if getattr(args, "engine", None):
        engine = dataclasses.replace(engine, kind=EngineKind(args.engine))
    if getattr(args, "url", None):
        engine = dataclasses.replace(engine, url=args.url)
    return dataclasses.replace(base, engine=engine)


def claim_stdout() -> BinaryIO:
    """Keep the real stdout for the protocol alone.

    Native code (llama.cpp, ggml) and libraries may print to file descriptor 1, and
    llama-cpp-python briefly points it at /dev/null while loading; either would corrupt or
    swallow protocol messages written by another thread. The protocol gets a private
    duplicate of stdout; descriptor 1 and `sys.stdout` are pointed at stderr.
    """
    protocol_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    return protocol_out


def download(name: str | None) -> int:
    """`cl-lsp download [NAME]`: fetch NAME (else the default model) with a progress bar on
    stderr, and print its path."""
    from .models import (
        ModelError,
        default_model_ref,
        fetch_model,
        parse_model_ref,
        resolve_model_path,
    )
    from .progress_bar import terminal_progress

    value, _ = resolve_model_path(name, None, {})
    try:
        ref = parse_model_ref(value, "the command line") if value else default_model_ref()
        if ref.is_path:
            print(
                f"cl-lsp: nothing to download: {value} is a file path. `cl-lsp download` takes "
                "a model name (e.g. codellama-13b), hf:OWNER/REPO/FILE.gguf or "
                "OWNER/REPO:QUANT; `cl-lsp models` lists the names.",
                file=sys.stderr,
            )
            return 2
        path = fetch_model(
            ref,
            terminal_progress(),
            lambda plan: print(f"cl-lsp: downloading {plan.describe()}", file=sys.stderr),
        )
    except ModelError as error:
        print(f"cl-lsp: {error}", file=sys.stderr)
        return 1
    print(path)
    return 0


def list_models() -> int:
    """`cl-lsp models`: the known names (downloaded or not) and the other GGUF files in the
    Hugging Face cache, from the local disk alone."""
    from .models import DEFAULT_NAME, format_size
    from .models import list_models as listing

    found = listing()
    rows = [("NAME", "REPOSITORY", "FILE", "SIZE", "DOWNLOADED")]
    for known, cached in found.known:
        name = known.name + (" (default)" if known.name == DEFAULT_NAME else "")
        have = f"yes, {format_size(cached.size)}: {cached.path}" if cached else "no"
        rows.append(
            (name, known.repo, known.filename(), f"~{format_size(known.approx_size)}", have)
        )
    print("Models by name (NAME:QUANT picks another quantization, e.g. codellama-13b:Q5_K_M):")
    _print_rows(rows)
    print(f"\nOther GGUF files in the Hugging Face cache ({found.cache}), by the name")
    print("model.path and --model take:")
    if not found.others:
        print("  none")
    _print_rows([(o.reference, format_size(o.size), str(o.path)) for o in found.others])
    return 0


def _print_rows(rows: list[tuple[str, ...]]) -> None:
    if not rows:
        return
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  " + "  ".join([*cells, row[-1]]))


def complete_once(args: argparse.Namespace) -> int:
    from .config import CompletionSettings, parse_settings
    from .engine import EngineError
    from .lsp.documents import UTF32, Document, PositionError
    from .models import ModelError

    # One-shot: nobody is typing, so no time cap unless asked for (--settings).
    one_shot = cli_settings(args, Settings(completion=CompletionSettings(generation_timeout_ms=0)))
    settings, problems = parse_settings(
        json.loads(args.settings) if args.settings else None, one_shot
    )
    for problem in problems:
        print(f"cl-lsp: setting {problem}", file=sys.stderr)
    try:
        text = args.file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        print(f"cl-lsp: cannot read {args.file}: {error}", file=sys.stderr)
        return 2
    document = Document(uri=args.file.resolve().as_uri(), text=text, version=0)
    try:
        offset = document.offset_at(args.line, args.character, UTF32, strict=True)
    except PositionError as error:
        print(f"cl-lsp: {args.file}: {error}", file=sys.stderr)
        return 2
    try:
        engine, model = _engine_for(args, settings)
        plan, generation = asyncio.run(
            _complete(engine, model, settings, text, offset, str(args.file))
        )
    except (ModelError, EngineError) as error:
        print(f"cl-lsp: {error}", file=sys.stderr)
        return 1
    facts = _engine_facts(engine, plan, model)
    engine.close()
    return _print_completion(args, plan, generation, facts)


def _engine_for(args: argparse.Namespace, settings: Settings) -> tuple[Engine, Path | None]:
    """The engine engine.kind names, and the GGUF to load: the model (a name or Hub reference
    downloaded if need be) for the local engine; for a server, the vocabulary's, if any (a
    cached copy only: never a download)."""
    from .engine import LocalEngine
    from .engine.endpoint import Endpoint
    from .engine.remote import RemoteEngine
    from .models import locate_model, locate_vocabulary
    from .progress_bar import terminal_progress

    if settings.engine.kind is EngineKind.LOCAL:
        model = locate_model(
            args.model,
            settings.model.path,
            terminal_progress(),
            lambda plan: print(f"cl-lsp: downloading {plan.describe()} (once)", file=sys.stderr),
        )
        return LocalEngine(), model
    vocabulary = locate_vocabulary(args.model, settings.model.path)
    engine = RemoteEngine(
        Endpoint.for_completions(settings.engine),
        Endpoint.for_actions(settings.engine, settings.actions.engine),
    )
    return engine, vocabulary


#: How long `complete` reads the workspace for repository context (its file's folder first).
INDEX_SECONDS = 10.0


def project_root(file: Path) -> Path:
    """The git repository `file` is in, else the current directory (the file's own folder
    when it is not under it): the workspace whose files `complete` may show the model."""
    file = file.resolve()
    for folder in file.parents:
        if (folder / ".git").exists():
            return folder
    cwd = Path.cwd().resolve()
    return cwd if file.is_relative_to(cwd) else file.parent


async def _complete(
    engine: Engine, model: Path | None, settings: Settings, text: str, offset: int, path: str
) -> tuple[CompletionPlan, Generation | None]:
    from .completion.pipeline import plan_completion, repository_block
    from .engine import EngineError
    from .engine.remote import RemoteEngine
    from .repository.service import RepositoryContext

    uri = Path(path).resolve().as_uri()

    await engine.load(model, settings.model)  # type: ignore[arg-type]
    if isinstance(engine, RemoteEngine) and engine.health.state == "down":
        raise EngineError(engine.health.error or "the server is down")
    assert engine.vocab is not None
    vocab = engine.vocab
    repository = RepositoryContext(settings.context, {uri: text}.get)
    repository.build_now([project_root(Path(path))], Path(path), INDEX_SECONDS)
    repository.opened(uri, 0, text)
    block = repository_block(repository, uri, text, vocab.count)
    plan = plan_completion(
        text,
        offset,
        vocab=vocab,
        settings=settings.completion,
        n_ctx=engine.n_ctx,
        path=path,
        healing=engine.heals,
        repository=block if settings.context.enabled else None,
        repo_tokens=settings.context.repo_tokens,
    )
    generation = await engine.generate(plan.request) if plan.request else None
    return plan, generation


def _engine_facts(engine: Engine, plan: CompletionPlan, model: Path | None) -> dict[str, Any]:
    """What `complete --json` says of the engine: which, and for a server how the prompt was
    sent and what the server says it evaluated."""
    from .engine.tokenizer import ApproximateTokenizer

    status = engine.status()
    if status["engine"] == "local":
        return {"engine": "local", "model": str(model)}
    text_sent = plan.prompt is not None and status["prompt"] == "text"
    return {
        "engine": status["engine"],
        "url": status["url"],
        "model": status["model"],
        "server_model": status["serverModel"],
        "prompt_form": status["prompt"],
        "prompt_text": plan.prompt.text if text_sent and plan.prompt else None,
        # Without a vocabulary (no model.path, no /tokenize) there are no ids, only the text.
        **({"prompt_tokens": None} if isinstance(engine.vocab, ApproximateTokenizer) else {}),
        "server": status["server"],
    }


def _print_completion(
    args: argparse.Namespace,
    plan: CompletionPlan,
    generation: Generation | None,
    extra: dict[str, Any],
) -> int:
    from .completion.pipeline import finish_completion

    suggestion = finish_completion(plan, generation)
    if args.json:
        print(
            json.dumps(
                {
                    "completion": suggestion.text,
                    "raw": suggestion.raw,
                    "replace_after": suggestion.replace_after,
                    "dropped_by": suggestion.dropped_by,
                    "mode": plan.context.mode.value,
                    "reason": plan.context.reason,
                    "language": plan.context.language,
                    "prompt_format": plan.prompt.layout.value if plan.prompt else None,
                    **plan.describe_format(),
                    "prompt_tokens": list(plan.prompt.tokens) if plan.prompt else [],
                    "healed": plan.prompt.heal if plan.prompt else "",
                    # -1: the server did not say (llama-cpp-python's server, say)
                    "evaluated_tokens": _known(generation.evaluated_tokens) if generation else 0,
                    "generated_tokens": list(generation.token_ids) if generation else [],
                    "stop_reason": generation.stop_reason if generation else None,
                    "seconds": round(generation.seconds, 3) if generation else 0.0,
                    # The code from other files in the prompt: each snippet, where from, why.
                    "context": plan.repository.describe() if plan.repository else None,
                    **extra,
                },
                ensure_ascii=False,
                indent=2,
            )
        )
    elif suggestion.text:
        print(suggestion.text)
    else:
        reason = plan.context.reason if plan.request is None else "the model suggested nothing"
        print(f"cl-lsp: no completion here ({reason})", file=sys.stderr)
    return 0


def _known(count: int) -> int | None:
    return count if count >= 0 else None


if __name__ == "__main__":
    sys.exit(main())
