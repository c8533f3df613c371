import json

import numpy as np

from recsys_jax.evaluate import evaluate, main
from recsys_jax.recommend import Recommender


def test_evaluate_writes_metrics_and_predictions_for_every_case(toy_run, tmp_path):
    run_dir, _ = toy_run
    rec = Recommender.from_checkpoint(run_dir, beam=10)
    res = evaluate(rec, "test", ["seen", "unseen"], ["sequential", "direct"], tmp_path,
                   batch_size=16, unfiltered=True)
    cases = rec.assets.prepared.test_cases()
    assert res["cases"] == len(cases) and not res["partial"]
    seq = res["families"]["sequential_2-3"]
    for key in ("HR@5", "NDCG@5", "HR@10", "NDCG@10"):
        assert 0.0 <= seq["history_excluded"][key] <= 1.0 and key in seq["unfiltered"]
    assert res["families"]["sequential_2-13"]["seen"] is False
    assert "HR@1" in res["families"]["direct_2-3"]["candidates_1_plus_99"]
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["families"].keys() == res["families"].keys()
    rows = [json.loads(l) for l in (tmp_path / "predictions_sequential_2-3.jsonl").read_text().splitlines()]
    assert len(rows) == len(cases)
    ids = set(rec.catalog.item_ids)
    for row, hist, target in zip(rows, cases.histories, cases.targets):
        assert row["target"] == rec.catalog.item_ids[target] and set(row["ranked"]) <= ids
        assert not set(row["ranked"]) & {rec.catalog.item_ids[i] for i in hist}  # excluded
        assert len(row["ranked"]) == 20
    direct = [json.loads(l) for l in (tmp_path / "predictions_direct_2-3.jsonl").read_text().splitlines()]
    for row, target, negs in zip(direct, cases.targets, cases.negatives):
        allowed = {rec.catalog.item_ids[i] for i in np.r_[target, negs]}
        assert set(row["ranked"]) <= allowed and len(row["ranked"]) == 10


def test_cli_rejects_missing_checkpoint(tmp_path, capsys):
    assert main(["--checkpoint", str(tmp_path / "nothing")]) == 2
    assert "no checkpoint found" in capsys.readouterr().err
