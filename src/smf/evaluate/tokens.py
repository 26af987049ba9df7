"""Tokenization the way lm-evaluation-harness does it, so our scores match its scores.

Three conventions matter (lm-eval's `HFLM.tok_encode` and `LM._encode_pair`):

- A string is encoded with the tokenizer's default special tokens, except that a
  string which already begins with the prefix token's text gets none added (chat
  prompts carry their own).
- A (context, continuation) pair is encoded as a whole; the continuation is what
  follows the context's own encoding. Trailing spaces of the context move to the
  continuation first, so " A" is scored as the token a reader would expect.
- An empty context is replaced by the prefix token: BOS, or EOS when there is none.
"""

from __future__ import annotations


def prefix_token_id(tokenizer) -> int:
    """The token that conditions an empty context and the first rolling window."""
    if tokenizer.bos_token_id is not None:
        return tokenizer.bos_token_id
    return tokenizer.eos_token_id


def encode_text(tokenizer, text: str, *, add_special_tokens: bool | None = None) -> list[int]:
    """Token ids of `text`, with special tokens as lm-eval adds them (see module doc)."""
    if add_special_tokens is None:
        prefix = tokenizer.decode([prefix_token_id(tokenizer)])
        add_special_tokens = not (prefix and text.startswith(prefix))
    return tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]


def encode_pair(tokenizer, context: str, continuation: str, *, add_special_tokens: bool | None = None) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) split as lm-eval splits them.

    The continuation's ids are the tail of the whole string's encoding after as
    many tokens as the context alone encodes to; this keeps merges across the
    boundary as the model would see them. `add_special_tokens` as in `encode_text`.
    """
    if context == "":
        cont = encode_text(tokenizer, continuation, add_special_tokens=False)
        prefix = prefix_token_id(tokenizer)
        return ([prefix], cont) if cont[:1] != [prefix] else (cont[:1], cont[1:])
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    whole = encode_text(tokenizer, context + continuation, add_special_tokens=add_special_tokens)
    ctx = encode_text(tokenizer, context, add_special_tokens=add_special_tokens)
    return ctx, whole[len(ctx):]


def pad_id(tokenizer) -> int:
    """A token id to fill padding with (never scored)."""
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    return tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
