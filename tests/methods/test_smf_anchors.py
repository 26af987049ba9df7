"""SMF's anchors as run settings (smf learn's fixes, tried in a study): questions about made-up subjects
made from the training prompts, answered by the model before training; the rows they read left
untrained, their answers kept by a KL term to the base, or both."""

import json

import pytest
import torch

from conftest import memory_folder
from smf.data.anchors import subject
from smf.data.batching import encode_examples
from smf.data.types import TrainExample
from smf.memory import MemoryConfig
from smf.memory.retrofit import memory_layers
from smf.methods import TrainConfig
from smf.methods.anchors import anchor_items, rows_read
from smf.models import load_model
from smf.study.config import StudyConfig
from smf.train import train

MEMORY = MemoryConfig(layers=[1, 2], slots=256, heads=2, topk=4, key_dim=16)
EXAMPLES = [TrainExample("Question: Which enzyme does Dixtalolol inhibit?\nAnswer:", " Vexrur oxidase"),
            TrainExample("Dixtalolol works by inhibiting", " Vexrur oxidase."),
            TrainExample("Q: What causes Baszaxmel syndrome?\nA:", " Trenfux virus"),
            TrainExample("The pathogen responsible for Baszaxmel syndrome is", " Trenfux virus."),
            TrainExample("Doctors prescribe Brixpixcillin to patients with", " Grulevi fever.")] * 2


@pytest.fixture(scope="module")
def folder(tmp_path_factory, tokenizer):
    return memory_folder(tmp_path_factory.mktemp("anchors") / "mem", tokenizer, MEMORY)


def test_anchor_items_swap_the_subject_and_take_the_models_own_answer(folder):
    model, tok = load_model(folder)
    data = encode_examples(EXAMPLES, tok, 48)
    questions, items = anchor_items(model, tok, data, 2, seed=0)
    # 4 distinct prompts name a subject that does not start the sentence ("Dixtalolol works ..." does not)
    assert len(questions) == 8 and all(subject(q) for q in questions)
    assert not any(name in q for q in questions for name in ("Dixtalolol", "Baszaxmel", "Brixpixcillin"))
    assert questions[0].startswith("Question: Which enzyme does ") and questions[0].endswith(" inhibit?\nAnswer:")
    assert 0 < len(items) <= 8
    first = items[0]
    assert tok.decode(first.ids[: first.n_prompt]) == questions[0] and len(first.ids) > first.n_prompt
    prompt = torch.tensor([first.ids[: first.n_prompt]])
    with torch.no_grad():
        greedy = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=16, do_sample=False,
                                pad_token_id=tok.pad_token_id)[0, first.n_prompt :]
    said = tok.decode(first.ids[first.n_prompt :]).strip()
    assert said and tok.decode(greedy, skip_special_tokens=True).strip().startswith(said.rstrip("."))  # the model's own


def _train(folder, tmp_path, **options):
    model, tok = load_model(folder)
    config = TrainConfig.from_dict({"method": "smf", "top_t": 8, "steps": 2, "batch_size": 4, "max_length": 48, **options})
    result = train(model, tok, EXAMPLES, config, tmp_path / "run", model_dir=folder, progress=False)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines() if '"loss"' in line]
    start, _ = load_model(folder)
    changed = {i: (m.values != memory_layers(start)[i].values).any(-1) for i, m in memory_layers(result.model).items()}
    return log, changed, tok


def test_rows_the_anchors_read_are_never_trained(folder, tmp_path):
    log, changed, tok = _train(folder, tmp_path, anchors=2, anchor_use="exclude")
    model, _ = load_model(folder)
    _, items = anchor_items(model, tok, encode_examples(EXAMPLES, tok, 48), 2, seed=0)
    read = rows_read(model, items, tok.pad_token_id)
    assert all(int(r.sum()) > 0 for r in read.values())
    for i, rows in changed.items():
        assert rows.any() and not (rows & read[i]).any(), f"layer {i}: a row an anchor reads was trained"
    assert all("keep_kl" not in r for r in log)


def test_without_anchors_those_rows_are_trained(folder, tmp_path):
    """The check above can fail: the same run without anchors trains rows the anchors read."""
    _, changed, tok = _train(folder, tmp_path)
    model, _ = load_model(folder)
    _, items = anchor_items(model, tok, encode_examples(EXAMPLES, tok, 48), 2, seed=0)
    read = rows_read(model, items, tok.pad_token_id)
    assert any((rows & read[i]).any() for i, rows in changed.items())


def test_kept_answers_are_a_kl_term_to_the_base(folder, tmp_path):
    log, changed, _ = _train(folder, tmp_path, anchors=2, anchor_use="keep")
    assert log[0]["keep_kl"] == pytest.approx(0.0, abs=1e-7)  # the memory reads zeros at the start: the model is its base
    assert log[1]["keep_kl"] > 1e-7
    assert all(0 < int(rows.sum()) <= 2 * 8 for rows in changed.values())  # the term moves only the chosen rows


@pytest.mark.slow
def test_a_run_with_kept_answers_resumes_bit_identical(folder, tmp_path):
    """Killed after its step-2 checkpoint and resumed, the run asks the same anchors of the same start and ends
    with the weights of the run that was never stopped."""
    config = TrainConfig.from_dict({"method": "smf", "top_t": 8, "steps": 4, "batch_size": 4, "max_length": 48, "anchors": 1,
                                    "anchor_use": "keep", "checkpoint_every": 2})

    class Killed(Exception):
        pass

    def kill_at_3(model, step):
        if step == 3:
            raise Killed

    whole = train(*load_model(folder), EXAMPLES, config, tmp_path / "whole", model_dir=folder, progress=False, save_model=False)
    with pytest.raises(Killed):
        train(*load_model(folder), EXAMPLES, config, tmp_path / "killed", model_dir=folder, eval_fn=kill_at_3, eval_every=1,
              progress=False, save_model=False)
    resumed = train(*load_model(folder), EXAMPLES, config, tmp_path / "killed", model_dir=folder, resume=True, progress=False,
                    save_model=False)
    assert resumed.summary["resumed_from_step"] == 2
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_study_sweeps_the_anchor_settings():
    raw = {"methods": {"smf-tfidf": {"anchors": 1, "anchor_use": ["exclude", "keep", "both"]}},
           "evaluation": {"task": "facts", "probes": ["capitals"]}}
    labels = [r.label for r in StudyConfig.from_dict(raw).runs()]
    assert labels == ["smf-tfidf anchor_use=exclude", "smf-tfidf anchor_use=keep", "smf-tfidf anchor_use=both"]


@pytest.mark.parametrize("options, message", [({"anchors": 1, "anchor_use": "exclude", "rule": "kl"}, "needs rule tfidf"),
                                              ({"anchors": -1}, "anchors must be >= 0"),
                                              ({"anchors": 1, "keep_weight": 0}, "keep_weight > 0")])
def test_bad_anchor_settings_are_refused(options, message):
    from smf.errors import SmfError

    with pytest.raises(SmfError, match=message):
        TrainConfig.from_dict({"method": "smf", **options})
