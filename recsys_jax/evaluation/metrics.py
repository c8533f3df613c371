"""Ranking and rating metrics, exactly as docs/design.md, evaluation defines them (pure numpy).

One relevant item per case. `rank` is the 1-based position of the target in the model's ranked
list; HR@k = [rank <= k]; NDCG@k = 1 / log2(rank + 1) if rank <= k else 0. Averages are over
ALL cases: a case whose ranked list is empty, or lacks the target, scores 0 — never dropped.

Duplicates rule: a ranked list is read as an ordered set. Only the first occurrence of an item
counts, and later duplicates take no position, so they never push the target down:
`rank_of(t, [a, a, t]) == 2`. Entries that are not real items (an unparsable generation, kept
by the caller as e.g. None or -1) are ordinary distinct entries: they occupy a position.

Rating rule: a prediction that is missing, not a number, or not finite (an unparsable
generation) is replaced by the caller's `fallback` value, and the number of such cases is
reported beside RMSE/MAE (`num_fallback`); nothing is dropped.

Files: `write_predictions` writes `predictions.jsonl` (one JSON object per case: ranking rows
`{"user", "target", "ranked"}` in dataset ids, rating rows `{"user", "item", "target",
"predicted"}`), `write_metrics` writes `metrics.json`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

PREDICTIONS_FILE = "predictions.jsonl"
METRICS_FILE = "metrics.json"


# -- ranking -----------------------------------------------------------------------------------


def _as_list(ranked) -> list:
    return ranked.tolist() if isinstance(ranked, np.ndarray) else list(ranked)


def _plain(x):
    return x.item() if isinstance(x, np.generic) else x


def rank_of(target, ranked) -> int | None:
    """1-based rank of `target` in `ranked`, counting only first occurrences of items (later
    duplicates take no position); None when the target is absent or the list is empty."""
    target = _plain(target)
    seen = set()
    position = 0
    for item in _as_list(ranked):
        try:
            key_new = item not in seen
        except TypeError:  # unhashable entry: an ordinary, distinct non-item
            key_new, item = True, object()
        if not key_new:
            continue
        seen.add(item)
        position += 1
        if item == target:
            return position
    return None


def hit_at_k(rank: int | None, k: int) -> float:
    """HR@k of one case: 1.0 if the target's rank is <= k, else 0.0 (also for rank None)."""
    return 1.0 if rank is not None and rank <= k else 0.0


def ndcg_at_k(rank: int | None, k: int) -> float:
    """NDCG@k of one case with one relevant item: 1/log2(rank+1) if rank <= k, else 0.0."""
    return 1.0 / math.log2(rank + 1) if rank is not None and rank <= k else 0.0


def ranking_metrics(
    targets: Sequence, ranked_lists: Sequence, ks: Sequence[int] = (5, 10), hr_at_1: bool = False
) -> dict:
    """Mean HR@k and NDCG@k over all cases (keys "HR@k", "NDCG@k"; "HR@1" if `hr_at_1`) and
    "num_cases". `ranked_lists[i]` may be any length, including empty (scores 0)."""
    targets = _as_list(targets)
    if len(targets) != len(ranked_lists):
        raise ValueError(f"{len(targets)} targets but {len(ranked_lists)} ranked lists")
    ranks = [rank_of(t, r) for t, r in zip(targets, ranked_lists)]
    n = len(ranks)
    mean = lambda values: float(sum(values) / n) if n else 0.0
    out: dict[str, Any] = {}
    if hr_at_1:
        out["HR@1"] = mean([hit_at_k(r, 1) for r in ranks])
    for k in ks:
        out[f"HR@{k}"] = mean([hit_at_k(r, k) for r in ranks])
        out[f"NDCG@{k}"] = mean([ndcg_at_k(r, k) for r in ranks])
    out["num_cases"] = n
    return out


def exclude_history(ranked, history) -> list:
    """`ranked` without the items of `history`, order kept (for the "history excluded"
    headline numbers: truncate to k after excluding, not before)."""
    banned = set(_as_list(history))
    return [item for item in _as_list(ranked) if item not in banned]


def full_ranking_from_scores(
    scores: np.ndarray, k: int, exclude: Sequence[np.ndarray] | None = None, chunk_rows: int = 64
) -> np.ndarray:
    """Top-k item indices per row of `scores` [U, N], best first -> int64 [U, min(k, N)].

    Excluded items (`exclude[u]`: item indices of row u) get -inf first and are never
    returned: a row with fewer than k allowed items is padded with -1. NaN scores count as
    -inf. Ties are broken by item index, lower first, so the result is deterministic.
    O(N) per row to find the candidates, then a sort of those (about k when scores differ).
    """
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be [users, items], got shape {scores.shape}")
    num_users, num_items = scores.shape
    if exclude is not None and len(exclude) != num_users:
        raise ValueError(f"{len(exclude)} exclusion lists for {num_users} rows")
    k = min(int(k), num_items)
    out = np.full((num_users, k), -1, np.int64)
    if k <= 0:
        return out
    groups = (np.arange(k) * num_items) // k  # k non-empty column groups
    for start in range(0, num_users, chunk_rows):
        block = np.array(scores[start : start + chunk_rows], dtype=np.float64)  # a copy
        block[np.isnan(block)] = -np.inf
        banned = np.zeros(block.shape, bool)
        if exclude is not None:
            for row, items in enumerate(exclude[start : start + chunk_rows]):
                items = np.asarray(items, np.int64)
                if items.size:
                    banned[row, items] = True
            block[banned] = -np.inf
        # The smallest of k group maxima is at most the row's k-th largest value, so every
        # top-k item scores at least that: only those candidates are sorted.
        floor = np.maximum.reduceat(block, groups, axis=1).min(axis=1, keepdims=True)
        rows, items = np.nonzero(block >= floor)
        score, ban = block[rows, items], banned[rows, items]
        order = np.lexsort((items, ban, -score, rows))  # score desc, allowed first, item asc
        rows, items, ban = rows[order], items[order], ban[order]
        counts = np.bincount(rows, minlength=block.shape[0])
        slot = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
        top = slot < k
        out[start + rows[top], slot[top]] = np.where(ban[top], -1, items[top])
    return out


def candidate_ranking(candidates: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Sampled ranking: reorder each row of `candidates` [U, C] (item indices) by `scores`
    [U, C], best first; ties broken by item index (lower first), never by candidate position,
    so placing the target first in the candidate list gives it no advantage."""
    candidates = np.asarray(candidates)
    scores = np.asarray(scores, np.float64).copy()
    if candidates.shape != scores.shape:
        raise ValueError(f"candidates {candidates.shape} and scores {scores.shape} differ")
    scores[np.isnan(scores)] = -np.inf
    order = np.lexsort((candidates, -scores), axis=-1)
    return np.take_along_axis(candidates, order, axis=-1)


# -- rating ------------------------------------------------------------------------------------


def parse_rating(value) -> float | None:
    """A finite float from a number or a string such as "4" / " 3.5 "; None otherwise."""
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def resolve_ratings(predictions: Iterable, fallback: float | None) -> tuple[np.ndarray, int]:
    """(float64 predictions with every unparsable one replaced by `fallback`, how many were
    replaced). Raises ValueError if something is unparsable and `fallback` is None."""
    values, fallbacks = [], 0
    for p in predictions:
        v = parse_rating(p)
        if v is None:
            if fallback is None:
                raise ValueError(f"unparsable rating prediction {p!r} and no fallback given")
            v, fallbacks = float(fallback), fallbacks + 1
        values.append(v)
    return np.asarray(values, np.float64), fallbacks


def _errors(targets, predictions, fallback) -> tuple[np.ndarray, int]:
    targets = np.asarray(targets, np.float64)
    preds, fallbacks = resolve_ratings(predictions, fallback)
    if preds.shape != targets.shape:
        raise ValueError(f"{len(preds)} predictions for {len(targets)} targets")
    if targets.size == 0:
        raise ValueError("no rating cases")
    return preds - targets, fallbacks


def rmse(targets, predictions, fallback: float | None = None) -> float:
    """Root mean squared error over all cases (unparsable predictions -> `fallback`)."""
    err, _ = _errors(targets, predictions, fallback)
    return float(np.sqrt(np.mean(err**2)))


def mae(targets, predictions, fallback: float | None = None) -> float:
    """Mean absolute error over all cases (unparsable predictions -> `fallback`)."""
    err, _ = _errors(targets, predictions, fallback)
    return float(np.mean(np.abs(err)))


def rating_metrics(targets, predictions, fallback: float | None = None) -> dict:
    """{"RMSE", "MAE", "num_cases", "num_fallback", "fallback"}: every case counts; each
    unparsable prediction is scored as `fallback` and counted in "num_fallback"."""
    err, fallbacks = _errors(targets, predictions, fallback)
    return {
        "RMSE": float(np.sqrt(np.mean(err**2))),
        "MAE": float(np.mean(np.abs(err))),
        "num_cases": int(err.size),
        "num_fallback": int(fallbacks),
        "fallback": None if fallback is None else float(fallback),
    }


# -- rows and files ----------------------------------------------------------------------------


def ranking_rows(
    user_ids: Sequence[str], item_ids: Sequence[str], users, targets, ranked_lists
) -> list[dict]:
    """Prediction rows in dataset ids from internal indices; -1 entries (padding) dropped."""
    rows = []
    for u, t, ranked in zip(_as_list(users), _as_list(targets), ranked_lists):
        rows.append(
            {
                "user": user_ids[u],
                "target": item_ids[t],
                "ranked": [item_ids[i] for i in _as_list(ranked) if i >= 0],
            }
        )
    return rows


def _json_default(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serializable: {type(x).__name__}")


def _target_path(path, default_name: str) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / default_name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_predictions(path: str | os.PathLike, rows: Iterable[dict]) -> Path:
    """One JSON object per line. `path` is the file, or a folder (-> folder/predictions.jsonl).
    Returns the file written."""
    path = _target_path(path, PREDICTIONS_FILE)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, default=_json_default) + "\n")
    return path


def write_metrics(path: str | os.PathLike, metrics: dict) -> Path:
    """Indented JSON. `path` is the file, or a folder (-> folder/metrics.json)."""
    path = _target_path(path, METRICS_FILE)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(metrics, f, indent=1, ensure_ascii=False, default=_json_default)
        f.write("\n")
    return path
