"""Evaluate a checkpoint: `python -m recsys_jax.evaluate --checkpoint DIR [--split test]`.

Protocol (DESIGN.md §2.5, §3.1), every case of the split, never dropped:
- sequential: the next item by trie-constrained beam search over the whole catalog, full
  ranking. Headline = the user's history excluded (inside the beam search, so the top-k are
  the best non-history items); `--unfiltered` adds a second pass without the exclusion.
- direct: target + the 99 fixed test negatives; the 100 candidates are ranked by beam search
  over the restricted candidate trie (`direct_gen`). The candidate-listing templates 5-5..5-8
  do not fit 100 items into a short context, so direct uses the sequential prompt, labelled.
Seen prompts: 2-3 (sequential); unseen (zero-shot): 2-13. Writes metrics.json and
predictions.jsonl (one file per family and prompt) under --out.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from tqdm.auto import tqdm

from recsys_jax.data.schema import DataError
from recsys_jax.decoding import trie as trie_lib
from recsys_jax.decoding.beam_search import beam_search
from recsys_jax.evaluation import metrics as M
from recsys_jax.recommend import Recommender

SEQUENTIAL_PROMPTS = {"seen": "2-3", "unseen": "2-13"}


def _batches(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def _pad_rows(rows: Sequence[Sequence[int]], width: Optional[int] = None) -> np.ndarray:
    width = width or max(1, max(len(r) for r in rows))
    out = np.full((len(rows), width), -1, np.int32)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r[:width]
    return out


def sequential_ranking(rec: Recommender, cases, template: str, batch_size: int, k: int,
                       exclude_history: bool, desc: str) -> list[np.ndarray]:
    # One exclusion width for every batch keeps a single compiled shape.
    width = max(len(h) for h in cases.histories)
    ranked = []
    for sl in tqdm(list(_batches(len(cases), batch_size)), desc=desc, dynamic_ncols=True):
        users, hist = cases.users[sl], cases.histories[sl]
        rows = len(hist)
        pad = batch_size - rows  # keep one compiled shape: pad the last batch
        hist_p = list(hist) + [hist[0]] * pad
        prompt, mask_pos = rec.prompts(hist_p, template, users=np.r_[users, [users[0]] * pad])
        exclude = (_pad_rows(hist_p, width) if exclude_history
                   else np.full((batch_size, width), -1, np.int32))
        items, _ = beam_search(rec.graphdef, rec.state, prompt, mask_pos, rec.trie,
                               np.zeros(batch_size, np.int32), exclude, beam=max(rec.beam, k),
                               top_k=k, eop=rec.special.eop, sop=rec.special.sop,
                               length_penalty=rec.length_penalty)
        ranked.extend(np.asarray(items)[:rows])
    return ranked


def direct_ranking(rec: Recommender, cases, template: str, batch_size: int, k: int,
                   desc: str) -> list[np.ndarray]:
    if cases.negatives is None:
        raise DataError("direct evaluation needs the fixed test negatives (use --split test)")
    ranked = []
    for sl in tqdm(list(_batches(len(cases), batch_size)), desc=desc, dynamic_ncols=True):
        users, hist = cases.users[sl], cases.histories[sl]
        cands = np.concatenate([cases.targets[sl, None], cases.negatives[sl]], axis=1)
        rows, pad = len(hist), batch_size - len(hist)
        hist_p = list(hist) + [hist[0]] * pad
        cands_p = np.concatenate([cands, np.repeat(cands[:1], pad, 0)]) if pad else cands
        prompt, mask_pos = rec.prompts(hist_p, template, users=np.r_[users, [users[0]] * pad])
        tries = trie_lib.candidate_tries(rec.pool, cands_p, rec.tokenizer.vocab_size)
        items, _ = beam_search(rec.graphdef, rec.state, prompt, mask_pos, tries.device_put(),
                               np.arange(batch_size, dtype=np.int32),
                               np.full((batch_size, 1), -1, np.int32), beam=max(rec.beam, k),
                               top_k=k, eop=rec.special.eop, sop=rec.special.sop,
                               length_penalty=rec.length_penalty)
        ranked.extend(np.asarray(items)[:rows])
    return ranked


def evaluate(rec: Recommender, split: str, prompts: Sequence[str], families: Sequence[str],
             out_dir: Path, batch_size: int = 64, unfiltered: bool = False,
             limit: Optional[int] = None) -> dict:
    prepared = rec.assets.prepared
    cases = prepared.test_cases() if split == "test" else prepared.validation_cases()
    if limit:
        cases = type(cases)(cases.users[:limit], cases.histories[:limit], cases.targets[:limit],
                            None if cases.negatives is None else cases.negatives[:limit])
    catalog, users_ids = prepared.catalog, prepared.user_ids
    results = {"checkpoint": getattr(rec, "checkpoint", None), "split": split, "cases": len(cases),
               "partial": bool(limit), "beam": rec.beam, "machine": platform.machine(),
               "date": time.strftime("%Y-%m-%d"), "families": {}}
    out_dir.mkdir(parents=True, exist_ok=True)
    for family in families:
        for which in prompts:
            template = SEQUENTIAL_PROMPTS[which]
            start = time.perf_counter()
            if family == "sequential":
                ranked = sequential_ranking(rec, cases, template, batch_size, 20, True,
                                            f"sequential {template}")
                entry = {"prompt": template, "seen": which == "seen",
                         "history_excluded": M.ranking_metrics(cases.targets, ranked)}
                rows = M.ranking_rows(users_ids, catalog.item_ids, cases.users, cases.targets,
                                      ranked)
                if unfiltered:
                    raw = sequential_ranking(rec, cases, template, batch_size, 20, False,
                                             f"sequential {template} unfiltered")
                    entry["unfiltered"] = M.ranking_metrics(cases.targets, raw)
            elif family == "direct":
                ranked = direct_ranking(rec, cases, template, batch_size, 10,
                                        f"direct {template}")
                entry = {"prompt": template, "seen": which == "seen",
                         "method": "generation over the 100-candidate trie",
                         "candidates_1_plus_99": M.ranking_metrics(cases.targets, ranked,
                                                                   ks=(1, 5, 10))}
                rows = M.ranking_rows(users_ids, catalog.item_ids, cases.users, cases.targets,
                                      ranked)
            else:
                raise ValueError(f"family {family!r} is not evaluated by this command yet")
            entry["seconds"] = round(time.perf_counter() - start, 1)
            entry["ms_per_case"] = round(1000 * entry["seconds"] / max(len(cases), 1), 2)
            name = f"{family}_{template}"
            M.write_predictions(out_dir / f"predictions_{name}.jsonl", rows)
            results["families"][name] = entry
            M.write_metrics(out_dir / "metrics.json", results)
            print(json.dumps({name: entry}), flush=True)
    return results


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recsys_jax.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--split", choices=["test", "validation"], default="test")
    parser.add_argument("--prompts", nargs="+", choices=["seen", "unseen"], default=["seen"])
    parser.add_argument("--families", nargs="+", choices=["sequential", "direct"],
                        default=["sequential", "direct"])
    parser.add_argument("--out", help="output folder (default: <run>/eval_<split>)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--beam", type=int, default=20)
    parser.add_argument("--unfiltered", action="store_true",
                        help="also rank without excluding history (a second pass)")
    parser.add_argument("--limit", type=int, help="only the first N cases (marked partial)")
    parser.add_argument("--data-dir")
    args = parser.parse_args(argv)
    try:
        rec = Recommender.from_checkpoint(args.checkpoint, args.data_dir, beam=args.beam)
        rec.checkpoint = str(args.checkpoint)
        out = Path(args.out) if args.out else Path(args.checkpoint) / f"eval_{args.split}"
        evaluate(rec, args.split, args.prompts, args.families, out, args.batch_size,
                 args.unfiltered, args.limit)
    except (DataError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
