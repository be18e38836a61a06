"""LazyTrace and trace_lazy: maps recomputed from queries and keys equal the model's own
attention, tiles and thumbnails equal slices and max-pools of the full maps, and no
[L, H, T, T] array is ever allocated."""

from __future__ import annotations

import threading
import tracemalloc

import numpy as np
import pytest

import attn_widgets as aw
from attn_widgets import lazy as lazy_mod
from attn_widgets._wire import maxpool2d
from attn_widgets.lazy import LazyTrace, pool_blocks, pool_step

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

#: The same numbers computed in different row blocks: equal up to float32 matmul rounding.
EXACT = dict(atol=1e-7, rtol=1e-6)

TEXT = "the cat sat on the mat because it was warm and the dog did not mind it at all " * 8
T = 64


def eager_attentions(model, tok, text, max_length=T):
    """The model's own weights: eager attention with output_attentions=True."""
    enc = tok(text, return_tensors="pt", truncation=True, max_length=max_length)
    if not getattr(model.config, "type_vocab_size", 0):  # GPT-2 has no segment embeddings
        enc = {k: v for k, v in enc.items() if k != "token_type_ids"}
    original = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            out = model(**enc, output_attentions=True)
    finally:
        model.set_attn_implementation(original)
    return torch.stack(out.attentions)[:, 0].numpy()


@pytest.fixture(scope="module", params=["gpt2", "bert"])
def captured(request):
    model, tok = aw.capture.long_context_model(request.param, n_layer=2, n_head=4, n_embd=32, n_positions=128)
    lt = aw.trace_lazy(model, tok, TEXT, max_length=T)
    return request.param, model, tok, lt, eager_attentions(model, tok, TEXT)


def random_lazy(L=2, H=4, Hkv=None, t=40, d=8, seed=0, **kw):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((L, H, t, d)).astype(np.float32)
    k = rng.standard_normal((L, Hkv or H, t, d)).astype(np.float32)
    return LazyTrace([f"t{i}" for i in range(t)], q, k, **kw), q, k


def reference(q, k, scale, causal=False, mask=None, softcap=None):
    """softmax(q k^T * scale) in float64, with masks, one layer [H, T, T]."""
    H, t, _ = q.shape
    group = H // k.shape[0]
    s = np.einsum("htd,hsd->hts", q.astype(np.float64), np.repeat(k, group, axis=0).astype(np.float64)) * scale
    if softcap is not None:
        s = softcap * np.tanh(s / softcap)
    allowed = np.ones((t, t), bool) if mask is None else mask.copy()
    if causal:
        allowed &= np.tri(t, dtype=bool)
    s = np.where(allowed, s, -np.inf)
    s -= s.max(-1, keepdims=True)
    p = np.exp(s)
    return p / p.sum(-1, keepdims=True)


# -- equal to the model's own attention ------------------------------------------------------
def test_head_maps_equal_eager_output_attentions(captured):
    kind, _model, _tok, lt, ref = captured
    assert lt.shape == ref.shape and lt.n_tokens == T
    assert lt.causal == (kind == "gpt2")
    got = np.stack([[lt.head_map(layer, h) for h in range(lt.n_heads)] for layer in range(lt.n_layers)])
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)
    for layer in range(lt.n_layers):
        np.testing.assert_allclose(lt.head_map(layer, "mean"), ref[layer].mean(0), atol=1e-5, rtol=0)
        np.testing.assert_allclose(lt.head_map(layer, "max"), ref[layer].max(0), atol=1e-5, rtol=0)


def test_tiles_are_slices_of_the_full_map(captured):
    _, _, _, lt, _ = captured
    rng = np.random.default_rng(1)
    for head in (0, 3, "mean", "max"):
        full = lt.head_map(1, head)
        for _ in range(6):
            r0, r1 = sorted(rng.choice(T + 1, 2, replace=False))
            c0, c1 = sorted(rng.choice(T + 1, 2, replace=False))
            # Equal up to float32 rounding: BLAS may block a matmul of fewer rows differently.
            np.testing.assert_allclose(lt.tile(1, head, r0, r1, c0, c1), full[r0:r1, c0:c1], **EXACT)
            for step in (2, 5):
                np.testing.assert_allclose(
                    lt.tile(1, head, r0, r1, c0, c1, step=step), pool_blocks(full[r0:r1, c0:c1], step), **EXACT
                )


def test_thumbnails_equal_maxpool_of_full_maps(captured):
    _, _, _, lt, ref = captured
    full = np.stack([[lt.head_map(layer, h) for h in range(lt.n_heads)] for layer in range(lt.n_layers)])
    for size in (8, 10, 48, 64, 100):
        np.testing.assert_allclose(lt.thumbnails(size), maxpool2d(full, size), **EXACT)
        np.testing.assert_allclose(lt.thumbnails(size), maxpool2d(ref, size), atol=1e-5, rtol=0)
        np.testing.assert_allclose(lt.pooled(1, 2, size), maxpool2d(full[1, 2], size), **EXACT)


def test_preview_thumbnails_are_labelled_lower_bounds(captured):
    _, _, _, lt, _ = captured
    exact = lt.thumbnails(10)
    preview, info = lt.preview_thumbnails(10)
    assert not info["exact"] and info["rows_per_pixel"] == pool_step(T, 10)
    assert preview.shape == exact.shape
    assert (preview <= exact + 1e-7).all()
    # Each pixel row is exactly the column max-pool of the one sampled query row.
    full = lt.head_map(0, 1)
    for i, row in enumerate(info["sampled_rows"]):
        np.testing.assert_allclose(
            preview[0, 1, i], pool_blocks(full[row : row + 1], info["rows_per_pixel"])[0], **EXACT
        )
    same, info = lt.preview_thumbnails(T)
    assert info["exact"]
    np.testing.assert_allclose(same, lt.thumbnails(T), **EXACT)


def test_materialize_is_an_attention_trace(captured):
    _, _, _, lt, ref = captured
    tr = lt.materialize()
    assert isinstance(tr, aw.AttentionTrace)
    np.testing.assert_allclose(tr.attentions, ref, atol=1e-5, rtol=0)
    assert tr.tokens == lt.tokens and tr.causal == lt.causal
    with pytest.raises(ValueError, match="max_bytes"):
        lt.materialize(max_bytes=1000)


# -- memory: q/k only, never [L, H, T, T] ----------------------------------------------------------
def test_stores_only_queries_keys_and_masks():
    L, H, t, d = 4, 8, 256, 8
    lt, q, k = random_lazy(L, H, t=t, d=d, causal=True)
    full = L * H * t * t * 4
    assert lt.nbytes == q.nbytes + k.nbytes + lt.special_mask.nbytes
    assert lt.nbytes <= full * 2 * d / t + lt.special_mask.nbytes  # q and k: 2d/T of the maps
    stored = [v for v in vars(lt).values() if isinstance(v, np.ndarray)]
    stored += [a for v in vars(lt).values() if isinstance(v, (list, tuple)) for a in v if isinstance(a, np.ndarray)]
    assert stored and all(a.nbytes <= q[0].nbytes for a in stored), [a.shape for a in stored]
    with pytest.raises(AttributeError, match="LazyTrace keeps queries and keys"):
        lt.attentions  # noqa: B018
    assert lt.gradients is None and not lt.has_gradients


@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_computing_never_allocates_all_maps(backend, monkeypatch):
    L, H, t = 4, 8, 1024
    lt, _, _ = random_lazy(L, H, t=t, causal=True)
    if backend == "numpy":
        monkeypatch.setattr(lazy_mod, "_ops", lambda prefer_numpy=False: lazy_mod._NumpyOps())
    one_map = t * t * 4
    tracemalloc.start()
    try:
        lt.thumbnails(16)
        lt.head_map(2, "mean")
        lt.layer_stats(1)
        lt.preview_thumbnails(16)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # numpy allocations are traced: a few maps' worth plus the batched kernel's bounded
    # [H, n, T] block (HEADS_BLOCK_VALUES scores, its softmax and one temporary), far from
    # L * H maps.
    assert peak < 4 * one_map + 3 * 4 * lazy_mod.HEADS_BLOCK_VALUES, peak
    assert peak < L * H * one_map / 4


# -- semantics beyond GPT-2 / BERT: GQA, extra masks, softcap, float16, numpy --------------------
def test_gqa_mask_softcap_against_reference():
    t = 30
    window = np.tri(t, dtype=bool) & ~np.tri(t, k=-5, dtype=bool)  # sliding window of 5
    lt, q, k = random_lazy(L=2, H=6, Hkv=2, t=t, causal=True, mask=[window, None], softcap=5.0, scaling=0.3)
    for layer, m in ((0, window), (1, None)):
        ref = reference(q[layer], k[layer], 0.3, causal=True, mask=m, softcap=5.0)
        got = np.stack([lt.head_map(layer, h) for h in range(6)])
        np.testing.assert_allclose(got, ref, atol=1e-6)
    assert lt.masks[0] is not None and lt.masks[1] is None


def test_float16_storage_and_numpy_backend_agree():
    lt32, q, k = random_lazy(t=50, causal=False)
    lt16 = LazyTrace(lt32.tokens, q, k, dtype="float16")
    assert lt16.nbytes < lt32.nbytes
    np.testing.assert_allclose(lt16.head_map(1, 2), lt32.head_map(1, 2), atol=2e-3)
    via_numpy = lt32._compute(1, [2], None, slice(0, 50), 0, 50, 1, 1, ops=lazy_mod._NumpyOps())
    np.testing.assert_allclose(via_numpy, lt32.head_map(1, 2), atol=1e-6)


def test_background_thumbnails_yield_to_foreground_and_cancel():
    lt, _, _ = random_lazy(L=3, H=4, t=64)
    stop = threading.Event()
    got = []
    for layer, maps in lt.iter_thumbnails(8, cancelled=stop.is_set):
        got.append(layer)
        np.testing.assert_allclose(maps, lt.thumbnails(8, [layer])[0], **EXACT)
        stop.set()
    assert got == [0]


# -- validation: clear errors naming the field -------------------------------------------------------
@pytest.mark.parametrize(
    "change, exc, match",
    [
        (dict(tokens=["a"] * 5), ValueError, "tokens: expected 6 tokens"),
        (dict(tokens="abcdef"), TypeError, "tokens: expected a list"),
        (dict(keys=np.zeros((2, 2, 5, 4))), ValueError, "keys: expected shape"),
        (dict(keys=np.zeros((2, 3, 6, 4))), ValueError, "keys: 3 key heads do not divide"),
        (dict(queries=np.zeros((2, 4, 6))), ValueError, "queries: expected rank 4"),
        (dict(queries=np.full((2, 4, 6, 4), np.nan)), ValueError, "queries: contains NaN"),
        (dict(scaling=0.0), ValueError, "scaling: expected a finite number > 0"),
        (dict(scaling=[1.0]), ValueError, "scaling: expected one value per layer"),
        (dict(softcap=-1.0), ValueError, "softcap"),
        (dict(mask=np.ones((5, 5), bool)), ValueError, r"mask: expected a bool \[T, T\]"),
        (dict(mask=np.ones((6, 6))), TypeError, "mask: expected a bool mask"),
        (dict(mask=np.zeros((6, 6), bool)), ValueError, "mask: query row 0 may attend to no key"),
        (dict(special_mask=np.zeros(3, bool)), ValueError, "special_mask: expected shape"),
        (dict(token_ids=[1, 2]), ValueError, "token_ids: expected 6 ids"),
        (dict(dtype="int8"), ValueError, "dtype: expected"),
    ],
)
def test_validation_names_the_field(change, exc, match):
    rng = np.random.default_rng(0)
    args = dict(tokens=[f"t{i}" for i in range(6)], queries=rng.standard_normal((2, 4, 6, 4)),
                keys=rng.standard_normal((2, 2, 6, 4)))
    args.update(change)
    with pytest.raises(exc, match=match):
        LazyTrace(args.pop("tokens"), args.pop("queries"), args.pop("keys"), **args)


def test_bad_requests_name_the_field():
    lt, _, _ = random_lazy(t=10)
    with pytest.raises(ValueError, match="layer: expected 0 <= layer < 2"):
        lt.head_map(2, 0)
    with pytest.raises(ValueError, match="head: expected"):
        lt.head_map(0, "median")
    with pytest.raises(ValueError, match="rows: expected 0 <= r0 < r1 <= 10"):
        lt.tile(0, 0, 5, 5, 0, 3)
    with pytest.raises(ValueError, match="cols: expected"):
        lt.tile(0, 0, 0, 3, 4, 11)
    with pytest.raises(TypeError, match="r0: expected an int"):
        lt.tile(0, 0, 1.5, 3, 0, 3)
    with pytest.raises(ValueError, match="step: expected an int >= 1"):
        lt.tile(0, 0, 0, 3, 0, 3, step=0)
    with pytest.raises(AttributeError, match="read-only"):
        lt.causal = True


# -- trace_lazy -------------------------------------------------------------------------------------
def test_trace_lazy_restores_the_model_and_the_dispatch(captured):
    _, model, tok, _, _ = captured
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    before = dict(ALL_ATTENTION_FUNCTIONS._local_mapping)
    impl = model.config._attn_implementation
    model.train()
    aw.trace_lazy(model, tok, "a short text")
    assert model.training and model.config._attn_implementation == impl
    assert dict(ALL_ATTENTION_FUNCTIONS._local_mapping) == before
    model.eval()


def test_trace_lazy_crops_padding_and_takes_ids(captured):
    _, model, tok, _, _ = captured
    batch = tok(["a much longer sentence about the cat on the mat", "short one"], return_tensors="pt", padding=True)
    lt = aw.trace_lazy(model, tok, batch, batch_index=1)
    alone = aw.trace_lazy(model, tok, "short one")
    assert lt.tokens == alone.tokens and lt.n_tokens == len(tok("short one")["input_ids"])
    np.testing.assert_allclose(lt.head_map(1, 2), alone.head_map(1, 2), atol=1e-5)
    ids = tok("short one")["input_ids"]
    by_ids = aw.trace_lazy(model, None, ids)  # no tokenizer: ids as text
    assert by_ids.tokens == tuple(str(i) for i in ids)
    with_tok = aw.trace_lazy(model, tok, np.asarray(ids))
    assert with_tok.tokens == alone.tokens
    np.testing.assert_allclose(by_ids.head_map(0, 1), with_tok.head_map(0, 1), atol=1e-6)


def test_trace_lazy_errors(captured):
    _, model, tok, _, _ = captured
    with pytest.raises(ValueError, match="text: received an empty string"):
        aw.trace_lazy(model, tok, "   ")
    with pytest.raises(ValueError, match="tokenizer: a tokenizer is needed"):
        aw.trace_lazy(model, None, "text")
    with pytest.raises(ValueError, match="dtype"):
        aw.trace_lazy(model, tok, "text", dtype="bfloat16")
    with pytest.raises(TypeError, match="input ids must be integers"):
        aw.trace_lazy(model, None, [0.5, 1.5])
    with pytest.raises(ValueError, match="batch_index"):
        aw.trace_lazy(model, tok, "text", batch_index=3)


def test_whole_matrix_flows_need_an_attention_trace(captured):
    # The panels take a LazyTrace (route graphs layer by layer); the [T, T]-per-layer flow
    # matrices of every token and the method agreement still need the maps in memory, and
    # say so instead of allocating them.
    _, _, _, lt, _ = captured
    with pytest.raises(AttributeError, match="LazyTrace"):
        aw.flows.rollout(lt)
    with pytest.raises(ValueError, match="MethodAgreement needs an in-memory"):
        aw.MethodAgreement(lt)


# -- the batched all-heads kernel (head mean / max, layer statistics) ------------------------------
@pytest.mark.parametrize("backend", ["torch", "numpy"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_batched_mean_and_max_equal_the_per_head_maps(backend, dtype, monkeypatch):
    t = 70
    window = np.tri(t, dtype=bool) & ~np.tri(t, k=-9, dtype=bool)
    # softcap 4 bounds every score (exp without max subtraction); softcap None with queries
    # x 15 gives scores over the bound (the row maximum is subtracted first). Logits of ~100
    # carry float32 rounding of ~1e-5 (q * scale . k vs q . k * scale), hence the tolerance.
    for causal, mask, cap, big in ((True, [window, None], 4.0, 1), (False, [~np.eye(t, dtype=bool) | window, None], 4.0, 1),
                                   (True, [window, None], None, 15), (False, None, None, 15)):
        lt32, q, k = random_lazy(L=2, H=6, Hkv=2, t=t, causal=causal, mask=mask, softcap=cap, scaling=0.4)
        q = q * np.float32(big)
        lt = LazyTrace(lt32.tokens, q, k, causal=causal, mask=mask, softcap=cap, scaling=0.4, dtype=dtype)
        if backend == "numpy":
            monkeypatch.setattr(lazy_mod, "_ops", lambda prefer_numpy=False: lazy_mod._NumpyOps())
        monkeypatch.setattr(lazy_mod, "HEADS_BLOCK_VALUES", 6 * 150)  # many row blocks, partial triangles
        tol = dict(atol=1e-6 if big == 1 else 1e-5, rtol=0)
        for layer in (0, 1):
            heads = np.stack([lt.head_map(layer, h) for h in range(6)])
            # the batched path (all heads at once) against the per-head kernel
            np.testing.assert_allclose(lt.head_map(layer, "mean"), heads.mean(0), **tol)
            np.testing.assert_allclose(lt.head_map(layer, "max"), heads.max(0), **tol)
            np.testing.assert_allclose(
                lt.tile(layer, "mean", 13, 61, 5, 50, step=4), pool_blocks(heads.mean(0)[13:61, 5:50], 4), **tol
            )
            rows = np.array([0, 3, 4, 40, 69])
            got = lt._compute(layer, list(range(6)), "mean", rows, 0, t, 1, 1)
            np.testing.assert_allclose(got, heads.mean(0)[rows], **tol)
            if dtype == "float32" and backend == "torch":
                ref = reference(q[layer], k[layer], 0.4, causal=causal, mask=mask and mask[layer], softcap=cap)
                np.testing.assert_allclose(lt.head_map(layer, "mean"), ref.mean(0), **tol)
        monkeypatch.undo()


@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_layer_stats_equal_head_stats_of_the_materialized_trace(backend, monkeypatch):
    t = 60
    window = np.tri(t, dtype=bool) & ~np.tri(t, k=-7, dtype=bool)
    special = np.zeros(t, bool)
    special[[0, 17, 59]] = True
    if backend == "numpy":
        monkeypatch.setattr(lazy_mod, "_ops", lambda prefer_numpy=False: lazy_mod._NumpyOps())
    monkeypatch.setattr(lazy_mod, "HEADS_BLOCK_VALUES", 4 * 200)
    for causal, mask in ((True, [window, None]), (False, None), (False, [window | window.T, None])):
        _, q, k = random_lazy(L=2, H=4, Hkv=2, t=t, causal=causal)
        lt = LazyTrace([f"t{i}" for i in range(t)], q * 2, k, causal=causal, mask=mask, special_mask=special)
        ref = aw.flows.head_stats(lt.materialize())
        for layer in range(2):
            got = lt.layer_stats(layer)
            assert set(got) == {"entropy", "distance", "special"}
            for key, v in got.items():
                assert v.shape == (4,) and v.dtype == np.float64
                np.testing.assert_allclose(v, ref[key][layer], atol=1e-6, rtol=1e-6, err_msg=key)


def test_a_panels_request_is_not_queued_behind_a_background_job(monkeypatch):
    # A route or the head statistics (the job pool's threads) hold the "jobs" compute thread;
    # a head switch meanwhile (a foreground call) runs on its own thread instead of waiting
    # for the job's layer.
    lt, _, _ = random_lazy(L=2, H=3, t=40, causal=True)
    entered, release = threading.Event(), threading.Event()
    real = LazyTrace._compute

    def held(self, *args, **kwargs):
        if "-lazy-jobs" in threading.current_thread().name:
            entered.set()
            assert release.wait(30)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(LazyTrace, "_compute", held)
    job = threading.Thread(target=lt.tile, args=(1, "mean", 0, 40, 0, 40), name="attn_widgets-pool-test")
    job.start()
    try:
        assert entered.wait(10)
        done = []
        fg = threading.Thread(target=lambda: done.append(lt.head_map(0, 1)))
        fg.start()
        fg.join(10)
        assert done and done[0].shape == (40, 40)  # answered while the job is still held
    finally:
        release.set()
        job.join(10)
    assert not job.is_alive()
