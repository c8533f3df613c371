"""Prompt templates for the five task families (our own wording, P5's collection structure).

Slots: {user} user name, {item} one item (an entity), {history} and {candidates} lists of items
(entities), {star} a star value, {feature} a feature word, {review} review text. The answer is
appended after the template as the masked target; `answer` says what it is.
One template per family is held out of training and used only for zero-shot evaluation.
"""

from __future__ import annotations

import dataclasses
import re

from recsys_jax.prompts.families import PROMPT_FAMILIES, TEMPLATE_GROUPS

SLOT = re.compile(r"\{(user|item|history|candidates|star|feature|review)\}")


@dataclasses.dataclass(frozen=True)
class Template:
    id: str  # "2-3"
    text: str
    answer: str  # star | yes_no | like | item | explanation | summary

    @property
    def family(self) -> str:
        return TEMPLATE_GROUPS[int(self.id.split("-")[0])]

    @property
    def slots(self) -> set[str]:
        return set(SLOT.findall(self.text))


_T = Template
TEMPLATES: dict[str, Template] = {
    t.id: t
    for t in [
        # 1 rating
        _T("1-1", "Which star rating will {user} give {item}? (1 lowest, 5 highest)", "star"),
        _T("1-2", "How will {user} rate {item}? Answer with 1 to 5 stars.", "star"),
        _T("1-3", "Will {user} give {item} a {star}-star rating? Answer yes or no.", "yes_no"),
        _T("1-4", "Does {user} like or dislike {item}?", "like"),
        _T("1-5", "Predict the preference of {user} for {item} on a scale of 1 to 5.", "star"),
        _T("1-6", "What star rating do you think {user} gives to {item}?", "star"),
        _T("1-7", "Given the item {item}, how many stars would {user} award it?", "star"),
        _T("1-8", "Would {user} rate {item} with {star} stars? yes or no.", "yes_no"),
        _T("1-9", "Is {item} something {user} would like?", "like"),
        _T(
            "1-10",
            "{user} has just tried {item}. Guess the stars they gave it, from 1 to 5.",
            "star",
        ),
        # 2 sequential
        _T("2-1", "Given the purchases of {user}: {history}, predict the next item.", "item"),
        _T("2-2", "{user} bought {history} in this order. What comes next?", "item"),
        _T(
            "2-3",
            "Here is the purchase history of {user}: {history}. What to recommend next?",
            "item",
        ),
        _T("2-4", "Purchase history: {history}. Next item:", "item"),
        _T("2-5", "The user has bought {history}. Recommend the next item.", "item"),
        _T("2-6", "Based on {history}, what will {user} buy next?", "item"),
        _T("2-7", "{user} bought {history}. Choose the next purchase from: {candidates}.", "item"),
        _T(
            "2-8", "History: {history}. Candidates: {candidates}. Which one is bought next?", "item"
        ),
        _T("2-9", "Pick what {user} most likely buys after {history} among {candidates}.", "item"),
        _T("2-10", "From {candidates}, select what follows {history}.", "item"),
        _T("2-11", "{user} bought {history}. Will the user buy {item} next? yes or no.", "yes_no"),
        _T("2-12", "After buying {history}, is {item} a good next item for {user}?", "yes_no"),
        _T(
            "2-13",
            "Looking at the shopping sequence {history} of {user}, which item is the user "
            "going to purchase next?",
            "item",
        ),
        # 3 explanation
        _T("3-1", "Generate an explanation for {user} about {item}:", "explanation"),
        _T("3-2", "Why would {user} like {item}? Explain.", "explanation"),
        _T("3-3", "Help {user} understand why {item} fits:", "explanation"),
        _T("3-4", "{user} rated {item} {star} stars. Explain why.", "explanation"),
        _T("3-5", "Write a reason {user} gave {item} {star} stars.", "explanation"),
        _T("3-6", "Explain the opinion of {user} about {item}.", "explanation"),
        _T("3-7", "What would {user} say about {item}?", "explanation"),
        _T("3-8", "Justify a {star}-star rating of {item} by {user}.", "explanation"),
        _T("3-9", "Explain the view of {user} on {item}, mentioning {feature}.", "explanation"),
        _T(
            "3-10",
            "Use the word {feature} to explain why {user} reviewed {item} this way.",
            "explanation",
        ),
        _T(
            "3-11",
            "{user} rated {item} {star} stars, focusing on {feature}. Explain.",
            "explanation",
        ),
        _T(
            "3-12",
            "Describe in one sentence how {user} felt about {item}, touching on {feature}.",
            "explanation",
        ),
        # 4 review
        _T("4-1", "Summarize this review by {user}: {review}", "summary"),
        _T("4-2", "Based on this review, how many stars did {user} give? {review}", "star"),
        _T("4-3", "Write a short title for the review: {review}", "summary"),
        _T("4-4", "Read the review and predict its star rating from 1 to 5: {review}", "star"),
        # 5 direct
        _T("5-1", "{user} bought {history}. Will the user like {item}? yes or no.", "yes_no"),
        _T("5-2", "Given the purchases {history}, should we recommend {item} to {user}?", "yes_no"),
        _T("5-3", "Is {item} a good match for someone who bought {history}?", "yes_no"),
        _T(
            "5-4", "{user} has the history {history}. Recommend {item}? Answer yes or no.", "yes_no"
        ),
        _T(
            "5-5",
            "{user} bought {history}. Pick the best item for the user from: {candidates}.",
            "item",
        ),
        _T(
            "5-6",
            "Choose one of {candidates} to recommend to {user}, who bought {history}.",
            "item",
        ),
        _T("5-7", "Candidates: {candidates}. History: {history}. Best recommendation:", "item"),
        _T(
            "5-8",
            "Out of {candidates}, which would {user} most likely want next, knowing they "
            "bought {history}?",
            "item",
        ),
    ]
}

UNSEEN = frozenset({"1-10", "2-13", "3-12", "4-4", "5-8"})
# Templates evaluated with seen prompts (docs/design.md, task families).
EVALUATED_SEEN = {
    "rating": ["1-6"],
    "sequential": ["2-3"],
    "explanation": ["3-3", "3-9"],
    "review": ["4-1", "4-2"],
    "direct": ["5-1", "5-4", "5-5"],
}


def family_templates(family: str, seen: bool = True) -> list[Template]:
    """Training templates of a family (seen) or its held-out zero-shot template (unseen)."""
    if family not in PROMPT_FAMILIES:
        raise ValueError(f"unknown task family {family!r}; choose from {list(PROMPT_FAMILIES)}")
    return [t for t in TEMPLATES.values() if t.family == family and ((t.id in UNSEEN) != seen)]


def get_template(template_id: str) -> Template:
    try:
        return TEMPLATES[template_id]
    except KeyError:
        raise ValueError(
            f"unknown prompt id {template_id!r}; ids are 1-1..1-10, 2-1..2-13, "
            "3-1..3-12, 4-1..4-4, 5-1..5-8"
        ) from None
