"""Whether llama.cpp may repack a model's weights, decided without risking the server.

llama.cpp's CPU backend can copy quantized weights into "extra" buffer types laid out for the
CPU's widest instructions (AVX-512, AMX...). On some CPUs the natively built library crashes as
soon as it evaluates two or more tokens with such weights: on Xeons whose flags include AMX,
Q4_K and Q4_1 models die in `decode` (SIGSEGV; llama.cpp's own `llama-server` dies with SIGILL
on the same file). A crash inside llama.cpp would take the editor's server with it, so with
`model.repack` = "auto" (the default) the answer comes from a probe: a child process loads the
model with repacking and evaluates a short batch. Its verdict is cached per llama.cpp build,
CPU and set of weight types (`$XDG_CACHE_HOME/cl-lsp/repack.json`), so the probe runs once, and
a crash means one log line and no repacking. Files whose weights are all F32/F16/BF16 have
nothing to repack and are not probed.

The loading itself (`use_extra_bufts`) is the llama.cpp adapter's, `engine/llama.py`.
Repacking off keeps the weights in the shared, read-only file mapping (less memory); on
(where it works) trades memory for speed. BENCHMARKS.md has the figures.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

log = logging.getLogger(__name__)

PROBE_TIMEOUT_SECONDS = 600.0  # a 13B model loads and repacks in well under this on 2 cores
PROBE_BATCH = 8  # tokens evaluated at once: the crash needs two or more
CACHE_FILE = "repack.json"
# GGML type ids (ggml.h) of weights llama.cpp never repacks.
UNPACKED_TYPES = frozenset({"F32", "F16", "BF16"})
GGML_TYPE_NAMES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    6: "Q5_0",
    7: "Q5_1",
    8: "Q8_0",
    9: "Q8_1",
    10: "Q2_K",
    11: "Q3_K",
    12: "Q4_K",
    13: "Q5_K",
    14: "Q6_K",
    15: "Q8_K",
    16: "IQ2_XXS",
    17: "IQ2_XS",
    18: "IQ3_XXS",
    19: "IQ1_S",
    20: "IQ4_NL",
    21: "IQ3_S",
    22: "IQ2_S",
    23: "IQ4_XS",
    24: "I8",
    25: "I16",
    26: "I32",
    27: "I64",
    28: "F64",
    29: "IQ1_M",
    30: "BF16",
    34: "TQ1_0",
    35: "TQ2_0",
    39: "MXFP4",
}


class GgufError(ValueError):
    """The file is not a GGUF this module can read."""


@dataclass(frozen=True)
class RepackDecision:
    repack: bool
    reason: str  # for the log and `cl-lsp.status`


# -- reading a GGUF's tensor types --------------------------------------------------------------

# GGUF metadata value types: fixed sizes by type id; 8 is a string, 9 an array.
_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_LIMIT = 1 << 24  # no count or string length in a sane header comes near this


def weight_types(path: Path | str) -> frozenset[str]:
    """The GGML types of the tensors in a GGUF file, read from its header alone."""
    with open(path, "rb") as file:
        return frozenset(_read_tensor_types(file))


def _read_tensor_types(file: BinaryIO) -> Iterator[str]:
    if file.read(4) != b"GGUF":
        raise GgufError("not a GGUF file")
    (version,) = _unpack(file, "<I")
    if version < 2:
        raise GgufError(f"GGUF version {version} is too old")
    n_tensors, n_kv = _unpack(file, "<QQ")
    if n_tensors > _LIMIT or n_kv > _LIMIT:
        raise GgufError("implausible GGUF header")
    for _ in range(n_kv):
        _skip_string(file)
        (kind,) = _unpack(file, "<I")
        _skip_value(file, kind)
    for _ in range(n_tensors):
        _skip_string(file)
        (n_dims,) = _unpack(file, "<I")
        if n_dims > 8:
            raise GgufError("implausible tensor shape")
        file.seek(8 * n_dims, os.SEEK_CUR)
        (kind,) = _unpack(file, "<I")
        file.seek(8, os.SEEK_CUR)  # data offset
        yield GGML_TYPE_NAMES.get(kind, f"type{kind}")


def _unpack(file: BinaryIO, fmt: str) -> tuple[int, ...]:
    size = struct.calcsize(fmt)
    data = file.read(size)
    if len(data) != size:
        raise GgufError("the GGUF header is cut short")
    return struct.unpack(fmt, data)


def _skip_string(file: BinaryIO) -> None:
    (length,) = _unpack(file, "<Q")
    if length > _LIMIT:
        raise GgufError("implausible string in the GGUF header")
    file.seek(length, os.SEEK_CUR)


def _skip_value(file: BinaryIO, kind: int) -> None:
    if kind in _SCALAR_SIZES:
        file.seek(_SCALAR_SIZES[kind], os.SEEK_CUR)
    elif kind == 8:
        _skip_string(file)
    elif kind == 9:
        element, count = _unpack(file, "<IQ")
        if count > _LIMIT or element == 9:
            raise GgufError("implausible array in the GGUF header")
        if element in _SCALAR_SIZES:
            file.seek(_SCALAR_SIZES[element] * count, os.SEEK_CUR)
        else:
            for _ in range(count):
                _skip_value(file, element)
    else:
        raise GgufError(f"unknown GGUF value type {kind}")


# -- the verdict --------------------------------------------------------------------------------


def decide(
    path: Path,
    mode: str,
    *,
    cache_dir: Path | None = None,
    probe: Callable[[Path], tuple[bool, str]] | None = None,
) -> RepackDecision:
    """Repack or not for `path` under the `model.repack` setting ("auto", "on", "off")."""
    if mode == "on":
        return RepackDecision(True, "model.repack is on")
    if mode == "off":
        return RepackDecision(False, "model.repack is off")
    try:
        types = weight_types(path)
    except (OSError, GgufError) as error:  # loading will say what is wrong with the file
        return RepackDecision(False, f"weights unreadable ({error})")
    quantized = sorted(types - UNPACKED_TYPES)
    if not quantized:
        return RepackDecision(True, "no quantized weights (nothing to repack)")
    key = probe_key(quantized)
    cache = (cache_dir or default_cache_dir()) / CACHE_FILE
    verdicts = _read_cache(cache)
    if key in verdicts:
        verdict = verdicts[key]
        return RepackDecision(bool(verdict["repack"]), f"cached probe: {verdict['reason']}")
    safe, reason = (probe or run_probe)(path)
    if reason != "timeout":  # a slow machine is no verdict on the build
        verdicts[key] = {"repack": safe, "reason": reason, "types": quantized}
        _write_cache(cache, verdicts)
    if not safe:
        log.warning(
            "llama.cpp crashed evaluating %s weights repacked for this CPU (%s); "
            "loading without repacking (model.repack)",
            "/".join(quantized),
            reason,
        )
    return RepackDecision(safe, f"probe: {reason}")


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cl-lsp"


def probe_key(quantized: list[str]) -> str:
    """Identifies what the crash depends on: the llama.cpp build, the CPU, the weight types."""
    from .llama import build_identity

    parts = ["|".join(build_identity()), _cpu_identity(), ",".join(quantized)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def _cpu_identity() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            wanted = {"model name", "flags", "Features", "CPU implementer", "CPU part"}
            seen: dict[str, str] = {}
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() in wanted:
                    seen.setdefault(key.strip(), value.strip())
            return repr(sorted(seen.items()))
    except OSError:
        import platform

        return platform.processor() or platform.machine()


def _read_cache(cache: Path) -> dict[str, Any]:
    try:
        data = json.loads(cache.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(cache: Path, verdicts: dict[str, Any]) -> None:
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_name(f".{cache.name}.{os.getpid()}")
        partial.write_text(json.dumps(verdicts, indent=1), encoding="utf-8")
        partial.replace(cache)
    except OSError as error:
        log.info("could not save the repack verdict in %s: %s", cache, error)


def run_probe(path: Path, timeout: float = PROBE_TIMEOUT_SECONDS) -> tuple[bool, str]:
    """Load `path` with repacking in a child process and evaluate a short batch there."""
    # Not `-m cl_lsp.engine.repack`: the package imports this module first, and runpy warns.
    command = [sys.executable, "-c", PROBE_CHILD, str(path)]
    log.info("checking whether llama.cpp can repack %s on this CPU (once)", path.name)
    try:
        child = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False, "timeout"
    return verdict_of(child.returncode, child.stderr.decode(errors="replace"))


def verdict_of(returncode: int, stderr: str) -> tuple[bool, str]:
    if returncode == 0:
        return True, "repacked weights evaluate"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return False, f"crashed with {name}"
    last = stderr.strip().splitlines()[-1:] or [f"exit code {returncode}"]
    return False, f"failed: {last[0][:200]}"


def probe_child(path: str) -> int:
    """The child's side of `run_probe`: crash here rather than in the server."""
    from .llama import evaluate_repacked

    evaluate_repacked(path, PROBE_BATCH)
    return 0


#: What the child runs (``python -c PROBE_CHILD PATH``).
PROBE_CHILD = (
    "import sys; from cl_lsp.engine.repack import probe_child; sys.exit(probe_child(sys.argv[1]))"
)
