"""BundleRecommender: item references, k bounds, and padding that does not change results."""

import numpy as np
import pytest

from recsys_jax.data.schema import UnknownItemError
from recsys_jax.serving import BundleRecommender

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rec(toy_bundle):
    return BundleRecommender.load(toy_bundle, max_batch=4)


def test_ids_titles_k_and_batch_padding_agree(rec):
    ids = rec.item_ids
    batch = rec.recommend_batch([ids[:3], [ids[9]], [rec.titles[7]]], k=8)  # padded to 4
    alone = rec.recommend_batch([[ids[9]]] * 3, k=8)[0]  # another padded size: 4
    assert [r[0] for r in batch[1]] == [r[0] for r in alone]
    np.testing.assert_allclose([r[2] for r in batch[1]], [r[2] for r in alone], atol=1e-5)
    assert rec.recommend_batch([[ids[7]]] * 3, k=8)[0] == batch[2]  # a title is its item
    top5 = rec.recommend_batch([ids[:3], [ids[9]], [rec.titles[7]]], k=5)
    assert [row[:5] for row in batch] == top5
    assert not {r[0] for r in batch[0]} & set(ids[:3])  # history excluded
    kept = rec.recommend_batch([ids[:3]] * 3, k=8, exclude_history=False)[0]
    assert len(kept) == 8 and [r[2] for r in kept] == sorted((r[2] for r in kept), reverse=True)


@pytest.mark.parametrize(
    "history, k, error, message",
    [
        (["nope"], 3, UnknownItemError, "unknown item 'nope'"),
        ([], 3, ValueError, "empty history"),
        (["1"], 9, ValueError, "between 1 and 8"),
        (["1"], 0, ValueError, "between 1 and 8"),
        (["1"], 2.5, ValueError, "must be an integer"),
    ],
)
def test_bad_inputs_fail_clearly(rec, history, k, error, message):
    with pytest.raises(error, match=message):
        rec.recommend(history, k=k)
