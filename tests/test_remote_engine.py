"""The inference-server engine itself (`cl_lsp/engine/remote.py`) against the scripted mock:
no request storm while a server is down, a cancelled stream closed at once, and the stop
rules and faults read from the stream as it arrives."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
from mock_inference import MockInferenceServer, Reply

from cl_lsp.config import EngineKind, EngineSettings, ModelSettings
from cl_lsp.engine import GenerationRequest
from cl_lsp.engine.endpoint import Endpoint, EngineUnavailable
from cl_lsp.engine.health import BACKOFF_FIRST_SECONDS
from cl_lsp.engine.remote import RemoteEngine


@pytest.fixture
def mock() -> Iterator[MockInferenceServer]:
    with MockInferenceServer() as server:
        yield server
        assert server.errors == []


async def engine_for(mock: MockInferenceServer, kind=EngineKind.LLAMA_SERVER) -> RemoteEngine:
    url = mock.base_url + ("/v1" if kind is EngineKind.OPENAI else "")
    engine = RemoteEngine(
        Endpoint.for_completions(EngineSettings(kind=kind, url=url, model="codellama"))
    )
    await engine.load(None, ModelSettings())
    return engine


def request(**options) -> GenerationRequest:
    return GenerationRequest(tokens=(1, 2, 3), max_tokens=64, text="▁<PRE>x", **options)


async def test_a_down_server_gets_one_trial_request_per_backoff(mock):
    engine = await engine_for(mock)
    mock.script(*[Reply(status=503, error="overloaded")] * 3)
    with pytest.raises(EngineUnavailable) as first:
        await engine.generate(request())
    assert first.value.news and "HTTP 503: overloaded" in str(first.value)

    async def attempt() -> str:
        try:
            await engine.generate(request())
        except EngineUnavailable as error:
            return "news" if error.news else "quiet"
        return "answered"

    # Twenty editors keep typing while it is down: all answered at once, none reaches it.
    assert await asyncio.gather(*[attempt() for _ in range(20)]) == ["quiet"] * 20
    assert len(mock.generations) == 1
    # After the backoff, one of them tries it again; the rest still wait.
    await asyncio.sleep(BACKOFF_FIRST_SECONDS + 0.05)
    outcomes = await asyncio.gather(*[attempt() for _ in range(20)])
    assert len(mock.generations) == 2 and outcomes == ["quiet"] * 20
    assert engine.health.failures == 2  # the delay doubles
    assert engine.health.as_dict()["retryInSeconds"] > BACKOFF_FIRST_SECONDS
    engine.close()


async def test_the_first_success_after_an_outage_ends_it(mock):
    engine = await engine_for(mock)
    told: list[tuple[str, bool]] = []
    engine.on_health = lambda message, is_error: told.append((message, is_error))
    mock.script(Reply(status=500, error="boom"), Reply.text("ok\n"))
    with pytest.raises(EngineUnavailable):
        await engine.generate(request())
    await asyncio.sleep(BACKOFF_FIRST_SECONDS + 0.05)
    generation = await engine.generate(request())
    assert generation.text == "ok\n" and generation.stop_reason == "eot"
    assert [is_error for _, is_error in told] == [True, False]
    assert "answers again" in told[1][0]
    assert engine.health.state == "ok" and engine.health.failures == 0
    engine.close()


async def test_a_cancelled_generation_closes_its_stream_at_once(mock):
    engine = await engine_for(mock)
    mock.script(Reply.text("x " * 500, piece_delay=0.01))
    cancel = threading.Event()
    task = asyncio.ensure_future(engine.generate(request(cancel=cancel)))
    deadline = time.monotonic() + 5
    while not mock.generations or not mock.generations[0].pieces_sent:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.005)
    cancel.set()
    cancelled_at = time.monotonic()
    generation = await task
    assert generation.stop_reason == "cancelled"
    (served,) = mock.generations
    assert mock.wait_ended(served, 2) and served.end == "client_closed"
    assert served.closed_by_client_at - cancelled_at < 0.05
    assert engine.server.streams_closed == 1 and engine.counters.generations_cancelled == 1
    engine.close()


async def test_the_stop_rules_read_the_stream_as_it_arrives(mock):
    engine = await engine_for(mock, EngineKind.OPENAI)
    mock.script(Reply.text("a + b\nmore\n" * 20, piece_len=2, piece_delay=0.005))
    generation = await engine.generate(request(stop_at_newline=True))
    assert generation.text == "a + b\n" and generation.stop_reason == "newline"
    # Text without token ids: the pieces read are the tokens generated ("a ", "+ ", "b\n").
    assert generation.token_ids == () and generation.generated_tokens == 3
    (served,) = mock.generations
    assert served.body["stop"] == ["\n"]  # the server may stop first; the mock ignores it
    assert mock.wait_ended(served, 2) and served.end == "client_closed"
    engine.close()


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (Reply(pieces=["a", "b", "c"], disconnect_after=1), "llama-server at"),
        (Reply(pieces=["a"], garbage=b"{oops"), "not JSON"),
        (Reply(pieces=["a"], stream_error="slot unavailable"), "slot unavailable"),
    ],
    ids=["cut", "garbage", "error event"],
)
async def test_a_broken_stream_is_a_clear_error(mock, reply, message):
    engine = await engine_for(mock)
    mock.script(reply)
    with pytest.raises(EngineUnavailable, match=message):
        await engine.generate(request())
    assert engine.health.state == "down"
    engine.close()


async def test_an_api_key_variable_that_is_not_set_is_named(mock, monkeypatch):
    monkeypatch.delenv("CL_LSP_TEST_KEY", raising=False)
    settings = EngineSettings(
        kind=EngineKind.LLAMA_SERVER, url=mock.base_url, api_key_env="CL_LSP_TEST_KEY"
    )
    engine = RemoteEngine(Endpoint.for_completions(settings))
    await engine.load(None, ModelSettings())
    assert engine.health.state == "down"
    assert "CL_LSP_TEST_KEY" in (engine.health.error or "")
    engine.close()


async def test_the_servers_tokenizer_costs_a_keystroke_one_short_request(mock):
    from cl_lsp.engine.server_vocab import ServerTokenizer

    engine = await engine_for(mock)
    vocab = engine.vocab
    assert isinstance(vocab, ServerTokenizer) and engine.status()["prompt"] == "tokens"
    text = "".join(f"line {number} = {number} * 2\n" for number in range(60)) + "total = su"

    def tokenize_requests() -> int:
        return sum(1 for served in mock.requests if served.path == "/tokenize")

    assert vocab.encode(text) == mock.tokenize(text)  # the server's ids, whole
    before = tokenize_requests()
    assert vocab.encode(text + "m") == mock.tokenize(text + "m")  # a keystroke
    assert tokenize_requests() == before + 1
    assert vocab.encode(text + "m") == mock.tokenize(text + "m")  # the same text again
    assert tokenize_requests() == before + 1
    engine.close()


@pytest.fixture
def tls_mock(tmp_path) -> Iterator[MockInferenceServer]:
    """The mock over HTTPS with a self-signed certificate (made with openssl here)."""
    import shutil
    import ssl
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
        + ["-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with MockInferenceServer(tls=context) as server:
        yield server


async def test_an_untrusted_certificate_is_refused_unless_verification_is_off(tls_mock):
    settings = EngineSettings(kind=EngineKind.LLAMA_SERVER, url=tls_mock.base_url)
    engine = RemoteEngine(Endpoint.for_completions(settings))
    await engine.load(None, ModelSettings())
    assert engine.health.state == "down"
    assert "TLS with llama-server" in (engine.health.error or "")
    assert "engine.verifyTls" in (engine.health.error or "")
    assert not tls_mock.generations
    engine.close()

    trusting = RemoteEngine(Endpoint.for_completions(replace(settings, verify_tls=False)))
    await trusting.load(None, ModelSettings())
    tls_mock.script(Reply.text("ok\n"))
    assert (await trusting.generate(request())).text == "ok\n"
    trusting.close()
