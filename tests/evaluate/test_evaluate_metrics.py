"""Answer matching and uncertainty: lm-eval's normalisation and standard error."""

import math

import pytest

from smf.data.templates import chat_prompt, plain_prompt
from smf.evaluate.qa import exact_match, normalize, substring_match
from smf.stats import accuracy, mean_stderr, wilson_interval


def test_plain_prompt_is_lm_evals_triviaqa_prompt():
    assert plain_prompt("Who wrote Hamlet") == "Question: Who wrote Hamlet?\nAnswer:"


def test_evaluation_prompts_equal_the_training_prompts_of_smf_data():
    from smf.data.hub import medmcqa_train_examples, triviaqa_fact_examples
    from smf.data.types import MCQItem, QAItem
    from smf.evaluate.mcq import prompt_and_choices

    item = MCQItem("x", "Which organ?", ("Liver", "Skin", "Brain", "Lung"), 1)
    assert medmcqa_train_examples([item])[0].prompt == prompt_and_choices(item, "letter")[0]
    qa = triviaqa_fact_examples([QAItem("q", "Who wrote Hamlet", ("Shakespeare",))], form="qa")
    assert qa[0].prompt == plain_prompt("Who wrote Hamlet")


@pytest.mark.parametrize(
    "output, aliases, expected",
    [
        (" Paris", ["Paris"], True),  # the leading space is stripped (remove_whitespace filter)
        ("PARIS!", ["paris"], True),  # case and punctuation ignored
        ("Paris", ["City of Light", "Paris, France"], False),  # "paris france" != "paris"
        ("Paris France", ["Paris, France"], True),
        ("the Paris", ["Paris"], False),  # exact, not containment
        ("", ["Paris"], False),
        ("U.S.A", ["USA"], True),
        ("- Paris", ["Paris"], False),  # lm-eval strips before removing punctuation: " paris"
    ],
)
def test_exact_match_follows_lm_eval(output, aliases, expected):
    assert exact_match(output, aliases) is expected


def test_normalize():
    assert normalize("Hello, World!") == "hello world"
    assert normalize("  Tab\tkept ") == "  tab\tkept "  # whitespace is not touched


@pytest.mark.parametrize(
    "output, aliases, expected",
    [
        ("The capital of France is Paris", ["Paris"], True),
        ("Paris.", ["paris"], True),
        ("Parisian food", ["Paris"], False),  # whole words only
        ("It is Mexico City, of course", ["Mexico City"], True),
        ("It is Mexico", ["Mexico City"], False),
        ("anything", [""], False),  # an empty alias never matches
    ],
)
def test_substring_match_is_whole_word_containment(output, aliases, expected):
    assert substring_match(output, aliases) is expected


def test_chat_prompt_uses_the_template_with_a_generation_prompt(tokenizer):
    text = chat_prompt(tokenizer, "What is the capital of France")
    assert "What is the capital of France?" in text
    assert text.endswith("<|im_start|>assistant\n")


def test_mean_stderr_is_lm_evals_sample_stderr():
    values = [1.0] * 20 + [0.0] * 20
    sample_sd = math.sqrt(sum((v - 0.5) ** 2 for v in values) / 39)
    assert mean_stderr(values) == pytest.approx(sample_sd / math.sqrt(40))
    assert mean_stderr(values) == pytest.approx(0.0801, abs=1e-4)  # 5 points on 40 items is noise
    assert math.isnan(mean_stderr([1.0]))


def test_wilson_interval():
    lo, hi = wilson_interval(20, 40)
    assert lo == pytest.approx(0.3520, abs=1e-3) and hi == pytest.approx(0.6480, abs=1e-3)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == pytest.approx(1.0)
    lo, hi = wilson_interval(0, 30)
    assert 0.0 == lo < hi < 0.12  # honest near zero, unlike the normal interval (0, 0)


def test_accuracy_reports_value_stderr_and_interval():
    m = accuracy("acc", [True, False, True, True])
    assert m["acc"] == 0.75
    assert m["acc_stderr"] == pytest.approx(mean_stderr([1, 0, 1, 1]))
    assert m["acc_ci95"][0] < 0.75 < m["acc_ci95"][1]
