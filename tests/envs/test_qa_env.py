"""The `qa` env over a local GSM8K-format TFDS dataset (RlxQaLocal round trip), with rlx's
SentencePiece tokenizer and two tokenizer.json files trained here (single-token and multi-token
answer tags, a shipped chat template): rows and answers against Python parsing, prompts against
transformers' apply_chat_template, answers read from actions against a regex on the decoded
text, jit + vmap, splits, the oracle (SFT demos via play) and answer_match agreement."""

import json
import os
import re
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from rlx import envs, rewards
from rlx.data.qa import QaLocalConfig, RlxQaLocal, qa_prompts
from rlx.envs.base import Chunk
from rlx.rollout.scripted import oracle_fn, play
from rlx.tokenizer import load_default

pytest.importorskip("tokenizers", reason="the HF tokenizer cases need `tokenizers`")
from configs.gsm8k_hf import write_tiny_tokenizer  # noqa: E402
from rlx.tokenizer import hf as hftok  # noqa: E402

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "chat_templates")
TRAIN = [
    ("Tom has 3 apples and buys 4 more. How many apples?",
     "He has 3 + 4 = <<3+4=7>>7 apples.\n#### 7"),
    ("A shop sells 1,200 pens a day. How many in 2 days?",
     "1,200 * 2 = <<1200*2=2400>>2,400\n#### 2,400"),
    ("It was 5 degrees and dropped 8. What now?", "5 - 8 = <<5-8=-3>>-3\n#### -3"),
    ("Half of 5?", "2.5\n#### 2.5"),                          # not an integer: dropped
    ("Ana reads 12 pages a day for 30 days. Pages?", "12 * 30 = <<12*30=360>>360\n#### 360"),
    ("No marker here?", "just text"),                          # no '####': dropped
]
TEST = [("Li has 9 cards and loses 9. How many?", "9 - 9 = <<9-9=0>>0\n#### 0"),
        ("What is 1000 times 1000?", "#### 1,000,000")]
B = 32


def ref_answer(text):
    """Python reference of a GSM8K answer: the integer after the last ####, commas dropped."""
    m = re.search(r"####\s*(-?[\d,]+)\s*$", text)
    return int(m.group(1).replace(",", "")) if m else None


def ref_solution(text):
    return re.sub(r"<<.*?>>", "", text.split("####")[0]).strip()


def ref_parse(text):
    """(is_answer, ok, value) of the last <answer>N</answer> in decoded text."""
    i = text.rfind("<answer>")
    if i < 0:
        return False, False, 0
    m = re.match(r"\s?(-?)(\d+(?:,\d+)*)\s?</answer>", text[i + len("<answer>"):])
    if not m or len(m.group(2).replace(",", "")) > 9:
        return True, False, 0
    value = int(m.group(2).replace(",", ""))
    return True, True, -value if m.group(1) else value


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("qa_tfds")
    cfg = QaLocalConfig(name="qa_env_test", examples=tuple(TRAIN), test_examples=tuple(TEST))
    RlxQaLocal(config=cfg, data_dir=str(d), file_format="array_record").download_and_prepare()
    return str(d)


def _hf_dir(root, markup):
    texts = [q + "\n" + a for q, a in TRAIN + TEST] + ["Solve the problem. Give the final "
                                                       "number as answer N."] * 3
    with open(os.path.join(FIXTURES, "chatml_think_tools.jinja")) as f:
        template = f.read()
    write_tiny_tokenizer(str(root), texts, markup=markup, chat_template=template,
                         vocab_size=320)
    return str(root)


@pytest.fixture(scope="module")
def tokenizers_(tmp_path_factory):
    return {
        "sentencepiece": (load_default(), None),
        "hf_single_tags": (None, _hf_dir(tmp_path_factory.mktemp("tok1"),
                                         ("<answer>", "</answer>"))),
        "hf_multi_tags": (None, _hf_dir(tmp_path_factory.mktemp("tok2"), ())),
    }


_ENVS = {}


def setup_env(kind, tokenizers_, data_dir):
    if kind not in _ENVS:
        tok, path = tokenizers_[kind]
        tok = tok or hftok.load(path)
        env, params = envs.make("qa", tokenizer=tok, data_dir=data_dir, dataset="rlx_qa_local",
                                dataset_config="qa_env_test", split="train", axes="none")
        heldout = envs.make("qa", tokenizer=tok, data_dir=data_dir, dataset="rlx_qa_local",
                            dataset_config="qa_env_test", split="heldout", axes="none")[1]
        vreset = jax.jit(jax.vmap(env.reset, (0, None)))
        vstep = jax.jit(jax.vmap(env.step, (0, 0, 0, None)))
        _ENVS[kind] = types.SimpleNamespace(env=env, tok=tok, path=path, params=params,
                                            heldout=heldout, vreset=vreset, vstep=vstep)
    return _ENVS[kind]


KINDS = ["sentencepiece", "hf_single_tags", "hf_multi_tags"]


def _decode(tok, chunk, i=None):
    toks, n = (chunk.tokens, chunk.length) if i is None else (chunk.tokens[i], chunk.length[i])
    return tok.decode([int(t) for t in np.asarray(toks)[: int(n)]])


@pytest.mark.parametrize("kind", KINDS)
def test_rows_answers_and_prompts(kind, tokenizers_, data_dir):
    s = setup_env(kind, tokenizers_, data_dir)
    env, tok = s.env, s.tok
    # TFDS round trip: the env holds exactly the integer-answer rows of each split.
    src = tfds.data_source("rlx_qa_local", split="train", data_dir=data_dir, download=False,
                           builder_kwargs={"config": "qa_env_test"})
    assert len(src) == len(TRAIN)
    want = [(q, a) for q, a in TRAIN if ref_answer(a) is not None and "." not in a.split("####")[1]]
    want += [(q, a) for q, a in TEST]
    assert sorted(env.rows[:4]) == sorted(want[:4]) and sorted(env.rows[4:]) == sorted(want[4:])
    assert env.num_dropped == 2
    assert np.asarray(env.answers).tolist() == [ref_answer(a) for _, a in env.rows]
    # Prompts: the model's chat template as transformers renders it, or qa_prompts' text.
    msgs = [[{"role": "system", "content": env.system}, {"role": "user", "content": q}]
            for q, _ in env.rows]
    if s.path is None:
        ref, _ = qa_prompts([{"question": q, "answer": a} for q, a in env.rows], tok,
                            env.max_prompt_len)
        np.testing.assert_array_equal(np.asarray(env.prompt_tokens), np.asarray(ref.tokens))
        np.testing.assert_array_equal(np.asarray(env.prompt_lens), np.asarray(ref.length))
    else:
        transformers = pytest.importorskip("transformers")
        theirs = transformers.AutoTokenizer.from_pretrained(s.path)
        for i, m in enumerate(msgs):
            text = theirs.apply_chat_template(m, tokenize=False, add_generation_prompt=True)
            ids = theirs.apply_chat_template(m, tokenize=True, add_generation_prompt=True)
            ids = ids["input_ids"] if hasattr(ids, "keys") else ids
            row = np.asarray(env.prompt_tokens[i])[: int(env.prompt_lens[i])].tolist()
            assert row == list(ids)
            assert tok.decode(row) == text and text.endswith("<|im_start|>assistant\n")
    # Stop tokens: EOS, and </answer> only where it is one token.
    single = kind != "hf_multi_tags"
    assert env.close_is_single == single
    want_stops = {tok.eos_id} | ({tok.token_id("</answer>")} if single else set())
    assert set(env.stop_token_ids) == want_stops


@pytest.mark.parametrize("kind", KINDS)
def test_jit_vmap_splits_and_oracle(kind, tokenizers_, data_dir):
    s = setup_env(kind, tokenizers_, data_dir)
    env, tok = s.env, s.tok
    n_train = 4
    for params, lo, hi in ((s.params, 0, n_train), (s.heldout, n_train, len(env.rows))):
        obs, st = s.vreset(jax.random.split(jax.random.key(0), B), params)
        rows = np.asarray(st.task.row)
        assert set(rows.tolist()) == set(range(lo, hi))   # every row of the split, no other
        assert obs.tokens.shape == (B, env.max_prompt_len)
        for i in range(3):
            assert env.rows[rows[i]][0] in _decode(tok, obs, i)
        act = jax.vmap(env.oracle_action)(st)
        o2, st2, r, done, info = s.vstep(jax.random.split(jax.random.key(1), B), st, act, params)
        assert set(info) == set(envs.INFO_KEYS) and all(v.shape == (B,) for v in info.values())
        assert np.asarray(done).all() and (np.asarray(r) == 1.0).all()
        assert np.asarray(info["correct"]).all() and np.asarray(info["answer_valid"]).all()
        assert (np.asarray(info["tool_calls"]) == 0).all()
        assert (np.asarray(info["invalid_calls"]) == 0).all()
        assert not np.asarray(info["used_forbidden_tool"]).any()
        assert (np.asarray(o2.length) == 0).all()
        np.testing.assert_array_equal(np.asarray(env.task(st2).answer),
                                      [ref_answer(env.rows[i][1]) for i in rows])
        # A finished episode does not change any more.
        _, st3, r3, _, info3 = s.vstep(jax.random.split(jax.random.key(2), B), st2, act, params)
        assert (np.asarray(r3) == 0).all() and (np.asarray(info3["turns"]) == 1).all()
        # The oracle's text: reference solution, <answer>N</answer>, EOS.
        for i in range(4):
            q, a = env.rows[rows[i]]
            text = _decode(tok, act, i)
            sol = ref_solution(a)
            want = (sol + "\n" if sol else "") + f"<answer>{ref_answer(a)}</answer>"
            assert text == want + tok.decode([tok.eos_id])


@pytest.mark.parametrize("kind", KINDS)
def test_parse_matches_regex_on_text(kind, tokenizers_, data_dir):
    s = setup_env(kind, tokenizers_, data_dir)
    env, tok = s.env, s.tok
    pieces = ["<answer>", "</answer>", " <answer>", " </answer>", "-", ",", " ", "\n", "0", "7",
              "12", "345", "9", "x", "The answer is ", "."]
    fixed = ["The answer is <answer>42</answer>", "<answer>-7</answer>", "<answer> 1,234</answer>",
             "<answer>4.5</answer>", "<answer>12", "<answer>1</answer> then <answer>77</answer>",
             "nothing", "<answer></answer>", "<answer>1234567890</answer>",
             "<answer>123456789</answer>", "<answer>1,,2</answer>", "<answer>12,</answer>",
             "<answer>\n5</answer>", "<answer>5 </answer>", "<answer>- 5</answer>"]
    rng = np.random.default_rng(0)
    seqs = [tok.encode(t) for t in fixed]
    for _ in range(300):   # random mixes of the pieces
        parts = [pieces[j] for j in rng.integers(0, len(pieces), rng.integers(1, 9))]
        seqs.append([i for p in parts for i in tok.encode(p)])
    for _ in range(300):   # answer-shaped, each part optional or swapped at random
        def pick(*opts):
            return opts[rng.integers(0, len(opts))]
        num = [pick("0", "7", "12", "345", "9") for _ in range(rng.integers(0, 4))]
        num = [x for d in num for x in (d, pick(",", "", "", ""))][:-1] if num else []
        parts = [pick("", "The answer is ", "x"), pick("<answer>", " <answer>", "x"),
                 pick("", "", " ", "\n"), pick("", "", "-"), *num,
                 pick("</answer>", " </answer>", "", "."), pick("", "", " <answer>")]
        seqs.append([i for p in parts for i in tok.encode(p)])
    width = max(map(len, seqs))
    toks = np.zeros((len(seqs), width + 3), np.int32)
    for i, q in enumerate(seqs):
        toks[i, : len(q)] = q
        toks[i, len(q):] = rng.integers(0, tok.vocab_size, width + 3 - len(q))  # past length
    out = jax.jit(jax.vmap(lambda t, n: env.parse(Chunk(t, n))))(
        jnp.asarray(toks), jnp.asarray([len(q) for q in seqs], jnp.int32))
    out = {k: np.asarray(v) for k, v in out.items()}
    n_ok = 0
    for i, q in enumerate(seqs):
        want = ref_parse(tok.decode(q))
        got = (bool(out["is_answer"][i]), bool(out["answer_ok"][i]), int(out["answer"][i]))
        assert got == want, (tok.decode(q), got, want)
        n_ok += want[1]
    assert n_ok > 60   # well-formed answers are among them


@pytest.mark.parametrize("kind", KINDS)
def test_malformed_actions_never_raise(kind, tokenizers_, data_dir):
    s = setup_env(kind, tokenizers_, data_dir)
    env = s.env
    obs, st = s.vreset(jax.random.split(jax.random.key(3), B), s.params)
    k1, k2 = jax.random.split(jax.random.key(4))
    toks = jax.random.randint(k1, (B, 24), -5, env.tokenizer.vocab_size + 50)  # also out of vocab
    act = Chunk(toks.astype(jnp.int32), jax.random.randint(k2, (B,), 0, 25).astype(jnp.int32))
    _, st2, r, done, info = s.vstep(jax.random.split(k2, B), st, act, s.params)
    assert np.asarray(done).all() and np.isfinite(np.asarray(r)).all()
    assert not (np.asarray(info["answer_valid"]) & ~np.asarray(info["answered"])).any()


@pytest.mark.parametrize("kind", ["sentencepiece", "hf_single_tags"])
def test_oracle_demos_and_answer_match(kind, tokenizers_, data_dir):
    """SFT demos through `play` (what the loop's warm start uses) and rlx.rewards' answer_match
    (an independent reader of the tokens) agreeing with the env's `correct`."""
    s = setup_env(kind, tokenizers_, data_dir)
    env, tok = s.env, s.tok
    ep = jax.jit(lambda k: play(env, s.params, k, B, oracle_fn(env), max_rounds=2))(
        jax.random.key(5))
    assert (np.asarray(ep.rounds) == 1).all() and (np.asarray(ep.rewards["env"]) == 1.0).all()
    mask = np.asarray(ep.policy_mask)
    plen, length = np.asarray(ep.prompt_length), np.asarray(ep.length)
    rows = np.asarray(ep.task.row)
    for i in range(B):
        assert mask[i].sum() == length[i] - plen[i] == int(env.oracle_lens[rows[i]])
        assert mask[i, plen[i]:length[i]].all()
    # Corrupt the answer digit of half the rows: both readers must drop exactly those.
    toks = np.asarray(ep.tokens).copy()
    digit = {tok.encode(str(d))[0] for d in range(10)}
    close = tok.token_id("</answer>")
    wrong = np.arange(B) % 2 == 1
    for i in np.where(wrong)[0]:
        j = int(np.where(toks[i] == close)[0][-1]) - 1
        assert toks[i, j] in digit
        toks[i, j] = tok.encode("1" if tok.decode([int(toks[i, j])]) != "1" else "2")[0]
    fn = rewards.compose({"answer_match": 1.0}, tokenizer=tok)
    traj = types.SimpleNamespace(tokens=jnp.asarray(toks), policy_mask=jnp.asarray(mask),
                                 length=jnp.asarray(length))
    total, _ = fn(traj, ep.task)
    acts = [Chunk(jnp.asarray(toks[i, plen[i]:length[i]]), jnp.int32(length[i] - plen[i]))
            for i in range(B)]
    correct = []
    for i, a in enumerate(acts):
        st = env.reset_to(int(rows[i]))[1]
        correct.append(bool(env.step(jax.random.key(0), st, a)[4]["correct"]))
    np.testing.assert_array_equal(np.asarray(total) == 1.0, ~wrong)
    assert correct == (~wrong).tolist()


def test_errors(tokenizers_, data_dir):
    with pytest.raises(ValueError, match="needs its data"):
        envs.make("qa")
    with pytest.raises(ValueError, match="not both"):
        envs.make("qa", examples=tuple(TRAIN), data_dir=data_dir)
    with pytest.raises(ValueError, match="given env.data_dir and env.train_file, not both"):
        envs.make("qa", data_dir=data_dir, train_file="t.jsonl", heldout_file="h.jsonl")
    with pytest.raises(ValueError, match="env.train_file and env.heldout_file"):
        envs.make("qa", train_file="t.jsonl")
    with pytest.raises(ValueError, match=r"prompt has \d+ tokens > env.max_prompt_len=8"):
        envs.make("qa", examples=tuple(TRAIN), heldout_examples=tuple(TEST), max_prompt_len=8)
    with pytest.raises(ValueError, match="env.data_dir=.*tfds build nope"):
        envs.make("qa", data_dir=data_dir, dataset="nope")
    with pytest.raises(ValueError, match="heldout split has no row"):
        envs.make("qa", examples=tuple(TRAIN), heldout_examples=(("q", "no answer"),))


def test_jsonl_source_matches_the_given_pairs(tokenizers_, tmp_path):
    tok = tokenizers_["sentencepiece"][0]
    paths = {}
    for split, rows in (("train", TRAIN), ("test", TEST)):
        paths[split] = str(tmp_path / f"{split}.jsonl")
        with open(paths[split], "w") as f:
            for q, a in rows:    # extra fields and blank lines are allowed
                f.write(json.dumps({"question": q, "answer": a, "id": len(q)}) + "\n\n")
    from_jsonl, params = envs.make("qa", tokenizer=tok, train_file=paths["train"],
                                   heldout_file=paths["test"], split="heldout", axes="none")
    given, given_params = envs.make("qa", tokenizer=tok, examples=tuple(TRAIN),
                                    heldout_examples=tuple(TEST), split="heldout", axes="none")
    assert from_jsonl.rows == given.rows and from_jsonl.num_dropped == 2
    np.testing.assert_array_equal(np.asarray(from_jsonl.prompt_tokens),
                                  np.asarray(given.prompt_tokens))
    np.testing.assert_array_equal(np.asarray(from_jsonl.answers), np.asarray(given.answers))
    jax.tree.map(np.testing.assert_array_equal, params, given_params)


@pytest.mark.parametrize("text,match", [
    ('{"question": "q"}\n', r"bad.jsonl:1: needs text fields 'question' and 'answer'; "
                            r"got \['question'\]"),
    ('\n{"question": "q", "answer": "#### 1"}\n{"question": 1,\n',
     r"bad.jsonl:3: not a JSON object"),
    ('["question", "answer"]\n', r"bad.jsonl:1: .* got list"),
    ("\n\n", r"bad.jsonl holds no examples"),
])
def test_jsonl_errors_name_the_file_and_line(tmp_path, text, match):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(text)
    with pytest.raises(ValueError, match=match):
        envs.make("qa", train_file=str(bad), heldout_file=str(bad))
