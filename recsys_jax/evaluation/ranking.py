"""Ranked item lists from a `Recommender` for leave-one-out cases (sequential and direct).

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

from typing import Iterator, Optional, Sequence

import numpy as np
from tqdm.auto import tqdm

from recsys_jax.data.schema import DataError
from recsys_jax.decoding import trie as trie_lib
from recsys_jax.decoding.inputs import part_a_prompt, stack_prompts
from recsys_jax.decoding.scoring import pad_candidates, score_candidates
from recsys_jax.prompts.templates import get_template


def padded_batches(n: int, size: int, desc: str) -> Iterator[tuple[slice, int]]:
    """(slice of real rows, rows of padding to add) per batch, with a progress bar."""
    for start in tqdm(range(0, n, size), desc=desc, dynamic_ncols=True):
        stop = min(n, start + size)
        yield slice(start, stop), size - (stop - start)


def pad_rows(rows: Sequence, pad: int) -> list:
    return list(rows) + [rows[0]] * pad


def _id_matrix(rows: Sequence[Sequence[int]], width: Optional[int] = None) -> np.ndarray:
    width = width or max(1, max(len(r) for r in rows))
    out = np.full((len(rows), width), -1, np.int32)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r[:width]
    return out




def candidates_of(cases) -> np.ndarray:
    """[N, 100] target first, then the 99 fixed negatives."""
    if cases.negatives is None:
        raise DataError("direct evaluation needs the fixed test negatives (use --split test)")
    return np.concatenate([cases.targets[:, None], cases.negatives], axis=1)


def sequential_ranking(rec, cases, template: str, batch_size: int, k: int,
                       exclude_history: bool, desc: str) -> list[np.ndarray]:
    width = max(len(h) for h in cases.histories)  # one exclusion width = one compiled shape
    ranked = []
    for sl, pad in padded_batches(len(cases), batch_size, desc):
        hist = pad_rows(cases.histories[sl], pad)
        inputs = rec.prompts(hist, template, users=pad_rows(cases.users[sl], pad))
        exclude = (_id_matrix(hist, width) if exclude_history
                   else np.full((batch_size, width), -1, np.int32))
        items, _ = rec.search(inputs, rec.trie, np.zeros(batch_size, np.int32), exclude, k)
        ranked.extend(items[:batch_size - pad])
    return ranked


def direct_generate(rec, cases, template: str, batch_size: int, k: int,
                    desc: str) -> list[np.ndarray]:
    cands = candidates_of(cases)
    ranked = []
    for sl, pad in padded_batches(len(cases), batch_size, desc):
        inputs = rec.prompts(pad_rows(cases.histories[sl], pad), template,
                             users=pad_rows(cases.users[sl], pad))
        tries = trie_lib.candidate_tries(rec.pool, np.asarray(pad_rows(cands[sl], pad)),
                                         rec.tokenizer.vocab_size)
        items, _ = rec.search(inputs, tries.device_put(), np.arange(batch_size, dtype=np.int32),
                            np.full((batch_size, 1), -1, np.int32), k)
        ranked.extend(items[:batch_size - pad])
    return ranked


def _rank_by(cands: np.ndarray, scores: np.ndarray, k: int) -> list[np.ndarray]:
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return list(np.take_along_axis(cands, order, axis=1))


def direct_score(rec, cases, template: str, batch_size: int, k: int,
                 desc: str) -> list[np.ndarray]:
    cands = candidates_of(cases)
    # The prompt's KV cache is copied per candidate (100x): keep the batch small.
    batch_size = max(1, batch_size // 8)
    ranked = []
    for sl, pad in padded_batches(len(cases), batch_size, desc):
        inputs = rec.prompts(pad_rows(cases.histories[sl], pad), template,
                             users=pad_rows(cases.users[sl], pad))
        if inputs.continues_sequence:
            raise ValueError("direct 'score' needs an answer span; a model asked with the "
                             "causal item sequence ranks candidates with 'generate'")
        tokens, lens = pad_candidates(rec.pool, np.asarray(pad_rows(cands[sl], pad)))
        scores = np.asarray(score_candidates(rec.graphdef, rec.state, inputs.prompt,
                                             inputs.mask_pos, tokens, lens,
                                             sop=rec.special.sop, eop=rec.special.eop))
        ranked.extend(_rank_by(cands[sl], scores[:batch_size - pad], k))
    return ranked


def yes_no_prompts(rec, template_id: str, users: Sequence[int], histories: Sequence,
                   probes: Sequence[int]):
    """Part A prompts asking whether each (user, history) would like its probe item."""
    template = get_template(template_id)
    if template.answer != "yes_no":
        raise ValueError(f"template {template_id} is not a yes/no template")
    rng = np.random.default_rng(0)
    out = []
    for user, hist, probe in zip(users, histories, probes):
        example = rec.factory.fit_history(
            lambda h, n: rec.factory.sequence_prompt(template, int(user), h, None, rng,
                                                     probe=int(probe)), hist)
        out.append(part_a_prompt(example, rec.special, rec.masking, answer_is_item=False))
    prompt = stack_prompts([p for p, _ in out], rec.cfg.data.seq_len, rec.special,
                           bucket=True)
    return prompt, np.array([m for _, m in out], np.int32)


def p_yes(rec, prompt, mask_pos) -> np.ndarray:
    """P("yes") / (P("yes") + P("no")) per prompt, from exact answer scores."""
    answers = [rec.tokenizer.encode("yes"), rec.tokenizer.encode("no")]
    tokens, lens = pad_candidates(answers, np.tile(np.arange(2), (len(mask_pos), 1)))
    scores = np.asarray(score_candidates(rec.graphdef, rec.state, prompt, mask_pos, tokens, lens,
                                         sop=rec.special.sop, eop=rec.special.eop))
    return np.exp(scores[:, 0] - np.logaddexp(scores[:, 0], scores[:, 1]))


def direct_yes_no(rec, cases, template: str, batch_size: int, k: int,
                  desc: str) -> list[np.ndarray]:
    """One prompt per (case, candidate): 100 prompts per case, batched across cases."""
    cands = candidates_of(cases)
    n, c = cands.shape
    flat_case = np.repeat(np.arange(n), c)
    flat_item = cands.reshape(-1)
    probs = np.zeros(n * c)
    for sl, pad in padded_batches(n * c, batch_size, desc):
        rows = pad_rows(flat_case[sl], pad)
        prompt, mask_pos = yes_no_prompts(rec, template, cases.users[rows],
                                          [cases.histories[r] for r in rows],
                                          pad_rows(flat_item[sl], pad))
        probs[sl] = p_yes(rec, prompt, mask_pos)[:batch_size - pad]
    return _rank_by(cands, probs.reshape(n, c), k)
