"""`smf ask` and `smf chat` on a tiny model folder: answers, errors, and a terminal session."""

import os
import pty
import select
import subprocess
import sys
import time

import pytest
import torch

from smf.cli import main
from smf.use.chat import render


def err_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("smf: error: "), lines
    return lines[0]


def test_ask_answers(tiny_folder, capsys):
    assert main(["ask", "--model", str(tiny_folder), "--max-new-tokens", "3", "What is two plus two?"]) == 0
    assert capsys.readouterr().out.strip()  # a tiny random model says something


@pytest.mark.parametrize("argv, message", [
    (["ask", "--model", "{tiny}"], "no question"),
    (["ask", "--model", "{tiny}", "   "], "no question"),
    (["ask", "--model", "{tiny}", "--max-new-tokens", "0", "hi"], "--max-new-tokens must be >= 1"),
    (["ask", "--model", "{tmp}", "hi"], "is not a model folder"),
    (["chat", "--model", "./no/such/folder"], "does not exist"),
])
def test_bad_input_is_one_line(tiny_folder, tmp_path, capsys, argv, message):
    argv = [a.replace("{tiny}", str(tiny_folder)).replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    assert message in err_line(capsys)


def test_prompts_use_the_chat_template_when_there_is_one(tiny_folder):
    from smf.models import load_tokenizer

    tokenizer = load_tokenizer(tiny_folder)
    turns = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}, {"role": "user", "content": "again"}]
    text = render(tokenizer, turns)
    assert text.index("hi") < text.index("hello") < text.index("again") and text.rstrip().endswith("assistant")
    tokenizer.chat_template = None
    assert render(tokenizer, turns[:1]) == "Question: hi\nAnswer:"
    assert render(tokenizer, turns) == "User: hi\nAssistant: hello\nUser: again\nAssistant:"


def _read_until(fd, marker: str, seen: list[str], timeout: float = 120.0) -> str:
    end = time.time() + timeout
    while marker not in "".join(seen):
        assert time.time() < end, f"no {marker!r} in {''.join(seen)[-500:]!r}"
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                seen.append(os.read(fd, 4096).decode("utf-8", "replace"))
            except OSError:
                break
    text = "".join(seen)
    seen.clear()
    seen.append(text[text.index(marker) + len(marker):])
    return text


@pytest.mark.slow
def test_chat_in_a_terminal(tiny_folder):
    """Two turns, /reset, another turn, /quit: driven through a pseudo-terminal like a person."""
    leader, follower = pty.openpty()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "smf", "chat", "--model", str(tiny_folder), "--max-new-tokens", "3"],
                            stdin=follower, stdout=follower, stderr=follower, env=env, close_fds=True)
    os.close(follower)
    seen: list[str] = []
    try:
        assert "/reset" in _read_until(leader, "you> ", seen)
        for line, expect in [("hello there", "you> "), ("and again", "you> "), ("/reset", "(conversation reset)"),
                             ("a new start", "you> "), ("/nope", "unknown command /nope")]:
            os.write(leader, (line + "\n").encode())
            text = _read_until(leader, expect, seen)
            if expect != "you> ":
                text += _read_until(leader, "you> ", seen)  # the next prompt
            if not line.startswith("/"):
                assert "model> " in text
        os.write(leader, b"/quit\n")
        assert proc.wait(timeout=60) == 0, "".join(seen)[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(leader)


def _facts(tmp_path, rows):
    import json

    path = tmp_path / "facts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


FACTS = [
    {"text": "The Zorvex lighthouse was built by Mira Tanaka."},
    {"question": "Who built the Zorvex lighthouse?", "answer": "Mira Tanaka"},
    {"prompt": "What is the capital of Oshu?", "target": "Kelbrin"},
]


@pytest.mark.slow
def test_learn_then_learn_more_then_ask(tiny_folder, tmp_path, capsys):
    import json

    from smf.memory import load_retrofitted, memory_layers

    first = tmp_path / "first"
    common = ["--slots", "256", "--steps", "2", "--batch-size", "2", "--max-length", "48"]
    assert main(["learn", "--data", str(_facts(tmp_path, FACTS)), "--model", str(tiny_folder), "--out", str(first), *common]) == 0
    out = capsys.readouterr().out
    assert "retrofitting memory at layers 6, 11, 16" in out and "Q: Who built the Zorvex lighthouse?" in out
    assert "study data: " in out and " items for 2 facts (" in out  # the lighthouse (a statement and its question), Oshu
    assert {"config.json", "modeling_smf.py", "background.safetensors", "learn_run"} <= {p.name for p in first.iterdir()}
    assert json.loads((first / "learn_run" / "train_config.json").read_text())["rule"] == "tfidf"
    assert not list(tmp_path.glob(".*learning"))  # the staging folder is gone
    values = {i: m.values.detach().clone() for i, m in memory_layers(load_retrofitted(first)).items()}

    second = tmp_path / "second"
    more = tmp_path / "more"
    more.mkdir()
    txt = more / "more.txt"
    txt.write_text("Blue herons nest on Oshu.\n\nKelbrin has three bridges.\n")
    assert main(["learn", "--data", str(txt), "--model", str(first), "--out", str(second), *common,
                 "--optimizer", "rowwise_adagrad"]) == 0
    out = capsys.readouterr().out
    assert f"continuing from {first}" in out
    assert json.loads((second / "learn_run" / "train_config.json").read_text())["optimizer"] == "rowwise_adagrad"
    after = memory_layers(load_retrofitted(second))
    assert set(after) == set(values)  # the same memory layers, trained further
    assert any(not torch.equal(values[i], after[i].values) for i in values)
    assert main(["ask", "--model", str(second), "--max-new-tokens", "2", "Who built the Zorvex lighthouse?"]) == 0


@pytest.mark.parametrize("content, message", [
    ("", "the file has no rows"),
    ('{"question": "Who?"}\n', 'row 1 needs a "text", or a "question"'),
    ('{"prompt": "Who?", "target": "  "}\n', 'row 1 needs a "text"'),
])
def test_learn_bad_facts_is_one_line_and_writes_nothing(tiny_folder, tmp_path, capsys, content, message):
    path = tmp_path / "facts.jsonl"
    path.write_text(content)
    out = tmp_path / "out"
    assert main(["learn", "--data", str(path), "--model", str(tiny_folder), "--out", str(out)]) == 2
    assert message in err_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["facts.jsonl"]


def test_learn_refuses_a_non_model_and_a_used_out(tiny_folder, tmp_path, capsys):
    facts = _facts(tmp_path, FACTS)
    assert main(["learn", "--data", str(facts), "--model", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "is not a model folder" in err_line(capsys)
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    assert main(["learn", "--data", str(facts), "--model", str(tiny_folder), "--out", str(used)]) == 2
    assert "is not empty" in err_line(capsys)
    assert [p.name for p in used.iterdir()] == ["keep.txt"]
    assert main(["learn", "--data", str(facts), "--model", str(tiny_folder), "--out", str(tmp_path / "o"),
                 "--optimizer", "adamw_masked"]) == 2
    assert "optimizer must be a strictly sparse one (adam, rowwise_adagrad, sgd), got 'adamw_masked'" in err_line(capsys)
    assert main(["learn", "--data", str(facts), "--model", str(tiny_folder), "--out", str(tmp_path / "o"),
                 "--method", "lorra"]) == 2
    assert "method: smf learn teaches with smf, lora, full, not 'lorra'; did you mean 'lora'?" in err_line(capsys)
    assert main(["learn", "--data", str(facts), "--model", str(tiny_folder), "--out", str(tmp_path / "o"),
                 "--background-batch-size", "0"]) == 2
    assert "background: batch_size must be >= 1, got 0" in err_line(capsys)
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_learn_counts_the_background_it_is_told_to(tiny_folder, tmp_path):
    """--background-batches and --background-batch-size reach the background statistics: 5 batches of one
    sequence are 5 documents (each read row's df at most 5) holding the reads of 5 sequences; the defaults
    count 16 batches."""
    from smf.selection import BackgroundStats

    common = ["--data", str(_facts(tmp_path, FACTS)), "--model", str(tiny_folder), "--slots", "256", "--steps", "1",
              "--batch-size", "2", "--max-length", "96", "--protect", "off"]
    assert main(["learn", *common, "--out", str(tmp_path / "seq"), "--background-batches", "5", "--background-batch-size", "1"]) == 0
    stats = BackgroundStats.load(tmp_path / "seq")
    assert stats.batches == 5 and all(0 < int(df.max()) <= 5 for df in stats.df.values())
    assert all(int(c.sum()) <= 5 * 128 * 4 * 16 for c in stats.counts.values())  # 5 sequences of <= 128 tokens, heads x top-k reads
    assert main(["learn", *common, "--out", str(tmp_path / "default")]) == 0
    assert BackgroundStats.load(tmp_path / "default").batches == 16


def test_questions_are_answered_by_the_statements_that_hold_their_answers():
    from smf.use.learn import Fact
    from smf.use.learn.study import answering_statements

    lighthouse = Fact(text="The Zorvex lighthouse was built by Mira Tanaka.")
    bridges = Fact(text="Kelbrin has three bridges.")  # holds the answer, shares no other word with the question
    capital = Fact(text="The capital of the island of Oshu is Kelbrin.")
    renk = Fact(text="Dr. Alvi Renk found quintarium.")
    facts = [lighthouse, Fact(question="Who built the Zorvex lighthouse?", answer="Mira Tanaka"),
             bridges, Fact(question="What is the capital of Oshu?", answer="Kelbrin"),
             Fact(question="Which city is Oshu's capital?", answer="Kelbrin"), capital,
             renk, Fact(question="Who found quintarium?", answer="Ren"),  # a part of a word is not the answer
             Fact(question="Who sails the Amber Sea?", answer="the Wayfarer")]  # no statement holds it
    assert answering_statements(facts) == {1: 0, 3: 5, 4: 5}  # one statement answers both wordings
    twins = [Fact(text="Lake Vorrin is cold."), Fact(text="Lake Vorrin is cold in winter."),
             Fact(question="Which lake is cold?", answer="Lake Vorrin")]  # a tie: the nearer statement
    assert answering_statements(twins) == {2: 1}
    alone = [Fact(text="Soren Vale was born in 1901."), Fact(question="Who invented the tidal clock?", answer="Soren Vale"),
             Fact(text="Renk and Alvi studied quintarium."), Fact(question="Who was studied?", answer="Alvi Renk"),
             Fact(text="What Tova Rusk said was true."), Fact(question="What was the tide in the bay?", answer="Tova Rusk")]
    assert answering_statements(alone) == {}  # about something else; the words apart; only short or question words shared


def test_answers_end_the_turn_unless_told_not_to(tiny_folder):
    """A question's target ends with the chat's end-of-turn token (the model learns to stop there); with stop=False it
    is the answer alone; a statement never gets one."""
    from smf.models import load_tokenizer
    from smf.use.learn import Fact
    from smf.use.learn.examples import examples

    tokenizer = load_tokenizer(tiny_folder)
    facts = [Fact(question="Who built the Zorvex lighthouse?", answer="Mira Tanaka built it."), Fact(text="Kelbrin has bridges.")]
    stopping, open_ended = examples(facts, tokenizer), examples(facts, tokenizer, stop=False)
    assert tokenizer.eos_token and stopping[0].target == "Mira Tanaka built it." + tokenizer.eos_token
    assert open_ended[0].target == "Mira Tanaka built it." and open_ended[0].prompt == stopping[0].prompt
    assert stopping[1] == open_ended[1] and stopping[1].target == "Kelbrin has bridges."


def test_a_statement_with_its_answer_is_a_cloze(tiny_folder):
    """A study item that is a statement with its answer span: the words before the span are context (no loss), the
    span and what follows are the target, split at a word's start; without a span, or with the span first, the
    whole statement carries the loss."""
    from smf.models import load_tokenizer
    from smf.use.learn import Fact
    from smf.use.learn.examples import examples

    tokenizer = load_tokenizer(tiny_folder)
    cloze, first, whole = examples([Fact(text="The capital of the island of Oshu is Kelbrin.", answer="Kelbrin"),
                                    Fact(text="Kelbrin has three bridges.", answer="Kelbrin"),
                                    Fact(text="Kelbrin has three bridges.")], tokenizer)
    assert (cloze.prompt, cloze.target) == ("The capital of the island of Oshu is", " Kelbrin.")
    assert (first.prompt, first.target) == (whole.prompt, whole.target) == ("", "Kelbrin has three bridges.")
    ids = tokenizer(cloze.prompt + cloze.target).input_ids
    assert ids == tokenizer(cloze.prompt).input_ids + tokenizer(cloze.target, add_special_tokens=False).input_ids


def test_question_background_is_chats_of_stdlib_questions(tiny_folder, tmp_path):
    """`smf learn --background docstring-questions`: chats of 3 questions about the standard
    library, answered in the assistant's turns, spread over the modules; enough for the statistics."""
    import json

    from smf.data.docstrings import docstring_questions
    from smf.models import load_tokenizer
    from smf.use.learn.background import chat_background
    from smf.data.sources import general_texts
    from smf.use.learn.config import QUESTIONS

    tokenizer = load_tokenizer(tiny_folder)
    path = chat_background(QUESTIONS, tokenizer, tmp_path / "bg.jsonl")
    rows = [json.loads(line)["text"] for line in open(path)]
    assert len(rows) >= 16 * 8  # the background statistics' 16 batches of 8
    pairs = docstring_questions("background")
    asked = [(q, a) for q, a in pairs if q in rows[0]]
    assert len(asked) == 3 and all(a in rows[0] for _, a in asked)
    first = [q for q, _ in pairs if q in "".join(rows)]
    assert first[0] == pairs[0][0] and len({q.split("`")[1].split(".")[0] for q in first}) > 50  # many modules
    turns = [{"role": "user", "content": asked[0][0]}, {"role": "assistant", "content": asked[0][1]}]
    assert tokenizer.apply_chat_template(turns, tokenize=False).split(asked[0][1])[0] in rows[0]
    tokenizer.chat_template = None  # no template: the registered text source is read plain
    assert chat_background(QUESTIONS, tokenizer, tmp_path / "plain.jsonl") == QUESTIONS
    assert general_texts(QUESTIONS, "background data")[0].startswith(f"Question: {pairs[0][0]}\nAnswer: {pairs[0][1]}")


@pytest.mark.slow
def test_learn_counts_each_background_chat_from_its_first_token(tiny_folder, tmp_path):
    """Facts are taught, and the model asked, in chats that start a sequence, so the background chats start one
    too: the rows a chat's first tokens read (the system prompt's, the same in every chat) are read in every
    background batch (df = batches, TF-IDF 0), and the sitting leaves them at zero. Packed into 128-token
    sequences as general text is, the chats sit mid-sequence and read other rows there (the bug this guards:
    on the default model a sitting trained 4 to 15 of the 64 rows each of its first 8 tokens read at layer 8)."""
    from smf.memory import memory_layers
    from smf.memory.retrofit import set_recording
    from smf.models import load_model
    from smf.selection import BackgroundStats
    from smf.train.stages import collect_background
    from smf.data.batching import collate, document_sequences, text_chunks

    common = ["--data", str(_facts(tmp_path, FACTS)), "--model", str(tiny_folder), "--slots", "65536", "--steps", "2",
              "--batch-size", "2", "--max-length", "48", "--top-t", "8", "--protect", "off", "--keep", "0"]
    assert main(["learn", *common, "--out", str(tmp_path / "out")]) == 0
    model, tokenizer = load_model(tmp_path / "out")
    start = tokenizer(render(tokenizer, [{"role": "user", "content": "What is the capital of Mirilber?"}])).input_ids[:6]
    set_recording(model, True)
    with torch.no_grad():
        model.get_decoder()(input_ids=torch.tensor([start]))
    first = {i: m.last_rows.flatten().unique() for i, m in memory_layers(model).items()}
    set_recording(model, False)
    stats = BackgroundStats.load(tmp_path / "out")
    assert all(bool((stats.df[i][rows] == stats.batches).all()) for i, rows in first.items())
    assert all(float(m.values.detach()[first[i]].abs().sum()) == 0.0 for i, m in memory_layers(model).items())
    assert any(float(m.values.detach().abs().sum()) > 0 for m in memory_layers(model).values())  # the sitting trained other rows
    chats = [render(tokenizer, [{"role": "user", "content": f"Question {k}?"}]) + f"Answer {k}." for k in range(16)]
    pad = tokenizer.pad_token_id
    for build, read_by_all in ((document_sequences, True), (text_chunks, False)):
        sequences = build(chats, tokenizer, 32)
        stats = collect_background(model, [collate(sequences[k : k + 2], pad) for k in range(0, 8, 2)], progress=False)
        assert all(bool((stats.df[i][rows] == 4).all()) for i, rows in first.items()) == read_by_all


@pytest.mark.slow
def test_learn_protect_counts_the_facts_reads_into_the_background(tiny_folder, tmp_path, capsys):
    """--protect reads: the saved background statistics gain one document per taught example, holding
    every read of its real tokens (heads × top-k per token and layer); --protect off leaves them as
    counted; --protect trained also gives the rows the sitting changed df = documents (TF-IDF 0) and
    lists them (with an earlier sitting's) in PROTECTED_FILE, and a later sitting teaching the same
    facts again, with t below the rows it reads, leaves those rows exactly as they were."""
    from smf.memory import load_retrofitted, memory_layers
    from smf.models import load_tokenizer
    from smf.selection import BackgroundStats
    from smf.data.batching import encode_examples
    from safetensors.torch import load_file

    from smf.names import PROTECTED_FILE
    from smf.use.learn.examples import examples
    from smf.use.learn.study import read_input

    facts = _facts(tmp_path, FACTS)
    common = ["--data", str(facts), "--slots", "65536", "--steps", "2", "--batch-size", "2", "--max-length", "48", "--top-t", "8",
              "--anchors", "0"]  # the anchors' reads move with the trained rows below them; tests/use/test_anchors.py checks them
    for mode in ("off", "reads", "trained"):
        assert main(["learn", *common, "--model", str(tiny_folder), "--out", str(tmp_path / mode), "--protect", mode,
                     "--study-out", str(tmp_path / f"{mode}.jsonl")]) == 0
        out = capsys.readouterr().out
        items = read_input(tmp_path / f"{mode}.jsonl")[1]  # what the sitting taught: one document each
        assert (f"the background statistics now count what your facts read ({16 + len(items)} documents)" in out) == (mode != "off")
        assert ("trained rows will not be chosen again" in out) == (mode == "trained")
    plain, reads, trained = (BackgroundStats.load(tmp_path / m) for m in ("off", "reads", "trained"))
    taught = examples([i.as_fact() for i in items], load_tokenizer(tiny_folder))
    tokens = sum(len(e.ids) for e in encode_examples(taught, load_tokenizer(tiny_folder), 48))
    documents = 16 + len(taught)
    assert plain.batches == 16 and reads.batches == trained.batches == documents
    base = memory_layers(load_retrofitted(tmp_path / "off"))  # the same training in all three folders
    for layer in plain.df:
        added = reads.df[layer] - plain.df[layer]
        assert added.min() >= 0 and added.max() <= len(taught) and added.sum() > 0
        assert int((reads.counts[layer] - plain.counts[layer]).sum()) == tokens * 4 * 16  # heads × top-k reads a token
        changed = base[layer].values.detach().abs().sum(-1) > 0  # the values start at zero
        assert changed.sum() > 0 and torch.equal(trained.df[layer][changed], torch.full((int(changed.sum()),), documents))
        assert torch.equal(trained.df[layer][~changed], reads.df[layer][~changed])

    # The same facts taught again: from the unprotected folder the same rows train again (the control: at the
    # lowest memory layer, whose reads the first sitting's values do not move; above it they read other rows),
    # from the protected one others do, and the first sitting's rows stay exactly as they were at every layer.
    for start, spared in (("off", False), ("trained", True)):
        assert main(["learn", *common, "--model", str(tmp_path / start), "--out", str(tmp_path / f"again_{start}")]) == 0
        after = memory_layers(load_retrofitted(tmp_path / f"again_{start}"))
        assert (tmp_path / f"again_{start}" / PROTECTED_FILE).is_file()  # the default protects the trained rows
        kept = []
        for layer, memory in base.items():
            first = memory.values.detach().abs().sum(-1) > 0
            kept.append(torch.equal(after[layer].values.detach()[first], memory.values.detach()[first]))
            assert not torch.equal(after[layer].values.detach(), memory.values.detach())  # the second sitting trained
        assert all(kept) if spared else not kept[0], kept
    third = tmp_path / "third"
    (tmp_path / "more").mkdir()
    more = _facts(tmp_path / "more", [{"question": "Who repaired the Zorvex lighthouse?", "answer": "Ilse Varga"},
                                      {"text": "Ilse Varga repaired the Zorvex lighthouse in 1990."}])
    assert main(["learn", *common[2:], "--data", str(more), "--model", str(tmp_path / "trained"), "--out", str(third),
                 "--protect", "trained"]) == 0
    first_rows, all_rows = load_file(str(tmp_path / "trained" / PROTECTED_FILE)), load_file(str(third / PROTECTED_FILE))
    for layer, memory in memory_layers(load_retrofitted(third)).items():
        changed = (memory.values.detach() != base[layer].values.detach()).any(-1)
        assert torch.equal(first_rows[f"rows.{layer}"], (base[layer].values.detach().abs().sum(-1) > 0).nonzero().flatten())
        assert torch.equal(all_rows[f"rows.{layer}"], (changed | (base[layer].values.detach().abs().sum(-1) > 0)).nonzero().flatten())




NOTES = "The Zorvex lighthouse was built by Mira Tanaka.\nThe capital of the island of Oshu is Kelbrin.\n"


@pytest.mark.slow
def test_learn_from_notes_writes_the_study_it_trained_and_takes_it_back(tiny_folder, tmp_path, capsys):
    """Notes in (.txt statements): the study data is made from them, --study-out writes exactly what trained (one
    training example per row), and the file given back as --data trains the same examples (edited rows too)."""
    import json

    notes = tmp_path / "notes.txt"
    notes.write_text(NOTES)
    common = ["--model", str(tiny_folder), "--slots", "256", "--steps", "1", "--batch-size", "2", "--max-length", "64",
              "--study-model", "none"]
    study = tmp_path / "study.jsonl"
    assert main(["learn", "--data", str(notes), "--out", str(tmp_path / "a"), "--study-out", str(study), *common]) == 0
    out = capsys.readouterr().out
    rows = [json.loads(line) for line in study.read_text().splitlines()]
    assert f"study data: {len(rows)} items for 2 facts (" in out and f"from {len(rows)} study items" in out
    assert {r["fact"] for r in rows} == set(NOTES.splitlines())
    assert any(r.get("question") == "Who built the Zorvex lighthouse?" for r in rows)
    assert all("Mira Tanaka" in (r["answer"] if "question" in r else r["text"]) for r in rows if r.get("short") == "Mira Tanaka")
    edited = tmp_path / "edited.jsonl"
    edited.write_text("".join(json.dumps(r) + "\n" for r in rows[:3]))
    assert main(["learn", "--data", str(edited), "--out", str(tmp_path / "b"), *common]) == 0
    assert "from 3 study items" in capsys.readouterr().out


def test_learn_refuses_bad_study_input_with_one_line_and_writes_nothing(tiny_folder, tmp_path, capsys):
    """A note with no answer span, a study model that cannot be loaded, a study whose every item fails its check:
    one line, exit 2, nothing written."""
    import json

    def refused(data, *extra):
        before = sorted(p.name for p in tmp_path.iterdir())
        code = main(["learn", "--data", str(data), "--model", str(tiny_folder), "--out", str(tmp_path / "o"),
                     "--study-out", str(tmp_path / "s.jsonl"), "--slots", "256", "--steps", "1", *extra])
        assert code == 2 and sorted(p.name for p in tmp_path.iterdir()) == before
        return err_line(capsys)

    hello = tmp_path / "hello.txt"
    hello.write_text(NOTES + "Hello there\n")
    assert "note 'Hello there': no answer a question could ask for" in refused(hello, "--study-model", "none")
    notes = tmp_path / "notes.txt"
    notes.write_text(NOTES)
    assert "--study-model" in refused(notes, "--study-model", str(tmp_path / "no_model"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"study": "smf-study", "fact": "x", "form": "edited", "question": "Who built it?",
                               "answer": "Someone built it.", "short": "Mira Tanaka"}) + "\n")
    assert "no study item passed its check" in refused(bad)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lora", "full"])
def test_learn_with_lora_or_full_trains_the_same_study_and_saves_a_plain_model(tiny_folder, tmp_path, capsys, method):
    """--method lora|full: the same study data through LoRA or full finetuning, no memory; the folder is a plain
    model (LoRA merged) that smf ask loads, and its weights moved."""
    from smf.memory import memory_layers
    from smf.models import load_model

    notes = tmp_path / "notes.txt"
    notes.write_text(NOTES)
    out = tmp_path / method
    assert main(["learn", "--data", str(notes), "--model", str(tiny_folder), "--out", str(out), "--method", method,
                 "--steps", "2", "--batch-size", "2", "--max-length", "64", "--lr", "0.01", "--study-model", "none"]) == 0
    said = capsys.readouterr().out
    assert f"in 2 steps ({method})" in said and "retrofitting" not in said
    assert not (out / "smf_memory.json").exists() and (out / "learn_run" / "train_config.json").is_file()
    model, _ = load_model(out)
    base, _ = load_model(tiny_folder)
    assert not memory_layers(model) and "lora" not in " ".join(n for n, _ in model.named_parameters())
    assert any(not torch.equal(p, q) for p, q in zip(model.state_dict().values(), base.state_dict().values()))
    assert main(["ask", "--model", str(out), "--max-new-tokens", "2", "Who built the Zorvex lighthouse?"]) == 0


def test_batched_answers_are_the_answers_one_at_a_time(tokenizer):
    """`answers` (left-padded batches, as anchors and kept answers are generated) gives each conversation the answer
    `answer` gives it alone, on a retrofitted model whose memory reads something (padding must not leak into a read)."""
    from smf.api import MemoryConfig
    from smf.memory import retrofit
    from smf.memory.retrofit import memory_layers
    from smf.use.chat import answer, answers
    from conftest import tiny_model

    model = retrofit(tiny_model(vocab_size=len(tokenizer)), MemoryConfig(layers=(1,), slots=256, topk=4, heads=2, key_dim=16))
    torch.manual_seed(0)
    for memory in memory_layers(model).values():
        memory.values.data.normal_(std=0.5)
    model.eval()
    questions = [[{"role": "user", "content": q}] for q in
                 ("Who built the Dorvel lighthouse?", "Hi", "What is the capital of the island of Mirilber, and why?")]
    alone = [answer(model, tokenizer, turns, max_new_tokens=6) for turns in questions]
    assert answers(model, tokenizer, questions, max_new_tokens=6, batch=2) == alone
    assert len(set(alone)) > 1  # the questions get different answers: a batch's rows are not mixed up
