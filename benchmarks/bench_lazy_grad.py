"""Capture time and peak memory of trace_lazy with and without the streamed grad_rollout route.

Each configuration runs in its own subprocess (peak RSS = ru_maxrss of that process).
Usage: python benchmarks/bench_lazy_grad.py [T] [--no-checkpoint] [--threads N] [--set NAME=VALUE ...]
(``--set WALK_THREADS=2`` sets a module constant of ``attn_widgets.capture.lazy`` in the child).

On a shared machine two torch threads can be many times slower than one (the other core
is busy and every parallel region waits for it): ``--threads 1`` gives steadier ratios.
The grad_rollout run also reports its phases: forward, backward (the walk runs beside it on its
own thread), walk_tail (the walk left when the backward ends), walk_s (the walk kernel's total).
"""

from __future__ import annotations

import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import numpy as np
import attn_widgets as aw
from attn_widgets.capture import long_context_model
t, grad, ckpt, threads = int(sys.argv[1]), sys.argv[2] == "1", sys.argv[3] == "1", int(sys.argv[4])
opts = json.loads(sys.argv[5])
import torch
if threads:
    torch.set_num_threads(threads)
import attn_widgets.capture.lazy as CL
walk = [0.0]
_walk_layer = CL._walk_layer
def timed(*args, **kw):
    t0 = time.perf_counter(); _walk_layer(*args, **kw); walk[0] += time.perf_counter() - t0
CL._walk_layer = timed
for name, val in opts.items():  # WALK_THREADS, WALK_QUEUE, ... of attn_widgets.capture.lazy
    setattr(CL, name, val)
begin = CL._GradWalk.begin
phase = {}
def begin_timed(self, *args):
    phase["forward_s"] = round(time.perf_counter() - t0, 2); begin(self, *args)
CL._GradWalk.begin = begin_timed
end = CL._GradWalk.end
def end_timed(self):
    t1 = time.perf_counter()
    phase["backward_s"] = round(t1 - t0 - phase["forward_s"], 2)  # walk overlapped, up to its queue
    try:
        return end(self)
    finally:
        phase["walk_tail_s"] = round(time.perf_counter() - t1, 2)  # the walk left after the backward
CL._GradWalk.end = end_timed
model, tok = long_context_model("gpt2")
ids = np.random.default_rng(0).integers(1000, 20000, t)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
kw = {"grad_rollout": True, "checkpoint": ckpt} if grad else {}
lz = aw.trace_lazy(model, tok, ids, **kw)
dt = time.perf_counter() - t0
out = {"T": t, "grad_rollout": grad, "checkpoint": ckpt, "threads": torch.get_num_threads(), "seconds": round(dt, 2),
       "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
       "rss_before_gb": round(base / 2**20, 3)}
if grad:
    out.update(phase, walk_s=round(walk[0], 2), opts=opts)
    r = lz.grad_route
    t1 = time.perf_counter(); g = r.route(0.8); out["route_s"] = round(time.perf_counter() - t1, 4)
    out.update(target=r.target, edges=g.n_edges, route_mb=round(r.nbytes / 2**20, 1),
               capped_layers=int(g.capped.sum()))
print(json.dumps(out))
"""


def run(t: int, grad: bool, ckpt: bool = True, threads: int = 0, opts: dict | None = None) -> dict:
    res = subprocess.run([sys.executable, "-c", CHILD, str(t), str(int(grad)), str(int(ckpt)), str(threads),
                          json.dumps(opts or {})],
                         capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    t = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 4096
    ckpt = "--no-checkpoint" not in sys.argv
    threads = int(sys.argv[sys.argv.index("--threads") + 1]) if "--threads" in sys.argv else 0
    opts = {}
    for i, a in enumerate(sys.argv):
        if a == "--set":  # --set WALK_THREADS=2: a module constant of attn_widgets.capture.lazy
            name, val = sys.argv[i + 1].split("=")
            opts[name] = json.loads(val)
    plain = run(t, False, threads=threads)
    print(json.dumps(plain))
    grad = run(t, True, ckpt, threads, opts)
    print(json.dumps(grad))
    print(f"T={t}: plain {plain['seconds']} s / {plain['peak_rss_gb']} GiB; grad_rollout {grad['seconds']} s / "
          f"{grad['peak_rss_gb']} GiB; ratio {grad['seconds'] / plain['seconds']:.2f}x")
