"""The committed tokenizer (tests/fixtures/tokenizer, tokenizer.json gzipped; the `tokenizer` fixture of the fast tests)
is the offline default model's: the same vocabulary, merges and special tokens, the same ids and
the same chat template as `load_tokenizer()` gives after converting the GGUF file."""

import json

import pytest

from conftest import TOKENIZER, load_test_tokenizer
from smf.models import load_tokenizer, resolve_model

pytestmark = pytest.mark.slow

TEXTS = [
    "The capital of Zorvania is Quellmark.",
    "def f(x):\n    return x ** 2  # squares\n",
    "  leading spaces, ünïcödé, 日本語 and 🙂",
    "<|im_start|>user\nhi<|im_end|>",
]


@pytest.fixture(scope="module")
def both():
    return load_test_tokenizer(), load_tokenizer()


def test_the_committed_tokenizer_file_is_the_default_models():
    committed = json.loads((TOKENIZER / "tokenizer.json").read_text(encoding="utf-8"))
    converted = json.loads((resolve_model(None) / "tokenizer.json").read_text(encoding="utf-8"))
    assert committed == converted


def test_the_committed_tokenizer_gives_the_same_ids_tokens_and_template(both):
    ours, theirs = both
    assert len(ours) == len(theirs)
    assert ours.special_tokens_map == theirs.special_tokens_map
    assert (ours.pad_token_id, ours.eos_token_id, ours.bos_token_id) == (theirs.pad_token_id, theirs.eos_token_id, theirs.bos_token_id)
    for text in TEXTS:
        assert ours(text).input_ids == theirs(text).input_ids, text
    chat = [{"role": "user", "content": "What is two plus two?"}, {"role": "assistant", "content": "Four."}]
    for prompt in (True, False):
        assert ours.apply_chat_template(chat, tokenize=False, add_generation_prompt=prompt) == \
            theirs.apply_chat_template(chat, tokenize=False, add_generation_prompt=prompt)
    assert ours.chat_template == theirs.chat_template
