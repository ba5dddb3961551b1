"""The feature teacher's memory layout: the frozen pretrained network (``OriginalNet``) run
on a channels-last batch with its weights contiguous (as prune makes it)
against channels-last weights, and against the plain pretrained model (the logit
teacher without the feature term), with the student's training step beside them for scale
(BENCHMARKS.md section 42).

Each round times the three teachers' forwards (the order alternating between rounds) and
one training step of the student (forward and backward of the branched network at half
widths, channels-last, as prune trains it); medians over the rounds.

    OMP_NUM_THREADS=1 python benchmarks/teacher_layout.py /tmp/bench/resnet20_e30/model.pt --rounds 7
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch

from alphaprune.blend.blended import BlendedNet
from alphaprune.graph import find_units
from alphaprune.modelfile import load_checkpoint
from alphaprune.train.features import OriginalNet


def _ms(fn, reps: int) -> float:
    """Median milliseconds of ``reps`` calls of ``fn`` after one warm-up call."""
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--reps", type=int, default=5)
    a = p.parse_args()
    torch.manual_seed(0)
    model = load_checkpoint(a.checkpoint).model.eval()
    structure = find_units(model, torch.zeros(2, 3, 32, 32), streams=True)
    student = BlendedNet(structure, [max(1, u.width // 2) for u in structure.units],
                         handover="stochastic")
    student.set_alpha(0.0)
    teachers = {"contiguous": OriginalNet(student)}
    teachers["channels_last"] = copy.deepcopy(teachers["contiguous"]).to(
        memory_format=torch.channels_last)
    teachers["plain model"] = model  # the logit teacher without the feature term
    student = student.to(memory_format=torch.channels_last).train()
    x = torch.randn(a.batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (a.batch,))

    def step():
        student.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(student(x), y).backward()

    times = {k: [] for k in [*teachers, "student step"]}
    for r in range(a.rounds):
        order = list(teachers) if r % 2 == 0 else list(teachers)[::-1]
        with torch.no_grad():
            for k in order:
                times[k].append(_ms(lambda t=teachers[k]: t(x), a.reps))
        times["student step"].append(_ms(step, a.reps))
    med = {k: round(statistics.median(v), 2) for k, v in times.items()}
    print(json.dumps({"checkpoint": a.checkpoint, "batch": a.batch, "rounds": a.rounds,
                      "threads": torch.get_num_threads(), "median_ms": med,
                      "teacher_ratio_cl_over_contiguous":
                          round(med["channels_last"] / med["contiguous"], 3),
                      "teacher_ratio_original_net_over_plain":
                          round(med["contiguous"] / med["plain model"], 3)}))


if __name__ == "__main__":
    main()
