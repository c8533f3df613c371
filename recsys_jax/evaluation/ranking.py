"""Ranked item lists from a `Decoder` for leave-one-out cases (sequential and direct).

Every function walks the cases in fixed-size batches (the last one padded by repeating its
first row) so each compiled program is built once, and returns one ranked array of internal
item ids per case.

- sequential: beam search over the whole catalog trie (full ranking), the user's history
  excluded inside the beam (the headline) or not (`exclude_history=False`).
- direct, 1 target + 99 fixed negatives, three ways:
  `direct_generate` beam search over the 100-candidate trie;
  `direct_score` exact log P(candidate | prompt) of every candidate;
  `direct_yes_no` one yes/no prompt per candidate, ranked by P("yes") / (P("yes") + P("no")).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from tqdm.auto import tqdm

from recsys_jax.data.schema import DataError
from recsys_jax.decoding.decoder import id_matrix
from recsys_jax.prompts.templates import get_template


def padded_batches(n: int, size: int, desc: str) -> Iterator[tuple[slice, int]]:
    """(slice of real rows, rows of padding to add) per batch, with a progress bar."""
    for start in tqdm(range(0, n, size), desc=desc, dynamic_ncols=True):
        stop = min(n, start + size)
        yield slice(start, stop), size - (stop - start)


def pad_rows(rows: Sequence, pad: int) -> list:
    return list(rows) + [rows[0]] * pad


def candidates_of(cases) -> np.ndarray:
    """[N, 100] target first, then the 99 fixed negatives."""
    if cases.negatives is None:
        raise DataError("direct evaluation needs the fixed test negatives (use --split test)")
    return np.concatenate([cases.targets[:, None], cases.negatives], axis=1)


def sequential_ranking(
    decoder, cases, template: str, batch_size: int, k: int, exclude_history: bool, desc: str
) -> list[np.ndarray]:
    width = max(len(h) for h in cases.histories)  # one exclusion width = one compiled shape
    ranked = []
    for sl, pad in padded_batches(len(cases), batch_size, desc):
        hist = pad_rows(cases.histories[sl], pad)
        inputs = decoder.prompts(hist, template, users=pad_rows(cases.users[sl], pad))
        exclude = id_matrix(hist, width) if exclude_history else None
        items, _ = decoder.beam(inputs, k, exclude=exclude)
        ranked.extend(items[: batch_size - pad])
    return ranked


def direct_generate(
    decoder, cases, template: str, batch_size: int, k: int, desc: str
) -> list[np.ndarray]:
    cands = candidates_of(cases)
    ranked = []
    for sl, pad in padded_batches(len(cases), batch_size, desc):
        inputs = decoder.prompts(
            pad_rows(cases.histories[sl], pad), template, users=pad_rows(cases.users[sl], pad)
        )
        items, _ = decoder.beam(inputs, k, candidates=np.asarray(pad_rows(cands[sl], pad)))
        ranked.extend(items[: batch_size - pad])
    return ranked


def _rank_by(cands: np.ndarray, scores: np.ndarray, k: int) -> list[np.ndarray]:
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return list(np.take_along_axis(cands, order, axis=1))


def direct_score(
    decoder, cases, template: str, batch_size: int, k: int, desc: str
) -> list[np.ndarray]:
    cands = candidates_of(cases)
    # Each case decodes its 100 candidates side by side (100 rows of vocabulary-wide logits
    # per case; the prompt's cache is shared): keep the batch small.
    batch_size = max(1, batch_size // 8)
    ranked = []
    for sl, pad in padded_batches(len(cases), batch_size, desc):
        inputs = decoder.prompts(
            pad_rows(cases.histories[sl], pad), template, users=pad_rows(cases.users[sl], pad)
        )
        scores = decoder.score(inputs, candidates=np.asarray(pad_rows(cands[sl], pad)))
        ranked.extend(_rank_by(cands[sl], scores[: batch_size - pad], k))
    return ranked


def yes_no_prompts(
    decoder, template_id: str, users: Sequence[int], histories: Sequence, probes: Sequence[int]
):
    """Part A prompts asking whether each (user, history) would like its probe item."""
    template = get_template(template_id)
    if template.answer != "yes_no":
        raise ValueError(f"template {template_id} is not a yes/no template")
    rng = np.random.default_rng(0)
    factory = decoder.factory
    examples = [
        factory.fit_history(
            lambda h, n: factory.sequence_prompt(
                template, int(user), h, None, rng, probe=int(probe)
            ),
            hist,
        )
        for user, hist, probe in zip(users, histories, probes)
    ]
    return decoder.answer_prompts(examples)


def p_yes(decoder, inputs) -> np.ndarray:
    """P("yes") / (P("yes") + P("no")) per prompt, from exact answer scores."""
    scores = decoder.score(inputs, answers=["yes", "no"])
    return np.exp(scores[:, 0] - np.logaddexp(scores[:, 0], scores[:, 1]))


def direct_yes_no(
    decoder, cases, template: str, batch_size: int, k: int, desc: str
) -> list[np.ndarray]:
    """One prompt per (case, candidate): 100 prompts per case, batched across cases."""
    cands = candidates_of(cases)
    n, c = cands.shape
    flat_case = np.repeat(np.arange(n), c)
    flat_item = cands.reshape(-1)
    probs = np.zeros(n * c)
    for sl, pad in padded_batches(n * c, batch_size, desc):
        rows = pad_rows(flat_case[sl], pad)
        inputs = yes_no_prompts(
            decoder,
            template,
            cases.users[rows],
            [cases.histories[r] for r in rows],
            pad_rows(flat_item[sl], pad),
        )
        probs[sl] = p_yes(decoder, inputs)[: batch_size - pad]
    return _rank_by(cands, probs.reshape(n, c), k)
