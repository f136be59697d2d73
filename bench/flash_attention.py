"""Flash attention on the CPU: prompt and one-token speed of the completion model's context
with llama.cpp's flash attention "auto" (its default: on) and off, against llama_cpp.Llama
(the engine before engine/llama.py's own context; flash attention off).

    python bench/flash_attention.py [--model PATH | --layers 8] [--tokens 1500] [--chunk 32]
                                    [--steps 16] [--runs 2] [--threads N]

Each configuration runs in a process of its own: a prompt of `--tokens` tokens evaluated in
`--chunk`-token calls (the engine's chunks on a slow model) from an empty cache, then
`--steps` one-token calls after it, `--runs` times; medians are printed. Default model:
bench/make_model.py's 7B-shaped Q4_K_M with `--layers` layers (8: the mid-sized one).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from cl_lsp.config import physical_cores

CONFIGS = ("llama_cpp.Llama", "context, flash attention auto", "context, flash attention off")


def measure(config: str, args: argparse.Namespace) -> dict[str, list[float]]:
    """In this process: the timings of one configuration."""
    import llama_cpp

    from cl_lsp.engine.llama import CompletionModel, context_params, load_llama

    tokens = [1] + [(i * 7919) % 30000 + 100 for i in range(args.tokens)]
    steps = [500 + i for i in range(args.steps)]
    found: dict[str, list[float]] = {"prompt": [], "steps": []}
    if config == CONFIGS[0]:
        llm = load_llama(
            args.model, repack=True, n_ctx=4096, n_batch=512, n_ubatch=512,
            n_threads=args.threads, n_threads_batch=args.threads, verbose=False,
        )  # fmt: skip

        def reset() -> None:
            llm.reset()

        evaluate = llm.eval
    else:
        flash = (
            llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO
            if "auto" in config
            else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )

        def params(n_ctx: int, n_batch: int, threads: int) -> object:
            chosen = context_params(n_ctx, n_batch, threads)
            chosen.flash_attn_type = flash
            return chosen

        import cl_lsp.engine.llama as module

        module.context_params = params  # type: ignore[assignment]
        model = CompletionModel.load(
            Path(args.model), repack=True, n_ctx=4096, n_batch=512, threads=args.threads,
            gpu_layers=0, use_mmap=True,
        )  # fmt: skip

        def reset() -> None:
            model.keep(0)

        evaluate = model.evaluate
    for _ in range(args.runs):
        reset()
        started = time.perf_counter()
        for start in range(0, len(tokens), args.chunk):
            evaluate(tokens[start : start + args.chunk])
        found["prompt"].append(time.perf_counter() - started)
        started = time.perf_counter()
        for token in steps:
            evaluate([token])
        found["steps"].append(time.perf_counter() - started)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model")
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=1500)
    parser.add_argument("--chunk", type=int, default=32)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=physical_cores())
    parser.add_argument("--config", help=argparse.SUPPRESS)  # one configuration, in a child
    args = parser.parse_args()
    if args.config:
        print(json.dumps(measure(args.config, args)))
        return 0
    if not args.model:
        from make_model import ensure_model

        args.model = str(ensure_model(layers=args.layers))
    print(
        f"{Path(args.model).name}: {args.tokens}-token prompt in {args.chunk}-token calls, then "
        f"{args.steps} one-token calls; {args.threads} threads; median of {args.runs} runs\n"
    )
    print("| configuration | prompt (s) | one-token calls (s) |")
    print("|---|---:|---:|")
    base = None
    for config in CONFIGS:
        child = [sys.executable, __file__, "--config", config, "--model", args.model]
        for name in ("tokens", "chunk", "steps", "runs", "threads"):
            child += [f"--{name}", str(getattr(args, name))]
        out = subprocess.run(child, check=True, capture_output=True, text=True).stdout
        found = json.loads(out.strip().splitlines()[-1])
        prompt, steps = statistics.median(found["prompt"]), statistics.median(found["steps"])
        base = base or (prompt, steps)
        print(
            f"| {config} | {prompt:.2f} ({prompt / base[0]:.2f}x) | "
            f"{steps:.2f} ({steps / base[1]:.2f}x) |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
