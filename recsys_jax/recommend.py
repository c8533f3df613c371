"""Recommend from a trained checkpoint: the Python API and `python -m recsys_jax.recommend`.

    rec = Recommender.from_checkpoint("runs/default")
    rec.recommend(history=["B004756YJA", "OPI Red Shatter Crackle Nail Polish E55 New"], k=10)
    -> [(item_id, title, score), ...]

Histories and candidates are item ids users know (ASINs for Amazon data, movie ids for
MovieLens; the dataset's own numbers work too) or exact titles.
Sequential recommendation decodes over the trie of the whole catalog; direct recommendation
ranks the given candidates by exact log-likelihood (or generates over their trie).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from recsys_jax.cli import positive_int, report_error
from recsys_jax.data.item_refs import ItemResolver
from recsys_jax.data.schema import DataError, UnknownItemError
from recsys_jax.decoding.decoder import DEFAULT_TEMPLATES, Decoder, id_matrix

TASKS = tuple(DEFAULT_TEMPLATES)  # sequential, direct


class Recommender:
    """Item references in, ranked (item id, title, score) rows out; decoding is the
    `Decoder`'s, reference resolution the `ItemResolver`'s."""

    def __init__(self, decoder: Decoder):
        self.decoder = decoder
        self.catalog = decoder.catalog
        self.items = ItemResolver(self.catalog)

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, data_dir: str | None = None, **kwargs
    ) -> Recommender:
        """`kwargs`: the Decoder's (beam, length_penalty)."""
        return cls(Decoder.from_checkpoint(path, data_dir, **kwargs))

    def resolve(self, ref) -> int:
        """An original item id (e.g. an ASIN), a dataset item id or an exact title ->
        internal item index."""
        return self.items.resolve(ref)

    def _check_k(self, k: int, available: int) -> None:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= available:
            raise ValueError(
                f"k={k!r} must be between 1 and {available} (an integer: the "
                "number of items that can be recommended)"
            )

    def recommend(
        self,
        history: Sequence,
        k: int = 10,
        task: str = "sequential",
        candidates: Sequence | None = None,
        exclude_history: bool = True,
        method: str = "score",
    ) -> list[tuple[str, str, float]]:
        return self.recommend_batch(
            [history],
            k,
            task,
            None if candidates is None else [candidates],
            exclude_history,
            method,
        )[0]

    def recommend_batch(
        self,
        histories: Sequence[Sequence],
        k: int = 10,
        task: str = "sequential",
        candidates=None,
        exclude_history: bool = True,
        method: str = "score",
    ) -> list[list[tuple[str, str, float]]]:
        if task not in TASKS:
            raise ValueError(f"task must be 'sequential' or 'direct', got {task!r}")
        if method not in ("score", "generate"):
            raise ValueError(f"method must be 'score' or 'generate', got {method!r}")
        hist = [self.items.resolve_many(h) for h in histories]
        if any(len(h) == 0 for h in hist):
            raise ValueError("empty history: give at least one item the user interacted with")
        decoder = self.decoder
        if task == "sequential":
            self._check_k(k, len(self.catalog) - (max(map(len, hist)) if exclude_history else 0))
            inputs = decoder.prompts(hist, decoder.templates[task])
            items, scores = decoder.beam(inputs, k, exclude=hist if exclude_history else None)
            return [self._rows(i, s) for i, s in zip(items, scores)]
        cands = self._candidates(candidates, hist, k)
        inputs = decoder.prompts(hist, decoder.templates[task], cands)
        # A continued item sequence has no answer span to score: rank over the candidates'
        # trie instead (exact for one-token items).
        if method == "generate" or inputs.continues_sequence:
            items, scores = decoder.beam(inputs, k, candidates=cands)
            return [self._rows(i, s) for i, s in zip(items, scores)]
        padded = id_matrix(cands)
        scores = decoder.score(inputs, candidates=padded)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return [self._rows(padded[r, order[r]], scores[r, order[r]]) for r in range(len(hist))]

    def _candidates(self, candidates, hist, k) -> list[list[int]]:
        if candidates is None or len(candidates) != len(hist):
            raise ValueError("task='direct' needs one candidate list per history")
        cands = [self.items.resolve_many(c) for c in candidates]
        for c in cands:
            self._check_k(k, len(set(c)))
        return cands

    def _rows(self, items, scores):
        return [
            (self.items.display_id(i), self.catalog.titles[i], float(s))
            for i, s in zip(items, scores)
            if i >= 0
        ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m recsys_jax.recommend",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--checkpoint", required=True, help="run dir or checkpoint step dir")
    parser.add_argument(
        "--history", nargs="+", required=True, help="item ids (e.g. ASINs) or exact titles"
    )
    parser.add_argument("--k", type=positive_int, default=10, help="items to recommend")
    parser.add_argument("--task", choices=["sequential", "direct"], default="sequential")
    parser.add_argument(
        "--candidates", nargs="+", help="direct task: candidate item ids (e.g. ASINs) or titles"
    )
    parser.add_argument("--method", choices=["score", "generate"], default="score")
    parser.add_argument(
        "--keep-history", action="store_true", help="sequential: allow items already in the history"
    )
    parser.add_argument("--data-dir", help="where the prepared dataset lives (default: as trained)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    try:
        rec = Recommender.from_checkpoint(args.checkpoint, args.data_dir)
        rows = rec.recommend(
            args.history,
            k=args.k,
            task=args.task,
            candidates=args.candidates,
            exclude_history=not args.keep_history,
            method=args.method,
        )
    except (UnknownItemError, DataError, ValueError, FileNotFoundError) as e:
        return report_error(e)
    if args.json:
        print(json.dumps([{"item_id": i, "title": t, "score": s} for i, t, s in rows]))
        return 0
    width = max(len(t) for _, t, _ in rows) if rows else 5
    print(f"{'rank':>4}  {'item_id':<12} {'score':>9}  title")
    for r, (item, title, score) in enumerate(rows, 1):
        print(f"{r:>4}  {item:<12} {score:>9.3f}  {title[:width]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
