"""Row selection as the published study chose rows (SmfOptions scoring: published, count: padded),
against the published code's own choices.

`tests/fixtures/recipe/selection.json` and `selection_grads.safetensors` (README: section 5): TF-IDF and KL
scores and the rows chosen on given counts (zero-score rows, fewer positive rows than t, all tied, no reads,
no background), the background counted on 8 OASST1 messages, the counts of a padded batch (padding
included) and its selections, and the gradient two micro-batches leave when each is masked to its own
rows. smf's default scoring never chooses a TF-IDF row scoring 0.
"""

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import TOKENIZER
from recipe_model import RECIPE, recipe_json, study_model
from smf.data.batching import Encoded, collate
from smf.methods import make_method
from smf.methods.base import TrainConfig
from smf.selection import BackgroundStats, RowSelector
from smf.train.stages import collect_background

TOL = 1e-6
REF = recipe_json("selection.json")
LAYER, SLOTS = REF["layer"], REF["mem_size"]


def dense(mapping: dict) -> torch.Tensor:
    out = torch.zeros(SLOTS, dtype=torch.int64)
    for row, n in mapping.items():
        out[int(row)] = n
    return out


def background(df: dict, counts: dict, batches: int) -> BackgroundStats:
    return BackgroundStats(batches, {LAYER: dense(df)}, {LAYER: dense(counts)})


def check_run(selector: RowSelector, counts: torch.Tensor, run: dict) -> None:
    rows = counts.nonzero().flatten()
    chosen = selector.select(LAYER, rows, counts[rows]).tolist()
    assert len(chosen) == run["k"]
    fixed, valid = selector.select_fixed(LAYER, counts)  # what a training step uses: the same rows
    assert fixed[valid].tolist() == chosen
    if not run["k"]:
        assert run["chosen_sorted"] == []
        return
    scores = selector.scores(LAYER, rows, counts[rows])
    ref = torch.tensor([run["scores_of_active_rows"][str(r)] for r in rows.tolist()], dtype=torch.float64)
    assert (scores - ref).abs().max() <= TOL, run
    if run.get("tie_at_boundary"):  # the rows strictly above the t-th score, and as many tied ones as fit
        threshold = min(run["scores_of_active_rows"][str(r)] for r in run["chosen_sorted"])
        above = {r for r in rows.tolist() if run["scores_of_active_rows"][str(r)] > threshold + TOL}
        tied = {r for r in rows.tolist() if abs(run["scores_of_active_rows"][str(r)] - threshold) <= TOL}
        assert above <= set(chosen) <= above | tied
    else:
        assert chosen == run["chosen_sorted"], run


@pytest.mark.parametrize("case", sorted(REF["synthetic"]))
def test_selection_on_given_counts_is_the_studys(case):
    c = REF["synthetic"][case]
    stats = background(c["bg_df"], c["bg_access_counts"], c["bg_num_batches"])
    for run in c["runs"]:
        check_run(RowSelector(run["scoring"], run["top_t"], stats, published=True), dense(c["batch_counts"]), run)


def test_smfs_own_scoring_never_chooses_a_zero_score_row():
    c = REF["synthetic"]["B_fewer_positive_than_t"]
    stats = background(c["bg_df"], c["bg_access_counts"], c["bg_num_batches"])
    counts = dense(c["batch_counts"])
    rows = counts.nonzero().flatten()
    assert RowSelector("tfidf", 4, stats).select(LAYER, rows, counts[rows]).tolist() == [5, 11]
    assert RowSelector("tfidf", 4, stats, published=True).select(LAYER, rows, counts[rows]).tolist() != [5, 11]


@pytest.fixture(scope="module")
def model():
    return study_model()


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TOKENIZER)


def test_background_of_single_messages_is_the_studys(model, tokenizer):
    bg = REF["background"]
    messages = {m["message_id"]: m["text"] for m in map(json.loads, (RECIPE / "inputs" / "oasst1_train.jsonl").read_text().splitlines())}
    batches = [collate([Encoded(tokenizer(messages[i], add_special_tokens=False)["input_ids"][:1024], 0)], 2) for i in bg["ids_used"]]
    stats = collect_background(model, batches, progress=False)
    assert stats.batches == bg["bg_num_batches"]
    assert torch.equal(stats.df[LAYER], dense(bg["bg_df"]))
    assert torch.equal(stats.counts[LAYER], dense(bg["bg_access_counts"]))


def padded_batch() -> dict:
    pb = REF["padding_batch"]
    ids = torch.tensor(pb["input_ids"])
    mask = (torch.arange(ids.shape[1])[None] < torch.tensor(pb["lengths"])[:, None]).long()
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


@pytest.fixture(scope="module")
def background_folder(tmp_path_factory):
    """A folder holding the study's background statistics (as `smf background` leaves them beside a model)."""
    bg = REF["background"]
    folder = tmp_path_factory.mktemp("background")
    background(bg["bg_df"], bg["bg_access_counts"], bg["bg_num_batches"]).save(folder)
    return folder


def smf_method(model, folder, top_t: int, rule: str = "tfidf"):
    """SMF as the study selects: each micro-batch masked to its own top-t, padding counted, the study's scores."""
    config = TrainConfig.from_dict({"method": "smf", "rule": rule, "top_t": top_t, "optimizer": "adamw_masked",
                                    "select_every": "micro_batch", "count": "padded", "scoring": "published"})
    method = make_method(config)
    method.prepare(model, folder)
    return method


def test_a_padded_batch_counts_and_chooses_as_the_study(model, background_folder):
    pb = REF["padding_batch"]
    batch = padded_batch()
    memory = model.model.layers[LAYER].mlp.memory
    try:
        for run in pb["runs"]:
            method = smf_method(model, background_folder, run["top_t"], run["scoring"])
            method.before_forward(model, batch)
            with torch.no_grad():
                loss = model(**batch).loss
            counts = memory.read_counts()
            assert torch.equal(counts, dense(pb["padded_counts"]))
            assert int(counts.sum()) == pb["padded_counts_total"]
            assert float(loss) == pytest.approx(pb["loss"], abs=1e-5)
            check_run(method.selector, counts, run)
            method.after_forward(model)
            method.export(model)
            method._remove_hooks()  # the gradient mask of this micro-batch, never used here
        memory.count_padding, memory.record = False, True
        with torch.no_grad():
            model(**batch)
        assert torch.equal(memory.read_counts(), dense(pb["unpadded_counts"]))  # smf's own count: real tokens only
    finally:
        memory.count_padding, memory.record = False, False
        model.requires_grad_(False)


def test_each_micro_batch_trains_its_own_rows_as_the_study(model, tokenizer, background_folder):
    mb = REF["micro_batches"]
    grads = load_file(str(RECIPE / "selection_grads.safetensors"))
    texts = recipe_json("medmcqa_texts.json")["formatted_text_by_id"]
    method = smf_method(model, background_folder, 8)
    values = model.model.layers[LAYER].mlp.memory.values
    try:
        values.grad = None
        for j, micro in enumerate(mb["micro_batches"]):
            batch = collate([Encoded(tokenizer(texts[r], add_special_tokens=False)["input_ids"][:1024], 0) for r in micro["rows"]], 2)
            method.before_forward(model, batch)
            loss = model(**batch).loss
            method.after_forward(model)
            assert float(loss) == pytest.approx(micro["loss"], abs=1e-5)
            assert method._chosen[LAYER][-1].tolist() == micro["chosen_sorted"]
            loss.backward()
            nonzero = values.grad.abs().sum(1).nonzero().flatten().tolist()
            assert nonzero == micro["accumulated_nonzero_grad_rows"]
            assert (values.grad[nonzero] - grads[f"mb{j}_accumulated_grad_rows"]).abs().max() <= TOL
        assert nonzero == mb["union_of_masks"]
    finally:
        values.grad = None
        method.export(model)
        method._remove_hooks()
        model.requires_grad_(False)


def test_the_unmasked_gradient_is_the_studys(model, tokenizer):
    """Without the mask the first micro-batch's gradient is the study's: the masks, not the model, choose."""
    mb = REF["micro_batches"]
    texts = recipe_json("medmcqa_texts.json")["formatted_text_by_id"]
    ref = load_file(str(RECIPE / "selection_grads.safetensors"))["mb0_unmasked_grad"]
    values = model.model.layers[LAYER].mlp.memory.values
    batch = collate([Encoded(tokenizer(texts[r], add_special_tokens=False)["input_ids"][:1024], 0) for r in mb["micro_batches"][0]["rows"]], 2)
    values.requires_grad_(True)
    memory = model.model.layers[LAYER].mlp.memory
    memory.sparse_grad = False
    try:
        model(**batch).loss.backward()
        assert (values.grad - ref).abs().max() <= TOL
        assert values.grad.abs().sum(1).nonzero().flatten().tolist() == mb["mb0_unmasked_nonzero_grad_rows"]
    finally:
        values.grad = None
        values.requires_grad_(False)
        memory.sparse_grad = True
