"""Datasets: hub tasks (MedMCQA, TriviaQA, WikiText) and their offline stand-ins.

Every loader returns the item types of `smf.data.types`, so evaluation and training
never see where the data came from. `registry.DATASETS` lists every dataset and its
forms (training examples, general text, evaluation items); `load(name, form, **kw)`
loads one, importing its module on first use, so importing `smf.data` stays cheap.
"""

from smf.data.registry import DATASETS, Dataset, Form, load

__all__ = ["DATASETS", "Dataset", "Form", "load"]
