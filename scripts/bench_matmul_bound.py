"""The train step's matrix products timed one by one on their own: a floor under the step time.

    python scripts/bench_matmul_bound.py --config configs/beauty.yaml [key=value ...]
    python scripts/bench_matmul_bound.py --model small --batch 16 --seq-len 136 --vocab 32128

Same arguments as scripts/bench_train.py (same setup, same batch). Lists the matrix products of
one GLM training step at the batch's shape: per layer the four projections (query/key/value,
attention output, MLP in and out) and the two attention products, each forward and both
gradients; the tied output layer at the batch's scored positions (logits, hidden gradient,
table gradient); the item-feature projection when the model has one. Each distinct product is
jitted and timed alone (median of `--steps` after a warm-up) and the times are summed.

A train step does these products and more (softmax, LayerNorm, GeLU, dropout, the optimizer),
so on the same machine it cannot run faster than `matmul_s` without doing less work: compare
it with bench_train.py's `step_s`, and `forward_s` / `backward_s` (the products of each pass)
with bench_train.py's split, run in the same hour. Prints one JSON object.
"""

from __future__ import annotations

import collections
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_train  # noqa: E402  (the sibling script: its arguments and setups)

from recsys_jax.huge_pages import restart_with_huge_pages  # noqa: E402


def step_products(cfg, batch: int, length: int, scored: int) -> list[tuple[str, str, tuple, tuple]]:
    """(part, einsum, lhs shape, rhs shape) of every matrix product in one train step; a part
    ends in "forward" or "backward"."""
    t, d, ff, v = batch * length, cfg.hidden_size, cfg.ffn_dim, cfg.vocab_size
    bh, hd = batch * cfg.num_heads, cfg.head_dim
    products = []
    for _ in range(cfg.num_layers):
        for d_in, d_out in ((d, 3 * d), (d, d), (d, ff), (ff, d)):
            products += [
                ("layers forward", "ti,io->to", (t, d_in), (d_in, d_out)),
                ("layers backward", "to,io->ti", (t, d_out), (d_in, d_out)),  # input gradient
                ("layers backward", "ti,to->io", (t, d_in), (t, d_out)),  # weight gradient
            ]
        q, p = (bh, length, hd), (bh, length, length)  # per-head rows, attention weights
        products += [
            ("attention forward", "bqd,bkd->bqk", q, q),  # scores
            ("attention forward", "bqk,bkd->bqd", p, q),  # weighted values
            ("attention backward", "bqd,bkd->bqk", q, q),  # gradient of the weights
            ("attention backward", "bqk,bqd->bkd", p, q),  # gradient of the values
            ("attention backward", "bqk,bkd->bqd", p, q),  # gradient of the queries
            ("attention backward", "bqk,bqd->bkd", p, q),  # gradient of the keys
        ]
    products += [
        ("output layer forward", "rd,vd->rv", (scored, d), (v, d)),
        ("output layer backward", "rv,vd->rd", (scored, v), (v, d)),
        ("output layer backward", "rv,rd->vd", (scored, v), (scored, d)),
    ]
    if cfg.item_feature_dim:
        f = cfg.item_feature_dim
        products += [
            ("item features forward", "vf,fd->vd", (v, f), (f, d)),
            ("item features backward", "vf,vd->fd", (v, f), (v, d)),  # the projection's
        ]
    return products


def product_flops(equation: str, lhs: tuple, rhs: tuple) -> int:
    sizes = dict(zip(equation.split("->")[0].split(",")[0], lhs))
    sizes.update(zip(equation.split("->")[0].split(",")[1], rhs))
    return 2 * int(np.prod([sizes[c] for c in set(sizes)]))


def time_product(equation: str, lhs: tuple, rhs: tuple, dtype, steps: int) -> float:
    keys = jax.random.split(jax.random.key(0))
    a = jax.random.normal(keys[0], lhs, dtype)
    b = jax.random.normal(keys[1], rhs, dtype)
    fn = jax.jit(lambda a, b: jnp.einsum(equation, a, b))
    return bench_train.median_time(lambda: fn(a, b), steps)


def main():
    parser = bench_train.build_parser(__doc__.split("\n")[0])
    args = parser.parse_args()
    with bench_train.setup_for(args, parser) as s:
        cfg = nnx.merge(s.graphdef, s.state["params"], s.frozen).cfg
        batch, length = s.batch["tokens"].shape
        scored = int(np.sum(np.asarray(s.batch["loss_mask"]) > 0))
    dtype = jnp.dtype(cfg.compute_dtype)
    products = step_products(cfg, batch, length, scored)
    seconds, flops = collections.Counter(), collections.Counter()
    timed: dict[tuple, float] = {}
    for part, equation, lhs, rhs in products:
        key = (equation, lhs, rhs)
        if key not in timed:
            timed[key] = time_product(equation, lhs, rhs, dtype, args.steps)
        seconds[part] += timed[key]
        flops[part] += product_flops(equation, lhs, rhs)
    total_s, total_flops = sum(seconds.values()), sum(flops.values())
    print(
        json.dumps(
            {
                "setup": s.name,
                "device": jax.devices()[0].device_kind,
                "batch": batch,
                "seq_len": length,
                "scored_positions": scored,
                "products": len(products),
                "matmul_s": round(total_s, 4),
                "forward_s": round(sum(t for k, t in seconds.items() if "forward" in k), 4),
                "backward_s": round(sum(t for k, t in seconds.items() if "backward" in k), 4),
                "matmul_flops": total_flops,
                "matmul_flops_per_s": round(total_flops / total_s),
                "tokens_per_s_bound": round(batch * length / total_s, 1),
                "parts_s": {k: round(v, 4) for k, v in seconds.items()},
                "jax": jax.__version__,
            }
        )
    )


if __name__ == "__main__":
    restart_with_huge_pages()  # as training runs: recsys_jax/huge_pages.py
    main()
