"""Datasets: hub tasks (MedMCQA, TriviaQA, WikiText) and their offline stand-ins.

Every loader returns the item types of `smf.data.types`, so evaluation and training
never see where the data came from.

`DATASETS` lists what exists: name -> (kind, "module:function", description), where
kind is "mcq" (MCQItem), "qa" (QAItem) or "documents" (Document). `load(name, **kw)`
imports the module on first use, so importing `smf.data` stays cheap.
"""

from __future__ import annotations

import importlib

from smf.errors import SmfError

DATASETS: dict[str, tuple[str, str, str]] = {
    "medmcqa": ("mcq", "smf.data.hub:load_medmcqa", "MedMCQA (openlifescienceai/medmcqa), validation; hub or local file"),
    "triviaqa": ("qa", "smf.data.hub:load_triviaqa", "TriviaQA (mandarjoshi/trivia_qa, rc.nocontext), validation; hub or local file"),
    "wikitext": ("documents", "smf.data.hub:load_wikitext", "WikiText-2/103 document level, test; hub or local file"),
    "facts_mcq": ("mcq", "smf.data.facts:load_facts_mcq", "fictional medical facts as 4-choice questions (offline task)"),
    "facts_qa": ("qa", "smf.data.facts:load_facts_qa", "fictional medical facts as open questions (offline task)"),
    "capitals": ("qa", "smf.data.capitals:capitals_items", "capitals of the most populous countries (offline knowledge probe)"),
    "pydoc": ("documents", "smf.data.pydoc:pydoc_documents", "Python's pydoc topics, background/heldout (offline perplexity probe)"),
}


def load(name: str, **kwargs):
    """Items of the dataset `name` (see DATASETS); keyword arguments go to its loader."""
    if name not in DATASETS:
        raise SmfError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    module, function = DATASETS[name][1].split(":")
    return getattr(importlib.import_module(module), function)(**kwargs)
