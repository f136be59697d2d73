"""End to end: `model.path` names a model (a short name, or a file on the Hub) that the server
downloads from the loopback fake Hub once, with `$/progress` naming it, then completes with; a
second server finds it in the Hugging Face cache without asking the Hub anything."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from conftest import offline_env, status, wait_for_state
from hubmock import serve_hub
from lsprotocol import types
from test_server import X48, inline, open_doc, progress_messages

from cl_lsp.models import format_size

C13 = "TheBloke/CodeLlama-13B-GGUF"
FAST = {"completion": {"debounceMs": 0}}


@pytest.mark.parametrize(
    ("reference", "repo", "filename", "described"),
    [
        pytest.param(
            "codellama-13b",
            C13,
            "codellama-13b.Q4_K_M.gguf",
            f"codellama-13b ({C13}/codellama-13b.Q4_K_M.gguf, {{size}})",
            id="name",
        ),
        pytest.param(
            "hf:someone/Tiny-GGUF/sub/tiny.Q8_0.gguf",
            "someone/Tiny-GGUF",
            "sub/tiny.Q8_0.gguf",
            "hf:someone/Tiny-GGUF/sub/tiny.Q8_0.gguf ({size})",
            id="hf-file",
        ),
    ],
)
async def test_a_named_model_is_downloaded_once_with_progress_then_served_from_the_cache(
    start_server, x_model: Path, tmp_path: Path, reference, repo, filename, described
):
    size = format_size(x_model.stat().st_size)
    with serve_hub({(repo, filename): x_model}) as hub:
        env = offline_env(tmp_path, HF_ENDPOINT=hub.endpoint)
        del env["HF_HUB_OFFLINE"]
        options = {"model": {"path": reference}, **FAST}
        client = await start_server(options=options, env=env)
        ready = await wait_for_state(client, {"ready", "failed", "empty"})
        assert ready["state"] == "ready", client.messages
        model = Path(ready["model"])
        assert model.as_posix().endswith("/" + filename)
        assert model.read_bytes() == x_model.read_bytes()

        reports = [getattr(v, "message", None) or "" for v in progress_messages(client)]
        assert f"downloading {reference} (once, {size})" in reports
        pattern = re.compile(rf"downloading {re.escape(reference)}: (\d+)/(\d+) MB")
        amounts = [match.groups() for m in reports if (match := pattern.fullmatch(m))]
        assert amounts and amounts[-1][0] == amounts[-1][1]  # to the last byte
        first_amount = next(m for m in reports if pattern.fullmatch(m))
        assert reports.index(f"downloading {reference} (once, {size})") < reports.index(
            first_amount
        )
        assert reports[-1] == f"ready ({model.name})"
        infos = [m.message for m in client.messages if m.type == types.MessageType.Info]
        cache = tmp_path / "hf-home" / "hub"
        assert (
            f"cl-lsp: downloading {described.format(size=size)} into the Hugging Face cache "
            f"({cache}), once"
        ) in infos
        assert not [m for m in client.messages if m.type == types.MessageType.Error]

        uri = (tmp_path / "a.py").as_uri()
        open_doc(client, uri, "value = ")
        assert (await inline(client, uri, 0, 8)).items[0].insert_text == X48
        assert len(hub.file_requests("GET")) == 1
        seen = len(hub.requests)

        again = await start_server(options=options, env=env)
        state = await wait_for_state(again, {"ready", "failed", "empty"})
        assert state["state"] == "ready" and state["model"] == str(model)
        assert not any(
            "downloading" in (getattr(v, "message", None) or "") for v in progress_messages(again)
        )
        open_doc(again, uri, "value = ")
        assert (await inline(again, uri, 0, 8)).items[0].insert_text == X48
        assert len(hub.requests) == seen  # the cache alone: not one request to the Hub
        assert (await status(again))["state"] == "ready"


async def test_an_inference_server_engine_never_downloads_the_named_model(
    start_server, x_model: Path, tmp_path: Path
):
    """engine.kind llama-server with model.path a name: its cached copy's vocabulary if there
    is one, else none (said in the log), and no request to the Hub either way."""
    from mock_inference import MockInferenceServer

    with (
        serve_hub({(C13, "codellama-13b.Q4_K_M.gguf"): x_model}) as hub,
        MockInferenceServer() as server,
    ):
        env = offline_env(tmp_path, HF_ENDPOINT=hub.endpoint)
        del env["HF_HUB_OFFLINE"]
        options = {
            "model": {"path": "codellama-13b"},
            "engine": {"kind": "llama-server", "url": server.base_url},
        }
        client = await start_server(options=options, env=env)
        assert (await wait_for_state(client, {"ready", "failed", "empty"}))["state"] == "ready"
        logged = [m.message for m in client.log_messages]
        assert any(
            "codellama-13b (TheBloke/CodeLlama-13B-GGUF/codellama-13b.Q4_K_M.gguf) (from "
            "model.path setting) is not in the Hugging Face cache, and an inference server's "
            "engine never downloads a model" in message
            for message in logged
        ), logged
        assert not [m for m in client.messages if m.type == types.MessageType.Error]
        assert hub.requests == []


async def test_a_named_actions_model_is_downloaded_with_progress_in_the_editor(
    start_server, x_model: Path, tiny_model: Path, tmp_path: Path
):
    """actions.model a name: fetched right after the completion model loads, with its own
    `$/progress`, not silently at the first code action."""
    repo, filename = "TheBloke/CodeLlama-7B-Instruct-GGUF", "codellama-7b-instruct.Q4_K_M.gguf"
    with serve_hub({(repo, filename): tiny_model}) as hub:
        env = offline_env(tmp_path, HF_ENDPOINT=hub.endpoint)
        del env["HF_HUB_OFFLINE"]
        options = {"actions": {"model": "codellama-7b-instruct"}, **FAST}
        client = await start_server(model=x_model, options=options, env=env)
        await wait_for_state(client, {"ready"})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while "actions model ready (codellama-7b-instruct)" not in (
            reports := [getattr(v, "message", None) or "" for v in progress_messages(client)]
        ):
            assert loop.time() < deadline, reports
            await asyncio.sleep(0.1)
        assert "downloading codellama-7b-instruct for code actions" in reports
        pattern = re.compile(r"downloading codellama-7b-instruct: (\d+)/(\d+) MB")
        amounts = [match.groups() for m in reports if (match := pattern.fullmatch(m))]
        assert amounts and amounts[-1][0] == amounts[-1][1]
        assert len(hub.file_requests("GET")) == 1
        assert not [m for m in client.messages if m.type == types.MessageType.Error]
