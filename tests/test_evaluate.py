import json

import numpy as np
import pytest

from recsys_jax.decoding.decoder import Decoder
from recsys_jax.evaluate import evaluate, main, parser, prompts_for


def run_eval(rec, out, *argv):
    return evaluate(rec, parser().parse_args(["--checkpoint", "unused", *argv]), out)


def read_rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_sequential_and_direct_cover_every_case(toy_run, tmp_path):
    run_dir, _ = toy_run
    rec = Decoder.from_checkpoint(run_dir, beam=10)
    res = run_eval(
        rec,
        tmp_path,
        "--prompts",
        "seen",
        "unseen",
        "--families",
        "sequential",
        "direct",
        "--batch-size",
        "16",
        "--unfiltered",
    )
    cases = rec.assets.prepared.test_cases()
    assert not res["partial"]
    seq = res["families"]["sequential_2-3"]
    assert seq["cases"] == len(cases)
    for key in ("HR@5", "NDCG@5", "HR@10", "NDCG@10"):
        assert 0.0 <= seq["history_excluded"][key] <= 1.0 and key in seq["unfiltered"]
    assert res["families"]["sequential_2-13"]["seen"] is False
    for method in ("generate", "score"):
        assert "HR@1" in res["families"][f"direct_2-3_{method}"]["candidates_1_plus_99"]
    assert "direct_5-1_yes_no" not in res["families"]  # yes/no only when asked
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["families"].keys() == res["families"].keys()
    rows = read_rows(tmp_path / "predictions_sequential_2-3.jsonl")
    assert len(rows) == len(cases)
    ids = set(rec.catalog.item_ids)
    for row, hist, target in zip(rows, cases.histories, cases.targets):
        assert row["target"] == rec.catalog.item_ids[target] and set(row["ranked"]) <= ids
        assert not set(row["ranked"]) & {rec.catalog.item_ids[i] for i in hist}  # excluded
        assert len(row["ranked"]) == 20
    for method in ("generate", "score"):
        direct = read_rows(tmp_path / f"predictions_direct_2-3_{method}.jsonl")
        assert len(direct) == len(cases)
        for row, target, negs in zip(direct, cases.targets, cases.negatives):
            allowed = {rec.catalog.item_ids[i] for i in np.r_[target, negs]}
            assert set(row["ranked"]) <= allowed and len(set(row["ranked"])) == 10


@pytest.mark.slow
def test_direct_score_ranks_by_exact_candidate_likelihood(toy_run, tmp_path):
    """Batched, padded scoring gives each case the order of its own exact candidate scores."""
    run_dir, _ = toy_run
    rec = Decoder.from_checkpoint(run_dir, beam=10)
    run_eval(
        rec,
        tmp_path,
        "--prompts",
        "2-3",
        "--families",
        "direct",
        "--limit",
        "3",
        "--direct-methods",
        "score",
        "--batch-size",
        "16",
    )
    rows = read_rows(tmp_path / "predictions_direct_2-3_score.jsonl")
    cases = rec.assets.prepared.test_cases()
    for r, row in enumerate(rows):
        cands = np.r_[cases.targets[r], cases.negatives[r]]
        inputs = rec.prompts([cases.histories[r]], "2-3", users=[cases.users[r]])
        scores = rec.score(inputs, candidates=cands[None])[0]
        expected = cands[np.argsort(-scores, kind="stable")[:10]]
        assert row["ranked"] == [rec.catalog.item_ids[i] for i in expected]


@pytest.mark.slow
def test_a_later_evaluation_adds_to_metrics_json(toy_run, tmp_path, capsys):
    """A second call for another family keeps the first call's entries; an evaluation of
    something else (here the validation split) replaces the file and says so."""
    run_dir, _ = toy_run
    rec = Decoder.from_checkpoint(run_dir, beam=5)
    run_eval(
        rec,
        tmp_path,
        "--families",
        "direct",
        "--prompts",
        "2-3",
        "--direct-methods",
        "score",
        "--limit",
        "2",
    )
    run_eval(rec, tmp_path, "--families", "sequential", "--prompts", "2-3", "--limit", "2")
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert set(on_disk["families"]) == {"direct_2-3_score", "sequential_2-3"}
    run_eval(
        rec,
        tmp_path,
        "--families",
        "sequential",
        "--prompts",
        "2-3",
        "--limit",
        "2",
        "--split",
        "validation",
    )
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert set(on_disk["families"]) == {"sequential_2-3"} and on_disk["split"] == "validation"
    assert "it is replaced" in capsys.readouterr().out


@pytest.mark.slow
def test_direct_yes_no_ranks_the_candidates(toy_run, tmp_path):
    run_dir, _ = toy_run
    rec = Decoder.from_checkpoint(run_dir, beam=10)
    res = run_eval(
        rec,
        tmp_path,
        "--prompts",
        "5-1",
        "--families",
        "direct",
        "--direct-methods",
        "yes_no",
        "--limit",
        "2",
        "--batch-size",
        "32",
    )
    entry = res["families"]["direct_5-1_yes_no"]
    assert entry["cases"] == 2 and res["partial"]
    cases = rec.assets.prepared.test_cases()
    for r, row in enumerate(read_rows(tmp_path / "predictions_direct_5-1_yes_no.jsonl")):
        allowed = {rec.catalog.item_ids[i] for i in np.r_[cases.targets[r], cases.negatives[r]]}
        assert len(set(row["ranked"])) == 10 and set(row["ranked"]) <= allowed


@pytest.mark.slow
def test_rating_explanation_review_on_review_data(toy_review_run, tmp_path):
    run_dir, _ = toy_review_run
    rec = Decoder.from_checkpoint(run_dir, beam=5)
    res = run_eval(
        rec,
        tmp_path,
        "--families",
        "rating",
        "explanation",
        "review",
        "--prompts",
        "seen",
        "unseen",
        "--batch-size",
        "16",
    )
    fams = res["families"]
    stars = ("rating_1-6", "rating_1-10", "review_4-2", "review_4-4")
    assert set(fams) == {
        "explanation_3-3",
        "explanation_3-9",
        "explanation_3-12",
        "review_4-1",
        *stars,
        *(f"{s}_expected" for s in stars),
    }
    n_test = len(rec.assets.prepared.rating_rows("rating_test")["user"])
    for name in ("rating_1-6", "review_4-2", "review_4-4"):
        e = fams[name]
        assert e["num_cases"] == n_test and 0 <= e["num_fallback"] <= n_test  # none dropped
        assert e["RMSE"] >= e["MAE"] >= 0
    assert "BLEU-4" in fams["explanation_3-3"] and "BLEU-2" in fams["review_4-1"]
    assert fams["explanation_3-12"]["seen"] is False
    rows = read_rows(tmp_path / "predictions_explanation_3-3.jsonl")
    assert len(rows) == n_test
    assert all(
        r["reference"] == "The " + r["reference"].split()[1] + " feels great on skin." for r in rows
    )
    ratings = read_rows(tmp_path / "predictions_rating_1-6.jsonl")
    assert {"user", "item", "target", "predicted", "generated"} <= set(ratings[0])
    expected = read_rows(tmp_path / "predictions_rating_1-6_expected.jsonl")
    assert len(expected) == n_test and fams["rating_1-6_expected"]["num_fallback"] == 0
    assert all(1.0 <= r["predicted"] <= 5.0 for r in expected)
    assert [(r["user"], r["item"]) for r in expected] == [(r["user"], r["item"]) for r in ratings]


@pytest.mark.slow
def test_families_the_data_lacks_are_skipped(toy_run, tmp_path, capsys):
    run_dir, _ = toy_run
    rec = Decoder.from_checkpoint(run_dir, beam=5)
    res = run_eval(rec, tmp_path, "--families", "rating", "review", "--limit", "2")
    assert res["families"] == {}
    assert "skipping rating" in capsys.readouterr().out


def test_prompt_selection():
    assert prompts_for("direct", ["seen"]) == ["2-3", "5-1", "5-4"]
    assert prompts_for("rating", ["unseen", "1-2", "2-3"]) == ["1-10", "1-2"]
    assert prompts_for("direct", ["2-7"]) == []  # lists candidates: cannot hold 100 items


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--checkpoint", "nothing"], "no checkpoint found"),
        (["--checkpoint", "x", "--prompts", "9-9"], "unknown prompt id"),
    ],
)
def test_cli_errors(argv, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert needle in capsys.readouterr().err


@pytest.mark.parametrize(
    "flag, value", [("--limit", "-3"), ("--limit", "0"), ("--beam", "0"), ("--batch-size", "0")]
)
def test_counts_below_one_are_usage_errors(flag, value, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--checkpoint", "x", flag, value])
    assert exit_.value.code == 2
    assert f"argument {flag}: must be at least 1, got {value}" in capsys.readouterr().err


def test_out_that_is_a_file_is_an_error(tmp_path, capsys):
    out = tmp_path / "metrics.txt"
    out.write_text("x")
    assert main(["--checkpoint", str(tmp_path), "--out", str(out)]) == 2
    assert f"error: --out {out} is a file; give a folder" in capsys.readouterr().err


@pytest.mark.slow
def test_item_sequence_model_is_evaluated_with_the_bare_sequence(toy_items_run, tmp_path):
    """A model trained only on the bare item sequence is asked with it ("items"), not with
    worded templates it never saw; direct ranks the 100 candidates over their trie, and the
    answer-span scoring method, which a causal sequence has no span for, is skipped."""
    run_dir, _ = toy_items_run
    rec = Decoder.from_checkpoint(run_dir, beam=10)
    trained = [f for f, w in rec.cfg.data.family_weights.items() if w > 0]
    assert prompts_for("sequential", ["seen", "unseen"], trained) == ["items"]
    res = run_eval(rec, tmp_path, "--families", "sequential", "direct", "--batch-size", "16")
    assert set(res["families"]) == {"sequential_items", "direct_items_generate"}
    cases = rec.assets.prepared.test_cases()
    assert res["families"]["sequential_items"]["cases"] == len(cases)
    # The toy users walk the catalog in steps of 2: the model has learned some of it.
    assert res["families"]["sequential_items"]["history_excluded"]["HR@10"] > 0.2
    rows = read_rows(tmp_path / "predictions_direct_items_generate.jsonl")
    for row, target, negs in zip(rows, cases.targets, cases.negatives):
        assert set(row["ranked"]) <= {rec.catalog.item_ids[i] for i in np.r_[target, negs]}
