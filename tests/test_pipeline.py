"""Planning a completion: the window anchors that keep the KV cache valid while typing."""

from __future__ import annotations

from cl_lsp.completion.pipeline import plan_completion
from cl_lsp.config import CompletionSettings

SOURCE = "".join(f"def helper_{i}(a, b):\n    return a * {i} + b\n\n\n" for i in range(200))


def test_typing_keeps_both_window_edges_and_only_the_tail_changes(tiny_vocab):
    settings = CompletionSettings(prefix_tokens=400, suffix_tokens=150)
    cursor = SOURCE.index("def helper_100")
    text = SOURCE[:cursor] + "value = \n" + SOURCE[cursor:]
    offset = cursor + len("value = ")
    anchor = suffix = None
    prompts = []
    for typed in [
        "",
        "h",
        "he",
        "hel",
        "help",
        "helpe",
        "helper",
        "helper_",
        "helper_1",
        "helper_1(",
        "helper_1(2",
    ]:
        now = text[:offset] + typed + text[offset:]
        plan = plan_completion(
            now,
            offset + len(typed),
            vocab=tiny_vocab,
            settings=settings,
            n_ctx=4096,
            path="a.py",
            anchor=anchor,
            suffix_anchor=suffix,
        )
        if anchor is not None:
            assert plan.context.window_start == anchor
            assert plan.context.suffix == suffix
        anchor, suffix = plan.context.window_start, plan.context.suffix
        assert plan.prompt is not None, plan.context.reason
        prompts.append(plan.prompt)
    spm = [p.tokens for p in prompts if p.layout.value == "spm"]
    assert len(spm) >= 2
    shared = 0
    while spm[0][shared] == spm[-1][shared]:
        shared += 1
    assert len(spm[-1]) - shared <= 8  # "helper_1(2" added a handful of tokens at the end


def test_a_suffix_anchor_that_no_longer_matches_is_dropped(tiny_vocab):
    settings = CompletionSettings(prefix_tokens=400, suffix_tokens=150)
    offset = SOURCE.index("def helper_50")
    plan = plan_completion(
        SOURCE,
        offset,
        vocab=tiny_vocab,
        settings=settings,
        n_ctx=4096,
        path="a.py",
        suffix_anchor="something else entirely",
    )
    assert SOURCE.startswith(plan.context.suffix, offset)
    assert plan.context.suffix != "something else entirely"


def test_whole_lines_cut_at_a_block_end_keep_their_line_break_above_the_cursors_line(tiny_vocab):
    """At column 0 before `    return y`, the model writes a line, then a new function: the
    block-end stop cuts at the line break, and the suggestion still ends with it (else the line
    would be glued to `    return y`)."""
    from cl_lsp.completion.pipeline import finish_completion
    from cl_lsp.engine import Generation

    text = "def f(x):\n    return y\n"
    offset = text.index("    return y")
    plan = plan_completion(
        text, offset, vocab=tiny_vocab, settings=CompletionSettings(), n_ctx=4096, path="a.py"
    )
    assert plan.request is not None and plan.request.stop_check is not None
    raw = "    y = x + 1\ndef g():\n"
    cut = plan.request.stop_check(raw)
    assert raw[:cut] == "    y = x + 1"
    generation = Generation(raw[:cut], (1,), 10, 0, "end_of_block", 0.0)
    assert finish_completion(plan, generation).text == "    y = x + 1\n"
