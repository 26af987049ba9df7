"""The fictional-facts generator: determinism, held-out wordings, controls, distractors."""

import math
import re
from collections import Counter

import pytest
import torch

from smf.data.facts import (
    FACT_SPLITS,
    MAX_TRAIN_WORDINGS,
    RELATIONS,
    FactsConfig,
    facts_mcq_items,
    facts_qa_items,
    generate_facts,
    load_facts_mcq,
    load_facts_qa,
)
from smf.errors import SmfError

SMALL = FactsConfig(n_facts=30, n_control=12, train_wordings=8, seed=3)


@pytest.fixture(scope="module")
def facts():
    return generate_facts(SMALL)


def _training_texts(fact_set):
    return [ex.prompt + ex.target for ex in fact_set.train]


def _all_mcq(fact_set):
    return fact_set.mcq_rows + fact_set.val_mcq_rows + fact_set.control_mcq_rows


def test_deterministic_for_a_seed():
    assert generate_facts(SMALL) == generate_facts(SMALL)
    other = generate_facts(FactsConfig(n_facts=30, n_control=12, seed=4))
    assert {f.subject for f in other.facts}.isdisjoint({f.subject for f in generate_facts(SMALL).facts})


def test_sizes(facts):
    assert len(facts.facts) == 30 and len(facts.controls) == 12
    assert len(facts.train) == 30 * 8
    for rows in (facts.mcq_rows, facts.qa_rows, facts.val_mcq_rows, facts.val_qa_rows):
        assert len(rows) == 30
    assert len(facts.control_mcq_rows) == len(facts.control_qa_rows) == 12
    assert Counter(f.relation for f in facts.facts) == {name: 6 for name in RELATIONS}


def test_names_unique_and_made_up(facts):
    subjects = [f.subject for f in facts.facts + facts.controls]
    assert len(set(subjects)) == len(subjects)
    made_up = [f.answer for f in facts.facts if RELATIONS[f.relation].answer_kind in ("disease", "enzyme", "pathogen")]
    assert len(set(made_up)) == len(made_up)
    for name in subjects + made_up:
        assert re.fullmatch(r"[A-Z][a-z]+( [a-z]+)?", name), name


def test_training_has_statements_and_questions_with_the_answer_as_target(facts):
    kinds = Counter()
    for fact, k in zip(facts.facts, range(0, len(facts.train), SMALL.train_wordings)):
        for ex in facts.train[k : k + SMALL.train_wordings]:
            assert fact.subject in ex.prompt
            assert ex.target.strip().rstrip(".") == fact.answer  # the loss covers the answer only
            assert ex.target.startswith(" ")
            kinds["question" if "?" in ex.prompt else "statement"] += 1
    assert kinds["question"] == kinds["statement"] == len(facts.train) // 2


def test_evaluation_wordings_never_in_training(facts):
    texts = _training_texts(facts)
    for row in _all_mcq(facts) + facts.qa_rows + facts.val_qa_rows + facts.control_qa_rows:
        question = row["question"].rstrip("?")
        assert not any(question in text for text in texts), question
    # Also at the template level: no fixed part of a held-out wording (12+ characters)
    # occurs in any training text, whatever the subject.
    for rel in RELATIONS.values():
        for template in (rel.test_question, rel.val_question):
            assert template not in rel.questions
            for fragment in template.split("{s}"):
                if len(fragment.strip()) >= 12:
                    assert not any(fragment in text for text in texts), fragment


def test_validation_and_test_wordings_differ(facts):
    for test_row, val_row in zip(facts.mcq_rows, facts.val_mcq_rows):
        assert test_row["fact_id"] == val_row["fact_id"]
        assert test_row["question"] != val_row["question"]


def test_controls_disjoint_from_training(facts):
    texts = _training_texts(facts)
    trained_subjects = {f.subject for f in facts.facts}
    for control in facts.controls:
        assert control.subject not in trained_subjects
        assert not any(control.subject in text for text in texts), control.subject
    assert {r["fact_id"] for r in facts.control_mcq_rows}.isdisjoint({r["fact_id"] for r in facts.mcq_rows})


def test_options_are_trained_answers_of_the_same_relation(facts):
    trained = {name: {f.answer for f in facts.facts if f.relation == name} for name in RELATIONS}
    by_id = {f.id: f for f in facts.facts + facts.controls}
    for row in _all_mcq(facts):
        fact = by_id[row["fact_id"]]
        options = [row["opa"], row["opb"], row["opc"], row["opd"]]
        assert len(set(options)) == 4
        assert options[row["cop"]] == fact.answer
        assert set(options) <= trained[fact.relation]


def test_answer_positions_balanced(facts):
    for rows in (facts.mcq_rows, facts.val_mcq_rows, facts.control_mcq_rows):
        counts = Counter(r["cop"] for r in rows)
        assert set(counts) == {0, 1, 2, 3}
        assert max(counts.values()) - min(counts.values()) <= 1


def test_rows_parse_through_the_hub_parsers(facts):
    items = facts_mcq_items(facts.mcq_rows)
    qa = facts_qa_items(facts.qa_rows)
    for fact, item, q in zip(facts.facts, items, qa):
        assert item.choices[item.answer] == fact.answer
        assert item.question.endswith("?") and fact.subject in item.question
        assert q.aliases[0] == fact.answer
        assert not q.question.endswith("?")  # lm-eval's TriviaQA prompt appends it
    organ = next(f for f in facts.facts if f.relation == "affects")
    assert organ.aliases == (organ.answer, f"the {organ.answer}")


def test_loaders_and_config_errors():
    assert [it.id for it in load_facts_mcq("val", SMALL)] == [r["id"] for r in generate_facts(SMALL).val_mcq_rows]
    assert len(load_facts_qa("control", SMALL)) == 12
    assert FACT_SPLITS == ("test", "val", "control")
    with pytest.raises(SmfError, match="unknown facts split"):
        load_facts_mcq("train", SMALL)
    with pytest.raises(SmfError, match="at least 20"):
        generate_facts(FactsConfig(n_facts=19))
    with pytest.raises(SmfError, match="train_wordings"):
        generate_facts(FactsConfig(train_wordings=MAX_TRAIN_WORDINGS + 1))
    with pytest.raises(SmfError, match="relations"):
        generate_facts(FactsConfig(relations=("treats", "cures")))
    one = generate_facts(FactsConfig(n_facts=4, n_control=0, relations=("affects",), train_wordings=12))
    assert len(one.train) == 48 and one.control_mcq_rows == []


# --------------------------------------------------------------- the real model


def _cloze_accuracy(model, tokenizer, items, batch_size=32):
    """Fraction of items whose answer text is most likely after "Question: {q}\\nAnswer:".

    A tiny scorer for this test only: the summed log-probability of each option's
    tokens (" " + option) given the question; all options of all items are scored in
    right-padded batches (padding comes after every scored token, so it changes nothing).
    """
    pairs = []  # (context token ids, continuation token ids), 4 per item
    for item in items:
        context = tokenizer(f"Question: {item.question}\nAnswer:").input_ids
        pairs += [(context, tokenizer(" " + choice).input_ids) for choice in item.choices]
    scores = []
    for start in range(0, len(pairs), batch_size):
        batch = [c + x for c, x in pairs[start : start + batch_size]]
        length = max(map(len, batch))
        ids = torch.tensor([s + [0] * (length - len(s)) for s in batch])  # (B, T)
        mask = torch.tensor([[1] * len(s) + [0] * (length - len(s)) for s in batch])  # (B, T)
        with torch.no_grad():
            logprobs = model(input_ids=ids, attention_mask=mask).logits.log_softmax(-1)  # (B, T, V)
        for row, (context, continuation) in enumerate(pairs[start : start + batch_size]):
            positions = range(len(context), len(context) + len(continuation))
            scores.append(sum(logprobs[row, p - 1, batch[row][p]].item() for p in positions))
    correct = sum(max(range(4), key=lambda k: scores[4 * i + k]) == item.answer for i, item in enumerate(items))
    return correct / len(items)


@pytest.mark.slow
def test_untrained_model_is_at_chance_on_facts(default_model):
    model, tokenizer = default_model
    fact_set = generate_facts(FactsConfig())
    items = facts_mcq_items(fact_set.mcq_rows + fact_set.control_mcq_rows)
    accuracy = _cloze_accuracy(model.eval(), tokenizer, items)
    n = len(items)
    band = 3 * math.sqrt(0.25 * 0.75 / n)  # 3 binomial standard errors around chance
    print(f"facts cloze accuracy before training: {accuracy:.3f} on {n} items (chance 0.25 ± {band:.3f})")
    assert abs(accuracy - 0.25) <= band
