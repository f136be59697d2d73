"""Repository context end to end: `cl-lsp complete --json` and `cl-lsp --stdio` with the real
llama.cpp engine, on a small project written to disk."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from conftest import complete_json, status
from lsprotocol import types
from test_server import change, inline, open_doc

PRICING = (
    "class Discount:\n    def __init__(self, rate):\n        self.rate = rate\n\n"
    "    def apply(self, price):\n        return price * (1 - self.rate)\n\n\n"
    "def total_price(items, discount=None):\n    total = sum(i.price for i in items)\n"
    "    if discount:\n        total = discount.apply(total)\n    return total\n"
)
CART = (
    "from pricing import total_price\n\n\n"
    "def checkout(cart):\n    price = total_price(cart.items)\n    return price\n"
)


def with_and_without_context(tmp_path: Path, model: Path) -> tuple[dict, dict]:
    """`complete --json` at the end of CART's `return price`, context on and off."""
    on = complete_json(tmp_path, CART, 5, 16, "--model", str(model))
    off_setting = ("--settings", '{"context": {"enabled": false}}')
    return on, complete_json(tmp_path, CART, 5, 16, "--model", str(model), *off_setting)


def test_complete_json_shows_which_snippets_went_in_and_why(tmp_path, x_model, tiny_vocab):
    (tmp_path / "pricing.py").write_text(PRICING)
    (tmp_path / ".env").write_text("def leaked(): pass\n")
    on, off = with_and_without_context(tmp_path, x_model)
    context = on["context"]
    [snippet] = [s for s in context["snippets"] if s["path"] == "pricing.py"]
    assert snippet["source"] == "definition" and snippet["line"] == 9
    assert snippet["why"] == "total_price is used near the cursor, imported from pricing"
    assert snippet["text"].startswith("def total_price(items, discount=None):\n")
    # The block is the prompt's start of the prefix, as comments, within its budget.
    prompt = b"".join(tiny_vocab.piece(t) for t in on["prompt_tokens"]).decode(errors="replace")
    assert "# Path: pricing.py\n# def total_price(items, discount=None):" in prompt
    assert "leaked" not in prompt and off["context"] is None
    assert 0 < context["tokens"] <= context["budget"] == 512
    assert 0 < len(on["prompt_tokens"]) - len(off["prompt_tokens"]) <= context["tokens"] + 1
    small = complete_json(
        tmp_path,
        CART,
        5,
        16,
        "--model",
        str(x_model),
        "--settings",
        '{"context": {"repoTokens": 8}}',
    )
    assert small["context"]["snippets"] == [] and small["prompt_tokens"] == off["prompt_tokens"]


async def wait_until(client, ready, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        state = await status(client)
        if ready(state) or time.monotonic() > deadline:
            return state
        await asyncio.sleep(0.1)


async def test_the_server_indexes_its_workspace_and_typing_keeps_the_cache(
    start_server, x_model, tmp_path
):
    (tmp_path / "pricing.py").write_text(PRICING)
    cart = tmp_path / "cart.py"
    cart.write_text(CART)
    client = await start_server(
        model=x_model,
        options={
            "completion": {"maxTokensSingleLine": 2, "debounceMs": 0, "warmUpMs": 0, "reuse": False}
        },
    )
    state = await wait_until(client, lambda s: s["repository"]["ready"])
    assert state["repository"]["roots"] == [tmp_path.resolve().as_posix()]
    assert state["repository"]["files"] == 2 and state["repository"]["definitions"] == 5
    uri = cart.as_uri()
    open_doc(client, uri, CART)
    await inline(client, uri, 5, 16)
    # Typing at the end of the line: each request evaluates what was typed, not the block.
    for i, char in enumerate(" + 1", start=1):
        change(client, uri, i + 1, (5, 15 + i), (5, 15 + i), char)
        await inline(client, uri, 5, 16 + i)
    records = (await status(client))["recent"][-5:]
    assert [r["outcome"] for r in records] == ["generated"] * 5
    first, typed = records[0], records[1:]
    assert all(r["evaluatedTokens"] <= 3 for r in typed), typed
    # The same place without the block: a shorter prompt by the block's tokens.
    client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(settings={"context": {"enabled": False}})
    )
    await inline(client, uri, 5, 20)
    without = (await status(client))["recent"][-1]
    assert typed[-1]["promptTokens"] - without["promptTokens"] > 20
    assert first["promptTokens"] > without["promptTokens"]


async def test_watched_files_and_open_documents_keep_the_index_current(
    start_server, x_model, tmp_path
):
    (tmp_path / "pricing.py").write_text(PRICING)
    client = await start_server(model=x_model)
    await wait_until(client, lambda s: s["repository"]["ready"])
    shipping = tmp_path / "shipping.py"
    shipping.write_text("def ship_cost(weight):\n    return weight\n\n\nMAX = 3\n")
    client.workspace_did_change_watched_files(
        types.DidChangeWatchedFilesParams(
            changes=[types.FileEvent(uri=shipping.as_uri(), type=types.FileChangeType.Created)]
        )
    )
    state = await wait_until(client, lambda s: s["repository"]["definitions"] == 4 + 2)
    assert state["repository"]["files"] == 2
    shipping.unlink()
    client.workspace_did_change_watched_files(
        types.DidChangeWatchedFilesParams(
            changes=[types.FileEvent(uri=shipping.as_uri(), type=types.FileChangeType.Deleted)]
        )
    )
    state = await wait_until(client, lambda s: s["repository"]["definitions"] == 4)
    assert state["repository"]["files"] == 1
    # An open document is indexed as typed (after a pause), not as on disk.
    uri = (tmp_path / "pricing.py").as_uri()
    open_doc(client, uri, PRICING)
    change(client, uri, 2, (13, 0), (13, 0), "\n\ndef refund(order):\n    return 0\n")
    state = await wait_until(client, lambda s: s["repository"]["definitions"] == 5)
    assert state["repository"]["definitions"] == 5
    assert (await status(client))["tables"]["recentEdits"] == 1
    # Closed unsaved: the file on disk again.
    client.text_document_did_close(
        types.DidCloseTextDocumentParams(text_document=types.TextDocumentIdentifier(uri=uri))
    )
    state = await wait_until(client, lambda s: s["repository"]["definitions"] == 4)
    assert state["repository"]["definitions"] == 4 and state["tables"]["recentEdits"] == 0


def test_the_project_root_is_the_git_repository_else_the_current_folder(tmp_path, monkeypatch):
    from cl_lsp.cli import project_root

    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "src/pkg").mkdir(parents=True)
    assert project_root(repo / "src/pkg/a.py") == repo.resolve()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "plain").mkdir()
    assert project_root(tmp_path / "plain/b.py") == tmp_path.resolve()
    # A file outside the current folder: its own folder.
    assert project_root(tmp_path.parent / "other/c.py") == (tmp_path.parent / "other").resolve()


def test_a_family_with_repository_tokens_gets_the_files_in_its_format(tmp_path, family_gguf):
    from cl_lsp.engine import Vocabulary

    (tmp_path / "pricing.py").write_text(PRICING)
    model = family_gguf("starcoder")
    on, off = with_and_without_context(tmp_path, model)
    vocab = Vocabulary(model)
    try:
        repo_name, file_sep = vocab.token_id("<repo_name>"), vocab.token_id("<file_sep>")
        prefix = vocab.token_id("<fim_prefix>")
        text = b"".join(vocab.piece(t) for t in on["prompt_tokens"]).decode(errors="replace")
    finally:
        vocab.close()
    tokens = on["prompt_tokens"]
    # <repo_name>repo<file_sep>pricing.py\n...<file_sep><fim_prefix>source.py\n...
    assert tokens[0] == repo_name and tokens.count(file_sep) == 2
    assert tokens[tokens.index(prefix) - 1] == file_sep
    assert (
        f"{tmp_path.name}" in text and "pricing.py\ndef total_price(items, discount=None):" in text
    )
    assert "source.py\nfrom pricing import total_price" in text and "# Path:" not in text
    assert 0 < len(tokens) - len(off["prompt_tokens"]) <= on["context"]["budget"]


async def test_workspace_folders_added_and_removed_are_indexed(start_server, x_model, tmp_path):
    client = await start_server(model=x_model)
    await wait_until(client, lambda s: s["repository"]["ready"])
    other = tmp_path.parent / f"{tmp_path.name}-other"
    other.mkdir()
    (other / "pricing.py").write_text(PRICING)
    client.workspace_did_change_workspace_folders(
        types.DidChangeWorkspaceFoldersParams(
            event=types.WorkspaceFoldersChangeEvent(
                added=[types.WorkspaceFolder(uri=other.as_uri(), name="other")],
                removed=[types.WorkspaceFolder(uri=tmp_path.as_uri(), name="main")],
            )
        )
    )
    state = await wait_until(client, lambda s: s["repository"]["definitions"] == 4)
    assert state["repository"]["roots"] == [other.resolve().as_posix()]
    assert state["repository"]["files"] == 1
