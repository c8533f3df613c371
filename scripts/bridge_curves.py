"""Validation NDCG@10 against training minutes for several runs: one PNG and a JSON table.

    python scripts/bridge_curves.py --out docs/bridge_beauty.png --budget-minutes 30 \
        R0=runs/r0_sasrec R1=runs/beauty_r1_causal ...

A run is a recsys_jax run directory (`metrics.jsonl`: validation records with
`valid_NDCG@10` and `train_seconds`, training records with `examples`) or a SASRec baseline
output folder (`training_log.jsonl`: one record per epoch with its `train_seconds`). Minutes
count training only, never validation. Prints one JSON object per run: the best validation
NDCG@10 (and its HR@10) reached within the budget, when, and after how many training
examples (user sequences).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from recsys_jax.training.run_log import read_records


def glm_curve(run: Path) -> list[dict]:
    points, examples = [], 0
    # read_records drops a torn last line (a run killed while writing it).
    for r in read_records(run / "metrics.jsonl"):
        examples += int(r.get("examples") or 0)
        if r.get("valid_NDCG@10") is not None:  # null: a non-finite value
            points.append(
                {
                    "minutes": r["train_seconds"] / 60,
                    "step": r["step"],
                    "examples": examples,
                    "NDCG@10": r["valid_NDCG@10"],
                    "HR@10": r["valid_HR@10"],
                }
            )
    return points


def sasrec_curve(run: Path, users: int | None) -> list[dict]:
    points, seconds = [], 0.0
    for line in (run / "training_log.jsonl").read_text().splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        seconds += r["train_seconds"]
        points.append(
            {
                "minutes": seconds / 60,
                "epoch": r["epoch"],
                "examples": None if users is None else users * r["epoch"],
                "NDCG@10": r["valid_NDCG@10"],
                "HR@10": r["valid_HR@10"],
            }
        )
    return points


def curve(run: Path, users: int | None) -> list[dict]:
    if (run / "training_log.jsonl").exists():
        return sasrec_curve(run, users)
    return glm_curve(run)


def best_within(points: list[dict], minutes: float) -> dict | None:
    inside = [p for p in points if p["minutes"] <= minutes]
    return max(inside, key=lambda p: p["NDCG@10"]) if inside else None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", help="NAME=RUN_DIR")
    parser.add_argument("--out", required=True, help="PNG path")
    parser.add_argument("--budget-minutes", type=float, default=30.0)
    parser.add_argument(
        "--users-per-epoch",
        type=int,
        help="SASRec runs: training sequences per epoch (to count examples)",
    )
    parser.add_argument(
        "--x",
        choices=["minutes", "examples"],
        default="minutes",
        help="x axis: training minutes, or user sequences trained on",
    )
    parser.add_argument("--title", default="Validation NDCG@10 (full ranking, history excluded)")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for spec in args.runs:
        name, _, path = spec.partition("=")
        points = curve(Path(path), args.users_per_epoch)
        if not points:
            print(json.dumps({"rung": name, "run": path, "error": "no validation ranking"}))
            continue
        xs = [p[args.x] / (1 if args.x == "minutes" else 1000) for p in points]
        ax.plot(xs, [p["NDCG@10"] for p in points], "o-", markersize=3, label=name)
        best = best_within(points, args.budget_minutes)
        print(
            json.dumps(
                {
                    "rung": name,
                    "run": path,
                    "budget_minutes": args.budget_minutes,
                    "best": best,
                    "last": points[-1],
                    "max_NDCG@10_any_time": float(np.max([p["NDCG@10"] for p in points])),
                }
            )
        )
    if args.x == "minutes":
        ax.axvline(args.budget_minutes, color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("training minutes (2-core CPU, validation time excluded)")
    else:
        ax.set_xlabel("user sequences trained on (thousands)")
    ax.set_ylabel("validation NDCG@10")
    ax.set_title(args.title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)


if __name__ == "__main__":
    main()
