"""Cost of one token's route graph (what the Flow panel computes on a click), per method.

On the demo model (MiniLM, 6 layers x 12 heads), for T = 128 and 512 tokens of a real
paragraph (repeated, cropped with ``max_length``), for each method of
``attn_widgets.flows.route_graph`` at the default ``keep=0.8`` and edge cap:

* click: ``route_graph(..., layers=L)`` with the per-layer matrices ``L = route_layers(...)``
  precomputed once per (trace, method) -- what a click costs once the panel has them;
  for ``flow`` also with ``source=`` given (the panel already has the token's flow row);
* cold: ``route_graph(trace, method, token)`` from the trace alone (matrices built, and for
  ``flow`` the token's exact flow row computed to pick the source);
* layers: ``route_layers`` alone (once per trace and method);
* the kept edges (count, per-layer cap hits) and their size in bytes: as stored (int32
  layer/query/key + float64 weight) and packed for the wire (uint8 layer, uint16
  query/key, float32 weight, plus carry ``[L, T]`` and node ``[L + 1, T]`` as float32).

Tokens: several different clicked tokens (spread over the input); numbers are medians
over tokens x runs. Drawing time is measured by the browser benchmarks, not here.

Usage: ``python benchmarks/bench_route.py [--runs 3] [--sizes 128,512] [--tokens 4]``.
Prints a markdown table and writes benchmarks/results/route.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import platform
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402

from benchmarks._common import PARAGRAPH_SHORT as PARAGRAPH  # noqa: E402
from benchmarks._common import RESULTS_DIR, cpu_name, write_results  # noqa: E402

RESULTS = RESULTS_DIR / "route.md"
TEXT = " ".join([PARAGRAPH] * 6)
METHODS = ("attention", "rollout", "grad_rollout", "attn_grad", "flow")


def fmt(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def wire_bytes(g) -> int:
    return g.n_edges * (1 + 2 + 2 + 4) + 4 * (g.carry.size + g.node.size)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="runs per clicked token (default 3)")
    ap.add_argument("--sizes", default="128,512", help="comma separated T values")
    ap.add_argument("--tokens", type=int, default=4, help="clicked tokens per size (default 4)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]

    import numba
    import torch

    import attn_widgets as aw
    from attn_widgets.flows import attention_flow, route_graph, route_layers
    from attn_widgets.flows.maxflow import _ensure_compiled

    torch.set_num_threads(1)
    _ensure_compiled()
    model, tok = aw.demo_model()
    load_before = os.getloadavg()
    lines = [
        "| T | method | click (layers cached) | click, flow source given | cold (from trace) | route_layers "
        "| kept edges | capped layers | bytes stored | bytes packed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for T in sizes:
        print(f"== T={T}", file=sys.stderr, flush=True)
        tr = aw.trace(model, tok, TEXT, max_length=T)
        assert tr.n_tokens == T
        tokens = np.linspace(1, T - 2, args.tokens).round().astype(int).tolist()
        for method in METHODS:
            layers, t_layers = timed(lambda: route_layers(tr, method))
            click, given, cold, edges, capped, stored, packed = [], [], [], [], [], [], []
            for token in tokens:
                src = None
                if method == "flow":
                    src = int(np.argmax(attention_flow(tr, rows=[token], normalize=False)[0]))
                for _ in range(args.runs):
                    g, s = timed(lambda: route_graph(tr, method, token, layers=layers))
                    click.append(s)
                    if method == "flow":
                        assert g.source == src
                        _, s = timed(lambda: route_graph(tr, method, token, layers=layers, source=src))
                        given.append(s)
                _, s = timed(lambda: route_graph(tr, method, token))
                cold.append(s)
                edges.append(g.n_edges)
                capped.append(int(g.capped.sum()))
                stored.append(g.nbytes)
                packed.append(wire_bytes(g))
            med = statistics.median
            lines.append(
                f"| {T} | {method} | {fmt(med(click))} | {fmt(med(given)) if given else '-'} | {fmt(med(cold))} "
                f"| {fmt(t_layers)} | {med(edges):.0f} | {med(capped):.0f} of {tr.attentions.shape[0]} "
                f"| {med(stored) / 1024:.1f} KiB | {med(packed) / 1024:.1f} KiB |"
            )
            print(lines[-1], file=sys.stderr, flush=True)
    load_after = os.getloadavg()
    env = (
        f"{datetime.date.today()} · {platform.system()} · {cpu_name()} · {os.cpu_count()} CPUs · "
        f"Python {platform.python_version()} · numpy {np.__version__} · numba {numba.__version__} · "
        f"torch {torch.__version__} (1 thread)"
    )
    notes = [
        "",
        f"keep=0.8, max_edges_per_layer={route_graph.__kwdefaults__['max_edges_per_layer']}, "
        f"residual=0.5; clicked tokens {tokens} (last size); medians over tokens x {args.runs} runs "
        "(cold: over tokens, one run each).",
        "flow 'click' includes picking the source (the input with the largest flow value, by a bounded "
        "search over sinks: usually one max-flow, at worst a serial exact flow row) and the edge flows; "
        "'source given' is one max-flow with its edge flows. Each source was checked against argmax of "
        "attention_flow(rows=[token]).",
        f"Load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (shared machine). {env}",
    ]
    text = "\n".join(lines + notes) + "\n"
    print(text)
    out = write_results(args.out, "# Route graph per click\n\n" + text)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
