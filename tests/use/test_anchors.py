"""`smf learn --anchors`: the person's questions about made-up subjects, counted as background (smf.use.anchors)."""

import json
import random
import re

import pytest
import torch

from smf.cli import main
from smf.data.anchors import anchor_questions, first_sentence, made_up, subject
from smf.use.learn.sitting import untrained_warning


@pytest.mark.parametrize("question, expected", [
    ("What is the capital of Oshu?", "Oshu"),
    ("Who composed the Glass Harbor Symphony?", "Glass Harbor Symphony"),  # a run of capitalised words
    ("Where did the Kestrel-9 rover land?", "Kestrel-9"),
    ("In which month is Sefaro's festival of lanterns held?", "Sefaro"),  # without the possessive
    ("Which river runs through the city of 4 gates and Velmar?", "4"),  # the first run: a word with a digit
    ("Who invented the tidal clock?", None),  # nothing to swap
    ("Oshu has which capital?", None),  # a question's first word is capitalised anyway
])
def test_a_questions_subject_is_its_first_run_of_names(question, expected):
    where = subject(question)
    assert (question[where[0]:where[1]] if where else None) == expected


def test_anchor_questions_swap_only_the_subject_for_names_the_facts_do_not_use():
    questions = ["What is the capital of Oshu?", "Who invented the tidal clock?", "Who composed the Glass Harbor Symphony?"]
    anchors = anchor_questions(questions, 3, seed=0)
    assert len(anchors) == 6  # 3 each for the two questions with a subject
    assert anchors == anchor_questions(questions, 3, seed=0) and anchors != anchor_questions(questions, 3, seed=1)
    for anchor in anchors[:3]:
        name = anchor.removeprefix("What is the capital of ").removesuffix("?")
        assert anchor.startswith("What is the capital of ") and name[0].isupper() and name.lower() not in " ".join(questions).lower()
    assert all(a.startswith("Who composed the ") and a.endswith("?") and "Glass" not in a for a in anchors[3:])
    assert len(set(anchors)) == 6
    assert made_up(random.Random(0), "") != ""
    assert made_up(random.Random(0), made_up(random.Random(0), "")) != made_up(random.Random(0), "")  # refuses a taken name


def test_first_sentence():
    assert first_sentence("The capital of Oshu is Ashur. It lies by the sea.") == "The capital of Oshu is Ashur."
    assert first_sentence("Dr. Renk") == "Dr."  # a full stop ends it, whatever it follows
    assert first_sentence("Is it? Yes") == "Is it?" and first_sentence("no stop here ") == "no stop here"
    assert first_sentence("It was 3.5 km long. Then") == "It was 3.5 km long."  # a stop inside a number does not


def test_anchor_reads_join_the_background_and_protected_rows_stay_at_zero(tiny_folder, tmp_path):
    """Each anchor is one more document holding every read of its tokens; rows an earlier sitting protected keep
    df equal to the documents (TF-IDF 0)."""
    from smf.data.types import TrainExample
    from smf.memory import MemoryConfig, retrofit
    from smf.models import load_model
    from smf.selection import BackgroundStats
    from smf.data.batching import encode_examples
    from smf.use.anchors import add_anchor_reads

    model, tokenizer = load_model(tiny_folder)
    retrofit(model, MemoryConfig(layers=(3,), slots=1024, heads=4, topk=16, key_dim=32, seed=0))
    anchors = [TrainExample("What is the capital of Mirilber? ", "The capital of Mirilber is Sana."),
               TrainExample("Who built the Dorvel lighthouse? ", "It was built by sailors.")]
    stats = BackgroundStats.empty({3: 1024})
    stats.add_counts({3: torch.zeros(1024, dtype=torch.long)})
    protected = {3: torch.tensor([5, 700])}
    out = add_anchor_reads(stats, model, tokenizer, anchors, 48, protected)
    tokens = sum(len(e.ids) for e in encode_examples(anchors, tokenizer, 48))
    assert out.batches == 3 and int(out.counts[3].sum()) == tokens * 4 * 16
    read = out.df[3].clone()
    read[protected[3]] = 0
    assert read.max() <= 2 and read.sum() > 0
    assert out.df[3][5] == out.df[3][700] == 3

    fresh = BackgroundStats.empty({3: 1024})
    fresh.add_counts({3: torch.zeros(1024, dtype=torch.long)})
    excluded = add_anchor_reads(fresh, model, tokenizer, anchors, 48, protected, exclude=True)
    assert torch.equal(excluded.df[3] == 3, (read > 0) | torch.isin(torch.arange(1024), protected[3]))
    assert set(excluded.df[3].unique().tolist()) == {0, 3}  # every row an anchor read, and only those, scores 0


def learn_args(tiny_folder, tmp_path) -> list[str]:
    """`smf learn` arguments for one quick sitting on the tiny model: two questions with a subject, one without."""
    facts = tmp_path / "facts.jsonl"
    facts.write_text("".join(json.dumps(r) + "\n" for r in [
        {"text": "The Zorvex lighthouse was built by Mira Tanaka."},
        {"question": "Who built the Zorvex lighthouse?", "answer": "Mira Tanaka"},
        {"question": "What is the capital of Oshu?", "answer": "Kelbrin"},
        {"question": "Who invented the tidal clock?", "answer": "Soren Vale"}]))
    return ["--data", str(facts), "--model", str(tiny_folder), "--slots", "256", "--steps", "1", "--batch-size", "2",
            "--max-length", "48", "--protect", "off"]


@pytest.mark.slow
def test_learn_with_anchors_selects_against_them_for_this_sitting_only(tiny_folder, tmp_path, capsys, monkeypatch):
    from smf.use.learn import sitting

    seen = []
    real = sitting.train
    monkeypatch.setattr(sitting, "train", lambda *a, **k: seen.append(k["background"]) or real(*a, **k))
    common = learn_args(tiny_folder, tmp_path)
    assert main(["learn", *common, "--out", str(tmp_path / "anchored"), "--anchors", "2", "--anchor-reads", "document"]) == 0
    out = capsys.readouterr().out
    assert "4 question(s) about made-up subjects (such as \"Who built the " in out
    assert seen[-1] is not None and seen[-1].batches == 16 + 4  # the background's 16 documents and the anchors
    from smf.selection import BackgroundStats

    saved = BackgroundStats.load(tmp_path / "anchored")
    assert saved.batches == 16  # not saved with the model
    assert main(["learn", *common, "--out", str(tmp_path / "excluded"), "--anchors", "2"]) == 0  # exclude: the default
    out = capsys.readouterr().out
    documented, excluded = seen[-2], seen[-1]
    zero = " / ".join(f"{int((excluded.df[i] == 20).sum()):,}" for i in sorted(excluded.df))
    assert f"answered by the model, the rows they read are not trained in this sitting (rows at TF-IDF 0: {zero} of 256" in out
    trained = json.loads((tmp_path / "excluded" / "learn_run" / "summary.json").read_text())["rows_trained"]
    assert trained > 0 and "warning: no memory row was trained" not in out
    assert excluded.batches == 20 and excluded.df.keys() == documented.df.keys()
    for layer, df in excluded.df.items():  # every row an anchor read (its df grew) now counts as read by all 20
        read = documented.df[layer] > saved.df[layer]
        assert read.any() and torch.equal(df == 20, read | (documented.df[layer] == 20))
    # 5 anchors a question read all but a few of the 256 rows: what is left trains, and when nothing is, learn says so
    assert main(["learn", *common, "--out", str(tmp_path / "most"), "--anchors", "5"]) == 0
    zero = re.search(r"rows at TF-IDF 0: (\d+) / (\d+) / (\d+) of 256 at layers 6, 11, 16", capsys.readouterr().out)
    left = sum(256 - int(z) for z in zero.groups())  # 4 on this machine
    assert 0 < json.loads((tmp_path / "most" / "learn_run" / "summary.json").read_text())["rows_trained"] <= left < 3 * 256 // 10
    assert untrained_warning({"rows_trained": 4}) is None
    assert untrained_warning({"rows_trained": 0}).startswith("warning: no memory row was trained: every row your facts")
    assert main(["learn", *common, "--out", str(tmp_path / "bad"), "--anchors", "2", "--anchor-reads", "all"]) == 2
    assert "anchor_reads: unknown choice 'all'; choose one of exclude, document" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    assert main(["learn", *common, "--out", str(tmp_path / "plain"), "--keep", "0", "--anchors", "0"]) == 0  # no anchors of any kind
    assert seen[-1] is None and "made-up subjects" not in capsys.readouterr().out
    assert main(["learn", *common, "--out", str(tmp_path / "bad"), "--anchors", "-1"]) == 2
    assert "anchors must be >= 0" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_a_question_answered_with_nothing_is_no_anchor(monkeypatch):
    """An empty answer would be an example without a target; it is left out (and learn says there are no anchors)."""
    import smf.use.anchors
    from smf.use.anchors import anchor_examples

    monkeypatch.setattr(smf.use.anchors, "answers", lambda *a, **k: ["", "The capital of Mirilber is Sana. It is old."])
    monkeypatch.setattr(smf.use.anchors, "render", lambda tokenizer, turns: turns[0]["content"] + " ")
    out = anchor_examples(None, None, ["Who built the Dorvel lighthouse?", "What is the capital of Mirilber?"])
    assert [(e.prompt, e.target) for e in out] == [("What is the capital of Mirilber? ", "The capital of Mirilber is Sana.")]
