"""Rating, explanation and review evaluation on the held-out interaction rows.

Each test row (user, item, rating, review, summary) becomes the family's prompt without its
answer; the answer is generated greedily (no trie) and read back:
- star answers (rating 1-6/1-10, review 4-2/4-4) are parsed as a number; an unparsable
  generation is scored as the training split's mean rating and counted (`num_fallback`).
  A second reading needs no parsing: the expected star sum_s s * P(s | prompt) over the exact
  scores of the five answers "1".."5" (`<family>_<prompt>_expected`); greedy decoding can only
  say the single likeliest star, which costs RMSE;
- explanation (the review's first sentence) and review summaries are compared as text.
The reference is exactly the answer training would have used for the same row. Explanation and
review cases are the test rows that have review text (rows without any have no reference).
"""

from __future__ import annotations

import re

import numpy as np

from recsys_jax.evaluation import metrics as M
from recsys_jax.evaluation.ranking import pad_rows, padded_batches
from recsys_jax.evaluation.text_metrics import text_metrics
from recsys_jax.prompts.templates import get_template

MAX_NEW_TOKENS = {"star": 6, "explanation": 48, "summary": 24}
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def parse_star(text: str) -> float | None:
    """The first number in a generated answer, if it is a star value in [1, 5]."""
    match = _NUMBER.search(text or "")
    if not match:
        return None
    value = float(match.group())
    return value if 1.0 <= value <= 5.0 else None


def row_cases(rows: dict, family: str) -> np.ndarray:
    """Indices of the rows a family can be evaluated on."""
    n = len(rows["user"])
    if family == "rating" or family == "review_rating":
        return np.arange(n)
    return np.array([i for i in range(n) if rows["review"][i].strip()], np.int64)


def _prompts(decoder, template, rows, idx):
    """(decoder inputs, references) of rows `idx` under one template."""
    rng = np.random.default_rng(0)
    factory = decoder.factory
    examples, references = [], []
    for i in idx:
        args = (
            template,
            int(rows["user"][i]),
            int(rows["item"][i]),
            float(rows["rating"][i]),
            rows["review"][i],
            rows["summary"][i],
            rng,
        )
        references.append(factory.row_prompt(*args).answer)
        examples.append(factory.encode(factory.row_prompt(*args, with_answer=False)))
    return decoder.answer_prompts(examples), references


def _batched_prompts(decoder, template_id, rows, idx, batch_size, desc):
    """Per padded batch: (decoder inputs, references, real rows)."""
    template = get_template(template_id)
    for sl, pad in padded_batches(len(idx), batch_size, desc):
        inputs, refs = _prompts(decoder, template, rows, pad_rows(idx[sl], pad))
        yield inputs, refs, batch_size - pad


def generate_answers(
    decoder, template_id: str, rows: dict, idx: np.ndarray, batch_size: int, desc: str
) -> tuple[list[str], list[str]]:
    """(references, generated texts) for rows `idx` under one template."""
    max_new = MAX_NEW_TOKENS[get_template(template_id).answer]
    references, generated = [], []
    for inputs, refs, real in _batched_prompts(decoder, template_id, rows, idx, batch_size, desc):
        references += refs[:real]
        generated += decoder.generate(inputs, max_new)[:real]
    return references, generated


def expected_stars(
    decoder, template_id: str, rows: dict, idx: np.ndarray, batch_size: int, desc: str
) -> np.ndarray:
    """sum_s s * P(s) over the answers "1".."5", renormalised over those five."""
    out = []
    for inputs, _, real in _batched_prompts(decoder, template_id, rows, idx, batch_size, desc):
        scores = decoder.score(inputs, answers=[str(star) for star in range(1, 6)])
        p = np.exp(scores - scores.max(axis=1, keepdims=True))
        out.append(((p / p.sum(axis=1, keepdims=True)) @ np.arange(1, 6))[:real])
    return np.concatenate(out) if out else np.zeros(0)


def evaluate_rows(
    decoder,
    family: str,
    template_id: str,
    rows: dict,
    batch_size: int,
    train_mean: float,
    user_ids,
    item_ids,
):
    """Yields (name, metrics entry, prediction rows) for one family and template: the
    generated answers, then (star answers only) the expected star."""
    template = get_template(template_id)
    idx = row_cases(rows, "review_rating" if template.answer == "star" else family)
    if len(idx) == 0:
        raise ValueError(f"no test rows with review text for family {family!r}")
    refs, gens = generate_answers(
        decoder, template_id, rows, idx, batch_size, f"{family} {template_id}"
    )
    base = [{"user": user_ids[rows["user"][i]], "item": item_ids[rows["item"][i]]} for i in idx]
    if template.answer == "star":
        predicted = [parse_star(g) for g in gens]
        targets = rows["rating"][idx]
        entry = M.rating_metrics(targets, predicted, fallback=train_mean)
        entry["fallback_rule"] = "unparsable or out-of-range answer -> training mean rating"
        preds = [
            dict(b, target=float(t), predicted=p, generated=g)
            for b, t, p, g in zip(base, targets, predicted, gens)
        ]
        yield f"{family}_{template_id}", entry, preds
        expected = expected_stars(
            decoder, template_id, rows, idx, batch_size, f"{family} {template_id} expected"
        )
        e_entry = M.rating_metrics(targets, expected)
        e_entry["method"] = "expected star over exact scores of 1..5"
        e_preds = [
            dict(b, target=float(t), predicted=float(p)) for b, t, p in zip(base, targets, expected)
        ]
        yield f"{family}_{template_id}_expected", e_entry, e_preds
        return
    entry = text_metrics(refs, gens, bleu_order=4 if family == "explanation" else 2)
    preds = [dict(b, reference=r, generated=g) for b, r, g in zip(base, refs, gens)]
    yield f"{family}_{template_id}", entry, preds
