"""The end-of-training report: the saved model's validation ranking beside most-popular's on
the same users, and commands that work on the run."""

import json
import re

import pytest

from recsys_jax.data.prepared import load_prepared
from recsys_jax.recommend import main as recommend_main
from recsys_jax.training.report import final_report, popularity_validation

pytestmark = pytest.mark.slow


def test_report_compares_the_best_checkpoint_with_popularity_and_its_commands_run(
    toy_items_run, capsys
):
    run, data_dir = toy_items_run
    summary = json.loads((run / "summary.json").read_text())
    prepared = load_prepared(data_dir, "toy")
    text = final_report(run, summary, prepared, users=-1)
    best = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    best = [r for r in best if r.get("step") == summary["best_step"] and "valid_NDCG@10" in r][0]
    assert f"this model (step {summary['best_step']})" in text
    assert f"NDCG@10 {best['valid_NDCG@10']:.4f}" in text
    pop = popularity_validation(prepared, -1)
    assert f"most popular           HR@10 {pop['HR@10']:.4f}  NDCG@10 {pop['NDCG@10']:.4f}" in text
    # The printed recommend command works as printed.
    command = re.search(r"python -m recsys_jax.recommend (.*)", text).group(1).split()
    assert recommend_main(command) == 0
    assert "rank" in capsys.readouterr().out
