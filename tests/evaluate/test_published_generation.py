"""TriviaQA answers decoded as the published study decodes them (task option decoding: generation_config).

`tests/fixtures/recipe/triviaqa_generation.json` (README: section 6): the published evaluation's tokens,
raw answers, normalised answers and accuracy on the first 10 parity questions, for the study's tiny
model and the offline default model, each under its own generation config, under Qwen2.5-Instruct's
fields (sampling fields, two end tokens, repetition penalty 1.1) and under the penalty alone. The
study's `generate(do_sample=False)` applies the penalty and stops only at the tokenizer's EOS; smf's
greedy loop (the default, whose numbers stay as they were) applies no penalty.
"""

import pytest
import torch
from transformers import AutoTokenizer

from conftest import TOKENIZER
from recipe_model import recipe_json, study_model
from smf.data.templates import published_qa_prompt
from smf.evaluate import evaluate
from smf.evaluate.generate import greedy_generate
from smf.evaluate.qa import published_normalize
from smf.evaluate.tokens import encode_text
from smf.errors import SmfError

from pathlib import Path

PARITY = Path(__file__).resolve().parents[1] / "fixtures" / "parity"
REF = recipe_json("triviaqa_generation.json")
VARIANTS = ["own_generation_config", "qwen25_instruct_like_generation_config", "repetition_penalty_1.1_only"]


def configure(model, variant: str, ref: dict) -> None:
    """The model's generation config as the fixture's variant set it (its overrides over the model's own)."""
    config = model.generation_config
    for key, value in ref[variant]["generation_config_overrides"].items():
        setattr(config, key, value)


def check(model, tokenizer, ref: dict, variant: str) -> None:
    spec = {"name": "triviaqa-published", "source": str(PARITY / "triviaqa_parity.jsonl"), "limit": 10, "decoding": "generation_config"}
    items = ref[variant]["items"]
    out = evaluate(model, tokenizer, [spec], progress=False)["tasks"]["triviaqa-published"]
    assert [r["id"] for r in out["records"]] == [i["question_id"] for i in items]
    assert [published_normalize(r["output"].strip()) for r in out["records"]] == [i["normalized"] for i in items]
    assert [r["correct"] for r in out["records"]] == [i["correct"] for i in items]
    assert out["headline"]["value"] == ref[variant]["eval_triviaqa"]["alias_contains_acc"]
    # token for token, from the prompts the study encoded (which are ours)
    import json

    questions = {q["question_id"]: q["question"] for q in map(json.loads, (PARITY / "triviaqa_parity.jsonl").read_text().splitlines())}
    prompts = [encode_text(tokenizer, published_qa_prompt(questions[i["question_id"]])) for i in items]
    assert prompts == [i["prompt_ids"] for i in items]
    gens = greedy_generate(model, tokenizer, prompts, stop=(), max_new_tokens=REF["max_new_tokens"], decoding="generation_config")
    eos = tokenizer.eos_token_id
    for g, item in zip(gens, items):
        ids = item["generated_ids"]
        assert list(g.ids) == (ids[:-1] if ids and ids[-1] == eos else ids), item["question_id"]
        assert g.raw.strip() == item["raw"].strip(), item["question_id"]


@pytest.fixture
def tiny():
    model = study_model()
    return model, AutoTokenizer.from_pretrained(TOKENIZER)


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_tiny_model_answers_as_the_study(tiny, variant):
    model, tokenizer = tiny
    configure(model, variant, REF["tiny"])
    check(model, tokenizer, REF["tiny"], variant)


def test_the_penalty_changes_the_answers_and_greedy_stays_as_it_was(tiny):
    """smf's greedy default ignores the generation config's penalty: the tiny model's own-config answers."""
    model, tokenizer = tiny
    configure(model, "repetition_penalty_1.1_only", REF["tiny"])
    spec = {"name": "triviaqa-published", "source": str(PARITY / "triviaqa_parity.jsonl"), "limit": 10}
    out = evaluate(model, tokenizer, [spec], progress=False)["tasks"]["triviaqa-published"]
    own = REF["tiny"]["own_generation_config"]["items"]
    assert [published_normalize(r["output"].strip()) for r in out["records"]] == [i["normalized"] for i in own]


def test_an_unknown_decoding_is_refused():
    from smf.evaluate.tasks import resolve_task

    with pytest.raises(SmfError, match="decoding must be one of greedy, generation_config"):
        resolve_task({"name": "triviaqa-published", "decoding": "beam"})


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_the_default_model_answers_as_the_study(default_model, variant):
    model, tokenizer = default_model
    saved = model.generation_config.to_dict()
    try:
        configure(model, variant, REF["smollm2"])
        check(model, tokenizer, REF["smollm2"], variant)
    finally:
        for key in ("do_sample", "repetition_penalty", "temperature", "top_p", "top_k", "bos_token_id", "pad_token_id", "eos_token_id"):
            setattr(model.generation_config, key, saved.get(key))


def test_the_penalty_is_transformers_repetition_penalty():
    """Seen tokens: positive logits divided, negative ones multiplied; each row over its own tokens."""
    from transformers import RepetitionPenaltyLogitsProcessor

    from smf.evaluate.generate import penalize

    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(0)) * 3
    tokens = torch.tensor([[1, 2, 2, 7], [0, 49, 3, 3], [5, 6, 7, 8]])
    seen = torch.zeros(3, 50, dtype=torch.bool).scatter_(1, tokens, True)
    theirs = RepetitionPenaltyLogitsProcessor(1.1)(tokens, logits.clone())
    assert torch.equal(penalize(logits, seen, 1.1), theirs)


def test_generation_config_decoding_ends_only_at_the_tokenizers_eos(tiny):
    from smf.evaluate.generate import generation_settings

    model, tokenizer = tiny
    configure(model, "qwen25_instruct_like_generation_config", REF["tiny"])
    assert generation_settings(model, tokenizer, "generation_config") == ({tokenizer.eos_token_id}, 1.1)
    assert generation_settings(model, tokenizer, "greedy") == ({2, 0}, 1.0)


def test_a_generation_config_field_it_would_not_apply_is_refused(tiny):
    model, tokenizer = tiny
    model.generation_config.no_repeat_ngram_size = 3
    spec = {"name": "triviaqa-published", "source": str(PARITY / "triviaqa_parity.jsonl"), "limit": 2, "decoding": "generation_config"}
    with pytest.raises(SmfError, match=r"sets no_repeat_ngram_size = 3, which decoding generation_config does not apply"):
        evaluate(model, tokenizer, [spec], progress=False)
