"""Evaluate a checkpoint: `python -m recsys_jax.evaluate --checkpoint DIR [--split test]`.

Protocol (docs/design.md: leakage rules, evaluation); every case of the split counts, none is
dropped:
- sequential: next item by trie-constrained beam search over the whole catalog (full ranking).
  Headline = the user's history excluded inside the beam; `--unfiltered` adds a second pass.
- direct: target + the 99 fixed test negatives, ranked by generation over the candidate trie
  (`generate`), by exact log-likelihood of each candidate (`score`), or by P("yes") of a
  yes/no prompt per candidate (`yes_no`, templates 5-1/5-4; 100 prompts per case). The
  candidate-listing templates 5-5..5-8 cannot hold 100 items in a short context, so
  `generate`/`score` use the sequential prompt (2-3 seen, 2-13 unseen), labelled.
- rating (RMSE/MAE), explanation (BLEU-4, ROUGE), review (summary: BLEU-2, ROUGE; stars from
  the review: RMSE/MAE): greedy generation on the held-out rating rows; star answers also as
  the expected star over the exact scores of "1".."5" (`_expected`).
Families the data cannot support are skipped with a message. `--prompts seen unseen` or
explicit template ids. Writes metrics.json and predictions_<family>_<prompt>[_<method>].jsonl;
a later call into the same folder (same checkpoint, split, beam, --limit or not) adds its
entries to metrics.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from recsys_jax.cli import positive_int, report_error
from recsys_jax.data.schema import DataError
from recsys_jax.decoding.decoder import Decoder
from recsys_jax.decoding.inputs import ITEM_SEQUENCE
from recsys_jax.evaluation import metrics as M
from recsys_jax.evaluation import ranking
from recsys_jax.evaluation.row_tasks import evaluate_rows
from recsys_jax.prompts.families import PROMPT_FAMILIES
from recsys_jax.prompts.templates import UNSEEN, get_template

FAMILIES = PROMPT_FAMILIES  # the evaluable families
# Seen prompts per family (docs/design.md, task families); direct uses the sequential prompt for the
# candidate-trie and scoring methods, and 5-1/5-4 for yes/no.
SEEN_PROMPTS = {
    "sequential": ["2-3"],
    "direct": ["2-3", "5-1", "5-4"],
    "rating": ["1-6"],
    "explanation": ["3-3", "3-9"],
    "review": ["4-1", "4-2"],
}
UNSEEN_PROMPTS = {
    "sequential": ["2-13"],
    "direct": ["2-13"],
    "rating": ["1-10"],
    "explanation": ["3-12"],
    "review": ["4-4"],
}
DIRECT_METHODS = ("generate", "score", "yes_no")


def prompts_for(
    family: str, prompts: Sequence[str], trained: Sequence[str] = FAMILIES
) -> list[str]:
    """Template ids for a family from 'seen' / 'unseen' / explicit ids (other families' ids
    are ignored; sequential-family ids also serve direct). `trained`: the training families;
    a model trained on the bare item sequence is asked with it (`items`) first, and with the
    sequential templates only when it was trained on them."""
    out: list[str] = []
    bare = family in ("sequential", "direct") and "item_sequence" in trained
    worded = "sequential" in trained or family not in ("sequential", "direct")
    for p in prompts:
        if p == ITEM_SEQUENCE:
            out += [p] if family in ("sequential", "direct") else []
        elif p == "seen":
            out += ([ITEM_SEQUENCE] if bare else []) + (SEEN_PROMPTS[family] if worded else [])
        elif p == "unseen":
            out += UNSEEN_PROMPTS[family] if worded else []
        else:
            t = get_template(p)
            if t.family == family or (
                family == "direct"
                and t.family == "sequential"
                and t.answer == "item"
                and "candidates" not in t.slots
            ):
                out.append(p)
    return list(dict.fromkeys(out))


def supported_families(prepared, split: str, requested: Sequence[str], log=print) -> list[str]:
    out = []
    for family in requested:
        if family == "direct" and split != "test":
            log("[evaluate] skipping direct: the fixed negatives exist for the test split only")
        elif family == "rating" and not prepared.has_ratings:
            log("[evaluate] skipping rating: this dataset has no ratings")
        elif family in ("explanation", "review") and not prepared.has_reviews:
            log(f"[evaluate] skipping {family}: this dataset has no review text")
        else:
            out.append(family)
    return out


def _limited(cases, limit: int | None):
    if not limit:
        return cases
    return type(cases)(
        cases.users[:limit],
        cases.histories[:limit],
        cases.targets[:limit],
        None if cases.negatives is None else cases.negatives[:limit],
    )


def _rows_limited(rows: dict, limit: int | None) -> dict:
    return rows if not limit else {k: v[:limit] for k, v in rows.items()}


def _ranking_entries(decoder, family, template, cases, args):
    """Yield (name, metrics entry, prediction rows) for a sequential or direct template."""
    ids = (decoder.assets.prepared.user_ids, decoder.catalog.item_ids, cases.users, cases.targets)
    if family == "sequential":
        ranked = ranking.sequential_ranking(
            decoder, cases, template, args.batch_size, 20, True, f"sequential {template}"
        )
        entry = {"history_excluded": M.ranking_metrics(cases.targets, ranked)}
        if args.unfiltered:
            raw = ranking.sequential_ranking(
                decoder,
                cases,
                template,
                args.batch_size,
                20,
                False,
                f"sequential {template} unfiltered",
            )
            entry["unfiltered"] = M.ranking_metrics(cases.targets, raw)
        yield f"sequential_{template}", entry, M.ranking_rows(*ids, ranked)
        return
    is_yes_no = template != ITEM_SEQUENCE and get_template(template).answer == "yes_no"
    for method in args.direct_methods:
        if (method == "yes_no") != is_yes_no:
            continue
        if (
            method == "score"
            and template == ITEM_SEQUENCE
            and decoder.cfg.data.sequence_objective == "causal"
        ):
            print(
                "[evaluate] direct items: 'score' skipped, a causal item sequence has no "
                "answer span ('generate' ranks the candidates exactly for one-token items)",
                flush=True,
            )
            continue
        fn = {
            "generate": ranking.direct_generate,
            "score": ranking.direct_score,
            "yes_no": ranking.direct_yes_no,
        }[method]
        ranked = fn(decoder, cases, template, args.batch_size, 10, f"direct {template} {method}")
        entry = {
            "method": method,
            "candidates_1_plus_99": M.ranking_metrics(cases.targets, ranked, ks=(1, 5, 10)),
        }
        yield f"direct_{template}_{method}", entry, M.ranking_rows(*ids, ranked)


def _earlier_entries(path: Path, results: dict) -> dict:
    """Entries an earlier evaluation of the same checkpoint, split, beam and completeness
    wrote to `path`: a later call for other families or prompts adds to them (same-named
    entries are replaced) instead of overwriting the file."""
    if not path.exists():
        return {}
    try:
        old = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        old = {}
    keys = ("checkpoint", "split", "partial", "beam")
    if all(old.get(k) == results[k] for k in keys):
        return dict(old.get("families", {}))
    print(
        f"[evaluate] {path} holds another evaluation ("
        + ", ".join(f"{k}={old.get(k)}" for k in keys)
        + "); it is replaced",
        flush=True,
    )
    return {}


def evaluate(decoder: Decoder, args, out_dir: Path, checkpoint: str | None = None) -> dict:
    prepared = decoder.assets.prepared
    families = supported_families(prepared, args.split, args.families)
    results = {
        "checkpoint": checkpoint,
        "split": args.split,
        "partial": bool(args.limit),
        "beam": decoder.beam_width,
        "machine": platform.machine(),
        "date": time.strftime("%Y-%m-%d"),
        "families": {},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    results["families"] = _earlier_entries(out_dir / "metrics.json", results)
    cases = rows = None
    for family in families:
        trained = [f for f, w in decoder.cfg.data.family_weights.items() if w > 0]
        for template in prompts_for(family, args.prompts, trained):
            if family in ("sequential", "direct"):
                if cases is None:
                    cases = _limited(
                        prepared.test_cases()
                        if args.split == "test"
                        else prepared.validation_cases(),
                        args.limit,
                    )
                entries = _ranking_entries(decoder, family, template, cases, args)
            else:
                if rows is None:
                    rows = _rows_limited(prepared.rating_rows(f"rating_{args.split}"), args.limit)
                    train_mean = float(np.mean(prepared.rating_rows("rating_train")["rating"]))
                entries = evaluate_rows(
                    decoder,
                    family,
                    template,
                    rows,
                    args.batch_size,
                    train_mean,
                    prepared.user_ids,
                    decoder.catalog.item_ids,
                )
            # Each entry is written as soon as it exists: a long run keeps what it finished.
            start = time.perf_counter()
            for name, entry, preds in entries:
                seconds = time.perf_counter() - start
                n = len(preds)
                entry.update(
                    {
                        "prompt": template,
                        "seen": template not in UNSEEN,
                        "cases": n,
                        "seconds": round(seconds, 1),
                        "ms_per_case": round(1000 * seconds / max(n, 1), 2),
                    }
                )
                M.write_predictions(out_dir / f"predictions_{name}.jsonl", preds)
                results["families"][name] = entry
                M.write_metrics(out_dir / "metrics.json", results)
                print(json.dumps({name: entry}), flush=True)
                start = time.perf_counter()
    return results


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m recsys_jax.evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--checkpoint", required=True, help="run dir or checkpoint step dir")
    p.add_argument("--split", choices=["test", "validation"], default="test")
    p.add_argument(
        "--prompts",
        nargs="+",
        default=["seen"],
        help="seen, unseen, items (the bare item sequence) and/or template ids such as 2-3 1-10",
    )
    p.add_argument(
        "--families",
        nargs="+",
        choices=FAMILIES,
        default=list(FAMILIES),
        help="default: every family the dataset supports",
    )
    p.add_argument(
        "--direct-methods",
        nargs="+",
        choices=DIRECT_METHODS,
        default=["generate", "score"],
        help="yes_no costs 100 prompts per case; ask for it explicitly",
    )
    p.add_argument("--out", help="output folder (default: <checkpoint>/eval_<split>)")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--beam", type=positive_int, default=20)
    p.add_argument(
        "--unfiltered",
        action="store_true",
        help="sequential: also rank without excluding history (a second pass)",
    )
    p.add_argument(
        "--limit", type=positive_int, help="only the first N cases / rows (marked partial)"
    )
    p.add_argument("--data-dir", help="where the prepared dataset lives (default: as trained)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    for p in args.prompts:
        if p not in ("seen", "unseen", ITEM_SEQUENCE):
            try:
                get_template(p)
            except ValueError as e:
                print(f"error: --prompts: {e}", file=sys.stderr)
                return 2
    out = Path(args.out) if args.out else Path(args.checkpoint) / f"eval_{args.split}"
    if out.exists() and not out.is_dir():
        print(
            f"error: --out {out} is a file; give a folder (metrics.json and the predictions "
            "are written into it)",
            file=sys.stderr,
        )
        return 2
    try:
        decoder = Decoder.from_checkpoint(args.checkpoint, args.data_dir, beam=args.beam)
        evaluate(decoder, args, out, checkpoint=str(args.checkpoint))
    except (DataError, ValueError, FileNotFoundError) as e:
        return report_error(e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
