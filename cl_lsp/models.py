"""Finding the GGUF model file, and fetching the default model when none is configured.

Resolution order for the model path: the ``model.path`` editor setting (the newer word: an
editor can correct it with ``workspace/didChangeConfiguration`` without a restart), then
``--model`` on the command line, then the ``CL_LSP_MODEL`` environment variable. When none is set the default
model (:data:`DEFAULT_REPO` / :data:`DEFAULT_FILE`) is used from the standard Hugging Face cache,
downloaded there once with ``huggingface_hub`` (which honours ``HF_HOME``, ``HF_HUB_CACHE``,
``HF_ENDPOINT``, ``HF_HUB_OFFLINE``, ``HF_TOKEN`` ...).

Every failure a person can fix is raised as :class:`ModelError`, whose message says what is wrong
and what to do about it. This module is plain domain code: it knows nothing about LSP. Download
progress is reported through a ``progress(bytes_done, bytes_total)`` callback that the server
forwards to ``$/progress`` and the command line draws with :func:`cl_lsp.progress_bar.terminal_progress`.

``huggingface_hub`` is imported lazily: it is slow to import and only needed for the default model.
Note that it reads its environment variables (``HF_ENDPOINT``, ``HF_HOME``, ``HF_HUB_OFFLINE``,
timeouts) once, when it is first imported.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, final

from .errors import first_line

log = logging.getLogger(__name__)

DEFAULT_REPO = "TheBloke/CodeLlama-7B-GGUF"
DEFAULT_FILE = "codellama-7b.Q4_K_M.gguf"

ENV_VAR = "CL_LSP_MODEL"
GGUF_MAGIC = b"GGUF"

ProgressCallback = Callable[[int, "int | None"], None]
"""``progress(bytes_done, bytes_total)``; ``bytes_total`` is ``None`` while unknown."""

_HOW_TO_SET = "set model.path in the settings, pass --model, or set CL_LSP_MODEL"


class ModelError(Exception):
    """A model problem the user can fix; ``str(error)`` says what is wrong and what to do."""


@dataclass(frozen=True)
class ModelSource:
    """Where a model path came from. ``label`` is the name used in messages."""

    label: str
    hint: str
    """How the user changes this source."""

    def __str__(self) -> str:
        return self.label


CLI = ModelSource("--model", "pass a different --model")
SETTING = ModelSource("model.path setting", "change model.path in the editor settings")
ENV = ModelSource(ENV_VAR, f"change or unset the {ENV_VAR} environment variable")
DEFAULT = ModelSource(
    "default", "run `cl-lsp download`, or set model.path / --model / CL_LSP_MODEL"
)
SOURCES: dict[str, ModelSource] = {s.label: s for s in (SETTING, CLI, ENV, DEFAULT)}
"""The sources by label, in precedence order."""


# --------------------------------------------------------------------------------------------
# Resolution and validation
# --------------------------------------------------------------------------------------------

_VAR_RE = re.compile(r"\$(\w+)|\$\{([^}]*)\}")


def _expand(path: str, env: Mapping[str, str]) -> str:
    """Expand ``$VAR`` / ``${VAR}`` from *env* (unknown ones are left alone) and a leading ``~``."""

    def var(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return env.get(name, match.group(0))

    path = _VAR_RE.sub(var, path)
    if path == "~" or path.startswith(("~/", "~" + os.sep)):
        home = env.get("HOME") or os.path.expanduser("~")
        return home + path[1:]
    return os.path.expanduser(path)  # ~user/...


def resolve_model_path(
    cli_path: str | None,
    setting_path: str | None,
    env: Mapping[str, str] = os.environ,
) -> tuple[str | None, str]:
    """Pick the configured model path: ``model.path``, then ``--model``, then ``CL_LSP_MODEL``.

    Blank values count as unset. Returns ``(path, source label)`` with ``~`` and environment
    variables expanded, or ``(None, "default")`` when nothing is configured. The path is not
    checked here; see :func:`check_model_file`.
    """
    for value, source in ((setting_path, SETTING), (cli_path, CLI), (env.get(ENV_VAR), ENV)):
        if value is not None and value.strip():
            return _expand(value.strip(), env), source.label
    return None, DEFAULT.label


def _display(path: str | os.PathLike[str]) -> str:
    """A path for messages, with the home directory shortened to ``~``."""
    text = os.fspath(path)
    home = os.path.expanduser("~")
    if home not in ("", "~", os.sep) and (text == home or text.startswith(home + os.sep)):
        return "~" + text[len(home) :]
    return text


def _describe_header(head: bytes) -> str:
    """Say what a file that is not GGUF looks like, judging by its first bytes."""
    if not head:
        return "the file is empty (an interrupted download?)"
    stripped = head.lstrip().lower()
    if stripped.startswith((b"<!doctype", b"<html", b"<head", b"<?xml", b"<")):
        return (
            "it looks like an HTML page (a saved web page or error page?); download the .gguf "
            "file itself, e.g. the Hugging Face 'resolve' link rather than the 'blob' page"
        )
    if stripped.startswith(b"version https://git-lfs"):
        return "it is a Git LFS pointer, not the model; run `git lfs pull` or download the file"
    if stripped.startswith((b"{", b"[")):
        return "it looks like JSON text"
    if head[:4] in (b"lmgg", b"fmgg", b"tjgg", b"algg", b"ggml", b"ggmf", b"ggjt", b"ggla"):
        return "it is an old GGML/GGJT model; llama.cpp needs GGUF, so get a .gguf version"
    if head[:2] == b"PK":
        return "it is a ZIP archive (a PyTorch checkpoint?); convert it to GGUF first"
    if len(head) >= 9 and head[8:9] == b"{":
        return "it looks like a safetensors file; convert it to GGUF first"
    if len(head) < len(GGUF_MAGIC):
        return f"the file is only {len(head)} byte(s) long"
    return f"it starts with {head[:16]!r}"


def _file_kind(mode: int) -> str:
    kinds = (
        (stat.S_ISFIFO, "named pipe (FIFO)"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISSOCK, "socket"),
    )
    return next((name for test, name in kinds if test(mode)), "special file")


def check_model_file(path: str, source: str) -> Path:
    """Check that *path* (configured via *source*) is a readable GGUF file; return it as a Path.

    Raises :class:`ModelError` when it is missing, a directory or any other file that is not a
    regular file (a FIFO, a device, /dev/stdin), unreadable, or not GGUF
    (the first four bytes of a GGUF file are ``b"GGUF"``).
    """
    p = Path(path)
    shown = _display(p)
    where = f"from {source}; " if source else ""
    try:
        # stat, never open, before knowing it is a regular file: opening a FIFO blocks, and
        # /dev/stdin would read the protocol's own input.
        mode = p.stat().st_mode
    except FileNotFoundError:
        broken = " (a broken symbolic link)" if p.is_symlink() else ""
        raise ModelError(f"model file not found: {shown}{broken} ({where}{_HOW_TO_SET})") from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ModelError(
            f"cannot read model file: {shown} ({reason}; {where}{_HOW_TO_SET})"
        ) from exc
    if stat.S_ISDIR(mode):
        candidates = sorted(p.glob("*.gguf"))[:3]
        hint = (
            "; it contains " + ", ".join(c.name for c in candidates)
            if candidates
            else "; point it at a .gguf file"
        )
        raise ModelError(
            f"model path is a directory, not a GGUF file: {shown} ({where}{_HOW_TO_SET}){hint}"
        )
    if not stat.S_ISREG(mode):
        raise ModelError(
            f"model path is not a regular file: {shown} is a {_file_kind(mode)} "
            f"({where}{_HOW_TO_SET} to a .gguf file)"
        )
    try:
        with p.open("rb") as f:
            head = f.read(64)
    except PermissionError:
        raise ModelError(
            f"cannot read model file: {shown} (permission denied; {where}fix the file's "
            f"permissions, or {_HOW_TO_SET} to a readable file)"
        ) from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ModelError(
            f"cannot read model file: {shown} ({reason}; {where}{_HOW_TO_SET})"
        ) from exc
    if head[:4] != GGUF_MAGIC:
        raise ModelError(
            f"not a GGUF file: {shown} ({where}{_describe_header(head)}). "
            f"cl-lsp needs a Code Llama model in GGUF format; {_HOW_TO_SET} to a .gguf file."
        )
    return p


# --------------------------------------------------------------------------------------------
# The default model
# --------------------------------------------------------------------------------------------


def cached_model(repo: str, filename: str) -> Path | None:
    """The file from *repo* if it is already in the Hugging Face cache (no network access)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, filename)
    # It may also return a sentinel meaning "known not to exist upstream".
    if isinstance(found, str) and os.path.isfile(found):
        return Path(found)
    return None


def cached_default_model() -> Path | None:
    """The default model if it is already in the Hugging Face cache (no network access)."""
    return cached_model(DEFAULT_REPO, DEFAULT_FILE)


class _Reporter:
    """Forwards progress to the user's callback, never letting the callback break a download."""

    def __init__(self, callback: ProgressCallback | None) -> None:
        self.callback = callback
        self.last: tuple[int, int | None] | None = None

    def __call__(self, done: int, total: int | None) -> None:
        if self.callback is None or self.last == (done, total):
            return
        self.last = (done, total)
        try:
            self.callback(done, total)
        except Exception:
            log.warning("progress callback failed; no more progress reports", exc_info=True)
            self.callback = None


_TQDM_DISPLAY_METHODS = frozenset({"refresh", "clear", "display", "unpause", "moveto", "write"})


def _progress_bar_class(report: _Reporter) -> type:
    """A tqdm look-alike that ``huggingface_hub`` drives (``tqdm_class=``), feeding *report*.

    ``hf_hub_download`` creates the bar with ``total=``/``initial=`` and calls ``update(n)`` per
    chunk written (plain HTTP: per 10 MiB chunk; Xet: per progress report, where it may also set
    ``bar.total``). Not subclassing huggingface_hub's tqdm keeps it from being disabled or drawn
    when stderr is not a terminal (it is a pipe under an editor). Having ``update_transfer`` makes
    the Xet downloader use this one bar for both network and disk bytes; only disk bytes are
    counted. Other tqdm methods it may call are accepted and ignored.
    """

    @final
    class _HubProgress:
        def __init__(
            self, *args: Any, total: float | None = None, initial: float = 0, **kwargs: Any
        ) -> None:
            self.n = int(initial or 0)
            self.total = None if total is None else int(total)
            self._report()

        def _report(self) -> None:
            report(self.n, None if self.total is None else int(self.total))

        def update(self, n: float | None = 1) -> bool:
            self.n += int(n or 0)
            self._report()
            return True

        def reset(self, total: float | None = None) -> None:
            self.n = 0
            if total is not None:
                self.total = int(total)
            self._report()

        def update_transfer(self, n: float | None = 1) -> None:
            pass

        def close(self) -> None:
            pass

        def __enter__(self) -> _HubProgress:
            return self

        def __exit__(self, *exc: object) -> None:
            self.close()

        def __getattr__(self, name: str) -> Callable[..., None]:
            # set_postfix_str, set_description, refresh, ...: nothing to draw.
            if name.startswith("set_") or name in _TQDM_DISPLAY_METHODS:
                return lambda *args, **kwargs: None
            raise AttributeError(name)

    return _HubProgress


def _download_failed(repo: str, filename: str, reason: str) -> ModelError:
    return ModelError(
        f"no model configured and the default model {repo}/{filename} could not be downloaded "
        f"({reason}). Run `cl-lsp download` when online, or set model.path / --model / "
        f"{ENV_VAR} to a local GGUF file."
    )


def _exception_chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _reason(exc: BaseException, endpoint: str) -> str:
    """A short, human reason for a failed download (works with httpx, httpx2 and requests)."""
    from huggingface_hub import errors

    def is_a(e: BaseException, name: str) -> bool:
        cls = getattr(errors, name, None)
        return isinstance(cls, type) and isinstance(e, cls)

    def named(e: BaseException, *names: str) -> bool:
        return any(klass.__name__ in names for klass in type(e).__mro__)

    chain = _exception_chain(exc)
    for e in chain:
        if is_a(e, "OfflineModeIsEnabled"):
            return "HF_HUB_OFFLINE is set and the file is not in the Hugging Face cache"
        if is_a(e, "GatedRepoError"):
            return f"the repository is gated on {endpoint}; log in with `hf auth login`"
        if is_a(e, "RepositoryNotFoundError"):
            return f"repository not found on {endpoint}"
        if is_a(e, "RevisionNotFoundError"):
            return f"revision not found on {endpoint}"
        if is_a(e, "RemoteEntryNotFoundError") or is_a(e, "EntryNotFoundError"):
            return f"file not found on {endpoint}"
        if is_a(e, "FileMetadataError"):
            return (
                f"{endpoint} does not answer like a Hugging Face Hub; check HF_ENDPOINT and any "
                "proxy or firewall"
            )
        if named(e, "ProxyError"):
            return f"proxy error while contacting {endpoint}: {first_line(e)}"
        if named(e, "ConnectTimeout", "ReadTimeout", "Timeout", "TimeoutException"):
            return f"{endpoint} did not answer in time"
        if named(e, "ConnectError", "ConnectionError", "NetworkError"):
            return f"cannot connect to {endpoint}"
        if is_a(e, "HfHubHTTPError"):
            response = getattr(e, "response", None)
            status = getattr(response, "status_code", None)
            return f"{endpoint} answered HTTP {status}" if status else first_line(e)
    for e in chain:
        if isinstance(e, OSError) and e.strerror:
            where = f": {_display(e.filename)}" if e.filename else ""
            return f"{e.strerror}{where}"
    return first_line(exc)


def download_default_model(
    progress: ProgressCallback | None = None,
    *,
    repo: str = DEFAULT_REPO,
    filename: str = DEFAULT_FILE,
) -> Path:
    """Return the default model, downloading it once into the Hugging Face cache if needed.

    Uses the cached copy without any network access when there is one (``progress`` is not
    called then). Otherwise downloads with ``hf_hub_download`` and calls
    ``progress(bytes_done, bytes_total)`` as bytes arrive, ending with
    ``progress(size, size)``. If *progress* has a ``close()`` method (like
    :class:`TerminalProgress`), it is called once the download ends, failed or not.
    Raises :class:`ModelError` with a clear message when it cannot.

    Before downloading, the file's metadata is fetched once without retries, so an offline
    machine or unreachable ``HF_ENDPOINT`` fails in about a second instead of going through
    ``hf_hub_download``'s retry loop (five retries with backoff: over 20 s).
    """
    cached = cached_model(repo, filename)
    if cached is not None:
        return cached

    import huggingface_hub
    from huggingface_hub import constants

    endpoint = constants.ENDPOINT
    if constants.HF_HUB_OFFLINE:
        raise _download_failed(
            repo, filename, "HF_HUB_OFFLINE is set and the file is not in the Hugging Face cache"
        )

    report = _Reporter(progress)
    kwargs: dict[str, Any] = {}
    if "tqdm_class" in inspect.signature(huggingface_hub.hf_hub_download).parameters:
        kwargs["tqdm_class"] = _progress_bar_class(report)
    try:
        url = huggingface_hub.hf_hub_url(repo, filename)
        metadata = huggingface_hub.get_hf_file_metadata(url)
        if metadata.size is not None:
            report(0, metadata.size)
        path = Path(huggingface_hub.hf_hub_download(repo, filename, **kwargs))
        size = path.stat().st_size
        report(size, size)
    except Exception as exc:
        log.debug("downloading %s/%s failed", repo, filename, exc_info=True)
        raise _download_failed(repo, filename, _reason(exc, endpoint)) from exc
    finally:
        close = getattr(progress, "close", None)
        if callable(close):
            close()  # e.g. a TerminalProgress ends its line before an error is printed

    try:
        return check_model_file(str(path), DEFAULT.label)
    except ModelError as exc:
        raise ModelError(
            f"the default model {repo}/{filename} was downloaded to {_display(path)} but {exc}"
        ) from exc


def locate_model(
    cli_path: str | None,
    setting_path: str | None,
    progress: ProgressCallback | None = None,
    on_download: Callable[[], None] | None = None,
) -> Path:
    """The GGUF to load: the model.path setting, then --model, then CL_LSP_MODEL, then the
    default model (from the Hugging Face cache, or downloaded once, calling `on_download`
    first). Blocking (file checks, maybe a 4 GB download): run it off the event loop.
    Raises ModelError with a message for a person."""
    path, source = resolve_model_path(cli_path, setting_path)
    if path is not None:
        return check_model_file(path, source)
    cached = cached_default_model()
    if cached is None:
        if on_download is not None:
            on_download()
        cached = download_default_model(progress)
    return check_model_file(str(cached), "default model")
