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
from typing import Optional

import jax
import numpy as np

from recsys_jax.decoding.generate import generate_text
from recsys_jax.decoding.inputs import part_a_prompt, stack_prompts
from recsys_jax.decoding.scoring import pad_candidates, score_candidates
from recsys_jax.evaluation import metrics as M
from recsys_jax.evaluation.ranking import pad_rows, padded_batches
from recsys_jax.evaluation.text_metrics import text_metrics
from recsys_jax.prompts.templates import get_template

MAX_NEW_TOKENS = {"star": 6, "explanation": 48, "summary": 24}
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def parse_star(text: str) -> Optional[float]:
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


def _prompts(rec, template, rows, idx):
    rng = np.random.default_rng(0)
    prompts, references = [], []
    for i in idx:
        args = (template, int(rows["user"][i]), int(rows["item"][i]), float(rows["rating"][i]),
                rows["review"][i], rows["summary"][i], rng)
        references.append(rec.factory.row_prompt(*args).answer)
        example = rec.factory.encode(rec.factory.row_prompt(*args, with_answer=False))
        prompts.append(part_a_prompt(example, rec.special, rec.masking, answer_is_item=False))
    return prompts, references


def _batched_prompts(rec, template_id, rows, idx, batch_size, desc):
    """Per padded batch: (stacked Part A prompts, mask positions, references, real rows)."""
    template = get_template(template_id)
    for sl, pad in padded_batches(len(idx), batch_size, desc):
        prompts, refs = _prompts(rec, template, rows, pad_rows(idx[sl], pad))
        prompt = stack_prompts([p for p, _ in prompts], rec.cfg.data.seq_len, rec.special,
                               bucket=True)
        yield prompt, np.array([m for _, m in prompts], np.int32), refs, batch_size - pad


def generate_answers(rec, template_id: str, rows: dict, idx: np.ndarray, batch_size: int,
                     desc: str) -> tuple[list[str], list[str]]:
    """(references, generated texts) for rows `idx` under one template."""
    max_new = MAX_NEW_TOKENS[get_template(template_id).answer]
    s = rec.special
    banned = (s.pad, s.mask, s.smask, s.gmask, s.sop)
    references, generated = [], []
    for prompt, mask_pos, refs, real in _batched_prompts(rec, template_id, rows, idx,
                                                         batch_size, desc):
        out, lengths = generate_text(rec.graphdef, rec.state, prompt, mask_pos,
                                     jax.random.key(0), max_new=max_new, eop=s.eop, sop=s.sop,
                                     banned=banned)
        out, lengths = np.asarray(out), np.asarray(lengths)
        references += refs[:real]
        generated += [rec.tokenizer.decode(out[r, :lengths[r]]).strip() for r in range(real)]
    return references, generated


def expected_stars(rec, template_id: str, rows: dict, idx: np.ndarray, batch_size: int,
                   desc: str) -> np.ndarray:
    """sum_s s * P(s) over the answers "1".."5", renormalised over those five."""
    answers = [rec.tokenizer.encode(str(star)) for star in range(1, 6)]
    out = []
    for prompt, mask_pos, _, real in _batched_prompts(rec, template_id, rows, idx,
                                                      batch_size, desc):
        # The five answers as a candidate pool: every row scores candidates 0..4.
        tokens, lens = pad_candidates(answers, np.tile(np.arange(5), (len(mask_pos), 1)))
        scores = np.asarray(score_candidates(rec.graphdef, rec.state, prompt, mask_pos, tokens,
                                             lens, sop=rec.special.sop, eop=rec.special.eop))
        p = np.exp(scores - scores.max(axis=1, keepdims=True))
        out.append(((p / p.sum(axis=1, keepdims=True)) @ np.arange(1, 6))[:real])
    return np.concatenate(out) if out else np.zeros(0)


def evaluate_rows(rec, family: str, template_id: str, rows: dict, batch_size: int,
                  train_mean: float, user_ids, item_ids):
    """Yields (name, metrics entry, prediction rows) for one family and template: the
    generated answers, then (star answers only) the expected star."""
    template = get_template(template_id)
    idx = row_cases(rows, "review_rating" if template.answer == "star" else family)
    if len(idx) == 0:
        raise ValueError(f"no test rows with review text for family {family!r}")
    refs, gens = generate_answers(rec, template_id, rows, idx, batch_size,
                                  f"{family} {template_id}")
    base = [{"user": user_ids[rows["user"][i]], "item": item_ids[rows["item"][i]]} for i in idx]
    if template.answer == "star":
        predicted = [parse_star(g) for g in gens]
        targets = rows["rating"][idx]
        entry = M.rating_metrics(targets, predicted, fallback=train_mean)
        entry["fallback_rule"] = "unparsable or out-of-range answer -> training mean rating"
        preds = [dict(b, target=float(t), predicted=p, generated=g)
                 for b, t, p, g in zip(base, targets, predicted, gens)]
        yield f"{family}_{template_id}", entry, preds
        expected = expected_stars(rec, template_id, rows, idx, batch_size,
                                  f"{family} {template_id} expected")
        e_entry = M.rating_metrics(targets, expected)
        e_entry["method"] = "expected star over exact scores of 1..5"
        e_preds = [dict(b, target=float(t), predicted=float(p))
                   for b, t, p in zip(base, targets, expected)]
        yield f"{family}_{template_id}_expected", e_entry, e_preds
        return
    entry = text_metrics(refs, gens, bleu_order=4 if family == "explanation" else 2)
    preds = [dict(b, reference=r, generated=g) for b, r, g in zip(base, refs, gens)]
    yield f"{family}_{template_id}", entry, preds
