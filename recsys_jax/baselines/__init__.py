"""In-repo baselines on the same splits and evaluator as recsys_jax (docs/design.md, evaluation).

    python -m recsys_jax.baselines.popularity --data-dir DIR --dataset amazon_beauty
    python -m recsys_jax.baselines.sasrec --data-dir DIR --dataset amazon_beauty --epochs 30
    python -m recsys_jax.baselines.matrix_factorization --data-dir DIR --dataset movielens_100k

This module holds what the score-based baselines share: turning a scorer (histories -> scores
over the whole catalog) into the sequential full-ranking numbers ("history_excluded", the
headline, and "unfiltered") and the direct 1 + 99 numbers, and a description of the machine.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable, Sequence

import numpy as np

from recsys_jax.evaluation.metrics import (
    candidate_ranking,
    full_ranking_from_scores,
    ranking_metrics,
    ranking_rows,
    write_metrics,
    write_predictions,
)

# histories (list of int arrays, internal item ids) -> float scores [len(histories), num_items]
Scorer = Callable[[Sequence[np.ndarray]], np.ndarray]

SEQUENTIAL_KS = (5, 10)
RANKED_LIST_LENGTH = 20  # items written per case to predictions.jsonl


def evaluate_sequential(
    scorer: Scorer,
    histories: Sequence[np.ndarray],
    targets: np.ndarray,
    *,
    batch_size: int = 1024,
    list_length: int = RANKED_LIST_LENGTH,
    ks: Sequence[int] = SEQUENTIAL_KS,
    unfiltered: bool = True,
) -> dict:
    """Full ranking over every catalog item. Returns {"history_excluded": metrics,
    "unfiltered": metrics, "ranked_history_excluded": int [U, L], "ranked_unfiltered":
    int [U, L]} (ranked lists are internal item ids, -1 padded); the unfiltered entries are
    None when `unfiltered` is False (a faster pass, e.g. for per-epoch validation)."""
    length = max(max(ks), list_length)
    excl, unf = [], []
    for start in range(0, len(histories), batch_size):
        hist = histories[start : start + batch_size]
        scores = np.asarray(scorer(hist))
        excl.append(full_ranking_from_scores(scores, length, exclude=hist))
        if unfiltered:
            unf.append(full_ranking_from_scores(scores, length))
    empty = np.zeros((0, length), np.int64)
    excl = np.concatenate(excl) if excl else empty
    unf = (np.concatenate(unf) if unf else empty) if unfiltered else None
    return {
        "history_excluded": ranking_metrics(targets, excl, ks),
        "unfiltered": ranking_metrics(targets, unf, ks) if unfiltered else None,
        "ranked_history_excluded": excl,
        "ranked_unfiltered": unf,
    }


def evaluate_direct(
    scorer: Scorer,
    histories: Sequence[np.ndarray],
    targets: np.ndarray,
    negatives: np.ndarray,
    *,
    batch_size: int = 1024,
) -> dict:
    """Sampled ranking of the target among its fixed negatives (1 + 99): HR@1/5/10 and
    NDCG@5/10. Ties are broken by item index, never in the target's favour by position.
    Returns {"metrics": ..., "ranked": int [U, 1 + num_negatives]}."""
    candidates = np.concatenate([np.asarray(targets)[:, None], np.asarray(negatives)], axis=1)
    ranked = []
    for start in range(0, len(histories), batch_size):
        scores = np.asarray(scorer(histories[start : start + batch_size]))
        cand = candidates[start : start + batch_size]
        ranked.append(candidate_ranking(cand, np.take_along_axis(scores, cand, axis=1)))
    ranked = np.concatenate(ranked) if ranked else np.zeros((0, candidates.shape[1]), np.int64)
    return {"metrics": ranking_metrics(targets, ranked, (5, 10), hr_at_1=True), "ranked": ranked}


def write_outputs(out_dir, data, cases, seq: dict, direct: dict | None, metrics: dict) -> None:
    """metrics.json plus predictions.jsonl (history excluded), predictions_unfiltered.jsonl and
    predictions_direct.jsonl, in dataset ids."""
    from pathlib import Path

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ids = (data.user_ids, data.catalog.item_ids, cases.users, cases.targets)
    write_predictions(
        out_dir / "predictions.jsonl", ranking_rows(*ids, seq["ranked_history_excluded"])
    )
    write_predictions(
        out_dir / "predictions_unfiltered.jsonl", ranking_rows(*ids, seq["ranked_unfiltered"])
    )
    if direct:
        write_predictions(
            out_dir / "predictions_direct.jsonl", ranking_rows(*ids, direct["ranked"])
        )
    write_metrics(out_dir / "metrics.json", metrics)


def baseline_parser(module: str, doc: str):
    """The arguments every baseline CLI takes: --data-dir, --dataset, --out."""
    import argparse

    p = argparse.ArgumentParser(
        prog=f"python -m recsys_jax.baselines.{module}", description=doc.split("\n\n")[0]
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="prepared data folder (default $RECSYS_JAX_DATA_DIR or ./data_prepared)",
    )
    p.add_argument("--dataset", required=True)
    p.add_argument("--out", default=None, help="folder for metrics.json and predictions.jsonl")
    return p


def command_line(module: str, argv) -> str:
    """The command that produced a result, recorded in metrics.json."""
    import sys

    return f"python -m recsys_jax.baselines.{module} " + " ".join(
        sys.argv[1:] if argv is None else list(argv)
    )


def machine_info() -> dict:
    """Where a number was measured: host CPU, core count, JAX backend and devices."""
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "processor": _cpu_model(),
    }
    try:
        import jax

        info.update(
            {
                "jax": jax.__version__,
                "backend": jax.default_backend(),
                "devices": [str(d.device_kind) for d in jax.devices()],
            }
        )
    except Exception:  # jax is optional for the popularity baseline's description
        pass
    return info


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None
