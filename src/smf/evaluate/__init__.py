"""Evaluation: multiple choice, generated answers and perplexity, as lm-eval scores them.

    from smf.evaluate import evaluate
    result = evaluate(model, tokenizer, ["facts", "pydoc", {"name": "capitals", "limit": 40}])
    result["tasks"]["facts"]["headline"]   # {"metric": "acc", "value": ..., "stderr": ..., "ci95": [...]}

Engines (`mcq`, `qa`, `perplexity`) take any HF causal LM and tokenizer and score
items from `smf.data`; on the same items they reproduce lm-evaluation-harness's
numbers. `tasks` names the registered tasks and their options; `evaluator` runs
them and returns metrics with uncertainty plus per-item records.
"""

from smf.evaluate.evaluator import evaluate, run_task
from smf.evaluate.mcq import score_mcq
from smf.evaluate.perplexity import rolling_loglikelihoods
from smf.evaluate.qa import score_qa
from smf.evaluate.tasks import Task, load_task, resolve_task, task_names

__all__ = [
    "Task",
    "evaluate",
    "load_task",
    "resolve_task",
    "rolling_loglikelihoods",
    "run_task",
    "score_mcq",
    "score_qa",
    "task_names",
]
