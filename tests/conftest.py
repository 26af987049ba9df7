"""Shared fixtures. Tests never reach a model or dataset hub."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(scope="session")
def default_model():
    """The real offline default model (SmolLM2-135M-Instruct), loaded once."""
    from smf.models import load_model

    model, tokenizer = load_model()
    return model, tokenizer


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
