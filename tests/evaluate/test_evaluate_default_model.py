"""Probes on the real offline default model (SmolLM2-135M-Instruct), before any training.

- `capitals` through the chat template is well above zero (measured 40/60), and far
  above the plain lm-eval prompt, to which this instruct model answers with an
  immediate end of turn (0/60).
- `facts` are fictional, so multiple-choice accuracy sits near chance (1/4).
"""

import pytest

from smf.evaluate import evaluate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def probes(default_model):
    model, tokenizer = default_model
    tasks = ["capitals", "capitals-plain", "facts", "facts-control"]
    return evaluate(model, tokenizer, tasks, batch_size=16, progress=False)["tasks"]


def test_capitals_with_the_chat_template_are_well_above_zero(probes):
    chat = probes["capitals"]
    assert chat["n"] == 60
    assert chat["headline"]["metric"] == "substring_match"
    assert chat["headline"]["value"] >= 0.45
    assert chat["headline"]["ci95"][0] > 0.3  # not noise: the interval is far from zero
    plain = probes["capitals-plain"]["metrics"]
    assert plain["substring_match"] < chat["headline"]["value"] - 0.3


def test_facts_are_near_chance_before_training(probes):
    for label in ("facts", "facts-control"):
        m = probes[label]["metrics"]
        assert m["acc_ci95"][0] < 0.25 + 0.05, label  # chance is inside or near the interval
        assert m["acc"] < 0.45, label
