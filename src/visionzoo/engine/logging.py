"""Run logging: ``metrics.jsonl`` (one JSON object per row) and, when installed, TensorBoard."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a metrics.jsonl; a line cut short by a crash is ignored."""
    rows = []
    p = Path(path)
    if not p.exists():
        return rows
    for line in p.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


class MetricsLogger:
    """Appends rows to ``metrics.jsonl`` (flushed at once) and mirrors scalars to TensorBoard."""

    def __init__(
        self, run_dir: Path, *, tensorboard: bool = True, keep_until_step: int | None = None
    ):
        self.path = run_dir / "metrics.jsonl"
        if keep_until_step is not None:
            # Resuming: drop rows written after the checkpoint we resume from (and any line a
            # killed process left half-written), so the file reads as one uninterrupted run.
            kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= keep_until_step]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        self._file = self.path.open("a")
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
            except ImportError:  # tensorboard is optional
                self._tb = None

    def log(self, row: dict[str, Any]) -> None:
        clean = {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in row.items()
        }
        self._file.write(json.dumps(clean) + "\n")
        self._file.flush()
        if self._tb is not None:
            step = int(row.get("step", 0))
            for k, v in row.items():
                if "/" in k and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._tb.add_scalar(k, v, step)

    def rows(self) -> list[dict[str, Any]]:
        return read_metrics(self.path)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()
