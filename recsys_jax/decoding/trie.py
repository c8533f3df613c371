"""The item trie as device arrays, so constrained decoding runs inside one XLA program.

Every item's token sequence (its entity under the chosen index) is a path from a root; a node
whose prefix spells a whole item has `end_item[node] = item`, and there `<eop>` may follow.

Layout (after STATIC, "Vectorizing the Trie"):
- `root_next` [R, V]: a dense first level, one row per root (R = 1 for the whole catalog; one
  root per request for restricted candidate tries), -1 where no item starts with the token.
- below the roots, CSR: `row_start` [N + 1] into `child_token` / `child_node` [E], children
  sorted by token. Lookups read a window of `fanout` (the largest fan-out below the roots) from
  `row_start[node]`, so a step costs the same gathers whatever the catalog size.
- `end_item` [N]: the item a node completes, or -1.
Node 0 .. R-1 are the roots.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class Trie:
    root_next: np.ndarray | jax.Array  # [R, V] int32
    row_start: np.ndarray | jax.Array  # [N + 1] int32
    child_token: np.ndarray | jax.Array  # [E + fanout] int32 (padded so windows never overrun)
    child_node: np.ndarray | jax.Array  # [E + fanout] int32
    end_item: np.ndarray | jax.Array  # [N] int32
    fanout: int  # static
    max_depth: int  # static: longest item in tokens

    @property
    def num_roots(self) -> int:
        return int(self.root_next.shape[0])

    @property
    def num_nodes(self) -> int:
        return int(self.end_item.shape[0])

    def device_put(self) -> Trie:
        return dataclasses.replace(self, **{f: jnp.asarray(getattr(self, f)) for f in ARRAYS})

    def arrays(self) -> dict:
        return {f: np.asarray(getattr(self, f)) for f in ARRAYS}


ARRAYS = ("root_next", "row_start", "child_token", "child_node", "end_item")

jax.tree_util.register_dataclass(
    Trie, data_fields=list(ARRAYS), meta_fields=["fanout", "max_depth"]
)


def build_trie(
    pools: Sequence[Sequence[tuple[int, ...]]],
    items: Sequence[Sequence[int]] | None,
    vocab_size: int,
) -> Trie:
    """One root per pool. `pools[r]` lists token sequences; `items[r]` their item ids (default
    0..len-1). Sequences in one pool must be distinct and non-empty."""
    roots = len(pools)
    # Nodes below the roots, keyed by (parent, token); roots are 0..R-1.
    children: list[dict[int, int]] = [dict() for _ in range(roots)]
    end_item: list[int] = [-1] * roots
    max_depth = 0
    for r, pool in enumerate(pools):
        ids = range(len(pool)) if items is None else items[r]
        for item, seq in zip(ids, pool):
            if len(seq) == 0:
                raise ValueError(f"item {item} has an empty token sequence")
            node = r
            for token in seq:
                if not 0 <= token < vocab_size:
                    raise ValueError(f"item {item}: token {token} outside vocabulary {vocab_size}")
                nxt = children[node].get(token)
                if nxt is None:
                    nxt = len(end_item)
                    children[node][token] = nxt
                    children.append(dict())
                    end_item.append(-1)
                node = nxt
            if end_item[node] != -1:
                raise ValueError(f"items {end_item[node]} and {item} have the same token sequence")
            end_item[node] = int(item)
            max_depth = max(max_depth, len(seq))
    n = len(end_item)
    root_next = np.full((roots, vocab_size), -1, np.int32)
    for r in range(roots):
        for token, child in children[r].items():
            root_next[r, token] = child
    counts = np.array([0 if v < roots else len(children[v]) for v in range(n)], np.int64)
    fanout = int(max(1, counts.max(initial=0)))
    row_start = np.zeros(n + 1, np.int64)
    np.cumsum(counts, out=row_start[1:])
    total = int(row_start[-1])
    child_token = np.full(total + fanout, -1, np.int32)
    child_node = np.full(total + fanout, -1, np.int32)
    for v in range(roots, n):
        if children[v]:
            pairs = sorted(children[v].items())
            s = row_start[v]
            child_token[s : s + len(pairs)] = [t for t, _ in pairs]
            child_node[s : s + len(pairs)] = [c for _, c in pairs]
    return Trie(
        root_next,
        row_start.astype(np.int32),
        child_token,
        child_node,
        np.asarray(end_item, np.int32),
        fanout,
        max_depth,
    )


# -- device-side lookups (jnp; used inside jit / while_loop) ---------------------------------


def children(trie: Trie, nodes: jax.Array):
    """Children of non-root nodes: (tokens, next nodes) [..., fanout], -1 where absent."""
    start = trie.row_start[nodes]
    count = trie.row_start[nodes + 1] - start
    offsets = jnp.arange(trie.fanout)
    idx = start[..., None] + offsets
    valid = offsets < count[..., None]
    return (jnp.where(valid, trie.child_token[idx], -1), jnp.where(valid, trie.child_node[idx], -1))


def banned_items(trie: Trie, exclude: jax.Array) -> jax.Array:
    """bool [B, N + 1]: row b's excluded items (exclude [B, H], -1 = none), indexed by item id
    (< N, every item has its own end node); column N stands for "no item"."""
    n = trie.end_item.shape[0]
    rows = jnp.arange(exclude.shape[0])[:, None]
    return (
        jnp.zeros((exclude.shape[0], n + 1), bool)
        .at[rows, jnp.where(exclude >= 0, exclude, n)]
        .set(True)
        .at[:, n]
        .set(False)
    )


def excluded_leaf(trie: Trie, nodes: jax.Array, banned: jax.Array) -> jax.Array:
    """bool, shape of `nodes` [B, ...]: the node completes one of its row's banned items
    (`banned_items`) and nothing continues below it, so no result can come from entering it.
    Beam search skips such nodes instead of spending a beam on them."""
    n = trie.end_item.shape[0]
    safe = jnp.clip(nodes, 0, n - 1)
    item = jnp.where(nodes >= 0, trie.end_item[safe], -1)
    leaf = trie.row_start[safe + 1] == trie.row_start[safe]
    rows = jnp.arange(nodes.shape[0]).reshape((-1,) + (1,) * (nodes.ndim - 1))
    return banned[rows, jnp.where(item >= 0, item, n)] & leaf & (nodes >= trie.num_roots)


def next_intra(intra: jax.Array, starts_item: jax.Array) -> jax.Array:
    """Dynamic positions (docs/design.md, RecSysLLM's three changes): +1 while the token continues
    the current entity, restart at 1 when it begins a new one. Same rule as
    `masking.part_b_intra_ids`."""
    return jnp.where(starts_item, 1, intra + 1)


# -- host-side helpers -----------------------------------------------------------------------


def catalog_trie(entity_pool: Sequence[tuple[int, ...]], vocab_size: int) -> Trie:
    return build_trie([entity_pool], None, vocab_size)


def candidate_tries(
    entity_pool: Sequence[tuple[int, ...]], candidates: np.ndarray, vocab_size: int
) -> Trie:
    """One restricted trie per row of `candidates` [B, C] (item ids; -1 = none).

    Padded to shapes that depend only on B, C and the pool's longest item (nodes
    B + B*C*depth, fan-out C), so every batch of an evaluation reuses one compiled search
    instead of compiling a new one per batch."""
    candidates = np.asarray(candidates)
    pools, items = [], []
    for row in candidates:
        kept = [int(i) for i in row if i >= 0]
        pools.append([entity_pool[i] for i in kept])
        items.append(kept)
    batch, width = candidates.shape
    depth = max(len(seq) for seq in entity_pool)
    return pad_trie(
        build_trie(pools, items, vocab_size), batch + batch * width * depth, max(1, width), depth
    )


def pad_trie(trie: Trie, num_nodes: int, fanout: int, max_depth: int) -> Trie:
    """The same trie with `num_nodes` nodes (the extra ones childless, completing nothing), a
    `fanout` window and `max_depth`: lookups and decoding results are unchanged."""
    n = trie.num_nodes
    if n > num_nodes or trie.fanout > fanout or trie.max_depth > max_depth:
        raise ValueError(
            f"cannot pad a trie of {n} nodes, fan-out {trie.fanout}, depth "
            f"{trie.max_depth} to {num_nodes} / {fanout} / {max_depth}"
        )
    row_start = np.asarray(trie.row_start)
    edges = int(row_start[-1])
    child_token = np.full(num_nodes + fanout, -1, np.int32)
    child_node = np.full(num_nodes + fanout, -1, np.int32)
    child_token[:edges] = np.asarray(trie.child_token)[:edges]
    child_node[:edges] = np.asarray(trie.child_node)[:edges]
    return Trie(
        np.asarray(trie.root_next),
        np.concatenate([row_start, np.full(num_nodes - n, row_start[-1], np.int32)]),
        child_token,
        child_node,
        np.concatenate([np.asarray(trie.end_item), np.full(num_nodes - n, -1, np.int32)]),
        fanout,
        max_depth,
    )
