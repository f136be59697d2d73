"""Prompt-evaluation speed against chunk size: how small can a prompt chunk be before
llama.cpp's batched kernels slow down? (Sets the engine's PREFILL_MIN_CHUNK.)

    python bench/prefill_chunks.py [--model PATH] [--tokens 96] [--threads N] [4 8 16 32 48 96]

Default model: bench/make_model.py's 7B-shaped Q4_K_M GGUF (built on first use).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cl_lsp.config import physical_cores


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[4, 8, 16, 32, 48, 96])
    parser.add_argument("--model")
    parser.add_argument("--tokens", type=int, default=96, help="prompt tokens per size (96)")
    parser.add_argument("--threads", type=int, default=physical_cores())
    args = parser.parse_args()

    if args.model:
        model = Path(args.model)
    else:
        from make_model import ensure_model

        model = ensure_model()
    from cl_lsp.engine import repack
    from cl_lsp.engine.llama import load_llama

    use = repack.decide(model, "auto").repack  # AMX Xeons crash with repacked weights
    llm = load_llama(
        model,
        repack=use,
        n_ctx=2048,
        n_batch=512,
        n_ubatch=512,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        verbose=False,
    )
    rng = random.Random(0)
    tokens = [1] + [rng.randint(100, 30000) for _ in range(args.tokens + max(args.sizes))]
    print(f"model {model.name}, {args.threads} threads, {args.tokens} tokens per size")
    print(f"{'chunk':>6} {'tokens/s':>9} {'ms/chunk (median)':>18}")
    for size in args.sizes:
        llm.reset()
        done, per_chunk = 0, []
        started = time.perf_counter()
        while done < args.tokens:
            began = time.perf_counter()
            llm.eval(tokens[done : done + size])
            per_chunk.append(time.perf_counter() - began)
            done += size
        rate = done / (time.perf_counter() - started)
        print(f"{size:>6} {rate:>9.1f} {statistics.median(per_chunk) * 1000:>18.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
