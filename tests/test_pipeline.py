"""Planning a completion: the window anchors that keep the KV cache valid while typing."""

from __future__ import annotations

from cl_lsp.config import CompletionSettings
from cl_lsp.pipeline import plan_completion

SOURCE = "".join(f"def helper_{i}(a, b):\n    return a * {i} + b\n\n\n" for i in range(200))


def test_typing_keeps_both_window_edges_and_only_the_tail_changes(tiny_vocab):
    settings = CompletionSettings(prefix_tokens=400, suffix_tokens=150)
    cursor = SOURCE.index("def helper_100")
    text = SOURCE[:cursor] + "value = \n" + SOURCE[cursor:]
    offset = cursor + len("value = ")
    anchor = suffix = None
    prompts = []
    for typed in ["", "h", "he", "hel", "help", "helpe", "helper", "helper_", "helper_1",
                  "helper_1(", "helper_1(2"]:
        now = text[:offset] + typed + text[offset:]
        plan = plan_completion(now, offset + len(typed), vocab=tiny_vocab, settings=settings,
                               n_ctx=4096, path="a.py", anchor=anchor, suffix_anchor=suffix)
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
    plan = plan_completion(SOURCE, offset, vocab=tiny_vocab, settings=settings, n_ctx=4096,
                           path="a.py", suffix_anchor="something else entirely")
    assert SOURCE.startswith(plan.context.suffix, offset)
    assert plan.context.suffix != "something else entirely"
