"""What `cl-lsp models` lists: the known names and every GGUF already in the Hugging Face cache,
from the local disk only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .hub import hub_cache_dir
from .names import DEFAULT_QUANT, KNOWN_MODELS, THEBLOKE_QUANTS, KnownModel, _split_parts

# --------------------------------------------------------------------------------------------
# What is there: `cl-lsp models`
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CachedGguf:
    """A GGUF file in the Hugging Face cache."""

    reference: str
    """How to name it in model.path: ``codellama-13b:Q5_K_M`` or ``hf:OWNER/REPO/FILE.gguf``."""
    size: int
    path: Path


@dataclass(frozen=True)
class ModelListing:
    cache: Path
    known: list[tuple[KnownModel, CachedGguf | None]]
    """Each short name, with its cached default-quantization file if downloaded."""
    others: list[CachedGguf]
    """Every other complete GGUF file in the cache (split models: their first part, with the
    size of all parts)."""


def list_models() -> ModelListing:
    """The short names and what the Hugging Face cache holds; reads only the local disk."""
    from huggingface_hub import CacheNotFound, scan_cache_dir

    cache = hub_cache_dir()
    try:
        repos = scan_cache_dir(cache).repos
    except CacheNotFound:
        repos = frozenset()
    files: dict[tuple[str, str], CachedGguf] = {}
    sizes: dict[tuple[str, str], int] = {}
    for repo in sorted(repos, key=lambda r: r.repo_id.lower()):
        if repo.repo_type != "model":
            continue
        for revision in repo.revisions:
            for file in revision.files:
                name = file.file_path.relative_to(revision.snapshot_path).as_posix()
                if not name.lower().endswith(".gguf") or not file.file_path.is_file():
                    continue
                first = _split_parts(name)[0]
                key = (repo.repo_id, first)
                sizes[key] = sizes.get(key, 0) + file.size_on_disk
                if name == first:
                    files[key] = CachedGguf(
                        _reference(repo.repo_id, first), 0, revision.snapshot_path / first
                    )
    cached = {
        key: CachedGguf(entry.reference, sizes[key], entry.path) for key, entry in files.items()
    }
    known = [(m, cached.pop((m.repo, m.filename()), None)) for m in KNOWN_MODELS.values()]
    return ModelListing(cache, known, sorted(cached.values(), key=lambda c: c.reference.lower()))


def _reference(repo: str, filename: str) -> str:
    for known in KNOWN_MODELS.values():
        if known.repo.lower() == repo.lower():
            for quant in THEBLOKE_QUANTS:
                if filename == known.filename(quant):
                    return known.name if quant == DEFAULT_QUANT else f"{known.name}:{quant}"
    return f"hf:{repo}/{filename}"
