"""Hugging Face tokenizer.json behind the rlx interface, and chat templates rendered exactly as
transformers' `apply_chat_template` does (templates shipped in tests/fixtures/chat_templates)."""

import json
import os

import pytest

tokenizers = pytest.importorskip("tokenizers", reason="HF tokenizer tests need `tokenizers` "
                                 "(pip install -r requirements-hf.txt)")
jinja2 = pytest.importorskip("jinja2", reason="chat templates need jinja2")

from rlx.tokenizer import hf as hftok  # noqa: E402
from rlx.tokenizer.chat import ChatTemplate  # noqa: E402

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "chat_templates")
TEMPLATES = sorted(f[:-len(".jinja")] for f in os.listdir(FIXTURES) if f.endswith(".jinja"))
SPECIAL = ["<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>", "<|start_header_id|>",
           "<|end_header_id|>", "<|eot_id|>", "<start_of_turn>", "<end_of_turn>"]
MARKUP = ["<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>",
          "</tool_response>"]

TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Current weather in a city.",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string"}, "unit": {"type": "string", "enum": ["C", "F"]}},
            "required": ["city"]}}},
    {"type": "function", "function": {
        "name": "add", "description": "Adds two integers.",
        "parameters": {"type": "object", "properties": {"a": {"type": "integer"},
                                                        "b": {"type": "integer"}}}}},
]


def _conversation(single_calls: bool):
    """Multi-turn with thinking, tool calls (dict and string arguments), tool responses, a
    None-valued key and non-ASCII text."""
    calls = [{"type": "function", "function": {"name": "get_weather",
                                               "arguments": {"city": "Zürich", "unit": "C"}}}]
    if not single_calls:
        calls.append({"type": "function", "function": {"name": "add",
                                                       "arguments": '{"a": 2, "b": 40}'}})
    msgs = [
        {"role": "system", "content": "You are terse. Use tools when useful."},
        {"role": "user", "content": "Weather in Zürich, and 2+40?"},
        {"role": "assistant", "content": "", "reasoning_content": "Need the weather tool.",
         "tool_calls": calls},
        {"role": "tool", "content": '{"temp": 21, "sky": "clear ☀"}'},
    ]
    if not single_calls:
        msgs.append({"role": "tool", "content": "42"})
    msgs += [
        {"role": "assistant", "content": "21 °C and clear; 2+40 = 42.",
         "thinking": "Both results are in.", "tool_calls": None},
        {"role": "user", "content": "Thanks! And <b>tomorrow</b>?"},
    ]
    if single_calls:
        # Alternating templates expect a model turn between the user turns.
        msgs[3:4] = [msgs[3], {"role": "assistant", "content": "Checking."}]
    return msgs


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    """A tiny byte-level BPE tokenizer.json trained here, with special and markup tokens."""
    from tokenizers import decoders, models, pre_tokenizers

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [json.dumps(TOOLS), json.dumps(_conversation(False), ensure_ascii=False),
              "The weather is clear. Tools, calls, responses, thinking and answers."] * 20
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIAL,
                                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    tok.add_tokens(MARKUP)
    path = tmp_path_factory.mktemp("tok")
    tok.save(str(path / "tokenizer.json"))
    return path


def _write_config(path, template):
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>",
              "eos_token": {"__type": "AddedToken", "content": "</s>", "special": True}, "pad_token": "<pad>",
              "chat_template": template}
    with open(path / "tokenizer_config.json", "w") as f:
        json.dump(config, f)


def _template(name):
    with open(os.path.join(FIXTURES, name + ".jinja")) as f:
        return f.read()


@pytest.fixture(scope="module")
def transformers():
    return pytest.importorskip("transformers", reason="the chat-template reference is "
                               "transformers (pip install -r requirements-hf.txt)")


def test_tokenizer_interface_matches_the_fast_tokenizer(tok_dir, transformers, tmp_path):
    _write_config(tok_dir, _template("chatml_think_tools"))
    ours = hftok.load(str(tok_dir))
    theirs = transformers.AutoTokenizer.from_pretrained(str(tok_dir))
    assert isinstance(ours, hftok.HFTokenizer)
    text = "Weather <think>in</think> Zürich? <|im_start|>user\n 2+40 ☀"
    ids = ours.encode(text)
    assert ids == theirs.encode(text, add_special_tokens=False)
    assert ours.decode(ids) == text == theirs.decode(ids)
    assert ours.token_id("<|im_start|>") == theirs.convert_tokens_to_ids("<|im_start|>")
    assert ours.token_id("<tool_call>") in ids or ours.token_id("<think>") in ids
    assert (ours.bos_id, ours.eos_id, ours.pad_id) == (
        theirs.bos_token_id, theirs.eos_token_id, theirs.pad_token_id)
    assert ours.vocab_size == len(theirs)
    with pytest.raises(KeyError, match="<nope>"):
        ours.token_id("<nope>")


@pytest.mark.parametrize("name", TEMPLATES)
@pytest.mark.parametrize("gen_prompt", [False, True])
def test_chat_rendering_equals_transformers(tok_dir, transformers, name, gen_prompt):
    assert len(TEMPLATES) == 3
    _write_config(tok_dir, _template(name))
    ours = hftok.load(str(tok_dir))
    theirs = transformers.AutoTokenizer.from_pretrained(str(tok_dir))
    msgs = _conversation(single_calls=name != "chatml_think_tools")
    kwargs = dict(tools=TOOLS, add_generation_prompt=gen_prompt)
    if name == "chatml_think_tools":
        kwargs["enable_thinking"] = False
    text = ours.apply_chat_template(msgs, **kwargs)
    assert text == theirs.apply_chat_template(msgs, tokenize=False, **kwargs)
    ref_ids = theirs.apply_chat_template(msgs, tokenize=True, **kwargs)
    ref_ids = ref_ids["input_ids"] if hasattr(ref_ids, "keys") else ref_ids
    assert ours.encode_chat(msgs, **kwargs) == list(ref_ids)
    # The rendering carries every turn: tool calls, tool responses and (for the templates that
    # render thinking) the thinking kept in history.
    assert "Zürich" in text and "get_weather" in text and "clear ☀" in text
    assert ("Both results are in." in text) == (name != "header_tools")


def test_thinking_history_and_kwargs(tok_dir, transformers):
    _write_config(tok_dir, _template("chatml_think_tools"))
    ours = hftok.load(str(tok_dir))
    theirs = transformers.AutoTokenizer.from_pretrained(str(tok_dir))
    msgs = _conversation(False)
    for kw in (dict(keep_thinking=False), dict(keep_thinking=True), {}):
        text = ours.apply_chat_template(msgs, **kw)
        assert text == theirs.apply_chat_template(msgs, tokenize=False, **kw)
        assert ("Need the weather tool." in text) == kw.get("keep_thinking", True)


def test_named_templates_and_errors(tok_dir, transformers):
    named = [{"name": "default", "template": _template("turns_generation")},
             {"name": "tool_use", "template": _template("chatml_think_tools")}]
    _write_config(tok_dir, named)
    ours = hftok.load(str(tok_dir))
    theirs = transformers.AutoTokenizer.from_pretrained(str(tok_dir))
    msgs = _conversation(True)
    for tools in (None, TOOLS):
        assert ours.apply_chat_template(msgs, tools=tools) == theirs.apply_chat_template(
            msgs, tools=tools, tokenize=False)
    assert ours.apply_chat_template(msgs, tools=TOOLS).startswith("<|im_start|>system")
    with pytest.raises(ValueError, match=r"'nope'.*\['default', 'tool_use'\]"):
        ours.apply_chat_template(msgs, template_name="nope")
    # Template errors surface as in transformers (raise_exception).
    bad = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    with pytest.raises(Exception, match="alternate"):
        ours.apply_chat_template(bad)


def test_sandbox_refuses_unsafe_templates():
    with pytest.raises(jinja2.exceptions.SecurityError, match="unsafe"):
        ChatTemplate("{{ messages.__class__.__mro__ }}").render([{"role": "user", "content": "x"}])
    with pytest.raises(Exception, match="underscore"):
        ChatTemplate("{% set ns = namespace() %}{% set ns._x = 1 %}").render(
            [{"role": "user", "content": "x"}])


def test_sentencepiece_directory_loads_behind_the_same_interface(tmp_path):
    pytest.importorskip("sentencepiece")
    from rlx.tokenizer.sentencepiece import SentencePieceTokenizer

    sp = SentencePieceTokenizer.train(["hello tools and thinking " * 3, "a b c d 12 34"] * 50,
                                      vocab_size=330)
    sp.save(str(tmp_path / "tokenizer.model"))
    tok = hftok.load(str(tmp_path))
    assert isinstance(tok, SentencePieceTokenizer)
    assert tok.encode("hello <think> 12") == sp.encode("hello <think> 12")
    assert tok.decode(tok.encode("hello <think> 12")) == "hello <think> 12"
