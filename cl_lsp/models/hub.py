"""The Hugging Face cache and downloads into it: a name or Hub reference used from the cache with
no network, or downloaded once, with progress and a message for every fault."""

from __future__ import annotations

import errno
import inspect
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, final

from ..errors import first_line
from .files import (
    ACTIONS,
    DEFAULT,
    ENV_VAR,
    SOURCES,
    ModelError,
    ProgressCallback,
    _display,
    check_model_file,
    resolve_model_path,
)
from .names import (
    _REPO_ID,
    DEFAULT_FILE,
    DEFAULT_NAME,
    DEFAULT_QUANT,
    DEFAULT_REPO,
    HubDownload,
    ModelRef,
    _split_parts,
    default_model_ref,
    format_size,
    parse_model_ref,
    pick_quant,
)

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# The Hugging Face cache (no network)
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


def hub_cache_dir() -> Path:
    """Where huggingface_hub keeps its models (``HF_HUB_CACHE``, else ``$HF_HOME/hub``)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _cached_repo_files(repo: str) -> list[str]:
    """The complete files of *repo*'s ``main`` snapshot in the cache (paths in the repo)."""
    from huggingface_hub.file_download import repo_folder_name

    folder = hub_cache_dir() / repo_folder_name(repo_id=repo, repo_type="model")
    try:
        commit = (folder / "refs" / "main").read_text().strip()
    except OSError:
        return []
    snapshot = folder / "snapshots" / commit
    if not commit or not snapshot.is_dir():
        return []
    # is_file follows the snapshot's symlinks: only blobs that were completely downloaded.
    return [p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()]


def _cached_files(repo: str, files: tuple[str, ...]) -> Path | None:
    """The first of *files* if all of them are in the cache."""
    found = [cached_model(repo, name) for name in files]
    return found[0] if all(found) else None


def cached_model_file(ref: ModelRef) -> Path | None:
    """The cached file a name or Hub reference stands for, or None; no network access."""
    if ref.is_path:
        return None
    if ref.kind != "hub-quant":
        return _cached_files(ref.repo, _split_parts(ref.filename))
    try:
        files = pick_quant(ref.repo, ref.quant, _cached_repo_files(ref.repo), ref.source)
    except ModelError:  # nothing (or several) cached: the Hub decides
        return None
    return _cached_files(ref.repo, files)


# --------------------------------------------------------------------------------------------
# Downloads
# --------------------------------------------------------------------------------------------


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


def _progress_bar_class(report: ProgressCallback) -> type:
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


class _NotEnoughSpace(Exception):
    def __init__(self, cache: Path, free: int, needed: int) -> None:
        super().__init__(
            f"not enough disk space: the Hugging Face cache {_display(cache)} has "
            f"{format_size(free)} free and the model needs {format_size(needed)}"
        )


def _free_bytes(folder: Path) -> int | None:
    for where in (folder, *folder.parents):  # the cache folder may not exist yet
        try:
            return shutil.disk_usage(where).free
        except OSError:
            continue
    return None


def _is_space_problem(exc: BaseException) -> bool:
    return any(
        isinstance(e, _NotEnoughSpace) or (isinstance(e, OSError) and e.errno == errno.ENOSPC)
        for e in _exception_chain(exc)
    )


def _download_failed(
    ref: ModelRef, files: tuple[str, ...], reason: str, *, no_space: bool = False
) -> ModelError:
    """The message for a name or Hub reference that could not be downloaded: what, why, and
    what to do (the default model's words are the ones `cl-lsp download` users know)."""
    if ref.source == DEFAULT.label:
        what = f"no model configured and the default model {ref.repo}/{files[0]}"
    elif ref.kind == "hub-quant" and files:
        what = f"the model {ref.text} ({ref.repo}/{files[0]}, from {ref.source})"
    else:
        what = f"the model {ref.describe()} (from {ref.source})"
    if no_space:
        then = (
            "Free some space there, or point HF_HUB_CACHE (or HF_HOME) at a larger disk, "
            "then try again (nothing half-written is kept)."
        )
    elif ref.source == DEFAULT.label:
        then = (
            "Run `cl-lsp download` when online, or set model.path / --model / "
            f"{ENV_VAR} to a local GGUF file."
        )
    else:
        source = SOURCES.get(ref.source) or (ACTIONS if ref.source == ACTIONS.label else None)
        how = f" ({source.hint})" if source else ""
        then = f"Run `cl-lsp download {ref.text}` when online, or use a local GGUF file{how}."
    return ModelError(f"{what} could not be downloaded ({reason}). {then}")


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
        if isinstance(e, _NotEnoughSpace):
            return str(e)
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return (
                f"no space left on the disk of the Hugging Face cache {_display(hub_cache_dir())}"
            )
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
        if isinstance(e, OSError) and str(e).startswith("Consistency check failed"):
            return "the connection was cut before the whole file arrived"
        if isinstance(e, OSError) and e.strerror:
            where = f": {_display(e.filename)}" if e.filename else ""
            return f"{e.strerror}{where}"
    return first_line(exc)


def _plan(ref: ModelRef) -> HubDownload:
    """Ask the Hub which files to fetch and their size: one request per file (or one listing
    for ``OWNER/REPO:QUANT``), without huggingface_hub's retries, so an offline machine or an
    unreachable ``HF_ENDPOINT`` fails in about a second instead of after 20 s of retries."""
    import huggingface_hub
    from huggingface_hub import constants

    if ref.kind == "hub-quant":
        info = huggingface_hub.model_info(
            ref.repo, files_metadata=True, timeout=constants.HF_HUB_ETAG_TIMEOUT
        )
        sizes = {s.rfilename: s.size for s in info.siblings or ()}
        files = pick_quant(ref.repo, ref.quant, sizes, ref.source)
        known = [sizes.get(name) for name in files]
    else:
        files = _split_parts(ref.filename)
        known = [
            huggingface_hub.get_hf_file_metadata(huggingface_hub.hf_hub_url(ref.repo, name)).size
            for name in files
        ]
    size = None if any(s is None for s in known) else sum(s for s in known if s is not None)
    return HubDownload(ref, files, size)


def _download(plan: HubDownload, report: _Reporter) -> Path:
    """hf_hub_download each file, reporting bytes over all of them; the first file's path."""
    import huggingface_hub

    takes_bar = "tqdm_class" in inspect.signature(huggingface_hub.hf_hub_download).parameters
    report(0, plan.size)
    done, paths = 0, []
    for name in plan.files:

        def part(bytes_done: int, total: int | None, before: int = done) -> None:
            report(before + bytes_done, plan.size if len(plan.files) > 1 else total)

        kwargs = {"tqdm_class": _progress_bar_class(part)} if takes_bar else {}
        path = Path(huggingface_hub.hf_hub_download(plan.ref.repo, name, **kwargs))
        done += path.stat().st_size
        paths.append(path)
    report(done, done)
    return paths[0]


def fetch_model(
    ref: ModelRef,
    progress: ProgressCallback | None = None,
    on_download: Callable[[HubDownload], None] | None = None,
) -> Path:
    """The GGUF file a name or Hub reference stands for, downloaded once if need be.

    Uses the cached copy without any network access when there is one (``progress`` and
    ``on_download`` are not called then). Otherwise asks the Hub which files to fetch (without
    retries), checks there is room for them in the cache, calls ``on_download`` with what is
    about to be downloaded, and downloads with ``hf_hub_download``, calling
    ``progress(bytes_done, bytes_total)`` as bytes arrive and ending with
    ``progress(size, size)``. If *progress* has a ``close()`` method (like
    :class:`TerminalProgress`), it is called once the download ends, failed or not. The file is
    checked with :func:`check_model_file`. Raises :class:`ModelError` with a clear message.
    """
    if ref.is_path:
        return _check_path(ref)
    cached = cached_model_file(ref)
    if cached is not None:
        return _check_downloaded(ref, cached)

    from huggingface_hub import constants

    files = () if ref.kind == "hub-quant" else _split_parts(ref.filename)
    if constants.HF_HUB_OFFLINE:
        reason = "HF_HUB_OFFLINE is set and the file is not in the Hugging Face cache"
        raise _download_failed(ref, files, reason)
    report = _Reporter(progress)
    try:
        plan = _plan(ref)
        files = plan.files
        free = _free_bytes(hub_cache_dir())
        if plan.size is not None and free is not None and free < plan.size:
            raise _NotEnoughSpace(hub_cache_dir(), free, plan.size)
        if on_download is not None:
            on_download(plan)
        path = _download(plan, report)
    except ModelError:
        raise
    except Exception as exc:
        log.debug("downloading %s failed", ref.text, exc_info=True)
        reason = _reason(exc, constants.ENDPOINT)
        raise _download_failed(ref, files, reason, no_space=_is_space_problem(exc)) from exc
    finally:
        close = getattr(progress, "close", None)
        if callable(close):
            close()  # e.g. a TerminalProgress ends its line before an error is printed
    return _check_downloaded(ref, path)


def _check_downloaded(ref: ModelRef, path: Path) -> Path:
    try:
        return check_model_file(str(path), ref.source)
    except ModelError as exc:
        what = "the default model" if ref.source == DEFAULT.label else "the model"
        name = f"{ref.repo}/{path.name}" if ref.source == DEFAULT.label else ref.describe()
        raise ModelError(f"{what} {name} was downloaded to {_display(path)} but {exc}") from exc


def _check_path(ref: ModelRef) -> Path:
    try:
        return check_model_file(ref.text, ref.source)
    except ModelError as exc:
        if _REPO_ID.match(ref.text) and str(exc).startswith("model file not found"):
            raise ModelError(
                f"{exc}; a model on the Hugging Face Hub is written OWNER/REPO:QUANT, e.g. "
                f"{ref.text}:{DEFAULT_QUANT}"
            ) from None
        raise


def download_default_model(
    progress: ProgressCallback | None = None,
    *,
    repo: str = DEFAULT_REPO,
    filename: str = DEFAULT_FILE,
) -> Path:
    """The default model (or *repo*/*filename* in its place), downloaded once; see
    :func:`fetch_model`."""
    ref = ModelRef(DEFAULT_NAME, DEFAULT.label, "name", repo=repo, filename=filename)
    return fetch_model(ref, progress)


def locate_model(
    cli_path: str | None,
    setting_path: str | None,
    progress: ProgressCallback | None = None,
    on_download: Callable[[HubDownload], None] | None = None,
) -> Path:
    """The GGUF to load: what the model.path setting, else --model, else CL_LSP_MODEL, else
    the default model names: a file, or a name or Hub reference (from the Hugging Face cache,
    or downloaded once, calling `on_download` first). Blocking (file checks, maybe a download
    of gigabytes): run it off the event loop. Raises ModelError with a message for a person."""
    value, source = resolve_model_path(cli_path, setting_path)
    ref = parse_model_ref(value, source) if value is not None else default_model_ref()
    return fetch_model(ref, progress, on_download)


def locate_vocabulary(cli_path: str | None, setting_path: str | None) -> Path | None:
    """The GGUF whose vocabulary an inference-server engine reads: the configured file, or the
    cached copy of a configured name or Hub reference; never downloads. None when nothing is
    configured or the named model is not in the cache (logged). Raises ModelError for a bad
    path or an unknown name."""
    value, source = resolve_model_path(cli_path, setting_path)
    if value is None:
        return None
    ref = parse_model_ref(value, source)
    if ref.is_path:
        return _check_path(ref)
    cached = cached_model_file(ref)
    if cached is None:
        log.info(
            "%s (from %s) is not in the Hugging Face cache, and an inference server's engine "
            "never downloads a model: going on without a local vocabulary (`cl-lsp download %s` "
            "fetches it)",
            ref.describe(),
            source,
            ref.text,
        )
        return None
    return _check_downloaded(ref, cached)


def logged_progress(name: str, every: int = 10) -> ProgressCallback:
    """A progress callback that logs every *every* percent (for downloads nobody watches)."""
    last = -every

    def report(done: int, total: int | None) -> None:
        nonlocal last
        if total:
            percent = int(done * 100 / total)
            if percent >= last + every or done >= total:
                last = percent
                log.info("downloading %s: %d%% of %s", name, percent, format_size(total))

    return report
