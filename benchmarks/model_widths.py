"""Each model file's conv widths, and the parts of every ``torch.split`` in its graph (the
parts a fused chunked layer is split into), one block per model; ``features.N`` is
shortened to ``fN`` and a trailing ``.conv`` dropped:

    python benchmarks/model_widths.py MODEL.pt [MODEL.pt ...]
"""

from __future__ import annotations

import sys

import torch

from alphaprune.modelfile import load_model


def main() -> None:
    for path in sys.argv[1:]:
        m = load_model(path)
        convs = [(n.replace("features.", "f").replace(".conv", ""), c.out_channels)
                 for n, c in m.named_modules() if isinstance(c, torch.nn.Conv2d)]
        graph = getattr(m, "graph", None)
        splits = [n.args[1] for n in graph.nodes if n.target is torch.split] if graph else []
        print(path)
        print("  convs:", " ".join(f"{n}={w}" for n, w in convs))
        print("  chunk parts:", splits)


if __name__ == "__main__":
    main()
