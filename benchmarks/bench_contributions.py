"""Cost of the contribution capture (value norms, head-mixed norms, ALTI) on CPU.

* MiniLM (the demo model, 6 layers x 12 heads, d = 384) at T = 128 and 512 tokens of a real
  paragraph: ``aw.trace(...)`` with gradients (the plain capture) vs
  ``aw.trace(..., contributions=True)`` (same forward + backward, plus the contributions),
  and the contribution computation alone, chunked (``compute_contributions``) vs a
  straightforward implementation that materialises each layer's per-pair vectors
  ``[T, T, d]`` at once (as the authors' ALTI code does), and the LLM-TT layout
  ``[T, T, H, d]`` per layer (facebookresearch/llm-transparency-tool builds
  ``[pos, key_pos, head, d_model]``) where it fits in ``--max-naive-gb``. The naive results
  are checked against the chunked ones.
* A 32-layer x 32-head config (Llama-like: pre-RMSNorm, 8 KV heads, d = 512, causal) at
  T = 2048: one attention block's contributions, chunked, timed on one layer and
  extrapolated x 32 (marked ~), with the peak memory (process RSS high-water mark) the
  computation adds on top of its inputs. The whole trace is not run: its ``[L, H, T, T]``
  attention maps alone are 17 GB. Per-pair tensors at this size are stated, not allocated.

Medians over ``--runs`` runs. Usage: ``python benchmarks/bench_contributions.py [--runs 3]``.
Prints a markdown table and writes benchmarks/results/contributions.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import platform
import resource
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np

from benchmarks._common import PARAGRAPH, RESULTS_DIR, cpu_name, write_results

RESULTS = RESULTS_DIR / "contributions.md"
TEXT = (PARAGRAPH + " ") * 4


def timeit(fn, runs):
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def fmt(s, approx=False):
    if s is None:
        return "-"
    t = f"{s * 1e3:.0f} ms" if s < 1 else f"{s:.2f} s"
    return ("~" if approx else "") + t


def naive_layer(block, alpha, heads_axis=False):
    """ALTI and head-mixed norms of one block with the whole ``[T, T, d]`` (or ``[T, T, H, d]``)
    per-pair tensor in memory at once: the straightforward implementation."""
    import torch

    f = block.transformed()  # [H, T, d]
    if heads_axis:
        m = torch.einsum("hij,hjd->ijhd", alpha, f).sum(2)  # LLM-TT keeps the head axis
    else:
        m = torch.einsum("hij,hjd->ijd", alpha, f)
    mixed = torch.linalg.vector_norm(m, dim=-1)
    t = m.shape[0]
    idx = torch.arange(t)
    m[idx, idx] += block.x
    b_o = block.b_o if block.b_o is not None else torch.zeros_like(block.x[0])
    pre = m.sum(1) + b_o
    if block.ln is not None:
        gamma, beta, eps = block.ln
        s = torch.sqrt(pre.var(-1, unbiased=False) + eps)
        m = gamma * (m - m.mean(-1, keepdim=True)) / s[:, None, None]
        y = gamma * (pre - pre.mean(-1, keepdim=True)) / s[:, None] + beta
    else:
        y = pre
    c = (y.abs().sum(-1)[:, None] - (y[:, None] - m).abs().sum(-1)).clamp(min=0)
    return mixed, c


def big_block(torch, t=2048, n_heads=32, n_kv=8, d=512, seed=0):
    """Random pre-LN GQA block and causal attention of the 32 x 32 config, one layer."""
    from attn_widgets.capture.contrib import BlockCapture

    g = torch.Generator().manual_seed(seed)
    dh = d // n_heads
    x = torch.randn(t, d, generator=g)
    values = torch.randn(n_kv, t, dh, generator=g)
    w_o = torch.randn(n_heads, dh, d, generator=g) / dh**0.5
    scores = torch.randn(n_heads, t, t, generator=g)
    scores.masked_fill_(torch.triu(torch.ones(t, t, dtype=torch.bool), 1), float("-inf"))
    alpha = torch.softmax(scores, dim=-1)
    del scores
    return BlockCapture(x=x, values=values, w_o=w_o, b_o=None, ln=None, n_heads=n_heads, n_kv=n_kv), alpha


def rss_peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--sizes", default="128,512")
    ap.add_argument("--max-naive-gb", type=float, default=2.0, help="skip naive layouts larger than this")
    ap.add_argument("--torch-threads", type=int, default=1, help="torch intra-op threads (default 1: stable on a shared machine)")
    ap.add_argument("--no-big", action="store_true", help="skip the 32 x 32, T=2048 config")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)

    import torch

    import attn_widgets as aw
    from attn_widgets.capture.contrib import (
        CHUNK_BYTES,
        ContributionRecorder,
        compute_contributions,
    )

    torch.set_num_threads(max(1, args.torch_threads))
    load_before = os.getloadavg()
    started = time.perf_counter()
    big_lines = []
    if not args.no_big:
        # First, so the RSS high-water mark before it is the inputs', not MiniLM's runs'.
        print("== 32 x 32 config, T=2048, one layer", file=sys.stderr, flush=True)
        block, alpha = big_block(torch)
        t, d, h = alpha.shape[-1], block.x.shape[-1], block.n_heads
        before = rss_peak_mb()
        t0 = time.perf_counter()
        res = compute_contributions([block], [alpha])
        layer_s = time.perf_counter() - t0
        extra = rss_peak_mb() - before
        assert res["contributions"].shape == (1, t, t)
        gib = 2**30
        big_lines = [
            "| config | T | one layer | 32 layers | extra peak RSS (chunked) | [T, T, d] per layer | [T, T, H, d] per layer (LLM-TT) |",
            "|---|---|---|---|---|---|---|",
            f"| 32 layers x 32 heads (8 KV), d={d} | {t} | {fmt(layer_s)} | {fmt(32 * layer_s, True)} | "
            f"{extra:.0f} MB (chunk bound {CHUNK_BYTES >> 20} MB; attention input {alpha.numel() * 4 / 2**20:.0f} MB) | "
            f"{t * t * d * 4 / gib:.1f} GiB (not allocated) | {t * t * h * d * 4 / gib:.0f} GiB (not allocated) |",
        ]
        del block, alpha, res

    model, tok = aw.demo_model()
    rows = []
    checks = []
    for T in [int(s) for s in args.sizes.split(",")]:
        print(f"== MiniLM T={T}", file=sys.stderr, flush=True)
        enc = tok(TEXT, return_tensors="pt", truncation=True, max_length=T)
        assert enc["input_ids"].shape[1] == T
        aw.trace(model, tok, TEXT, max_length=T, contributions=True)  # warm-up
        plain = statistics.median(timeit(lambda: aw.trace(model, tok, TEXT, max_length=T), args.runs))
        contrib = statistics.median(
            timeit(lambda: aw.trace(model, tok, TEXT, max_length=T, contributions=True), args.runs)
        )
        with ContributionRecorder(model) as rec, torch.no_grad():
            out = model(**enc, output_attentions=True)
        blocks, attn = rec.blocks(), [a[0] for a in out.attentions]
        chunked = statistics.median(timeit(lambda: compute_contributions(blocks, attn), args.runs))
        ref = compute_contributions(blocks, attn)
        d, h = blocks[0].x.shape[-1], blocks[0].n_heads
        naive = {}
        for key, heads_axis, elems in (("ttd", False, T * T * d), ("tthd", True, T * T * h * d)):
            gb = elems * 4 / 2**30
            if gb > args.max_naive_gb:
                naive[key] = (None, gb)
                continue
            with torch.no_grad():
                def run_naive():
                    return [naive_layer(b, a, heads_axis) for b, a in zip(blocks, attn)]

                secs = statistics.median(timeit(run_naive, max(1, args.runs - 1)))
                got = run_naive()
            dc = max(float(np.abs(c.numpy() - ref["contributions"][i]).max()) for i, (_, c) in enumerate(got))
            dm = max(float(np.abs(m.numpy() - ref["mixed_norms"][i]).max()) for i, (m, _) in enumerate(got))
            checks.append(f"T={T}, naive {key}: max |c naive - c chunked| = {dc:.1e}, mixed norms {dm:.1e}")
            naive[key] = (secs, gb)
        rows.append((T, plain, contrib, chunked, naive))
        print(f"   done in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)

    load_after = os.getloadavg()
    head = (
        "| T | trace + grads | + contributions | ratio | contributions alone (chunked) "
        "| naive [T, T, d] per layer | chunked speed-up | LLM-TT [T, T, H, d] per layer | chunked speed-up |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for T, plain, contrib, chunked, naive in rows:
        cells = []
        for key in ("ttd", "tthd"):
            secs, gb = naive[key]
            if secs is None:
                cells += [f"skipped ({gb:.1f} GiB per layer)", "-"]
            else:
                cells += [f"{fmt(secs)} ({gb:.2f} GiB per layer)", f"{secs / chunked:.1f}x"]
        lines.append(
            f"| {T} | {fmt(plain)} | {fmt(contrib)} | {contrib / plain:.2f}x | {fmt(chunked)} | " + " | ".join(cells) + " |"
        )
    meta = [
        f"Run {datetime.datetime.now().isoformat(timespec='seconds')}, {cpu_name()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__} with {torch.get_num_threads()} thread(s), python {platform.python_version()}; "
        f"medians of {args.runs} runs; chunk bound {CHUNK_BYTES >> 20} MB.",
        f"Load average before / after: {load_before[0]:.2f} / {load_after[0]:.2f} (a shared machine).",
        "ratio = trace with contributions / plain trace with gradients (target <= 2x).",
    ]
    text = "\n".join(
        ["# Contribution capture cost", "", *meta, "", "MiniLM (6 layers x 12 heads, d = 384):", "", *lines, "",
         *(["Large config (one block measured, x 32 extrapolated, ~):", "", *big_lines, ""] if big_lines else []),
         "Checks:", "", *[f"- {c}" for c in checks], ""]
    )
    print(text)
    write_results(args.out, text)
    print(f"wrote {args.out} in {time.perf_counter() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
