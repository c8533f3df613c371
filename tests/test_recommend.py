import json
import subprocess
import sys

import numpy as np
import pytest

from recsys_jax.data.schema import UnknownItemError
from recsys_jax.recommend import Recommender
from recsys_jax.recommend import main as recommend_main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rec(toy_run):
    run_dir, data_dir = toy_run
    return Recommender.from_checkpoint(run_dir, beam=8)


def test_sequential_returns_k_distinct_catalog_items_not_in_history(rec):
    history = rec.items.display_ids[:3]
    rows = rec.recommend(history, k=5)
    ids = [r[0] for r in rows]
    assert len(ids) == 5 == len(set(ids))
    assert set(ids) <= set(rec.items.display_ids) and not set(ids) & set(history)
    scores = [r[2] for r in rows]
    assert scores == sorted(scores, reverse=True)
    assert rows[0][1] == rec.catalog.titles[rec.resolve(rows[0][0])]


def test_original_ids_in_and_out(rec):
    """Items are named and shown by their original ids (the toy data's ASIN-like A00012);
    the dataset's own numbers still resolve to the same items."""
    assert rec.catalog.source_ids is not None
    by_asin = rec.recommend(rec.catalog.source_ids[:2], k=4)
    by_number = rec.recommend(rec.catalog.item_ids[:2], k=4)
    assert by_asin == by_number
    assert all(r[0] in set(rec.catalog.source_ids) for r in by_asin)
    with pytest.raises(UnknownItemError, match="did you mean"):
        rec.recommend([rec.catalog.source_ids[0][:-1] + "x"], k=2)


def test_titles_work_as_history_and_keep_history_option(rec):
    item = rec.items.display_ids[7]
    title = rec.catalog.titles[7]
    assert rec.recommend([title], k=3) == rec.recommend([item], k=3)
    assert len(rec.recommend([item], k=3, exclude_history=False)) == 3


def test_direct_ranks_only_the_candidates_both_ways(rec):
    cands = rec.items.display_ids[10:15]
    history = rec.items.display_ids[:2]
    scored = rec.recommend(history, k=3, task="direct", candidates=cands)
    generated = rec.recommend(history, k=3, task="direct", candidates=cands, method="generate")
    assert {r[0] for r in scored} <= set(cands) and len(scored) == 3
    # Beam search over the candidate trie and exact scoring agree when beam >= candidates.
    assert [r[0] for r in generated] == [r[0] for r in scored]
    np.testing.assert_allclose(
        [r[2] for r in generated], [r[2] for r in scored], rtol=1e-4, atol=1e-4
    )


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(history=["nope"]), UnknownItemError, "unknown item 'nope'"),
        (dict(history=[]), ValueError, "empty history"),
        (dict(history=["1"], k=10_000), ValueError, "must be between 1 and"),
        (dict(history=["1"], k=0), ValueError, "must be between 1 and"),
        (dict(history=["1"], task="direct"), ValueError, "candidate list"),
        (
            dict(history=["1"], task="direct", candidates=["3", "5"], k=5),
            ValueError,
            "between 1 and 2",
        ),
        (dict(history=["1"], task="rating"), ValueError, "sequential' or 'direct"),
    ],
)
def test_bad_requests_fail_clearly(rec, kwargs, error, message):
    with pytest.raises(error, match=message):
        rec.recommend(**kwargs)


@pytest.mark.subprocess
def test_cli_prints_a_table_and_json_and_fails_cleanly(toy_run, capsys):
    run_dir, _ = toy_run
    # One real `python -m` process; the other cases call the same `main` in-process (faster).
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "recsys_jax.recommend",
            "--checkpoint",
            str(run_dir),
            "--history",
            "1",
            "--k",
            "4",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert lines[0].split()[:3] == ["rank", "item_id", "score"] and len(lines) == 5
    base = ["--checkpoint", str(run_dir)]
    assert recommend_main(base + ["--history", "1", "--k", "2", "--json"]) == 0
    assert [set(r) for r in json.loads(capsys.readouterr().out)] == [
        {"item_id", "title", "score"}
    ] * 2
    assert recommend_main(base + ["--history", "zzz"]) == 2
    assert "unknown item 'zzz'" in capsys.readouterr().err


def test_item_sequence_model_recommends_and_ranks_candidates(toy_items_run):
    """A causal item-sequence model continues the history; direct ranks only the given
    candidates (over their trie), best first."""
    rec = Recommender.from_checkpoint(toy_items_run[0], beam=8)
    cases = rec.decoder.assets.prepared.test_cases()
    history = [rec.items.display_id(i) for i in cases.histories[0]]
    rows = rec.recommend(history, k=5)
    assert len({r[0] for r in rows}) == 5 and not {r[0] for r in rows} & set(history)
    cands = [rec.items.display_id(i) for i in [cases.targets[0], *cases.negatives[0][:3]]]
    ranked = rec.recommend(history, k=4, task="direct", candidates=cands)
    assert sorted(r[0] for r in ranked) == sorted(cands)
    assert [r[2] for r in ranked] == sorted((r[2] for r in ranked), reverse=True)


def test_k_below_one_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        recommend_main(["--checkpoint", "x", "--history", "1", "--k", "0"])
    assert exit_.value.code == 2
    assert "argument --k: must be at least 1, got 0" in capsys.readouterr().err
