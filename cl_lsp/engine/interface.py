"""What the completion pipeline and the code actions need from a model, whoever runs it.

`Engine` is the interface: load a model, tokenize (`Tokenizer`), generate a completion from
prompt ids, write a code action (`Writer`). The llama.cpp engine in this process (`local.py`)
implements it; an inference-server backend streaming tokens over HTTP can too: nothing here
assumes the model is in-process, and a tokenizer may be local or remote.

Completions and code actions take turns through `Priority`: the CPU goes to whoever is typing.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from ..config import ActionSettings, ModelSettings, camel_dict
from .kv_cache import Reuse, Run

T = TypeVar("T")


class EngineError(Exception):
    """The model could not be loaded or run; the message is for a person."""


class ModelFileChanged(EngineError):
    """The model file changed on disk since it was loaded; it was not touched."""


class Stopped(Exception):
    """An evaluation was stopped by its cancel flag, inside the model's call."""


class EngineState(str, enum.Enum):
    EMPTY = "empty"
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True)
class GenerationRequest:
    tokens: tuple[int, ...]
    max_tokens: int
    temperature: float = 0.0
    stop_at_newline: bool = False
    heal: str = ""  # the answer must start with this text (token healing); it is stripped
    max_seconds: float | None = None  # wall-clock cap on sampling, after the prompt
    # Called with the text so far at each newline; an index there ends the generation.
    stop_check: Callable[[str], int | None] | None = field(default=None, compare=False)
    cancel: threading.Event = field(default_factory=threading.Event, compare=False)
    text: str = ""  # the prompt as text, for servers that take no token ids
    stop_ids: frozenset[int] = frozenset()  # the FIM family's end tokens, besides the model's
    reuse_min_run: int = 0  # keep cached runs of this many tokens at new positions (0: off)
    draft: int = 0  # most tokens drafted from the prompt per check (0: no drafting)


def stop_after_piece(request: GenerationRequest, text: str, piece: str) -> tuple[str, str] | None:
    """The text kept and the stop reason if the generation ends with ``piece`` (the text so
    far ends with it), else None: the newline stop (single-line) and the block-end stop
    (``request.stop_check``) look at each piece that holds a newline. The token cap, the
    deadline and the model's own end tokens are the sampler's. Pure, so a benchmark can feed
    scripted output through the very rules the model's output meets."""
    if "\n" not in piece:
        return None
    if request.stop_at_newline:
        return text, "newline"
    if request.stop_check is not None and (cut := request.stop_check(text)) is not None:
        return text[:cut], "end_of_block"
    return None


@dataclass(frozen=True)
class Generation:
    text: str
    token_ids: tuple[int, ...]
    prompt_tokens: int
    evaluated_tokens: int  # prompt tokens actually run through the model (not in the KV cache)
    # "eot", "max_tokens", "newline", "end_of_block", "timeout", "cancelled", "context_full",
    # "empty_prompt"
    stop_reason: str
    seconds: float
    stopped_at: float = 0.0  # time.monotonic() when generation ended
    # Pieces a text stream gave without token ids (OpenAI, Ollama): the count of tokens there.
    streamed_pieces: int = 0

    @property
    def generated_tokens(self) -> int:
        return len(self.token_ids) or self.streamed_pieces


@dataclass(frozen=True)
class Written:
    text: str
    prompt_tokens: int
    generated_tokens: int
    stop_reason: str  # "eos", "max_tokens", "cancelled"
    seconds: float


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen: a penalty on recent tokens, then greedy when the
    temperature is 0, else top-k, top-p, min-p and the temperature (seeded if `seed` is set)."""

    temperature: float = 0.0
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0  # 1.0: none
    penalty_last_n: int = 64
    seed: int | None = None


@dataclass
class EngineCounters:
    generations_started: int = 0
    generations_cancelled: int = 0
    prompt_tokens: int = 0
    evaluated_tokens: int = 0
    generated_tokens: int = 0
    reused_tokens: int = 0  # prompt tokens kept from the cache at another position
    drafted_tokens: int = 0
    accepted_tokens: int = 0  # drafted tokens the model agreed with

    def as_dict(self) -> dict[str, int]:
        return camel_dict(self)


@dataclass
class WarmUpCounters:
    started: int = 0
    skipped: int = 0  # something else wanted the model first
    preempted: int = 0  # stopped by a request or an action
    tokens: int = 0  # prompt tokens evaluated ahead of requests

    def as_dict(self) -> dict[str, int]:
        return camel_dict(self)


class Priority:
    """Completions first: a code action being written waits while a completion is queued or
    running, and resumes when the last one finishes.

    Completions are counted from the event loop (`completion_started` when a request is
    queued, `completion_finished` when it is done); the writer calls `wait_turn` between
    tokens. `wake` ends a wait at once after its cancel flag was set; a flag set by someone
    who does not call it (a `threading.Event` cannot notify a condition) is seen within
    CANCEL_CHECK_SECONDS.
    """

    CANCEL_CHECK_SECONDS = 0.01

    def __init__(self) -> None:
        self._turn = threading.Condition()
        self._completions = 0

    @property
    def completions(self) -> int:
        """Completion requests queued or running."""
        return self._completions

    def completion_started(self) -> None:
        with self._turn:
            self._completions += 1

    def completion_finished(self) -> None:
        with self._turn:
            self._completions -= 1
            if self._completions == 0:
                self._turn.notify_all()

    def wake(self) -> None:
        """Let waiting writers look at their cancel flags now."""
        with self._turn:
            self._turn.notify_all()

    def wait_turn(self, cancel: threading.Event) -> bool:
        """Wait while a completion is queued or running; False once `cancel` is set."""
        with self._turn:
            while self._completions > 0 and not cancel.is_set():
                self._turn.wait(self.CANCEL_CHECK_SECONDS)
        return not cancel.is_set()


class Tokenizer(Protocol):
    """The model's tokenizer as the prompts use it (see `tokenizer.py`, and
    `completion/prompts.py` and `completion/families.py` for the prompts)."""

    n_vocab: int
    bos: int
    eos: int
    add_bos: bool
    stop_ids: frozenset[int]  # the model's own end tokens (a family's come with the request)
    space_prefix: bool  # encoding adds SentencePiece's implicit leading space
    fim_ids: Mapping[str, int]  # FIM tokens llama.cpp found ("pre", "suf", "mid"), by role
    model_name: str  # the model's file name (or the served model's name)
    placeholder_ids: bool  # ids are stand-ins (no vocabulary): prompts go as text

    def encode(self, text: str) -> list[int]:
        """User text to ids: implicit leading space, no BOS, special tokens as text."""
        ...

    def token_id(self, text: str) -> int | None:
        """The id of the one token spelled `text` (a control token's text), if any."""
        ...

    def token_text(self, token: int) -> str:
        """The vocabulary's spelling of a token."""
        ...

    def count(self, text: str) -> int: ...

    def piece(self, token: int) -> bytes: ...

    def text_of(self, token: int) -> str: ...

    def heal_candidates(self, remaining: str) -> list[int]:
        """Tokens whose text is a prefix of `remaining` or starts with it."""
        ...

    def close(self) -> None: ...


class ModelSession(Protocol):
    """One model's KV cache and scores, as the completion loop drives it (see `llama.py`)."""

    n_ctx: int
    can_shift: bool  # cached entries can move to other positions

    @property
    def held(self) -> Sequence[int]:
        """The tokens the cache holds, by position."""
        ...

    def rearrange(self, reuse: Reuse) -> None:
        """Keep what `reuse` keeps of the cache, its runs set aside until `place`d."""
        ...

    def place(self, run: Run) -> None:
        """Put a run set aside back, right after the tokens held."""
        ...

    def forget_aside(self) -> None: ...

    def keep(self, length: int) -> None:
        """Forget everything after the first `length` tokens held."""
        ...

    def evaluate(
        self, tokens: Sequence[int], *, outputs: bool = False, stop: threading.Event | None = None
    ) -> None:
        """Run `tokens` after those held (scores for each if `outputs`, else for the last);
        raises `Stopped` when `stop` is set meanwhile, keeping nothing of the call."""
        ...

    def logits(self, index: int = -1) -> Any:
        """The scores of every token as the next one after output `index` (by token id)."""
        ...

    def sampler(self, sampling: Sampling) -> TokenSampler: ...

    def close(self) -> None: ...


class TokenSampler(Protocol):
    greedy: bool  # the most likely token every time (the only case drafts are checked)

    def pick(self, index: int = -1) -> int:
        """The next token after output `index` of the last evaluation."""
        ...

    def close(self) -> None: ...


class Writer(Protocol):
    """Writes one code action's answer: a chat prompt, then a long generation."""

    n_ctx: int
    max_tokens: int

    def count(self, text: str) -> int: ...

    def prompt(self, system: str, user: str) -> list[int]: ...

    def text_of(self, tokens: list[int]) -> str: ...

    def generate(
        self, tokens: list[int], *, on_text: Callable[[str], None] | None = None
    ) -> Written: ...


class Engine(Protocol):
    """A model that completes code and writes code actions; see the module docstring."""

    vocab: Tokenizer | None
    state: EngineState
    error: str | None
    model_path: Path | None
    n_ctx: int
    counters: EngineCounters
    busy: threading.Event  # set while a generation runs
    prefill_rate: float | None  # prompt tokens/s, if measured
    actions_started: int
    heals: bool  # constrains an answer to start with given text (token healing)
    warms: bool  # evaluates prompts ahead of requests (`warm`)

    @property
    def ready(self) -> bool: ...

    async def load(self, path: Path, settings: ModelSettings) -> None: ...

    def load_blocking(self, path: Path, settings: ModelSettings) -> None: ...

    def no_model(self, message: str) -> None: ...

    def model_file_changed(self) -> bool: ...

    async def generate(self, request: GenerationRequest) -> Generation: ...

    async def warm(self, request: GenerationRequest) -> int:
        """Bring the request's prompt into the model's cache ahead of time, at the lowest
        priority (0: not done, e.g. the model runs elsewhere)."""
        ...

    def held_tokens(self) -> Sequence[int]:
        """The prompt tokens the model's cache holds, as far as cl-lsp knows (may be empty)."""
        ...

    def generate_blocking(self, request: GenerationRequest) -> Generation: ...

    async def write(
        self, job: Callable[[Writer], T], settings: ActionSettings, cancel: threading.Event
    ) -> T: ...

    def status(self) -> dict[str, Any]: ...

    def close(self) -> None: ...
