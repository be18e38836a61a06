"""Peak memory of a plain ``aw.trace`` (attention + gradients) against what it returns.

Each size runs in its own subprocess, so every peak RSS is clean (``ru_maxrss`` of a fresh
process). The model is a config-built GPT-2 (random weights, nothing downloaded) with 16 layers
x 16 heads; the token ids are random. Reported per size:

* ``returned``: bytes of the trace's ``attentions`` + ``gradients`` (float32 ``[L, H, T, T]`` each);
* ``baseline``: RSS after building the model and running one short capture (imports, weights);
* ``peak``: the child's peak RSS; ``capture`` = peak - baseline, and its ratio to ``returned``.

Usage::

    python benchmarks/bench_capture_memory.py            # T = 256, 512, 1024
    python benchmarks/bench_capture_memory.py 512 1024   # chosen sizes

Run against another checkout (e.g. the code before a change) with ``PYTHONPATH=/that/checkout``.
``MALLOC_MMAP_THRESHOLD_=1048576`` (a fixed glibc mmap threshold, passed on to the children)
measures what the capture holds rather than glibc's sliding threshold, which keeps freed
4-16 MiB torch temporaries in the heap at T <= 512.

Measured on a 2-core Linux machine (CPU torch) (capture MiB / capture-to-returned ratio):

======  ========  ============  ============  ============  ============
T       returned  before        after         before        after
        MiB       (glibc)       (glibc)       (fixed mmap)  (fixed mmap)
======  ========  ============  ============  ============  ============
256     128       562 / 4.39    391 / 3.05    422 / 3.30    270 / 2.11
512     512       2220 / 4.34   1531 / 2.99   1562 / 3.05   829 / 1.62
1024    2048      6505 / 3.18   2938 / 1.43   5934 / 2.90   2743 / 1.34
======  ========  ============  ============  ============  ============

Peak RSS at T=1024: 7156 MiB before, 3589 MiB after (baseline 651 MiB: imports and weights).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

LAYERS, HEADS, EMBD = 16, 16, 256


def _child(t: int) -> None:
    import numpy as np
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    import attn_widgets as aw

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=1000, n_positions=max(t, 64), n_embd=EMBD, n_layer=LAYERS, n_head=HEADS,
        attn_implementation="eager",
    )
    model = GPT2LMHeadModel(config).eval()
    ids = torch.randint(0, 1000, (1, t))
    aw.trace(model, None, {"input_ids": ids[:, :16]})  # warm up: lazy imports, allocator
    with open("/proc/self/statm") as f:
        baseline = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    tr = aw.trace(model, None, {"input_ids": ids})
    # VmHWM: the peak of this process's own memory (ru_maxrss would carry the parent's
    # high-water mark over through fork + exec).
    with open("/proc/self/status") as f:
        peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    returned = tr.attentions.nbytes + tr.gradients.nbytes
    assert np.isfinite(tr.gradients).all()
    print(json.dumps({"t": t, "returned": returned, "baseline": baseline, "peak": peak}))


def main(sizes: list[int]) -> None:
    import attn_widgets

    print(f"attn_widgets from {os.path.dirname(attn_widgets.__file__)}")
    print(f"GPT-2 config {LAYERS} layers x {HEADS} heads, n_embd={EMBD}, random ids, gradients=True")
    print(f"{'T':>6} {'returned MiB':>13} {'baseline MiB':>13} {'peak MiB':>9} {'capture MiB':>12} {'capture/returned':>17}")
    for t in sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(t)], check=False, capture_output=True, text=True, env=os.environ.copy()
        )
        if out.returncode != 0:
            print(f"{t:>6} failed: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        mib = 2**20
        cap = r["peak"] - r["baseline"]
        print(
            f"{t:>6} {r['returned'] / mib:>13.0f} {r['baseline'] / mib:>13.0f} {r['peak'] / mib:>9.0f} "
            f"{cap / mib:>12.0f} {cap / r['returned']:>17.2f}"
        )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        _child(int(sys.argv[2]))
    else:
        main([int(a) for a in sys.argv[1:]] or [256, 512, 1024])
