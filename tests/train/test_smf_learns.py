"""SMF learns on the real offline default model: facts rise far above chance, controls do not."""

import copy

import pytest

from smf.evaluate.evaluator import evaluate
from smf.memory import MemoryConfig, retrofit, save_retrofitted
from smf.train.stages import collect_background
from smf.data.sources import general_texts, training_examples
from smf.data.batching import collate, text_chunks
from smf.train import TrainConfig, train

FACTS = {"n_facts": 20, "n_control": 20, "train_wordings": 8, "seed": 3}


@pytest.mark.slow
def test_smf_learns_facts_not_controls(default_model, tmp_path):
    model, tokenizer = default_model
    model = retrofit(copy.deepcopy(model), MemoryConfig(layers=(8, 14, 20), slots=16384, heads=4, topk=16, key_dim=256))
    folder = save_retrofitted(model, tokenizer, tmp_path / "memory_model")
    chunks = text_chunks(general_texts("pydoc"), tokenizer, 128)[:64]
    collect_background(model, [collate(chunks[i : i + 8], tokenizer.pad_token_id) for i in range(0, 64, 8)], progress=False).save(folder)
    tasks = [{"name": "facts", **FACTS}, {"name": "facts-control", **FACTS}]
    before = evaluate(model, tokenizer, tasks, progress=False)["tasks"]
    config = TrainConfig.from_dict(dict(method="smf", rule="tfidf", top_t=1000, lr=1.0, steps=25, batch_size=16, max_length=64))
    result = train(model, tokenizer, training_examples({"name": "facts", **FACTS}), config, tmp_path / "run",
                   model_dir=folder, save_model=False, progress=False)
    after = evaluate(result.model, tokenizer, tasks, progress=False)["tasks"]
    acc = {k: (before[k]["headline"]["value"], after[k]["headline"]["value"]) for k in before}
    # 20 four-way questions: chance is 0.25 with a standard error of about 0.1
    assert acc["facts"][0] <= 0.5, acc
    assert acc["facts"][1] >= 0.7, acc
    assert acc["facts-control"][1] <= 0.5, acc
