"""Token batching: an over-long training example never loses its question silently."""

import pytest

from smf.data.batching import encode_examples
from smf.data.types import TrainExample
from smf.errors import SmfError


def test_a_long_answer_keeps_its_whole_question(tokenizer):
    question = "Question: who built the Zorvex lighthouse?\nAnswer:"
    counts = {}
    [enc] = encode_examples([TrainExample(question, " Mira Tanaka, " * 40)], tokenizer, 32, counts)
    assert len(enc.ids) == 32
    assert enc.ids[: enc.n_prompt] == tokenizer(question).input_ids  # the question whole, first
    assert tokenizer.decode(enc.ids[enc.n_prompt :]).startswith(" Mira Tanaka")  # the answer's start, not its end
    assert counts == {"truncated": 1, "dropped": 0}


def test_a_question_longer_than_max_length_is_dropped_and_counted(tokenizer):
    counts = {}
    kept = encode_examples([TrainExample("a very long prompt " * 20, " end"), TrainExample("Q:", " A")], tokenizer, 8, counts)
    assert [tokenizer.decode(e.ids[e.n_prompt :]) for e in kept] == [" A"]
    assert counts == {"truncated": 0, "dropped": 1}
    with pytest.raises(SmfError, match="max_length"):
        encode_examples([TrainExample("a very long prompt " * 20, " end")], tokenizer, 8)


def test_examples_that_fit_are_not_counted(tokenizer):
    counts = {}
    encode_examples([TrainExample("Q: 2+2?", " four"), TrainExample("", "Kelbrin is the capital of Oshu.")], tokenizer, 64, counts)
    assert counts == {"truncated": 0, "dropped": 0}


def test_a_run_states_what_it_truncated_and_dropped(tokenizer, tmp_path, capsys):
    import json

    from conftest import tiny_model
    from smf.train import TrainConfig, train

    config = TrainConfig.from_dict({"method": "full", "steps": 1, "batch_size": 1, "max_length": 16})
    data = [TrainExample("Q:", " Mira Tanaka" * 20), TrainExample("a very long prompt " * 20, " end"), TrainExample("Q:", " A")]
    train(tiny_model(vocab_size=len(tokenizer)), tokenizer, data, config, tmp_path / "run", progress=False, save_model=False)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (summary["examples_truncated"], summary["examples_dropped"]) == (1, 1)
    assert "1 training examples longer than max_length 16 lost the end of their answer, 1 were dropped" in capsys.readouterr().err
