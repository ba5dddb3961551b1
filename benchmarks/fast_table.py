"""Collect the Fast benchmark's compare folders into one table and one Pareto plot per model.

Every saved model's latency is measured again here, side by side (interleaved rounds,
medians, one thread), so no number was taken while another job trained. The speed-up is
the pretrained model's latency over the row's; the FLOP ratio is its FLOPs over the row's.

    python benchmarks/fast_table.py /tmp/bench/fast --out /tmp/bench/fast/summary
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from alphaprune.compare import read_results
from alphaprune.modelfile import load_checkpoint
from alphaprune.report.page import markdown_table, measure_side_by_side
from alphaprune.report.plots import plot_pareto


def collect(root: Path) -> list[dict]:
    """Every row of every ``*/results.jsonl`` under ``root``, labelled by its folder."""
    rows = []
    for results in sorted(root.glob("*/results.jsonl")):
        family = results.parent.name.split("_")[0]
        for r in read_results(results, repair=False):
            if r["method"] == "pretrained" and any(
                    x["family"] == family and x["method"] == "pretrained" for x in rows):
                continue
            label = r["method"]
            if r["method"] == "os-step":  # by its width solver (and the ratio solver's balance)
                solver = r.get("solver", "ratio")
                label = f"os b{r.get('balance', 1.0):g}" if solver == "ratio" else f"os {solver}"
                if _streams(r["model_file"]):
                    label += " +streams"
            rows.append({**r, "family": family, "label": label, "folder": results.parent.name})
    return rows


def _streams(model_file: str) -> bool:
    """Whether the prune run that wrote ``model_file`` cut the residual streams."""
    import yaml

    config = Path(model_file).parent / "config.yaml"
    if not config.exists():
        return False
    doc = yaml.safe_load(config.read_text()) or {}
    return bool((doc.get("prune") or doc).get("streams"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("root", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args()
    torch.set_num_threads(1)
    rows = collect(a.root)
    a.out.mkdir(parents=True, exist_ok=True)
    files = {i: load_checkpoint(r["model_file"]) for i, r in enumerate(rows)}
    models = {i: f.model for i, f in files.items()}
    shapes = {i: tuple(f.meta.get("input_shape") or (3, 32, 32)) for i, f in files.items()}
    assert len(set(shapes.values())) == 1, "one input shape per table"
    lat = measure_side_by_side(models, next(iter(shapes.values())), a.rounds)
    for i, r in enumerate(rows):
        r.update({k: lat[i][k] for k in ("latency_b1_ms", "latency_b128_ms")})
    for r in rows:
        base = next(x for x in rows if x["family"] == r["family"] and x["method"] == "pretrained")
        r["flop_ratio"] = base["flops"] / r["flops"]
        r["speedup_b1"] = base["latency_b1_ms"] / r["latency_b1_ms"]
        r["speedup_b128"] = base["latency_b128_ms"] / r["latency_b128_ms"]
        r["speedup_share_of_flop_ratio_b128"] = r["speedup_b128"] / r["flop_ratio"]
    (a.out / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cols = ["family", "match", "target", "label", "test_acc", "val_acc", "params", "flops", "flop_ratio",
            "latency_b1_ms", "latency_b128_ms", "speedup_b1", "speedup_b128",
            "speedup_share_of_flop_ratio_b128", "folder"]
    fmt = {"target": "{:.0%}", "test_acc": "{:.4f}", "val_acc": "{:.4f}", "params": "{:,}",
           "flops": "{:,}", "flop_ratio": "{:.2f}", "latency_b1_ms": "{:.2f}",
           "latency_b128_ms": "{:.1f}", "speedup_b1": "{:.2f}", "speedup_b128": "{:.2f}",
           "speedup_share_of_flop_ratio_b128": "{:.2f}"}
    for r in rows:
        r.setdefault("match", "params" if r["method"] == "pretrained" else "flops")
    ordered = sorted(rows, key=lambda r: (r["family"], r["match"], r["target"], r["label"]))
    table = [[fmt.get(c, "{}").format(r[c]) for c in cols] for r in ordered]
    (a.out / "table.md").write_text(markdown_table(cols, table) + "\n")
    for family in sorted({r["family"] for r in rows}):
        mine = [{**r, "method": r["label"]} for r in rows if r["family"] == family]
        plot_pareto(mine, a.out / f"pareto_{family}.png",
                    title=f"{family}: test accuracy against measured latency and parameters")
    print((a.out / "table.md").read_text())


if __name__ == "__main__":
    main()
