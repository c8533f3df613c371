"""Evaluation: the exact metrics of docs/design.md, evaluation and the files every evaluation
writes."""

from recsys_jax.evaluation.metrics import (
    METRICS_FILE,
    PREDICTIONS_FILE,
    candidate_ranking,
    exclude_history,
    full_ranking_from_scores,
    hit_at_k,
    mae,
    ndcg_at_k,
    parse_rating,
    rank_of,
    ranking_metrics,
    ranking_rows,
    rating_metrics,
    resolve_ratings,
    rmse,
    write_metrics,
    write_predictions,
)

__all__ = [
    "METRICS_FILE",
    "PREDICTIONS_FILE",
    "candidate_ranking",
    "exclude_history",
    "full_ranking_from_scores",
    "hit_at_k",
    "mae",
    "ndcg_at_k",
    "parse_rating",
    "rank_of",
    "ranking_metrics",
    "ranking_rows",
    "rating_metrics",
    "resolve_ratings",
    "rmse",
    "write_metrics",
    "write_predictions",
]
