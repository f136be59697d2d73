"""What repacking weights buys and costs on this machine: tokens/s and memory, on and off.

Each configuration runs in its own child process (a crash there is a result, not the end of the
benchmark): load the model with `use_extra_bufts` on or off, evaluate a prompt in batches
(prefill) and then token by token (the shape of generation), and report tokens/s with the
child's peak RSS (VmHWM) and its anonymous / file-backed resident memory after the run.

    python bench/repack.py [--model PATH ...] [--runs 3] [--prompt 256] [--tokens 64]

Without --model it measures SmolLM2-135M (Q4_1, from the test assets) and a Q4_K_M model of
the Code Llama 7B shape built by bench/make_model.py (4 GB of disk, made once).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH.parent / "tests"))


def memory() -> dict[str, int]:
    wanted = ("VmHWM", "RssAnon", "RssFile")
    values = {}
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in wanted:
                values[key] = int(rest.split()[0]) * 1024
    return values


def child(path: str, repack: bool, prompt: int, tokens: int, batch: int) -> None:
    """One configuration; prints one JSON line."""
    from cl_lsp.config import physical_cores
    from cl_lsp.engine.llama import load_llama

    threads = physical_cores()
    started = time.perf_counter()
    llm = load_llama(
        path,
        repack=repack,
        n_ctx=prompt + tokens + 8,
        n_batch=batch,
        n_ubatch=batch,
        n_threads=threads,
        n_threads_batch=threads,
        verbose=False,
    )
    loaded = time.perf_counter() - started
    vocab = llm.n_vocab()
    ids = [1 + (i * 7919) % (vocab - 1) for i in range(prompt + tokens)]
    result = {"load_s": loaded}
    if batch > 1:
        began = time.perf_counter()
        llm.eval(ids[:prompt])
        result["prefill_tps"] = prompt / (time.perf_counter() - began)
        done = prompt
    else:  # repacked weights crash on batches here: evaluate the prompt one token at a time
        llm.reset()
        done = 0
    began = time.perf_counter()
    for token in ids[done : done + tokens]:
        llm.eval([token])
    result["decode_tps"] = tokens / (time.perf_counter() - began)
    result.update(memory())
    print(json.dumps(result), flush=True)


def run(path: Path, repack: bool, args: argparse.Namespace, batch: int) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        str(path),
        "--repack",
        str(int(repack)),
        "--prompt",
        str(args.prompt),
        "--tokens",
        str(args.tokens),
        "--batch",
        str(batch),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600, check=False)
    if done.returncode != 0:
        signal = f"signal {-done.returncode}" if done.returncode < 0 else f"exit {done.returncode}"
        return {"crashed": signal}
    return json.loads(done.stdout.strip().splitlines()[-1])


def summary(runs: list[dict]) -> dict:
    crashed = [r["crashed"] for r in runs if "crashed" in r]
    if crashed:
        return {"crashed": crashed[0], "runs": len(runs)}
    keys = [k for k in runs[0] if isinstance(runs[0][k], (int, float))]
    return {key: statistics.median(r[key] for r in runs) for key in keys}


def default_models() -> list[Path]:
    import assets
    from make_model import ensure_model

    return [assets.smollm2_path(), ensure_model()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", type=Path)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--prompt", type=int, default=256)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--child")
    parser.add_argument("--repack", type=int)
    args = parser.parse_args()
    if args.child:
        child(args.child, bool(args.repack), args.prompt, args.tokens, args.batch)
        return 0
    from cl_lsp.engine import repack as repacking

    print(f"machine: {os.cpu_count()} CPUs, {_cpu_model()}")
    for model in args.model or default_models():
        size = model.stat().st_size
        verdict = repacking.run_probe(model)
        print(
            f"\n{model.name}: {size / 2**20:.0f} MiB, weights "
            f"{'/'.join(sorted(repacking.weight_types(model)))}; probe: {verdict[1]}"
        )
        rows = []
        for repack in (False, True):
            for batch in (args.batch, 1):
                result = summary([run(model, repack, args, batch) for _ in range(args.runs)])
                rows.append((repack, batch, result))
        print(
            f"{'repack':>6} {'batch':>5} {'load s':>7} {'prefill t/s':>11} {'decode t/s':>10} "
            f"{'peak RSS / file':>15} {'anon MiB':>9} {'file MiB':>9}"
        )
        for repack, batch, r in rows:
            if "crashed" in r:
                print(f"{repack!s:>6} {batch:>5} crashed ({r['crashed']})")
                continue
            print(
                f"{repack!s:>6} {batch:>5} {r['load_s']:>7.2f} "
                f"{r.get('prefill_tps', float('nan')):>11.1f} {r['decode_tps']:>10.1f} "
                f"{r['VmHWM'] / size:>15.2f} {r['RssAnon'] / 2**20:>9.0f} "
                f"{r['RssFile'] / 2**20:>9.0f}"
            )
    return 0


def _cpu_model() -> str:
    with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())
