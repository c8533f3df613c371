"""Ranking metrics on cold test targets: items with at most N training interactions.

    python scripts/cold_items.py --data-dir data_prepared --dataset amazon_beauty --max-train 2 \
        runs/X/eval_test/predictions_sequential_2-3.jsonl runs/sasrec_beauty/predictions.jsonl

Reads prediction files in the evaluator's schema (`target` and `ranked` item ids per case) and
prints one JSON line per file: overall metrics, metrics on cases whose target occurs at most
`--max-train` times in the training sequences, and on the rest. Training counts come from the
leave-one-out training parts only (never validation/test).
"""

import argparse
import json
from pathlib import Path

import numpy as np

from recsys_jax.data.prepared import load_prepared
from recsys_jax.evaluation.metrics import ranking_metrics


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("predictions", nargs="+")
    parser.add_argument("--data-dir", default="data_prepared")
    parser.add_argument("--dataset", default="amazon_beauty")
    parser.add_argument("--max-train", type=int, default=2)
    args = parser.parse_args()
    data = load_prepared(args.data_dir, args.dataset)
    counts = np.bincount(np.concatenate(data.train_sequences()), minlength=data.num_items)
    count_of = dict(zip(data.catalog.item_ids, counts.tolist()))
    for path in args.predictions:
        rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line]
        unknown = {r["target"] for r in rows} - count_of.keys()
        if unknown:
            raise SystemExit(
                f"{path}: targets not in the {args.dataset} catalog, e.g. "
                f"{sorted(unknown)[:3]}; is --dataset right?"
            )
        cold = [count_of[r["target"]] <= args.max_train for r in rows]
        parts = {
            "all": rows,
            "cold": [r for r, c in zip(rows, cold) if c],
            "warm": [r for r, c in zip(rows, cold) if not c],
        }
        out = {"predictions": path, "max_train": args.max_train}
        for name, part in parts.items():
            out[name] = ranking_metrics([r["target"] for r in part], [r["ranked"] for r in part])
        print(json.dumps(out))


if __name__ == "__main__":
    main()
