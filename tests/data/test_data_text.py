"""Text input: lines split on newline only, a byte-order mark is not text, suffixes in any case, paths with ':'."""

import json

from smf.data.sources import general_texts, source_from_text, training_examples
from smf.use.learn.facts import read_facts

SEPARATORS = "\u2028\u2029\x0b\x0c\x1c\x1d\x1e\x85"  # str.splitlines splits on each; a fact holds them as characters


def test_unicode_separators_stay_inside_one_fact(tmp_path):
    path = tmp_path / "facts.txt"
    path.write_text(f"Kelbrin{SEPARATORS}is the capital of Oshu.\r\nThe Sel flows north.\n", encoding="utf-8")
    assert [f.text for f in read_facts(path)] == [f"Kelbrin{SEPARATORS}is the capital of Oshu.", "The Sel flows north."]
    assert [e.target for e in training_examples(str(path))] == [f"Kelbrin{SEPARATORS}is the capital of Oshu.", "The Sel flows north."]


def test_a_jsonl_string_holding_a_line_separator_is_one_row(tmp_path):
    path = tmp_path / "d.jsonl"
    # json.dumps escapes U+2028 by default; editors and other tools write it raw
    path.write_text(json.dumps({"prompt": "Q:", "target": "one\u2028fact"}, ensure_ascii=False) + "\n", encoding="utf-8")
    [example] = training_examples(str(path))
    assert example.target == "one\u2028fact"
    assert [f.answer for f in read_facts(path)] == ["one\u2028fact"]


def test_a_byte_order_mark_is_not_part_of_the_first_fact(tmp_path):
    txt, jsonl = tmp_path / "facts.txt", tmp_path / "facts.jsonl"
    txt.write_bytes("\ufeffKelbrin is the capital of Oshu.\n".encode())
    jsonl.write_bytes('\ufeff{"text": "Kelbrin is the capital of Oshu."}\n'.encode())
    for path in (txt, jsonl):
        assert [f.text for f in read_facts(path)] == ["Kelbrin is the capital of Oshu."]
        assert [e.target for e in training_examples(str(path))] == ["Kelbrin is the capital of Oshu."]
    assert general_texts(str(txt)) == ["Kelbrin is the capital of Oshu.\n"]


def test_suffixes_in_capitals_are_files(tmp_path):
    txt, jsonl = tmp_path / "FACTS.TXT", tmp_path / "FACTS.JSONL"
    txt.write_text("Kelbrin is the capital of Oshu.\n")
    jsonl.write_text('{"question": "Capital of Oshu?", "answer": "Kelbrin"}\n')
    assert [f.text for f in read_facts(txt)] == ["Kelbrin is the capital of Oshu."]
    assert [f.answer for f in read_facts(jsonl)] == ["Kelbrin"]
    assert [e.target for e in training_examples(str(txt))] == ["Kelbrin is the capital of Oshu."]
    assert general_texts(str(txt)) == ["Kelbrin is the capital of Oshu.\n"]


def test_an_existing_path_with_a_colon_is_a_path(tmp_path):
    path = tmp_path / "notes:n_facts=3.txt"
    path.write_text("The Sel flows north.\n")
    assert source_from_text(str(path)) == {"name": str(path)}
    assert [e.target for e in training_examples(str(path))] == ["The Sel flows north."]
    assert source_from_text("facts:n_facts=3") == {"name": "facts", "n_facts": 3}  # a name with options is still one
