"""The server's own tokenizer, for an inference-server engine without a local GGUF: the ids
are the server's (llama-server's and vLLM's ``/tokenize``), so prompts are token-exact all the
same. Each line is tokenized once (`LineCache`, where a sample shows that line-wise equals
whole-text tokenization), so a keystroke costs at most one short request for the line being
typed, made while the debounce runs; everything else comes from the cache.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from types import MappingProxyType

from .interface import EngineError
from .tokenizer import LineCache, has_space_prefix, line_cache_agrees

# (text, add_bos, parse_special) -> ids; raises EngineError with a message for a person.
TokenizeCall = Callable[[str, bool, bool], list[int]]


class ServerTokenizer:
    """`Tokenizer` over a server's tokenize endpoint (see the module docstring). Without the
    vocabulary there is no token healing (no server constrains an answer's start anyway)."""

    WHOLE_TEXT_CACHE = 256  # texts kept when line-wise caching does not hold

    fim_ids: Mapping[str, int] = MappingProxyType({})  # no metadata: found by token texts
    placeholder_ids = False

    def __init__(self, call: TokenizeCall, model_name: str = "") -> None:
        """Raises EngineError when the server has no usable tokenizer."""
        self._call = call
        if not call("x\n", False, False):
            raise EngineError("its tokenizer gives no tokens")
        self.n_vocab = 0  # unknown; nothing here needs it
        self.model_name = model_name
        bos = call("", True, False)
        self.bos = bos[0] if bos else -1
        self.add_bos = bool(bos)
        self.eos = -1  # the server stops at its model's end tokens itself
        self.stop_ids: frozenset[int] = frozenset()
        self._ids: dict[str, int | None] = {}
        self.space_prefix = has_space_prefix(self._tokenize)
        self._lines = LineCache(self._tokenize) if line_cache_agrees(self._tokenize) else None
        self._whole: OrderedDict[str, list[int]] = OrderedDict()

    def _tokenize(self, text: str) -> list[int]:
        return self._call(text, False, False) if text else []

    def token_id(self, text: str) -> int | None:
        """One token for `text` with special tokens parsed: a control token (no ordinary
        token is spelled ``▁<PRE>`` or ``<fim_prefix>``). Asked once per text."""
        if text not in self._ids:
            ids = self._call(text, False, True)
            self._ids[text] = ids[0] if len(ids) == 1 else None
        return self._ids[text]

    def token_text(self, token: int) -> str:
        return ""  # not asked: without metadata, families are found by `token_id`

    def encode(self, text: str) -> list[int]:
        if self._lines is not None:
            return self._lines.encode(text)
        cached = self._whole.get(text)
        if cached is None:
            cached = self._whole[text] = self._tokenize(text)
            if len(self._whole) > self.WHOLE_TEXT_CACHE:
                self._whole.popitem(last=False)
        return list(cached)

    def count(self, text: str) -> int:
        return len(self.encode(text))

    def piece(self, token: int) -> bytes:
        return b""  # answers stream as text

    def text_of(self, token: int) -> str:
        return ""

    def heal_candidates(self, remaining: str) -> list[int]:
        return []

    def close(self) -> None:
        pass
