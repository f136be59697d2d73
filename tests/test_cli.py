"""The command line: `complete` (one-shot pipeline), `download`, `--tcp`, `--help`."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

from conftest import offline_env
from hubmock import serve_hub

from cl_lsp.completion.families import fim_format
from cl_lsp.completion.prompts import Layout, build_fim_prompt
from cl_lsp.models import DEFAULT_FILE, DEFAULT_REPO

BOS, PRE, SUF, MID = 1, 32007, 32008, 32009


def cl_lsp(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cl_lsp", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def test_version_and_help_list_every_setting(tmp_path):
    env = offline_env(tmp_path)
    version = cl_lsp("--version", env=env)
    assert version.returncode == 0 and version.stdout.startswith("cl-lsp ")
    shown = cl_lsp("--help", env=env).stdout
    for option in ("--stdio", "--tcp", "--model", "--log-file", "complete", "download"):
        assert option in shown
    assert "completion.maxTokens (default 128)" in shown


def test_complete_json_shows_the_exact_spm_prompt(tmp_path, x_model):
    source = tmp_path / "f.py"
    source.write_text("def f(x):\n    return x\n")
    result = cl_lsp(
        "complete",
        str(source),
        "--line",
        "0",
        "--character",
        "9",
        "--model",
        str(x_model),
        "--json",
        env=offline_env(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["prompt_format"] == "spm"
    assert answer["prompt_tokens"] == [
        BOS,
        PRE,
        SUF,
        13,
        1678,
        736,
        921,
        13,
        MID,
        822,
        285,
        29898,
        29916,
        1125,
    ]
    assert answer["evaluated_tokens"] == len(answer["prompt_tokens"])
    assert answer["mode"] == "multi_line"
    assert answer["raw"] == " x" * 128  # completion.maxTokens
    # `def f(x): x x` would not parse: the syntax check drops it (after the loop filter).
    assert answer["completion"] == "" and answer["dropped_by"] == "check_syntax"


def test_complete_heals_the_word_being_typed_or_uses_psm_if_asked(tmp_path, x_model, tiny_vocab):
    text = "def fib(n):\n    return fi"
    source = tmp_path / "fib.py"
    source.write_text(text)

    def complete(settings: str) -> dict:
        result = cl_lsp(
            "complete",
            str(source),
            "--line",
            "1",
            "--character",
            "13",
            "--model",
            str(x_model),
            "--json",
            "--settings",
            settings,
            env=offline_env(tmp_path),
        )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    healed = complete('{"completion": {"maxTokensSingleLine": 3}}')
    # The default leaves the partial word out (the prompt ends at a token boundary) and makes
    # the answer spell it first; the answer shown is what follows it.
    head = build_fim_prompt(
        "def fib(n):\n    return", "", tiny_vocab.encode, fim_format(tiny_vocab), Layout.SPM
    )
    assert healed["prompt_format"] == "spm" and healed["healed"] == " fi"
    assert healed["prompt_tokens"] == list(head.tokens)
    spelled = "".join(tiny_vocab.text_of(token) for token in healed["generated_tokens"])
    assert spelled.startswith(" fi") and healed["raw"] == spelled[3:]

    psm = complete('{"completion": {"maxTokensSingleLine": 3, "promptFormat": "psm"}}')
    expected = build_fim_prompt(text, "", tiny_vocab.encode, fim_format(tiny_vocab), Layout.PSM)
    assert psm["prompt_format"] == "psm" and psm["healed"] == ""
    assert psm["prompt_tokens"] == list(expected.tokens)
    # Cut by the token cap: the last word may be half-written and is dropped, and what is left
    # (`return fi x x`) does not parse, so nothing is shown.
    assert psm["raw"] == " x x x" and psm["stop_reason"] == "max_tokens"
    assert psm["completion"] == ""


def test_complete_plain_output_and_clear_errors(tmp_path, x_model):
    env = offline_env(tmp_path)
    source = tmp_path / "v.py"
    source.write_text("value = \n")
    plain = cl_lsp(
        "complete", str(source), "--line", "0", "--character", "8", "--model", str(x_model), env=env
    )
    assert plain.returncode == 0 and plain.stdout == " x" * 47 + "\n"
    outside = cl_lsp(
        "complete", str(source), "--line", "9", "--character", "0", "--model", str(x_model), env=env
    )
    assert outside.returncode == 2 and "past the end" in outside.stderr
    missing = cl_lsp(
        "complete",
        str(source),
        "--line",
        "0",
        "--character",
        "8",
        "--model",
        str(tmp_path / "none.gguf"),
        env=env,
    )
    assert missing.returncode == 1 and "model file not found" in missing.stderr
    nothing = cl_lsp(
        "complete", str(source), "--line", "0", "--character", "2", "--model", str(x_model), env=env
    )
    assert nothing.returncode == 0 and nothing.stdout == ""
    assert "cursor inside identifier" in nothing.stderr


def test_complete_reads_cl_lsp_model_from_the_environment(tmp_path, x_model):
    source = tmp_path / "v.py"
    source.write_text("value = \n")
    env = offline_env(tmp_path, CL_LSP_MODEL=str(x_model))
    result = cl_lsp("complete", str(source), "--line", "0", "--character", "8", "--json", env=env)
    assert json.loads(result.stdout)["model"] == str(x_model)


def test_download_fetches_the_default_model_once(tmp_path, x_model):
    with serve_hub({(DEFAULT_REPO, DEFAULT_FILE): x_model}) as hub:
        env = offline_env(tmp_path, HF_ENDPOINT=hub.endpoint)
        del env["HF_HUB_OFFLINE"]
        first = cl_lsp("download", env=env)
        assert first.returncode == 0, first.stderr
        path = Path(first.stdout.strip())
        assert path.read_bytes() == x_model.read_bytes()
        assert str(tmp_path / "hf-home") in str(path)
        assert "MB" in first.stderr  # the progress bar
        again = cl_lsp("download", env=env)
        assert again.returncode == 0 and again.stdout == first.stdout
        assert len(hub.file_requests("GET")) == 1
        # and `complete` without --model now uses it
        source = tmp_path / "v.py"
        source.write_text("value = \n")
        used = cl_lsp("complete", str(source), "--line", "0", "--character", "8", "--json", env=env)
        assert json.loads(used.stdout)["model"] == str(path)


def test_download_offline_fails_clearly(tmp_path):
    result = cl_lsp("download", env=offline_env(tmp_path), timeout=60)
    assert result.returncode == 1
    assert "could not be downloaded" in result.stderr


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def lsp_message(payload: dict) -> bytes:
    body = json.dumps(payload).encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def read_message(stream) -> dict:
    length = 0
    while (line := stream.readline()) not in (b"\r\n", b""):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return json.loads(stream.read(length))


def test_tcp_transport_listens_on_loopback(tmp_path, x_model):
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "cl_lsp", "--tcp", "--port", str(port), "--model", str(x_model)],
        env=offline_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                connection = socket.create_connection(("127.0.0.1", port), timeout=10)
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline, "the server never listened"
                time.sleep(0.1)
        with connection, connection.makefile("rb") as replies:
            connection.sendall(
                lsp_message(
                    {
                        "jsonrpc": "2.0",
                        "id": 1,
                        "method": "initialize",
                        "params": {"capabilities": {}},
                    }
                )
            )
            reply = read_message(replies)
            assert reply["id"] == 1
            assert "inlineCompletionProvider" in reply["result"]["capabilities"]
    finally:
        server.kill()
        server.wait(10)


C13 = "TheBloke/CodeLlama-13B-GGUF"


def hub_cli_env(tmp_path: Path, endpoint: str) -> dict[str, str]:
    env = offline_env(tmp_path, HF_ENDPOINT=endpoint)
    del env["HF_HUB_OFFLINE"]
    return env


def test_download_by_name_and_models_lists_what_is_cached(tmp_path):
    q4, q5 = b"GGUF\x03\x00\x00\x00 13b q4", b"GGUF\x03\x00\x00\x00 13b q5!"
    files = {(C13, "codellama-13b.Q4_K_M.gguf"): q4, (C13, "codellama-13b.Q5_K_M.gguf"): q5}
    with serve_hub(files) as hub:
        env = hub_cli_env(tmp_path, hub.endpoint)
        cache = tmp_path / "hf-home" / "hub"
        before = cl_lsp("models", env=env)
        assert before.returncode == 0, before.stderr
        lines = before.stdout.splitlines()
        assert lines[0].startswith("Models by name (NAME:QUANT picks another quantization")
        assert lines[1].split() == ["NAME", "REPOSITORY", "FILE", "SIZE", "DOWNLOADED"]
        assert lines[2].split() == [
            "codellama-7b",
            "(default)",
            DEFAULT_REPO,
            DEFAULT_FILE,
            "~4.08",
            "GB",
            "no",
        ]
        assert lines[3].split() == [
            "codellama-13b",
            C13,
            "codellama-13b.Q4_K_M.gguf",
            "~7.87",
            "GB",
            "no",
        ]
        assert [line.split()[0] for line in lines[4:6]] == [
            "codellama-7b-instruct",
            "codellama-13b-instruct",
        ]
        assert lines[7:] == [
            f"Other GGUF files in the Hugging Face cache ({cache}), by the name",
            "model.path and --model take:",
            "  none",
        ]
        assert hub.requests == []  # offline by design

        got = cl_lsp("download", "codellama-13b", env=env)
        assert got.returncode == 0, got.stderr
        path = Path(got.stdout.strip())
        assert path.read_bytes() == q4 and cache in path.parents
        assert (
            f"cl-lsp: downloading codellama-13b ({C13}/codellama-13b.Q4_K_M.gguf, {len(q4)} bytes)"
            in got.stderr
        )
        assert "100%" in got.stderr  # the progress bar
        other = cl_lsp("download", "codellama-13b:Q5_K_M", env=env)
        assert other.returncode == 0, other.stderr
        seen = len(hub.requests)
        again = cl_lsp("download", "codellama-13b", env=env)
        assert again.returncode == 0 and again.stdout == got.stdout and again.stderr == ""

        after = cl_lsp("models", env=env)
        assert after.returncode == 0, after.stderr
        rows = {line.split()[0]: line.split() for line in after.stdout.splitlines() if line}
        assert rows["codellama-13b"][-4:] == ["yes,", str(len(q4)), "bytes:", str(path)]
        assert rows["codellama-7b"][-1] == "no"
        q5_path = Path(other.stdout.strip())
        assert rows["codellama-13b:Q5_K_M"] == [
            "codellama-13b:Q5_K_M",
            str(len(q5)),
            "bytes",
            str(q5_path),
        ]
        assert "none" not in rows
        assert len(hub.requests) == seen  # nothing asked of the hub after the downloads
        assert len(hub.file_requests("GET")) == 2


def test_download_refuses_a_path_and_explains_a_bad_name(tmp_path):
    env = offline_env(tmp_path)
    path = cl_lsp("download", "./codellama-13b.gguf", env=env)
    assert path.returncode == 2 and path.stdout == ""
    assert path.stderr.startswith(
        "cl-lsp: nothing to download: ./codellama-13b.gguf is a file path."
    )
    unknown = cl_lsp("download", "codellama-70b", env=env)
    assert unknown.returncode == 1
    assert unknown.stderr.startswith(
        "cl-lsp: unknown model name 'codellama-70b' (from the command line). The known names "
        "are codellama-7b, codellama-13b, codellama-7b-instruct, codellama-13b-instruct"
    )
    offline = cl_lsp("download", "codellama-13b", env=env)
    assert offline.returncode == 1
    assert offline.stderr == (
        f"cl-lsp: the model codellama-13b ({C13}/codellama-13b.Q4_K_M.gguf) (from the command "
        "line) could not be downloaded (HF_HUB_OFFLINE is set and the file is not in the Hugging "
        "Face cache). Run `cl-lsp download codellama-13b` when online, or use a local GGUF file.\n"
    )
    shown = cl_lsp("--help", env=env).stdout
    assert "models" in shown and "download" in shown


def test_complete_takes_a_model_name_from_the_cache(tmp_path, x_model):
    with serve_hub({(C13, "codellama-13b.Q4_K_M.gguf"): x_model}) as hub:
        env = hub_cli_env(tmp_path, hub.endpoint)
        source = tmp_path / "v.py"
        source.write_text("value = \n")
        args = ("complete", str(source), "--line", "0", "--character", "8", "--json")
        first = cl_lsp(*args, "--model", "codellama-13b", env=env)
        assert first.returncode == 0, first.stderr
        assert "cl-lsp: downloading codellama-13b (" in first.stderr
        model = json.loads(first.stdout)["model"]
        assert Path(model).name == "codellama-13b.Q4_K_M.gguf"
        seen = len(hub.requests)
        again = cl_lsp(*args, env={**env, "CL_LSP_MODEL": "codellama-13b"})
        assert json.loads(again.stdout)["model"] == model
        assert len(hub.requests) == seen


def test_an_inference_server_reads_a_named_models_vocabulary_only_from_the_cache(tmp_path, x_model):
    from mock_inference import MockInferenceServer

    source = tmp_path / "v.py"
    source.write_text("value = \n")
    args = ("complete", str(source), "--line", "0", "--character", "8", "--json", "-v")
    with (
        serve_hub({(C13, "codellama-13b.Q4_K_M.gguf"): x_model}) as hub,
        MockInferenceServer() as server,
    ):
        env = hub_cli_env(tmp_path, hub.endpoint)
        remote = ("--engine", "llama-server", "--url", server.base_url, "--model", "codellama-13b")
        before = cl_lsp(*args, *remote, env=env)
        assert before.returncode == 0, before.stderr
        assert "is not in the Hugging Face cache, and an inference server's engine never " in (
            before.stderr
        )
        assert hub.requests == []  # never downloads
        assert json.loads(before.stdout)["prompt_tokens"][:2] != [BOS, PRE]  # the server's ids
        assert cl_lsp("download", "codellama-13b", env=env).returncode == 0
        after = cl_lsp(*args, *remote, env=env)
        assert after.returncode == 0, after.stderr
        assert json.loads(after.stdout)["prompt_tokens"][:3] == [BOS, PRE, SUF]  # Code Llama's
        assert "not in the Hugging Face cache" not in after.stderr
