"""The evaluate() API and the task registry, on a tiny random model (no downloads)."""

from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from smf.errors import SmfError
from smf.data.registry import DATASETS
from smf.evaluate import evaluate, load_task, task_names
from smf.evaluate.tasks import resolve_task

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MEDMCQA = str(FIXTURES / "medmcqa_validation.jsonl")


@pytest.fixture(scope="module")
def tiny(tokenizer):
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config).eval(), tokenizer


def test_registry_names_the_issue_tasks():
    assert set(task_names()) == {
        "medmcqa", "triviaqa", "wikitext", "wikitext-103", "facts", "facts-val", "facts-control",
        "facts-qa", "pydoc", "pydoc-val", "capitals", "capitals-val", "capitals-plain",
        "medmcqa-published", "triviaqa-published", "wikitext-103-published", "nq-open",
        "docstrings", "docstrings-val", "world", "world-val",
    }
    assert DATASETS["facts"].eval.scoring["format"] == "cloze"
    assert DATASETS["capitals"].eval.scoring["prompt"] == "chat"


def test_resolve_task_fills_defaults_and_checks_options():
    spec = resolve_task({"name": "capitals", "limit": 5})
    assert spec.options == {"prompt": "chat", "match": "substring", "stop": ["\n"], "max_new_tokens": 32,
                            "decoding": "greedy"}
    assert resolve_task("triviaqa").options["stop"] == ["\n", ".", ","]
    assert resolve_task({"name": "medmcqa", "format": "cloze", "as": "m2"}).label == "m2"
    assert resolve_task({"name": "facts", "n_facts": 30, "seed": 3}).data_options["n_facts"] == 30
    with pytest.raises(SmfError, match="unknown option 'formt'"):
        resolve_task({"name": "medmcqa", "formt": "cloze"})
    with pytest.raises(SmfError, match="prompt must be one of"):
        resolve_task({"name": "triviaqa", "prompt": "fancy"})
    with pytest.raises(SmfError, match="limit must be a positive integer"):
        resolve_task({"name": "pydoc", "limit": 0})


@pytest.mark.parametrize("name", ["facts", "facts-val", "facts-control", "facts-qa", "pydoc", "capitals", "capitals-plain"])
def test_offline_tasks_load(name):
    task = load_task({"name": name, "limit": 3})
    assert len(task.items) == 3 and task.label == name


def test_facts_options_reach_the_generator():
    small = load_task({"name": "facts", "n_facts": 20})
    assert len(small.items) == 20
    other_seed = load_task({"name": "facts", "n_facts": 20, "seed": 1})
    assert [i.question for i in small.items] != [i.question for i in other_seed.items]
    with pytest.raises(SmfError, match="n_facts"):
        load_task({"name": "facts", "n_facts": 2})


def test_evaluate_runs_specs_and_loaded_tasks_alike(tiny):
    model, tokenizer = tiny
    model.train()
    task = load_task({"name": "medmcqa", "source": MEDMCQA, "limit": 5})
    result = evaluate(model, tokenizer, [task, {"name": "medmcqa", "source": MEDMCQA, "as": "again"}], limit=5, progress=False)
    assert model.training  # the caller's mode is restored
    a, b = result["tasks"]["medmcqa"], result["tasks"]["again"]
    assert a["n"] == b["n"] == 5
    assert [r["logprobs"] for r in a["records"]] == [r["logprobs"] for r in b["records"]]
    assert a["headline"]["metric"] == "acc" and a["headline"]["value"] == a["metrics"]["acc"]
    assert a["headline"]["ci95"][0] <= a["headline"]["value"] <= a["headline"]["ci95"][1]
    no_records = evaluate(model, tokenizer, [task], progress=False, records=False)
    assert "records" not in no_records["tasks"]["medmcqa"]


def test_evaluate_rejects_duplicate_labels_before_loading(tiny):
    model, tokenizer = tiny
    with pytest.raises(SmfError, match="both called 'medmcqa'"):
        evaluate(model, tokenizer, [{"name": "medmcqa", "source": "/nonexistent.jsonl"}, "medmcqa"], progress=False)


@pytest.mark.slow
def test_generation_batch_is_its_own_setting_and_leaves_answers_as_they_were(tiny, monkeypatch):
    """Question answering decodes `generate_batch_size` prompts at a time, multiple choice keeps
    `batch_size`; the answers are those of one prompt at a time."""
    import smf.evaluate.loglik as loglik
    import smf.evaluate.qa as qa

    model, tokenizer = tiny
    seen = {"generate": [], "score": []}
    generate, score = qa.greedy_generate, loglik.score_requests

    def spy_generate(*args, **kwargs):
        seen["generate"].append(kwargs["batch_size"])
        return generate(*args, **kwargs)

    def spy_score(*args, **kwargs):
        seen["score"].append(kwargs["batch_size"])
        return score(*args, **kwargs)

    monkeypatch.setattr(qa, "greedy_generate", spy_generate)
    monkeypatch.setattr("smf.evaluate.mcq.score_requests", spy_score)
    tasks = [load_task({"name": "capitals", "limit": 7}), load_task({"name": "facts", "limit": 5})]
    one = evaluate(model, tokenizer, tasks, batch_size=2, generate_batch_size=1, progress=False)["tasks"]
    many = evaluate(model, tokenizer, tasks, batch_size=2, generate_batch_size=5, progress=False)["tasks"]
    assert seen == {"generate": [1, 5], "score": [2, 2]}
    assert [r["output"] for r in one["capitals"]["records"]] == [r["output"] for r in many["capitals"]["records"]]


@pytest.mark.parametrize("task", [{"name": "facts", "limit": 12}, {"name": "pydoc", "limit": 4, "max_length": 64},
                                  {"name": "pydoc", "limit": 4, "max_length": 64, "stride": 32, "as": "pydoc-sliding"}])
def test_first_items_headline_is_what_scoring_them_alone_gives(tiny, task):
    # a training curve's last point comes from the final evaluation this way
    from smf.evaluate.evaluator import first_items_headline

    model, tokenizer = tiny
    whole = evaluate(model, tokenizer, [task], progress=False)["tasks"]
    alone = evaluate(model, tokenizer, [{**task, "limit": 3}], progress=False)["tasks"]
    (label, result), = whole.items()
    first = alone[label]["headline"]["value"]
    assert first_items_headline(result, 3) == pytest.approx(first, rel=1e-6)
    assert first_items_headline(result, 3) != pytest.approx(result["headline"]["value"], rel=1e-6)  # not the whole task's
