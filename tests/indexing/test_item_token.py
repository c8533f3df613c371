import numpy as np
import pytest

from recsys_jax.data.schema import Catalog, UnknownItemError
from recsys_jax.indexing import build_index


def catalog(n):
    return Catalog([str(i + 1) for i in range(n)], [f"t{i}" for i in range(n)], [[]] * n)


def test_one_new_token_per_item():
    index = build_index("item_token", catalog(300), [], seed=0)
    spelled = index.spell_all()
    assert set(spelled) == set(index.added_tokens())
    assert len(index.added_tokens()) == 300
    assert all(s.startswith("<item_") and s.endswith(">") and " " not in s for s in spelled)


def test_token_numbers_and_vocabulary_order_hide_the_internal_order():
    n = 3000
    index = build_index("item_token", catalog(n), [], seed=0)
    k = np.array([int(s[len("<item_") : -1]) for s in index.spell_all()])
    assert abs(np.corrcoef(k, np.arange(n))[0, 1]) < 0.05
    # added_tokens is in K order, so a token's vocabulary position is K, not the item index.
    assert index.added_tokens()[:3] == ["<item_1>", "<item_2>", "<item_3>"]


def test_unknown_tokens():
    index = build_index("item_token", catalog(10), [], seed=0)
    assert index.item_of(" <item_4> ") == index.item_of("<item_4>")
    for text in ["<item_0>", "<item_11>", "<item_04>", "item_4", "<item_4><item_5>"]:
        with pytest.raises(UnknownItemError, match="<item_1> .. <item_10>"):
            index.item_of(text)
