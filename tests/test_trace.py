"""AttentionTrace validation: every bad field is named, nothing half-built escapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attn_widgets import AttentionTrace
from attn_widgets.trace import looks_causal


def test_valid_array(random_attn):
    a, toks = random_attn
    tr = AttentionTrace.from_tensors(a, toks)
    assert tr.shape == (2, 3, 5, 5)
    assert tr.attentions.dtype == np.float32 and tr.attentions.flags.c_contiguous
    assert tr.n_layers == 2 and tr.n_heads == 3 and tr.n_tokens == 5
    assert not tr.causal
    assert tr.special_mask.dtype == bool and not tr.special_mask.any()
    # Read-only: nobody downstream can corrupt the contract in place.
    with pytest.raises(ValueError):
        tr.attentions[0, 0, 0, 0] = 1.0


def test_transformers_tuple_with_batch_index(random_attn):
    a, toks = random_attn
    other = np.full_like(a, 1.0 / a.shape[-1])
    per_layer = tuple(torch.from_numpy(np.stack([other[l], a[l]])) for l in range(a.shape[0]))
    tr = AttentionTrace.from_tensors(per_layer, toks, batch_index=1)
    np.testing.assert_array_equal(tr.attentions, a)
    tr0 = AttentionTrace.from_tensors(per_layer, toks, batch_index=0)
    np.testing.assert_allclose(tr0.attentions, other)
    with pytest.raises(ValueError, match="batch_index=2 out of range"):
        AttentionTrace.from_tensors(per_layer, toks, batch_index=2)


def test_torch_and_bfloat16_inputs(random_attn):
    a, toks = random_attn
    t = torch.from_numpy(a).to(torch.bfloat16)
    # bf16 rounding moves row sums by ~1e-3, still a distribution
    tr = AttentionTrace.from_tensors(t, toks)
    assert tr.attentions.dtype == np.float32


@pytest.mark.parametrize(
    "shape, match",
    [((3, 5, 5), r"rank 4 \[L, H, T, T\], received shape \(3, 5, 5\)"),
     ((2, 3, 5, 4), r"square maps"),
     ((2, 0, 5, 5), r"empty")],
)
def test_bad_shapes(shape, match):
    a = np.ones(shape, dtype=np.float32)
    if a.size:
        a /= a.shape[-1]
    with pytest.raises(ValueError, match=match):
        AttentionTrace(tokens=["x"] * shape[-2], attentions=a)


def test_token_count_mismatch(random_attn):
    a, toks = random_attn
    with pytest.raises(ValueError, match=r"tokens: expected 5 tokens .* received 4"):
        AttentionTrace.from_tensors(a, toks[:4])


def test_tokens_must_be_strings(random_attn):
    a, _ = random_attn
    with pytest.raises(TypeError, match="tokens"):
        AttentionTrace.from_tensors(a, [1, 2, 3, 4, 5])
    with pytest.raises(TypeError, match="tokens"):
        AttentionTrace(tokens="abcde", attentions=a)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite(random_attn, bad):
    a, toks = random_attn
    a = a.copy()
    a[1, 2, 3, 4] = bad
    with pytest.raises(ValueError, match=r"attentions: contains NaN or inf \(first at index \[1, 2, 3, 4\]"):
        AttentionTrace.from_tensors(a, toks)


def test_negative_weights(random_attn):
    a, toks = random_attn
    a = a.copy()
    a[0, 1, 2, 0] -= 2 * a[0, 1, 2, 0]
    with pytest.raises(ValueError, match=r"weights must be >= 0.*at \[0, 1, 2, 0\]"):
        AttentionTrace.from_tensors(a, toks)


def test_rows_must_sum_to_one(random_attn):
    a, toks = random_attn
    with pytest.raises(ValueError, match=r"row \(layer=0, head=0, query=0\) sums to 2"):
        AttentionTrace.from_tensors(a * 2, toks)
    # Pre-softmax scores are the usual mistake.
    with pytest.raises(ValueError, match="post-softmax"):
        AttentionTrace.from_tensors(a + 0.5, toks)


def test_gradients_shape_and_values(random_attn):
    a, toks = random_attn
    with pytest.raises(ValueError, match=r"gradients: expected shape \(2, 3, 5, 5\).*received \(2, 3, 5, 4\)"):
        AttentionTrace.from_tensors(a, toks, gradients=np.zeros((2, 3, 5, 4)))
    g = np.zeros_like(a)
    g[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="gradients: contains NaN"):
        AttentionTrace.from_tensors(a, toks, gradients=g)
    tr = AttentionTrace.from_tensors(a, toks, gradients=np.ones_like(a), target="y")
    assert tr.has_gradients and tr.target == "y"


def test_special_mask_and_token_ids(random_attn):
    a, toks = random_attn
    with pytest.raises(ValueError, match=r"special_mask: expected shape \(5,\), received \(4,\)"):
        AttentionTrace.from_tensors(a, toks, special_mask=[True] * 4)
    with pytest.raises(ValueError, match="token_ids: expected 5 ids, received 2"):
        AttentionTrace.from_tensors(a, toks, token_ids=[1, 2])
    tr = AttentionTrace.from_tensors(a, toks, special_mask=[1, 0, 0, 0, 1], token_ids=np.arange(5))
    assert tr.special_mask.tolist() == [True, False, False, False, True]
    assert tr.token_ids == (0, 1, 2, 3, 4)


def test_causal_detection_and_check(random_attn):
    a, toks = random_attn
    c = np.tril(a)
    c /= c.sum(-1, keepdims=True)
    assert looks_causal(c) and not looks_causal(a)
    assert AttentionTrace.from_tensors(c, toks).causal
    assert not AttentionTrace.from_tensors(a, toks).causal
    with pytest.raises(ValueError, match="marked causal but attentions put weight"):
        AttentionTrace.from_tensors(a, toks, causal=True)


def test_missing_layers_from_sdpa(random_attn):
    a, toks = random_attn
    with pytest.raises(ValueError, match="sdpa/flash"):
        AttentionTrace.from_tensors((torch.from_numpy(a[:1]), None), toks)
    with pytest.raises(ValueError, match="empty sequence"):
        AttentionTrace.from_tensors((), toks)


def test_head_map_and_checks(random_attn):
    a, toks = random_attn
    tr = AttentionTrace.from_tensors(a, toks)
    np.testing.assert_array_equal(tr.head_map(1, 2), a[1, 2])
    np.testing.assert_allclose(tr.head_map(1, "mean"), a[1].mean(0))
    np.testing.assert_allclose(tr.head_map(0, "max"), a[0].max(0))
    with pytest.raises(ValueError, match="layer: expected 0 <= layer < 2, received 2"):
        tr.head_map(2, 0)
    with pytest.raises(ValueError, match="head: expected 0 <= head < 3"):
        tr.head_map(0, 3)
    with pytest.raises(TypeError, match="head"):
        tr.head_map(0, "median")
    assert "2 layers x 3 heads, 5 tokens" in repr(tr)


def test_input_array_not_aliased(random_attn):
    a, toks = random_attn
    src = a.copy()
    tr = AttentionTrace.from_tensors(src, toks)
    src[0, 0, 0, 0] = 0.999  # mutating the caller's array must not change the trace
    assert tr.attentions[0, 0, 0, 0] == a[0, 0, 0, 0]


# -- memory: estimate first, never start the allocation -------------------------------------


@pytest.mark.parametrize("make", ["torch", "numpy", "layers"])
def test_trace_too_big_for_memory_is_refused_before_allocating(make):
    """32 x 32 x 4096 x 4096 float32 = 64 GiB, passed as a broadcast view that costs nothing."""
    shape = (32, 32, 4096, 4096)
    if make == "torch":
        a = torch.full((1, 1, 1, 1), 1 / 4096).expand(*shape)
    elif make == "numpy":
        a = np.broadcast_to(np.float32(1 / 4096), shape)
    else:
        a = tuple(torch.full((1, 1, 1, 1), 1 / 4096).expand(1, 32, 4096, 4096) for _ in range(32))
    toks = [f"t{i}" for i in range(4096)]
    with pytest.raises(ValueError) as info:
        AttentionTrace.from_tensors(a, toks)
    msg = str(info.value)
    assert msg.startswith("attentions: a dense trace of 32 layers x 32 heads x 4096 x 4096 tokens is 64.0 GiB of float32")
    assert "memory available" in msg and "trace_lazy" in msg
    if make == "numpy":
        with pytest.raises(ValueError, match="64.0 GiB"):
            AttentionTrace(tokens=tuple(toks), attentions=a)


def test_size_guard_counts_gradients(random_attn, monkeypatch):
    import importlib

    checks_mod = importlib.import_module("attn_widgets._checks")
    a, toks = random_attn
    monkeypatch.setattr(checks_mod, "_available_memory_bytes", lambda: a.nbytes + 1)
    assert AttentionTrace.from_tensors(a, toks).n_tokens == 5
    with pytest.raises(ValueError, match=r"x 2 with gradients"):
        AttentionTrace.from_tensors(a, toks, gradients=np.zeros_like(a))


# -- special tokens in from_tensors ------------------------------------------------------------


def _uniform(t, layers=1, heads=1):
    return np.full((layers, heads, t, t), 1.0 / t, dtype=np.float32)


def test_from_tensors_marks_usual_special_tokens():
    toks = ["[CLS]", "hi", "[SEP]", "<s>", "x", "</s>", "<|endoftext|>", "<pad>", "<|im_start|>", " <|im_end|>", "[cls]"]
    tr = AttentionTrace.from_tensors(_uniform(len(toks)), toks)
    assert tr.special_mask.tolist() == [True, False, True, True, False, True, True, True, True, True, False]
    off = AttentionTrace.from_tensors(_uniform(len(toks)), toks, special_tokens=False)
    assert not off.special_mask.any()
    mine = AttentionTrace.from_tensors(_uniform(len(toks)), toks, special_tokens=["hi", "x"])
    assert np.flatnonzero(mine.special_mask).tolist() == [1, 4]
    explicit = AttentionTrace.from_tensors(_uniform(len(toks)), toks, special_mask=[True] + [False] * 10)
    assert np.flatnonzero(explicit.special_mask).tolist() == [0]
    with pytest.raises(TypeError, match="special_tokens: pass either special_mask= or special_tokens=, not both"):
        AttentionTrace.from_tensors(_uniform(len(toks)), toks, special_mask=[True] * 11, special_tokens=["hi"])
    with pytest.raises(TypeError, match="special_tokens: expected None, True, False or a list of strings, received str"):
        AttentionTrace.from_tensors(_uniform(len(toks)), toks, special_tokens="[CLS]")


# -- input edge cases -------------------------------------------------------------------------


def test_tokens_as_one_string_is_refused():
    with pytest.raises(TypeError, match=r"tokens: expected a list of strings, received str \(a single string; pass a list"):
        AttentionTrace.from_tensors(_uniform(4), "abcd")


def test_flags_and_masks_must_be_booleans():
    causal = np.tril(np.ones((2, 2), np.float32))
    causal /= causal.sum(-1, keepdims=True)
    with pytest.raises(TypeError, match=r"causal: expected True or False, received 'no'"):
        AttentionTrace.from_tensors(causal[None, None], ["a", "b"], causal="no")
    with pytest.raises(TypeError, match=r"causal: expected True or False, received 'no'"):
        AttentionTrace(tokens=("a", "b"), attentions=causal[None, None], causal="no")
    with pytest.raises(TypeError, match=r"special_mask: expected booleans \(or 0/1 integers\), received dtype <U3"):
        AttentionTrace.from_tensors(_uniform(2), ["a", "b"], special_mask=["no", "yes"])
    with pytest.raises(TypeError, match=r"special_mask: expected booleans"):
        AttentionTrace.from_tensors(_uniform(2), ["a", "b"], special_mask=[0.5, 1.0])
    assert AttentionTrace.from_tensors(_uniform(2), ["a", "b"], special_mask=[0, 1]).special_mask.tolist() == [False, True]


def test_token_ids_must_be_integers():
    with pytest.raises(TypeError, match=r"token_ids: expected integers, element 0 is 1.5 \(float\)"):
        AttentionTrace.from_tensors(_uniform(2), ["a", "b"], token_ids=[1.5, 2.7])
    with pytest.raises(TypeError, match=r"token_ids: expected integers, element 0 is 1.0 \(float\)"):
        AttentionTrace.from_tensors(_uniform(2), ["a", "b"], token_ids=np.array([1.0, 2.0]))
    assert AttentionTrace.from_tensors(_uniform(2), ["a", "b"], token_ids=np.array([3, 4])).token_ids == (3, 4)


def test_masked_arrays_are_refused():
    a = np.ma.masked_array(_uniform(2), mask=np.zeros((1, 1, 2, 2), bool))
    with pytest.raises(TypeError, match=r"attentions: masked arrays are not accepted .* attentions.filled\(0\)"):
        AttentionTrace.from_tensors(a, ["a", "b"])
    with pytest.raises(TypeError, match=r"gradients: masked arrays are not accepted"):
        AttentionTrace.from_tensors(_uniform(2), ["a", "b"], gradients=np.ma.masked_array(np.zeros((1, 1, 2, 2))))


@pytest.mark.parametrize(
    "a, match",
    [
        (np.full(2, 0.5, np.float32), r"attentions: expected rank 4 \[L, H, T, T\], received shape \(2,\)"),
        (np.zeros((0, 1, 2, 2), np.float32), r"attentions: empty array, received shape \(0, 1, 2, 2\) \(expected at least one layer"),
        (np.zeros((1, 0, 2, 2), np.float32), r"attentions: empty array, received shape \(1, 0, 2, 2\)"),
        ([np.zeros((1, 0, 2, 2), np.float32)], r"attentions: empty array, received shape \(1, 0, 2, 2\)"),
    ],
)
def test_rank_one_and_empty_layers_or_heads(a, match):
    with pytest.raises(ValueError, match=match):
        AttentionTrace.from_tensors(a, ["a", "b"])


def test_meta_sparse_and_float8_tensors():
    a = torch.full((1, 1, 2, 2), 0.5)
    with pytest.raises(ValueError, match=r"attentions: received a tensor on the meta device, which has a shape but no values"):
        AttentionTrace.from_tensors(a.to("meta"), ["a", "b"])
    with pytest.raises(TypeError, match=r"attentions: expected a dense tensor, received layout sparse_coo; pass attentions.to_dense\(\)"):
        AttentionTrace.from_tensors(a.to_sparse(), ["a", "b"])
    with pytest.raises(TypeError, match=r"attentions: float8 weights \(float8_e4m3fn\) are too coarse .* attentions.float\(\)"):
        AttentionTrace.from_tensors(a.to(torch.float8_e4m3fn), ["a", "b"])
    with pytest.raises(TypeError, match=r"gradients: expected a dense tensor"):
        AttentionTrace.from_tensors(a, ["a", "b"], gradients=torch.zeros(1, 1, 2, 2).to_sparse())


# -- reduced precision ---------------------------------------------------------------------------


def test_row_sum_tolerance_scales_with_the_source_dtype():
    from attn_widgets.trace import ROW_SUM_ATOL, row_sum_atol

    rng = np.random.default_rng(1)
    a = rng.random((2, 2, 6, 6)) + 0.1
    a /= a.sum(-1, keepdims=True)
    a *= 1.004  # rows 4e-3 off: over float32's tolerance, within bfloat16's rounding
    for dtype in (torch.bfloat16, torch.float16):
        t = torch.tensor(a, dtype=dtype)
        if dtype == torch.float16:
            with pytest.raises(ValueError, match=r"sums to 1.00\d+ \(tolerance 0.00390625\)"):
                AttentionTrace.from_tensors(t, list("abcdef"))
            continue
        tr = AttentionTrace.from_tensors(t, list("abcdef"))
        assert tr.meta["dtype"] == "bfloat16"
        assert tr.rollout().shape == (2, 6, 6)  # flows accept it too
    with pytest.raises(ValueError, match=r"each query row must sum to 1 .* \(tolerance 0.002\)"):
        AttentionTrace.from_tensors(torch.tensor(a, dtype=torch.float32), list("abcdef"))
    assert row_sum_atol("float32") == ROW_SUM_ATOL and row_sum_atol(torch.bfloat16) == 4 * 2**-7
    assert AttentionTrace.from_tensors(np.full((1, 1, 2, 2), 0.5, np.float16), ["a", "b"]).meta["dtype"] == "float16"


# -- untrusted token text ----------------------------------------------------------------------


def test_lone_surrogates_kept_raw_with_display_labels():
    from attn_widgets.trace import display_labels

    toks = ["ok", "\ud83d", "a\udc00b", "é"]
    tr = AttentionTrace.from_tensors(_uniform(4), toks)
    assert tr.tokens == tuple(toks)
    labels = display_labels(tr.tokens)
    assert labels == ("ok", "\ufffd", "a\ufffdb", "é")
    for label in labels:
        label.encode("utf-8")  # encodable: the wire and the exports can carry it
