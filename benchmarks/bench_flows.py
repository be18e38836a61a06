"""Cost of capture and of every flow method on the demo model (MiniLM, 6 layers x 12 heads).

For T = 16, 64, 128, 256, 512 tokens of a real paragraph (repeated, cropped with
``max_length``; [CLS] and [SEP] included) this measures, on CPU:

* forward: plain ``model(**inputs)`` under ``torch.no_grad()``;
* trace: ``attn_widgets.trace(..., gradients=False)`` (eager attention, weights returned);
* trace+grad: ``attn_widgets.trace(...)`` with the one-call backward to all attention maps,
  and its ratio to the plain forward;
* rollout and gradient rollout (``attn_widgets.flows``);
* flow row: one exact attention-flow row (``attention_flow(rows=[i])``, numba engine),
  single-threaded and with the default thread count; several different rows ``i``;
* flow matrix: the full ``T x T`` exact flow (only for T <= 128 unless ``--full-max``);
* scipy row: the per-pair baseline, one ``scipy.sparse.csgraph.maximum_flow(method="dinic")``
  per pair on the full graph with int32 capacities (engine="scipy");
* networkx preflow-push: ``networkx.maximum_flow_value`` per pair with networkx's default
  algorithm (preflow-push, float capacities): the full matrix at T=16, one pair otherwise,
  extrapolated (x T for a row, x T^2 for the matrix) and marked "~";
* authors' Edmonds-Karp: what the published code runs (``compute_flows`` in
  samiraabnar/attention_flow calls ``networkx.maximum_flow_value(...,
  flow_func=edmonds_karp)`` once per (output, input) pair): a few pairs timed (at most
  ``--ek-pairs``, stopping once ``--ek-budget`` seconds are spent; only for T <=
  ``--ek-max``), the median extrapolated x T for a row and x T^2 for the matrix, marked "~".

Numbers are medians over ``--runs`` runs (5 by default); slow items use fewer, as the
notes under the table say. This machine may be shared: the load average before and after
is printed with the table.

Usage: ``python benchmarks/bench_flows.py [--quick] [--runs 5] [--sizes 16,64,128,256,512]
[--ek-max 128] [--ek-pairs 3] [--ek-budget 120]``.
Prints a markdown table and writes benchmarks/results/flows.md.
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

from benchmarks._common import RESULTS_DIR, cpu_name, write_results  # noqa: E402
from benchmarks._common import PARAGRAPH_SHORT as PARAGRAPH  # noqa: E402

RESULTS = RESULTS_DIR / "flows.md"

TEXT = " ".join([PARAGRAPH] * 6)


def timeit(fn, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def fmt(seconds: float | None, approx: bool = False, lower: bool = False) -> str:
    """Seconds as text; ``approx`` marks an extrapolation "~", ``lower`` a lower bound ">"."""
    if seconds is None:
        return "-"
    pre = ">" if lower else ("~" if approx else "")
    if seconds < 1e-3:
        return f"{pre}{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{pre}{seconds * 1e3:.1f} ms"
    if seconds < 600:
        return f"{pre}{seconds:.2f} s"
    if seconds < 3 * 3600:
        return f"{pre}{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{pre}{seconds / 3600:.1f} h"
    return f"{pre}{seconds / 86400:.0f} days"


def nx_graph(ah: np.ndarray):
    """The full (L + 1) * T-node networkx DiGraph with float capacities ``Ah_l[i, j]``."""
    import networkx as nx

    n_layers, t, _ = ah.shape
    g = nx.DiGraph()
    for layer in range(1, n_layers + 1):
        m = ah[layer - 1]
        g.add_edges_from(
            ((layer, a), (layer - 1, b), {"capacity": float(m[a, b])}) for a in range(t) for b in range(t)
        )
    return g


def nx_pair_time(ah: np.ndarray, i: int, j: int, flow_func=None, graph=None) -> tuple[float, float]:
    """(value, seconds) of one networkx max-flow on the full graph (graph build not timed).

    ``flow_func=None`` is networkx's default (preflow-push); the published code passes
    ``networkx.algorithms.flow.edmonds_karp``."""
    import networkx as nx

    g = nx_graph(ah) if graph is None else graph
    n_layers = ah.shape[0]
    t0 = time.perf_counter()
    val = nx.maximum_flow_value(g, (n_layers, i), (0, j), capacity="capacity", flow_func=flow_func)
    return val, time.perf_counter() - t0


def _ek_child(graph, s, t, out) -> None:
    import networkx as nx
    from networkx.algorithms.flow import edmonds_karp

    t0 = time.perf_counter()
    val = nx.maximum_flow_value(graph, s, t, capacity="capacity", flow_func=edmonds_karp)
    out.put((val, time.perf_counter() - t0))


def ek_pair_bounded(graph, n_layers: int, i: int, j: int, timeout: float) -> tuple[float | None, float]:
    """(value, seconds) of one Edmonds-Karp max-flow, run in a forked child killed after ``timeout``.

    A pair can take minutes at T >= 128, so the wait is bounded: on timeout the value is
    None and the seconds are ``timeout`` (a lower bound)."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")  # the child inherits the built graph
    out = ctx.Queue()
    proc = ctx.Process(target=_ek_child, args=(graph, (n_layers, i), (0, j), out), daemon=True)
    proc.start()
    proc.join(timeout)
    if proc.is_alive():
        proc.terminate()
        proc.join()
        return None, timeout
    return out.get(timeout=5)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 runs, T up to 256, baselines extrapolated")
    ap.add_argument("--runs", type=int, default=None, help="runs per fast item (default 5, --quick 3)")
    ap.add_argument("--sizes", default=None, help="comma separated T values (default 16,64,128,256,512)")
    ap.add_argument("--full-max", type=int, default=128, help="largest T for the full flow matrix")
    ap.add_argument(
        "--torch-threads", type=int, default=1,
        help="torch intra-op threads for the model timings (default 1: stable on a shared machine)",
    )
    ap.add_argument("--ek-max", type=int, default=128, help="largest T for the Edmonds-Karp timing (default 128)")
    ap.add_argument("--ek-pairs", type=int, default=3, help="most Edmonds-Karp pairs timed per T (default 3)")
    ap.add_argument(
        "--ek-budget", type=float, default=120.0,
        help="stop timing further Edmonds-Karp pairs at a T once this many seconds are spent (default 120)",
    )
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    runs = args.runs or (3 if args.quick else 5)
    sizes = [int(s) for s in (args.sizes or ("16,64,128,256" if args.quick else "16,64,128,256,512")).split(",")]

    import numba
    import scipy
    import torch

    import attn_widgets as aw
    from attn_widgets.flows import attention_flow, grad_rollout, rollout
    from attn_widgets.flows._inputs import mixed_maps
    from attn_widgets.flows.maxflow import _cpu_count, _ensure_compiled

    torch.set_num_threads(max(1, args.torch_threads))
    t0 = time.perf_counter()
    _ensure_compiled()
    compile_s = time.perf_counter() - t0
    model, tok = aw.demo_model()
    load_before = os.getloadavg()
    started = time.perf_counter()
    notes: dict[str, str] = {}
    rows_out = []
    check_lines = []
    for T in sizes:
        print(f"== T={T}", file=sys.stderr, flush=True)
        enc = tok(TEXT, return_tensors="pt", truncation=True, max_length=T)
        assert enc["input_ids"].shape[1] == T, enc["input_ids"].shape
        tr = aw.trace(model, tok, TEXT, max_length=T)  # warm-up
        assert tr.n_tokens == T
        a, g = tr.attentions, tr.gradients

        def forward():
            with torch.no_grad():
                model(**enc)

        forward()
        fwd = statistics.median(timeit(forward, runs))
        cap = statistics.median(timeit(lambda: aw.trace(model, tok, TEXT, max_length=T, gradients=False), runs))
        capg = statistics.median(timeit(lambda: aw.trace(model, tok, TEXT, max_length=T), runs))
        ro = statistics.median(timeit(lambda: rollout(a), runs))
        gro = statistics.median(timeit(lambda: grad_rollout(a, g), runs))

        # one flow row: `runs` different rows spread over the sequence, median
        flow_rows = np.linspace(1, T - 2, runs).round().astype(int).tolist() if T > 2 else [0] * runs
        row1 = [timeit(lambda i=i: attention_flow(a, rows=[i], workers=1), 1)[0] for i in flow_rows]
        rowN = [timeit(lambda i=i: attention_flow(a, rows=[i]), 1)[0] for i in flow_rows]
        notes["flow row"] = (
            f"flow row: median over {runs} different rows (evenly spaced), each computed once; "
            f"'1 thread' = workers=1, 'auto' = default workers (up to {min(4, _cpu_count())} threads "
            "on this machine, used when the job is big enough)."
        )

        full = None
        if T <= args.full_max:
            n_full = runs if T <= 64 else max(1, min(runs, 3))
            full = statistics.median(timeit(lambda: attention_flow(a), n_full))
            if T > 64:
                notes[f"full{T}"] = f"flow matrix at T={T}: median of {n_full} runs."

        # scipy per-pair Dinic baseline: a whole row where that takes < ~60 s, else a few pairs
        i_mid = T // 2
        slow = None
        if args.quick and T >= 256:
            from scipy.sparse.csgraph import maximum_flow

            from attn_widgets.flows.maxflow import _scipy_graph

            graph = _scipy_graph(mixed_maps(a, 0.5))
            js = np.linspace(0, T - 1, 8).round().astype(int)
            t1 = time.perf_counter()
            for j in js:
                maximum_flow(graph, 6 * T + i_mid, int(j), method="dinic")
            scipy_row, scipy_approx = (time.perf_counter() - t1) / len(js) * T, True
            notes["scipy_x"] = "scipy row marked ~: extrapolated from 8 pairs (x T)."
        else:
            t1 = time.perf_counter()
            slow = attention_flow(a, rows=[i_mid], engine="scipy", normalize=False)
            times = [time.perf_counter() - t1]
            n_sc = runs if times[0] < 1 else (3 if times[0] < 10 else 1)
            times += timeit(lambda: attention_flow(a, rows=[i_mid], engine="scipy"), n_sc - 1)
            scipy_row, scipy_approx = statistics.median(times), False
            if n_sc < runs:
                notes[f"scipy{T}"] = f"scipy row at T={T}: median of {n_sc} run(s)."
        fast = attention_flow(a, rows=[i_mid], normalize=False)
        if slow is not None:
            check_lines.append(f"T={T}: max |numba - scipy| on row {i_mid} = {np.abs(fast - slow).max():.2e}")

        # networkx: full at T<=16, else one pair extrapolated
        ah = mixed_maps(a, 0.5)
        nx_row = nx_full = None
        nx_approx = True
        if T <= 16:
            import networkx as nx

            from tests.flows.reference import flow_graph_ref

            gref, n_layers, _ = flow_graph_ref(a)
            t1 = time.perf_counter()
            ref = np.array([[nx.maximum_flow_value(gref, (n_layers, i), (0, j)) for j in range(T)] for i in range(T)])
            nx_full = time.perf_counter() - t1
            nx_row = nx_full / T
            nx_approx = False
            ours = attention_flow(a, normalize=False)
            check_lines.append(f"T={T}: max |numba - networkx preflow-push| over the full matrix = {np.abs(ours - ref).max():.2e}")
        elif not (args.quick and T > 128):
            val, dt = nx_pair_time(ah, i_mid, max(0, i_mid - 1))
            nx_row, nx_full = dt * T, dt * T * T
            ours = attention_flow(a, rows=[i_mid], normalize=False)[0, max(0, i_mid - 1)]
            check_lines.append(f"T={T}: one pair, |numba - networkx preflow-push| = {abs(ours - val):.2e} ({fmt(dt)})")
            notes["nx"] = (
                "networkx preflow-push (networkx's default flow_func) marked ~: one pair timed (graph build "
                "excluded), x T for a row, x T^2 for the matrix."
            )

        # the authors' algorithm: Edmonds-Karp per pair, a few pairs, extrapolated
        ek_row = ek_full = None
        ek_lower = False
        if T <= args.ek_max:
            gek = nx_graph(ah)
            rng = np.random.default_rng(T)
            pairs = [(int(rng.integers(T)), int(rng.integers(T))) for _ in range(max(1, args.ek_pairs))]
            ek_times, spent = [], 0.0
            ours_all = attention_flow(a, rows=sorted({p[0] for p in pairs}), normalize=False)
            row_of = {r: k for k, r in enumerate(sorted({p[0] for p in pairs}))}
            worst = 0.0
            for i, j in pairs:
                val, dt = ek_pair_bounded(gek, ah.shape[0], i, j, max(0.01, args.ek_budget - spent))
                spent += dt
                if val is None:  # stopped: the budget is a lower bound for this pair
                    ek_lower = not ek_times
                    if ek_times:
                        check_lines.append(f"T={T}: an Edmonds-Karp pair was stopped after {fmt(dt)} (not counted)")
                    break
                ek_times.append(dt)
                worst = max(worst, abs(ours_all[row_of[i], j] - val))
                if spent >= args.ek_budget:
                    break
            ek_pair = statistics.median(ek_times) if ek_times else dt
            ek_row, ek_full = ek_pair * T, ek_pair * T * T
            if ek_times:
                check_lines.append(
                    f"T={T}: Edmonds-Karp on {len(ek_times)} pair(s), max |numba - Edmonds-Karp| = {worst:.2e} "
                    f"(median {fmt(ek_pair)} per pair)"
                )
            else:
                check_lines.append(f"T={T}: Edmonds-Karp stopped after {fmt(dt)} on its first pair (no value)")
            notes["ek"] = (
                "authors' Edmonds-Karp (networkx edmonds_karp, as compute_flows in samiraabnar/attention_flow) "
                f"marked ~: median of up to {args.ek_pairs} random pairs per T (fewer once {args.ek_budget:.0f} s "
                f"were spent; graph build excluded), x T for a row, x T^2 for the matrix; not run above T={args.ek_max}; "
                f"a pair still running after the budget is stopped, and '>' marks the budget as a lower bound."
            )

        rows_out.append(
            {
                "T": T,
                "forward": fwd,
                "trace": cap,
                "trace_grad": capg,
                "ratio": capg / fwd,
                "rollout": ro,
                "grad_rollout": gro,
                "row1": statistics.median(row1),
                "rowN": statistics.median(rowN),
                "full": full,
                "scipy_row": scipy_row,
                "scipy_approx": scipy_approx,
                "nx_row": nx_row,
                "nx_full": nx_full,
                "nx_approx": nx_approx,
                "ek_row": ek_row,
                "ek_full": ek_full,
                "ek_lower": ek_lower,
            }
        )
        print(f"   done in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)

    load_after = os.getloadavg()
    head = (
        "| T | forward | trace | trace + grads | grads / forward | rollout | grad rollout "
        "| flow row, 1 thread | flow row, auto | flow matrix | scipy Dinic row | speed-up vs scipy "
        "| networkx preflow-push row | networkx preflow-push matrix "
        "| authors' Edmonds-Karp row | authors' Edmonds-Karp matrix |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows_out:
        lines.append(
            f"| {r['T']} | {fmt(r['forward'])} | {fmt(r['trace'])} | {fmt(r['trace_grad'])} | {r['ratio']:.1f}x "
            f"| {fmt(r['rollout'])} | {fmt(r['grad_rollout'])} | {fmt(r['row1'])} | {fmt(r['rowN'])} "
            f"| {fmt(r['full'])} | {fmt(r['scipy_row'], r['scipy_approx'])} | {r['scipy_row'] / r['row1']:.0f}x "
            f"| {fmt(r['nx_row'], r['nx_approx'])} | {fmt(r['nx_full'], r['nx_approx'])} "
            f"| {fmt(r['ek_row'], True, r['ek_lower'])} | {fmt(r['ek_full'], True, r['ek_lower'])} |"
        )
    cpu = cpu_name()
    meta = [
        f"Run {datetime.datetime.now().isoformat(timespec='seconds')}, {cpu}, {_cpu_count()} cores, "
        f"python {platform.python_version()}, torch {torch.__version__}, numba {numba.__version__}, "
        f"scipy {scipy.__version__}; {'--quick, ' if args.quick else ''}{runs} runs per fast item.",
        f"Load average before / after: {load_before[0]:.2f} / {load_after[0]:.2f} "
        "(a shared machine inflates wall times).",
        f"torch.set_num_threads({torch.get_num_threads()}) for forward / trace timings.",
        f"numba kernels compiled or loaded from cache in {fmt(compile_s)} (not in the table).",
        "forward = plain model call under no_grad; trace = attn_widgets.trace without gradients; "
        "trace + grads = with the one-call backward to all attention maps; the ratio is trace + grads / forward.",
        "speed-up vs scipy = scipy Dinic row / flow row (1 thread).",
    ]
    meta += [v for _, v in sorted(notes.items())]
    text = (
        "# Flow methods: cost on the demo model (MiniLM 6x12, CPU)\n\n"
        + "\n".join(lines)
        + "\n\n"
        + "\n".join(f"* {m}" for m in meta)
        + "\n\nExactness checks:\n\n"
        + "\n".join(f"* {c}" for c in check_lines)
        + "\n"
    )
    print(text)
    out = write_results(args.out, text)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
