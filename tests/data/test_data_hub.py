"""Hub loaders on local fixture files in the hub datasets' exact schemas (tests/fixtures/README.md)."""

import importlib.util
import json
from pathlib import Path

import pytest

from smf.data.hub import (
    load_medmcqa,
    load_rows,
    load_triviaqa,
    load_wikitext,
    medmcqa_train_examples,
    triviaqa_fact_examples,
    triviaqa_items,
    wikitext_detokenize,
    wikitext_documents,
)
from smf.data.rows import read_rows_file
from smf.data.templates import letter_prompt as medmcqa_prompt
from smf.data.templates import plain_prompt as triviaqa_prompt
from smf.data.types import MCQItem, QAItem, TrainExample
from smf.errors import SmfError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MEDMCQA = FIXTURES / "medmcqa_validation.jsonl"
MEDMCQA_CSV = FIXTURES / "medmcqa_validation.csv"
TRIVIAQA = FIXTURES / "trivia_qa_rc_nocontext_validation.jsonl"
WIKITEXT = FIXTURES / "wikitext_document_level_test.jsonl"


def _jsonl_rows(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _lm_eval_file(relative) -> Path:
    """A file of lm-eval's task folder (lm-eval is a test dependency)."""
    spec = importlib.util.find_spec("lm_eval")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("lm-eval is not installed")
    return Path(spec.submodule_search_locations[0]) / "tasks" / relative


def _lm_eval_module(relative):
    """A module of lm-eval's task folder, loaded by path (importing lm_eval.tasks is slow)."""
    path = _lm_eval_file(relative)
    module_spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------- MedMCQA


def test_medmcqa_jsonl_fixture():
    items = load_medmcqa(MEDMCQA)
    assert len(items) == 20
    assert items[0] == MCQItem(
        id="fixture-mcq-00",
        question="Which vitamin deficiency causes scurvy?",
        choices=("Vitamin A", "Vitamin B12", "Vitamin C", "Vitamin D"),
        answer=2,  # cop is 0-based: opc
    )
    assert [it.answer for it in items] == [row["cop"] for row in _jsonl_rows(MEDMCQA)]
    assert load_medmcqa(MEDMCQA, limit=2) == items[:2]


def test_medmcqa_csv_parquet_and_json_array_read_like_jsonl(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    reference = load_medmcqa(MEDMCQA)
    assert load_medmcqa(MEDMCQA_CSV) == reference[:3]
    csv_rows = read_rows_file(MEDMCQA_CSV)
    assert csv_rows[1]["exp"] is None and isinstance(csv_rows[1]["cop"], int)  # empty cell, typed column
    parquet = tmp_path / "medmcqa_validation.parquet"
    pq.write_table(pa.Table.from_pylist(_jsonl_rows(MEDMCQA)), parquet)
    assert load_medmcqa(parquet) == reference
    array = tmp_path / "medmcqa_validation.json"
    array.write_text(json.dumps(_jsonl_rows(MEDMCQA)))
    assert load_medmcqa(array) == reference


def test_medmcqa_prompt_matches_lm_eval():
    doc_to_text = _lm_eval_module("medmcqa/utils_medmcqa.py").doc_to_text
    for row, item in zip(_jsonl_rows(MEDMCQA), load_medmcqa(MEDMCQA)):
        assert medmcqa_prompt(item) == doc_to_text(row)


def test_medmcqa_train_examples():
    rows = read_rows_file(MEDMCQA_CSV)
    examples = medmcqa_train_examples(rows, source=str(MEDMCQA_CSV))
    items = load_medmcqa(MEDMCQA_CSV)
    assert [ex.prompt for ex in examples] == [medmcqa_prompt(it) for it in items]
    assert examples[0].target == (
        " C. Vitamin C\nExplanation: Scurvy results from a lack of vitamin C (ascorbic acid), which collagen synthesis needs."
    )
    assert examples[1].target == " B. Skin"  # no explanation in this row
    assert medmcqa_train_examples(rows[:1], explanation=False)[0].target == " C. Vitamin C"
    assert medmcqa_train_examples([{**rows[0], "exp": "  "}])[0].target == " C. Vitamin C"
    assert medmcqa_train_examples([items[0]]) == [TrainExample(prompt=medmcqa_prompt(items[0]), target=" C. Vitamin C")]


def test_medmcqa_train_examples_load_their_rows():
    # With no rows given they load the split themselves (local file or hub), as training does.
    examples = medmcqa_train_examples(source=MEDMCQA_CSV, limit=2)
    assert [ex.target.split("\n")[0] for ex in examples] == [" C. Vitamin C", " B. Skin"]
    assert triviaqa_fact_examples(source=TRIVIAQA, limit=1, form="qa")[0].target == " Mars"


# ---------------------------------------------------------------------- TriviaQA


def test_triviaqa_fixture():
    items = load_triviaqa(TRIVIAQA)
    assert len(items) == 5
    assert items[0] == QAItem(
        id="smf_fixture_001",
        question="Which planet in our solar system is known as the Red Planet?",
        aliases=("Mars", "Planet Mars", "The Red Planet", "Mars (planet)"),
    )
    assert items[3].aliases[0] == "William Shakespeare"  # the value comes first
    assert "Shakespeare" in items[3].aliases


def test_triviaqa_nested_schema_through_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = tmp_path / "trivia_qa.parquet"
    pq.write_table(pa.Table.from_pylist(_jsonl_rows(TRIVIAQA)), parquet)
    assert load_triviaqa(parquet) == load_triviaqa(TRIVIAQA)


def test_triviaqa_prompt_and_fact_examples():
    assert 'doc_to_text: "Question: {{question}}?\\nAnswer:"' in _lm_eval_file("triviaqa/default.yaml").read_text()
    item = load_triviaqa(TRIVIAQA)[0]
    assert triviaqa_prompt(item.question) == f"Question: {item.question}?\nAnswer:"
    rows = _jsonl_rows(TRIVIAQA)
    statements = triviaqa_fact_examples(rows)
    assert statements[0] == TrainExample(prompt="", target="Which planet in our solar system is known as the Red Planet? Mars.")
    qa = triviaqa_fact_examples([item], form="qa")
    assert qa == [TrainExample(prompt=triviaqa_prompt(item.question), target=" Mars")]
    with pytest.raises(SmfError, match="unknown TriviaQA training form"):
        triviaqa_fact_examples(rows, form="cloze")


# ---------------------------------------------------------------------- WikiText


def test_wikitext_fixture():
    documents = load_wikitext(WIKITEXT)
    rows = _jsonl_rows(WIKITEXT)
    assert [d.text for d in documents] == [r["page"] for r in rows]
    assert [d.id for d in documents] == ["0", "1", "2"]
    scored = documents[0].scored_text
    for raw, clean in [
        ("19th @-@ century", "19th-century"),
        ("1 @,@ 842", "1,842"),
        ("31 @.@ 5 metres ( 103 ft )", "31.5 metres (103 ft)"),
        ("harbour 's traders", "harbour's traders"),
        ("keepers ' cottages", "keepers' cottages"),
        ('painted " red and white "', 'painted "red and white"'),
        ("= = History = =", "== History =="),
        ("= = = Automation = = =", "=== Automation ==="),
        ("40 ° C", "40°C"),
    ]:
        assert raw in documents[0].text and clean in scored


TRICKY = [
    " = A = \n \n x @-@ y , z . w ; v : u ! t ? s \n",
    "( a ) [ b ] { c } \" d \" ' e ' f 's g ' h",
    "The s ' end /' 5/ and N and ' N ' and the 3 @.@ 2 ° F ",
    "= = = = Deep = = = = \n = = = Mid = = = \n = = Top = = \n",
    "",
]


def test_detokenizer_matches_lm_eval():
    reference = _lm_eval_module("wikitext/preprocess_wikitext.py").wikitext_detokenizer
    pages = [r["page"] for r in _jsonl_rows(WIKITEXT)] + TRICKY
    for page in pages:
        assert wikitext_detokenize(page) == reference({"page": page})


def test_wikitext_skips_empty_pages_and_keeps_row_ids():
    documents = wikitext_documents([{"page": " = A = \n x \n"}, {"page": " \n "}, {"page": "y"}], "rows")
    assert [d.id for d in documents] == ["0", "2"]


# -------------------------------------------------------------------- bad input


def _error(fn, *args, **kwargs) -> str:
    with pytest.raises(SmfError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message, "SmfError messages are one line"
    return message


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda r: r.pop("opc"), "row 2: missing field 'opc'"),
        (lambda r: r.update(cop=4), "row 2: cop must be an integer 0..3"),
        (lambda r: r.update(cop="b"), "row 2: cop must be an integer 0..3 (0-based, 0 = opa), got 'b'"),
        (lambda r: r.update(cop=-1), "test split has no answers"),
        (lambda r: r.update(cop=1.0), "row 2: cop must be an integer"),
        (lambda r: r.update(opa=None), "row 2: field 'opa' must be text"),
    ],
)
def test_medmcqa_bad_rows_name_file_and_row(tmp_path, change, expected):
    rows = _jsonl_rows(MEDMCQA)
    change(rows[1])
    path = _write_jsonl(tmp_path / "bad.jsonl", rows)
    message = _error(load_medmcqa, path)
    assert str(path) in message and expected in message


def test_triviaqa_bad_rows(tmp_path):
    rows = _jsonl_rows(TRIVIAQA)
    del rows[2]["answer"]["aliases"]
    path = _write_jsonl(tmp_path / "tqa.jsonl", rows)
    assert "row 3: missing field answer.aliases" in _error(load_triviaqa, path)
    rows = _jsonl_rows(TRIVIAQA)
    del rows[0]["question"]
    assert f"{tmp_path / 'tqa2.jsonl'}: row 1: missing field 'question'" in _error(
        load_triviaqa, _write_jsonl(tmp_path / "tqa2.jsonl", rows)
    )
    rows = _jsonl_rows(TRIVIAQA)
    rows[1]["answer"]["aliases"] = "Paris"
    assert "row 2: answer.aliases must be a list of strings" in _error(triviaqa_items, rows, "tqa")


def test_wikitext_bad_rows(tmp_path):
    path = _write_jsonl(tmp_path / "wiki.jsonl", [{"page": "x"}, {"text": "y"}])
    assert "row 2: missing field 'page'" in _error(load_wikitext, path)
    assert "unknown WikiText version" in _error(load_wikitext, path, version="wikitext-3")


@pytest.mark.parametrize("name", ["empty.jsonl", "empty.json", "empty.csv", "empty.parquet"])
def test_empty_file(tmp_path, name):
    path = tmp_path / name
    path.write_text("")
    message = _error(load_medmcqa, path)
    assert str(path) in message and "no rows" in message


def test_blank_lines_only_is_empty(tmp_path):
    path = tmp_path / "blank.jsonl"
    path.write_text("\n\n  \n")
    assert "no rows" in _error(read_rows_file, path)


def test_missing_file_and_unsupported_suffix(tmp_path):
    message = _error(load_medmcqa, tmp_path / "nope.jsonl")
    assert str(tmp_path / "nope.jsonl") in message and "no such file" in message
    other = tmp_path / "rows.txt"
    other.write_text("x")
    assert "unsupported file type .txt" in _error(load_medmcqa, other)


def test_bad_json_names_the_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text(MEDMCQA.read_text().splitlines()[0] + "\n{not json\n")
    message = _error(load_medmcqa, path)
    assert str(path) in message and "line 2" in message
    scalars = tmp_path / "scalars.json"
    scalars.write_text("[1, 2]")
    assert "row 1 is a int" in _error(load_medmcqa, scalars)


def test_bad_limit():
    assert "limit" in _error(load_medmcqa, MEDMCQA, limit=-1)


def test_unreachable_hub_is_one_clear_line():
    # conftest sets HF_DATASETS_OFFLINE=1: the hub cannot be reached.
    message = _error(load_rows, None, hub_path="smf-tests/no-such-dataset", hub_name=None, split="validation")
    assert "smf-tests/no-such-dataset" in message and "local file" in message
