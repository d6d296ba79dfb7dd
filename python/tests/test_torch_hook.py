"""The in-process PyTorch hook: every forward pass reaches the pipeline with seq_id/pos, and
generate()'s decode steps continue their sequences.

CI has no PyTorch: a stand-in module implements the hook protocol PyTorch modules have
(`register_forward_hook(hook, with_kwargs=True)`, `register_forward_pre_hook`). Where torch and
transformers are installed, the same is checked on SmolLM2 under `generate()`.
"""
import os
from pathlib import Path

import numpy as np
import pytest

import neurostream as ns
from neurostream.torch import attach


class Handle:
    def __init__(self, hooks, hook):
        self.hooks, self.hook = hooks, hook

    def remove(self):
        self.hooks.remove(self.hook)


class StandInBlock:
    """A transformer block: output = (hidden states [batch, seq, d],), positions as keywords."""

    def __init__(self, d):
        self.d = d
        self.hooks = []

    def register_forward_hook(self, hook, with_kwargs=False):
        assert with_kwargs
        self.hooks.append(hook)
        return Handle(self.hooks, hook)

    def __call__(self, hidden, **kwargs):
        out = (hidden * 2.0,)
        for h in list(self.hooks):
            h(self, (hidden,), kwargs, out)
        return out


class StandInModel:
    def __init__(self, block):
        self.block = block
        self.pre = []

    def register_forward_pre_hook(self, hook, with_kwargs=False):
        self.pre.append(hook)
        return Handle(self.pre, hook)

    def __call__(self, input_ids, position_ids):
        for h in list(self.pre):
            h(self, (), {"input_ids": input_ids})
        hidden = np.repeat(input_ids[..., None].astype(np.float32), self.block.d, axis=-1)
        return self.block(hidden, position_ids=position_ids)


class Tokenizer:
    def convert_ids_to_tokens(self, ids):
        return [f"<{i}>" for i in ids]


def test_generate_decode_steps_continue_their_sequences():
    d = 8
    p = ns.Pipeline()
    src = p.push_source(d_model=d, model="stand-in", layer="block")
    handle = p.start(collect=[src])
    block = StandInBlock(d)
    model = StandInModel(block)
    with attach(src, block, model=model, tokenizer=Tokenizer()) as hook:
        # generate(): a prompt of 5 tokens for a batch of 2, then 3 decode steps with a KV cache.
        ids = np.array([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]])
        model(ids, position_ids=np.tile(np.arange(5), (2, 1)))
        for step in range(3):
            model(np.array([[100 + step], [200 + step]]), position_ids=np.full((2, 1), 5 + step))
        # A new prompt: positions restart, new sequences.
        model(np.array([[42, 43]]), position_ids=np.arange(2)[None])
    assert hook.rows == 2 * 5 + 2 * 3 + 2
    src.close()
    table = handle.wait().tables[src.name]
    rows = list(zip(table["seq_id"].to_pylist(), table["pos"].to_pylist(), table["token"].to_pylist()))
    seq0 = [r for r in rows if r[0] == 0]
    seq1 = [r for r in rows if r[0] == 1]
    assert [r[1] for r in seq0] == list(range(8)) and [r[1] for r in seq1] == list(range(8))
    assert [r[2] for r in seq0] == ["<1>", "<2>", "<3>", "<4>", "<5>", "<100>", "<101>", "<102>"]
    assert [(r[0], r[1], r[2]) for r in rows if r[0] == 2] == [(2, 0, "<42>"), (2, 1, "<43>")]
    acts = ns.to_numpy(table)
    np.testing.assert_array_equal(acts[:, 0], 2.0 * np.array([int(t[1:-1]) for t in table["token"].to_pylist()]))


def test_modules_without_positions_continue_on_a_kv_cache():
    d = 4
    p = ns.Pipeline()
    src = p.push_source(d_model=d)
    handle = p.start(collect=[src])
    block = StandInBlock(d)
    hook = attach(src, block)
    block(np.zeros((1, 3, d), np.float32))
    block(np.zeros((1, 1, d), np.float32), past_key_values=[("k", "v")])
    block(np.zeros((1, 2, d), np.float32))  # no cache: a new sequence
    hook.remove()
    block(np.zeros((1, 2, d), np.float32))  # removed: not pushed
    src.close()
    table = handle.wait().tables[src.name]
    assert list(zip(table["seq_id"].to_pylist(), table["pos"].to_pylist())) == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1)]


def test_signal_sources_are_refused():
    p = ns.Pipeline()
    src = p.push_source(channels=["a"], sfreq=10.0)
    with pytest.raises(ValueError, match="activations push source"):
        attach(src, StandInBlock(1))


def test_real_model_under_generate():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    path = Path(os.environ.get("NEUROSTREAM_MODELS", Path.home() / ".cache" / "neurostream" / "models")) / "smollm2"
    if not (path / "config.json").exists():
        pytest.skip(f"no SmolLM2 in {path}")
    tok = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32)
    d = model.config.hidden_size
    p = ns.Pipeline()
    src = p.push_source(d_model=d, model="SmolLM2-135M", layer="layers.15")
    handle = p.start(collect=[src])
    inputs = tok(["The capital of France is"], return_tensors="pt")
    n_prompt = inputs["input_ids"].shape[1]
    with attach(src, model.model.layers[15], model=model, tokenizer=tok):
        out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    src.close()
    table = handle.wait().tables[src.name]
    assert set(table["seq_id"].to_pylist()) == {0}
    n = table.num_rows
    assert table["pos"].to_pylist() == list(range(n))
    assert n_prompt + 5 <= n <= out.shape[1]
