"""memory.seed_per_run: each run seed of a study retrofits its own memory, drawn with that seed (as the
published study draws its memory anew per run seed); by default one memory serves every seed."""

import pytest
import torch
from safetensors import safe_open

from smf.study.config import StudyConfig
from smf.study.runner import _memory_models

pytestmark = pytest.mark.slow  # retrofits and counts background statistics three times


def values(folder) -> torch.Tensor:
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        return f.get_tensor(next(k for k in f.keys() if k.endswith("memory.values")))


def study(tiny_folder, **memory) -> StudyConfig:
    return StudyConfig.from_dict({
        "model": str(tiny_folder), "seeds": [0, 1],
        "memory": {"layers": [1], "slots": 64, "heads": 2, "topk": 4, "key_dim": 8, "variant": "published", "scale": 0.01, **memory},
        "background": {"batches": 2, "max_length": 16}, "methods": {"smf-kl": {}}, "evaluation": {"task": "facts"}})


def test_each_run_seed_draws_its_own_memory(tiny_folder, tmp_path):
    folders = _memory_models(study(tiny_folder, seed_per_run=True), tiny_folder, tmp_path / "per-seed", progress=False)
    assert folders[0] != folders[1] and folders[1].name == "seed1"
    assert not torch.equal(values(folders[0]), values(folders[1]))
    again = _memory_models(study(tiny_folder, seed_per_run=True, seed=7), tiny_folder, tmp_path / "again", progress=False)
    assert torch.equal(values(again[1]), values(folders[1]))  # drawn with the run seed, whatever memory.seed says


def test_one_memory_serves_every_seed_by_default(tiny_folder, tmp_path):
    folders = _memory_models(study(tiny_folder), tiny_folder, tmp_path / "shared", progress=False)
    assert folders[0] == folders[1]
