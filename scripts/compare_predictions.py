"""Metrics of several predictions.jsonl files on the same first N cases (same test order).

    python scripts/compare_predictions.py --n 1000 runs/sasrec_beauty/predictions.jsonl ...

For quick comparisons on a subset when a full evaluation is too slow for the machine; the
numbers are labelled with N and are not the protocol's all-user numbers.
"""

import argparse
import json

from recsys_jax.evaluation.metrics import ranking_metrics


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("files", nargs="+")
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--hr1", action="store_true", help="also HR@1 (direct)")
    args = parser.parse_args()
    out = {"first_n_cases": args.n}
    users = None
    for path in args.files:
        rows = [json.loads(l) for l, _ in zip(open(path), range(args.n))]
        these = [r["user"] for r in rows]
        if users is not None and these != users:
            raise SystemExit(f"{path}: cases differ from the first file's (order or users)")
        users = these
        out[path] = ranking_metrics(
            [r["target"] for r in rows], [r["ranked"] for r in rows], hr_at_1=args.hr1
        )
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
