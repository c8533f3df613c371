import numpy as np
import pytest

from recsys_jax.data.schema import Catalog, UnknownItemError
from recsys_jax.indexing import build_index
from recsys_jax.indexing.random_id import RandomIdIndex


def numeric_catalog(n):
    # Dataset ids that are themselves numbers 1..n in internal order: the leaky P5 numbering.
    return Catalog([str(i + 1) for i in range(n)], [f"t{i}" for i in range(n)], [[]] * n)


def test_numbers_are_a_permutation_written_as_digits():
    index = build_index("random_id", numeric_catalog(500), [], seed=3)
    spelled = index.spell_all()
    assert all(s.isdigit() and not s.startswith("0") for s in spelled)
    assert sorted(int(s) for s in spelled) == list(range(1, 501))
    assert index.added_tokens() == []


def test_not_the_dataset_ids_nor_the_internal_order():
    n = 5000
    index = build_index("random_id", numeric_catalog(n), [], seed=0)
    numbers = np.array([int(index.spell(i)) for i in range(n)])
    assert np.mean(numbers == np.arange(1, n + 1)) < 0.01  # not the dataset ids
    rank_corr = np.corrcoef(np.argsort(np.argsort(numbers)), np.arange(n))[0, 1]
    assert abs(rank_corr) < 0.05  # std is about 1/sqrt(n) = 0.014
    assert abs(np.corrcoef(numbers[:-1], numbers[1:])[0, 1]) < 0.05  # neighbours unrelated


def test_seed_changes_numbers_and_kinds_do_not_share_them():
    a = build_index("random_id", numeric_catalog(200), [], seed=0)
    b = build_index("random_id", numeric_catalog(200), [], seed=1)
    t = build_index("item_token", numeric_catalog(200), [], seed=0)
    assert a.spell_all() != b.spell_all()
    assert [f"<item_{s}>" for s in a.spell_all()] != t.spell_all()


def test_only_canonical_digits_are_read():
    index = build_index("random_id", numeric_catalog(20), [], seed=0)
    item = index.item_of("7")
    assert index.spell(item) == "7" and index.item_of(" 7 ") == item
    for text in ["07", "+7", "7.0", "0", "21", "-1", "seven", "٧"]:
        with pytest.raises(UnknownItemError, match="1..20"):
            index.item_of(text)


def test_rejects_a_state_that_is_not_a_permutation():
    with pytest.raises(ValueError, match="permutation"):
        RandomIdIndex([1, 1, 3])
