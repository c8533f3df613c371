"""The multitask training mixture: one training record -> one tokenized example.

Two kinds of record feed it: a user's leave-one-out training sequence (sequential, direct and
plain sequence-text examples) and a training-split interaction row (rating, explanation, review).
Each record draws a family by the configured weights, then a seen template of that family.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import numpy as np

from recsys_jax.example import TokenizedExample
from recsys_jax.masking.sampled import masked_length
from recsys_jax.prompts.builders import PromptFactory, user_name
from recsys_jax.prompts.families import BARE_FAMILIES, ROW_FAMILIES, SEQUENCE_FAMILIES
from recsys_jax.prompts.templates import Template, family_templates
from recsys_jax.tokenizer import ENTITY, TEXT

# Families drawn from a user's sequence record (worded or bare) and from interaction rows.
SEQUENCE_RECORD_FAMILIES = SEQUENCE_FAMILIES + BARE_FAMILIES
WINDOW_ENDS = ("uniform", "even")


def window_end(length: int, window: int, mode: str, rng: np.random.Generator) -> int:
    """End (exclusive) of a training window of `window` items in a sequence of `length`.

    "uniform": any end from `window` to `length` alike. An item is a target only in windows
    ending after it, so the most recent items are rarely trained on (the last one with
    probability 1 / (length - window + 1)) while they matter most for what comes next.
    "even": an end drawn past the sequence is clipped to its end, so every item after the
    first window is a target with the same probability (window / length), like tiling the
    sequence into windows from its end.
    """
    if length <= window:
        return length
    if mode == "even":
        return min(length, int(rng.integers(window, length + window)))
    return int(rng.integers(window, length + 1))


def active_families(
    weights: Mapping[str, float], has_ratings: bool, has_reviews: bool, log=print
) -> dict[str, float]:
    """Drop families the data cannot support, saying so, and families with zero weight."""
    active = {}
    for family, weight in weights.items():
        if weight <= 0:
            continue
        if family == "rating" and not has_ratings:
            log("[tasks] skipping family 'rating': this dataset has no ratings")
            continue
        if family in ("explanation", "review") and not has_reviews:
            log(f"[tasks] skipping family '{family}': this dataset has no review text")
            continue
        active[family] = float(weight)
    if not active:
        raise ValueError("no task family is left to train on; check data.family_weights")
    return active


@functools.lru_cache(maxsize=64)
def _cdfs(options: tuple[tuple[str, float], ...]) -> tuple[list[str], np.ndarray]:
    names = [n for n, _ in options]
    p = np.array([w for _, w in options], np.float64)
    cdf = (p / p.sum()).cumsum()
    cdf /= cdf[-1]  # as Generator.choice normalises it
    return names, cdf


class TrainingMixture:
    def __init__(self, factory: PromptFactory, weights: Mapping[str, float]):
        self.factory = factory
        self.seq_families = {f: w for f, w in weights.items() if f in SEQUENCE_RECORD_FAMILIES}
        self.row_families = {f: w for f, w in weights.items() if f in ROW_FAMILIES}
        self.templates: dict[str, list[Template]] = {
            f: family_templates(f, seen=True) for f in weights if f not in BARE_FAMILIES
        }

    @property
    def sequence_weight(self) -> float:
        return sum(self.seq_families.values())

    @property
    def row_weight(self) -> float:
        return sum(self.row_families.values())

    @staticmethod
    def _pick(options: Mapping[str, float], rng: np.random.Generator) -> str:
        """`rng.choice(len(names), p=weights / weights.sum())` with the cumulative
        distribution worked out once per mixture: the same draw, without choice's checks."""
        names, cdf = _cdfs(tuple(options.items()))
        return names[int(cdf.searchsorted(rng.random(), side="right"))]

    def from_sequence(
        self, user: int, train_items: Sequence[int], rng: np.random.Generator
    ) -> TokenizedExample:
        """A random cut of the user's training sequence: history before it, target at it."""
        train_items = list(train_items)
        if len(train_items) < 2:
            raise ValueError(f"{user_name(user)}: a training sequence needs 2+ items")
        family = self._pick(self.seq_families, rng)
        if family == "sequence_text":
            return self.sequence_text(user, train_items)
        if family == "item_sequence":
            # Sequences longer than the window: a random window end, so every item is a
            # target some epoch (the window ending at the last item is the most common).
            cfg = self.factory.cfg
            end = window_end(len(train_items), cfg.max_history + 1, cfg.window_ends, rng)
            return self.factory.item_sequence(train_items[:end], training=True)
        cut = int(rng.integers(1, len(train_items)))
        history, target = train_items[:cut], train_items[cut]
        template = self.templates[family][rng.integers(len(self.templates[family]))]
        f = self.factory
        return f.fit_history(
            lambda h, n: f.sequence_prompt(template, user, h, target, rng, num_candidates=n),
            history,
        )

    def sequence_text(self, user: int, train_items: Sequence[int]) -> TokenizedExample:
        """Plain behaviour text, masked by the GLM objectives (entity-aware) without a prompt."""
        f = self.factory
        items = list(train_items)[-f.cfg.max_history :]
        while True:
            segments = [(f"{user_name(user)} bought ", TEXT)]
            for k, item in enumerate(items):
                segments += ([(", ", TEXT)] if k else []) + [(f.spell(item), ENTITY)]
            segments.append((".", TEXT))
            example = f.tokenizer.encode_segments(segments, "sequence_text")
            if (
                masked_length(len(example.ids), len(example.entity_spans)) <= f.cfg.max_length
                or len(items) == 1
            ):
                example.sentence_spans = [(0, len(example.ids))]
                return example
            items = items[1:]

    def from_row(
        self,
        user: int,
        item: int,
        rating: float,
        review: str,
        summary: str,
        rng: np.random.Generator,
    ) -> TokenizedExample:
        family = self._pick(self.row_families, rng)
        template = self.templates[family][rng.integers(len(self.templates[family]))]
        return self.factory.encode(
            self.factory.row_prompt(template, user, item, rating, review, summary, rng)
        )
