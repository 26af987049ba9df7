"""The published SMF-on-Qwen study's background statistics through smf's own configuration: its OASST1
filters and sample, one message a batch, the first B messages (tests/fixtures/recipe/selection.json's
`background`, which the study's code counted on its tiny model). Counts exact."""

import pytest
import torch

from recipe_model import RECIPE, recipe_json, study_model
from smf.memory import save_retrofitted
from smf.selection import BackgroundConfig
from smf.train.stages import background_statistics


def dense(sparse: dict, n: int) -> torch.Tensor:
    out = torch.zeros(n, dtype=torch.int64)
    for row, value in sparse.items():
        out[int(row)] = value
    return out


@pytest.mark.parametrize("seed", [0, 2])  # a sample of 20,000 keeps the 43 messages in file order whatever the seed
def test_background_counted_as_the_study_counts_it(tmp_path, tokenizer, seed, monkeypatch):
    expected = recipe_json("selection.json")["background"]
    folder = save_retrofitted(study_model(), tokenizer, tmp_path / "model")
    # The folder's tokenizer as the study read it: transformers 5 reloads the tokenizer of a Qwen2 folder with
    # Qwen2's own pre-tokenization rules, which split some of these texts otherwise than the tokenizer.json
    # the study used (a property of this test model, a Qwen2 with another model's tokenizer).
    monkeypatch.setattr("smf.train.stages.load_tokenizer", lambda folder: tokenizer)
    config = BackgroundConfig.from_dict({
        "data": {"name": "oasst1", "source": str(RECIPE / "inputs" / "oasst1_train.jsonl"), "lang": "en", "role": "assistant",
                 "rank": [0, 1], "min_chars": 50, "sample": 20000, "seed": seed},
        "pack": False, "batches": expected["bg_num_batches"], "batch_size": 1, "max_length": 1024, "mixed_precision": "no"})
    stats = background_statistics(folder, config, progress=False)
    [(layer, df)] = stats.df.items()
    assert stats.batches == 8
    assert torch.equal(df, dense(expected["bg_df"], len(df)))
    assert torch.equal(stats.counts[layer], dense(expected["bg_access_counts"], len(df)))
