import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys_jax.decoding import trie as trie_lib

EOP = 1


# Reference walks over the trie arrays (the beam search inlines the same logic).
def allowed_tokens_mask(
    trie: trie_lib.Trie, nodes: jax.Array, roots: jax.Array, eop: int
) -> jax.Array:
    """bool [..., V]: tokens that continue some item from `nodes` (plus `<eop>` where the node
    completes an item). `roots` gives each entry's root (its trie)."""
    vocab = trie.root_next.shape[1]
    at_root = nodes < trie.num_roots
    tokens, _ = trie_lib.children(trie, nodes)
    flat_tokens = tokens.reshape(-1, trie.fanout)
    rows = jnp.arange(flat_tokens.shape[0])[:, None]
    below = jnp.zeros((flat_tokens.shape[0], vocab + 1), bool)
    below = below.at[rows, jnp.where(flat_tokens >= 0, flat_tokens, vocab)].set(True)[:, :vocab]
    below = below.reshape(*nodes.shape, vocab)
    from_root = trie.root_next[roots] >= 0
    mask = jnp.where(at_root[..., None], from_root, below)
    ends = trie.end_item[nodes] >= 0
    return mask.at[..., eop].set(ends)


def next_node(
    trie: trie_lib.Trie, nodes: jax.Array, roots: jax.Array, tokens: jax.Array
) -> jax.Array:
    """The node reached from `nodes` by `tokens` (-1 if the token leaves the trie)."""
    at_root = nodes < trie.num_roots
    from_root = trie.root_next[roots, tokens]
    child_tokens, child_nodes = trie_lib.children(trie, nodes)
    hit = child_tokens == tokens[..., None]
    below = jnp.max(jnp.where(hit, child_nodes, -1), axis=-1)
    return jnp.where(at_root, from_root, below)


def _walk(trie, seq, root=0):
    node = jnp.array([root])
    for t in seq:
        node = next_node(trie, node, jnp.array([root]), jnp.array([t]))
    return int(node[0])


pools = st.lists(
    st.lists(st.integers(2, 15), min_size=1, max_size=5).map(tuple),
    min_size=1,
    max_size=25,
    unique=True,
)


@pytest.mark.slow
@settings(max_examples=40, deadline=None)
@given(pools)
def test_every_item_is_a_path_and_only_items_end(pool):
    trie = trie_lib.catalog_trie(pool, vocab_size=16).device_put()
    for item, seq in enumerate(pool):
        node = _walk(trie, seq)
        assert int(trie.end_item[node]) == item
        mask = np.asarray(allowed_tokens_mask(trie, jnp.array([node]), jnp.array([0]), EOP))
        assert mask[0, EOP]
    # Allowed tokens at any prefix node are exactly the next tokens of items with that prefix.
    for seq in pool:
        for cut in range(len(seq)):
            prefix = seq[:cut]
            node = _walk(trie, prefix)
            mask = np.asarray(allowed_tokens_mask(trie, jnp.array([node]), jnp.array([0]), EOP))[0]
            expected = {s[cut] for s in pool if len(s) > cut and s[:cut] == prefix}
            assert set(np.flatnonzero(mask)) - {EOP} == expected
            assert mask[EOP] == (prefix in pool)


def test_candidate_tries_are_restricted_per_row():
    pool = [(2, 3), (2, 4), (5,), (6, 7, 8)]
    trie = trie_lib.candidate_tries(pool, np.array([[0, 2, -1], [1, 3, 2]]), 16).device_put()
    assert trie.num_roots == 2
    row0 = np.asarray(allowed_tokens_mask(trie, jnp.array([0]), jnp.array([0]), EOP))[0]
    row1 = np.asarray(allowed_tokens_mask(trie, jnp.array([1]), jnp.array([1]), EOP))[0]
    assert set(np.flatnonzero(row0)) == {2, 5} and set(np.flatnonzero(row1)) == {2, 5, 6}
    node = _walk(trie, (2,), root=0)
    after = np.asarray(allowed_tokens_mask(trie, jnp.array([node]), jnp.array([0]), EOP))[0]
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
