"""``alphaprune demo``: the whole tool on the bundled digits, in under 2 minutes on 2 cores.

Trains a small VGG-11, evaluates it, prunes 65% of its parameters with the step scheduler
and prints a before/after table.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

from alphaprune import api
from alphaprune.prune import PruneConfig, prune
from alphaprune.train.module import OptimConfig

__all__ = ["run_demo"]


def run_demo(out: str | Path = "runs/demo") -> dict:
    """Train, evaluate and prune on digits; print the table; return the numbers."""
    out = Path(out)
    t0 = time.perf_counter()
    data = api.DataConfig(data="digits", batch_size=64)
    cfg = api.TrainConfig(model="vgg11", width=0.25, epochs=8, data=data,
                          optim=OptimConfig(lr=0.05, schedule="onecycle"))
    print(f"[demo] 1/3 training vgg11 (width 0.25) on digits -> {out / 'train'}", flush=True)
    api.train(cfg, out / "train", force=True, progress=False)
    model_path = out / "train" / "model.pt"
    print("[demo] 2/3 evaluating the trained model", flush=True)
    ev = api.evaluate(model_path, split="test")
    print(f"[demo] 3/3 pruning 65% of its parameters (step scheduler) -> {out / 'prune'}",
          flush=True)
    pcfg = PruneConfig(checkpoint=str(model_path), prune=0.65, scheduler="step", step_size=0.25,
                       patience=1, max_epochs_per_phase=2, final_patience=2, final_max_epochs=4,
                       optim=OptimConfig(lr=0.02, schedule="constant"), data=asdict(data))
    s = prune(pcfg, out / "prune", force=True, progress=False)
    rows = [("", "before", "after"),
            ("params", f"{s['params_before']:,}", f"{s['params_after']:,}"),
            ("FLOPs", f"{s['flops_before']:,}", f"{s['flops_after']:,}"),
            ("val acc", f"{s['val_acc_before']:.4f}", f"{s['val_acc_after']:.4f}"),
            ("test acc", f"{s['test_acc_before']:.4f}", f"{s['test_acc_after']:.4f}")]
    print(f"\nvgg11 w0.25 on digits, {s['achieved_reduction']:.1%} of parameters removed "
          f"in {s['epochs']} epochs over {len(s['phases'])} alpha phases:")
    print("\n".join(f"  {a:<10} {b:>12} {c:>12}" for a, b, c in rows))
    print(f"  total {time.perf_counter() - t0:.0f} s; compact model: {out / 'prune' / 'pruned.pt'}")
    return {"evaluate": ev, "prune": s}
