"""The published study's conventions without a model: windows, normalisation, filtering, bad input."""

import json
from pathlib import Path

import pytest

from smf.cli import main
from smf.data.hub import load_medmcqa, load_wikitext_lines
from smf.errors import SmfError
from smf.evaluate.perplexity import sliding_windows
from smf.evaluate.qa import contains_match, published_normalize
from smf.evaluate.tasks import resolve_task


@pytest.mark.parametrize("n, window, stride", [(395, 1024, 512), (395, 64, 32), (100, 10, 9), (7, 4, 1), (1, 4, 2)])
def test_sliding_windows_score_every_token_once(n, window, stride):
    tokens = list(range(n))
    slides = sliding_windows(tokens, window, stride)
    assert all(len(s.inputs) <= window for s in slides)
    scored = [t for s in slides for t in s.inputs[s.first:]]
    assert scored == tokens[1:]  # each token once, in order; the very first has no context
    assert sum(s.weight for s in slides) == (n if n > 1 else 0)  # the recipe's count: every token


def test_windows_without_overlap_leave_each_first_token_unscored():
    """stride == window: the recipe's windows do not overlap, so each window's first token
    has no context and is not predicted (it still counts in the weight)."""
    slides = sliding_windows(list(range(30)), 10, 10)
    assert [s.inputs[s.first:][0] for s in slides] == [1, 11, 21]
    assert [s.weight for s in slides] == [10, 10, 10]


def test_published_normalisation():
    assert published_normalize("The Answer is: Mount  Everest!") == "answer is mount everest"
    assert published_normalize("An apple, a day (U.S.A.)") == "apple day u.s. ."  # "a" is a word between dots too
    assert contains_match(" The largest planet is Jupiter.\n", ["Jupiter"])
    assert contains_match("catalogue", ["cat"])  # inside a word counts, as in the published code
    assert not contains_match("anything", ["the"])  # an alias that normalises to nothing never matches


def test_single_choice_filter_comes_before_the_limit(tmp_path):
    rows = [{"question": f"q{i}", "opa": "a", "opb": "b", "opc": "c", "opd": "d", "cop": 0,
             "choice_type": "multi" if i in (0, 2) else "single", "id": f"r{i}"} for i in range(6)]
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [i.id for i in load_medmcqa(path, choice_type="single", limit=3)] == ["r1", "r3", "r4"]
    assert len(load_medmcqa(path)) == 6
    path.write_text(json.dumps({k: v for k, v in rows[0].items() if k != "choice_type"}) + "\n")
    with pytest.raises(SmfError, match="missing field 'choice_type'"):
        load_medmcqa(path, choice_type="single")


def test_wikitext_rows_are_stripped_filtered_and_joined(tmp_path):
    path = tmp_path / "w.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in [" = Title = ", "", " one . ", "  ", " two "]))
    [doc] = load_wikitext_lines(path, limit=2)
    assert doc.text == "= Title =\n\none ."
    path.write_text(json.dumps({"page": "x"}) + "\n")
    with pytest.raises(SmfError, match="missing field 'text'"):
        load_wikitext_lines(path)


@pytest.mark.parametrize("spec, message", [
    ({"name": "wikitext-103-published", "stride": 2048}, "stride must be an integer from 1 to max_length"),
    ({"name": "wikitext", "stride": 0}, "stride must be"),
    ({"name": "medmcqa", "format": "publshed"}, "format must be one of"),
    ({"name": "triviaqa", "match": "contain"}, "match must be one of"),
])
def test_bad_scoring_options(spec, message):
    with pytest.raises(SmfError, match=message):
        resolve_task(spec)


def test_bad_input_on_the_command_line(tmp_path, capsys):
    bad = tmp_path / "oasst.jsonl"
    bad.write_text(json.dumps({"message": "hi"}) + "\n")
    out, tasks = tmp_path / "r.json", tmp_path / "tasks.yaml"
    tasks.write_text(json.dumps({"tasks": [{"name": "wikitext-103-published", "source": str(bad)}]}))
    assert main(["eval", "--tasks-file", str(tasks), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing field 'text'" in err[0]
    assert not out.exists()


def test_oasst1_source_reads_message_texts(tmp_path):
    from smf.data.hub import load_oasst1
    from smf.data.registry import load

    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "oasst1_train.jsonl"
    texts = load_oasst1(fixture)
    assert len(texts) == 12 and texts[0] == "How do I keep basil alive indoors?"
    assert len(load_oasst1(fixture, lang="en")) == 10
    assert sorted(load_oasst1(fixture, seed=1)) == sorted(texts) and load_oasst1(fixture, seed=1) != texts
    assert load_oasst1(fixture, seed=1, limit=3) == load_oasst1(fixture, seed=1)[:3]
    [example] = load("oasst1", "train", source=fixture, limit=1)
    assert example.prompt == "" and example.target == texts[0]  # the whole text carries the loss
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"instruction": "hi", "output": "hello"}) + "\n")
    with pytest.raises(SmfError, match="missing field 'message_id', 'role', 'text'"):
        load_oasst1(bad)


def test_nq_open_and_token_f1():
    from smf.data.hub import load_nq_open
    from smf.evaluate.qa import token_f1

    items = load_nq_open(Path(__file__).resolve().parents[1] / "fixtures" / "nq_open_validation.jsonl")
    assert len(items) == 6 and items[2].aliases == ("eight", "8")
    assert token_f1("The Pacific.", ["the Pacific Ocean", "Pacific"]) == 1.0
    assert token_f1("Pacific Ocean waters", ["the Pacific Ocean"]) == pytest.approx(0.8)
    assert token_f1("Atlantic", ["Pacific"]) == 0.0
    spec = resolve_task("nq-open")
    assert spec.options["prompt"] == "nq" and spec.options["match"] == "f1"


def test_an_oasst1_file_with_wrong_columns_is_one_line(tiny_folder, tmp_path, capsys):
    bad = tmp_path / "oasst.jsonl"
    bad.write_text(json.dumps({"prompt": "hi", "response": "hello"}) + "\n")
    out = tmp_path / "run"
    assert main(["train", "--model", str(tiny_folder), "--method", "full", "--data", f"oasst1:source={bad}", "--steps", "1",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing field 'message_id', 'role', 'text'" in err[0], err
    assert not out.exists()
