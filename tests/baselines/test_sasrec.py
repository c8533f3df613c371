"""SASRec on a tiny synthetic dataset: causality, windows, and that it learns a pattern."""

import json

import jax
import numpy as np
import pytest
from flax import nnx

from recsys_jax.baselines import popularity, sasrec
from recsys_jax.data.prepare import prepare
from recsys_jax.data.prepared import load_prepared

HEADER = "item_id\tasin\ttitle\tcategories_json\tidgenrec_text_id\ttitle_source"
NUM_ITEMS = 40


def write_successor_p5(folder, num_users=80, seed=0):
    """Each user's next item is the previous item + 1 (mod NUM_ITEMS), from a random start."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for u in range(1, num_users + 1):
        start = int(rng.integers(0, NUM_ITEMS))
        seq = [(start + k) % NUM_ITEMS + 1 for k in range(int(rng.integers(5, 9)))]
        lines.append(" ".join(map(str, [u] + seq)))
    (folder / "sequential_data.txt").write_text("\n".join(lines) + "\n")
    rows = [HEADER] + [
        f'{i}\tA{i:04d}\tItem {i}\t"[[""Beauty""]]"\t\ttoy' for i in range(1, NUM_ITEMS + 1)
    ]
    (folder / "items.tsv").write_text("\n".join(rows) + "\n")
    return folder


@pytest.fixture(scope="module")
def successor(tmp_path_factory):
    root = tmp_path_factory.mktemp("sasrec")
    folder = write_successor_p5(root / "src")
    prepare(
        "p5",
        str(folder),
        name="successor",
        data_dir=str(root / "prep"),
        num_negatives=20,
        progress=False,
        log=lambda m: None,
    )
    return load_prepared(root / "prep", "successor")


def small_config(num_items, **kw):
    base = dict(
        num_items=num_items,
        max_len=10,
        hidden=32,
        num_layers=1,
        num_heads=2,
        inner=64,
        dropout=0.1,
        attention_dropout=0.1,
    )
    base.update(kw)
    return sasrec.SASRecConfig(**base)


def test_causality_later_items_do_not_change_earlier_outputs():
    cfg = small_config(30, num_layers=2)
    graphdef, params = sasrec.init_params(cfg, seed=0)
    forward = jax.jit(lambda p, x: nnx.merge(graphdef, p)(x, deterministic=True))
    a = np.array(
        [
            [3, 7, 1, 9, 4, 0, 0, 0],
            [3, 7, 1, 12, 4, 0, 0, 0],  # the 4th item changed
            [3, 7, 1, 9, 4, 0, 5, 0],
        ]
    )  # an item after right padding
    h = np.asarray(forward(params, a))
    np.testing.assert_allclose(h[0, :3], h[1, :3], rtol=1e-5, atol=1e-6)
    assert not np.allclose(h[0, 3], h[1, 3])
    np.testing.assert_allclose(h[2, :5], h[0, :5], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_learns_successor_pattern_well_above_popularity(successor, tmp_path):
    data = successor
    cfg = small_config(data.num_items)
    # one length bucket (max_len) keeps this to a single train-step compile
    train_cfg = sasrec.TrainConfig(
        epochs=8, batch_size=32, learning_rate=1e-2, patience=0, eval_batch=64, length_buckets=()
    )
    out = tmp_path / "out"
    m = sasrec.run(data, cfg, train_cfg, str(out), progress=False)
    pop = popularity.evaluate(data, "test")["sequential"]["history_excluded"]
    got = m["test"]["history_excluded"]
    assert got["HR@10"] >= 0.9, m["history"][-3:]
    assert got["HR@10"] > pop["HR@10"] + 0.5
    assert got["NDCG@10"] > 0.6
    assert 1 <= m["best_epoch"] <= 8 and m["epochs_run"] == 8
    assert m["test"]["unfiltered"]["num_cases"] == data.num_users
    assert m["direct"]["HR@10"] >= 0.9
    lines = (out / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == data.num_users
    assert set(json.loads(lines[0])) == {"user", "target", "ranked"}
    assert len((out / "training_log.jsonl").read_text().splitlines()) == 8
    assert json.loads((out / "metrics.json").read_text())["best_epoch"] == m["best_epoch"]
