"""Input-pipeline throughput of a training config: how fast batches are built, without the model.

    python scripts/bench_input.py [CONFIG] [key=value ...] [--records 2000] [--batches 50]

Builds the trainer's data side for the config (assets, prompt mixture, masking, packing) in a
temporary run folder and times three things on the host:
  transform — prepared record -> prompt with sampled spans (examples/s, mean tokens once masked);
  collate   — examples -> one laid-out, packed/padded [batch, seq_len] batch (batches/s);
  pipeline  — `next()` on the trainer's real Grain iterator, `data.workers` included (batches/s).
Compare `pipeline_s_per_batch` with the train step time (`scripts/bench_train.py` or the
trainer's tokens/s): when it is close, training is input-bound. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

import numpy as np

from recsys_jax.config import load_config
from recsys_jax.training.trainer import Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config", nargs="?", help="YAML config (default: built-in defaults)")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    parser.add_argument("--records", type=int, default=2000, help="records to transform")
    parser.add_argument("--batches", type=int, default=50, help="batches to time per stage")
    args = parser.parse_args()
    config = args.config
    overrides = list(args.overrides)
    if config is not None and "=" in config:  # only overrides were given
        overrides, config = [config] + overrides, None
    with tempfile.TemporaryDirectory() as run_dir:
        cfg = load_config(config, overrides + [f"train.run_dir={run_dir}"])
        trainer = Trainer(cfg, log=lambda m: print(m, file=sys.stderr))
        batcher, source = trainer.batcher, trainer.source
        rng = np.random.default_rng(0)
        picks = rng.choice(len(source), size=min(args.records, len(source)), replace=False)
        records = [source[int(i)] for i in picks]

        start = time.perf_counter()
        examples = [batcher.transform(r, rng) for r in records]
        transform_s = time.perf_counter() - start

        per_batch = batcher.examples_per_batch([e.length for e in examples[:64]])
        groups = [examples[i : i + per_batch] for i in range(0, len(examples), per_batch)]
        groups = [g for g in groups if len(g) == per_batch][: args.batches] or [examples]
        start = time.perf_counter()
        for group in groups:
            batcher.collate(group)
        collate_s = (time.perf_counter() - start) / len(groups)

        next(trainer.train_iter)  # starts threads / worker processes
        start = time.perf_counter()
        for _ in range(args.batches):
            batch = next(trainer.train_iter)
        pipeline_s = (time.perf_counter() - start) / args.batches
        trainer.train_iter.close()
        fill = float(np.count_nonzero(batch["segment_ids"])) / batch["segment_ids"].size
        print(
            json.dumps(
                {
                    "dataset": cfg.data.dataset,
                    "index": cfg.data.index,
                    "batch_size": cfg.train.batch_size,
                    "seq_len": cfg.data.seq_len,
                    "pack": cfg.data.pack,
                    "workers": cfg.data.workers,
                    "extra_entity_mask_prob": cfg.masking.extra_entity_mask_prob,
                    "records": len(records),
                    "mean_example_tokens": round(float(np.mean([e.length for e in examples])), 1),
                    "transform_examples_per_s": round(len(records) / transform_s, 1),
                    "examples_per_batch": per_batch,
                    "collate_batches_per_s": round(1.0 / collate_s, 1),
                    "pipeline_s_per_batch": round(pipeline_s, 4),
                    "pipeline_batches_per_s": round(1.0 / pipeline_s, 2),
                    "batch_fill": round(fill, 3),
                }
            )
        )


if __name__ == "__main__":
    main()
