"""What a finished run prints: how good the saved model is, next to most-popular, and the
commands that evaluate it and recommend with it."""

from __future__ import annotations

import shlex
from pathlib import Path

from recsys_jax.baselines import evaluate_sequential
from recsys_jax.baselines.popularity import item_counts, popularity_scorer
from recsys_jax.data.item_refs import ItemResolver
from recsys_jax.training.run_log import read_records


def best_validation(run_dir: Path, best_step: int | None) -> dict | None:
    """The validation record (with ranking metrics) of `best_step`, else the last one."""
    records = read_records(Path(run_dir) / "metrics.jsonl")
    # null: a non-finite value (a diverged run), never a model to report.
    ranked = [r for r in records if r.get("valid_NDCG@10") is not None]
    if not ranked:
        return None
    chosen = [r for r in ranked if r["step"] == best_step]
    return (chosen or ranked)[-1]


def popularity_validation(prepared, users: int) -> dict:
    """Most-popular (training counts) on the same validation cases the run ranked."""
    cases = prepared.validation_cases()
    n = len(cases) if users < 0 else min(users, len(cases))
    scorer = popularity_scorer(item_counts(prepared.train_sequences(), prepared.num_items))
    return evaluate_sequential(scorer, cases.histories[:n], cases.targets[:n], unfiltered=False)[
        "history_excluded"
    ]


def final_report(run_dir: Path, summary: dict, prepared, users: int) -> str:
    run_dir = Path(run_dir)
    step = summary.get("best_step")
    lines = []
    valid = best_validation(run_dir, step)
    if valid is not None:
        pop = popularity_validation(prepared, users)
        n = len(prepared.validation_cases()) if users < 0 else users
        lines += [
            f"validation, {n:,} users, full ranking with each user's history excluded:",
            f"  this model (step {valid['step']})  HR@10 {valid['valid_HR@10']:.4f}  "
            f"NDCG@10 {valid['valid_NDCG@10']:.4f}",
            f"  most popular           HR@10 {pop['HR@10']:.4f}  NDCG@10 {pop['NDCG@10']:.4f}",
        ]
    ckpt = run_dir / "checkpoints" / str(step) if step is not None else run_dir
    cases = prepared.validation_cases()
    items = ItemResolver(prepared.catalog)
    example = [items.display_id(i) for i in cases.histories[0][-3:]]
    lines += [
        "next:",
        f"  python -m recsys_jax.evaluate --checkpoint {shlex.quote(str(ckpt))}",
        f"  python -m recsys_jax.recommend --checkpoint {shlex.quote(str(run_dir))} --history "
        + " ".join(shlex.quote(x) for x in example),
    ]
    return "\n".join(lines)
