"""Does merging a split layer's parts back after fusion pay? Each fused model given is timed
side by side against the same network with its chunked layers split into their parts again
(one conv per part, what the fused graph would be without ``merge_split_layers``): the same
weights and values, only the layout differs.

    OMP_NUM_THREADS=1 python benchmarks/merge_timing.py PRUNED.pt [PRUNED.pt ...] --rounds 7

Prints one JSON line per model: ms at batch 1 and 128 for both layouts (medians of
interleaved rounds), and the largest difference of their outputs.
"""

from __future__ import annotations

import argparse
import json

import torch

from alphaprune.graph.chunks import split_chunked_layers
from alphaprune.graph.trace import trace
from alphaprune.modelfile import load_model_file
from alphaprune.report.page import measure_side_by_side


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(1)
    for path in args.models:
        mf = load_model_file(path)
        shape = tuple(mf.meta.get("input_shape") or (3, 32, 32))
        merged = mf.model.eval()
        parts = trace(merged, torch.zeros(2, *shape))
        n = split_chunked_layers(parts)
        x = torch.randn(8, *shape)
        with torch.no_grad():
            diff = float((merged(x) - parts.eval()(x)).abs().max())
        t = measure_side_by_side({"merged": merged, "parts": parts}, shape, rounds=args.rounds)
        print(json.dumps({"model": path, "split_layers": n, "max_abs_diff": diff, **{
            f"{k}_{m}": round(v[m], 3) for k, v in t.items() for m in v}}), flush=True)


if __name__ == "__main__":
    main()
