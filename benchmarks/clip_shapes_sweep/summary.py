"""Zero-shot top-1 by evaluated epoch of every run folder under a sweep's runs directory.

python benchmarks/clip_shapes_sweep/summary.py /tmp/clip_sweep/runs
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> None:
    runs = Path(sys.argv[1])
    for run in sorted(p for p in runs.iterdir() if p.is_dir()):
        logs = sorted(run.rglob("metrics.jsonl"))
        if not logs:
            print(f"{run.name:12s} no metrics")
            continue
        zs, recall, epochs, speed = [], [], [], []
        for line in logs[-1].read_text().splitlines():
            row = json.loads(line)
            if "train/images_per_s" in row:
                speed.append(row["train/images_per_s"])
            if "val/zeroshot_acc1" in row:
                zs.append(row["val/zeroshot_acc1"])
                recall.append(row.get("val/mean_recall", float("nan")))
                epochs.append(row.get("epoch"))
        if not zs:
            print(f"{run.name:12s} no evaluation yet")
            continue
        tail = speed[-5:]
        print(
            f"{run.name:12s} final zs {zs[-1]:.3f} mr {recall[-1]:.3f} epochs {epochs[-1]} "
            f"best {max(zs):.3f} img/s {sum(tail) / max(len(tail), 1):.0f}"
        )
        print("   zs:", " ".join(f"{z:.3f}" for z in zs))


if __name__ == "__main__":
    main()
