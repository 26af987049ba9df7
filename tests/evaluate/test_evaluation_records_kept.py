"""The evaluator's speed-ups change no number: the default study's tasks on the default model, a reduced item set,
scored as the evaluator before them scored it (tests/fixtures/evaluation_records_before.json, written by the
evaluator of commit 560ab02: before prompts shared their prefix's cache and before perplexity ran without a mask).
Generated answers equal; log-likelihoods as recorded (4 decimals) within one unit of the last decimal or 1e-7 of
their size (a document's log-likelihood sums thousands of tokens: CI's CPU moved -4161.1943 to -4161.1945) and every
metric within 1e-6 of its value (here, where the fixture was written, they were equal bit for bit): tolerances for
another CPU's float noise, far below any change a speed-up could make by mistake."""

import json
from pathlib import Path

import pytest

from smf.evaluate import evaluate

pytestmark = pytest.mark.slow

BEFORE = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "evaluation_records_before.json").read_text())


@pytest.fixture(scope="module")
def now(default_model):
    model, tokenizer = default_model
    return evaluate(model, tokenizer, BEFORE["tasks"], progress=False)["tasks"]


@pytest.mark.parametrize("label", sorted(BEFORE["records"]))
def test_records_are_those_before_the_speed_ups(now, label):
    before, after = BEFORE["records"][label], now[label]["records"]
    assert len(after) == len(before) > 0
    if "output" in before[0]:  # generation: every answer the same
        assert [r["output"] for r in after] == [r["output"] for r in before]
    elif "logprobs" in before[0]:
        assert [r["logprobs"] for r in after] == [pytest.approx(r["logprobs"], rel=1e-7, abs=1.01e-4) for r in before]
    else:
        assert [r["loglikelihood"] for r in after] == [pytest.approx(r["loglikelihood"], rel=1e-7, abs=1.01e-4) for r in before]
    for metric, value in BEFORE["metrics"][label].items():
        assert now[label]["metrics"][metric] == pytest.approx(value, rel=1e-6, abs=1e-12), metric
