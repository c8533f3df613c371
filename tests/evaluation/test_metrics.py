"""Metrics against hand-computed cases (docs/design.md, evaluation)."""

import json
import math

import numpy as np
import pytest

from recsys_jax.evaluation import metrics as M


def test_rank_of_basic_and_absent():
    assert M.rank_of(7, [7, 1, 2]) == 1
    assert M.rank_of(2, [7, 1, 2]) == 3
    assert M.rank_of(9, [7, 1, 2]) is None
    assert M.rank_of(9, []) is None
    assert M.rank_of(np.int32(2), np.array([7, 1, 2])) == 3
    assert M.rank_of("B0001", ["A", "B0001"]) == 2


def test_rank_of_duplicates_take_no_position():
    # first occurrence counts; repeated items before the target do not push it down
    assert M.rank_of(3, [1, 1, 1, 3]) == 2
    assert M.rank_of(3, [1, 2, 1, 2, 3, 3]) == 3
    assert M.rank_of(1, [1, 1]) == 1
    # invalid outputs (None) are ordinary entries and do occupy positions
    assert M.rank_of(3, [None, 1, 3]) == 3


def test_hit_and_ndcg_per_case():
    assert M.hit_at_k(1, 1) == 1.0 and M.hit_at_k(2, 1) == 0.0
    assert M.hit_at_k(None, 10) == 0.0
    assert M.ndcg_at_k(1, 5) == 1.0
    assert M.ndcg_at_k(3, 5) == pytest.approx(0.5)  # 1/log2(4)
    assert M.ndcg_at_k(6, 5) == 0.0
    assert M.ndcg_at_k(None, 5) == 0.0
    assert M.ndcg_at_k(2, 10) == pytest.approx(1 / math.log2(3))


def test_ranking_metrics_averages_over_all_cases():
    targets = [1, 2, 3, 4]
    ranked = [
        [1, 9, 8],  # rank 1
        [9, 9, 2],  # duplicates: rank 2
        [],  # no valid output: 0, still counted
        [5, 6, 7, 8, 9, 4],
    ]  # rank 6: outside @5, inside @10
    m = M.ranking_metrics(targets, ranked, ks=(5, 10), hr_at_1=True)
    assert m["num_cases"] == 4
    assert m["HR@1"] == pytest.approx(1 / 4)
    assert m["HR@5"] == pytest.approx(2 / 4)
    assert m["HR@10"] == pytest.approx(3 / 4)
    assert m["NDCG@5"] == pytest.approx((1 + 1 / math.log2(3)) / 4)
    assert m["NDCG@10"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(7)) / 4)
    assert list(m) == ["HR@1", "HR@5", "NDCG@5", "HR@10", "NDCG@10", "num_cases"]


def test_k_larger_than_list_and_length_mismatch():
    m = M.ranking_metrics([3], [[1, 3]], ks=(50,))
    assert m["HR@50"] == 1.0 and m["NDCG@50"] == pytest.approx(1 / math.log2(3))
    with pytest.raises(ValueError):
        M.ranking_metrics([1, 2], [[1]])


def test_exclude_history_then_truncate():
    ranked = [5, 1, 6, 2, 7]
    assert M.exclude_history(ranked, [1, 2]) == [5, 6, 7]
    assert M.exclude_history(np.array(ranked), np.array([], np.int32)) == ranked
    # the target moves up once the user's history is removed
    assert M.rank_of(7, ranked) == 5
    assert M.rank_of(7, M.exclude_history(ranked, [1, 2])) == 3


def test_full_ranking_ties_broken_by_item_index():
    scores = np.array([[0.5, 0.9, 0.5, 0.9, 0.1], [1.0, 1.0, 1.0, 1.0, 1.0]], np.float32)
    top = M.full_ranking_from_scores(scores, 3)
    assert top.tolist() == [[1, 3, 0], [0, 1, 2]]
    # k larger than the catalog: the whole catalog, ordered
    assert M.full_ranking_from_scores(scores[:1], 10).tolist() == [[1, 3, 0, 2, 4]]


def test_full_ranking_exclusion_and_padding():
    scores = np.array([[0.5, 0.9, 0.5, 0.9, 0.1], [0.0, 0.1, 0.2, 0.3, 0.4]])
    top = M.full_ranking_from_scores(scores, 3, exclude=[np.array([1, 3]), np.array([], int)])
    assert top.tolist() == [[0, 2, 4], [4, 3, 2]]
    # fewer allowed items than k: padded with -1, excluded items never returned
    top = M.full_ranking_from_scores(scores[:1], 4, exclude=[np.array([0, 1, 2])])
    assert top.tolist() == [[3, 4, -1, -1]]
    # an allowed item scored -inf / NaN still ranks before any excluded item
    s = np.array([[-np.inf, np.nan, 1.0]])
    assert M.full_ranking_from_scores(s, 3, exclude=[np.array([0])]).tolist() == [[2, 1, -1]]


def test_full_ranking_matches_argsort_on_random_scores():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 20, size=(7, 40)).astype(np.float32)  # many ties
    top = M.full_ranking_from_scores(scores, 10, chunk_rows=3)
    for row in range(7):
        ref = sorted(range(40), key=lambda i: (-scores[row, i], i))[:10]
        assert top[row].tolist() == ref


def test_candidate_ranking_tie_break_is_not_candidate_position():
    cands = np.array([[9, 3, 5, 1]])  # target 9 first, as evaluators put it
    scores = np.array([[0.0, 0.0, 1.0, 0.0]])
    assert M.candidate_ranking(cands, scores).tolist() == [[5, 1, 3, 9]]


def test_rmse_mae_with_fallbacks():
    targets = [5, 3, 4, 1]
    preds = ["4", "garbage", 4.0, None]  # two unparsable -> fallback 3.0
    m = M.rating_metrics(targets, preds, fallback=3.0)
    err = np.array([4 - 5, 3 - 3, 4 - 4, 3 - 1], float)
    assert m["RMSE"] == pytest.approx(math.sqrt(np.mean(err**2)))  # sqrt(5/4)
    assert m["MAE"] == pytest.approx(0.75)  # (1+0+0+2)/4
    assert m["num_fallback"] == 2 and m["num_cases"] == 4 and m["fallback"] == 3.0
    assert M.rmse(targets, preds, fallback=3.0) == pytest.approx(math.sqrt(1.25))
    assert M.mae([1, 2], [2, 4]) == pytest.approx(1.5)
    assert M.parse_rating(" 3.5 ") == 3.5
    assert M.parse_rating("nan") is None and M.parse_rating(float("inf")) is None
    with pytest.raises(ValueError, match="no fallback"):
        M.rmse([1], ["x"])


def test_write_files(tmp_path):
    rows = M.ranking_rows(
        ["u1", "u2"],
        ["A", "B", "C"],
        np.array([0, 1]),
        np.array([2, 0]),
        np.array([[2, 1, -1], [1, 2, 0]]),
    )
    assert rows[0] == {"user": "u1", "target": "C", "ranked": ["C", "B"]}
    path = M.write_predictions(
        tmp_path, rows + [{"user": "u1", "item": "A", "target": np.float32(4), "predicted": 3.5}]
    )
    assert path.name == "predictions.jsonl"
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert lines[1]["ranked"] == ["B", "C", "A"] and lines[2]["target"] == 4.0
    mpath = M.write_metrics(tmp_path / "sub" / "m.json", {"HR@10": np.float64(0.5)})
    assert json.loads(mpath.read_text()) == {"HR@10": 0.5}
