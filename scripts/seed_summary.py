"""Mean ± standard deviation of one evaluation entry over several runs (seeds).

    python scripts/seed_summary.py --entry sequential_items \
        runs/beauty_features_seed0/eval_test/metrics.json runs/beauty_features_seed1/...

Prints one JSON object: per metric of each group ("history_excluded", "unfiltered",
"candidates_1_plus_99") the per-run values, their mean, the sample standard deviation
(n - 1) and the standard error of the mean.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("metrics", nargs="+", help="metrics.json files written by evaluate")
    parser.add_argument("--entry", required=True, help="e.g. sequential_items")
    args = parser.parse_args()
    entries = [json.loads(Path(m).read_text())["families"][args.entry] for m in args.metrics]
    out = {"entry": args.entry, "runs": args.metrics, "n": len(entries)}
    for group in ("history_excluded", "unfiltered", "candidates_1_plus_99"):
        if group not in entries[0]:
            continue
        out[group] = {}
        for key in entries[0][group]:
            if key == "num_cases":
                continue
            values = np.array([e[group][key] for e in entries], float)
            std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            out[group][key] = {
                "values": values.round(5).tolist(),
                "mean": round(values.mean(), 5),
                "std": round(std, 5),
                "sem": round(std / np.sqrt(len(values)), 5),
            }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
