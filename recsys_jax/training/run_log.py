"""Run metrics: one JSON object per line in `metrics.jsonl`, and a PNG of the loss curves.

Lines are standard JSON: a non-finite value (a diverged loss) is written as null, so any JSON
reader can load the file. A run killed mid-write can leave a torn last line; readers drop it.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import jax


def _finite(value):
    """`value` with NaN and +-inf floats replaced by None (JSON null), at any depth."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def read_records(path: str | Path, warn=None) -> list[dict]:
    """The records of a metrics.jsonl. A last line that does not parse (the process was killed
    while writing it) is dropped with a one-line warning; a bad line elsewhere is an error."""
    path = Path(path)
    if not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = []
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i < len(lines) - 1:
                raise ValueError(f"{path}: line {i + 1} is not JSON: {line[:80]!r}") from None
            warn = warn or (lambda msg: print(msg, file=sys.stderr, flush=True))
            warn(f"[log] warning: dropped a torn last line of {path} ({line[:40]!r}...)")
    return records


class RunLog:
    def __init__(self, run_dir: str | Path, resume_step: int = 0, warn=None):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step and self.path.exists():
            # A resumed run rewrites what came after its checkpoint, so the log has no repeats.
            kept = [r for r in read_records(self.path, warn) if r.get("step", 0) <= resume_step]
            self.path.write_text("".join(self._line(r) for r in kept))
        elif not resume_step:
            self.path.write_text("")

    @staticmethod
    def _line(record: dict) -> str:
        return json.dumps(_finite(record), sort_keys=True, allow_nan=False) + "\n"

    def write(self, record: dict) -> None:
        with self.path.open("a") as f:
            f.write(self._line(record))

    def records(self) -> list[dict]:
        return read_records(self.path)


class StepWindow:
    """The steps dispatched since the last logging step. Their metrics stay on the device until
    `flush` fetches the whole window at once (one host sync per window, not per step)."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.steps: list[tuple[int, dict, int]] = []  # (step, metrics on device, examples)
        self.tokens = 0
        self.input_seconds = 0.0
        self.start = time.perf_counter()

    def __len__(self) -> int:
        return len(self.steps)

    def add(self, step: int, metrics: dict, examples: int, tokens: int, input_seconds: float):
        self.steps.append((step, metrics, examples))
        self.tokens += tokens
        self.input_seconds += input_seconds

    def health(self) -> list[tuple[int, float, float]]:
        """(step, loss, grad_norm) of every step in the window, fetching only those scalars."""
        fetched = jax.device_get([(m["loss"], m["grad_norm"]) for _, m, _ in self.steps])
        return [(s, float(a), float(b)) for (s, _, _), (a, b) in zip(self.steps, fetched)]

    def flush(self) -> list[dict]:
        """One record per step (waits for the steps); the last one also carries the window's
        non-padding tokens per second and `input_share`, the share of the window spent waiting
        for batches (near 1 = input-bound). Starts a new window."""
        fetched = jax.device_get([m for _, m, _ in self.steps])
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        records = []
        for (step, _, examples), metrics in zip(self.steps, fetched):
            record = {k: float(v) for k, v in metrics.items()}
            record.update(step=step, examples=examples)
            records.append(record)
        records[-1]["tokens_per_s"] = self.tokens / elapsed
        records[-1]["input_share"] = min(1.0, self.input_seconds / elapsed)
        self.reset()
        return records


def train_seconds_so_far(records: list[dict]) -> float:
    """Training time an earlier (resumed) part of the run logged, so a resumed run's
    `train_seconds` go on counting from there instead of restarting at 0."""
    return max(
        (float(r["train_seconds"]) for r in records if r.get("train_seconds") is not None),
        default=0.0,
    )


def _points(records: list[dict], key: str) -> list[tuple]:
    """(step, value) of the records that carry a finite `key` (null: a non-finite value)."""
    return [
        (r["step"], r[key])
        for r in records
        if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])
    ]


def plot_losses(records: list[dict], out_path: str | Path) -> None:
    """Training and validation loss against step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = _points(records, "loss")
    valid = _points(records, "valid_loss")
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train), label="train loss", linewidth=1)
    if valid:
        ax.plot(*zip(*valid), "o-", label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats / target token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
