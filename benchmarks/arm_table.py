"""Per-seed accuracies of objective selection in two arms of a side-by-side run, with their
means, spreads and the per-seed differences.

    python benchmarks/arm_table.py DIR ARM_A,ARM_B [--seeds 0,1,2] [--method os-step]

DIR holds ``{ARM}_s{SEED}_results.jsonl`` (as ``benchmarks/results/ema/`` does),
``{ARM}_s{SEED}/results.jsonl`` (a comparison's own folders), or ``{ARM}_s{SEED}/summary.json``
or ``{ARM}_s{SEED}_summary.json`` (a prune run's; ``--method`` does not apply).
"""

from __future__ import annotations

import argparse
import json
import statistics as st
from pathlib import Path


def _row(root: Path, arm: str, seed: int, method: str) -> dict | None:
    for f in (root / f"{arm}_s{seed}_summary.json", root / f"{arm}_s{seed}" / "summary.json"):
        if f.is_file():  # a prune run: its fused model's scores
            s = json.loads(f.read_text())
            return {"test_acc": s["test_acc_after"], "val_acc": s["val_acc_after"],
                    "seconds": s["seconds"]}
    for f in (root / f"{arm}_s{seed}_results.jsonl", root / f"{arm}_s{seed}" / "results.jsonl"):
        if f.is_file():
            rows = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
            return next((r for r in rows if r["method"] == method), None)
    return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", type=Path)
    p.add_argument("arms", type=lambda t: t.split(","))
    p.add_argument("--seeds", type=lambda t: [int(s) for s in t.split(",")], default=range(6))
    p.add_argument("--method", default="os-step")
    a = p.parse_args()
    for key in ("test_acc", "val_acc", "seconds"):
        got = {arm: [_row(a.root, arm, s, a.method) for s in a.seeds] for arm in a.arms}
        for arm, rows in got.items():
            v = [r[key] for r in rows if r is not None]
            f = ".1f" if key == "seconds" else ".4f"
            spread = f"  mean {st.mean(v):{f}} ± {st.stdev(v):{f}}" if len(v) > 1 else ""
            print(f"{key:9} {arm:>6}: " + " ".join(f"{x:{f}}" for x in v) + spread)
        if len(a.arms) == 2:
            pairs = [(x, y) for x, y in zip(*got.values()) if x is not None and y is not None]
            d = [(y[key] - x[key]) * (100 if key != "seconds" else 1) for x, y in pairs]
            if len(d) > 1:
                unit = "points" if key != "seconds" else "s"
                print(f"{key:9}   diff: " + " ".join(f"{x:+.2f}" for x in d)
                      + f"  mean {st.mean(d):+.2f} ± {st.stdev(d):.2f} {unit} "
                      f"(standard error {st.stdev(d) / len(d) ** 0.5:.2f}; {sum(x > 0 for x in d)}"
                      f" of {len(d)} above)")


if __name__ == "__main__":
    main()
