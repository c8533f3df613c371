"""Biased matrix factorisation for rating prediction (Koren et al., 2009).

    python -m recsys_jax.baselines.matrix_factorization --data-dir DIR \
        --dataset movielens_100k [--out DIR]

prediction(u, i) = mu + b_u + b_i + <p_u, q_i>, with mu the (fixed) mean training rating.
Loss, stated: mean over a mini-batch of (prediction - rating)^2 + l2 * (b_u^2 + b_i^2 +
|p_u|^2 + |q_i|^2) for the batch's rows (per-example L2, as in SGD-trained MF), minimised with
Adam on rating_train. Early stopping on rating_validation RMSE (the best epoch's parameters are
kept); the test split is evaluated once. Predictions are clipped to the training rating range.
Reports test RMSE/MAE beside the global-mean baseline (every prediction = mu). Writes
metrics.json and predictions.jsonl (`{"user", "item", "target", "predicted"}`, dataset ids).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from recsys_jax.baselines import baseline_parser, command_line, machine_info
from recsys_jax.cli import report_error
from recsys_jax.evaluation.metrics import rating_metrics, write_metrics, write_predictions

LOSS_DESCRIPTION = (
    "mean squared error + l2 * (b_u^2 + b_i^2 + |p_u|^2 + |q_i|^2) per example, "
    "Adam, early stopping on validation RMSE"
)


@dataclasses.dataclass
class MFConfig:
    dim: int = 32
    l2: float = 0.1
    learning_rate: float = 0.002
    batch_size: int = 512
    epochs: int = 200
    patience: int = 10
    init_std: float = 0.01
    seed: int = 0


def init_params(num_users: int, num_items: int, cfg: MFConfig) -> dict:
    rng = np.random.default_rng(cfg.seed)
    normal = lambda n: jnp.asarray(rng.normal(0.0, cfg.init_std, (n, cfg.dim)), jnp.float32)
    return {
        "user_bias": jnp.zeros(num_users),
        "item_bias": jnp.zeros(num_items),
        "user": normal(num_users),
        "item": normal(num_items),
    }


def predict(params: dict, mu: float, users, items):
    return (
        mu
        + params["user_bias"][users]
        + params["item_bias"][items]
        + jnp.sum(params["user"][users] * params["item"][items], axis=-1)
    )


def make_epoch(mu: float, cfg: MFConfig, tx: optax.GradientTransformation):
    """A jitted epoch: `lax.scan` over [steps, batch] index rows (-1 = padding)."""

    def loss_fn(params, users, items, ratings, weight):
        pred = predict(params, mu, users, items)
        reg = (
            params["user_bias"][users] ** 2
            + params["item_bias"][items] ** 2
            + jnp.sum(params["user"][users] ** 2, -1)
            + jnp.sum(params["item"][items] ** 2, -1)
        )
        per_example = (pred - ratings) ** 2 + cfg.l2 * reg
        return jnp.sum(per_example * weight) / jnp.maximum(jnp.sum(weight), 1.0)

    @jax.jit
    def epoch(params, opt_state, users, items, ratings, order):
        def step(carry, rows):
            params, opt_state = carry
            weight = (rows >= 0).astype(jnp.float32)
            idx = jnp.maximum(rows, 0)
            loss, grads = jax.value_and_grad(loss_fn)(
                params, users[idx], items[idx], ratings[idx], weight
            )
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), order)
        return params, opt_state, jnp.mean(losses)

    return epoch


def train(
    train_rows: dict, valid_rows: dict, num_users: int, num_items: int, cfg: MFConfig, log=None
) -> dict:
    """Fit on `train_rows`, keep the parameters of the epoch with the best validation RMSE."""
    mu = float(np.mean(train_rows["rating"]))
    lo, hi = float(np.min(train_rows["rating"])), float(np.max(train_rows["rating"]))
    tx = optax.adam(cfg.learning_rate)
    params = init_params(num_users, num_items, cfg)
    opt_state = tx.init(params)
    epoch_fn = make_epoch(mu, cfg, tx)
    users = jnp.asarray(train_rows["user"], jnp.int32)
    items = jnp.asarray(train_rows["item"], jnp.int32)
    ratings = jnp.asarray(train_rows["rating"], jnp.float32)
    n = len(train_rows["rating"])
    steps = -(-n // cfg.batch_size)
    rng = np.random.default_rng(cfg.seed)
    best = {"rmse": float("inf"), "epoch": 0, "params": params}
    history, since_best = [], 0
    for epoch in range(1, cfg.epochs + 1):
        order = np.full(steps * cfg.batch_size, -1, np.int32)
        order[:n] = rng.permutation(n)
        params, opt_state, loss = epoch_fn(
            params,
            opt_state,
            users,
            items,
            ratings,
            jnp.asarray(order.reshape(steps, cfg.batch_size)),
        )
        pred = np.clip(
            np.asarray(predict(params, mu, valid_rows["user"], valid_rows["item"])), lo, hi
        )
        valid_rmse = float(np.sqrt(np.mean((pred - valid_rows["rating"]) ** 2)))
        history.append(
            {"epoch": epoch, "loss": round(float(loss), 5), "valid_RMSE": round(valid_rmse, 5)}
        )
        if log:
            log(json.dumps(history[-1]))
        if valid_rmse < best["rmse"]:
            best, since_best = {"rmse": valid_rmse, "epoch": epoch, "params": params}, 0
        else:
            since_best += 1
            if cfg.patience and since_best >= cfg.patience:
                break
    return {
        "params": best["params"],
        "best_epoch": best["epoch"],
        "valid_RMSE": best["rmse"],
        "mu": mu,
        "range": (lo, hi),
        "history": history,
    }


def run(data, cfg: MFConfig, out: str | None = None, command: str = "", log=None) -> dict:
    if not data.has_ratings:
        raise ValueError(f"dataset {data.name!r} has no ratings")
    start = time.perf_counter()
    tr, va, te = (data.rating_rows(s) for s in ("rating_train", "rating_validation", "rating_test"))
    result = train(tr, va, data.num_users, data.num_items, cfg, log=log)
    train_seconds = time.perf_counter() - start
    lo, hi = result["range"]
    pred = np.clip(
        np.asarray(predict(result["params"], result["mu"], te["user"], te["item"])), lo, hi
    )
    metrics = {
        "model": "biased_matrix_factorization",
        "loss": LOSS_DESCRIPTION,
        "dataset": data.name,
        "split": "rating_test",
        "test": rating_metrics(te["rating"], pred.tolist()),
        "global_mean_baseline": rating_metrics(te["rating"], [result["mu"]] * len(pred)),
        "best_epoch": result["best_epoch"],
        "epochs_run": len(result["history"]),
        "best_validation_RMSE": result["valid_RMSE"],
        "training_seconds": round(train_seconds, 2),
        "config": dataclasses.asdict(cfg),
        "history": result["history"],
        "command": command,
        "machine": machine_info(),
    }
    if out:
        out_dir = Path(out)
        out_dir.mkdir(parents=True, exist_ok=True)
        item_ids, user_ids = data.catalog.item_ids, data.user_ids
        write_predictions(
            out_dir / "predictions.jsonl",
            (
                {
                    "user": user_ids[u],
                    "item": item_ids[i],
                    "target": float(r),
                    "predicted": float(p),
                }
                for u, i, r, p in zip(te["user"].tolist(), te["item"].tolist(), te["rating"], pred)
            ),
        )
        write_metrics(out_dir / "metrics.json", metrics)
    return metrics


def build_parser() -> argparse.ArgumentParser:
    d = MFConfig()
    p = baseline_parser("matrix_factorization", __doc__)
    p.add_argument("--dim", type=int, default=d.dim)
    p.add_argument("--l2", type=float, default=d.l2)
    p.add_argument("--lr", type=float, default=d.learning_rate)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--patience", type=int, default=d.patience)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--verbose", action="store_true", help="print every epoch")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from recsys_jax.data.prepared import load_prepared
    from recsys_jax.data.schema import DataError

    args = build_parser().parse_args(argv)
    command = command_line("matrix_factorization", argv)
    cfg = MFConfig(
        dim=args.dim,
        l2=args.l2,
        learning_rate=args.lr,
        batch_size=args.batch_size,
        epochs=args.epochs,
        patience=args.patience,
        seed=args.seed,
    )
    try:
        data = load_prepared(args.data_dir, args.dataset)
        metrics = run(
            data,
            cfg,
            args.out,
            command=command,
            log=(lambda m: print(m, file=sys.stderr)) if args.verbose else None,
        )
    except (DataError, ValueError) as e:
        return report_error(e)
    print(json.dumps({k: v for k, v in metrics.items() if k != "history"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
