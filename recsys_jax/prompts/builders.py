"""Example builders: dataset records + a template -> prompt segments -> `TokenizedExample`.

Training examples use only training data: sequences are the leave-one-out training parts and
rating/review rows the training split. Negatives are drawn from items the user never touched
(all of the user's items, validation and test included, are excluded), so no training example
ever shows a user's validation or test item, not even as a negative.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import numpy as np

from recsys_jax.example import TokenizedExample
from recsys_jax.masking.sampled import masked_length
from recsys_jax.prompts.templates import SLOT, Template
from recsys_jax.tokenizer import ENTITY, TARGET, TARGET_ENTITY, TEXT, Tokenizer

ITEM_SEPARATOR = ", "


@dataclasses.dataclass
class PromptConfig:
    max_length: int = 256  # tokens after masking (Part A + Part B) — the model's sequence length
    max_history: int = 20  # most recent items shown
    train_candidates: int = 20  # items listed by pick-from-candidates prompts in training
    eval_candidates: int = 100
    # item_sequence family: "causal" = every item a next-item target (one left-to-right Part B
    # span over the whole sequence); "infill" = the last item is the masked answer (more items
    # hidden by masking.extra_entity_mask_prob), like the prompts but without words.
    sequence_objective: str = "causal"
    window_ends: str = "uniform"  # see mixture.window_end
    max_review_words: int = 60
    max_explanation_words: int = 30


@dataclasses.dataclass
class Prompt:
    """Segments before tokenization, and every item the prompt mentions (for leakage checks)."""

    template: Template
    segments: list[tuple[str, str]]
    items: list[int]
    answer: str | None  # the answer text, None for an evaluation prompt


def user_name(user: int) -> str:
    return f"user_{user + 1}"


def star_text(star: float) -> str:
    return str(int(star)) if float(star).is_integer() else f"{star:.1f}"


def first_sentence(text: str, max_words: int) -> str:
    sentence = re.split(r"(?<=[.!?])\s+", text.strip(), maxsplit=1)[0]
    return " ".join(sentence.split()[:max_words])


def feature_word(sentence: str) -> str:
    """A crude stand-in for P5's Sentires features: the longest alphabetic word (>= 4 letters)."""
    words = [w.strip(".,!?;:\"'()").lower() for w in sentence.split()]
    words = [w for w in words if w.isalpha() and len(w) >= 4]
    return max(words, key=len) if words else "quality"


def render(
    template: Template, slots: dict, answer: tuple[str, str] | None, spell
) -> list[tuple[str, str]]:
    """Fill a template: items become entity segments, other slots text; the answer goes last."""
    segments: list[tuple[str, str]] = []
    pos = 0
    for match in SLOT.finditer(template.text):
        if match.start() > pos:
            segments.append((template.text[pos : match.start()], TEXT))
        name = match.group(1)
        if name not in slots:
            raise ValueError(f"template {template.id} needs slot {{{name}}}")
        value = slots[name]
        if name == "item":
            segments.append((spell(value), ENTITY))
        elif name in ("history", "candidates"):
            for k, item in enumerate(value):
                if k:
                    segments.append((ITEM_SEPARATOR, TEXT))
                segments.append((spell(item), ENTITY))
        else:
            segments.append((str(value), TEXT))
        pos = match.end()
    if pos < len(template.text):
        segments.append((template.text[pos:], TEXT))
    if answer is not None:
        segments.append(answer)
    return segments


class PromptFactory:
    """Builds prompts for one dataset, item index and tokenizer."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        index,
        num_items: int,
        known_items: Sequence[set],
        cfg: PromptConfig = PromptConfig(),
    ):
        self.tokenizer = tokenizer
        self.index = index
        self.num_items = num_items
        self.known_items = known_items  # every item each user interacted with (exclusion only)
        self.cfg = cfg
        # Pick-from-candidates prompts in training list as many items as half the budget holds
        # for typical (90th percentile) item lengths; `fit_history` shrinks further if needed.
        lengths = [
            len(tokenizer.encode(index.spell(i)))
            for i in range(0, num_items, max(1, num_items // 500))
        ]
        fit = int((cfg.max_length // 2) // (np.percentile(lengths, 90) + 1))
        self.train_candidates = max(2, min(cfg.train_candidates, fit))
        self._spelled: dict[int, str] = {}

    def spell(self, item: int) -> str:
        """`index.spell`, remembered: every prompt spells dozens of items."""
        text = self._spelled.get(item)
        if text is None:
            text = self._spelled[item] = self.index.spell(item)
        return text

    # -- negatives ---------------------------------------------------------------------------

    def negatives(self, user: int, n: int, rng: np.random.Generator) -> list[int]:
        known = self.known_items[user]
        if self.num_items - len(known) < n:
            raise ValueError(f"catalog too small to draw {n} negatives for {user_name(user)}")
        out: list[int] = []
        while len(out) < n:
            for item in rng.integers(0, self.num_items, size=2 * n).tolist():
                if item not in known and item not in out:
                    out.append(item)
                    if len(out) == n:
                        break
        return out

    # -- prompts per family ------------------------------------------------------------------

    def sequence_prompt(
        self,
        template: Template,
        user: int,
        history: Sequence[int],
        target: int | None,
        rng: np.random.Generator,
        candidates: Sequence[int] | None = None,
        probe: int | None = None,
        num_candidates: int | None = None,
    ) -> Prompt:
        """Sequential and direct families. For training, `target` is the true next item;
        candidates (`num_candidates`, default `train_candidates`, the target among them) and
        yes/no probes are sampled when not given. For evaluation pass target=None with the
        candidates (pick-from prompts) or the probe item (yes/no prompts)."""
        if len(history) == 0:
            raise ValueError(
                f"{user_name(user)} has an empty history; a sequential or direct "
                "prompt needs at least one earlier item"
            )
        slots = {"user": user_name(user), "history": list(history)}
        items = list(history)
        answer = None
        if "candidates" in template.slots:
            if candidates is None:
                n = num_candidates or self.train_candidates
                candidates = self.negatives(user, n - 1, rng) + [target]
                rng.shuffle(candidates)
            slots["candidates"] = list(candidates)
            items += list(candidates)
        if template.answer == "yes_no":
            if probe is None:
                positive = rng.random() < 0.5
                probe = target if positive else self.negatives(user, 1, rng)[0]
                answer = "yes" if positive else "no"
            slots["item"] = probe
            items.append(probe)
        elif target is not None:
            answer = target
        if target is not None and template.answer == "item":
            items.append(target)
        segs_answer = None
        if answer is not None:
            segs_answer = (
                (self.spell(answer), TARGET_ENTITY)
                if template.answer == "item"
                else (answer, TARGET)
            )
        segments = render(template, slots, segs_answer, self.spell)
        return Prompt(template, segments, items, None if answer is None else str(answer))

    def row_prompt(
        self,
        template: Template,
        user: int,
        item: int,
        rating: float,
        review: str,
        summary: str,
        rng: np.random.Generator,
        with_answer: bool = True,
    ) -> Prompt:
        """Rating, explanation and review families, from one interaction row."""
        sentence = first_sentence(review, self.cfg.max_explanation_words)
        slots = {
            "user": user_name(user),
            "item": item,
            "star": star_text(rating),
            "feature": feature_word(sentence),
            "review": " ".join(review.split()[: self.cfg.max_review_words]),
        }
        kind = template.answer
        if kind == "star":
            answer = star_text(rating)
        elif kind == "like":
            answer = "like" if rating >= 4 else "dislike"
        elif kind == "yes_no":
            if rng.random() < 0.5:
                answer = "yes"
            else:
                slots["star"] = star_text(
                    rng.choice([s for s in range(1, 6) if s != round(rating)])
                )
                answer = "no"
        elif kind == "explanation":
            answer = sentence
        elif kind == "summary":
            answer = summary.strip()
        else:
            raise ValueError(f"template {template.id}: unknown answer kind {kind}")
        if template.family in ("explanation", "review") and not answer:
            raise ValueError(f"template {template.id}: the row has no review text")
        segments = render(template, slots, (answer, TARGET) if with_answer else None, self.spell)
        return Prompt(template, segments, [item], answer)

    # -- the bare item sequence (no prompt words) ---------------------------------------------

    def item_sequence(self, items: Sequence[int], training: bool) -> TokenizedExample:
        """Items as consecutive entities and nothing else, most recent `max_history` (+ 1 with
        `training`: the extra item is the last target). Training examples carry their targets
        (the whole sequence for "causal", the last item for "infill"); inference examples carry
        none (`decoding.inputs.causal_sample` lays them out)."""
        items = list(items)
        if not items:
            raise ValueError("an item sequence needs at least one item")
        keep = self.cfg.max_history + (1 if training else 0)
        while True:
            example = self.tokenizer.encode_segments(
                [(self.spell(i), ENTITY) for i in items[-keep:]], "item_sequence"
            )
            if len(example.ids) + 3 <= self.cfg.max_length or keep == 1:
                break
            keep = max(
                1,
                keep
                - max(
                    1,
                    (len(example.ids) + 3 - self.cfg.max_length)
                    // max(1, len(example.ids) // keep),
                ),
            )
        if not training:
            return example
        entities = example.entity_spans
        if self.cfg.sequence_objective == "causal":
            example.target_spans = [(0, len(example.ids))]
            example.open_end = True
        else:
            example.target_spans = [tuple(entities[-1])]
        return example

    # -- tokenization with a length budget ---------------------------------------------------

    def encode(self, prompt: Prompt) -> TokenizedExample:
        example = self.tokenizer.encode_segments(prompt.segments, prompt.template.id)
        needed = masked_length_bound(example)
        if needed > self.cfg.max_length:
            raise ValueError(
                f"prompt {prompt.template.id} needs {needed} tokens after masking but max_length "
                f"is {self.cfg.max_length}; raise max_length or lower max_history"
            )
        return example

    def fit_history(self, build, history: Sequence[int]) -> TokenizedExample:
        """Call `build(history, num_candidates)` with the most recent items that fit the length
        budget; when one history item is still too long, sampled candidate lists shrink."""
        history = list(history)[-self.cfg.max_history :]
        candidates = self.train_candidates
        while True:
            prompt = build(history, candidates)
            example = self.tokenizer.encode_segments(prompt.segments, prompt.template.id)
            over = masked_length_bound(example) - self.cfg.max_length
            if over <= 0:
                return example
            if len(history) > 1:
                # Drop as many of the oldest items as the overflow needs, at least one.
                per_item = max(1, len(example.ids) // (len(history) + 1))
                history = history[min(len(history) - 1, max(1, over // per_item)) :]
            elif "candidates" in prompt.template.slots and candidates > 2:
                candidates -= 1
            else:
                raise ValueError(
                    f"prompt {prompt.template.id} needs {over + self.cfg.max_length} tokens "
                    f"after masking even with one history item, but max_length is "
                    f"{self.cfg.max_length}; raise data.seq_len or use a shorter item index"
                )


def masked_length_bound(example: TokenizedExample) -> int:
    """Longest the example can get after masking: every span adds a mask token and an [sop]
    (its [eop] replaces nothing, the [sop]'s target is the first token). Bounded by masking all
    entities plus the targets."""
    spans = set(example.entity_spans) | set(example.target_spans)
    return masked_length(len(example.ids), max(1, len(spans)))
