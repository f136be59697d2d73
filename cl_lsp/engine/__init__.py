"""The model behind completions and code actions: the `Engine` interface and its llama.cpp
implementation in this process (`LocalEngine`)."""

from .generation import PREFILL_CHUNK_SECONDS, PREFILL_FIRST_CHUNK, PREFILL_MIN_CHUNK
from .interface import (
    Engine,
    EngineCounters,
    EngineError,
    EngineState,
    Generation,
    GenerationRequest,
    ModelFileChanged,
    ModelSession,
    Priority,
    Sampling,
    Tokenizer,
    Writer,
    Written,
    stop_after_piece,
)
from .llama import FileIdentity, route_native_logs
from .local import LocalEngine
from .tokenizer import LineCache, Vocabulary
from .writer import LocalWriter

__all__ = [
    "PREFILL_CHUNK_SECONDS",
    "PREFILL_FIRST_CHUNK",
    "PREFILL_MIN_CHUNK",
    "Engine",
    "EngineCounters",
    "EngineError",
    "EngineState",
    "FileIdentity",
    "Generation",
    "GenerationRequest",
    "LineCache",
    "LocalEngine",
    "LocalWriter",
    "ModelFileChanged",
    "ModelSession",
    "Priority",
    "Sampling",
    "Tokenizer",
    "Vocabulary",
    "Writer",
    "Written",
    "route_native_logs",
    "stop_after_piece",
]
