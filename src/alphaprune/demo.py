"""``alphaprune demo``: the whole tool on the bundled digits, in under 2 minutes on 2 cores."""

from __future__ import annotations

import time
from pathlib import Path

from alphaprune import api
from alphaprune.train.module import OptimConfig

__all__ = ["run_demo"]


def run_demo(out: str | Path = "runs/demo") -> dict:
    """Train a small VGG-11 on digits, evaluate it, print a table; returns the numbers."""
    out = Path(out)
    t0 = time.perf_counter()
    data = api.DataConfig(data="digits", batch_size=64)
    cfg = api.TrainConfig(model="vgg11", width=0.25, epochs=8, data=data,
                          optim=OptimConfig(lr=0.05, schedule="onecycle"))
    print(f"[demo] training vgg11 (width 0.25) on digits -> {out / 'train'}")
    s = api.train(cfg, out / "train", force=True, progress=False)
    ev = api.evaluate(out / "train" / "model.pt", split="test")
    rows = [("model", "vgg11 w0.25"), ("params", f"{ev['params']:,}"),
            ("FLOPs", f"{ev['flops']:,}"), ("val acc", f"{s['val_acc']:.4f}"),
            ("test acc", f"{ev['accuracy']:.4f}"), ("seconds", f"{time.perf_counter() - t0:.1f}")]
    print("\n".join(f"  {k:<10} {v}" for k, v in rows))
    return {"train": s, "evaluate": ev}
