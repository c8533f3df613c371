"""Span geometry: `outside` keeps exactly the spans that overlap none of the others."""

import numpy as np

from recsys_jax.masking.spans import outside, overlaps_any


def test_outside_equals_the_pairwise_overlap_test():
    rng = np.random.default_rng(0)
    for _ in range(2000):
        n = int(rng.integers(1, 30))
        cuts = np.sort(rng.choice(n + 1, size=min(n + 1, int(rng.integers(0, 9))), replace=False))
        others = [(int(a), int(b)) for a, b in zip(cuts[::2], cuts[1::2])]  # sorted, disjoint
        starts = rng.integers(0, n, int(rng.integers(0, 9)))
        spans = [(int(s), int(rng.integers(s + 1, n + 1))) for s in starts]  # any order
        assert outside(spans, others) == [x for x in spans if not overlaps_any(x, others)]


def test_touching_spans_do_not_overlap():
    assert outside([(0, 2), (2, 4), (4, 6), (1, 3)], [(2, 4)]) == [(0, 2), (4, 6)]
    assert outside([(3, 5), (0, 1)], []) == [(3, 5), (0, 1)]
