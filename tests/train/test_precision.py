"""Mixed precision outside training: evaluation and background counts run under bf16 autocast
where training does ("auto": on a GPU; "bf16" anywhere). No GPU here: the rule is tested on
device names, and "bf16" on the CPU shows that the autocast reaches the model's layers."""

from pathlib import Path

import pytest
import torch
from torch import nn

from smf.errors import SmfError
from smf.evaluate import evaluate, load_task
from smf.models import uses_bf16

from conftest import tiny_model

MEDMCQA = str(Path(__file__).resolve().parents[1] / "fixtures" / "medmcqa_validation.jsonl")


def test_the_rule():
    assert uses_bf16("cuda", "auto") and uses_bf16(torch.device("cuda", 1), "auto")
    assert not uses_bf16("cpu", "auto")
    assert uses_bf16("cpu", "bf16") and uses_bf16("cuda", "bf16")
    assert not uses_bf16("cuda", "no") and not uses_bf16("cpu", "no")
    with pytest.raises(SmfError, match="mixed precision 'fp8' is not one of auto, no, bf16"):
        uses_bf16("cpu", "fp8")


class LinearDtypes:
    """Records the dtype of every nn.Linear output during a forward."""

    def __init__(self, model):
        self.seen: set[torch.dtype] = set()
        self.handles = [m.register_forward_hook(self._hook) for m in model.modules() if isinstance(m, nn.Linear)]

    def _hook(self, module, args, out):
        self.seen.add(out.dtype)

    def close(self):
        for h in self.handles:
            h.remove()


@pytest.fixture(scope="module")
def tiny(tokenizer):
    return tiny_model(vocab_size=len(tokenizer), num_hidden_layers=2, hidden_size=64, intermediate_size=128), tokenizer


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("no", torch.float32), ("auto", torch.float32)])
def test_evaluation_runs_in_the_precision_asked(tiny, precision, dtype):
    model, tokenizer = tiny
    tasks = [load_task({"name": "medmcqa", "source": MEDMCQA, "limit": 4}), load_task({"name": "pydoc", "limit": 1}),
             load_task({"name": "capitals", "limit": 2})]
    dtypes = LinearDtypes(model)
    try:
        result = evaluate(model, tokenizer, tasks, progress=False, mixed_precision=precision)
    finally:
        dtypes.close()
    assert dtypes.seen == {dtype}
    assert next(model.parameters()).dtype == torch.float32  # autocast, not a cast of the weights
    assert torch.is_autocast_enabled("cpu") is False  # nothing leaks out of evaluate
    assert {"medmcqa", "pydoc", "capitals"} == set(result["tasks"])


@pytest.mark.slow
def test_bf16_scores_are_close_to_full_precision(tiny):
    """bf16 moves perplexity a little, never to another scale (this tiny random model: ~1e-3 relative)."""
    model, tokenizer = tiny
    task = load_task({"name": "pydoc", "limit": 2})
    full = evaluate(model, tokenizer, [task], progress=False, mixed_precision="no")["tasks"]["pydoc"]["headline"]["value"]
    half = evaluate(model, tokenizer, [task], progress=False, mixed_precision="bf16")["tasks"]["pydoc"]["headline"]["value"]
    assert half != full and abs(half - full) / full < 0.05


def test_evaluate_refuses_an_unknown_precision_before_scoring(tiny):
    model, tokenizer = tiny
    with pytest.raises(SmfError, match="mixed precision 'half'"):
        evaluate(model, tokenizer, [{"name": "medmcqa", "source": "/nonexistent.jsonl"}], progress=False, mixed_precision="half")


def test_background_counts_in_the_precision_asked(tiny_folder, tokenizer):
    from smf.memory import MemoryConfig, retrofit
    from smf.memory.retrofit import memory_layers
    from smf.train.stages import collect_background
    from smf.data.batching import collate, text_chunks

    model = retrofit(tiny_model(vocab_size=len(tokenizer)), MemoryConfig(layers=[1], slots=256, heads=2, topk=4, key_dim=16))
    chunks = text_chunks(["alpha beta gamma delta " * 40], tokenizer, 32)
    batches = [collate(chunks[:2], tokenizer.pad_token_id)]
    seen = {}
    for precision in ("bf16", "no"):
        dtypes = LinearDtypes(memory_layers(model)[1])
        try:
            stats = collect_background(model, batches, progress=False, mixed_precision=precision)
        finally:
            dtypes.close()
        seen[precision] = dtypes.seen
        assert stats.batches == 1 and len(stats.df[1]) == 256 and stats.df[1].sum() > 0
    assert seen == {"bf16": {torch.bfloat16}, "no": {torch.float32}}


def test_study_and_background_configs_carry_the_precision(monkeypatch):
    import smf.study.runner as runner
    from smf.selection import BackgroundConfig
    from smf.study.config import StudyConfig
    from smf.study.runner import _evaluate

    config = StudyConfig.from_dict({"name": "x", "methods": {"full": {}}, "evaluation": {"task": "facts", "mixed_precision": "bf16"}})
    asked = {}
    monkeypatch.setattr(runner, "evaluate", lambda *a, **k: asked.update(k) or {"tasks": {}})
    _evaluate(None, None, {}, config, False)
    assert asked["mixed_precision"] == "bf16"
    assert StudyConfig.from_dict({"name": "x", "methods": {"full": {}}}).evaluation.mixed_precision == "auto"
    with pytest.raises(SmfError, match=r"evaluation.mixed_precision: unknown mixed precision 'fp16'; choose one of auto, no, bf16"):
        StudyConfig.from_dict({"name": "x", "methods": {"full": {}}, "evaluation": {"mixed_precision": "fp16"}})
    with pytest.raises(SmfError, match="unknown mixed precision 'yes'"):
        BackgroundConfig(mixed_precision="yes").check("background")


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("auto", torch.float32)])
def test_answers_run_in_the_precision_asked(tiny, precision, dtype):
    from smf.use.chat import answer

    model, tokenizer = tiny
    dtypes = LinearDtypes(model)
    try:
        answer(model, tokenizer, [{"role": "user", "content": "What is the capital of France?"}], max_new_tokens=3,
               mixed_precision=precision)
    finally:
        dtypes.close()
    assert dtypes.seen == {dtype}
    assert torch.is_autocast_enabled("cpu") is False
    with pytest.raises(SmfError, match="mixed precision 'half' is not one of"):
        answer(model, tokenizer, [{"role": "user", "content": "Hi"}], mixed_precision="half")


def test_ask_and_chat_take_the_flag():
    from smf.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["ask", "hi", "--mixed-precision", "bf16"]).mixed_precision == "bf16"
    assert parser.parse_args(["chat"]).mixed_precision == "auto"
