"""The published SMF-on-Qwen study's evaluation conventions, reproduced.

`tests/fixtures/parity/` holds items written for this project in the hub schemas and
`reference.json`, what the published study's own evaluation functions give on them with
the offline default model in fp32. Our named tasks (`medmcqa-published`,
`triviaqa-published`, `wikitext-103-published`) must give every prediction exactly and
each perplexity within 0.1 %.
"""

import json
from pathlib import Path

import pytest

from smf.evaluate import evaluate
from smf.evaluate.qa import published_normalize

PARITY = Path(__file__).resolve().parents[1] / "fixtures" / "parity"
REFERENCE = json.loads((PARITY / "reference.json").read_text())

pytestmark = pytest.mark.slow


def run(default_model, spec):
    model, tokenizer = default_model
    return evaluate(model, tokenizer, [spec], progress=False)["tasks"][spec["name"]]


@pytest.mark.parametrize("format, key", [("published", "answer_norm"), ("published_letter", "letter")])
def test_medmcqa_predictions_match_the_published_code(default_model, format, key):
    ref = REFERENCE["medmcqa"]
    out = run(default_model, {"name": "medmcqa-published", "source": str(PARITY / "medmcqa_parity.jsonl"), "format": format})
    assert out["n"] == ref["n_after_single_filter"] == 22  # the two multi-choice rows are filtered out
    assert [r["id"] for r in out["records"]] == ref["ids"]
    assert [r["pred"] for r in out["records"]] == ref[f"{key}_pred"]
    assert out["headline"]["value"] == pytest.approx(ref[f"{key}_acc"], abs=1e-12)


@pytest.mark.parametrize("window, stride, key", [(1024, 512, "window_1024_stride_512"), (64, 32, "window_64_stride_32")])
def test_wikitext_token_perplexity_matches_the_published_code(default_model, window, stride, key):
    ref = REFERENCE["wikitext"][key]
    out = run(default_model, {"name": "wikitext-103-published", "source": str(PARITY / "wikitext_parity.jsonl"),
                              "max_length": window, "stride": stride})
    assert out["headline"]["metric"] == "token_perplexity"
    assert out["records"][0]["tokens"] == ref["tokens"]
    assert out["headline"]["value"] == pytest.approx(ref["token_ppl"], rel=1e-3)


def test_triviaqa_answers_match_the_published_code(default_model):
    ref = REFERENCE["triviaqa"]
    out = run(default_model, {"name": "triviaqa-published", "source": str(PARITY / "triviaqa_parity.jsonl")})
    assert out["n"] == ref["n"]
    assert [published_normalize(r["output"]) for r in out["records"]] == ref["normalized_predictions"]
    assert out["headline"] == {**out["headline"], "metric": "contains_match", "value": ref["alias_contains_acc"]}
