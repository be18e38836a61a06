"""trace_generate: generation + one capture, chat prompts, targets on demand, the Explorer's
target picker. Config-built models with random weights; nothing is downloaded."""

from __future__ import annotations

import numpy as np
import pytest

import attn_widgets as aw
from attn_widgets.capture.generate import estimate_capture_bytes

TEMPLATE = (
    "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}[assistant]{% endif %}"
)
CHAT = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "where is the cat"}]


@pytest.fixture(scope="module")
def chat_tok():
    """A fresh tokenizer (the session one stays template-free) with a simple Jinja template."""
    from transformers import AutoTokenizer

    from attn_widgets.capture.demo import _minilm_path

    tok = AutoTokenizer.from_pretrained(_minilm_path())
    tok.chat_template = TEMPLATE
    return tok


@pytest.fixture(scope="module")
def gqa_llama():
    """Llama-style: rotary positions, 4 query heads sharing 2 key/value heads (GQA)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=30522, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        bos_token_id=101, eos_token_id=102, pad_token_id=0,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def gen(gqa_llama, chat_tok):
    return aw.trace_generate(gqa_llama, chat_tok, CHAT, max_new_tokens=6, do_sample=False)


def _reference_grads(model, ids, position, token_id):
    """d logit[position, token_id] / d attentions, straight from torch (eager attention)."""
    import torch

    from attn_widgets.capture import eager_attention

    with eager_attention(model), torch.enable_grad():
        out = model(input_ids=torch.tensor([ids]), output_attentions=True)
        y = out.logits[0, position, token_id]
        grads = torch.autograd.grad(y, out.attentions)
    return np.stack([g[0].numpy() for g in grads]), np.stack([a[0].detach().numpy() for a in out.attentions])


def test_generation_marks_prompt_and_answer(gen, gqa_llama, chat_tok):
    import torch

    tr = gen.trace
    p0, t = gen.prompt_length, gen.n_tokens
    assert gen.n_generated == 6 and t == tr.n_tokens == len(gen.token_ids)
    assert tr.meta["prompt_length"] == p0
    assert tr.meta["generated"].tolist() == [False] * p0 + [True] * 6
    assert tr.meta["target_position"] == t - 1 and tr.meta["position"] == t - 2
    assert tr.causal and tr.shape == (2, 4, t, t)  # all 4 query heads, though only 2 kv heads
    # The same sequence as model.generate on the template's tokens, greedy.
    prompt_ids = chat_tok(chat_tok.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True),
                          add_special_tokens=False)["input_ids"]
    assert list(gen.token_ids[:p0]) == prompt_ids
    with torch.no_grad():
        direct = gqa_llama.generate(input_ids=torch.tensor([prompt_ids]), attention_mask=torch.ones(1, p0, dtype=torch.long),
                                    max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert list(gen.token_ids) == direct[0].tolist()
    assert gen.answer == chat_tok.decode(list(gen.token_ids[p0:]), skip_special_tokens=True)


def test_template_tokens_are_special(gen):
    tr = gen.trace
    special = dict(zip(range(tr.n_tokens), tr.special_mask.tolist()))
    p0 = gen.prompt_length
    # '[', 'system', ']', 'be', 'brief', '[', 'user', ']', 'where', 'is', 'the', 'cat', '[', 'assistant', ']'
    words = [(i, s) for i, s in enumerate(tr.tokens[:p0])]
    content = {"be", "brief", "where", "is", "the", "cat"}
    for i, s in words:
        assert special[i] == (s not in content), (i, s)
    assert tr.tokens[p0 - 2] == "assistant" and special[p0 - 2]


def test_default_target_is_last_generated_logit(gen, gqa_llama):
    tr = gen.trace
    p = gen.n_tokens - 1
    grads, attn = _reference_grads(gqa_llama, list(gen.token_ids), p - 1, gen.token_ids[p])
    np.testing.assert_allclose(tr.attentions, attn, atol=1e-6)
    np.testing.assert_allclose(tr.gradients, grads, rtol=1e-4, atol=1e-7)
    # Greedy: each generated token is the argmax of the logits one position earlier.
    import torch

    with torch.no_grad():
        logits = gqa_llama(input_ids=torch.tensor([gen.token_ids])).logits[0]
    for q in gen.generated_positions:
        assert int(logits[q - 1].argmax()) == gen.token_ids[q]
    assert f"'{tr.tokens[p]}'" in tr.target and f"position {p - 1}" in tr.target


def test_retarget_on_demand_and_cached(gen, gqa_llama):
    p = gen.prompt_length + 1
    first = gen.retarget(p)
    assert gen.retarget(p) is first  # cached: the same object
    assert gen.retarget(-1) is gen.trace  # the default target is not recomputed
    assert first.meta["target_position"] == p and first.meta["prompt_length"] == gen.prompt_length
    np.testing.assert_array_equal(first.attentions, gen.trace.attentions)
    assert not np.allclose(first.gradients, gen.trace.gradients)
    grads, _ = _reference_grads(gqa_llama, list(gen.token_ids), p - 1, gen.token_ids[p])
    np.testing.assert_allclose(first.gradients, grads, rtol=1e-4, atol=1e-7)
    # The logit at p - 1 sees nothing of the later queries: their gradient rows are zero.
    assert np.abs(first.gradients[:, :, p:, :]).max() == 0
    assert np.abs(first.gradients[:, :, p - 1, :]).max() > 0
    assert p in gen.cached_positions
    labels = [lab for lab, _ in gen.target_options()]
    assert labels[0] == f"#{gen.prompt_length} {gen.trace.tokens[gen.prompt_length]!r}"
    assert len(labels) == gen.n_generated


def test_retarget_cache_is_bounded(gqa_llama, chat_tok):
    g = aw.trace_generate(gqa_llama, chat_tok, "the cat", max_new_tokens=4, do_sample=False, max_cached=1)
    a = g.retarget(g.prompt_length)
    g.retarget(g.prompt_length + 1)
    assert g.retarget(g.prompt_length) is not a  # evicted, recomputed
    assert len(g.cached_positions) == 2  # the default + one


def test_retarget_bad_positions(gen):
    with pytest.raises(ValueError, match="prompt"):
        gen.retarget(0)
    with pytest.raises(ValueError, match="position"):
        gen.retarget(gen.n_tokens)
    with pytest.raises(TypeError, match="position"):
        gen.retarget("3")
    with pytest.raises(TypeError, match="position"):
        gen.retarget(True)


def test_retarget_refuses_a_changed_model(chat_tok):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=30522, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
    )).eval()
    g = aw.trace_generate(model, chat_tok, "a dog", max_new_tokens=3, do_sample=False)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    with pytest.raises(ValueError, match="changed"):
        g.retarget(g.prompt_length)


def test_explorer_target_picker_lists_generated_tokens(gen):
    ex = aw.Explorer(gen)
    picker = ex.target_picker
    assert list(picker.options) == [lab for lab, _ in gen.target_options()]
    assert picker.value == gen.label(-1) and picker.layout.display == ""
    assert ex.trace is gen.trace
    before = ex.trace.gradients
    p = gen.prompt_length
    picker.value = gen.label(p)
    assert ex.trace is gen.retarget(p)  # the provider's cached object
    assert not np.allclose(ex.trace.gradients, before)
    assert ex.flow.trace is ex.trace and ex.summary.trace is ex.trace  # gradient views follow
    assert f"position {p - 1}" in ex._header.value
    picker.value = gen.label(-1)
    picker.value = gen.label(p)
    assert ex.trace is gen.retarget(p)


def test_explorer_keeps_its_trace_when_a_target_fails(chat_tok):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(2)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=30522, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
    )).eval()
    g = aw.trace_generate(model, chat_tok, "a dog", max_new_tokens=3, do_sample=False, max_cached=0)
    ex = aw.Explorer(g)
    ok = g.label(g.prompt_length + 1)
    ex.target_picker.value = ok
    kept = ex.trace
    assert ex.trace is kept  # nothing cached by g, yet the explorer does not recompute per access
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    with pytest.raises(ValueError, match="changed"):
        ex.target_picker.value = g.label(g.prompt_length)
    assert ex.target_picker.value == ok and ex.trace is kept and ex.flow.trace is kept
    assert "changed" in ex._header.value


def test_tiny_gpt2_string_prompt():
    model, tok = aw.tiny_gpt2()
    g = aw.trace_generate(model, tok, "the cat sat", max_new_tokens=3, do_sample=False)
    assert g.n_generated == 3 and not g.is_chat
    # The tokenizer's own [CLS] / [SEP] are special; generated words are not unless special.
    assert g.trace.special_mask[0] and not g.trace.special_mask[1]
    assert g.trace.has_gradients


def test_generation_may_stop_early_at_eos(gqa_llama, chat_tok):
    first = aw.trace_generate(gqa_llama, chat_tok, "the cat", max_new_tokens=1, do_sample=False)
    stop = first.token_ids[-1]
    g = aw.trace_generate(gqa_llama, chat_tok, "the cat", max_new_tokens=5, do_sample=False, eos_token_id=stop)
    assert g.n_generated == 1 and g.trace.meta["target_position"] == g.n_tokens - 1


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "3"])
def test_bad_max_new_tokens(gqa_llama, chat_tok, bad):
    with pytest.raises(ValueError, match="max_new_tokens"):
        aw.trace_generate(gqa_llama, chat_tok, "hi", max_new_tokens=bad)


@pytest.mark.parametrize(
    "messages, exc, match",
    [
        ([], ValueError, "empty list"),
        (["hi"], TypeError, r"prompt\[0\]"),
        ([{"role": "user"}], ValueError, "content"),
        ([{"role": 3, "content": "hi"}], TypeError, "role"),
        ([{"role": "user", "content": [{"type": "text"}]}], TypeError, "content"),
        ("   ", ValueError, "empty string"),
        (42, TypeError, "prompt"),
    ],
)
def test_bad_prompts(gqa_llama, chat_tok, messages, exc, match):
    with pytest.raises(exc, match=match):
        aw.trace_generate(gqa_llama, chat_tok, messages, max_new_tokens=2)


def test_chat_without_template_says_how_to_set_one(gqa_llama, tok):
    assert not tok.chat_template
    with pytest.raises(ValueError, match=r"(?s)no chat template.*tok\.chat_template = "):
        aw.trace_generate(gqa_llama, tok, CHAT, max_new_tokens=2)


def test_bad_models_and_kwargs(gqa_llama, chat_tok, t5):
    from transformers import BertConfig, BertModel

    bert = BertModel(BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1,
                                num_attention_heads=2, intermediate_size=32)).eval()
    with pytest.raises(ValueError, match="causal language model"):
        aw.trace_generate(bert, chat_tok, "hi", max_new_tokens=2)
    with pytest.raises(ValueError, match="trace_seq2seq"):
        aw.trace_generate(t5, chat_tok, "hi", max_new_tokens=2)
    with pytest.raises(TypeError, match="max_length"):
        aw.trace_generate(gqa_llama, chat_tok, "hi", max_new_tokens=2, max_length=9)
    with pytest.raises(ValueError, match="num_return_sequences"):
        aw.trace_generate(gqa_llama, chat_tok, "hi", max_new_tokens=2, num_return_sequences=2)
    with pytest.raises(ValueError, match="positions"):
        aw.trace_generate(gqa_llama, chat_tok, "hi", max_new_tokens=500)
    with pytest.raises(TypeError, match="target"):
        aw.trace_generate(gqa_llama, chat_tok, "hi", max_new_tokens=2, target="last")
    with pytest.raises(ValueError, match="prompt"):
        aw.trace_generate(gqa_llama, chat_tok, "hi", max_new_tokens=2, target=0)


def test_memory_is_estimated_before_generating(gqa_llama, chat_tok, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("generate ran although the capture cannot fit")

    monkeypatch.setattr(gqa_llama, "generate", boom)
    need = estimate_capture_bytes(2, 4, 3 + 50, vocab_size=30522)
    assert need == 7 * 4 * 2 * 4 * 53**2 + 2 * 4 * 53 * 30522
    assert estimate_capture_bytes(2, 4, 53, gradients=False, vocab_size=30522) == 4 * 4 * 2 * 4 * 53**2 + 4 * 53 * 30522
    with pytest.raises(ValueError, match="max_bytes.*GiB"):
        aw.trace_generate(gqa_llama, chat_tok, "hi", max_new_tokens=50, max_bytes=need - 1)
