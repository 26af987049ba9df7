"""Ask a model and chat with it: prompts through its chat template, answers streamed.

Any model smf can load works: the offline default, a hub id, a folder smf wrote (a
retrofitted or trained model, a LoRA adapter). With a chat template the conversation
is a list of turns rendered by the tokenizer; without one, plain "Question:/Answer:"
for one question and "User:/Assistant:" turns for a conversation. Decoding is greedy,
so an answer is repeatable.
"""

from __future__ import annotations

from typing import Callable

import torch

from smf.data.templates import question_prompt
from smf.errors import SmfError
from smf.models import autocast, greedy_batches


def render(tokenizer, turns: list[dict]) -> str:
    """The prompt text for `turns` ([{"role": "user"|"assistant", "content": ...}]), ending
    where the assistant's next answer starts."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=False)
    if len(turns) == 1:
        return question_prompt(turns[0]["content"])
    lines = [f"{'User' if t['role'] == 'user' else 'Assistant'}: {t['content']}" for t in turns]
    return "\n".join(lines) + "\nAssistant:"


class _Stream:
    """A transformers streamer that hands each new piece of text to `emit` and keeps the whole."""

    def __init__(self, tokenizer, emit: Callable[[str], None]):
        from transformers import TextStreamer  # why: transformers takes seconds to import; smf --help needs none

        outer = self

        class Streamer(TextStreamer):
            def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
                outer.text += text
                emit(text)

        self.text = ""
        self.streamer = Streamer(tokenizer, skip_prompt=True, skip_special_tokens=True)


@torch.inference_mode()
def answer(model, tokenizer, turns: list[dict], *, max_new_tokens: int = 128, emit: Callable[[str], None] = lambda s: None,
           mixed_precision: str = "auto") -> str:
    """The model's greedy answer to the conversation `turns`, streamed piece by piece to `emit`.
    `mixed_precision`: the rule of training and evaluation (`smf.models.uses_bf16`): "auto" is
    bf16 autocast on a GPU and fp32 on the CPU."""
    device = next(model.parameters()).device
    precision = autocast(device, mixed_precision)  # refuses an unknown precision first
    if not turns or turns[-1]["role"] != "user" or not turns[-1]["content"].strip():
        raise SmfError("nothing to answer: give a question")
    prompt = render(tokenizer, turns)
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=not getattr(tokenizer, "chat_template", None))
    stream = _Stream(tokenizer, emit)
    with precision:
        model.generate(**{k: v.to(device) for k, v in ids.items()}, max_new_tokens=max_new_tokens, do_sample=False,
                       streamer=stream.streamer, pad_token_id=tokenizer.pad_token_id)
    return stream.text.strip()


def answers(model, tokenizer, conversations: list[list[dict]], *, max_new_tokens: int = 128, batch: int = 32,
            mixed_precision: str = "auto") -> list[str]:
    """The model's greedy answer to each conversation, as `answer` gives it, generated `batch` conversations at a
    time (`smf.models.greedy_batches`)."""
    prompts = [render(tokenizer, turns) for turns in conversations]
    made = greedy_batches(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch=batch,
                          add_special_tokens=not getattr(tokenizer, "chat_template", None), mixed_precision=mixed_precision)
    return [text.strip() for text in made]


@torch.inference_mode()
def complete(model, tokenizer, prompt: str, *, max_new_tokens: int = 40, mixed_precision: str = "auto") -> str:
    """The model's greedy continuation of the plain text `prompt` (no chat template), up to its first line's end:
    how a few-shot prompt is answered, by a base model and a chat model alike."""
    device = next(model.parameters()).device
    ids = tokenizer(prompt, return_tensors="pt")
    with autocast(device, mixed_precision):
        out = model.generate(**{k: v.to(device) for k, v in ids.items()}, max_new_tokens=max_new_tokens, do_sample=False,
                             stop_strings=["\n"], tokenizer=tokenizer,
                             pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
    text = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    return text.strip().split("\n")[0].strip()
