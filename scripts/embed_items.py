"""Embed every catalog item's text once and save the vectors for `embedding: file`.

    python scripts/embed_items.py --data-dir data_prepared --dataset amazon_beauty \
        --out item_vectors.npy [--encoder-path HF_BERT_FOLDER]

Row i is catalog item i (title + categories, mean-pooled; default encoder: the bundled
all-MiniLM-L6-v2). Point a semantic_id index at the file with
`data.index_options={..., embedding: file, embeddings_path: item_vectors.npy}` — useful on
machines without the encoder's weights (an accelerator host, a TPU VM).
"""

import argparse
import json
import time

import numpy as np

from recsys_jax.data.prepared import load_prepared
from recsys_jax.encoders.item_embeddings import item_embeddings


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", default="data_prepared")
    parser.add_argument("--dataset", default="amazon_beauty")
    parser.add_argument("--out", required=True)
    parser.add_argument("--encoder-path", default=None)
    args = parser.parse_args()
    start = time.perf_counter()
    catalog = load_prepared(args.data_dir, args.dataset).catalog
    vectors = item_embeddings(catalog, "encoder", encoder_path=args.encoder_path, progress=True)
    np.save(args.out, vectors.astype(np.float32))
    print(
        json.dumps(
            {
                "out": args.out,
                "items": int(vectors.shape[0]),
                "dim": int(vectors.shape[1]),
                "seconds": round(time.perf_counter() - start, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
