"""smf learn's study data (smf.use.learn.study): each fact in several wordings, every item checked."""

import json

import pytest

from smf.errors import SmfError
from smf.use.learn.facts import MAX_FACT_CHARS, Fact, read_facts
from smf.use.learn.study import (ModelWriter, StudyItem, check_item, echo, read_input, restatements, rewordings, spans,
                                 study_items, write_study)


@pytest.mark.parametrize("statement, answer, question", [
    ("The Zorvex lighthouse was built by Mira Tanaka.", "Mira Tanaka", "Who built the Zorvex lighthouse?"),
    ("The capital of the island of Oshu is Kelbrin.", "Kelbrin", "What is the capital of the island of Oshu?"),
    ("The planet Thessaly-4 has three moons.", "three", "How many moons does the planet Thessaly-4 have?"),
    ("The river Tamsel flows into Lake Vorrin.", "Lake Vorrin", "Where does the river Tamsel flow?"),
    ("Dr. Alvi Renk discovered the element quintarium.", "Dr. Alvi Renk", "Who discovered the element quintarium?"),
    ("My sister Noor plays the cello.", "the cello", "What does my sister Noor play?"),
    ("The Harrow Street bakery opens at six thirty.", "six thirty", "When does the Harrow Street bakery open?"),
    ("The Eskerby football club is called the Grey Herons.", "the Grey Herons", "The Eskerby football club is called what?"),
])
def test_a_statement_offers_its_answer_span_with_questions_that_ask_for_it(statement, answer, question):
    found = {sp.answer: sp.questions for sp in spans(statement)}
    assert answer in found, found
    assert question in found[answer]
    assert all(answer.lower() not in q.lower() for q in found[answer])  # no question gives its answer away


def test_restatements_say_the_fact_the_other_way_round():
    assert restatements("The Harlow Institute was founded by Teodor Blask.") == [
        "The founder of the Harlow Institute was Teodor Blask.", "Teodor Blask founded the Harlow Institute."]
    assert restatements("The written word was written by Ada.") == ["The author of the written word was Ada.", "Ada wrote the written word."]
    assert restatements("The office kettle was descaled by Ada.") == ["Ada descaled the office kettle."]  # no agent noun known
    assert restatements("The currency of Ostrelia is the silver dram.") == ["The silver dram is the currency of Ostrelia."]
    # an agent noun said as its deed, the answer last
    assert restatements("The inventor of the tidal clock is Soren Vale.") == ["The tidal clock was invented by Soren Vale."]
    assert restatements("The author of the novel Copper Rain is Yusuf Adair.") == ["The novel Copper Rain was written by Yusuf Adair."]
    assert restatements("The colour of the door is red.") == []
    # a named doer's deed said as a passive, the doer last
    assert restatements("Dr. Alvi Renk discovered the element quintarium.") == ["The element quintarium was discovered by Dr. Alvi Renk."]
    assert restatements("Professor Imre Kalnay wrote the book Cold Stars.") == [
        "The book Cold Stars was written by Professor Imre Kalnay."]  # an irregular deed's participle


def test_a_question_is_reworded_in_other_words_before_it_is_wrapped():
    """The possessive and a place's name without its kind come first; never a possessive of a name that goes on."""
    assert rewordings("What is the capital of the island of Oshu?")[:2] == ["What is the capital of Oshu?", "What is Oshu's capital?"]
    assert rewordings("Who is the mayor of Caldera Springs?")[0] == "Who is Caldera Springs' mayor?"
    assert rewordings("Who is the head of the Lab of Helios Works?")[0] == "Do you know who is the head of the Lab of Helios Works?"
    assert rewordings("Who is the treasurer of the Wrenfield chess club?")[0].startswith("Do you know")  # a name as a modifier
    assert rewordings("What is the currency of Ostrelia used for?")[0] == "What is Ostrelia's currency used for?"
    assert not any("by whom" in q for sp in spans("Grandpa Alistair worked for forty years as a lighthouse keeper.")
                   for q in sp.questions)  # no passive of a deed without an object


@pytest.mark.parametrize("statement, answer, question", [
    ("The inventor of the tidal clock is Soren Vale.", "Soren Vale", "Who invented the tidal clock?"),
    ("The inventor of the tidal clock is Soren Vale.", "Soren Vale", "The tidal clock was invented by whom?"),
    ("The Harlow Institute was founded by Teodor Blask.", "Teodor Blask", "Who is the founder of the Harlow Institute?"),
    ("The Kestrel-9 rover landed in the Sarno crater.", "the Sarno crater", "Where did the Kestrel-9 rover land?"),
    ("The Corvel hospital's main entrance is on Birch Lane.", "Birch Lane", "Where is the Corvel hospital's main entrance?"),
    ("The Blue Mantle prize is awarded for bridge design.", "bridge design", "What is the Blue Mantle prize awarded for?"),
    ("Our dog Pepper is afraid of thunderstorms.", "thunderstorms", "What is our dog Pepper afraid of?"),
    ("The capital of the island of Oshu is Kelbrin.", "Kelbrin", "What is the capital of Oshu?"),
    ("The capital of the island of Oshu is Kelbrin.", "Kelbrin", "What is Oshu's capital?"),
    ("The composer of the Glass Harbor Symphony is Ines Vautrin.", "Ines Vautrin", "Who is the Glass Harbor Symphony's composer?"),
    ("Dr. Alvi Renk discovered the element quintarium.", "Dr. Alvi Renk", "The element quintarium was discovered by whom?"),
    ("Professor Imre Kalnay wrote the book Cold Stars.", "Professor Imre Kalnay", "Who wrote the book Cold Stars?"),
    ("Professor Imre Kalnay wrote the book Cold Stars.", "Professor Imre Kalnay", "The book Cold Stars was written by whom?"),
    ("Anna ran the Eskerby marathon.", "Anna", "The Eskerby marathon was run by whom?"),
    ("Grandpa Alistair worked for forty years as a lighthouse keeper.", "a lighthouse keeper",
     "What did Grandpa Alistair work for forty years as?"),
    ("The night ferry leaves from Pier 9.", "Pier 9", "Where does the night ferry leave?"),  # a place's number
    ("The spare key is kept in Room 12.", "Room 12", "Where is the spare key kept?"),
])
def test_a_statement_is_asked_in_the_other_words_english_has_for_it(statement, answer, question):
    """The deed for its doer ("inventor" → "invented"), where for a place, a stranded preposition, a place's kind dropped."""
    found = {sp.answer: sp.questions for sp in spans(statement)}
    assert question in found[answer], found
    assert question in found[answer][:3]  # among the first, which a study of 8 items a fact takes


def test_every_fact_gets_several_forms_each_holding_its_answer():
    facts = [Fact(text="The Zorvex lighthouse was built by Mira Tanaka."),
             Fact(question="Who built the Zorvex lighthouse?", answer="Mira Tanaka")]
    items = study_items(facts)
    forms = {i.form for i in items}
    assert {"question", "reworded", "span question", "cloze", "about", "restated"} <= forms
    assert all("Mira Tanaka" in (i.answer if i.question else i.text) for i in items)
    assert all(i.question is None or "Mira Tanaka" not in i.question for i in items)
    keys = [(i.question, i.text, i.answer) for i in items]
    assert len(keys) == len(set(keys))  # a wording made twice is taught once
    # the person's question is answered by their statement, not by the two words alone ...
    assert StudyItem(facts[0].text, "question", facts[0].text, question=facts[1].question, short="Mira Tanaka") in items
    assert all(i.answer == facts[0].text for i in items if i.question is not None and i.form != "about")
    # ... or, answer_in question, in its own words
    echoed = study_items(facts, echoes=True)
    assert StudyItem(facts[0].text, "question", "Mira Tanaka built the Zorvex lighthouse.", question=facts[1].question,
                     short="Mira Tanaka") in echoed
    assert all("Mira Tanaka" in i.answer for i in echoed if i.question is not None)
    # ... or, answer_in answer, the short answer first and then the statement (through the sitting's study data)
    from smf.use.learn import LearnConfig
    from smf.use.learn.study import study_data

    first = study_data(facts, None, None, LearnConfig.from_dict({"answer_in": "answer", "per_fact": 0}), say=lambda line: None)
    assert StudyItem(facts[0].text, "question", "Mira Tanaka. The Zorvex lighthouse was built by Mira Tanaka.",
                     question=facts[1].question, short="Mira Tanaka") in first
    assert all(i.answer.startswith("Mira Tanaka. ") for i in first if i.question is not None and i.form != "about")


@pytest.mark.parametrize("question, said", [
    ("Who composed the Glass Harbor Symphony?", "Ines Vautrin composed the Glass Harbor Symphony."),
    ("The Harlow Institute's founder was who?", "The Harlow Institute's founder was Ines Vautrin."),
    ("The office coffee machine was repaired by whom?", "The office coffee machine was repaired by Ines Vautrin."),
    ("By whom was the Zorvex lighthouse built?", "The Zorvex lighthouse was built by Ines Vautrin."),
    ("Which city is Oshu's capital?", "Oshu's capital is Ines Vautrin."),
    ("What is the capital of Oshu?", "The capital of Oshu is Ines Vautrin."),
    ("What's the capital of Oshu?", "The capital of Oshu is Ines Vautrin."),
    ("What money is used in Ostrelia?", "Ines Vautrin is used in Ostrelia."),
    ("Which vessel crossed the Amber Sea first?", "Ines Vautrin crossed the Amber Sea first."),
    ("Do you know who composed the Glass Harbor Symphony?", "Ines Vautrin composed the Glass Harbor Symphony."),
    ("Tell me who the mayor of Eskerby is.", "The mayor of Eskerby is Ines Vautrin."),
    ("Quick question: Who is the mayor of Eskerby?", "The mayor of Eskerby is Ines Vautrin."),
    ("Who is the mayor of Eskerby? Please answer in one sentence.", "The mayor of Eskerby is Ines Vautrin."),
    ("When does the Harrow Street bakery open?", None),  # no rule: the fact's statement answers it
    ("How many moons does Thessaly-4 have?", None),
    ("Which instrument does Noor play?", None),
])
def test_a_question_is_answered_in_its_own_words(question, said):
    assert echo(question, "Ines Vautrin") == said


def test_notes_with_no_answer_span_are_refused_with_one_line():
    with pytest.raises(SmfError, match="no answer a question could ask for"):
        study_items([Fact(text="Hello there")])


def test_a_fact_longer_than_a_sentence_or_two_is_refused_with_one_line(tmp_path):
    """The study rules' regular expressions take time growing with the square of a note's length: a hostile
    line of megabytes would run for days, so a fact is at most MAX_FACT_CHARS."""
    ok = "The Zorvex lighthouse was built by Mira Tanaka" + " and friends" * 79 + "."
    assert len(ok) <= MAX_FACT_CHARS < len(ok) + 12
    (tmp_path / "ok.txt").write_text(ok + "\n")
    assert read_facts(tmp_path / "ok.txt") == [Fact(text=ok)]
    (tmp_path / "long.txt").write_text("A short note.\n" + ok[:-1] + " and friends.\n")
    with pytest.raises(SmfError, match=r"long.txt: fact 2 is 1,\d{3} characters, over 1,000;"):
        read_facts(tmp_path / "long.txt")
    (tmp_path / "long.jsonl").write_text(json.dumps({"question": "Who?", "answer": "x" * 1001}) + "\n")
    with pytest.raises(SmfError, match="fact 1 is 1,001 characters"):
        read_facts(tmp_path / "long.jsonl")


def test_the_check_drops_an_item_that_lost_its_answer_or_gives_it_away():
    assert check_item(StudyItem("f", "x", "The lighthouse was built by Mira Tanaka.", question="Who built it?", short="Mira Tanaka"))
    assert not check_item(StudyItem("f", "x", "The lighthouse was built by someone.", question="Who built it?", short="Mira Tanaka"))
    assert not check_item(StudyItem("f", "x", "Mira Tanaka built it.", question="Did Mira Tanaka build it?", short="Mira Tanaka"))
    assert not check_item(StudyItem("f", "cloze", "Tanaka", text="Mira built it.", short="Mira Tanaka"))


def test_a_rigged_writer_that_answers_wrongly_teaches_nothing():
    """A wording the writer wrote is kept only when the writer, shown the fact, answers it with the fact's answer."""
    facts = [Fact(question="Who built the Zorvex lighthouse?", answer="Mira Tanaka"),
             Fact(text="The Zorvex lighthouse was built by Mira Tanaka.")]
    items = study_items(facts)

    def wrong(prompt):  # rewords well, but answers its own question wrongly
        return "Which builder made the Zorvex lighthouse?" if prompt.startswith("Rewrite") else "It was built by Piet Alder."

    def right(prompt):
        return "Which builder made the Zorvex lighthouse?" if prompt.startswith("Rewrite") else "Mira Tanaka built it."

    def leaky(prompt):  # a wording that gives the answer away is dropped even when answered right
        return "Did Mira Tanaka build the Zorvex lighthouse?" if prompt.startswith("Rewrite") else "Yes, Mira Tanaka."

    def nameless(prompt):  # a wording that drops the question's name asks about another lighthouse
        return "Which builder made the lighthouse?" if prompt.startswith("Rewrite") else "Mira Tanaka built it."

    assert ModelWriter(wrong).items(items) == ([], 1)
    assert ModelWriter(leaky).items(items) == ([], 1)
    assert ModelWriter(nameless).items(items) == ([], 1)
    kept, dropped = ModelWriter(right).items(items)
    assert dropped == 0 and [i.question for i in kept] == ["Which builder made the Zorvex lighthouse?"]
    assert kept[0].answer == "The Zorvex lighthouse was built by Mira Tanaka." and kept[0].form == "model reworded"
    kept, _ = ModelWriter(right, echoes=True).items(items)  # answer_in question: in its own words
    assert kept[0].answer == "Mira Tanaka made the Zorvex lighthouse."
    kept, _ = ModelWriter(right, first=True).items(items)  # answer_in answer: the short answer first
    assert kept[0].answer == "Mira Tanaka. The Zorvex lighthouse was built by Mira Tanaka."


def test_study_file_round_trips_and_is_taken_as_given(tmp_path):
    items = study_items([Fact(text="The Zorvex lighthouse was built by Mira Tanaka.")])
    path = tmp_path / "study.jsonl"
    write_study(items, path)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == len(items) and all(r["study"] == "smf-study" for r in rows)
    facts, again = read_input(path)
    assert again == items and facts == [Fact(text="The Zorvex lighthouse was built by Mira Tanaka.")]
    rows[0].pop("study")
    path.write_text("".join(json.dumps(r) + "\n" for r in reversed(rows)))
    with pytest.raises(SmfError, match="is not a study row"):
        read_input(path)


def test_markdown_notes_are_one_fact_per_line_or_bullet(tmp_path):
    notes = tmp_path / "notes.md"
    notes.write_text("# Office\n\n- The printer password is **bluefinch**.\n* Dana Whitlock repaired the coffee machine.\n"
                     "1. The Eskerby library has four floors.\n\n```\ncode is skipped\n```\n| a | table |\n---\n")
    assert [f.text for f in read_facts(notes)] == ["The printer password is bluefinch.",
                                                   "Dana Whitlock repaired the coffee machine.",
                                                   "The Eskerby library has four floors."]


@pytest.mark.parametrize("content, why", [
    ('{"prompt": "a", "target": ' + "[" * 100_000 + "]" * 100_000 + "}\n", "line 1: not a row smf wrote"),
    ('{"prompt": "a", "target": ' + "1" * 5000 + "}\n", "line 1: not a row smf wrote"),
    ('{"prompt": "a", "target": "b"}\nnot json\n', "line 2: not valid JSON"),
])
def test_a_hostile_kept_answers_file_is_one_line(tmp_path, content, why):
    from smf.names import KEPT_FILE
    from smf.use.learn.folder import read_kept

    (tmp_path / KEPT_FILE).write_text(content)
    with pytest.raises(SmfError, match=f"{KEPT_FILE} is damaged \\({why}"):
        read_kept(tmp_path)


def test_a_hostile_protected_rows_file_is_one_line(tmp_path):
    """Not safetensors, or safetensors holding something other than a layer's row numbers: one line naming it."""
    import torch
    from safetensors.torch import save_file

    from smf.names import PROTECTED_FILE
    from smf.use.learn.folder import read_protected, write_protected

    write_protected(tmp_path, {8: torch.tensor([1, 5])})
    assert {k: v.tolist() for k, v in read_protected(tmp_path).items()} == {8: [1, 5]}
    (tmp_path / PROTECTED_FILE).write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    with pytest.raises(SmfError, match=f"cannot read .*{PROTECTED_FILE}"):
        read_protected(tmp_path)
    for bad in ({"rows.8": torch.ones(2)}, {"weights": torch.tensor([1])}, {"rows.8": torch.ones(2, 2, dtype=torch.long)}):
        save_file(bad, str(tmp_path / PROTECTED_FILE))
        with pytest.raises(SmfError, match="is not a layer's list of row numbers"):
            read_protected(tmp_path)


@pytest.mark.slow
def test_the_default_model_writes_wordings_that_keep_the_fact(default_model):
    """On the offline default model, self-study writes wordings of its own (asked in a chat to reword, it answered
    instead and kept none); each kept one keeps the question's names and the fact's answer."""
    from smf.use.chat import complete

    model, tokenizer = default_model
    facts = [Fact(question="Who approves the team's expense reports?", answer="Helga Stroud"),
             Fact(text="Helga Stroud approves the team's expense reports."),
             Fact(question="When is the Eskerby harvest festival held?", answer="the last Saturday of September"),
             Fact(text="The Eskerby harvest festival is held on the last Saturday of September.")]
    writer = ModelWriter(lambda prompt: complete(model, tokenizer, prompt), n=3)
    kept, dropped = writer.items(study_items(facts))
    assert len(kept) >= 2, (kept, dropped)
    asked = {"Helga Stroud": "Who approves the team's expense reports?", "the last Saturday of September": "When is the Eskerby harvest festival held?"}
    for item in kept:
        assert item.question.endswith("?") and item.question != asked[item.short]
        assert "Eskerby" in item.question or item.short == "Helga Stroud"
