"""The residual sum out of place (``relu(out + identity)``, alphaprune before section 24)
against in place (``out += identity``, torchvision's form): speed-up of resnet20's pruned
models over the original, each model timed with the original under the same form
(BENCHMARKS.md section 24).

The pruned architectures are section 13's (their widths are committed under
``benchmarks/results/streams/``) and Torch-Pruning's, sized to the 75% row's FLOPs; speed
does not depend on the weights, so the branches' initial ones are used. Each round times
every model under both forms, the order of the forms alternating between rounds; the
speed-up is :func:`alphaprune.speedup.measured_speedup`'s (interleaved passes, median).

    OMP_NUM_THREADS=1 python benchmarks/block_forward.py /tmp/bench/resnet20/model.pt --rounds 4
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from alphaprune.baselines.tp_l1 import torch_pruning_l1
from alphaprune.blend.fuse import fused_architecture
from alphaprune.graph import find_units
from alphaprune.modelfile import load_checkpoint
from alphaprune.models.resnet import BasicBlock
from alphaprune.report.size import count_flops
from alphaprune.speedup import measured_speedup

WIDTHS = Path(__file__).parent / "results" / "streams"
ROWS = {"os auto 50% (streams whole)": "r20_streams_s0_p50", "os uniform 50% (streams cut)":
        "r20_streams_uni_s0_p50", "os auto 65% (streams whole)": "r20_streams_s0_p65",
        "os uniform 65% (streams cut)": "r20_streams_uni_s0_p65",
        "os auto 75% (streams halved)": "r20_streams_s0_p75"}


def out_of_place(self, x: torch.Tensor) -> torch.Tensor:
    """BasicBlock.forward as it was: a new tensor for the sum."""
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    return self.relu(out + identity)


FORMS = {"out of place": out_of_place, "in place": BasicBlock.forward}


def models(checkpoint: str) -> tuple[torch.nn.Module, dict]:
    """The original and every pruned architecture, in the registry class."""
    mf = load_checkpoint(checkpoint)
    original = mf.model.eval()
    structure = find_units(original, torch.zeros(2, 3, 32, 32), streams=True)
    pruned = {}
    for label, stem in ROWS.items():
        widths = json.loads((WIDTHS / f"{stem}_widths.json").read_text())["widths"]
        pruned[label] = fused_architecture(structure, widths, mf.arch).eval()
    target = count_flops(pruned["os auto 75% (streams halved)"], (3, 32, 32))
    pruned["Torch-Pruning L1 75%"] = torch_pruning_l1(original, target, (3, 32, 32),
                                                      "flops").eval()
    return original, pruned


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("checkpoint")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--pairs", type=int, default=20)
    a = p.parse_args()
    torch.set_num_threads(1)
    original, pruned = models(a.checkpoint)
    base = count_flops(original, (3, 32, 32))
    ratio = {k: base / count_flops(m, (3, 32, 32)) for k, m in pruned.items()}
    got = {(f, k): [] for f in FORMS for k in pruned}
    ms = {(f, k): [] for f in FORMS for k in list(pruned) + ["original"]}
    for r in range(a.rounds):
        for form in (list(FORMS) if r % 2 == 0 else list(FORMS)[::-1]):
            BasicBlock.forward = FORMS[form]
            for k, m in pruned.items():
                x, t_orig, t_m = measured_speedup(original, m, (3, 32, 32), a.batch, a.pairs)
                got[form, k].append(x)
                ms[form, k].append(t_m)
                ms[form, "original"].append(t_orig)
                print(f"round {r} {form:12s} {k:30s} {x:.3f}x ({t_orig:.1f} / {t_m:.1f} ms)",
                      flush=True)
    BasicBlock.forward = FORMS["in place"]
    print(f"\nmedians over {a.rounds} rounds, batch {a.batch}, one thread")
    print("| model | FLOP ratio | speed-up out of place | in place | share out of place | "
          "in place | ms out of place | in place |")
    print("|---|---|---|---|---|---|---|---|")
    for k in list(pruned) + ["original"]:
        med = {f: statistics.median(ms[f, k]) for f in FORMS}
        if k == "original":
            print(f"| original | 1 | – | – | – | – | {med['out of place']:.1f} | "
                  f"{med['in place']:.1f} |")
            continue
        x = {f: statistics.median(got[f, k]) for f in FORMS}
        print(f"| {k} | {ratio[k]:.2f} | {x['out of place']:.2f}x | {x['in place']:.2f}x | "
              f"{x['out of place'] / ratio[k]:.2f} | {x['in place'] / ratio[k]:.2f} | "
              f"{med['out of place']:.1f} | {med['in place']:.1f} |")


if __name__ == "__main__":
    main()
