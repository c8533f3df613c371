"""Most-popular baseline: every user gets the catalog ordered by training interaction count.

Counts come from the training sequences only (leave-one-out training parts), so a user's
validation and test items are never counted; ties are broken by item index (lower first).

    python -m recsys_jax.baselines.popularity --data-dir DIR --dataset amazon_beauty \
        [--split test] [--out DIR]

Reports sequential full ranking (HR@5/10, NDCG@5/10; "history_excluded" = headline, and
"unfiltered") and, on the test split, direct 1 + 99 over the fixed negatives (HR@1/5/10,
NDCG@5/10). The validation split has no fixed negatives, so direct is evaluated on test only.
Writes metrics.json, predictions.jsonl (sequential, history excluded),
predictions_unfiltered.jsonl and predictions_direct.jsonl (test) into --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

import numpy as np

from recsys_jax.baselines import (
    baseline_parser,
    command_line,
    evaluate_direct,
    evaluate_sequential,
    machine_info,
    write_outputs,
)
from recsys_jax.cli import report_error


def item_counts(train_sequences: Sequence[np.ndarray], num_items: int) -> np.ndarray:
    """int64 [num_items]: how often each item occurs in the training sequences."""
    if not len(train_sequences):
        return np.zeros(num_items, np.int64)
    items = np.concatenate([np.asarray(s, np.int64) for s in train_sequences])
    return np.bincount(items, minlength=num_items).astype(np.int64)


def popularity_scorer(counts: np.ndarray):
    """A scorer that gives every history the same scores: the training counts."""
    scores = np.asarray(counts, np.float64)
    return lambda histories: np.broadcast_to(scores, (len(histories), scores.size))


def evaluate(data, split: str = "test", out: str | None = None, command: str = "") -> dict:
    """Evaluate most-popular on a prepared dataset's `split` ("test" or "validation")."""
    if split not in ("test", "validation"):
        raise ValueError(f"split must be 'test' or 'validation', got {split!r}")
    start = time.perf_counter()
    counts = item_counts(data.train_sequences(), data.num_items)
    scorer = popularity_scorer(counts)
    cases = data.test_cases() if split == "test" else data.validation_cases()
    seq = evaluate_sequential(scorer, cases.histories, cases.targets)
    direct = None
    if split == "test" and cases.negatives is not None:
        direct = evaluate_direct(scorer, cases.histories, cases.targets, cases.negatives)
    metrics = {
        "model": "most_popular",
        "dataset": data.name,
        "split": split,
        "num_items": data.num_items,
        "sequential": {
            "history_excluded": seq["history_excluded"],
            "unfiltered": seq["unfiltered"],
        },
        "direct": direct["metrics"] if direct else None,
        "notes": (
            "sequential = full ranking over all items; history_excluded (headline) "
            "removes the user's own history items before cutting at k. direct = target "
            "+ the fixed seeded negatives"
            + ("" if direct else " (test split only: none on validation)")
            + ". Counts from training sequences only; ties broken by item index."
        ),
        "training_interactions": int(counts.sum()),
        "seconds": round(time.perf_counter() - start, 2),
        "command": command,
        "machine": machine_info(),
    }
    if out:
        write_outputs(out, data, cases, seq, direct, metrics)
    return metrics


def build_parser() -> argparse.ArgumentParser:
    p = baseline_parser("popularity", __doc__)
    p.add_argument("--split", default="test", choices=("test", "validation"))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from recsys_jax.data.prepared import load_prepared
    from recsys_jax.data.schema import DataError

    args = build_parser().parse_args(argv)
    command = command_line("popularity", argv)
    try:
        data = load_prepared(args.data_dir, args.dataset)
        metrics = evaluate(data, args.split, args.out, command=command)
    except DataError as e:
        return report_error(e)
    print(json.dumps(metrics, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
