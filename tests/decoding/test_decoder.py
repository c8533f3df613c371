"""Decoder: fixed checkpoints give the predictions they gave when they were recorded, and the
inference modules stay independent of training code."""

import ast
import json
from pathlib import Path

import numpy as np
import pytest

from recsys_jax.data.prepare import prepare
from recsys_jax.decoding.decoder import Decoder
from recsys_jax.recommend import Recommender

GOLDEN = Path(__file__).parent.parent / "fixtures" / "golden"
HISTORIES = [["103", "105", "107"], ["62", "64"], ["37"]]
CANDIDATES = [["109", "111", "113", "10", "12"], ["66", "68", "70"], ["39", "41"]]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def golden_data(toy_p5, tmp_path_factory):
    """The toy dataset the golden checkpoints were trained on, prepared afresh."""
    data = tmp_path_factory.mktemp("golden") / "data"
    prepare("p5", str(toy_p5), data_dir=str(data), progress=False, log=lambda m: None)
    return data


@pytest.fixture(scope="module")
def recommenders(golden_data):
    """Each golden run loaded once for the module (loading and compiling dominate)."""
    loaded = {}

    def get(run):
        if run not in loaded:
            loaded[run] = Recommender.from_checkpoint(
                GOLDEN / run, data_dir=str(golden_data), beam=8
            )
        return loaded[run]

    return get


def _calls(rec):
    calls = {
        "sequential": lambda: rec.recommend_batch(HISTORIES, k=5),
        "direct_generate": lambda: rec.recommend_batch(
            HISTORIES, k=2, task="direct", candidates=CANDIDATES, method="generate"
        ),
        "direct_score": lambda: rec.recommend_batch(
            HISTORIES, k=2, task="direct", candidates=CANDIDATES, method="score"
        ),
    }
    return calls


@pytest.mark.slow
@pytest.mark.parametrize("run", ["title_multitask", "items_causal"])
def test_fixed_checkpoint_predictions_unchanged(run, recommenders):
    """Item lists and scores of recorded checkpoints (a worded multitask model and a causal
    item-sequence model) match what they were when recorded."""
    expected = json.loads((GOLDEN / "predictions.json").read_text())[run]
    rec = recommenders(run)
    for name, call in _calls(rec).items():
        if name not in expected:
            continue
        got = call()
        for row, want in zip(got, expected[name]):
            assert [rec.resolve(i) for i, _, _ in row] == [i for i, _ in want], (run, name)
            np.testing.assert_allclose(
                [s for _, _, s in row], [s for _, s in want], rtol=1e-4, atol=1e-4
            )


@pytest.mark.slow
def test_decoder_beam_excludes_and_scores_agree(recommenders):
    """beam over one-token candidates gives the same order and scores as exact scoring."""
    dec = recommenders("title_multitask").decoder
    assert isinstance(dec, Decoder)
    hist = [[0, 1, 2], [5]]
    inputs = dec.prompts(hist, dec.templates["sequential"])
    items, scores = dec.beam(inputs, 4, exclude=hist)
    assert items.shape == (2, 4) and not set(items[0]) & {0, 1, 2} and 5 not in items[1]
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    exact = dec.score(inputs, candidates=items)
    np.testing.assert_allclose(exact, scores, rtol=1e-4, atol=1e-4)


INFERENCE = [
    "recommend.py",
    "evaluate.py",
    "export.py",
    "serve.py",
    "evaluation",
    "serving",
    "decoding",
    "run",
]


def _imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names)


def test_inference_never_imports_training():
    offenders = []
    for name in INFERENCE:
        target = REPO / "recsys_jax" / name
        for path in [target] if target.is_file() else sorted(target.rglob("*.py")):
            offenders += [
                f"{path.relative_to(REPO)}: {m}"
                for m in _imports(path)
                if m.startswith("recsys_jax.training")
            ]
    assert not offenders, offenders


def test_beam_search_called_from_one_module():
    callers = [
        str(p.relative_to(REPO))
        for p in sorted((REPO / "recsys_jax").rglob("*.py"))
        if "beam_search" in {m.split(".")[-1] for m in _imports(p)}
    ]
    assert callers == ["recsys_jax/decoding/decoder.py"], callers
