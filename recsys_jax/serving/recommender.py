"""Recommend from a loaded bundle: item references -> prompts -> the exported beam search.

    from recsys_jax.serving import BundleRecommender
    rec = BundleRecommender.load("bundles/default")
    rec.recommend(["B004756YJA", "OPI Red Shatter Crackle Nail Polish E55 New"], k=10)
    -> [(item_id, title, score), ...]

Prompts come from the same builder as the checkpoint `Recommender` (`decoding.inputs.
history_prompts`), so both decode identical tokens. Batches are padded to a few fixed sizes
(and the history-exclusion width to powers of two) so the exported function, whose batch
dimension is symbolic, compiles once per size rather than once per request count.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np

from recsys_jax import configlib
from recsys_jax.data.item_refs import ItemResolver
from recsys_jax.decoding.inputs import ITEM_SEQUENCE, PROMPT_KEYS, START_KEYS, history_prompts
from recsys_jax.masking.config import MaskingConfig
from recsys_jax.prompts.builders import PromptConfig, PromptFactory
from recsys_jax.prompts.templates import get_template
from recsys_jax.serving.bundle import Bundle, load_bundle

BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)
MIN_EXCLUDE_WIDTH = 16


class _Spellings:
    """The item index as the prompt builder needs it: each item's stored spelling."""

    def __init__(self, spellings: Sequence[str]):
        self._spellings = list(spellings)
        self.num_items = len(self._spellings)

    def spell(self, item: int) -> str:
        return self._spellings[item]


def _bucket(n: int, sizes: Sequence[int]) -> int:
    return next((s for s in sizes if s >= n), n)


class BundleRecommender:
    def __init__(self, bundle: Bundle, max_batch: int = 32):
        self.bundle = bundle
        cfg, decoding = bundle.config, bundle.spec["decoding"]
        self.beam = int(decoding["beam"])
        self.seq_len = int(decoding["seq_len"])
        self.tokenizer = bundle.tokenizer
        self.special = self.tokenizer.special
        self.masking = dataclasses.replace(
            configlib.from_dict(MaskingConfig, cfg["masking"], "masking"),
            max_length=self.seq_len + 2,
        )
        data = cfg["data"]
        prompt_cfg = PromptConfig(
            max_length=self.seq_len,
            max_history=data["max_history"],
            train_candidates=data["train_candidates"],
            sequence_objective=data.get("sequence_objective", "causal"),
        )
        self.item_ids, self.titles = bundle.item_ids, bundle.titles
        # known_items only feed negative sampling, which serving never does.
        self.factory = PromptFactory(
            self.tokenizer, _Spellings(bundle.spellings), len(self.item_ids), [set()], prompt_cfg
        )
        self.template = (
            ITEM_SEQUENCE
            if decoding["template"] == ITEM_SEQUENCE
            else get_template(decoding["template"])
        )
        self.max_batch = max_batch
        self.batch_sizes = tuple(s for s in BATCH_SIZES if s < max_batch) + (max_batch,)
        self.items = ItemResolver.from_lists(self.item_ids, self.titles, bundle.source_ids)
        # Placed on the device once; every call reuses them.
        self._weights = jax.device_put(bundle.weights)
        self._trie = jax.device_put(bundle.trie)
        self._call = jax.jit(bundle.exported.call)

    @classmethod
    def load(cls, path: str | Path, **kwargs) -> BundleRecommender:
        return cls(load_bundle(path), **kwargs)

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    # -- input checking ------------------------------------------------------------------------

    def resolve(self, ref) -> int:
        """An original item id (e.g. an ASIN), a dataset item id or an exact title ->
        internal item index."""
        return self.items.resolve(ref)

    def check_k(self, k, history_len: int, exclude_history: bool = True) -> None:
        available = min(self.beam, self.num_items - (history_len if exclude_history else 0))
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= available:
            raise ValueError(
                f"k={k!r} must be an integer between 1 and {available} (the beam "
                f"width {self.beam} of this bundle caps k; re-export with a larger "
                "--beam for more)"
            )

    # -- recommending ----------------------------------------------------------------------------

    def recommend(
        self, history: Sequence, k: int = 10, exclude_history: bool = True
    ) -> list[tuple[str, str, float]]:
        return self.recommend_batch([history], k, exclude_history)[0]

    def recommend_batch(
        self, histories: Sequence[Sequence], k: int = 10, exclude_history: bool = True
    ) -> list[list[tuple[str, str, float]]]:
        hist = [[self.resolve(x) for x in h] for h in histories]
        if any(len(h) == 0 for h in hist):
            raise ValueError("empty history: give at least one item the user interacted with")
        for h in hist:
            self.check_k(k, len(h), exclude_history)
        out = []
        for start in range(0, len(hist), self.max_batch):
            chunk = hist[start : start + self.max_batch]
            out += self.run([(h, k, exclude_history) for h in chunk])
        return out

    def run(self, requests: Sequence[tuple[Sequence[int], int, bool]]):
        """Checked requests (internal history ids, k, exclude_history), at most max_batch of
        them, in one call of the exported function -> rows per request."""
        n = len(requests)
        if not 1 <= n <= self.max_batch:
            raise ValueError(f"run() takes 1..{self.max_batch} requests, got {n}")
        size = _bucket(n, self.batch_sizes)
        # Pad with copies of the first request: a real prompt, results dropped.
        hist = [list(h) for h, _, _ in requests] + [list(requests[0][0])] * (size - n)
        excl = [e for _, _, e in requests] + [requests[0][2]] * (size - n)
        decoder_inputs = history_prompts(
            self.factory, self.template, hist, self.special, self.masking, self.seq_len
        )
        width = max(MIN_EXCLUDE_WIDTH, 1 << (max(map(len, hist)) - 1).bit_length())
        exclude = np.full((size, width), -1, np.int32)
        for row, (h, e) in enumerate(zip(hist, excl)):
            if e:
                exclude[row, : len(h)] = h
        inputs = {k: decoder_inputs.prompt[k] for k in PROMPT_KEYS}
        inputs.update(mask_pos=decoder_inputs.mask_pos, exclude=exclude)
        if decoder_inputs.start is not None:
            inputs.update(zip(START_KEYS, decoder_inputs.start))
        items, scores = self._call(self._weights, self._trie, inputs)
        items, scores = np.asarray(items), np.asarray(scores)
        return [
            [
                (self.items.display_id(i), self.titles[i], float(s))
                for i, s in zip(items[row, :k], scores[row, :k])
                if i >= 0
            ]
            for row, (_, k, _) in enumerate(requests)
        ]

    def warmup(self, sizes: Sequence[int] | None = None, log=None) -> None:
        """Compile the padded batch sizes ahead of the first requests."""
        for size in sizes or self.batch_sizes:
            if log:
                log(f"[serve] compiling batch size {size}")
            self.run([([0], 1, True)] * min(size, self.max_batch))
