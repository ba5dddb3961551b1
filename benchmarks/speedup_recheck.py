"""Re-time a finished ``--speedup`` run's fused model beside the same widths built anew
(BENCHMARKS.md section 22): is the model a run checks slower than the widths it searched?

Rebuilds the run's blended network from its last checkpoint and fuses it as the run did
(the in-memory model the run's final check timed), then times it, the run's ``pruned.pt``,
the registry class and the fx graph of the same widths built fresh (random weights)
against the original, two rounds, in this process (not the one that trained):

    OMP_NUM_THREADS=1 python benchmarks/speedup_recheck.py RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import yaml

from alphaprune.blend import BlendedNet, fuse
from alphaprune.blend.fuse import fused_architecture
from alphaprune.modelfile import load_checkpoint
from alphaprune.prune import _config_from_dict, _load, planned
from alphaprune.speedup import measured_speedup


def recheck(run: Path) -> None:
    """Print one line per model and round: speed-up, original ms, model ms."""
    cfg = _config_from_dict(yaml.safe_load((run / "config.yaml").read_text())["prune"])
    src = _load(cfg)
    cfg, plan = planned(cfg, src)  # the recorded widths: nothing is searched again
    blended = BlendedNet(plan.structure, plan.widths, train_original=cfg.train_original,
                         handover=cfg.handover)
    state = torch.load(run / "checkpoints/last.ckpt", weights_only=True)["state_dict"]
    blended.load_state_dict({k[len("model."):]: v for k, v in state.items()
                             if k.startswith("model.")})
    blended.set_alpha(0.0)
    models = {"fused as the run did": fuse(blended.eval(), src.mf.arch),
              "pruned.pt": load_checkpoint(run / "pruned.pt").model,
              "registry class, fresh": fused_architecture(plan.structure, plan.widths, src.mf.arch),
              "fx graph, fresh": fused_architecture(plan.structure, plan.widths)}
    original = load_checkpoint(cfg.checkpoint).model.eval()
    check = json.loads((run / "summary.json").read_text())["speedup"]
    print(f"{run}: the run's final check {check['achieved']:.3f}x", flush=True)
    for rnd in range(2):
        for name, m in models.items():
            r = measured_speedup(original, m.eval(), src.shape, cfg.latency_batch, pairs=30)
            print(f"  round {rnd} {name}: {r[0]:.3f}x, original {r[1]:.1f} ms, it {r[2]:.1f} ms",
                  flush=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    for arg in sys.argv[1:]:
        recheck(Path(arg))
