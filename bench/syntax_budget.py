"""The syntax check's cost on a 20,000-line file (issue 5: "a few milliseconds").

    python bench/syntax_budget.py [--spots 200] [--seed 0]

The file is typing_replay's: stdlib modules concatenated to 20,000 lines. At seeded spots (the
start of an indented line), the raw suggestion is the real next 1-6 lines plus an overrun that
opens a call it never closes, so the check has to shorten it. The windows are cut as the server
cuts them (default budgets). Figures, per suggestion:

- ``check_syntax``: the filter alone (tree-sitter on the unit around the cursor, a few cuts);
- ``clean_completion``: every filter;
- baseline: one tree-sitter parse of the whole document with the suggestion inserted -- what
  a check on the full file would cost for each candidate cut, before any bisection.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import typing_replay as replay  # the bench's own helpers: files, machine

from cl_lsp.completion import postprocess
from cl_lsp.completion.context import extract_context
from cl_lsp.completion.pipeline import budgets
from cl_lsp.config import CompletionSettings
from cl_lsp.languages import parser_for


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spots", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    info = replay.machine()
    print(
        f"syntax budget: {info['nproc']} CPUs ({info['cpu']}), Python {info['python']}, "
        f"load average {info['loadavg']}"
    )
    source, _ = replay.big_file(args.seed)
    text = source.text
    lines = text.split("\n")
    starts = [0]
    for line in lines[:-1]:
        starts.append(starts[-1] + len(line) + 1)
    rng = random.Random(args.seed)
    rows = [
        r
        for r in range(len(lines) - 8)
        if lines[r].startswith("    ")
        and lines[r].strip()
        and not lines[r].lstrip().startswith(("#", '"', "'"))
    ]
    settings = CompletionSettings()
    prefix_budget, suffix_budget = budgets(settings, 4096, settings.max_tokens)
    entry = parser_for("python")
    assert entry is not None
    full_parser, lock = entry
    check, clean, full, shortened = [], [], [], 0
    for row in rng.sample(rows, min(args.spots, len(rows))):
        lead = lines[row][: len(lines[row]) - len(lines[row].lstrip())]
        offset = starts[row] + len(lead)
        end_row = row + rng.randint(0, 5)
        middle = text[offset : starts[end_row] + len(lines[end_row])]
        raw = f"{middle}\n{lead}result = compute(value,\n{lead}    other"
        document = text[:offset] + text[starts[end_row] + len(lines[end_row]) :]
        ctx = extract_context(
            document,
            offset,
            language_id="python",
            path="big.py",
            count_tokens=lambda s: len(s) // 3,
            prefix_tokens=prefix_budget,
            suffix_tokens=suffix_budget,
        )
        step = postprocess.FilterInput(ctx.prefix, ctx.suffix, False, "python")
        started = time.perf_counter()
        got = postprocess.check_syntax(raw, step)
        check.append((time.perf_counter() - started) * 1000)
        shortened += got != raw
        started = time.perf_counter()
        postprocess.clean_completion(
            raw, prefix=ctx.prefix, suffix=ctx.suffix, single_line=False, language="python"
        )
        clean.append((time.perf_counter() - started) * 1000)
        whole = (document[:offset] + raw + document[offset:]).encode()
        started = time.perf_counter()
        with lock:
            full_parser.parse(whole)
        full.append((time.perf_counter() - started) * 1000)
    print(
        f"file: {source.name}, {len(lines)} lines, {len(text) / 1024:.0f} KiB; "
        f"{len(check)} spots; the check shortened {shortened}"
    )
    for name, values in (
        ("check_syntax", check),
        ("clean_completion (all filters)", clean),
        ("baseline: one parse of the whole file", full),
    ):
        print(
            f"  {name:<40} median {statistics.median(values):6.2f} ms   "
            f"p95 {replay.percentile(values, 0.95):6.2f} ms"
        )
    ratio = statistics.median(full) / statistics.median(check)
    print(f"  whole-file parse / check_syntax (medians): {ratio:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
