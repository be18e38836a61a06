"""The traps a careful user falls into with ``aw.trace``: each gets a clear error naming the
argument (before the model runs where possible) or simply works."""

from __future__ import annotations

import copy
import importlib
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import attn_widgets as aw

trace_mod = importlib.import_module("attn_widgets.trace")
checks_mod = importlib.import_module("attn_widgets._checks")

SENTENCE = "The cat sat on the mat because it was warm."


def _count_forward(model):
    """A list that grows by one on every forward call of ``model``."""
    calls: list[int] = []
    model.register_forward_pre_hook(lambda *_: calls.append(1))
    return calls


def _reference_grads(model, inputs, pick):
    """d pick(outputs) / d attentions, the plain way: every layer's gradient in one autograd.grad."""
    with torch.enable_grad():
        out = model(**inputs, output_attentions=True, return_dict=True)
        grads = torch.autograd.grad(pick(out), out.attentions)
    return out, np.stack([g[0].numpy() for g in grads])


# -- model positions --------------------------------------------------------------------


@pytest.mark.parametrize("n_words", [600, 5000])
def test_text_longer_than_minilm_positions(minilm, n_words):
    model, tok = copy.deepcopy(minilm[0]), minilm[1]
    calls = _count_forward(model)
    text = " ".join(["word"] * n_words)
    n = len(tok(text)["input_ids"])
    with pytest.raises(ValueError) as info:
        aw.trace(model, tok, text)
    msg = str(info.value)
    assert msg.startswith(f"text: {n} tokens, but all-MiniLM-L6-v2 has 512 positions")
    assert "max_length=512" in msg and "trace_lazy" in msg
    assert calls == []
    # The advice works: truncated to the limit it runs.
    assert aw.trace(model, tok, text, max_length=512, gradients=False).n_tokens == 512


def test_input_longer_than_gpt2_positions():
    model, tok = aw.tiny_gpt2()
    calls = _count_forward(model)
    ids = torch.randint(0, 1000, (1, 1025))
    with pytest.raises(ValueError, match=r"text: 1025 tokens, but tiny-gpt2-2x4 has 1024 positions.*max_length=1024.*trace_lazy"):
        aw.trace(model, tok, {"input_ids": ids})
    assert calls == []


def test_rotary_models_have_no_position_table(llama):
    from attn_widgets.capture.huggingface import _position_limit

    assert _position_limit(llama) is None
    assert _position_limit(aw.tiny_gpt2()[0]) == 1024


# -- memory -------------------------------------------------------------------------------


def test_dense_capture_that_cannot_fit_is_refused_before_the_forward_pass():
    """32 layers x 32 heads at T=4096: 64 GiB of attention (+64 GiB gradients)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=100, n_positions=4096, n_embd=64, n_layer=32, n_head=32)
    model = GPT2LMHeadModel(config).eval()
    calls = _count_forward(model)
    ids = torch.randint(0, 100, (1, 4096))
    with pytest.raises(ValueError) as info:
        aw.trace(model, None, {"input_ids": ids})
    msg = str(info.value)
    assert "32 layers x 32 heads x 4096 x 4096 tokens is 64.0 GiB of float32 x 2 with gradients = 128.0 GiB" in msg
    assert "trace_lazy" in msg and "max_length" in msg
    assert calls == []


def test_dense_capture_guard_uses_available_memory(gpt2, monkeypatch):
    model, tok = gpt2
    monkeypatch.setattr(checks_mod, "_available_memory_bytes", lambda: 1000)
    n = len(tok(SENTENCE)["input_ids"])
    need = 2 * 4 * n * n * 4  # layers x heads x T x T x float32
    with pytest.raises(ValueError, match=rf"text: a dense trace of 2 layers x 4 heads x {n} x {n} tokens"):
        aw.trace(model, tok, SENTENCE)
    # Without gradients half the arrays; still too big for 1 kB.
    with pytest.raises(ValueError, match=r"more than the 0 MiB of memory available"):
        aw.trace(model, tok, SENTENCE, gradients=False)
    monkeypatch.setattr(checks_mod, "_available_memory_bytes", lambda: int(need * 1.5 * 2) + 1)
    assert aw.trace(model, tok, SENTENCE).n_tokens == n


_PEAK_SCRIPT = textwrap.dedent(
    """
    import json, os, torch
    from transformers import GPT2Config, GPT2LMHeadModel
    import attn_widgets as aw
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=500, n_positions=512, n_embd=64, n_layer=8, n_head=8)).eval()
    ids = torch.randint(0, 500, (1, 512))
    aw.trace(model, None, {"input_ids": ids[:, :16]})
    with open("/proc/self/statm") as f:
        base = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    tr = aw.trace(model, None, {"input_ids": ids})
    # VmHWM, the peak of this process's own memory: ru_maxrss would carry over the parent's
    # (pytest's) high-water mark through fork + exec.
    with open("/proc/self/status") as f:
        peak = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:"))
    print(json.dumps({"returned": tr.attentions.nbytes + tr.gradients.nbytes, "capture": peak - base}))
    """
)


def test_capture_peak_memory_is_bounded():
    """8 x 8 heads at T=512 returns 128 MiB (attention + gradients); the capture may use at most
    2x that on top of the model (it used 3.2x: stacked copies, a tuple of all gradients, a
    copy in the constructor). A fresh process, so the peak RSS is this capture's."""
    # A fixed mmap threshold: glibc's sliding one keeps freed 8 MiB torch temporaries in the
    # heap, which measures the allocator's heuristics rather than what the capture holds.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(2**20)}
    out = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT], check=False, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["returned"] == 2 * 8 * 8 * 512 * 512 * 4
    assert r["capture"] <= 2.0 * r["returned"], r["capture"] / r["returned"]


@pytest.mark.parametrize("which", ["gpt2", "minilm"])
def test_layer_by_layer_gradients_equal_one_autograd_call(which, gpt2, minilm):
    """The gradients copied out by hooks during one backward walk equal d y / d A of every
    layer taken at once."""
    model, tok = gpt2 if which == "gpt2" else minilm
    inputs = dict(tok(SENTENCE, return_tensors="pt"))
    if which == "gpt2":
        inputs.pop("token_type_ids")
        pick = lambda out: out.logits[0, 3, 17]
        tr = aw.trace(model, tok, SENTENCE, target=17, position=3)
    else:
        pick = lambda out: out.last_hidden_state[0].mean(0).norm()
        tr = aw.trace(model, tok, SENTENCE)
    out, ref = _reference_grads(model, inputs, pick)
    np.testing.assert_allclose(tr.gradients, ref, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(tr.attentions, np.stack([a[0].detach().numpy() for a in out.attentions]), atol=1e-7)
    assert np.abs(tr.gradients).max() > 0


# -- tokenizer-like objects --------------------------------------------------------------


def test_minimal_callable_tokenizer(gpt2):
    model, tok = gpt2
    ids = tok(SENTENCE)["input_ids"]

    def minimal(text):  # no keyword arguments, no other methods
        return {"input_ids": tok(text)["input_ids"]}

    tr = aw.trace(model, minimal, SENTENCE)
    ref = aw.trace(model, tok, SENTENCE)
    assert tr.tokens == tuple(str(i) for i in ids) and tr.token_ids == tuple(ids)
    np.testing.assert_allclose(tr.attentions, ref.attentions, atol=1e-6)
    # No special mask from a callable; its ids cannot be named, so none are marked.
    assert not tr.special_mask.any()
    assert aw.trace(model, minimal, SENTENCE, max_length=4).n_tokens == 4


def test_tokenizers_tokenizer(minilm):
    model, tok = minilm
    fast = tok.backend_tokenizer  # a tokenizers.Tokenizer: encode(), id_to_token(), not callable
    tr = aw.trace(model, fast, SENTENCE)
    ref = aw.trace(model, tok, SENTENCE)
    assert tr.tokens == ref.tokens and tr.token_ids == ref.token_ids
    np.testing.assert_array_equal(tr.special_mask, ref.special_mask)
    np.testing.assert_allclose(tr.attentions, ref.attentions, atol=1e-6)
    np.testing.assert_allclose(tr.gradients, ref.gradients, rtol=1e-4, atol=1e-7)


def test_tokenizer_that_returns_no_input_ids(gpt2):
    model, _ = gpt2
    with pytest.raises(TypeError, match=r"tokenizer: calling function returned dict with keys \['ids'\]; expected a mapping with 'input_ids'"):
        aw.trace(model, lambda text: {"ids": [1, 2]}, SENTENCE)


# -- bad arguments, before the model runs ------------------------------------------------


@pytest.mark.parametrize(
    "model, match",
    [
        (None, r"model: expected a transformers model .* received None"),
        ("bert-base-uncased", r"model: expected .* received str \(a name or path: load it first"),
        (torch.nn.Linear(4, 4), r"model: expected a transformers model \(with get_input_embeddings\(\) and a config\), received Linear"),
        (torch.nn.Sequential(torch.nn.Embedding(10, 4)), r"received Sequential; for plain PyTorch attention modules use attn_widgets.trace_torch"),
    ],
)
def test_not_a_model(gpt2, model, match):
    with pytest.raises(TypeError, match=match):
        aw.trace(model, gpt2[1], SENTENCE)


def test_bad_arguments_fail_before_the_forward_pass(gpt2):
    model, tok = copy.deepcopy(gpt2[0]), gpt2[1]
    calls = _count_forward(model)
    with pytest.raises(ValueError, match=r"max_length: expected an int >= 1 or None, received -5"):
        aw.trace(model, tok, SENTENCE, max_length=-5)
    with pytest.raises(TypeError, match=r"max_length: expected an int or None, received 2.5"):
        aw.trace(model, tok, SENTENCE, max_length=2.5)
    with pytest.raises(TypeError, match=r"input_ids: expected integer token ids, received dtype float32"):
        aw.trace(model, tok, {"input_ids": torch.rand(1, 5)})
    with pytest.raises(ValueError, match=r"input_ids: expected shape \[T\] or \[B, T\], received \(1, 2, 5\)"):
        aw.trace(model, tok, {"input_ids": torch.ones(1, 2, 5, dtype=torch.long)})
    with pytest.raises(ValueError, match=r"input_ids: expected ids in \[0, 30522\) .* received min 0, max 40000"):
        aw.trace(model, tok, {"input_ids": torch.tensor([[0, 5, 40000]])})
    with pytest.raises(ValueError, match=r"input_ids: expected ids in \[0, 30522\) .* received min -1"):
        aw.trace(model, tok, torch.tensor([3, -1, 4]))
    with pytest.raises(TypeError, match=r"position: expected an int or None, received 1.0 \(float\)"):
        aw.trace(model, tok, SENTENCE, position=1.0)
    with pytest.raises(TypeError, match=r"batch_index: expected an int, received 0.0"):
        aw.trace(model, tok, ["a b", "c"], batch_index=0.0)
    with pytest.raises(TypeError, match=r"gradients: expected True or False, received 'yes'"):
        aw.trace(model, tok, SENTENCE, gradients="yes")
    assert calls == []


def test_negative_batch_index_counts_from_the_end(gpt2):
    model, tok = gpt2
    last = aw.trace(model, tok, ["a much longer first sentence here", "a short one"], batch_index=-1)
    alone = aw.trace(model, tok, "a short one")
    assert last.tokens == alone.tokens
    np.testing.assert_allclose(last.attentions, alone.attentions, atol=1e-5)


def test_max_length_one(gpt2):
    model, tok = gpt2
    tr = aw.trace(model, tok, SENTENCE, max_length=1)
    assert tr.n_tokens == 1 and tr.tokens == ("[CLS]",)


def test_capture_inside_inference_mode(gpt2):
    model, tok = gpt2
    ref = aw.trace(model, tok, SENTENCE)
    with torch.inference_mode():
        tr = aw.trace(model, tok, SENTENCE)
        no_grad = aw.trace(model, tok, SENTENCE, gradients=False)
    np.testing.assert_allclose(tr.gradients, ref.gradients, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(no_grad.attentions, ref.attentions, atol=1e-7)


@pytest.mark.parametrize(
    "target, error, match",
    [
        (lambda out: out.logits[0, -1, 5].detach(), ValueError, r"target: the scalar returned by 'lambda' is not connected to the model \(requires_grad=False"),
        (lambda out: torch.tensor(1.0), ValueError, r"not connected to the model"),
        (lambda out: out.logits[0, -1].argmax(), TypeError, r"target: a callable target must return a floating point scalar .* received a torch.int64 tensor"),
        (lambda out: out.no_such_field, ValueError, r"target: the target callable 'lambda' raised AttributeError"),
    ],
)
def test_bad_callable_targets(gpt2, target, error, match):
    with pytest.raises(error, match=match):
        aw.trace(*gpt2, SENTENCE, target=target)


def test_target_description_by_name_or_label(gpt2):
    model, tok = gpt2

    def warm_rug_similarity(outputs):
        return outputs.logits[0, -1, 3]

    assert aw.trace(model, tok, SENTENCE, target=warm_rug_similarity).target == "custom target warm_rug_similarity(outputs)"
    assert aw.trace(model, tok, SENTENCE, target=lambda o: o.logits[0, -1, 3]).target == "custom target lambda(outputs)"
    tr = aw.trace(model, tok, SENTENCE, target=warm_rug_similarity, label="similarity to 'a warm rug'")
    assert tr.target == "similarity to 'a warm rug'"
    assert aw.trace(model, tok, SENTENCE, target=3, label="logit 3").target == "logit 3"
    with pytest.raises(TypeError, match="label: expected a string or None, received int"):
        aw.trace(model, tok, SENTENCE, label=3)


# -- sentence pairs and batches ------------------------------------------------------------


def test_sentence_pair(minilm):
    model, tok = minilm
    a, b = "First sentence.", "Second one is longer."
    tr = aw.trace(model, tok, a, text_pair=b)
    enc = tok(a, b, return_tensors="pt")
    n_a = len(tok(a)["input_ids"])  # [CLS] a [SEP]
    assert tr.tokens[n_a - 1] == "[SEP]" and tr.tokens[-1] == "[SEP]"
    assert tr.meta["segment_ids"] == tuple(enc["token_type_ids"][0].tolist())
    assert tr.meta["segments"] == [(0, n_a), (n_a, tr.n_tokens)]
    with torch.no_grad():
        ref = model(**enc, output_attentions=True).attentions
    np.testing.assert_allclose(tr.attentions, np.stack([x[0].numpy() for x in ref]), atol=1e-6)
    assert "segments" not in aw.trace(model, tok, a).meta


def test_sentence_pair_without_token_types(gpt2):
    """GPT-2 gets no token_type_ids, yet the pair's boundary is recorded."""
    model, tok = gpt2
    tr = aw.trace(model, tok, "A first.", text_pair="Then a second.")
    n_a = len(tok("A first.")["input_ids"])
    assert tr.meta["segments"] == [(0, n_a), (n_a, tr.n_tokens)]


@pytest.mark.parametrize("text", [("First sentence.", "Second one."), ["a", "b", "c"]])
def test_several_strings_need_batch_index_or_text_pair(gpt2, text):
    with pytest.raises(ValueError, match=r"text: received a (tuple|list) of \d strings\. For a sentence pair pass .*text_pair=.*batch_index="):
        aw.trace(*gpt2, text)
    assert aw.trace(*gpt2, text, batch_index=1).tokens[1] == aw.trace(*gpt2, text[1]).tokens[1]
    assert aw.trace(*gpt2, ["only one"]).n_tokens == aw.trace(*gpt2, "only one").n_tokens


def test_second_positional_string_is_not_a_target(gpt2):
    with pytest.raises(TypeError, match=r"target: received the string 'B\.'.*text_pair='B\.'"):
        aw.trace(*gpt2, "A.", "B.")


def test_tokenized_batch_needs_batch_index(gpt2):
    model, tok = gpt2
    enc = tok(["a b c", "d e"], padding=True, return_tensors="pt")
    with pytest.raises(ValueError, match=r"batch_index: the input is a batch of 2 sequences; pass batch_index="):
        aw.trace(model, tok, enc)


# -- only the inputs the model means -------------------------------------------------------


def test_tiny_gpt2_gets_no_token_type_ids(gpt2):
    """The BERT tokenizer's token_type_ids would be embedded by GPT-2's word embeddings."""
    model, tok = gpt2
    tr = aw.trace(model, tok, SENTENCE)
    ids = tok(SENTENCE, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model(input_ids=ids, output_attentions=True)
    np.testing.assert_allclose(tr.attentions, np.stack([a[0].numpy() for a in out.attentions]), atol=1e-6)
    predicted = int(out.logits[0, -1].argmax())
    assert f"(id {predicted})" in tr.target


# -- reduced precision ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_models(minilm, dtype):
    """The demo MiniLM in bfloat16 at ~310 tokens: rows are ~3e-3 off 1 (over the float32 tolerance)."""
    model, tok = minilm
    half = copy.deepcopy(model).to(dtype)
    text = " ".join(["the cat sat on the mat because it was warm and soft"] * 26)
    tr = aw.trace(half, tok, text)
    name = str(dtype).replace("torch.", "")
    assert tr.meta["dtype"] == name and tr.n_tokens > 300
    assert tr.attentions.dtype == np.float32 and np.isfinite(tr.gradients).all()
    assert np.abs(tr.attentions.sum(-1) - 1).max() <= trace_mod.row_sum_atol(name)
    assert aw.trace(model, tok, SENTENCE).meta["dtype"] == "float32"
    # Flows and statistics accept the trace (its tolerance is its source dtype's).
    assert tr.rollout().shape == (tr.n_layers, tr.n_tokens, tr.n_tokens)
    assert tr.head_stats()["entropy"].shape == (tr.n_layers, tr.n_heads)


# -- many captures in one process -----------------------------------------------------------


def test_soak_many_captures_return_memory():
    """40 captures of random sizes (up to 64 MiB each) in one process: RSS ends within 10% of
    where it started (after one warm-up of the largest size). A fresh process; freed heap
    that glibc keeps cached is handed back (malloc_trim) before each reading, so the test
    measures what live objects hold, not the allocator's fragmentation."""
    script = textwrap.dedent(
        """
        import ctypes, gc, json, random, torch
        from transformers import GPT2Config, GPT2LMHeadModel
        import attn_widgets as aw
        def rss():
            gc.collect()
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * 4096
        torch.manual_seed(0)
        model = GPT2LMHeadModel(GPT2Config(vocab_size=500, n_positions=512, n_embd=64, n_layer=4, n_head=8)).eval()
        rng = random.Random(0)
        aw.trace(model, None, torch.randint(0, 500, (512,)))
        gc.collect()
        base = rss()
        kept = 0
        for i in range(40):
            t = rng.randint(8, 512)
            tr = aw.trace(model, None, torch.randint(0, 500, (t,)), gradients=rng.random() < 0.8)
            kept += tr.n_tokens
            del tr
        gc.collect()
        print(json.dumps({"base": base, "end": rss(), "tokens": kept}))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["tokens"] > 40 * 8
    assert r["end"] <= 1.10 * r["base"], (r["end"] - r["base"]) / 2**20


# -- the lazy capture shares the checks ----------------------------------------------------


def test_trace_lazy_checks_model_ids_and_positions(minilm, gpt2):
    model, tok = minilm
    with pytest.raises(TypeError, match=r"model: expected a transformers model .* received None"):
        aw.trace_lazy(None, tok, SENTENCE)
    with pytest.raises(ValueError, match=r"input_ids: expected ids in \[0, 30522\)"):
        aw.trace_lazy(model, None, [1, 2, 99999])
    with pytest.raises(ValueError, match=r"text: 602 tokens, but all-MiniLM-L6-v2 has 512 positions .* max_length=512"):
        aw.trace_lazy(model, tok, " ".join(["word"] * 600))
    # GPT-2 gets no token_type_ids from the BERT tokenizer here either.
    g_model, g_tok = gpt2
    lazy = aw.trace_lazy(g_model, g_tok, SENTENCE)
    ids = g_tok(SENTENCE, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        ref = g_model(input_ids=ids, output_attentions=True).attentions
    np.testing.assert_allclose(lazy.head_map(1, 2), ref[1][0, 2].numpy(), atol=1e-5)
