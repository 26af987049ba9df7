"""Scoring engines on a tiny random Llama: batched and cached paths equal plain ones."""


import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from smf.data.types import MCQItem
from smf.evaluate.generate import cut_at_stops, greedy_generate, shared_prefix
from smf.evaluate.loglik import Request, score_requests, score_requests_full
from smf.data.templates import chat_prompt, cloze_prompt, letter_prompt
from smf.evaluate.mcq import build_requests, score_mcq
from smf.evaluate.perplexity import count_words, rolling_loglikelihoods, rolling_windows
from smf.evaluate.tokens import encode_pair, encode_text, prefix_token_id


@pytest.fixture(scope="module")
def tiny(tokenizer):
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config).eval()


ITEMS = [
    MCQItem("q0", "What is two plus two", ("4", "five", "twenty two", "none of these, surely"), 2),
    MCQItem("q1", "Which planet is the largest in our solar system?", ("Jupiter", "Saturn the ringed one", "Mars", "Earth"), 0),
    MCQItem("q2", "Hi", ("yes", "no"), 1),
    MCQItem("q3", "Name a colour", ("a deep shade of blue", "red", "green", "an unusually bright, saturated yellow"), 3),
]


def _full_sequence_logprob(model, ctx, cont):
    """Log-prob of `cont` after `ctx` from one unbatched forward of ctx + cont."""
    ids = torch.tensor([ctx + cont])
    logp = model(input_ids=ids).logits.float().log_softmax(-1)[0]
    return sum(logp[len(ctx) - 1 + i, t].item() for i, t in enumerate(cont))


def test_encode_pair_moves_trailing_space_and_splits_whole_encoding(tokenizer):
    ctx, cont = encode_pair(tokenizer, "Answer: ", "Paris")
    assert ctx == encode_text(tokenizer, "Answer:")
    assert ctx + cont == encode_text(tokenizer, "Answer: Paris")
    empty_ctx, cont = encode_pair(tokenizer, "", "Paris")
    assert empty_ctx == [prefix_token_id(tokenizer)] and cont == encode_text(tokenizer, "Paris")


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("fmt", ["letter", "cloze", "answer_norm"])
def test_packed_scores_equal_full_sequence_scores(tiny, tokenizer, fmt, attention):
    tiny.set_attn_implementation(attention)
    try:
        requests = build_requests(tokenizer, ITEMS, fmt)
        packed = score_requests(tiny, requests, batch_size=3, pad_id=tokenizer.pad_token_id)
        full = score_requests_full(tiny, requests, batch_size=5, pad_id=tokenizer.pad_token_id)
        for r, a, b in zip(requests, packed, full):
            assert a.n_tokens == b.n_tokens == [len(c) for c in r.continuations]
            assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)
            assert a.greedy == b.greedy
            for cont, lp in zip(r.continuations, a.logprobs):
                assert lp == pytest.approx(_full_sequence_logprob(tiny, r.context, cont), abs=1e-4)
    finally:
        tiny.set_attn_implementation("sdpa")


def test_attention_without_custom_masks_falls_back_to_full_rows(tiny, tokenizer, monkeypatch):
    from smf.evaluate import loglik

    requests = build_requests(tokenizer, ITEMS, "cloze")
    packed = score_requests(tiny, requests, pad_id=tokenizer.pad_token_id)
    monkeypatch.setattr(loglik, "supports_custom_mask", lambda model: False)
    fallback = score_requests(tiny, requests, pad_id=tokenizer.pad_token_id)
    for a, b in zip(packed, fallback):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)


def test_batch_size_does_not_change_scores(tiny, tokenizer):
    requests = build_requests(tokenizer, ITEMS, "cloze")
    one = score_requests(tiny, requests, batch_size=1, pad_id=tokenizer.pad_token_id)
    many = score_requests(tiny, requests, batch_size=16, pad_id=tokenizer.pad_token_id)
    for a, b in zip(one, many):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)


def test_letter_prompt_is_lm_evals_medmcqa_prompt():
    item = MCQItem("x", "Q?", ("a", "b", "c", "d"), 0)
    assert letter_prompt(item) == "Question: Q?\nChoices:\nA. a\nB. b\nC. c\nD. d\nAnswer:"
    assert cloze_prompt(item) == "Question: Q?\nAnswer:"


def test_score_mcq_metrics_follow_the_scores(tiny, tokenizer):
    result = score_mcq(tiny, tokenizer, ITEMS, format="cloze", batch_size=2)
    assert len(result.records) == len(ITEMS)
    for item, rec in zip(ITEMS, result.records):
        lps = rec["logprobs"]
        assert rec["pred"] == max(range(len(lps)), key=lps.__getitem__)
        assert rec["correct"] == (rec["pred"] == item.answer)
    assert result.metrics["acc"] == sum(r["correct"] for r in result.records) / len(ITEMS)
    assert result.metrics["acc_stderr"] > 0 or result.metrics["acc"] in (0.0, 1.0)


def test_rolling_windows_cover_each_token_once():
    tokens = list(range(100, 123))  # 23 tokens
    for max_length in (1, 4, 5, 23, 50):
        windows = rolling_windows(tokens, prefix_token=7, max_length=max_length)
        assert [t for w in windows for t in w.targets] == tokens
        # Each input is the stretch of [prefix] + tokens just before its last target,
        # so every target is read right after the token that precedes it.
        seq, end = [7] + tokens, 0
        for w in windows:
            end += w.n_targets
            assert 1 <= w.n_targets <= len(w.inputs) <= max_length
            assert w.inputs == seq[max(0, end - max_length):end]
    assert rolling_windows([], 7, 4) == []


def test_rolling_loglikelihood_equals_per_token_sum_within_one_window(tiny, tokenizer):
    docs = [encode_text(tokenizer, "The quick brown fox jumps over the lazy dog. " * 3), encode_text(tokenizer, "Hello world")]
    prefix = prefix_token_id(tokenizer)
    got = rolling_loglikelihoods(tiny, docs, prefix_token=prefix, max_length=64, pad_id=tokenizer.pad_token_id)
    for doc, ll in zip(docs, got):
        assert ll == pytest.approx(_full_sequence_logprob(tiny, [prefix], doc), abs=1e-3)


def test_rolling_loglikelihood_with_small_windows_matches_window_by_window(tiny, tokenizer):
    doc = encode_text(tokenizer, "One two three four five six seven eight nine ten eleven twelve thirteen.")
    prefix = prefix_token_id(tokenizer)
    expected = 0.0
    for w in rolling_windows(doc, prefix, 5):
        logp = tiny(input_ids=torch.tensor([w.inputs])).logits.float().log_softmax(-1)[0]
        positions = range(len(w.inputs) - w.n_targets, len(w.inputs))
        expected += sum(logp[p, t].item() for p, t in zip(positions, w.targets))
    for budget in (5, 12, 1000):
        got = rolling_loglikelihoods(tiny, [doc, doc[:3]], prefix_token=prefix, max_length=5, max_batch_tokens=budget)
        assert got[0] == pytest.approx(expected, abs=1e-3)


def test_count_words_as_lm_eval():
    assert count_words("a b  c\nd") == 4
    assert count_words(" a b") == 3  # a leading space makes an empty first piece, as in lm-eval


def test_cut_at_stops():
    assert cut_at_stops(" Paris, France.", ["\n", ".", ","]) == " Paris"
    assert cut_at_stops(" St. Louis\nMissouri", ["\n", ".", ","]) == " St"
    assert cut_at_stops("no stop here", ["\n"]) == "no stop here"
    assert cut_at_stops("abc", ["", "c"]) == "ab"


def test_batched_greedy_generation_equals_hf_generate(tiny, tokenizer):
    prompts = [encode_text(tokenizer, p) for p in ["Question: What is the capital of France?\nAnswer:", "Hi", "Once upon a time there"]]
    ours = greedy_generate(tiny, tokenizer, prompts, stop=(), max_new_tokens=6, batch_size=3)
    for p, g in zip(prompts, ours):
        ref = tiny.generate(torch.tensor([p]), max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)[0, len(p):]
        ref = [t for t in ref.tolist()]
        if tokenizer.eos_token_id in ref:
            ref = ref[: ref.index(tokenizer.eos_token_id)]
        assert g.raw == tokenizer.decode(ref, skip_special_tokens=True)
        assert g.n_tokens == len(ref)


def test_generation_stops_rows_independently(tiny, tokenizer):
    prompts = [encode_text(tokenizer, p) for p in ["Hi", "Once upon a time there"]]
    free = greedy_generate(tiny, tokenizer, prompts, stop=(), max_new_tokens=8)
    # A stop string taken from row 0's own output ends row 0 there; row 1 runs on.
    stop = free[0].raw[len(free[0].raw) // 2:][:3] or "\n"
    cut = greedy_generate(tiny, tokenizer, prompts, stop=(stop,), max_new_tokens=8)
    assert cut[0].text == cut_at_stops(free[0].raw, [stop])
    assert free[0].raw.startswith(cut[0].raw)
    assert cut[1].raw == free[1].raw or stop in cut[1].raw


def test_overlong_context_is_cut_from_the_left_like_lm_eval(tiny, tokenizer):
    request = build_requests(tokenizer, ITEMS[1:2], "cloze")[0]
    longest = max(len(c) for c in request.continuations)
    # lm-eval feeds (context + continuation)[-(max_length + 1):][:-1]: here 2 tokens go.
    max_length = len(request.context) + longest - 3
    cut = score_requests(tiny, [request], max_length=max_length)[0]
    kept = Request(request.context[2:], request.continuations)
    assert cut.logprobs == pytest.approx(score_requests_full(tiny, [kept])[0].logprobs, abs=1e-4)


@pytest.mark.parametrize("decoding", ["greedy", "generation_config"])
def test_prompts_sharing_a_prefix_answer_as_each_alone(tokenizer, decoding):
    # the chat template's system turn is run once per batch and its cache shared by the rows
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                                         initializer_range=0.2)).eval()  # wide enough weights that each prompt answers its own way
    model.generation_config.repetition_penalty = 1.3
    questions = ["What is the capital of France?", "Hi", "Name three rivers in Europe, please", "Why?"]
    prompts = [encode_text(tokenizer, chat_prompt(tokenizer, q)) for q in questions]
    assert shared_prefix(prompts) >= 10 and shared_prefix(prompts[:1]) == 0
    together = greedy_generate(model, tokenizer, prompts, stop=(), max_new_tokens=6, batch_size=4, decoding=decoding)
    alone = [greedy_generate(model, tokenizer, [p], stop=(), max_new_tokens=6, decoding=decoding)[0] for p in prompts]
    assert [g.ids for g in together] == [g.ids for g in alone]
    assert len({g.ids for g in together}) > 1  # the rows answer differently: each reads its own question


def test_shared_prefix_leaves_every_prompt_a_token_of_its_own():
    assert shared_prefix([[1, 2, 3], [1, 2, 3, 4]]) == 2
    assert shared_prefix([[1, 2, 3], [1, 5, 3], [1, 2]]) == 1
    assert shared_prefix([[7, 2], [1, 2]]) == 0
