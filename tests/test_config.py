"""Settings: typed, defaulted, validated; bad values are reported and ignored."""

from __future__ import annotations

import pytest

from cl_lsp.config import (
    PromptFormat,
    Settings,
    describe_settings,
    parse_settings,
    physical_cores,
)


def test_defaults():
    settings = Settings()
    assert settings.model.n_ctx == 4096
    assert settings.completion.prefix_tokens == 1500
    assert settings.completion.suffix_tokens == 500
    assert settings.completion.max_tokens == 128
    assert settings.completion.max_tokens_single_line == 48
    assert settings.completion.temperature == 0.0
    assert settings.completion.prompt_format is PromptFormat.AUTO
    assert settings.model.n_threads == 0 and physical_cores() >= 1  # one per physical core


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(
            {
                "completion": {"maxTokens": 64, "promptFormat": "psm"},
                "model": {"path": "/m.gguf", "nCtx": 2048},
            },
            id="plain",
        ),
        pytest.param(
            {
                "cl-lsp": {
                    "completion": {"maxTokens": 64, "promptFormat": "psm"},
                    "model": {"path": "/m.gguf", "nCtx": 2048},
                }
            },
            id="section",
        ),
    ],
)
def test_camel_case_settings(raw):
    settings, problems = parse_settings(raw)
    assert problems == []
    assert settings.completion.max_tokens == 64
    assert settings.completion.prompt_format is PromptFormat.PSM
    assert settings.model.path == "/m.gguf"
    assert settings.model.n_ctx == 2048
    assert settings.completion.suffix_tokens == 500  # untouched keys keep their defaults


@pytest.mark.parametrize(
    ("raw", "key", "check"),
    [
        pytest.param(
            {"completion": {"maxTokens": -3}},
            "completion.maxTokens",
            lambda s: s.completion.max_tokens == 128,
            id="out-of-range",
        ),
        pytest.param(
            {"completion": {"maxTokens": "many"}},
            "completion.maxTokens",
            lambda s: s.completion.max_tokens == 128,
            id="wrong-type",
        ),
        pytest.param(
            {"completion": {"enabled": "yes"}},
            "completion.enabled",
            lambda s: s.completion.enabled is True,
            id="not-a-bool",
        ),
        pytest.param(
            {"completion": {"promptFormat": "fim"}},
            "completion.promptFormat",
            lambda s: s.completion.prompt_format is PromptFormat.AUTO,
            id="bad-enum",
        ),
        pytest.param({"model": 7}, "model", lambda s: s.model.n_ctx == 4096, id="not-an-object"),
        pytest.param(
            {"completion": {"tempreature": 1}},
            "completion.tempreature",
            lambda s: s.completion.temperature == 0.0,
            id="unknown-key",
        ),
    ],
)
def test_bad_values_are_reported_and_ignored(raw, key, check):
    settings, problems = parse_settings(raw)
    assert len(problems) == 1 and problems[0].startswith(key)
    assert check(settings)


def test_bad_values_keep_the_previous_setting_and_good_ones_apply():
    current, _ = parse_settings({"completion": {"maxTokens": 200}})
    new, problems = parse_settings({"completion": {"maxTokens": 0, "temperature": 0.2}}, current)
    assert new.completion.max_tokens == 200
    assert new.completion.temperature == 0.2
    assert "keeping 200" in problems[0]


def test_whole_numbers_given_as_floats_are_accepted():
    settings, problems = parse_settings({"model": {"nCtx": 2048.0}})
    assert problems == [] and settings.model.n_ctx == 2048


def test_every_setting_is_documented():
    rows = describe_settings()
    keys = {key for key, _, _ in rows}
    assert {"model.path", "model.nCtx", "completion.maxTokens", "completion.promptFormat"} <= keys
    assert all(doc for _, _, doc in rows)


def test_the_readme_documents_every_setting():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for key, default, _ in describe_settings():
        assert f"| `{key}` | `{default}` |" in readme, key


def test_engine_settings_parse_and_actions_default_to_the_completion_engine():
    from cl_lsp.config import EngineKind
    from cl_lsp.engine.endpoint import Endpoint

    raw = {
        "engine": {"kind": "llama-server", "url": "http://gpu:8080/", "apiKeyEnv": "TEAM_KEY"},
        "actions": {"engine": {"model": "codellama-13b-instruct"}},
    }
    settings, problems = parse_settings(raw)
    assert problems == []
    assert settings.engine.kind is EngineKind.LLAMA_SERVER and settings.engine.verify_tls
    completions = Endpoint.for_completions(settings.engine)
    actions = Endpoint.for_actions(settings.engine, settings.actions.engine)
    assert completions.url == actions.url == "http://gpu:8080"
    assert actions.model == "codellama-13b-instruct" and actions.api_key_env == "TEAM_KEY"
    assert actions.setting == "actions.engine" and completions.setting == "engine"
    # Another kind of server for actions does not inherit the completion server's URL.
    other, _ = parse_settings({"actions": {"engine": {"kind": "ollama"}}}, settings)
    assert Endpoint.for_actions(other.engine, other.actions.engine).url == "http://127.0.0.1:11434"


def test_a_bad_engine_kind_keeps_the_previous_one():
    settings, problems = parse_settings({"engine": {"kind": "tgi", "timeoutMs": 5}})
    assert settings.engine.kind.value == "local" and settings.engine.timeout_ms == 10000
    assert len(problems) == 2 and "'tgi' is not one of" in problems[0]
