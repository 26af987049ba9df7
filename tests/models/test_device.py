"""Placement: evaluation, background statistics and answering run on this process's GPU when
there is one (no GPU here: the rule and its wiring are tested with torch.cuda patched)."""

import pytest
import torch

from smf.errors import SmfError
from smf.models import compute_device


def test_cpu_without_a_gpu(monkeypatch):
    monkeypatch.delenv("SMF_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert compute_device() == torch.device("cpu")


def test_this_process_gpu_under_a_launcher(monkeypatch):
    monkeypatch.delenv("SMF_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert compute_device() == torch.device("cuda", 1)
    monkeypatch.delenv("LOCAL_RANK")
    assert compute_device() == torch.device("cuda", 0)


def test_smf_device_overrides(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("SMF_DEVICE", "cpu")
    assert compute_device() == torch.device("cpu")
    monkeypatch.setenv("SMF_DEVICE", "gpu0")
    with pytest.raises(SmfError, match="SMF_DEVICE='gpu0' is not a device"):
        compute_device()


class Placed(Exception):
    pass


@pytest.fixture
def placement(monkeypatch):
    """load_model / load_retrofitted record the device they are asked for, then stop."""
    asked = []

    def record(*args, device="cpu", **kwargs):
        asked.append(torch.device(device))
        raise Placed

    for module in ("smf.models", "smf.study.runner", "smf.train.stages"):  # each imports them by name
        monkeypatch.setattr(f"{module}.compute_device", lambda: torch.device("meta"))
    for module in ("smf.models", "smf.study.runner"):
        monkeypatch.setattr(f"{module}.load_model", record)
    return asked, record


def test_study_base_evaluation_and_runs_load_on_the_compute_device(placement, tmp_path):
    from smf.study.config import StudyConfig
    from smf.study.runner import _base_results

    asked, _ = placement
    config = StudyConfig.from_dict({"name": "x", "methods": {"full": {}}, "evaluation": {"task": "facts"}})
    with pytest.raises(Placed):
        _base_results(config, tmp_path, {}, tmp_path)
    assert asked == [torch.device("meta")]


def test_background_statistics_count_on_the_compute_device(placement, monkeypatch, tiny_folder):
    import smf.train.stages as stages
    from smf.selection import BackgroundConfig

    asked, record = placement
    monkeypatch.setattr(stages, "load_retrofitted", lambda folder, device="cpu": record(device=device))
    monkeypatch.setattr(stages, "_require_memory", lambda folder: None)
    with pytest.raises(Placed):
        stages.background_statistics(tiny_folder, BackgroundConfig(data="pydoc", batches=1, batch_size=1, max_length=32), progress=False)
    assert asked == [torch.device("meta")]
