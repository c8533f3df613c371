import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from recsys_jax.decoding import trie as trie_lib

EOP = 1


def _walk(trie, seq, root=0):
    node = jnp.array([root])
    for t in seq:
        node = trie_lib.next_node(trie, node, jnp.array([root]), jnp.array([t]))
    return int(node[0])


pools = st.lists(st.lists(st.integers(2, 15), min_size=1, max_size=5).map(tuple),
                 min_size=1, max_size=25, unique=True)


@settings(max_examples=40, deadline=None)
@given(pools)
def test_every_item_is_a_path_and_only_items_end(pool):
    trie = trie_lib.catalog_trie(pool, vocab_size=16).device_put()
    for item, seq in enumerate(pool):
        node = _walk(trie, seq)
        assert int(trie.end_item[node]) == item
        mask = np.asarray(trie_lib.allowed_tokens_mask(trie, jnp.array([node]), jnp.array([0]), EOP))
        assert mask[0, EOP]
    # Allowed tokens at any prefix node are exactly the next tokens of items with that prefix.
    for seq in pool:
        for cut in range(len(seq)):
            prefix = seq[:cut]
            node = _walk(trie, prefix)
            mask = np.asarray(trie_lib.allowed_tokens_mask(trie, jnp.array([node]), jnp.array([0]),
                                                           EOP))[0]
            expected = {s[cut] for s in pool if len(s) > cut and s[:cut] == prefix}
            assert set(np.flatnonzero(mask)) - {EOP} == expected
            assert mask[EOP] == (prefix in pool)


def test_candidate_tries_are_restricted_per_row():
    pool = [(2, 3), (2, 4), (5,), (6, 7, 8)]
    trie = trie_lib.candidate_tries(pool, np.array([[0, 2, -1], [1, 3, 2]]), 16).device_put()
    assert trie.num_roots == 2
    row0 = np.asarray(trie_lib.allowed_tokens_mask(trie, jnp.array([0]), jnp.array([0]), EOP))[0]
    row1 = np.asarray(trie_lib.allowed_tokens_mask(trie, jnp.array([1]), jnp.array([1]), EOP))[0]
    assert set(np.flatnonzero(row0)) == {2, 5} and set(np.flatnonzero(row1)) == {2, 5, 6}
    node = _walk(trie, (2,), root=0)
    after = np.asarray(trie_lib.allowed_tokens_mask(trie, jnp.array([node]), jnp.array([0]), EOP))[0]
    assert set(np.flatnonzero(after)) == {3}  # item 1 (2, 4) is not a candidate of row 0
    assert int(trie.end_item[_walk(trie, (2, 4), root=1)]) == 1


def test_fanout_is_static_and_bad_pools_fail():
    trie = trie_lib.catalog_trie([(2, 3), (2, 4), (2, 5), (9,)], 16)
    assert trie.fanout == 3 and trie.max_depth == 2
    with pytest.raises(ValueError, match="same token sequence"):
        trie_lib.catalog_trie([(2, 3), (2, 3)], 16)
    with pytest.raises(ValueError, match="empty"):
        trie_lib.catalog_trie([()], 16)
    with pytest.raises(ValueError, match="outside vocabulary"):
        trie_lib.catalog_trie([(99,)], 16)


def test_dynamic_intra_ids_match_training_masking():
    """The decoder's dynamic positions equal the masking's Part B intra ids for the same item
    sequence: +1 within an item, restart at 1 where a later item begins."""
    from recsys_jax.masking.layout import part_b_intra_ids

    items = [(4, 5, 6), (7,), (8, 9)]
    sep = [3]
    tokens, starts = [], []
    for k, seq in enumerate(items):
        if k:
            tokens += sep
        starts.append(len(tokens))
        tokens += list(seq)
    expected = part_b_intra_ids(len(tokens), starts)
    intra = jnp.array(1)  # <sop>
    got = [1]
    for t in range(len(tokens)):
        intra = trie_lib.next_intra(intra, jnp.array(t in starts and t > 0))
        got.append(int(intra))
    np.testing.assert_array_equal(got, expected)
