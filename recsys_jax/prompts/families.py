"""The task families, named once.

Worded prompt families (P5's five, each a template group) ask one question per example; the
two bare families carry no prompt words: `sequence_text` (RecSysLLM's behaviour text, blank
infilling over the items) and `item_sequence` (the item sequence alone, docs/design.md).
"""

SEQUENCE_FAMILIES = ("sequential", "direct")  # built from a user's item sequence
ROW_FAMILIES = ("rating", "explanation", "review")  # built from one interaction row
PROMPT_FAMILIES = SEQUENCE_FAMILIES + ROW_FAMILIES
BARE_FAMILIES = ("sequence_text", "item_sequence")
TRAINING_FAMILIES = PROMPT_FAMILIES + BARE_FAMILIES
# Template group number -> family (template "2-3" is the third sequential template).
TEMPLATE_GROUPS = {1: "rating", 2: "sequential", 3: "explanation", 4: "review", 5: "direct"}
