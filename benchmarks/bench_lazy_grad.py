"""Capture time and peak memory of trace_lazy with and without the streamed grad_rollout route.

Each configuration runs in its own subprocess (peak RSS = ru_maxrss of that process).
Usage: python benchmarks/bench_lazy_grad.py [T] [--no-checkpoint]
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
t, grad, ckpt = int(sys.argv[1]), sys.argv[2] == "1", sys.argv[3] == "1"
model, tok = long_context_model("gpt2")
ids = np.random.default_rng(0).integers(1000, 20000, t)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
kw = {"grad_rollout": True, "checkpoint": ckpt} if grad else {}
lz = aw.trace_lazy(model, tok, ids, **kw)
dt = time.perf_counter() - t0
out = {"T": t, "grad_rollout": grad, "checkpoint": ckpt, "seconds": round(dt, 2),
       "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
       "rss_before_gb": round(base / 2**20, 3)}
if grad:
    r = lz.grad_route
    t1 = time.perf_counter(); g = r.route(0.8); out["route_s"] = round(time.perf_counter() - t1, 4)
    out.update(target=r.target, edges=g.n_edges, route_mb=round(r.nbytes / 2**20, 1),
               capped_layers=int(g.capped.sum()))
print(json.dumps(out))
"""


def run(t: int, grad: bool, ckpt: bool = True) -> dict:
    res = subprocess.run([sys.executable, "-c", CHILD, str(t), str(int(grad)), str(int(ckpt))],
                         capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    t = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 4096
    ckpt = "--no-checkpoint" not in sys.argv
    plain = run(t, False)
    print(json.dumps(plain))
    grad = run(t, True, ckpt)
    print(json.dumps(grad))
    print(f"T={t}: plain {plain['seconds']} s / {plain['peak_rss_gb']} GiB; grad_rollout {grad['seconds']} s / "
          f"{grad['peak_rss_gb']} GiB; ratio {grad['seconds'] / plain['seconds']:.2f}x")
