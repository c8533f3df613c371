"""Biased MF on a tiny synthetic MovieLens-atomic rating set: it beats the global mean."""

import json

import numpy as np
import pytest

from recsys_jax.baselines import matrix_factorization as mf
from recsys_jax.data.prepare import prepare
from recsys_jax.data.prepared import load_prepared


def write_ratings(folder, num_users=40, num_items=24, per_user=14, seed=0):
    """Ratings driven by strong user and item effects, so biases alone explain most of them."""
    rng = np.random.default_rng(seed)
    user_effect = rng.normal(0, 0.9, num_users)
    item_effect = rng.normal(0, 0.9, num_items)
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    for u in range(num_users):
        for t, i in enumerate(rng.choice(num_items, per_user, replace=False)):
            r = np.clip(np.round(3.2 + user_effect[u] + item_effect[i] + rng.normal(0, 0.3)), 1, 5)
            lines.append(f"{u + 1}\t{i + 100}\t{r:.0f}\t{1000 + t}")
    (folder / "tiny.inter").write_text("\n".join(lines) + "\n")
    items = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"]
    items += [f"{i + 100}\tMovie {i}\t1995\tDrama" for i in range(num_items)]
    (folder / "tiny.item").write_text("\n".join(items) + "\n")
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("mf")
    folder = write_ratings(root / "ml_tiny")
    prepare(
        "movielens",
        str(folder),
        name="mltiny",
        data_dir=str(root / "prep"),
        num_negatives=5,
        progress=False,
        log=lambda m: None,
    )
    return load_prepared(root / "prep", "mltiny")


def test_mf_beats_global_mean(tiny, tmp_path):
    cfg = mf.MFConfig(dim=4, l2=0.01, learning_rate=0.05, batch_size=64, epochs=60, patience=10)
    m = mf.run(tiny, cfg, str(tmp_path / "out"))
    assert m["test"]["num_fallback"] == 0
    assert m["test"]["num_cases"] == len(tiny.rating_rows("rating_test")["rating"])
    assert m["test"]["RMSE"] < 0.85 * m["global_mean_baseline"]["RMSE"], m["test"]
    assert m["test"]["MAE"] < m["global_mean_baseline"]["MAE"]
    assert 1 <= m["best_epoch"] <= m["epochs_run"]
    rows = [
        json.loads(x) for x in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()
    ]
    assert set(rows[0]) == {"user", "item", "target", "predicted"}
    assert all(1.0 <= r["predicted"] <= 5.0 for r in rows)
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["test"] == m["test"]
