"""Fill-in-the-middle families with real vocabularies (StarCoder's, DeepSeek-Coder's and
Qwen2's from llama.cpp's models/, the Llama one extended for CodeGemma and Codestral): which
family a model is, the exact prompt ids against each family's documented format, stop tokens,
healing, and end to end over stdio with a scripted model per family."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from conftest import complete_json, status
from http_servers import llama_server
from lsprotocol import types
from test_server import inline, open_doc

from cl_lsp.completion.families import (
    BY_NAME,
    CODE_LLAMA,
    FAMILIES,
    Layout,
    TemplateError,
    detect_family,
    family_by_file_name,
    fim_format,
)
from cl_lsp.completion.prompts import build_fim_prompt, build_healed_prompt, build_prompt
from cl_lsp.config import PromptFormat, Template
from cl_lsp.engine import Vocabulary
from cl_lsp.engine.llama import Weights
from cl_lsp.engine.tokenizer import encode_nospace

FIM_FAMILIES = ["starcoder", "deepseek-coder", "qwen2.5-coder", "codegemma", "codestral"]

# Each family's format as its authors document it, as text with the control tokens spelled
# out (tokenized with special tokens parsed, BOS as the vocabulary adds it, as the model's own
# tokenizer does with the documented prompt):
# - StarCoder: bigcode-project/starcoder README, "Fill-in-the-middle".
# - DeepSeek-Coder: deepseek-ai/DeepSeek-Coder README, "Code Insertion".
# - Qwen2.5-Coder: QwenLM/Qwen2.5-Coder README, "file-level code completion".
# - CodeGemma: the google/codegemma-2b model card, "prompt format".
DOCUMENTED = {
    "starcoder": "<fim_prefix>{prefix}<fim_suffix>{suffix}<fim_middle>",
    "deepseek-coder": "<｜fim▁begin｜>{prefix}<｜fim▁hole｜>{suffix}<｜fim▁end｜>",
    "qwen2.5-coder": "<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>",
    "codegemma": "<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>",
}

SAMPLES = [
    ("def add(a, b):\n    ", "\n\nprint(add(1, 2))\n"),
    ("x = [1, 2,", "]\n"),
    ("", "  return 0;\n}\n"),
    ('fn main() {\n\tlet s = "héllo 😀";\n\t', ""),
    ("    if a:\r\n        b = '\\n'\n", "\n\n\n    c = 3\n"),
]


@pytest.fixture(scope="module")
def vocabularies(family_gguf):
    opened = {name: Vocabulary(family_gguf(name)) for name in [*FIM_FAMILIES, "plain"]}
    yield opened
    for vocab in opened.values():
        vocab.close()


def documented_ids(model: Path, template: str, prefix: str, suffix: str) -> list[int]:
    """The documented text prompt through the model's own tokenizer (llama.cpp's), special
    tokens parsed: the reference for families whose text needs no leading-space rule."""
    weights = Weights.load(model, vocab_only=True)
    try:
        text = template.replace("{prefix}", prefix).replace("{suffix}", suffix)
        return weights._model.tokenize(text.encode(), add_bos=weights.add_bos(), special=True)
    finally:
        weights.close()


@pytest.mark.parametrize("name", FIM_FAMILIES)
def test_each_family_is_detected_from_the_model(vocabularies, name):
    fim = fim_format(vocabularies[name])
    assert fim is not None and fim.name == name
    # llama.cpp names the FIM tokens of every family but Codestral's; those come from the
    # family table's token texts.
    assert fim.detected_by == ("token texts" if name == "codestral" else "llama.cpp")
    for role, token in fim.ids.items():
        assert vocabularies[name].token_text(token) == fim.family.roles()[role][0]


@pytest.mark.parametrize("name", ["starcoder", "qwen2.5-coder", "deepseek-coder"])
def test_metadata_names_the_same_tokens(family_gguf, vocabularies, name):
    vocab = Vocabulary(family_gguf(name, fim_metadata=True))
    try:
        assert dict(vocab.fim_ids) == dict(fim_format(vocabularies[name]).ids)
        assert fim_format(vocab) == fim_format(vocabularies[name])
    finally:
        vocab.close()


def test_a_model_without_fim_tokens_is_no_fim_model(vocabularies):
    plain = vocabularies["plain"]
    assert fim_format(plain) is None
    prompt = build_prompt(PromptFormat.AUTO, "def f", "x", plain.encode, None, plain.bos)
    assert prompt.layout is Layout.PREFIX and prompt.tokens == (plain.bos, *plain.encode("def f"))


def test_the_template_setting_overrides_and_is_checked(vocabularies):
    assert {template.value for template in Template} == {"auto", "prefix", *BY_NAME}
    qwen = vocabularies["qwen2.5-coder"]
    assert detect_family(qwen, "prefix") is None
    assert detect_family(qwen, "qwen2.5-coder").detected_by == "setting"
    with pytest.raises(TemplateError, match="no <fim_prefix>"):
        detect_family(qwen, "starcoder")
    # CodeGemma and Qwen2.5-Coder share their markers: CodeGemma is told by its file separator.
    assert detect_family(vocabularies["codegemma"]).name == "codegemma"
    assert detect_family(qwen).name == "qwen2.5-coder"


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
@pytest.mark.parametrize(("prefix", "suffix"), SAMPLES, ids=range(len(SAMPLES)))
def test_prompt_ids_are_the_documented_format(family_gguf, vocabularies, name, prefix, suffix):
    vocab = vocabularies[name]
    fim = fim_format(vocab)
    assert list(fim.layouts) == [Layout.PSM]  # trained (and documented) with PSM only
    prompt = build_prompt(PromptFormat.AUTO, prefix, suffix, vocab.encode, fim, vocab.bos)
    assert prompt.layout is Layout.PSM
    assert list(prompt.tokens) == documented_ids(
        family_gguf(name), DOCUMENTED[name], prefix, suffix
    )


@pytest.mark.parametrize(("prefix", "suffix"), SAMPLES, ids=range(len(SAMPLES)))
def test_codestral_puts_the_suffix_first(vocabularies, prefix, suffix):
    # mistralai/mistral-common, InstructTokenizerV2.encode_fim: [BOS, SUFFIX] + the suffix
    # without SentencePiece's leading space + [PREFIX] + the prefix; the middle follows.
    vocab = vocabularies["codestral"]
    fim = fim_format(vocab)
    assert vocab.space_prefix and list(fim.layouts) == [Layout.SPM]
    prompt = build_fim_prompt(prefix, suffix, vocab.encode, fim, Layout.SPM)
    expected = [
        vocab.bos,
        fim.ids["suf"],
        *encode_nospace(vocab.encode, suffix),
        fim.ids["pre"],
        *(vocab.encode(prefix) if prefix else []),
    ]
    assert list(prompt.tokens) == expected


@pytest.mark.parametrize("name", FIM_FAMILIES)
def test_code_that_spells_control_tokens_stays_text(vocabularies, name):
    vocab = vocabularies[name]
    fim = fim_format(vocab)
    spelled = " ".join(text for family in FAMILIES for text in family.marker_texts())
    code = f'marker = "{spelled} {" ".join(fim.family.ends)}"\n'
    layout = fim.default_layout
    tokens = list(build_fim_prompt(code, code, vocab.encode, fim, layout).tokens)
    assert sorted(token for token in tokens if token in fim.ids.values()) == sorted(
        fim.ids.values()
    )
    # End tokens stay text too, but for those the vocabulary itself types as user-defined
    # (DeepSeek-Coder's `<|EOT|>`): its own tokenizer matches them in any text.
    control_ends = {
        token
        for text in fim.family.ends + fim.family.stops
        if (token := vocab.token_id(text)) is not None and vocab.encode(text) != [token]
    }
    assert control_ends and not (control_ends - set(fim.ids.values())) & set(tokens)


@pytest.mark.parametrize("name", FIM_FAMILIES)
def test_each_family_stops_at_its_own_end_tokens(vocabularies, name):
    vocab = vocabularies[name]
    fim = fim_format(vocab)
    ends = {vocab.token_id(text) for text in fim.family.ends} - {None}
    assert ends and ends <= fim.stop_ids
    # A prefix or suffix marker in the middle means the middle is over.
    assert {fim.ids["pre"], fim.ids["suf"]} <= fim.stop_ids


def test_suffix_first_families_heal_inside_a_name(vocabularies):
    vocab = vocabularies["codestral"]
    fim = fim_format(vocab)
    healed = [
        build_healed_prompt(prefix, "\n", vocab.encode, fim)
        for prefix in ("    return fi", "    return fib")
    ]
    plain = build_fim_prompt("    return", "\n", vocab.encode, fim, Layout.SPM)
    assert [prompt.tokens for prompt in healed] == [plain.tokens] * 2
    assert [prompt.heal for prompt in healed] == [" fi", " fib"]
    # A PSM family's prompt does not end with the prefix: nothing to heal.
    qwen = vocabularies["qwen2.5-coder"]
    prompt = build_prompt(
        PromptFormat.AUTO, "    return fi", "\n", qwen.encode, fim_format(qwen), qwen.bos
    )
    assert prompt.layout is Layout.PSM and prompt.heal == ""


def test_a_family_without_the_asked_layout_keeps_its_own(vocabularies):
    vocab = vocabularies["starcoder"]
    fim = fim_format(vocab)
    prompt = build_prompt(PromptFormat.SPM, "a = ", "\n", vocab.encode, fim, vocab.bos)
    assert prompt.layout is Layout.PSM


@pytest.mark.parametrize(
    "spelled",
    sorted({text.removeprefix("▁") for family in FAMILIES for text in family.ends + family.stops}),
)
def test_an_end_token_spelled_as_text_ends_the_answer(spelled):
    # A server that streams text may print a family's end token instead of stopping at it.
    from cl_lsp.completion.postprocess import FilterInput, strip_control_tokens

    context = FilterInput(prefix="def f():\n    ", suffix="\n", single_line=False)
    assert strip_control_tokens(f"return 1{spelled}\n\nnoise()", context) == "return 1"


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("qwen2.5-coder-7b-q8_0.gguf", "qwen2.5-coder"),
        ("starcoder2-3b.Q4_K_M.gguf", "starcoder"),
        ("granite-3b-code-base.gguf", "starcoder"),
        ("deepseek-coder-6.7b-base.Q4_K_M.gguf", "deepseek-coder"),
        ("codegemma-2b", "codegemma"),
        ("Codestral-22B-v0.1-Q4_K_M.gguf", "codestral"),
        ("codellama:7b-code", "codellama"),
        ("llama-3-8b.gguf", None),
    ],
)
def test_a_model_name_suggests_a_family_as_the_last_resort(name, family):
    found = family_by_file_name(name)
    assert (found.name if found else None) == family


def test_a_text_server_without_a_vocabulary_uses_the_served_models_family():
    from cl_lsp.engine.tokenizer import ApproximateTokenizer

    fim = fim_format(ApproximateTokenizer("qwen2.5-coder:7b-base"))
    assert (fim.name, fim.detected_by) == ("qwen2.5-coder", "model name")
    prompt = build_prompt(PromptFormat.AUTO, "a = ", "\n", str.split, fim, None)
    assert prompt.text == "<|fim_prefix|>a = <|fim_suffix|>\n<|fim_middle|>"
    assert fim_format(ApproximateTokenizer("my-model")).family is CODE_LLAMA


# -- end to end: each family's scripted model over stdio ------------------------------------------

TEXT = "def add(a, b):\n    \n\n\nprint(add(1, 2))\n"
ANSWER = "return a + b"
# The token that ends each scripted answer: a family stop that is not the model's EOS where
# the family has one (so the family's own stop list is what ends it).
END = {
    "starcoder": "<file_sep>",
    "deepseek-coder": "<｜end▁of▁sentence｜>",
    "qwen2.5-coder": "<|file_sep|>",
    "codegemma": "<|file_separator|>",
    "codestral": "</s>",
}


def scripted(family_gguf, vocabularies, name: str) -> tuple[Path, list[int]]:
    vocab = vocabularies[name]
    answer = (
        vocab.encode(ANSWER) if not vocab.space_prefix else encode_nospace(vocab.encode, ANSWER)
    )
    end = vocab.token_id(END[name])
    assert end is not None and len(set(answer)) == len(answer)
    return family_gguf(name, script=(*answer, end)), answer


@pytest.mark.parametrize("name", FIM_FAMILIES)
async def test_each_family_completes_over_stdio(
    start_server, family_gguf, vocabularies, name, tmp_path
):
    model, answer = scripted(family_gguf, vocabularies, name)
    client = await start_server(model=model)
    facts = await status(client)
    assert facts["family"]["name"] == name
    uri = (tmp_path / "add.py").as_uri()
    open_doc(client, uri, TEXT)
    result = await inline(client, uri, 1, 4)
    (item,) = result.items
    assert item.insert_text == ANSWER
    record = (await status(client))["recent"][-1]
    assert record["stopReason"] == "eot"  # the family's end token, not the token cap
    assert record["generatedTokens"] == len(answer)
    assert not [m for m in client.messages if m.type == types.MessageType.Error]


@pytest.mark.parametrize("name", ["qwen2.5-coder", "codestral"])
def test_complete_json_reports_the_family_and_the_ids_sent(
    family_gguf, vocabularies, name, tmp_path
):
    model, _ = scripted(family_gguf, vocabularies, name)
    answer = complete_json(tmp_path, TEXT, 1, 4, "--model", str(model))
    fim = fim_format(vocabularies[name])
    assert answer["completion"] == ANSWER and answer["family"] == name
    assert answer["template"] == (
        "<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>"
        if name == "qwen2.5-coder"
        else "[SUFFIX]{suffix}[PREFIX]{prefix}"
    )
    tokens = answer["prompt_tokens"]
    assert [token for token in tokens if token in fim.ids.values()] == [
        fim.ids[part] for part in fim.layouts[fim.default_layout] if part in fim.ids
    ]


def test_a_servers_tokenizer_names_the_family_too(family_gguf, vocabularies, tmp_path):
    # llama-server serving Qwen2.5-Coder, no local GGUF: its /tokenize finds the family's
    # tokens, and the prompt is the very one the local engine sends.
    model, _ = scripted(family_gguf, vocabularies, "qwen2.5-coder")
    local = complete_json(tmp_path, TEXT, 1, 4, "--model", str(model))
    with llama_server(model, tmp_path / "llama-server.log") as base:
        remote = complete_json(tmp_path, TEXT, 1, 4, "--engine", "llama-server", "--url", base)
    assert (remote["family"], remote["family_detected_by"]) == ("qwen2.5-coder", "token texts")
    assert remote["prompt_form"] == "tokens"
    assert remote["prompt_tokens"] == local["prompt_tokens"]
    assert remote["completion"] == local["completion"] == ANSWER


async def messages_saying(client, words: str, timeout: float = 30) -> list[str]:
    """The messages shown so far that say `words`, once there is one."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (told := [m.message for m in client.messages if words in m.message]):
        assert loop.time() < deadline, client.messages
        await asyncio.sleep(0.05)
    return told


async def test_a_model_without_fim_tokens_is_told_once(start_server, family_gguf, tmp_path):
    client = await start_server(model=family_gguf("plain"))
    facts = await status(client)
    assert facts["fim"] is False and facts["family"] is None
    await messages_saying(client, "not a fill-in-the-middle model")
    uri = (tmp_path / "add.py").as_uri()
    open_doc(client, uri, TEXT)
    for _ in range(3):
        await inline(client, uri, 1, 4)
    told = await messages_saying(client, "not a fill-in-the-middle model")
    assert len(told) == 1 and "completion.template" in told[0]
    generated = [r for r in (await status(client))["recent"] if r["outcome"] == "generated"]
    assert generated and {record["layout"] for record in generated} == {"prefix"}


async def test_a_template_the_model_lacks_is_told_and_detection_used(
    start_server, family_gguf, vocabularies, tmp_path
):
    model, _ = scripted(family_gguf, vocabularies, "qwen2.5-coder")
    client = await start_server(model=model, options={"completion": {"template": "starcoder"}})
    (told,) = await messages_saying(client, "completion.template")
    assert "'starcoder'" in told and "<fim_prefix>" in told
    uri = (tmp_path / "add.py").as_uri()
    open_doc(client, uri, TEXT)
    (item,) = (await inline(client, uri, 1, 4)).items
    assert item.insert_text == ANSWER


def test_psm_families_keep_the_suffix_short(vocabularies, tiny_vocab):
    from cl_lsp.completion.pipeline import plan_completion
    from cl_lsp.config import CompletionSettings

    head = "def f():\n    "
    text = head + "\n" + "".join(f"    x{i} = g({i}, 'value')\n" for i in range(300))
    settings = CompletionSettings()

    def suffix_ids(vocab) -> list[int]:
        plan = plan_completion(text, len(head), vocab=vocab, settings=settings, n_ctx=4096)
        fim = plan.fim
        tokens = list(plan.prompt.tokens)
        start = tokens.index(fim.ids["suf"]) + 1
        return tokens[start : tokens.index(fim.ids["mid"], start)]

    psm = suffix_ids(vocabularies["qwen2.5-coder"])
    assert settings.psm_suffix_tokens // 2 < len(psm) <= settings.psm_suffix_tokens
    spm = suffix_ids(tiny_vocab)  # Code Llama's SPM keeps its suffix cached while typing
    assert settings.psm_suffix_tokens < len(spm) <= settings.suffix_tokens


def test_a_suffix_first_family_heals_end_to_end(family_gguf, vocabularies, tmp_path):
    # Codestral's prompt ends with the prefix, as Code Llama's SPM does: typed "ret", the
    # prompt leaves " ret" out and the answer is made to spell it first.
    model, _ = scripted(family_gguf, vocabularies, "codestral")
    answer = complete_json(tmp_path, "def add(a, b):\n    ret\n", 1, 7, "--model", str(model))
    vocab = vocabularies["codestral"]
    fim = fim_format(vocab)
    assert (answer["prompt_format"], answer["healed"]) == ("spm", " ret")
    expected = build_healed_prompt("def add(a, b):\n    ret", "\n", vocab.encode, fim)
    assert answer["prompt_tokens"] == list(expected.tokens)
    # The scripted answer's first token "return" spells the rest of the word once healing has
    # chosen the space before it: the generation is " return a + b", the suggestion the rest.
    generated = "".join(vocab.text_of(token) for token in answer["generated_tokens"])
    assert generated == " " + ANSWER and answer["stop_reason"] == "eot"
    assert answer["completion"] == ANSWER.removeprefix("ret")


# The repository formats, as their authors give them (other files, then the one completed):
# - StarCoder2: the StarCoder 2 paper, §5.1 (`<repo_name>reponame<file_sep>filepath0\ncode0
#   <file_sep><fim_prefix>filepath1\ncode1_pre<fim_suffix>code1_suf<fim_middle>`).
# - Qwen2.5-Coder: QwenLM/Qwen2.5-Coder README, "repository-level code completion".
REPOSITORY = {
    "starcoder": "<repo_name>shop<file_sep>shop/pricing.py\n{code}<file_sep><fim_prefix>"
    "shop/cart.py\n{prefix}<fim_suffix>{suffix}<fim_middle>",
    "qwen2.5-coder": "<|repo_name|>shop\n<|file_sep|>shop/pricing.py\n{code}<|file_sep|>"
    "shop/cart.py\n<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>",
}


@pytest.mark.parametrize("name", sorted(REPOSITORY))
def test_families_with_repository_tokens_get_other_files_in_their_format(
    family_gguf, vocabularies, name
):
    from cl_lsp.completion.prompts import RepoFiles

    vocab = vocabularies[name]
    fim = fim_format(vocab)
    assert fim.repository is fim.family.repository is not None
    code = "def total_price(items):\n    ...\n"
    files = RepoFiles("shop", "shop/cart.py", (("shop/pricing.py", code),))
    prefix, suffix = "def checkout(cart):\n    return ", "\n"
    prompt = build_prompt(
        PromptFormat.AUTO, prefix, suffix, vocab.encode, fim, vocab.bos, files=files
    )
    template = REPOSITORY[name].replace("{code}", code)
    assert list(prompt.tokens) == documented_ids(family_gguf(name), template, prefix, suffix)
    assert prompt.text == template.replace("{prefix}", prefix).replace("{suffix}", suffix)
    # Families without the tokens (DeepSeek-Coder) never get them: comments do instead.
    assert fim_format(vocabularies["deepseek-coder"]).repository is None
