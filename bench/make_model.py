"""Build the benchmark model: random weights in Code Llama 7B's exact shape, quantized Q4_K_M.

The real ``codellama-7b.Q4_K_M.gguf`` cannot be fetched offline, but its CPU cost depends
only on its shape and tensor types, not on the weight values. This writes a file with
the same architecture (32 layers, n_embd 4096, 32 heads, n_ff 11008, 16384-token training
context, rope base 1e6), the same vocabulary (the real Llama SentencePiece vocab extended
to Code Llama's 32016 tokens, FIM tokens 32007-32010) and llama.cpp's Q4_K_M tensor-type
mix, with random quantized blocks (~4.08 GB, a few tens of seconds to write). See
``tests/assets.py:build_codellama_gguf`` (``dtype="q4_k_m"``), the one source of truth
for the vocabulary, metadata and tensor layout.

    python bench/make_model.py [--out PATH] [--layers 32] [--dtype q4_k_m|q4_k] [--force]
                               [--verify]   # then load it and greedily generate 8 tokens

Other bench scripts::

    from make_model import ensure_model   # bench/ is on sys.path when run as bench/x.py
    model_path = ensure_model()            # builds on first use, then reuses the file

Needs the test vocab (``python tests/assets.py``). Output goes to ``bench/.models/``
(git-ignored).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = ROOT / "bench" / ".models"

sys.path.insert(0, str(ROOT / "tests"))
import assets  # tests/assets.py: vocab + GGUF builder

N_LAYER_7B = assets.CODELLAMA_7B_SHAPE["n_layer"]
DEFAULT_DTYPE = "q4_k_m"
SEED = 0


def default_path(layers: int = N_LAYER_7B, dtype: str = DEFAULT_DTYPE) -> Path:
    """``bench/.models/codellama-7b-shape.Q4_K_M.gguf`` (layer count in the name if not 32)."""
    tag = "" if layers == N_LAYER_7B else f"-{layers}L"
    return MODELS_DIR / f"codellama-7b-shape{tag}.{dtype.upper()}.gguf"


DEFAULT_PATH = default_path()


def model_kwargs(layers: int = N_LAYER_7B, dtype: str = DEFAULT_DTYPE) -> dict[str, Any]:
    """Arguments of :func:`assets.build_codellama_gguf` for the benchmark model."""
    if layers < 1:
        raise ValueError("layers must be >= 1")
    return {**assets.CODELLAMA_7B_SHAPE, "n_layer": layers, "dtype": dtype}


def _log(msg: str) -> None:
    print(f"[make_model] {msg}", file=sys.stderr, flush=True)


def ensure_model(
    path: Path | str | None = None,
    *,
    layers: int = N_LAYER_7B,
    dtype: str = DEFAULT_DTYPE,
    force: bool = False,
) -> Path:
    """Path of the benchmark model, building it first if it is missing or has the wrong
    size (or ``force``). Writing goes to ``<path>.part``, renamed when complete, so an
    interrupted build never leaves a truncated model behind."""
    kwargs = model_kwargs(layers, dtype)
    path = Path(path) if path is not None else default_path(layers, dtype)
    expected = assets.codellama_gguf_size(**kwargs)
    if not force and path.is_file():
        size = path.stat().st_size
        if size == expected:
            return path
        _log(f"{path} has {size} bytes, expected {expected}: rebuilding")
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.stat().st_size if path.is_file() else 0
    free = shutil.disk_usage(path.parent).free + old
    if free < expected + (256 << 20):
        raise OSError(f"not enough disk space for {path}: need {expected} bytes, {free} free")
    _log(f"building {path} ({expected / 1e9:.2f} GB, {layers} layers, {dtype}) ...")
    t0 = time.perf_counter()
    assets.build_codellama_gguf(path, seed=SEED, **kwargs)
    _log(f"built in {time.perf_counter() - t0:.1f} s")
    assert path.stat().st_size == expected, (path, path.stat().st_size, expected)
    return path


def verify(path: Path | str, n_threads: int = 2) -> None:
    """Load ``path`` with llama.cpp and greedily generate 8 tokens (raises if none come)."""
    from cl_lsp.engine import repack
    from cl_lsp.engine.llama import load_llama

    t0 = time.perf_counter()
    use = repack.decide(Path(path), "auto").repack  # AMX Xeons crash with repacked weights
    llm = load_llama(path, repack=use, n_ctx=512, n_threads=n_threads, verbose=False)
    t1 = time.perf_counter()
    prompt = llm.tokenize(b"def fibonacci(n):\n", add_bos=True)
    out: list[int] = []
    for tok in llm.generate(prompt, temp=0.0, top_k=1, repeat_penalty=1.0):
        out.append(tok)
        if len(out) == 8:
            break
    t2 = time.perf_counter()
    llm.close()
    if len(out) != 8:
        raise RuntimeError(f"{path}: generation stopped after {len(out)} tokens")
    print(
        f"verify: load {t1 - t0:.2f} s, {len(prompt)}-token prompt + 8 tokens in {t2 - t1:.2f} s:"
        f" {out}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=None, help=f"default: {DEFAULT_PATH}")
    ap.add_argument("--layers", type=int, default=N_LAYER_7B, help="number of blocks (32)")
    ap.add_argument(
        "--dtype",
        choices=assets.QUANT_DTYPES,
        default=DEFAULT_DTYPE,
        help="q4_k_m: llama.cpp's Q4_K_M mix (default); q4_k: Q4_K everywhere",
    )
    ap.add_argument("--force", action="store_true", help="rebuild even if the file is valid")
    ap.add_argument("--verify", action="store_true", help="load it and generate 8 tokens")
    args = ap.parse_args(argv)
    try:
        path = ensure_model(args.out, layers=args.layers, dtype=args.dtype, force=args.force)
    except (assets.AssetMissingError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    size = path.stat().st_size
    print(f"{path}\t{size} bytes ({size / 1e9:.2f} GB)")
    if args.verify:
        verify(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
