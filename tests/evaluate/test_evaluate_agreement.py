"""Our evaluator against lm-evaluation-harness itself, on the real default model and on an
SMF model exported by `smf export` (loaded by lm-eval as `--model hf --model_args
pretrained=DIR,trust_remote_code=True`, by smf with its own loader).

Both sides read the same local fixture files, written in the hub datasets' exact
schemas (tests/fixtures): lm-eval through its `json` dataset builder with its own
MedMCQA prompt function and WikiText detokenizer, we through `smf.data.hub`. The
numbers must match: identical accuracy and per-item predictions on multiple choice
and exact match, perplexity within 0.5%, with the same rolling-window max_length.
"""

import math
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MAX_LENGTH = 128  # rolling windows on both sides; small, so documents span several windows
MAX_NEW_TOKENS = 32

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported_smf(default_model, tmp_path_factory):
    """An SMF run of the default model (2,000 changed value rows per layer, saved compact),
    exported by `smf export` to a standalone folder."""
    import copy

    import torch

    from smf.memory import MemoryConfig, memory_layers, retrofit, save_retrofitted
    from smf.memory.delta import save_delta
    from smf.use.export import export

    model, tokenizer = default_model
    root = tmp_path_factory.mktemp("smf_export")
    net = retrofit(copy.deepcopy(model), MemoryConfig(layers=(8, 20), slots=4096, heads=4, topk=16, key_dim=128))
    base = save_retrofitted(net, tokenizer, root / "retro")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for memory in memory_layers(net).values():
            rows = torch.randperm(memory.slots, generator=generator)[:2000]
            memory.values[rows] = 0.5 * torch.randn(len(rows), memory.values.shape[1], generator=generator)
    save_delta(net, base, root / "run" / "model")
    export(root / "run", root / "exported", say=lambda *a: None)
    return root / "exported"


@pytest.fixture(scope="module", params=["base", "smf_export"])
def subject(request, default_model):
    """(what lm-eval is given, (model, tokenizer) smf evaluates)."""
    if request.param == "base":
        return default_model, default_model
    from smf.models import load_model

    folder = request.getfixturevalue("exported_smf")
    return f"pretrained={folder},trust_remote_code=True", load_model(folder)


@pytest.fixture(scope="module")
def lm_eval_run(subject, tmp_path_factory):
    """Run lm-eval once on all three fixture tasks; returns {task: (results, samples)}."""
    lm_eval = pytest.importorskip("lm_eval")
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks.medmcqa.utils_medmcqa import doc_to_text as medmcqa_doc_to_text
    from lm_eval.tasks.wikitext.preprocess_wikitext import process_results as wikitext_process_results
    from lm_eval.tasks.wikitext.preprocess_wikitext import wikitext_detokenizer

    theirs_model, _ = subject
    cache = str(tmp_path_factory.mktemp("hf_datasets"))

    def data(split, name):
        return {"data_files": {split: str(FIXTURES / name)}, "cache_dir": cache}

    # The installed task YAMLs (medmcqa, triviaqa, wikitext), pointed at local files.
    tasks = [
        ConfigurableTask(config=dict(
            task="fixture_medmcqa", dataset_path="json", dataset_kwargs=data("validation", "medmcqa_validation.jsonl"),
            output_type="multiple_choice", test_split="validation", doc_to_text=medmcqa_doc_to_text,
            doc_to_target="cop", doc_to_choice=["A", "B", "C", "D"],
            metric_list=[{"metric": "acc"}, {"metric": "acc_norm"}],
        )),
        ConfigurableTask(config=dict(  # the cloze format (smf's facts task): the option texts are scored
            task="fixture_medmcqa_cloze", dataset_path="json", dataset_kwargs=data("validation", "medmcqa_validation.jsonl"),
            output_type="multiple_choice", test_split="validation", doc_to_text="Question: {{question}}\nAnswer:",
            doc_to_target="cop", doc_to_choice="{{[opa, opb, opc, opd]}}",
            metric_list=[{"metric": "acc"}, {"metric": "acc_norm"}],
        )),
        ConfigurableTask(config=dict(
            task="fixture_triviaqa", dataset_path="json", dataset_kwargs=data("validation", "triviaqa_validation.jsonl"),
            output_type="generate_until", test_split="validation",
            doc_to_text="Question: {{question}}?\nAnswer:", doc_to_target="{{answer.aliases}}", target_delimiter=" ",
            generation_kwargs={"until": ["\n", ".", ","], "do_sample": False, "temperature": 0.0, "max_gen_toks": MAX_NEW_TOKENS},
            filter_list=[{"name": "remove_whitespace", "filter": [{"function": "remove_whitespace"}, {"function": "take_first"}]}],
            metric_list=[{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                          "ignore_case": True, "ignore_punctuation": True}],
        )),
        ConfigurableTask(config=dict(
            task="fixture_wikitext", dataset_path="json", dataset_kwargs=data("test", "wikitext_test.jsonl"),
            output_type="loglikelihood_rolling", test_split="test", doc_to_text="",
            doc_to_target=wikitext_detokenizer, process_results=wikitext_process_results,
            metric_list=[{"metric": m, "higher_is_better": False} for m in ("word_perplexity", "byte_perplexity", "bits_per_byte")],
        )),
    ]
    if isinstance(theirs_model, str):  # as on the command line: --model hf --model_args pretrained=DIR,...
        out = lm_eval.simple_evaluate(model="hf", model_args=f"{theirs_model},batch_size=8,max_length={MAX_LENGTH}", device="cpu",
                                      tasks=tasks, log_samples=True, bootstrap_iters=0)
    else:
        model, tokenizer = theirs_model
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=8, max_length=MAX_LENGTH)
        out = lm_eval.simple_evaluate(model=lm, tasks=tasks, log_samples=True, bootstrap_iters=0)
    return {
        name: (out["results"][name], sorted(out["samples"][name], key=lambda s: s["doc_id"]))
        for name in ("fixture_medmcqa", "fixture_medmcqa_cloze", "fixture_triviaqa", "fixture_wikitext")
    }


def _ours(subject, spec):
    from smf.evaluate import evaluate

    model, tokenizer = subject[1]
    return evaluate(model, tokenizer, [spec], batch_size=8, progress=False)["tasks"][spec.get("as", spec["name"])]


def test_medmcqa_letter_accuracy_and_predictions_match_lm_eval(subject, lm_eval_run):
    theirs, samples = lm_eval_run["fixture_medmcqa"]
    ours = _ours(subject, {"name": "medmcqa", "source": str(FIXTURES / "medmcqa_validation.jsonl")})
    assert ours["n"] == len(samples) == 20
    their_preds = [max(range(4), key=lambda i: s["filtered_resps"][i][0]) for s in samples]
    assert [r["pred"] for r in ours["records"]] == their_preds
    for rec, s in zip(ours["records"], samples):
        assert rec["logprobs"] == pytest.approx([r[0] for r in s["filtered_resps"]], abs=2e-3)
    assert ours["metrics"]["acc"] == theirs["acc,none"]
    assert ours["metrics"]["acc_norm"] == theirs["acc_norm,none"]


def test_cloze_multi_token_choices_match_lm_eval(subject, lm_eval_run):
    """Multi-token continuations: summed log-likelihoods, acc and the length-normalised acc_norm."""
    theirs, samples = lm_eval_run["fixture_medmcqa_cloze"]
    ours = _ours(subject, {"name": "medmcqa", "format": "cloze", "source": str(FIXTURES / "medmcqa_validation.jsonl"), "as": "cloze"})
    assert ours["n"] == len(samples) == 20
    assert max(max(r["n_tokens"]) for r in ours["records"]) > 1  # really multi-token
    for rec, s in zip(ours["records"], samples):
        assert rec["logprobs"] == pytest.approx([r[0] for r in s["filtered_resps"]], abs=2e-3)
    assert [r["pred"] for r in ours["records"]] == [max(range(4), key=lambda i: s["filtered_resps"][i][0]) for s in samples]
    assert ours["metrics"]["acc"] == theirs["acc,none"]
    assert ours["metrics"]["acc_norm"] == theirs["acc_norm,none"]


def test_triviaqa_exact_match_and_answers_match_lm_eval(subject, lm_eval_run):
    theirs, samples = lm_eval_run["fixture_triviaqa"]
    ours = _ours(subject, {"name": "triviaqa", "source": str(FIXTURES / "triviaqa_validation.jsonl"),
                                 "max_new_tokens": MAX_NEW_TOKENS})
    assert ours["n"] == len(samples) == 20
    # lm-eval's filter strips the answer; we keep the raw cut text in the record.
    assert [r["output"].strip() for r in ours["records"]] == [s["filtered_resps"][0] for s in samples]
    assert [r["correct"] for r in ours["records"]] == [bool(s["exact_match"]) for s in samples]
    assert ours["metrics"]["exact_match"] == theirs["exact_match,remove_whitespace"]


def test_wikitext_perplexity_matches_lm_eval(subject, lm_eval_run):
    theirs, samples = lm_eval_run["fixture_wikitext"]
    ours = _ours(subject, {"name": "wikitext", "source": str(FIXTURES / "wikitext_test.jsonl"),
                                 "max_length": MAX_LENGTH})
    assert ours["n"] == len(samples) == 3
    from smf.data.hub import load_wikitext

    # The page the model reads is lm-eval's detokenized page, character for character.
    assert [d.scored_text for d in load_wikitext(FIXTURES / "wikitext_test.jsonl")] == [s["target"] for s in samples]
    assert max(r["tokens"] for r in ours["records"]) > 3 * MAX_LENGTH  # several windows per document
    for rec, s in zip(ours["records"], samples):
        assert rec["loglikelihood"] == pytest.approx(s["filtered_resps"][0], rel=1e-3)
    for metric in ("word_perplexity", "byte_perplexity", "bits_per_byte"):
        assert math.isclose(ours["metrics"][metric], theirs[f"{metric},none"], rel_tol=5e-3), metric


def test_the_exported_smf_model_is_not_the_base(default_model, exported_smf):
    """The agreement on the exported folder is about a model whose memory changes its outputs."""
    import torch

    from smf.models import load_model

    model, tokenizer = default_model
    smf_model, _ = load_model(exported_smf)
    ids = tokenizer("Question: What is the capital of France?\nAnswer:", return_tensors="pt")
    with torch.no_grad():
        gap = (model(**ids).logits - smf_model(**ids).logits).abs().max().item()
    assert gap > 0.5
