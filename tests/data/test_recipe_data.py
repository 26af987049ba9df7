"""The published SMF-on-Qwen study's training data, proved against its own code's outputs
(tests/fixtures/recipe: medmcqa_texts.json and oasst1_selection.json, made by the study's data module on
the inputs beside them): the MedMCQA training text, its single-choice filter and per-seed sample, and
the OASST1 messages its heal and background read, each one sequence. Strings and ids exact."""

import json
from pathlib import Path

import pytest

from smf.data.batching import document_sequences, encode_examples
from smf.data.hub import oasst1_rows
from smf.data.sources import check_source, for_seed, general_texts, training_examples
from smf.data.types import TrainExample
from smf.errors import SmfError

RECIPE = Path(__file__).resolve().parents[1] / "fixtures" / "recipe"
MEDMCQA = RECIPE / "inputs" / "medmcqa_train.jsonl"
OASST1 = RECIPE / "inputs" / "oasst1_train.jsonl"
# the study's filters, as a config writes them
STUDY_OASST1 = {"name": "oasst1", "source": str(OASST1), "lang": "en", "role": "assistant", "rank": [0, 1], "min_chars": 50}


def _fixture(name: str) -> dict:
    return json.loads((RECIPE / name).read_text())


def _medmcqa(**options):
    return training_examples({"name": "medmcqa", "source": str(MEDMCQA), "template": "published", "choice_type": "single",
                              **options})


def test_medmcqa_training_text_is_the_studys():
    expected = _fixture("medmcqa_texts.json")
    by_text = {text: row_id for row_id, text in expected["formatted_text_by_id"].items()}
    assert len(by_text) == len(expected["formatted_text_by_id"])  # texts are unique: a text names its row

    every = _medmcqa()
    assert all(e.prompt == "" for e in every)  # one text, all of it the loss
    assert [by_text.get(e.target) for e in every] == expected["filtered_ids_in_file_order"]
    assert {by_text[e.target]: e.target for e in every} == expected["formatted_text_by_id"]


@pytest.mark.parametrize("sample", ["N10_seed0", "N10_seed1", "N10_seed2", "N60000_seed0", "N60000_seed1", "N60000_seed2"])
def test_medmcqa_sample_per_seed_and_tokens_are_the_studys(sample, tokenizer):
    expected = _fixture("medmcqa_texts.json")
    case = expected["samples"][sample]
    by_text = {text: row_id for row_id, text in expected["formatted_text_by_id"].items()}
    examples = _medmcqa(sample=case["sample_size"], seed=case["seed"])
    assert [e.target for e in examples] == case["texts"]
    assert [by_text[e.target] for e in examples] == case["ids"]
    # as training reads them: the whole text, cut at max_length 1024, nothing added
    encoded = encode_examples(examples, tokenizer, 1024)
    assert [len(e.ids) for e in encoded] == case["token_counts"]
    assert encoded[0].ids == case["input_ids_first_row"] and encoded[0].n_prompt == 0


def test_a_sample_of_every_row_keeps_the_file_order():
    every = [e.target for e in _medmcqa()]
    assert len(every) == 35
    assert [e.target for e in _medmcqa(sample=35, seed=1)] == every  # N = the rows: the seed is ignored
    assert [e.target for e in _medmcqa(sample=34, seed=1)] != every[:34]


def test_medmcqa_seed_run_is_each_runs_seed():
    spec = {"name": "medmcqa", "source": str(MEDMCQA), "template": "published", "choice_type": "single", "sample": 10,
            "seed": "run"}
    check_source(spec, "train", "study: data")  # a study may say it
    ten = _fixture("medmcqa_texts.json")["samples"]
    for seed in (0, 1, 2):
        assert [e.target for e in training_examples(for_seed(spec, seed))] == ten[f"N10_seed{seed}"]["texts"]
    with pytest.raises(SmfError, match="seed: run stands for each run's seed"):
        training_examples(spec)  # nobody put a seed in


def test_medmcqa_lm_eval_template_stays_the_default():
    [example] = training_examples({"name": "medmcqa", "source": str(MEDMCQA), "limit": 1})
    assert example.prompt.startswith("Question: Which bone") and example.prompt.endswith("\nAnswer:")
    assert example.target == " B. Femur"


def test_unknown_template_is_refused_at_check():
    with pytest.raises(SmfError, match=r"unknown template 'publshed' \(did you mean 'published'\?\); choose one of lm-eval, published"):
        check_source({"name": "medmcqa", "template": "publshed"}, "train", "study: data")


def test_oasst1_messages_kept_are_the_studys():
    expected = _fixture("oasst1_selection.json")
    kept = [row["message_id"] for row in oasst1_rows(OASST1, lang="en", role="assistant", rank=[0, 1], min_chars=50)]
    assert kept == expected["kept_ids_in_file_order"]
    every = [json.loads(line)["message_id"] for line in OASST1.read_text().splitlines()]
    assert [i for i in every if i not in kept] == expected["excluded_ids"]


@pytest.mark.parametrize("sample", list(_fixture("oasst1_selection.json")["samples"]))
def test_oasst1_sample_per_seed_and_sequences_are_the_studys(sample, tokenizer):
    case = _fixture("oasst1_selection.json")["samples"][sample]
    options = {k: v for k, v in STUDY_OASST1.items() if k != "name"}
    rows = oasst1_rows(sample=case["sample_size"], seed=case["seed"], **options)
    assert [row["message_id"] for row in rows] == case["ids"]
    # one message per sequence, unpacked, cut at max_length (as the heal and background read them)
    texts = general_texts({**STUDY_OASST1, "sample": case["sample_size"], "seed": case["seed"]})
    sequences = document_sequences(texts, tokenizer, case["max_length"], min_tokens=2)
    assert [len(s.ids) for s in sequences] == case["token_counts"]
    assert max(sequences, key=lambda s: len(s.ids)).ids[:16] == case["first_ids_of_longest"]


def test_oasst1_filter_that_leaves_no_message_is_refused_at_check():
    with pytest.raises(SmfError, match=r"no OASST1 message of 156 is left by the filters \(lang='de', role='assistant', "
                                       r"rank=\[0, 1\], min_chars=5000\); loosen them"):
        check_source({**STUDY_OASST1, "lang": "de", "min_chars": 5000}, "text", "study: background.data")
    with pytest.raises(SmfError, match="role 'asistant' is no OASST1 role"):
        check_source({"name": "oasst1", "role": "asistant"}, "text", "study: heal.data")  # on the hub too
    with pytest.raises(SmfError, match="rank must be a rank >= 0"):
        check_source({"name": "oasst1", "rank": []}, "text", "study: heal.data")


def test_one_token_documents_are_left_out_when_asked(tokenizer):
    short, long = "Hi", "A longer message of several tokens."
    assert len(tokenizer(short).input_ids) == 1
    assert [len(s.ids) for s in document_sequences([short, long], tokenizer, 64)][0] == 1
    assert len(document_sequences([short, long], tokenizer, 64, min_tokens=2)) == 1


def test_smf_train_draws_seed_run_with_its_seed(tiny_folder, tmp_path, tokenizer):
    from smf.cli import main
    from smf.train.loop import _data_checksum

    data = f"medmcqa:source={MEDMCQA},template=published,choice_type=single,sample=10,seed=run"
    assert main(["train", "--model", str(tiny_folder), "--method", "full", "--data", data, "--seed", "1", "--steps", "1",
                 "--batch-size", "2", "--max-length", "1024", "--loss", "text", "--out", str(tmp_path / "run")]) == 0
    trained_on = json.loads((tmp_path / "run" / "fingerprint.json").read_text())["data"]
    texts = _fixture("medmcqa_texts.json")["samples"]["N10_seed1"]["texts"]
    encoded = [type(e)(e.ids, 0) for e in encode_examples([TrainExample("", t) for t in texts], tokenizer, 1024)]
    assert trained_on == _data_checksum(encoded)
