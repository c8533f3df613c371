"""Text-generation metrics for explanation and review summaries (docs/design.md, evaluation).

BLEU: corpus BLEU (Papineni et al.) from `sacrebleu` on lower-cased whitespace tokens
(`tokenize="none"`, no smoothing, one reference per case), n-gram order 4 (explanation) or 2
(review summaries). ROUGE-1/2/L: Google's `rouge-score` F-measure averaged over cases (its own
tokenizer: lower-case, alphanumeric runs). All reported x100. Every case counts: an empty
generation (no valid output) is scored as the empty string, never dropped.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL")


def _normalize(text) -> str:
    return " ".join(str(text or "").lower().split())


def bleu(references: Sequence[str], generated: Sequence[str], order: int = 4) -> float:
    """Corpus BLEU-`order` x100 over whitespace tokens."""
    if len(references) != len(generated):
        raise ValueError(f"{len(generated)} generations for {len(references)} references")
    if not references:
        raise ValueError("no text cases")
    metric = BLEU(tokenize="none", max_ngram_order=order, effective_order=False)
    score = metric.corpus_score(
        [_normalize(g) for g in generated], [[_normalize(r) for r in references]]
    )
    return float(score.score)


def rouge(references: Sequence[str], generated: Sequence[str]) -> dict[str, float]:
    """{"ROUGE-1", "ROUGE-2", "ROUGE-L"}: mean F-measure x100 over cases."""
    if len(references) != len(generated):
        raise ValueError(f"{len(generated)} generations for {len(references)} references")
    if not references:
        raise ValueError("no text cases")
    scorer = rouge_scorer.RougeScorer(list(ROUGE_KEYS))
    totals = np.zeros(len(ROUGE_KEYS))
    for ref, gen in zip(references, generated):
        scores = scorer.score(str(ref or ""), str(gen or ""))
        totals += [scores[k].fmeasure for k in ROUGE_KEYS]
    mean = 100.0 * totals / len(references)
    return {"ROUGE-1": float(mean[0]), "ROUGE-2": float(mean[1]), "ROUGE-L": float(mean[2])}


def text_metrics(references: Sequence[str], generated: Sequence[str], bleu_order: int) -> dict:
    out = {f"BLEU-{bleu_order}": bleu(references, generated, bleu_order)}
    out.update(rouge(references, generated))
    out["num_cases"] = len(references)
    out["num_empty"] = int(sum(1 for g in generated if not str(g or "").strip()))
    return out
