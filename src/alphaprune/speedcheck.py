"""The final check of a ``--speedup`` run, timed in a fresh process.

A run checks its fused model against the original at the end, side by side
(:func:`alphaprune.speedup.measured_speedup`). A user loads the model file anew in their own
process, so the check also loads both model files in a new Python process, with the run's
thread count, times them there and reports that; the timing inside the process that has
just trained is kept beside it. (In one run the in-process timing read 1.69x where the
same model measured 2.05-2.15x minutes later in another process; in a run with both
checks they read the same, 1.70x and 1.71x, seconds apart: BENCHMARKS.md section 22.)

    python -m alphaprune.speedcheck < request.json   # one JSON object in, one out
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

__all__ = ["fresh_process_speedup"]

TIMEOUT_S = 600


def fresh_process_speedup(original: dict, pruned: str, shape, batch: int, pairs: int) -> dict:
    """``{"achieved", "original_ms", "pruned_ms", "pid"}`` timed in a new process.

    ``original``: :func:`alphaprune.modelfile.load_checkpoint`'s arguments for the original
    (``path``, ``model``, ``model_kwargs``); ``pruned``: the fused model file.

    Raises:
        RuntimeError: the process failed or timed out (its last line of stderr is said).
    """
    request = {"original": original, "pruned": str(pruned), "shape": list(shape),
               "batch": batch, "pairs": pairs, "threads": torch.get_num_threads()}
    try:
        done = subprocess.run([sys.executable, "-m", "alphaprune.speedcheck"],
                              input=json.dumps(request), capture_output=True, text=True,
                              timeout=TIMEOUT_S, env={**os.environ, "PYTHONPATH": _import_path()})
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(f"the check did not finish in {TIMEOUT_S} s") from e
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"the check exited with {done.returncode}: {last}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _import_path() -> str:
    """This package's folder first, so the new process imports the same alphaprune."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.pathsep.join([here, *filter(None, [os.environ.get("PYTHONPATH")])])


def _main() -> None:
    from alphaprune.modelfile import load_checkpoint
    from alphaprune.speedup import measured_speedup

    r = json.loads(sys.stdin.read())
    torch.set_num_threads(r["threads"])
    o = r["original"]
    original = load_checkpoint(o["path"], o.get("model"), model_kwargs=o.get("model_kwargs")).model
    pruned = load_checkpoint(r["pruned"]).model
    achieved, before, after = measured_speedup(original.eval(), pruned.eval(), tuple(r["shape"]),
                                               r["batch"], pairs=r["pairs"])
    print(json.dumps({"achieved": achieved, "original_ms": before, "pruned_ms": after,
                      "pid": os.getpid()}))


if __name__ == "__main__":
    _main()
