"""Settings: one typed, fully defaulted tree, checked once.

Editors send settings as `initializationOptions` and `workspace/didChangeConfiguration`
(camelCase keys, optionally wrapped in a `"cl-lsp"` section). `parse_settings` turns such a
mapping into `Settings`, keeping the previous (or default) value for every key that is missing
or invalid, and returns one human-readable problem per rejected key so the server can tell the
user without refusing the rest.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, get_args, get_origin, get_type_hints


def physical_cores() -> int:
    """Physical cores available to this process (llama.cpp runs best with one thread each)."""
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        available = os.cpu_count() or 1
    cores: set[tuple[str, str]] = set()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            physical = core = ""
            for line in cpuinfo:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "physical id":
                    physical = value.strip()
                elif key == "core id":
                    core = value.strip()
                    cores.add((physical, core))
    except OSError:
        pass
    return max(1, min(available, len(cores) or available))


class PromptFormat(str, enum.Enum):
    """How the fill-in-the-middle prompt is laid out."""

    # SPM; when the prefix ends inside a name, the partial word leaves the prompt and the answer
    # is constrained to start with it (token healing), so the prompt ends at a token boundary as
    # in training and the KV cache survives typing the name. PSM where healing cannot apply.
    AUTO = "auto"
    SPM = "spm"  # SPM always, even when the prompt then ends inside a word
    PSM = "psm"  # PSM always: the prompt changes in the middle at every keystroke


class Template(str, enum.Enum):
    """Which fill-in-the-middle family's format the prompts use (`completion/families.py`)."""

    AUTO = "auto"  # the family the model's own tokens name
    PREFIX = "prefix"  # no FIM: continue the text before the cursor
    CODELLAMA = "codellama"
    STARCODER = "starcoder"  # StarCoder, StarCoder2, Granite Code
    DEEPSEEK_CODER = "deepseek-coder"
    CODEGEMMA = "codegemma"
    QWEN_CODER = "qwen2.5-coder"
    CODESTRAL = "codestral"


class RepackMode(str, enum.Enum):
    """Whether llama.cpp may repack quantized weights for this CPU (see `repack.py`)."""

    AUTO = "auto"  # repack where a one-time probe in a child process shows it works
    ON = "on"  # always: faster on most CPUs, but crashes some builds (AMX Xeons)
    OFF = "off"  # never: the weights stay in the shared file mapping


class EngineKind(str, enum.Enum):
    """Who runs the model (see `engine/remote.py` for the servers' wire formats)."""

    LOCAL = "local"  # llama.cpp in this process
    LLAMA_SERVER = "llama-server"  # llama.cpp's llama-server: /completion, token ids
    OPENAI = "openai"  # any OpenAI-compatible /v1/completions: vLLM, SGLang, TGI, LM Studio
    OLLAMA = "ollama"  # Ollama's /api/generate, raw text prompts


class PromptForm(str, enum.Enum):
    """How a prompt goes to an inference server."""

    AUTO = "auto"  # token ids where the server takes them and a vocabulary is at hand, else text
    TOKENS = "tokens"  # token ids always (an error where the server refuses them)
    TEXT = "text"  # the Code Llama text template always


def _range(low: float | None = None, high: float | None = None) -> dict[str, Any]:
    return {"range": (low, high)}


@dataclass(frozen=True)
class ModelSettings:
    path: str | None = None
    """Local GGUF file, or a model name (codellama-7b, codellama-13b, codellama-7b-instruct, codellama-13b-instruct; NAME:QUANT for another quantization), hf:OWNER/REPO/FILE.gguf or OWNER/REPO:QUANT, downloaded once into the Hugging Face cache; wins over --model, which is used without it, then CL_LSP_MODEL, then codellama-7b."""
    n_ctx: int = field(default=4096, metadata=_range(256, 131072))
    """Context window in tokens (prompt + generated text)."""
    n_threads: int = field(default=0, metadata=_range(0, 512))
    """CPU threads for the model; 0 means one per physical core."""
    n_batch: int = field(default=512, metadata=_range(8, 8192))
    """Prompt tokens evaluated per batch."""
    use_mmap: bool = True
    """Map the model file instead of reading it into memory."""
    gpu_layers: int = field(default=0, metadata=_range(-1, 1000))
    """Layers to offload to a GPU when llama.cpp was built with one (-1: all)."""
    repack: RepackMode = RepackMode.AUTO
    """Repack quantized weights for this CPU: "auto" (where a one-time check shows llama.cpp survives it), "on" or "off"."""


@dataclass(frozen=True)
class EngineSettings:
    kind: EngineKind = EngineKind.LOCAL
    """Who runs the model: "local" (llama.cpp in this process), "llama-server", "openai" (any OpenAI-compatible /v1/completions: vLLM, SGLang, TGI, LM Studio) or "ollama"."""
    url: str | None = None
    """The server's base URL as its own docs give it: http://host:8080 for llama-server, the /v1 base for OpenAI-compatible servers, http://host:11434 for Ollama."""
    model: str | None = None
    """The model name the server knows (OpenAI-compatible servers and Ollama need one)."""
    api_key_env: str | None = None
    """Name of the environment variable holding a bearer token for the server (never the token itself)."""
    prompt: PromptForm = PromptForm.AUTO
    """How prompts are sent: "auto" (token ids where the server takes them, tokenized with model.path's vocabulary or the server's /tokenize; else text), "tokens" or "text"."""
    cache_prompt: bool = True
    """Ask llama-server to keep the prompt in its KV cache and re-evaluate only what changed (cache_prompt, with a fixed slot per editor session)."""
    timeout_ms: int = field(default=10000, metadata=_range(100, 600000))
    """How long to wait for the server to connect or send the next piece of an answer."""
    verify_tls: bool = True
    """Check the server's TLS certificate (https URLs)."""


@dataclass(frozen=True)
class ActionEngineSettings:
    kind: EngineKind | None = None
    """Who writes code actions; null: the completion engine (engine.*). The other keys default to engine's."""
    url: str | None = None
    """The actions server's base URL; null: engine.url."""
    model: str | None = None
    """The actions server's model name, e.g. an instruct model; null: engine.model."""
    api_key_env: str | None = None
    """Environment variable with the actions server's bearer token; null: engine.apiKeyEnv."""


@dataclass(frozen=True)
class CompletionSettings:
    enabled: bool = True
    """Offer completions at all."""
    max_tokens: int = field(default=128, metadata=_range(1, 4096))
    """Most tokens generated for a multi-line suggestion."""
    max_tokens_single_line: int = field(default=48, metadata=_range(1, 4096))
    """Most tokens generated for a single-line suggestion."""
    temperature: float = field(default=0.0, metadata=_range(0.0, 2.0))
    """Sampling temperature; 0 picks the most likely token (deterministic)."""
    prefix_tokens: int = field(default=1500, metadata=_range(16, 100000))
    """Budget for the text before the cursor, in model tokens."""
    suffix_tokens: int = field(default=500, metadata=_range(0, 100000))
    """Budget for the text after the cursor, in model tokens."""
    psm_suffix_tokens: int = field(default=128, metadata=_range(0, 100000))
    """Budget for the suffix when the model's family prefers PSM (StarCoder, DeepSeek-Coder,
    Qwen2.5-Coder, CodeGemma): there the suffix comes after the cursor's text, so every
    keystroke evaluates it again."""
    prompt_format: PromptFormat = PromptFormat.AUTO
    """"auto" (the family's preferred layout: SPM where it was trained with it, with token
    healing inside a name), "spm" or "psm" (always that layout, where the family has it)."""
    template: Template = Template.AUTO
    """The fill-in-the-middle family: "auto" (detected from the model's tokens), "prefix" (no
    FIM), or a family: "codellama", "starcoder", "deepseek-coder", "codegemma",
    "qwen2.5-coder", "codestral" (for a server that gives no vocabulary, or an odd
    conversion)."""
    in_strings: bool = True
    """Complete inside string literals."""
    in_comments: bool = True
    """Complete inside comments."""
    debounce_ms: int = field(default=150, metadata=_range(0, 5000))
    """Wait this long after a request before starting the model; a newer request for the same
    document replaces the waiting one."""
    adaptive_debounce: bool = False
    """Fit the wait to the user's typing instead: 1.5 times the time within which 3 of 4
    recent keystrokes followed the one before, between 100 and 1000 ms (debounceMs until a
    few keystrokes have been seen)."""
    generation_timeout_ms: int = field(default=4000, metadata=_range(0, 600000))
    """Stop generating after this long and show what there is (0: no limit)."""
    stable_window: bool = True
    """Keep the start of the prefix window in place across requests so the model's KV cache
    stays valid (false: cut a fresh window every time)."""
    reuse: bool = True
    """Answer without the model when the user types what the shown suggestion starts with, or
    returns to text seen recently."""
    cache_reuse: int = field(default=64, metadata=_range(0, 100000))
    """After a cursor move, keep runs of at least this many prompt tokens that the model's
    cache holds at other positions, moved to their new ones, instead of evaluating them again
    (0: only the common start of the prompt is kept)."""
    cold_budget_ms: int = field(default=2000, metadata=_range(0, 600000))
    """At a place whose window the model's cache does not hold, answer first from a window
    small enough to evaluate in about this long (at the measured prompt speed); later requests
    there grow it, keeping what was evaluated (0: always the whole window)."""
    warm_up_ms: int = field(default=400, metadata=_range(0, 60000))
    """After this long without a request or an edit in a document (and after it opens),
    evaluate the window around its last cursor ahead of the next request, at the lowest
    priority: any request or code action stops it within milliseconds (0: never)."""
    draft_tokens: int = field(default=0, metadata=_range(0, 64))
    """At temperature 0, check up to this many tokens guessed from the prompt (what followed
    the last few tokens where they occurred before) in one batch with each token chosen; the
    same answer where llama.cpp's batch and one-token kernels agree, in fewer model passes
    (0: one token per pass; off by default: no faster on a 2-core CPU, BENCHMARKS.md)."""


@dataclass(frozen=True)
class ActionSettings:
    enabled: bool = True
    """Offer the code actions Explain, Fix, Add documentation and Write tests."""
    model: str | None = None
    """GGUF file or model name for code actions, as model.path takes them, e.g.
    codellama-7b-instruct or codellama-13b-instruct; without it, the completion model writes
    them."""
    max_tokens: int = field(default=512, metadata=_range(16, 8192))
    """Most tokens the model writes for one action."""
    temperature: float = field(default=0.2, metadata=_range(0.0, 2.0))
    """Sampling temperature for actions (0: the most likely token every time)."""
    n_ctx: int = field(default=4096, metadata=_range(512, 131072))
    """Context window for an action (instruction, code and answer); never more than the
    model was trained for."""
    engine: ActionEngineSettings = field(default_factory=ActionEngineSettings)


@dataclass(frozen=True)
class ContextSettings:
    enabled: bool = True
    """Show the model code from the workspace's other files (and other parts of this one):
    definitions of the names used around the cursor, similar code in open documents, recent
    edits. Only files inside the workspace folders, not ignored by .gitignore or `exclude`,
    not secrets, are read."""
    repo_tokens: int = field(default=512, metadata=_range(0, 32768))
    """Budget for that code in the prompt, in model tokens (counted with the model's
    tokenizer; 0: none)."""
    definitions: bool = True
    """Definitions of the names used around the cursor and of what the file imports."""
    similar: bool = True
    """The open documents' chunks most similar to the code around the cursor."""
    edits: bool = True
    """Recently edited lines in any open document."""
    exclude: tuple[str, ...] = ()
    """Glob patterns of files never read, matched against the path relative to its workspace
    folder and against the file name ("*.min.js", "vendor/**")."""
    max_file_kb: int = field(default=256, metadata=_range(1, 65536))
    """Files larger than this are not read."""
    index_mb: int = field(default=64, metadata=_range(1, 4096))
    """Memory the definitions index may take; files beyond it are left out."""


@dataclass(frozen=True)
class Settings:
    model: ModelSettings = field(default_factory=ModelSettings)
    engine: EngineSettings = field(default_factory=EngineSettings)
    completion: CompletionSettings = field(default_factory=CompletionSettings)
    actions: ActionSettings = field(default_factory=ActionSettings)
    context: ContextSettings = field(default_factory=ContextSettings)


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def camel_dict(record: object, *, leave_out: tuple[str, ...] = ()) -> dict[str, Any]:
    """A record's fields under camelCase keys, as `cl-lsp.status` reports them."""
    return {camel(name): value for name, value in vars(record).items() if name not in leave_out}


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


SECTION_NAMES = ("cl-lsp", "clLsp", "cl_lsp")


def parse_settings(raw: Any, base: Settings | None = None) -> tuple[Settings, list[str]]:
    """Overlay `raw` on `base`; return the new settings and the problems found.

    Every problem names the key, the bad value and what is used instead.
    """
    base = base or Settings()
    if raw is None:
        return base, []
    if isinstance(raw, Mapping):
        for name in SECTION_NAMES:
            if isinstance(raw.get(name), Mapping):
                raw = raw[name]
                break
    problems: list[str] = []
    settings = _overlay(base, raw, "", problems)
    return settings, problems


def _overlay(current: Any, raw: Any, where: str, problems: list[str]) -> Any:
    if not isinstance(raw, Mapping):
        problems.append(f"{where or 'settings'}: expected an object, got {raw!r}; ignored")
        return current
    hints = get_type_hints(type(current))
    fields = {f.name: f for f in dataclasses.fields(current)}
    changes: dict[str, Any] = {}
    for key, value in raw.items():
        name = snake(str(key)).replace("-", "_")
        path = f"{where}{key}"
        if name not in fields:
            problems.append(f"{path}: unknown setting; ignored")
            continue
        kind = hints[name]
        old = getattr(current, name)
        if dataclasses.is_dataclass(kind):
            changes[name] = _overlay(old, value, path + ".", problems)
            continue
        try:
            changes[name] = _coerce(value, kind, fields[name].metadata.get("range"))
        except ValueError as error:
            problems.append(f"{path}: {error}; keeping {_show(old)}")
    return dataclasses.replace(current, **changes)


def _show(value: Any) -> str:
    """A value as the user writes it in JSON settings."""
    if isinstance(value, enum.Enum):
        value = value.value
    return json.dumps(value)


def _coerce(value: Any, kind: Any, bounds: tuple[float | None, float | None] | None) -> Any:
    args = get_args(kind)
    if get_origin(kind) is not None and type(None) in args:  # Optional[X]
        if value is None:
            return None
        (kind,) = [arg for arg in args if arg is not type(None)]
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        allowed = [member.value for member in kind]
        if value not in allowed:
            raise ValueError(f"{value!r} is not one of {', '.join(map(repr, allowed))}")
        return kind(value)
    if get_origin(kind) is tuple:
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ValueError(f"expected a list of strings, got {value!r}")
        return tuple(value)
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise ValueError(f"expected a whole number, got {value!r}")
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"expected a number, got {value!r}")
        value = float(value)
    elif kind is str:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {value!r}")
        return value
    if bounds:
        low, high = bounds
        if (low is not None and value < low) or (high is not None and value > high):
            raise ValueError(f"{value!r} is outside {low}..{high}")
    return value


def describe_settings() -> list[tuple[str, str, str]]:
    """(camelCase key, default, description) for every setting, for docs and `--help`."""
    rows: list[tuple[str, str, str]] = []

    def walk(cls: type, prefix: str) -> None:
        instance = cls()
        hints = get_type_hints(cls)
        docs = _field_docs(cls)
        for f in dataclasses.fields(cls):
            key = prefix + camel(f.name)
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], key + ".")
            else:
                rows.append((key, _show(getattr(instance, f.name)), docs.get(f.name, "")))

    walk(Settings, "")
    return rows


def _field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings (the string literal right after each field)."""
    import ast
    import inspect
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, following in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[node.target.id] = following.value.value.strip()
    return docs
