"""Row-selection rules against hand-computed values; background statistics."""

import math

import pytest
import torch

from conftest import tiny_model
from smf.errors import SmfError
from smf.memory import MemoryConfig, memory_layers, retrofit, set_recording
from smf.selection import BackgroundStats, RowSelector


@pytest.fixture
def background():
    # 4 background batches over N = 6 rows of one layer (layer 3)
    bg = BackgroundStats.empty({3: 6})
    for batch in ([0, 0, 1], [0, 2], [0, 1, 1, 1], [5]):
        bg.add_batch({3: torch.tensor(batch)})
    return bg


def test_background_counts(background):
    assert background.batches == 4
    assert background.df[3].tolist() == [3, 2, 1, 0, 0, 1]
    assert background.counts[3].tolist() == [4, 4, 1, 0, 0, 1]


def test_background_round_trip(background, tmp_path):
    background.save(tmp_path)
    loaded = BackgroundStats.load(tmp_path)
    assert loaded.batches == 4
    assert torch.equal(loaded.df[3], background.df[3]) and torch.equal(loaded.counts[3], background.counts[3])


def test_missing_background_is_a_clear_error(tmp_path):
    with pytest.raises(SmfError, match="run: smf background"):
        BackgroundStats.load(tmp_path)
    with pytest.raises(SmfError, match="needs background statistics"):
        RowSelector("kl", 2)


# batch accesses: row 0 ×1, row 1 ×2, row 3 ×3, row 4 ×2  (Σ = 8)
ROWS, COUNTS = torch.tensor([0, 1, 3, 4]), torch.tensor([1, 2, 3, 2])


def test_tf(background):
    scores = RowSelector("tf", 2, background).scores(3, ROWS, COUNTS)
    assert scores.tolist() == pytest.approx([1 / 8, 2 / 8, 3 / 8, 2 / 8])


def test_tfidf_by_hand(background):
    # idf = log((B+1)/(df+1)) with B = 4, df = [3, 2, 1, 0, 0, 1]
    expected = [1 / 8 * math.log(5 / 4), 2 / 8 * math.log(5 / 3), 3 / 8 * math.log(5 / 1), 2 / 8 * math.log(5 / 1)]
    selector = RowSelector("tfidf", 2, background)
    assert selector.scores(3, ROWS, COUNTS).tolist() == pytest.approx(expected)
    assert selector.select(3, ROWS, COUNTS).tolist() == [3, 4]


def test_kl_by_hand(background):
    # q = (bg + 1) / Σ(bg + 1): bg = [4, 4, 1, 0, 0, 1] → (5, 5, 2, 1, 1, 2) / 16
    q = [5 / 16, 5 / 16, 2 / 16, 1 / 16, 1 / 16, 2 / 16]
    p = [1 / 8, 2 / 8, 3 / 8, 2 / 8]
    expected = [pi * math.log(pi / q[r]) for pi, r in zip(p, [0, 1, 3, 4])]
    selector = RowSelector("kl", 3, background)
    assert selector.scores(3, ROWS, COUNTS).tolist() == pytest.approx(expected)
    assert selector.select(3, ROWS, COUNTS).tolist() == [1, 3, 4]
    assert expected[0] < 0  # rows read less than usual score below zero


def test_all_and_random(background):
    assert RowSelector("all", 1).select(3, ROWS, COUNTS).tolist() == [0, 1, 3, 4]
    a = RowSelector("random", 2, seed=5).select(3, ROWS, COUNTS)
    b = RowSelector("random", 2, seed=5).select(3, ROWS, COUNTS)
    assert torch.equal(a, b) and len(a) == 2 and set(a.tolist()) <= {0, 1, 3, 4}
    assert torch.equal(a, a.sort().values)


def test_top_t_larger_than_rows_read_takes_them_all(background):
    assert RowSelector("tfidf", 100, background).select(3, ROWS, COUNTS).tolist() == [0, 1, 3, 4]


def test_tfidf_never_chooses_a_row_every_background_document_read(background):
    """Rows at idf 0 are not used to fill t: with row 0 read in all 4 documents, t = 3 of the rows [0, 2, 5] gives 2."""
    background.df[3][0] = 4
    rows, counts = torch.tensor([0, 2, 5]), torch.tensor([9, 1, 1])
    assert RowSelector("tfidf", 3, background).select(3, rows, counts).tolist() == [2, 5]
    assert RowSelector("tfidf", 3, background).select(3, rows[:1], counts[:1]).tolist() == []
    assert RowSelector("tf", 3, background).select(3, rows, counts).tolist() == [0, 2, 5]  # other rules unchanged


@pytest.mark.parametrize("rule, t, message", [("bm25", 5, "unknown selection rule"), ("tf", 0, "top-t must be a positive")])
def test_bad_rule_or_t(rule, t, message):
    with pytest.raises(SmfError, match=message):
        RowSelector(rule, t)


def test_padding_never_counts():
    """Selection on a padded batch equals selection on the same sequences unpadded."""
    model = retrofit(tiny_model(), MemoryConfig(layers=(2,), slots=64, heads=2, topk=4, key_dim=16))
    set_recording(model, True)
    memory = memory_layers(model)[2]
    a, b = torch.randint(3, 96, (1, 8)), torch.randint(3, 96, (1, 3))
    with torch.no_grad():
        model(a, attention_mask=torch.ones_like(a))
        rows_a = memory.last_rows
        model(b, attention_mask=torch.ones_like(b))
        rows_b = memory.last_rows
        padded = torch.cat([a, torch.cat([b, torch.zeros(1, 5, dtype=torch.long)], 1)])
        mask = torch.tensor([[1] * 8, [1] * 3 + [0] * 5])
        model(padded, attention_mask=mask)
    bg = BackgroundStats.empty({2: 64})
    bg.add_batch({2: torch.arange(0, 64, 3)})
    unpadded = torch.unique(torch.cat([rows_a, rows_b]), return_counts=True)
    selector = RowSelector("tfidf", 5, bg)
    assert torch.equal(selector.select(2, *memory.access_counts()), selector.select(2, *unpadded))
    assert memory.access_counts()[1].sum() == (8 + 3) * 2 * 4  # real tokens × heads × top-k


@pytest.mark.parametrize("rule", ["tf", "tfidf", "kl"])
def test_ties_at_the_t_th_place_go_to_the_lower_rows(rule):
    """Equal scores are settled by row index, not by topk's internal order (which differs
    between builds and picks ties arbitrarily): every 7th row is read twice, the rest once."""
    n = 5000
    flat = BackgroundStats(4, {0: torch.full((n,), 2, dtype=torch.int64)}, {0: torch.full((n,), 3, dtype=torch.int64)})
    rows = torch.arange(n)
    counts = torch.ones(n, dtype=torch.int64)
    counts[::7] = 2
    chosen = RowSelector(rule, 300, flat).select(0, rows, counts)
    assert torch.equal(chosen, torch.arange(0, 7 * 300, 7))
    # more room than the tied top: all twice-read rows, then the lowest once-read ones
    chosen = RowSelector(rule, 800, flat).select(0, rows, counts)
    twice = torch.arange(0, n, 7)
    once = torch.tensor([r for r in range(n) if r % 7][: 800 - len(twice)])
    assert torch.equal(chosen, torch.cat([twice, once]).sort().values)


@pytest.mark.parametrize("rule", ["tf", "tfidf", "kl"])
@pytest.mark.parametrize("published", [False, True])
def test_fixed_shape_selection_chooses_the_rows_select_chooses(rule, published):
    """A training step selects in fixed shapes (no host sync): its valid rows are select's, in the same order;
    the others are distinct rows not chosen. Cases: few rows read, many, ties at the t-th place, rows of
    score 0 (read in every background document), negative KL terms, nothing read."""
    g = torch.Generator().manual_seed(0)
    n = 2000
    bg = BackgroundStats(8, {0: torch.randint(0, 9, (n,), generator=g)}, {0: torch.randint(0, 50, (n,), generator=g)})
    cases = [torch.randint(0, 3, (n,), generator=g), torch.randint(0, 2, (n,), generator=g) * (torch.rand(n, generator=g) < 0.01),
             torch.zeros(n, dtype=torch.int64), (torch.arange(n) % 7 == 0).long() * 2 + (torch.arange(n) % 5 == 0).long()]
    cases.append(torch.where(bg.df[0] == 8, 5, cases[0]))  # rows read in every document read often
    for counts in cases:
        for t in (1, 40, 300, n):
            selector = RowSelector(rule, t, bg, published=published)
            rows = counts.nonzero().flatten()
            expected = selector.select(0, rows, counts[rows])
            fixed, valid = selector.select_fixed(0, counts)
            assert len(fixed) == min(t, n) and torch.equal(fixed[valid], expected)
            assert torch.equal(fixed, fixed.unique())  # ascending, distinct
            assert not set(fixed[~valid].tolist()) & set(expected.tolist())


def test_background_df_counts_every_row_read_once_or_more():
    stats = BackgroundStats.empty({0: 6})
    stats.add_counts({0: torch.tensor([0, 1, 3, 0, 2, 0])})
    stats.add_counts({0: torch.tensor([0, 1, 0, 0, 0, 0])})
    assert stats.df[0].tolist() == [0, 2, 1, 0, 1, 0]  # a batch that read a row once counts as one
    assert stats.counts[0].tolist() == [0, 2, 3, 0, 2, 0]
    assert stats.batches == 2


def test_background_counting_stops_at_the_last_memory_layer(tokenizer):
    """The reads are made by the time the last memory layer has run: the layers above it are not run, and the
    counts are those of whole forward passes. The model runs whole again afterwards."""
    from smf.data.batching import collate, text_chunks
    from smf.memory.retrofit import decoder_layers
    from smf.train.stages import collect_background

    model = retrofit(tiny_model(vocab_size=len(tokenizer)), MemoryConfig(layers=[1, 2], slots=256, heads=2, topk=4, key_dim=16))
    chunks = text_chunks(["alpha beta gamma delta epsilon " * 30], tokenizer, 24)
    batches = [collate(chunks[i : i + 2], tokenizer.pad_token_id) for i in range(0, 4, 2)]
    ran = []
    hook = decoder_layers(model)[3].register_forward_hook(lambda *args: ran.append(1))
    stats = collect_background(model, batches, progress=False)
    assert ran == []
    whole = BackgroundStats.empty({1: 256, 2: 256})
    set_recording(model, True)
    for batch in batches:
        model(**batch)
        whole.add_counts({i: m.read_counts() for i, m in memory_layers(model).items()})
    set_recording(model, False)
    hook.remove()
    assert len(ran) == len(batches)
    for i in (1, 2):
        assert torch.equal(stats.df[i], whole.df[i]) and torch.equal(stats.counts[i], whole.counts[i]) and stats.counts[i].sum() > 0
