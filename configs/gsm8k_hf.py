"""RL from a pretrained Hugging Face model on GSM8K-format math questions (the `qa` env).

The real run starts from a local checkpoint directory (config.json, safetensors, tokenizer.json
and its chat template, e.g. Qwen2.5-0.5B-Instruct or Qwen3-0.6B) and a TFDS data dir holding
`gsm8k` prepared as array_record (nothing is downloaded at train time):

    tfds build gsm8k --data_dir=/data/tfds --file_format=array_record     # once, with network
    python -m experiments.train \\
        --config=configs/gsm8k_hf.py:hf_path=/ckpt/Qwen2.5-0.5B-Instruct,data_dir=/data/tfds \\
        --workdir=/runs/gsm8k_qwen05
    # or any JSON-lines files of {"question": ..., "answer": "... #### N"} objects:
    python -m experiments.train --config=configs/gsm8k_hf.py:hf_path=/ckpt/q05,\\
    train_file=/data/train.jsonl,heldout_file=/data/test.jsonl --workdir=/runs/my_qa
    # fsdp over 8 chips, CISPO, another seed:
    python -m experiments.train \\
        --config=configs/gsm8k_hf.py:hf_path=/ckpt/q3,data_dir=/data/tfds,mesh=1x8x1,loss=cispo \\
        --config.seed=1 --workdir=/runs/gsm8k_qwen3_cispo

The CPU smoke run (`tiny`) builds, once, a tiny random Qwen2-format checkpoint, a tokenizer.json
trained here (byte-level BPE with Qwen2's pre-tokenizer and a ChatML template) and a tiny
GSM8K-format TFDS dataset (`rlx_qa_local`) under `cache_dir` (default /tmp/rlx_gsm8k_tiny_v1),
then runs a few SFT and RL steps end to end:

    python -m experiments.train --config=configs/gsm8k_hf.py:tiny --workdir=/tmp/gsm8k_tiny

Arg flags (comma-separated): `tiny`, `hf_path=`, `data_dir=`, `dataset=` (default gsm8k),
`dataset_config=`, `train_file=` and `heldout_file=` (JSON lines, instead of `data_dir`),
`mesh=DxFxT`, `loss=ppo|gspo|cispo`, `advantage=grpo|drgrpo|rloo|...`,
`param_dtype=float32|bfloat16`, `cache_dir=` (tiny assets).

Precision: bf16 activations, a float32 LM head (`head_dtype`, the M1 precision-gap fix) and
float32 params by default. `param_dtype=bfloat16` halves parameter memory, but rlx keeps no
float32 master copy, so AdamW steps of lr ~1e-6 mostly round away in bf16 weights.

With `init.hf_path` set, `config.model` holds only overrides of the checkpoint's config.json
(`rlx.train.setup.model_config`); the tokenizer and chat template come from the same directory.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile

import ml_collections

from configs import common
from rlx.train.optim import optim_section

TINY_CACHE = "/tmp/rlx_gsm8k_tiny_v1"
# A ChatML template in the style of Qwen2.5's (system, user, generation prompt).
CHATML_TEMPLATE = (
    "{%- for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + "
    "'<|im_end|>\\n' }}{%- endfor %}{%- if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{%- endif %}")
# Qwen2's pre-tokenizer split (digits one by one), before the byte-level mapping.
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+"
               r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    a = common.parse_arg(arg, tiny=False, hf_path="", data_dir="", dataset="gsm8k",
                         dataset_config="", train_file="", heldout_file="", mesh="-1x1x1",
                         loss="ppo", advantage="grpo", param_dtype="float32", cache_dir=TINY_CACHE)
    if a.tiny:
        a.hf_path, a.data_dir = tiny_assets(a.cache_dir)
        a.dataset, a.dataset_config = "rlx_qa_local", "tiny"
    elif not (a.hf_path and (a.data_dir or (a.train_file and a.heldout_file))):
        raise ValueError("configs/gsm8k_hf.py needs hf_path=<HF model dir> and its data in its "
                         "arg: data_dir=<TFDS data dir with gsm8k>, or train_file=<JSONL>,"
                         "heldout_file=<JSONL> (or the CPU smoke variant `tiny`)")
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.init = ml_collections.ConfigDict(dict(hf_path=a.hf_path))
    # Overrides of the checkpoint's config.json (see rlx.train.setup.model_config).
    c.model = ml_collections.ConfigDict(dict(dtype="bfloat16", param_dtype=a.param_dtype,
                                             head_dtype="float32", max_len=1024))
    c.mesh = common.mesh_section(a.mesh)

    c.env = ml_collections.ConfigDict(dict(
        name="qa", data_dir=a.data_dir, dataset=a.dataset, dataset_config=a.dataset_config,
        train_split="train", heldout_split="test",
        train_file=a.train_file, heldout_file=a.heldout_file,   # JSON lines instead of TFDS
        max_prompt_len=384,    # GSM8K questions in a chat template: < 300 tokens
        max_oracle_len=0,      # oracle rounds (SFT only): fit the longest
        max_rows=0,
        train_axes="none", eval_axes="none"))   # no scaffold axes in this env

    c.rollout = common.rollout_section(temperature=1.0, max_new_tokens=512, max_rounds=1,
                                       max_len=1024)
    c.rollout.batch_size = 256
    c.rollout.group_size = 8

    # No warm start by default: RL from the pretrained model. Set sft.steps > 0 to first
    # imitate the reference solutions (the env's oracle).
    c.sft = ml_collections.ConfigDict(dict(
        steps=0, batch_size=64, max_rounds=1, max_len=1024,
        optim=optim_section(lr=1e-5, warmup_steps=10, schedule="cosine", decay_steps=100)))

    c.rl = ml_collections.ConfigDict(dict(
        steps=200, advantage=a.advantage, advantage_kwargs=ml_collections.ConfigDict(),
        loss=a.loss, clip_low=0.2, clip_high=0.28, clip_c=3.0,
        loss_agg_mode="token-mean", horizon=0, epochs=1, num_minibatches=8,
        temperature=c.rollout.get_ref("temperature"),
        kl_coef=0.0, kl_reward_coef=0.0, kl_estimator="k3", entropy_coef=0.0,
        value_clip=0.5, chunk_size=512, old_logprobs="trainer", dynamic_sampling=False,
        correction=ml_collections.ConfigDict(dict(mode="none", level="token", threshold=2.0)),
    ))
    c.optim = optim_section(lr=1e-6, b1=0.9, b2=0.95, eps=1e-15, grad_clip=1.0,
                            warmup_steps=10)
    c.critic_optim = optim_section(lr=1e-5)

    # `correct`: the env's check of the last <answer>N</answer> (works with multi-token tags);
    # `format`: a well-formed answer at all.
    c.rewards = ml_collections.ConfigDict(dict(correct=1.0, format=0.1))

    c.eval = ml_collections.ConfigDict(dict(every=25, num_episodes=256, temperature=0.0,
                                            seed=1234, print_episodes=3))
    c.checkpoint = ml_collections.ConfigDict(dict(every=50, keep=2))

    if a.tiny:
        c.model.max_len = 256
        c.env.max_prompt_len = 72
        c.rollout.max_new_tokens, c.rollout.max_len = 40, 120
        c.rollout.batch_size, c.rollout.group_size = 16, 4
        c.sft.steps, c.sft.batch_size, c.sft.max_len = 60, 16, 120
        c.sft.optim = optim_section(lr=1e-2, warmup_steps=2, schedule="cosine", decay_steps=60)
        c.rl.steps, c.rl.num_minibatches = 4, 1
        c.optim.lr = 1e-3
        c.eval.every, c.eval.num_episodes = 2, 16
        c.checkpoint.every = 2
        # The tiny tokenizer has single-token tags, so rlx.rewards' answer_match (which reads
        # the tokens independently of the env) applies too; weight 0: logged as a cross-check.
        c.rewards.answer_match = 0.0
    c.lock()
    return c


# -- the tiny assets ------------------------------------------------------------------------------

def tiny_examples(n_train: int = 64, n_test: int = 16, seed: int = 0):
    """GSM8K-format (question, answer) pairs with one- or two-step arithmetic."""
    rng = random.Random(seed)
    names = ["Tom", "Ana", "Li", "Sam", "Mia", "Omar"]
    items = ["apples", "pens", "books", "coins", "cards"]
    out = []
    for _ in range(n_train + n_test):
        who, what = rng.choice(names), rng.choice(items)
        x, y, z = rng.randint(2, 30), rng.randint(2, 30), rng.randint(1, 9)
        if rng.random() < 0.5:
            q = f"{who} has {x} {what} and gets {y} more. How many {what} does {who} have?"
            a = f"{who} has {x} + {y} = <<{x}+{y}={x + y}>>{x + y} {what}.\n#### {x + y}"
        else:
            q = f"{who} has {x} {what}, gives away {z}, then doubles them. How many now?"
            r = (x - z) * 2
            a = (f"After giving away: {x} - {z} = <<{x}-{z}={x - z}>>{x - z}.\n"
                 f"Doubled: {x - z} * 2 = <<{x - z}*2={r}>>{r}.\n#### {r}")
        out.append((q, a))
    return tuple(out[:n_train]), tuple(out[n_train:])


def write_tiny_tokenizer(path: str, texts, markup=("<answer>", "</answer>"),
                         chat_template: str | None = CHATML_TEMPLATE, vocab_size: int = 384):
    """A byte-level BPE tokenizer.json trained on `texts` (Qwen2's pre-tokenizer, so digits are
    single tokens), ChatML special tokens, `markup` as added tokens, and tokenizer_config.json
    with `<|im_end|>` as EOS and the chat template (None: no template)."""
    import tokenizers
    from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(tokenizers.Regex(QWEN2_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(texts), trainer)
    if markup:
        tok.add_tokens(list(markup))
    os.makedirs(path, exist_ok=True)
    tok.save(os.path.join(path, "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|im_end|>",
              "pad_token": "<|endoftext|>", "bos_token": None}
    if chat_template is not None:
        config["chat_template"] = chat_template
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=1)
    return tok.get_vocab_size(with_added_tokens=True)


def tiny_assets(cache_dir: str = TINY_CACHE) -> tuple[str, str]:
    """(hf_path, data_dir) of the tiny run, built under `cache_dir` if absent (atomically, so
    concurrent runs never see a half-written directory)."""
    hf_path, data_dir = os.path.join(cache_dir, "model"), os.path.join(cache_dir, "tfds")
    if os.path.exists(os.path.join(cache_dir, "DONE")):
        return hf_path, data_dir
    from absl import logging as absl_logging

    from rlx.data.qa import SYSTEM, QaLocalConfig, RlxQaLocal
    from rlx.models import hf

    parent = os.path.dirname(os.path.abspath(cache_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=".tiny_assets_")
    train, test = tiny_examples()
    texts = [SYSTEM] + [f"{q}\n{a}" for q, a in train + test]
    vocab = write_tiny_tokenizer(os.path.join(tmp, "model"), texts * 4)
    hf.make_tiny_checkpoint(os.path.join(tmp, "model"), "qwen2", vocab_size=vocab, max_len=256)
    cfg = QaLocalConfig(name="tiny", examples=train, test_examples=test)
    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)   # TFDS logs the whole config as a warning
    try:
        RlxQaLocal(config=cfg, data_dir=os.path.join(tmp, "tfds"),
                   file_format="array_record").download_and_prepare()
    finally:
        absl_logging.set_verbosity(verbosity)
    open(os.path.join(tmp, "DONE"), "w").close()
    try:
        os.rename(tmp, cache_dir)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return hf_path, data_dir
