"""Most-popular baseline on a tiny P5-layout dataset written here."""

import json

import pytest

from recsys_jax.baselines import popularity
from recsys_jax.data.prepare import prepare
from recsys_jax.data.prepared import load_prepared

HEADER = "item_id\tasin\ttitle\tcategories_json\tidgenrec_text_id\ttitle_source"


def write_p5(folder, lines):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sequential_data.txt").write_text("\n".join(lines) + "\n")
    items = sorted({int(x) for line in lines for x in line.split()[1:]})
    rows = [HEADER] + [f'{i}\tA{i:04d}\tItem {i}\t"[[""Beauty""]]"\t\ttoy' for i in items]
    (folder / "items.tsv").write_text("\n".join(rows) + "\n")
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("pop")
    # item 1 is everywhere in training; items 50 (validation) and 60 (test) occur only held out
    lines = [f"{u} 1 {2 + u % 3} {5 + u} {20 + u % 4} {30 + u}" for u in range(1, 25)]
    lines.append("99 1 2 3 50 60")
    folder = write_p5(root / "src", lines)
    prepare(
        "p5",
        str(folder),
        name="tinypop",
        data_dir=str(root / "prep"),
        num_negatives=20,
        progress=False,
        log=lambda m: None,
    )
    return load_prepared(root / "prep", "tinypop"), root


def test_counts_use_training_items_only(tiny):
    data, _ = tiny
    counts = popularity.item_counts(data.train_sequences(), data.num_items)
    index = {item: i for i, item in enumerate(data.catalog.item_ids)}
    assert counts[index["60"]] == 0  # a test item never seen in training
    assert counts[index["50"]] == 0  # validation items are not training items either
    assert counts[index["1"]] == 25
    # every user's last two items are held out: training = 3 items per user
    assert counts.sum() == 3 * 25
    for u in range(1, 25):  # held-out items 20+u%4 and 30+u are never counted
        assert counts[index[str(30 + u)]] == 0


def test_evaluate_writes_files_and_metrics(tiny, tmp_path):
    data, _ = tiny
    out = tmp_path / "out"
    m = popularity.evaluate(data, "test", str(out))
    seq = m["sequential"]
    assert seq["history_excluded"]["num_cases"] == 25
    # test items are unseen in training, so most-popular never ranks them in the top 10
    assert seq["unfiltered"]["HR@10"] == 0.0 and seq["history_excluded"]["HR@10"] == 0.0
    assert set(m["direct"]) == {"HR@1", "HR@5", "NDCG@5", "HR@10", "NDCG@10", "num_cases"}
    lines = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(lines) == 25 and set(lines[0]) == {"user", "target", "ranked"}
    first = next(r for r in lines if r["user"] == "99")
    assert first["target"] == "60"
    assert "1" not in first["ranked"]  # history excluded (item 1 is in every history)
    unf = [json.loads(x) for x in (out / "predictions_unfiltered.jsonl").read_text().splitlines()]
    assert unf[0]["ranked"][0] == "1"  # the most popular item heads the unfiltered list
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["sequential"] == json.loads(json.dumps(seq))
    # validation split: no fixed negatives -> no direct numbers
    assert popularity.evaluate(data, "validation")["direct"] is None
