"""SASRec (Kang & McAuley, 2018) in Flax NNX, trained with cross-entropy over all items.

    python -m recsys_jax.baselines.sasrec --data-dir DIR --dataset amazon_beauty --epochs 30 \
        [--out DIR] [--seed 0]

Model (`sasrec_model.py`, RecBole's layout): item embedding (id 0 = padding, item i -> i + 1) +
learned absolute positions (0 = oldest item of the window) -> LayerNorm -> dropout -> `num_layers`
post-LN Transformer blocks (causal multi-head self-attention, GELU feed-forward), and the score of
item i at a position is the dot product of the hidden state with item i's (tied) embedding.

Loss, stated: at every position t of a training window, softmax cross-entropy over the full
catalog (all `num_items` items, padding excluded) of the true next item s[t+1], averaged over
all real positions in the batch. A user's training sequence (leave-one-out training part:
never the validation or test item) of length n gives the n - 1 next-item targets; sequences
longer than `max_len` + 1 are cut, from the end, into windows of at most `max_len` inputs so
every target is used once per epoch (targets early in a later window see a shorter context).
This is the same set of (prefix -> next item) examples RecBole's CE SASRec trains on, with one
batch row per window instead of per prefix. Adam, no weight decay.

Protocol (docs/design.md: leakage rules, evaluation): the epoch is chosen by validation NDCG@10
(history = training part, target = validation item, full ranking with the history excluded); test
uses history = training part + validation item and reports full ranking with the history excluded
(headline) and unfiltered, plus direct 1 + 99 over the fixed negatives.

Static shapes: training windows are grouped into a few length buckets (`length_buckets` plus
`max_len`) and every batch is padded to `batch_size` rows, so the jitted step compiles once per
bucket; evaluation always runs [eval_batch, max_len].
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
from flax import nnx

from recsys_jax.baselines import (
    baseline_parser,
    command_line,
    evaluate_direct,
    evaluate_sequential,
    machine_info,
    write_outputs,
)
from recsys_jax.baselines.sasrec_data import (
    bucket_lengths,
    history_tokens,
    make_batches,
    num_batches,
    training_windows,
)
from recsys_jax.baselines.sasrec_model import SASRec, SASRecConfig
from recsys_jax.cli import report_error

LOSS_DESCRIPTION = (
    "softmax cross-entropy over all catalog items of the next item, at every "
    "position of the training windows, mean over real positions"
)


@dataclasses.dataclass
class TrainConfig:
    epochs: int = 30
    # rows (training windows) per step. RecBole's batch 256 counts (prefix -> next item)
    # samples; one row here carries all of a window's next-item targets (about 5.9 on Beauty),
    # so 64 rows ~ 380 targets per step and ~350 updates per epoch (RecBole: 513).
    batch_size: int = 64
    learning_rate: float = 1e-3
    patience: int = 10  # stop after this many epochs without a better validation NDCG@10
    eval_batch: int = 1024
    length_buckets: tuple[int, ...] = (8, 16, 32)
    seed: int = 0


# -- training ----------------------------------------------------------------------------------


def init_params(cfg: SASRecConfig, seed: int):
    """(graphdef, params) of a fresh SASRec, initialised the way RecBole's `_init_weights`
    does it: every kernel and embedding ~ Normal(0, init_std), biases 0, LayerNorm scales 1.
    Drawn with numpy on the host: no eager random ops or init compile (seconds on a CPU)."""
    abstract = nnx.eval_shape(lambda: SASRec(cfg, rngs=nnx.Rngs(params=0)))
    graphdef, shapes = nnx.split(abstract, nnx.Param)
    rng = np.random.default_rng(seed)

    def draw(path, param):
        name, shape = str(getattr(path[-1], "key", path[-1])), param.shape
        if name in ("kernel", "embedding"):
            value = rng.normal(0.0, cfg.init_std, shape)
        elif name in ("scale", "bias"):
            value = np.ones(shape) if name == "scale" else np.zeros(shape)
        else:
            raise ValueError(f"no init rule for parameter {jax.tree_util.keystr(path)}")
        return param.replace(jnp.asarray(value, param.dtype))

    params = jax.tree_util.tree_map_with_path(
        draw, shapes, is_leaf=lambda x: isinstance(x, nnx.Variable)
    )
    return graphdef, params


class Trainer:
    """Holds the split model, optimizer state and the two jitted functions."""

    def __init__(self, cfg: SASRecConfig, train_cfg: TrainConfig):
        self.cfg, self.train_cfg = cfg, train_cfg
        self.graphdef, self.params = init_params(cfg, train_cfg.seed)
        self.tx = optax.adam(train_cfg.learning_rate)
        self.opt_state = self.tx.init(self.params)
        # dropout keys: XLA's RngBitGenerator ("rbg") compiles much faster than threefry
        self.key = jax.random.key(train_cfg.seed + 1, impl="rbg")
        graphdef, tx = self.graphdef, self.tx

        def loss_fn(params, batch, key):
            model = nnx.merge(graphdef, params)
            hidden = model(batch["inputs"], deterministic=False, rngs=nnx.Rngs(dropout=key))
            logits = model.scores(hidden)
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
            mask = batch["mask"]
            return jnp.sum(ce * mask) / jnp.maximum(jnp.sum(mask), 1.0)

        def train_step(params, opt_state, batch, key):
            loss, grads = jax.value_and_grad(loss_fn)(params, batch, key)
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        def score(params, tokens, last):
            model = nnx.merge(graphdef, params)
            hidden = model(tokens, deterministic=True)
            newest = jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]
            return model.scores(newest)

        self._train_step = jax.jit(train_step)
        self._score = jax.jit(score)

    @property
    def model(self) -> SASRec:
        return nnx.merge(self.graphdef, self.params)

    def step(self, batch: dict) -> float:
        self.key, sub = jax.random.split(self.key)
        self.params, self.opt_state, loss = self._train_step(
            self.params, self.opt_state, batch, sub
        )
        return loss

    def scorer(self, params=None):
        """histories -> scores [len, num_items] (numpy float32). Histories are grouped by
        length bucket (the last max_len items; right padding and the causal mask make a
        shorter token window exact) and run in fixed [eval_batch, bucket] calls."""
        params = self.params if params is None else params
        rows, max_len = self.train_cfg.eval_batch, self.cfg.max_len
        sizes = bucket_lengths(max_len, self.train_cfg.length_buckets)

        def run(histories):
            out = np.zeros((len(histories), self.cfg.num_items), np.float32)
            lengths = np.array([min(len(h), max_len) for h in histories], np.int64)
            bucket_of = np.searchsorted(np.asarray(sizes), lengths)
            for b, size in enumerate(sizes):
                members = np.flatnonzero(bucket_of == b)
                for s in range(0, len(members), rows):
                    chunk = members[s : s + rows]
                    tokens, last = history_tokens([histories[i] for i in chunk], size, rows)
                    out[chunk] = np.asarray(self._score(params, tokens, last))[: len(chunk)]
            return out

        return run


def train(
    data,
    cfg: SASRecConfig,
    train_cfg: TrainConfig,
    *,
    progress: bool = True,
    log_path: Path | None = None,
    log=print,
) -> dict:
    """Train on the training sequences, select the epoch by validation NDCG@10 (history
    excluded). Returns {"trainer", "best_params", "best_epoch", "history", ...}."""
    from tqdm import tqdm

    windows = training_windows(data.train_sequences(), cfg.max_len)
    steps_per_epoch = num_batches(
        windows, cfg.max_len, train_cfg.batch_size, train_cfg.length_buckets
    )
    trainer = Trainer(cfg, train_cfg)
    rng = np.random.default_rng(train_cfg.seed)
    valid = data.validation_cases()
    best = {"ndcg": -1.0, "epoch": 0, "params": None, "metrics": None}
    history, train_seconds, since_best = [], 0.0, 0
    bar = tqdm(
        total=train_cfg.epochs * steps_per_epoch,
        disable=not progress,
        desc="sasrec",
        unit="step",
        mininterval=2.0,
        dynamic_ncols=True,
    )
    for epoch in range(1, train_cfg.epochs + 1):
        start = time.perf_counter()
        losses = []
        for batch in make_batches(
            windows, cfg, train_cfg.batch_size, train_cfg.length_buckets, rng
        ):
            losses.append(trainer.step(batch))
            bar.update(1)
        mean_loss = float(np.mean(jax.device_get(losses))) if losses else float("nan")
        epoch_seconds = time.perf_counter() - start
        train_seconds += epoch_seconds
        start = time.perf_counter()
        val = evaluate_sequential(
            trainer.scorer(),
            valid.histories,
            valid.targets,
            batch_size=4 * train_cfg.eval_batch,
            unfiltered=False,
        )
        val_metrics = val["history_excluded"]
        record = {
            "epoch": epoch,
            "loss": round(mean_loss, 5),
            "valid_HR@10": round(val_metrics["HR@10"], 5),
            "valid_NDCG@10": round(val_metrics["NDCG@10"], 5),
            "train_seconds": round(epoch_seconds, 1),
            "valid_seconds": round(time.perf_counter() - start, 1),
        }
        history.append(record)
        if val_metrics["NDCG@10"] > best["ndcg"]:
            best = {
                "ndcg": val_metrics["NDCG@10"],
                "epoch": epoch,
                "metrics": val_metrics,
                "params": jax.tree.map(np.array, trainer.params),
            }
            since_best = 0
        else:
            since_best += 1
        bar.set_postfix(
            loss=f"{mean_loss:.3f}", val_ndcg10=f"{val_metrics['NDCG@10']:.4f}", best=best["epoch"]
        )
        (bar.write if progress else log)(json.dumps(record))
        if log_path is not None:
            with open(log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        if train_cfg.patience and since_best >= train_cfg.patience:
            (bar.write if progress else log)(
                f"stopping: no better validation NDCG@10 for {since_best} epochs"
            )
            break
    bar.close()
    return {
        "trainer": trainer,
        "best_params": best["params"],
        "best_epoch": best["epoch"],
        "best_validation": best["metrics"],
        "history": history,
        "train_seconds": train_seconds,
        "steps_per_epoch": steps_per_epoch,
        "num_windows": len(windows),
    }


def evaluate_test(data, trainer: Trainer, params) -> dict:
    """Test full ranking (history = training part + validation item) and direct 1 + 99."""
    cases = data.test_cases()
    scorer = trainer.scorer(params)
    seq = evaluate_sequential(
        scorer, cases.histories, cases.targets, batch_size=4 * trainer.train_cfg.eval_batch
    )
    direct = None
    if cases.negatives is not None:
        direct = evaluate_direct(
            scorer,
            cases.histories,
            cases.targets,
            cases.negatives,
            batch_size=4 * trainer.train_cfg.eval_batch,
        )
    return {"cases": cases, "sequential": seq, "direct": direct}


def run(
    data,
    cfg: SASRecConfig,
    train_cfg: TrainConfig,
    out: str | None = None,
    progress: bool = True,
    command: str = "",
) -> dict:
    out_dir = Path(out) if out else None
    log_path = None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        log_path = out_dir / "training_log.jsonl"
        log_path.write_text("")
    start = time.perf_counter()
    result = train(data, cfg, train_cfg, progress=progress, log_path=log_path)
    test = evaluate_test(data, result["trainer"], result["best_params"])
    seq, direct = test["sequential"], test["direct"]
    metrics = {
        "model": "sasrec",
        "loss": LOSS_DESCRIPTION,
        "dataset": data.name,
        "split": "test",
        "num_items": data.num_items,
        "test": {"history_excluded": seq["history_excluded"], "unfiltered": seq["unfiltered"]},
        "direct": direct["metrics"] if direct else None,
        "best_epoch": result["best_epoch"],
        "epochs_run": len(result["history"]),
        "best_validation_history_excluded": result["best_validation"],
        "selection": "best epoch by validation NDCG@10, full ranking, history excluded",
        "training_seconds": round(result["train_seconds"], 1),
        "seconds_per_epoch": round(result["train_seconds"] / max(len(result["history"]), 1), 1),
        "total_seconds": round(time.perf_counter() - start, 1),
        "steps_per_epoch": result["steps_per_epoch"],
        "training_windows": result["num_windows"],
        "config": dataclasses.asdict(cfg),
        "train_config": dataclasses.asdict(train_cfg),
        "history": result["history"],
        "command": command,
        "machine": machine_info(),
    }
    if out_dir is not None:
        write_outputs(out_dir, data, test["cases"], seq, direct, metrics)
    return metrics


# -- command line ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = baseline_parser("sasrec", __doc__)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--batch-size",
        type=int,
        default=TrainConfig.batch_size,
        help="training windows (rows) per step; each row holds all next-item "
        "targets of one window (see TrainConfig)",
    )
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument(
        "--patience",
        type=int,
        default=10,
        help="early stop after this many epochs without improvement (0: never)",
    )
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=1)
    p.add_argument("--inner", type=int, default=256)
    p.add_argument("--dropout", type=float, default=0.5)
    p.add_argument("--attention-dropout", type=float, default=0.5)
    p.add_argument("--eval-batch", type=int, default=1024)
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from recsys_jax.data.prepared import load_prepared
    from recsys_jax.data.schema import DataError

    args = build_parser().parse_args(argv)
    command = command_line("sasrec", argv)
    try:
        data = load_prepared(args.data_dir, args.dataset)
    except DataError as e:
        return report_error(e)
    cfg = SASRecConfig(
        num_items=data.num_items,
        max_len=args.max_len,
        hidden=args.hidden,
        num_layers=args.layers,
        num_heads=args.heads,
        inner=args.inner,
        dropout=args.dropout,
        attention_dropout=args.attention_dropout,
    )
    train_cfg = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        patience=args.patience,
        eval_batch=args.eval_batch,
        seed=args.seed,
    )
    metrics = run(data, cfg, train_cfg, args.out, progress=not args.no_progress, command=command)
    print(json.dumps({k: v for k, v in metrics.items() if k != "history"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
