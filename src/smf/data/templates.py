"""Prompt templates, written once: training examples and the scorers both use these.

- `letter_prompt`: lm-eval's MedMCQA prompt (question, lettered choices, "Answer:");
  MedMCQA training examples end their prompt with it, the `letter` and `answer_norm`
  multiple-choice formats score after it.
- `cloze_prompt`: "Question: {q}\\nAnswer:", lm-eval's cloze convention (`cloze` format);
  `question_prompt` is the same for a bare question.
- `plain_prompt`: lm-eval's TriviaQA prompt, which appends "?" to the question as given.
- `chat_prompt`: the question as a user turn in the tokenizer's chat template.

Training templates (`TRAIN_TEMPLATES`, a MedMCQA source's `template` option) turn a question,
its answer and its explanation into one training example:

- `lm-eval` (smf's default): prompt `letter_prompt`, target " {letter}. {option}" and then
  "\nExplanation: {explanation}"; the loss sits on the target.
- `published`: the SMF-on-Qwen study's training string, one text carrying the loss whole:
  `published_mcq_prompt` + " {letter}. {option}", then "\nExplanation: {explanation}"; question
  and options verbatim, nothing added (no EOS, no chat template).

Both take the explanation stripped, and write no line for one that is empty or missing.
"""

from __future__ import annotations

import string

from smf.data.types import MCQItem, TrainExample
from smf.errors import SmfError

LETTERS = string.ascii_uppercase


def letter_prompt(item: MCQItem) -> str:
    lines = [f"Question: {item.question}", "Choices:"]
    lines += [f"{LETTERS[i]}. {choice}" for i, choice in enumerate(item.choices)]
    return "\n".join(lines) + "\nAnswer:"


def published_mcq_prompt(item: MCQItem) -> str:
    """The SMF-on-Qwen study's MedMCQA prompt: a header line, the lettered options, "Answer:"."""
    lines = ["Medical exam question:", f"Question: {item.question}"]
    lines += [f"{LETTERS[i]}. {choice}" for i, choice in enumerate(item.choices)]
    return "\n".join(lines) + "\nAnswer:"


def published_qa_prompt(question: str) -> str:
    """The SMF-on-Qwen study's TriviaQA prompt: the question as given (no "?" added)."""
    return f"Question: {question}\nAnswer:"


def nq_prompt(question: str) -> str:
    """lm-eval's Natural Questions (nq_open) prompt."""
    return f"Q: {question}?\nA:"


def cloze_prompt(item: MCQItem) -> str:
    return question_prompt(item.question)


def question_prompt(question: str) -> str:
    """'Question: {q}\nAnswer:' (the cloze prompt; `smf ask` on a model without a chat template)."""
    return f"Question: {question}\nAnswer:"


def plain_prompt(question: str) -> str:
    return f"Question: {question}?\nAnswer:"


def chat_prompt(tokenizer, question: str) -> str:
    """A user turn (a "?" appended if the question ends without punctuation) with the generation prompt."""
    if not getattr(tokenizer, "chat_template", None):
        raise SmfError("prompt style 'chat' needs a tokenizer with a chat template; use prompt: plain")
    content = question if question.rstrip().endswith(("?", ".", "!")) else question + "?"
    return tokenizer.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False)


def _answer(item: MCQItem) -> str:
    return f" {LETTERS[item.answer]}. {item.choices[item.answer]}"


def _explanation(explanation: str | None) -> str:
    text = explanation.strip() if isinstance(explanation, str) else ""
    return f"\nExplanation: {text}" if text else ""


def lm_eval_train_example(item: MCQItem, explanation: str | None = None) -> TrainExample:
    """lm-eval's prompt; the answer (and the explanation) as the target."""
    return TrainExample(prompt=letter_prompt(item), target=_answer(item) + _explanation(explanation))


def published_train_example(item: MCQItem, explanation: str | None = None) -> TrainExample:
    """The SMF-on-Qwen study's training text: its evaluation prompt, the answer, the explanation; all of it the loss."""
    return TrainExample(prompt="", target=published_mcq_prompt(item) + _answer(item) + _explanation(explanation))


TRAIN_TEMPLATES = {"lm-eval": lm_eval_train_example, "published": published_train_example}
