"""Tokens per item for every item index on a prepared dataset, and the tokenizer vocabulary.

    python scripts/index_stats.py [--data-dir data_prepared] [--dataset amazon_beauty]

Fits each index and its tokenizer on training data only (as a training run does), checks that
every item round-trips (item -> text -> tokens -> text -> item), and prints one JSON object.
"""

import argparse
import json
import time

import numpy as np

from recsys_jax.config import DataConfig
from recsys_jax.tokenizer import entity_token_ids
from recsys_jax.training.assets import fit_assets, open_prepared


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default="data_prepared")
    parser.add_argument("--dataset", default="amazon_beauty")
    parser.add_argument("--format", default="embedded")
    parser.add_argument("--path", default=None)
    parser.add_argument("--vocab-size", type=int, default=8000)
    args = parser.parse_args()
    out = {"dataset": args.dataset, "indices": {}}
    for kind in ("title", "random_id", "item_token", "semantic_id"):
        cfg = DataConfig(dataset=args.dataset, format=args.format, path=args.path,
                         data_dir=args.data_dir, index=kind, vocab_size=args.vocab_size)
        prepared = open_prepared(cfg, log=lambda m: None)
        start = time.perf_counter()
        assets = fit_assets(prepared, cfg, log=lambda m: None)
        seconds = time.perf_counter() - start
        tok, index = assets.tokenizer, assets.index
        pool = entity_token_ids(tok, index)
        lengths = np.array([len(p) for p in pool])
        round_trip = all(index.item_of(tok.decode(p)) == i for i, p in enumerate(pool))
        out["indices"][kind] = {
            "tokens_per_item_mean": round(float(lengths.mean()), 2),
            "tokens_per_item_max": int(lengths.max()),
            "distinct_token_sequences": len(set(pool)), "items": len(pool),
            "round_trip_all_items": bool(round_trip),
            "vocab_size": tok.vocab_size, "sentencepiece_pieces": tok.sp_size,
            "added_tokens": len(tok.added_tokens), "fit_seconds": round(seconds, 1)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
