"""Tokens per item for every item index on a prepared dataset, and the tokenizer vocabulary.

    python scripts/index_stats.py [--data-dir data_prepared] [--dataset amazon_beauty]
    python scripts/index_stats.py --kinds semantic_id --embeddings tfidf encoder \
        --semantic-options '{"method": "hierarchical", "codebook_size": 32}'

Fits each index and its tokenizer on training data only (as a training run does), checks that
every item round-trips (item -> text -> tokens -> text -> item), and prints one JSON object.
semantic_id is fit once per `--embeddings` entry (how item text is embedded: TF-IDF or the
pretrained encoder, `recsys_jax.encoders`) and also reports its collision statistics and the
seconds spent building item features (for the encoder: embedding every catalog item).
"""

import argparse
import json
import time

import numpy as np

from recsys_jax.config import DataConfig
from recsys_jax.indexing.semantic_id import EMBEDDINGS
from recsys_jax.run.assets import fit_assets, open_prepared
from recsys_jax.tokenizer import entity_token_ids

KINDS = ("title", "random_id", "item_token", "semantic_id")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default="data_prepared")
    parser.add_argument("--dataset", default="amazon_beauty")
    parser.add_argument("--format", default="embedded")
    parser.add_argument("--path", default=None)
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument(
        "--embeddings",
        nargs="+",
        default=["tfidf"],
        choices=EMBEDDINGS,
        help="semantic_id item text embeddings to compare",
    )
    parser.add_argument(
        "--semantic-options",
        type=json.loads,
        default={},
        help="JSON dict of semantic_id index options (as data.index_options)",
    )
    parser.add_argument(
        "--encoder-path",
        default=None,
        help="BERT folder for --embeddings encoder (default: bundled MiniLM)",
    )
    args = parser.parse_args()
    out = {"dataset": args.dataset, "indices": {}}
    runs = []
    for kind in args.kinds:
        if kind != "semantic_id":
            runs.append((kind, kind, {}))
            continue
        for embedding in args.embeddings:
            options = {**args.semantic_options, "embedding": embedding}
            if embedding == "encoder" and args.encoder_path:
                options["encoder_path"] = args.encoder_path
            name = kind if embedding == "tfidf" else f"{kind}[{embedding}]"
            runs.append((name, kind, options))
    for name, kind, options in runs:
        cfg = DataConfig(
            dataset=args.dataset,
            format=args.format,
            path=args.path,
            data_dir=args.data_dir,
            index=kind,
            vocab_size=args.vocab_size,
            index_options=options,
        )
        prepared = open_prepared(cfg, log=lambda m: None)
        start = time.perf_counter()
        assets = fit_assets(prepared, cfg, log=lambda m: None)
        seconds = time.perf_counter() - start
        tok, index = assets.tokenizer, assets.index
        pool = entity_token_ids(tok, index)
        lengths = np.array([len(p) for p in pool])
        round_trip = all(index.item_of(tok.decode(p)) == i for i, p in enumerate(pool))
        row = {
            "tokens_per_item_mean": round(float(lengths.mean()), 2),
            "tokens_per_item_max": int(lengths.max()),
            "distinct_token_sequences": len(set(pool)),
            "items": len(pool),
            "round_trip_all_items": bool(round_trip),
            "vocab_size": tok.vocab_size,
            "sentencepiece_pieces": tok.text_size,
            "added_tokens": len(tok.added_tokens),
            "fit_seconds": round(seconds, 1),
        }
        if kind == "semantic_id":
            row.update(
                options=index.options,
                collisions=index.stats,
                feature_seconds=round(index.feature_seconds, 1),
            )
        out["indices"][name] = row
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
