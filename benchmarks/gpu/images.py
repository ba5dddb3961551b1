"""Pack an ImageFolder's image files, bytes unchanged, into one .npz, and unpack it again.

The GPU machine gets only the repository's working tree and up to 64 MiB of carried files
(its README): CIFAR-10's 50,000 JPEGs hold 46 MB of bytes but take 197 MB on disk as
files, and the decoded cache is 154 MB. Packed, they travel, and unpacked they are the same
files (`diff -r` finds no difference).

    python benchmarks/gpu/images.py pack ../shared/datasets/cifar10/train .gpu/cifar10.npz
    python benchmarks/gpu/images.py unpack .gpu/cifar10.npz /tmp/cifar10/train
    diff -r ../shared/datasets/cifar10/train /tmp/cifar10/train
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np


def pack(src: Path, out: Path) -> None:
    """Every file of every class folder of ``src`` (sorted), as one byte blob with offsets."""
    names, blobs = [], []
    for c in sorted(e.name for e in os.scandir(src) if e.is_dir() and not e.name.startswith(".")):
        for f in sorted(e.name for e in os.scandir(src / c) if e.is_file()):
            names.append(f"{c}/{f}")
            blobs.append(np.frombuffer((src / c / f).read_bytes(), np.uint8))
    offsets = np.cumsum([0] + [len(b) for b in blobs], dtype=np.int64)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.npz")
    np.savez(tmp, blob=np.concatenate(blobs), offsets=offsets, names=np.array(json.dumps(names)))
    os.replace(tmp, out)
    print(f"packed {len(names)} files, {offsets[-1] / 1e6:.1f} MB, into {out}")


def unpack(packed: Path, dest: Path) -> None:
    """Write the files back under ``dest``; refuses a ``dest`` that already holds files."""
    if dest.exists() and any(dest.iterdir()):
        sys.exit(f"{dest} is not empty: unpack into a new folder")
    with np.load(packed, allow_pickle=False) as z:
        blob, offsets, names = z["blob"], z["offsets"], json.loads(str(z["names"]))
    for i, name in enumerate(names):
        p = dest / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(blob[offsets[i]:offsets[i + 1]].tobytes())
    print(f"unpacked {len(names)} files into {dest}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("verb", choices=["pack", "unpack"])
    ap.add_argument("src", type=Path)
    ap.add_argument("dest", type=Path)
    a = ap.parse_args()
    {"pack": pack, "unpack": unpack}[a.verb](a.src, a.dest)


if __name__ == "__main__":
    main()
