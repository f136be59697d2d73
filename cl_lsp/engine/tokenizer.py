"""The completion model's tokenizer, exactly as the model's own: `Vocabulary` and its `LineCache`.

Tokenizing for context budgets and prompts happens on the caller's thread with a separate
vocabulary-only copy of the model, which shares nothing with the model's worker thread.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

from .llama import Weights

Encode = Callable[[str], list[int]]
"""SentencePiece-style encoding of user text: implicit leading space, no BOS, special=False."""


# "☺" is a single token in the Llama vocabulary, so "☺" + s encodes as [▁, ☺] + the
# encoding of s with no implicit space before it (codellama `Tokenizer.encode_infilling`).
NOSPACE_MARKER = "☺"


def nospace_tokens(
    encode: Encode, text: str, marker: Sequence[int] | None = None
) -> list[int] | None:
    """`text` encoded without SentencePiece's implicit leading space, as `encode("☺" + text)`
    minus the marker's tokens (`marker`: `encode("☺")`, if already known); None when the
    marker merges with the start of `text` (a vocabulary without this shortcut)."""
    if not text:
        return []
    if marker is None:
        marker = encode(NOSPACE_MARKER)
    tokens = encode(NOSPACE_MARKER + text)
    if tokens[: len(marker)] != list(marker):
        return None
    return tokens[len(marker) :]


def encode_nospace(encode: Encode, text: str) -> list[int]:
    """Encode without SentencePiece's implicit leading space (Code Llama's `encode_infilling`)."""
    tokens = nospace_tokens(encode, text)
    if tokens is None:  # the marker merged with the text: vocabulary differs
        raise ValueError("tokenizer cannot encode without the leading space")
    return tokens


class Vocabulary:
    """The model's tokenizer, usable from any one thread other than the worker."""

    def __init__(self, path: Path) -> None:
        self._model = Weights.load(path, vocab_only=True)
        self.n_vocab = self._model.n_vocab()
        self.bos = self._model.bos()
        self.eos = self._model.eos()
        self.add_bos = self._model.add_bos()
        self.model_name = Path(path).name
        self.placeholder_ids = False
        self.fim_ids = self._model.fim_ids()
        eot = self._model.eot()
        self.stop_ids = frozenset(
            token for token in (self.eos, eot) if token is not None and token >= 0
        )
        self.space_prefix = has_space_prefix(self._tokenize)
        self._ids: dict[str, int | None] = {}

        self._lines = LineCache(self._tokenize) if self._tokenizes_line_by_line() else None
        self._by_first_char: dict[str, list[tuple[int, str]]] | None = None

    def _tokenize(self, text: str) -> list[int]:
        if not text:
            return []
        return self._model.tokenize(text)

    def encode(self, text: str) -> list[int]:
        """User text to ids: implicit leading space (SentencePiece), no BOS, special=False.

        Exactly what the tokenizer gives for the whole text; computed line by line from a
        cache where that is provably the same (see `LineCache`), so a keystroke costs the
        tokenization of one line, not of the whole context window.
        """
        if self._lines is None:
            return self._tokenize(text)
        return self._lines.encode(text)

    def count(self, text: str) -> int:
        return len(self.encode(text))

    def token_id(self, text: str) -> int | None:
        if text not in self._ids:
            ids = self._model.tokenize(text, special=True)
            found = len(ids) == 1 and self._model.token_text(ids[0]) == text
            self._ids[text] = ids[0] if found else None
        return self._ids[text]

    def token_text(self, token: int) -> str:
        return self._model.token_text(token)

    def _tokenizes_line_by_line(self) -> bool:
        """True if no token but the newline byte contains a newline, so tokenization never
        crosses one (SentencePiece vocabularies like Llama's), and the line-wise encoding
        matches the whole-text one on a sample with the awkward cases."""
        for token in range(self.n_vocab):
            text = self._model.token_text(token)
            if "\n" in text or "\u010a" in text:  # GPT-2 style byte-level BPE spells \n as Ċ
                return False
        return line_cache_agrees(self._tokenize)

    def piece(self, token: int) -> bytes:
        return self._model.detokenize([token])

    def text_of(self, token: int) -> str:
        return self._model.detokenize([token]).decode("utf-8", errors="replace")

    def heal_candidates(self, remaining: str) -> list[int]:
        """Tokens whose text agrees with the start of `remaining`: a prefix of it, or
        `remaining` followed by more."""
        if self._by_first_char is None:
            index: dict[str, list[tuple[int, str]]] = {}
            for token in range(self.n_vocab):
                try:
                    text = self._model.detokenize([token]).decode("utf-8")
                except UnicodeDecodeError:  # a lone byte of a multi-byte character
                    continue
                if text:
                    index.setdefault(text[0], []).append((token, text))
            self._by_first_char = index
        return [
            token
            for token, text in self._by_first_char.get(remaining[:1], ())
            if text.startswith(remaining) or remaining.startswith(text)
        ]

    def close(self) -> None:
        self._model.close()


def has_space_prefix(tokenize: Callable[[str], list[int]]) -> bool:
    """True if encoding adds SentencePiece's implicit leading space (Llama's vocabulary does;
    byte-level BPE vocabularies and Gemma's do not)."""
    return nospace_tokens(tokenize, "x") not in (None, tokenize("x"))


def line_cache_agrees(tokenize: Callable[[str], list[int]]) -> bool:
    """True if `LineCache` over `tokenize` gives what tokenizing whole texts gives, on a sample
    with the awkward cases (the newline's own token, blank lines, tabs, CRLF, non-ASCII,
    control-token text)."""
    newline = tokenize("\n")
    if newline[-1:] != tokenize(NOSPACE_MARKER + "\n")[-1:]:
        return False
    cache = LineCache(tokenize)
    sample = (
        "\nimport os\n\n\ndef f(x):\n    return x  # é 😀\n\t\tif a:\r\n  b = '\\n'\n"
        "  \n<PRE> ☺ x\n"
    )
    return all(
        cache.encode(part) == tokenize(part)
        for part in (sample, sample[1:], sample[5:], "a\n", "\n", "  x\n\n")
    )


class _MarkerMerged(Exception):
    pass


class LineCache:
    """Whole-text encoding assembled from cached per-line encodings.

    Valid when no token spans a newline: then `enc(a + "\\n" + b)` is `enc(a + "\\n")`
    followed by the encoding of `b` without SentencePiece's implicit leading space. The first
    line keeps the implicit space; every later line is encoded without it (`nospace_tokens`:
    Code Llama's own trick, `"☺" + line` minus the tokens of `"☺"`).
    """

    LIMIT = 50_000
    BULK = 8  # from this many unseen lines on, one whole-text call beats a call per line

    def __init__(self, tokenize: Callable[[str], list[int]]) -> None:
        self._tokenize = tokenize
        self._marker = tokenize(NOSPACE_MARKER)
        self._newline = tokenize(NOSPACE_MARKER + "\n")[-1]  # no token but this one holds a newline
        self._first: dict[str, list[int]] = {}
        self._later: dict[str, list[int]] = {}

    def encode(self, text: str) -> list[int]:
        if not text:
            return []
        try:
            return self._encode(text)
        except _MarkerMerged:  # a line whose start merged with "☺": no shortcut for it
            return self._tokenize(text)

    def _encode(self, text: str) -> list[int]:
        lines = text.split("\n")
        last = len(lines) - 1
        if last >= self.BULK and self._mostly_unseen(lines):
            return self._encode_whole(text, lines)
        tokens = self._line(self._first, lines[0] + ("\n" if last else ""), first=True)
        for number, line in enumerate(lines[1:], start=1):
            tokens.extend(
                self._line(self._later, line + ("\n" if number < last else ""), first=False)
            )
        return tokens

    def _mostly_unseen(self, lines: list[str]) -> bool:
        unseen = sum(1 for line in lines[1:-1] if line + "\n" not in self._later)
        return unseen >= self.BULK

    def _encode_whole(self, text: str, lines: list[str]) -> list[int]:
        """Tokenize once and file each line's share in the cache (a window the cache has not
        seen, e.g. the first request at a new spot, costs one call instead of hundreds)."""
        tokens = self._tokenize(text)
        ends = [index + 1 for index, token in enumerate(tokens) if token == self._newline]
        if len(ends) != len(lines) - 1:  # cannot happen if the vocabulary check held
            return tokens
        if len(self._later) > self.LIMIT:
            self._later.clear()
        start = 0
        for number, end in enumerate(ends):
            self._cache_for(number)[lines[number] + "\n"] = tokens[start:end]
            start = end
        return tokens

    def _cache_for(self, number: int) -> dict[str, list[int]]:
        return self._first if number == 0 else self._later

    def _line(self, cache: dict[str, list[int]], line: str, *, first: bool) -> list[int]:
        tokens = cache.get(line)
        if tokens is None:
            if len(cache) > self.LIMIT:
                cache.clear()
            if first:
                tokens = self._tokenize(line)
            else:
                tokens = nospace_tokens(self._tokenize, line, self._marker)
                if tokens is None:
                    raise _MarkerMerged(line)
            cache[line] = tokens
        return list(tokens)


class ApproximateTokenizer:
    """Budgets without the model's vocabulary, for a server engine with no local GGUF: words
    and symbols cost one token per four characters (about what code costs in Llama's and
    StarCoder's vocabularies). Its ids are placeholders, never sent: prompts go to the server
    as text (see `completion/prompts.py`, `FimPrompt.text`)."""

    n_vocab = 0
    bos, eos = -1, -1
    add_bos = False  # the server adds it
    stop_ids: frozenset[int] = frozenset()
    space_prefix = False
    fim_ids: Mapping[str, int] = MappingProxyType({})
    placeholder_ids = True
    _PARTS = re.compile(r"\s+|\w+|[^\w\s]", re.UNICODE)

    def __init__(self, model_name: str = "") -> None:
        self.model_name = model_name  # the served model's name: the family's last resort

    def token_id(self, text: str) -> int | None:
        return None

    def token_text(self, token: int) -> str:
        return ""

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for part in self._PARTS.findall(text):
            ids.extend([hash(part) & 0x7FFFFFFF] * -(-len(part) // 4))
        return ids

    def count(self, text: str) -> int:
        return sum(-(-len(part) // 4) for part in self._PARTS.findall(text))

    def piece(self, token: int) -> bytes:
        return b""

    def text_of(self, token: int) -> str:
        return ""

    def heal_candidates(self, remaining: str) -> list[int]:
        return []

    def close(self) -> None:
        pass
