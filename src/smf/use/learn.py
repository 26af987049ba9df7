"""`smf learn`: from a person's facts to a model that knows them, in one command.

    smf learn --data my_facts.jsonl --out my_model          # the offline default model
    smf ask --model my_model "Who discovered Zorvex?"
    smf learn --data more_facts.txt --model my_model --out my_model_2   # a later sitting

Steps: load the model; if it has no memory layers, retrofit it (the offline study's
memory: 3 layers at about 27 %, 47 % and 67 % of the depth, 65,536 slots, 4 heads,
top-k 16) and count background statistics on general text (pydoc, or --background);
train SMF (TF-IDF rows, t = 300, batches of 16) with the settings the learn check chose
(scripts/experiments/learn_check.py, README "Teach it your own facts"): SGD at lr 1e5,
60 passes, each question answered by the statement that holds its answer, keeping the base
model's own answers to one question about a made-up subject per question (--keep 1 at weight 3:
a KL term, smf.train.keep), and leaving out every row that one question per question about a
made-up subject reads ("What is the capital of Mirilber?", answered by the model: --anchors 1
--anchor-reads exclude; smf.use.anchors); save; print the answers to a few of the person's own questions
before and after. A model folder `smf learn`
wrote continues where it stopped: same memory, same background statistics, new facts on top.
What a sitting trained is spared by the later ones (--protect trained, the default): its facts'
reads join the saved background statistics and the rows it changed get TF-IDF 0, so a later
sitting trains other rows (learn check: 18 of 19 answers kept, against 5 of 19 unprotected).

Facts (a .txt file: one statement per line; or .jsonl/.json rows): {"text": statement},
{"question": q, "answer": a} or {"prompt": q, "target": a}. Questions and answers are
taught through the model's chat template, the way `smf ask` and `smf chat` ask, with
the loss on the answer; statements are taught as plain text, except a statement that holds a
question's answer, which becomes that question's answer (--answers sentence, the default).
Options the learn check measured and did not choose (README, "Teach it your own facts"):
--answers lead|as-given, --stop false, --anchor-reads document, --anchors 0, --keep-general N, --keep-divergence symmetric, --count target,
--background; --keep 0 trains without the kept answers (the earlier default, at 30 passes). --ask-about N also teaches each answer after N
questions about its subject ("Tell me about Oshu."), so that the same fact asked in other words is answered more often
(measured on one or two seeds, not yet the default). A folder also holds its kept answers
(KEPT_FILE), which a later sitting keeps too (--keep-from base: the answers of the model before any sitting,
its memory reading zeros; --keep-from start keeps the answers of the model the sitting starts from). Each step's
term takes at most --keep-per-step of them (64, whole batches in turn; 0: all), so its cost stops growing with the
sittings (bench/keep_cost.py).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from smf.config import Config, setting
from smf.data.rows import read_rows_file, read_text
from smf.data.types import TrainExample
from smf.errors import SmfError

if TYPE_CHECKING:
    import torch

LEARN_OPTIMIZERS = ("adam", "rowwise_adagrad", "sgd")  # the strictly sparse ones
LEARN_RUN = "learn_run"  # the training run's files, inside the output folder
ANSWERS = ("sentence", "lead", "as-given")
PROTECT = ("trained", "reads", "off")
ANCHOR_READS = ("document", "exclude")  # how --anchors' reads count in the background statistics (smf.use.anchors)
ABOUT = ("Tell me about {}.", "What do you know about {}?", "Tell me a fact about {}.", "What can you tell me about {}?",
         "Give me one fact about {}.")  # --ask-about's questions, in this order
PROTECTED_FILE = "protected_rows.safetensors"  # in a folder smf learn wrote with --protect trained: the rows it spares
KEPT_FILE = "kept_answers.jsonl"  # in a folder smf learn wrote with --keep or --keep-general: every sitting's kept answers
KEEP_FROM = ("base", "start")
DIVERGENCES = ("forward", "symmetric")  # smf.train.keep.DIVERGENCES, named here so the config check imports no torch


@dataclass
class LearnConfig(Config):
    """What `smf learn` does; the defaults are the learn check's choice (one seed; README)."""

    epochs: float = setting(60.0, "passes over the facts (steps = epochs × examples / batch size, at least 1)")
    steps: int | None = setting(None, "optimizer steps; overrides epochs")
    top_t: int = setting(300, "memory rows trained per layer and step")
    lr: float = setting(1e5, "learning rate on the memory values (SGD's gradients on zero-initialised values are tiny; "
                             "lazy Adam wants about 1)")
    optimizer: str = setting("sgd", "sgd, adam (lazy per-row moments) or rowwise_adagrad (one state float per row)")
    batch_size: int = setting(16, "examples per step")
    max_length: int = setting(128, "tokens per example")
    seed: int = setting(0, "seed of the data order and the retrofit")
    slots: int = setting(65536, "memory rows per layer, when the model gets its memory here")
    background_batches: int = setting(16, "batches the background statistics count, when the model gets its memory here")
    background_batch_size: int = setting(8, "background sequences per batch; each batch is one document of the df count, "
                                            "so 1 counts df per sequence")
    show: int = setting(5, "questions whose answers are printed before and after")
    count: str = setting("all", "whose memory reads rank the rows: all tokens, or target (the answer positions only)")
    answers: str = setting("sentence", "sentence: a question whose answer a given statement contains is taught answered by "
                                       "that statement (the model's own full-sentence style); lead: the same, but the "
                                       "statement's words before the answer are context, not taught; as-given: the answer as "
                                       "written")
    protect: str = setting("trained", "what a later sitting spares: reads (what these facts read is added to the background "
                                    "statistics saved with the model, one document per fact, so TF-IDF ranks those rows as common), "
                                    "trained (that, and the rows this sitting trained count as read by every document: "
                                    "TF-IDF scores them 0), or off")
    stop: bool = setting(True, "teach the end of each answer (the chat's end-of-turn token after it); false leaves where the "
                               "model stops answering to the model")
    anchors: int = setting(1, "per question with a subject, questions about made-up subjects (\"What is the capital of "
                                 "Mirilber?\") answered by the model itself, whose reads count as background for this sitting "
                                 "(--anchor-reads; smf.use.anchors); 0: none")
    anchor_reads: str = setting("exclude", "how the anchors' reads count: exclude (every row an anchor reads counts as read "
                                          "by every document: TF-IDF scores it 0, so this sitting does not train it) or "
                                          "document (each anchor one document of the background statistics: rows that any "
                                          "subject of the relation reads score low)")
    keep: int = setting(1, "per question with a subject, questions about made-up subjects answered by the model before the "
                           "sitting, whose answers the training keeps: it adds keep_weight × the KL divergence of the model's "
                           "next-token distributions along them from the ones before the sitting to the loss (smf.train.keep)")
    keep_general: int = setting(0, "general questions (about the standard library's functions: smf.data.docstrings, offline, "
                                   "no probe's) answered by the model before the sitting, whose answers the training keeps "
                                   "as --keep keeps its own")
    keep_weight: float = setting(3.0, "the weight of the kept answers' term in the loss (the facts' loss has weight 1)")
    keep_divergence: str = setting("forward", "the kept answers' term: forward, KL(before ‖ now) along them, or symmetric, "
                                              "that plus KL(now ‖ before), which also charges mass moving onto a token the "
                                              "model before the sitting found unlikely (smf.train.keep)")
    keep_from: str = setting("base", "whose answers --keep and --keep-general keep: base (the model before any sitting, i.e. "
                                     "with its memory reading zeros; a later sitting also keeps the earlier sittings' kept "
                                     "answers, saved with the model) or start (the model this sitting starts from, this "
                                     "sitting's questions only); the same in a first sitting")
    ask_about: int = setting(0, "per question taught answered by a statement, this many more questions about its subject "
                                "(\"Tell me about Oshu.\", \"What do you know about Oshu?\"; at most "
                                f"{len(ABOUT)}) taught answered by the same statement, so the answer does not hang on the "
                                "question's wording; with --answers sentence or lead (about_questions)")
    keep_per_step: int = setting(64, "at most this many kept answers enter each step's term, in whole batches of batch_size "
                                     "taken in turn (0: all, every step), so that a model taught in many sittings keeps "
                                     "all their answers at a bounded cost per step")

    def check(self, where: str) -> None:
        for name in ("top_t", "batch_size", "max_length", "slots", "background_batches", "background_batch_size"):
            if getattr(self, name) < 1:
                raise SmfError(f"{where}: {name} must be >= 1, got {getattr(self, name)}")
        if self.optimizer not in LEARN_OPTIMIZERS:
            raise SmfError(f"{where}: optimizer must be one of {', '.join(LEARN_OPTIMIZERS)}, got {self.optimizer!r}")
        if self.protect not in PROTECT:
            raise SmfError(f"{where}: protect must be one of {', '.join(PROTECT)}, got {self.protect!r}")
        if self.anchor_reads not in ANCHOR_READS:
            raise SmfError(f"{where}: anchor_reads must be one of {', '.join(ANCHOR_READS)}, got {self.anchor_reads!r}")
        if self.answers not in ANSWERS:
            raise SmfError(f"{where}: answers must be one of {', '.join(ANSWERS)}, got {self.answers!r}")
        if not 0 <= self.ask_about <= len(ABOUT):
            raise SmfError(f"{where}: ask_about must be between 0 and {len(ABOUT)}, got {self.ask_about}")
        for name in ("anchors", "keep", "keep_general", "keep_per_step"):
            if getattr(self, name) < 0:
                raise SmfError(f"{where}: {name} must be >= 0, got {getattr(self, name)}")
        if self.keep_divergence not in DIVERGENCES:
            raise SmfError(f"{where}: keep_divergence must be one of {', '.join(DIVERGENCES)}, got {self.keep_divergence!r}")
        if self.keep_from not in KEEP_FROM:
            raise SmfError(f"{where}: keep_from must be one of {', '.join(KEEP_FROM)}, got {self.keep_from!r}")
        if not self.keep_weight > 0:
            raise SmfError(f"{where}: keep_weight must be > 0, got {self.keep_weight}")
        if (self.steps is not None and self.steps < 1) or not self.epochs > 0:
            raise SmfError(f"{where}: steps must be >= 1 and epochs > 0")


@dataclass(frozen=True)
class Fact:
    """One thing to learn: a statement, or a question with its answer."""

    text: str | None = None
    question: str | None = None
    answer: str | None = None
    lead: str = ""  # the answer's first words, given as context and not taught (--answers lead)


def read_facts(path: Path) -> list[Fact]:
    """The facts of a .txt or .jsonl/.json file (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise SmfError(f"{path}: file not found; give a .txt (one statement per line) or .jsonl file of facts")
    if path.suffix == ".txt":
        facts = [Fact(text=line.strip()) for line in read_text(path).splitlines() if line.strip()]
    elif path.suffix in (".jsonl", ".json"):
        facts = []
        for n, row in enumerate(read_rows_file(path, hint='facts: {"text"}, {"question", "answer"} or {"prompt", "target"}'), 1):
            question, answer = row.get("question", row.get("prompt")), row.get("answer", row.get("target"))
            if isinstance(question, str) and isinstance(answer, str) and question.strip() and answer.strip():
                facts.append(Fact(question=question.strip(), answer=answer.strip()))
            elif isinstance(row.get("text"), str) and row["text"].strip():
                facts.append(Fact(text=row["text"].strip()))
            else:
                raise SmfError(f'{path}: row {n} needs a "text", or a "question" (or "prompt") with an "answer" (or "target")')
    else:
        raise SmfError(f"{path}: facts are a .txt, .jsonl or .json file, not {path.suffix or 'a file without a suffix'}")
    if not facts:
        raise SmfError(f"{path}: no facts in the file")
    return facts


_COMMON = {"what", "which", "when", "where", "whom", "whose", "does", "that", "this", "with", "from", "have", "were", "they"}


def _words(text: str) -> list[str]:
    return re.sub(r"[^\w\s]", " ", text.lower()).split()


def answered_by_statements(facts: list[Fact], lead: bool = False) -> list[Fact]:
    """The facts to teach when answers are taught as sentences.

    A question whose answer occurs (as whole words) in a given statement that shares another
    word of four letters or more (not a question word) with the question is taught answered by that statement
    (the one sharing most words; the nearest in the file on a tie), and the statement is not
    taught again on its own. Other facts are kept as they are. Why: a chat model answers in
    sentences that carry its recall ("The capital of China is Beijing."); taught one- to
    three-word answers, it answers every question that way and mostly wrongly (measured in
    the README, "Where the damage comes from").
    """
    statements = {j: _words(f.text) for j, f in enumerate(facts) if f.text is not None}
    holding: dict[str, list[int]] = {}  # word -> the statements that hold it, in file order
    for j, words in statements.items():
        for w in dict.fromkeys(words):
            holding.setdefault(w, []).append(j)
    answered: dict[int, int] = {}  # question's index -> its statement's index
    for i, fact in enumerate(facts):
        if fact.question is None:
            continue
        answer, asked = _words(fact.answer), set(_words(fact.question))
        candidates = holding.get(answer[0], []) if answer else []  # only these can hold the whole answer
        shared = {j: len({w for w in statements[j] if len(w) >= 4} & asked - set(answer) - _COMMON) for j in candidates
                  if _contains(statements[j], answer)}
        best = max((j for j in shared if shared[j] > 0), key=lambda j: (shared[j], -abs(j - i)), default=None)
        if best is not None:
            answered[i] = best
    used = set(answered.values())
    paired = {i: Fact(question=facts[i].question, answer=facts[j].text) for i, j in answered.items()}
    if lead:  # --answers lead: the statement's words before the answer become context
        paired = {i: given_lead(f, facts[i].answer) for i, f in paired.items()}
    return [paired.get(i, f) for i, f in enumerate(facts) if i not in used]


def about_questions(paired: list[Fact], n: int) -> list[Fact]:
    """`n` questions about the subject of each question in `paired` (answered by a statement) that names one
    (smf.use.anchors.subject: "Oshu" in "What is the capital of Oshu?"), each answered as that question is:
    "Tell me about Oshu." → "The capital of the island of Oshu is Kelbrin." Why: taught under one question, the
    answer is read at positions whose memory reads hang on that question's words, and the same fact asked in other
    words reads other rows (README, "Teach it your own facts"); the same answer after other questions about the
    subject trains the rows that the answer's own words read."""
    from smf.use.anchors import subject

    out = []
    for fact in paired if n else []:
        where = subject(fact.question)
        if where is not None:
            name = fact.question[where[0] : where[1]]
            out += [replace(fact, question=form.format(name)) for form in ABOUT[:n]]
    return out


def given_lead(fact: Fact, short: str | None) -> Fact:
    """A question answered by a statement, split where its short answer starts: the words before become the lead
    (context, not taught), the rest the answer. Other facts, and a statement that starts with the answer, as they are."""
    if fact.question is None or short is None or fact.answer == short:
        return fact
    found = re.search(r"(?<!\w)" + re.escape(short) + r"(?!\w)", fact.answer, flags=re.IGNORECASE)
    if found is None or not fact.answer[: found.start()].strip():
        return fact
    cut = len(fact.answer[: found.start()].rstrip())
    return Fact(question=fact.question, answer=fact.answer[cut:], lead=fact.answer[:cut])


def _contains(words: list[str], part: list[str]) -> bool:
    n = len(part)
    return n > 0 and any(words[k : k + n] == part for k in range(len(words) - n + 1))


def examples(facts: list[Fact], tokenizer, stop: bool = True) -> list[TrainExample]:
    """Training examples: questions through the chat template (loss on the answer, and with `stop` on the end-of-turn
    token after it), statements as text."""
    from smf.use.chat import render

    out = []
    for fact in facts:
        if fact.question is not None:
            eos = tokenizer.eos_token if stop and getattr(tokenizer, "chat_template", None) and tokenizer.eos_token else ""
            out.append(TrainExample(render(tokenizer, [{"role": "user", "content": fact.question}]) + fact.lead, fact.answer + eos))
        else:
            out.append(TrainExample("", fact.text))
    return out


ASKS = ("Tell me about this.", "What does the documentation say here?", "Can you explain this topic?",
        "What should I know about this?", "Summarise this part of the reference.")


QUESTIONS = "docstring-questions"  # --background: chats of questions about the standard library, answered
PER_CHAT = 3  # questions per background chat


def chat_background(spec: str, tokenizer, path: Path) -> str:
    """General text as the model will be used: each document's paragraphs as answers in chat turns.

    TF-IDF ranks rows by how specific a batch's reads are against the background. Facts are
    taught through the chat template, so a background of plain prose makes the template's own
    rows look specific, and training them changes every answer the model gives in a chat
    (measured: capitals 66.7 → 3.3 % after 20 facts). With the template in every background
    batch those rows have a high document frequency and are not selected. Each chat is its own
    sequence from its first token (BackgroundConfig pack=False), as the facts and every question
    are read: packed into longer sequences, a chat's opening tokens (the system prompt) sit after
    other text and read other rows than they do at the start of a chat, and those rows were
    trained (on the default model 4 to 15 of the 64 each of its first 8 tokens reads at layer 8,
    their values' norms up to 480, on every chat after).

    `spec` = "docstring-questions": chats of short questions and answers instead, PER_CHAT
    questions each about a documented function or class of the standard library (its
    background part), answered by the docstring's first paragraph, so that the rows read where
    the model answers a question are common in the background too.
    """
    from smf.data.sources import general_texts
    from smf.use.chat import render

    if spec == QUESTIONS:
        return _question_background(tokenizer, path)
    texts = general_texts(spec, "background data")
    if not getattr(tokenizer, "chat_template", None):
        return spec
    rows = []
    for i, text in enumerate(texts):
        for j, paragraph in enumerate(p.strip() for p in text.split("\n\n") if p.strip()):
            turn = render(tokenizer, [{"role": "user", "content": ASKS[(i + j) % len(ASKS)]}])
            rows.append({"text": turn + paragraph + (tokenizer.eos_token or "")})
    return _write_rows(path, rows)


def _write_rows(path: Path, rows: list[dict]) -> str:
    """The background rows as a .jsonl file the background statistics read; its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def _question_background(tokenizer, path: Path) -> str:
    from smf.data.docstrings import docstring_questions
    from smf.data.templates import question_prompt

    pairs = docstring_questions("background")
    pairs = pairs[:: max(1, len(pairs) // (256 * PER_CHAT))]  # spread over the modules, not the first few
    rows = []
    for i in range(0, len(pairs) - PER_CHAT + 1, PER_CHAT):
        chat = pairs[i : i + PER_CHAT]
        if getattr(tokenizer, "chat_template", None):
            turns = [t for q, a in chat for t in ({"role": "user", "content": q}, {"role": "assistant", "content": a})]
            rows.append({"text": tokenizer.apply_chat_template(turns, tokenize=False)})
        else:
            rows.append({"text": "\n\n".join(f"{question_prompt(q)} {a}" for q, a in chat)})
    return _write_rows(path, rows)


def default_layers(num_layers: int) -> tuple[int, ...]:
    """Memory layers at about 27 %, 47 % and 67 % of the depth (8, 14, 20 of SmolLM2's 30)."""
    return tuple(sorted({min(num_layers - 1, round(num_layers * f)) for f in (4 / 15, 7 / 15, 2 / 3)}))


def learn(data: Path, out: Path, *, model: str | None = None, background: str = "pydoc", config: LearnConfig = LearnConfig(),
          progress: bool = True, say=print) -> dict:
    """Teach the facts in `data` to `model` (None: the offline default); write the model to `out`."""
    from smf.models import load_model, resolve_model
    from smf.use.chat import answer

    from smf.io import check_output_path

    out = Path(out)
    check_output_path(out)
    if out.exists() and not out.is_dir():
        raise SmfError(f"{out} is a file; --out is the new model's folder")
    if out.exists() and any(out.iterdir()):
        raise SmfError(f"{out} is not empty; choose a new --out (a later sitting writes a new folder too)")
    facts = read_facts(data)
    taught = facts if config.answers == "as-given" else answered_by_statements(facts, lead=config.answers == "lead")
    given = set(facts)
    paired = [f for f in taught if f not in given]  # questions now answered by a statement
    about = about_questions(paired, config.ask_about)
    taught = taught + about
    where = resolve_model(model)
    net, tokenizer = load_model(where)
    questions = [f for f in facts if f.question is not None][: config.show]

    def ask_all(m) -> list[str]:
        return [answer(m, tokenizer, [{"role": "user", "content": f.question}], max_new_tokens=32) for f in questions]

    before = ask_all(net)
    stage = out.parent / f".{out.name}.learning"
    shutil.rmtree(stage, ignore_errors=True)
    if paired:
        say(f"{len(paired)} question(s) taught answered by your statement that holds the answer (--answers {config.answers}; "
            "--answers as-given teaches them as written)"
            + (f"; {len(about)} more about their subjects (--ask-about {config.ask_about})" if about else ""))
    try:
        steps, result, memory_dir, kept = _teach(net, tokenizer, where, taught, facts, stage, background, config, progress, say)
        after = ask_all(result.model)
        run = stage / LEARN_RUN
        if config.protect != "off":
            trained = changed_rows(result.model, memory_dir) if config.protect == "trained" else None
            documents = protect_rows(result.model, tokenizer, taught, run / "model", config.max_length, trained, since=memory_dir,
                                     stop=config.stop)
            say(f"the background statistics now count what your facts read ({documents} documents)"
                + (f"; {sum(len(r) for r in trained.values()):,} trained rows will not be chosen again" if trained else ""))
        if kept:  # for a later sitting's --keep-from base
            write_kept(run / "model", kept)
        (run / "model" / LEARN_RUN).mkdir()
        for file in run.iterdir():  # the run's config, log and summary travel with the model
            if file.name != "model":
                shutil.move(str(file), str(run / "model" / LEARN_RUN / file.name))
        os.replace(run / "model", out)  # out is absent or an empty folder: the model appears whole
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    s = result.summary
    if warning := untrained_warning(s):
        say(warning)
    say(f"learned {len(facts)} facts in {steps} steps ({s['train_seconds']:.0f} s): loss {s['first_loss']:.3f} → {s['final_loss']:.3f}")
    for fact, a, b in zip(questions, before, after):
        say(f"Q: {fact.question}\n   taught: {fact.answer}\n   before: {a}\n   after:  {b}")
    say(f"model in {out}; ask it: smf ask --model {out} \"...\"")
    return {"facts": len(facts), "steps": steps, "before": before, "after": after, "summary": s}


def untrained_warning(summary: dict) -> str | None:
    """The line to print when a sitting's training (its summary) changed no memory row."""
    if summary.get("rows_trained") != 0:
        return None
    return ("warning: no memory row was trained: every row your facts read scores TF-IDF 0 (read by an anchor, spared for an "
            "earlier sitting, or read by every background document); try --anchor-reads document, --anchors 0 or more --slots")


def changed_rows(model, before: Path) -> dict[int, torch.Tensor]:
    """Per memory layer, the value rows of `model` that differ from those of the model in `before`."""
    from smf.memory import memory_layers
    from smf.models import load_model

    old = memory_layers(load_model(before)[0])  # on the CPU; the trained model may be on a GPU
    return {i: (m.values.detach().cpu() != old[i].values.detach()).any(-1).nonzero().flatten() for i, m in memory_layers(model).items()}


def protect_rows(model, tokenizer, facts: list[Fact], folder: Path, max_length: int,
                 trained: dict[int, torch.Tensor] | None = None, since: Path | None = None, stop: bool = True) -> int:
    """Add the memory reads of each taught example, through the trained `model`, to the background
    statistics in `folder` as one document each (df counts documents); the documents after.

    `trained` (rows per layer): these rows, and those earlier sittings protected (PROTECTED_FILE in the
    folder `since` this sitting started from), get df equal to the documents and are listed in
    `folder`'s PROTECTED_FILE; TF-IDF scores them log(1) = 0, so no later step picks them (smf.selection)."""
    import torch

    from smf.selection import BackgroundStats
    from smf.train.stages import reads_as_documents

    stats = BackgroundStats.load(folder).add(reads_as_documents(model, tokenizer, examples(facts, tokenizer, stop), max_length))
    if trained is not None:
        from safetensors.torch import load_file, save_file

        before = since / PROTECTED_FILE if since is not None else None
        earlier = load_file(str(before)) if before is not None and before.is_file() else {}
        protected = {}
        for layer, rows in trained.items():
            rows = torch.cat([earlier.get(f"rows.{layer}", rows[:0]), rows]).unique()
            stats.df[layer][rows] = stats.batches
            protected[f"rows.{layer}"] = rows
        tmp = folder / f".{PROTECTED_FILE}.tmp"
        save_file(protected, str(tmp))
        os.replace(tmp, folder / PROTECTED_FILE)
    stats.save(folder)
    return stats.batches


def _teach(net, tokenizer, where, facts: list[Fact], asked: list[Fact], stage: Path, background, config: LearnConfig,
           progress: bool, say):
    """Retrofit (unless `where` has memory) into `stage`, then train SMF on the facts (anchors and kept answers from
    the person's own questions, `asked`); (steps, TrainResult, the folder it started from, the kept examples)."""
    from smf.memory import MemoryConfig
    from smf.memory.delta import root_folder
    from smf.memory.retrofit import MEMORY_FILE, retrofit, save_retrofitted
    from smf.methods import TrainConfig
    from smf.models import load_model
    from smf.selection import BACKGROUND_FILE, BackgroundConfig
    from smf.train import train
    from smf.train.stages import background_statistics

    root = root_folder(where) if isinstance(where, Path) else None  # an smf run's delta stands on its base
    if root is not None and (root / MEMORY_FILE).is_file() and (root / BACKGROUND_FILE).is_file():
        memory_dir = where  # a later sitting: the same memory and background statistics
        say(f"continuing from {where} (its memory and background statistics)")
    else:
        if root is not None and (root / MEMORY_FILE).is_file():
            raise SmfError(f"{where} has memory layers but no background statistics; run smf background on it first")
        layers = default_layers(net.config.num_hidden_layers)
        say(f"retrofitting memory at layers {', '.join(map(str, layers))} ({config.slots:,} slots each)")
        retrofit(net, MemoryConfig(layers=layers, slots=config.slots, heads=4, topk=16, key_dim=256, seed=config.seed))
        memory_dir = save_retrofitted(net, tokenizer, stage / "memory_model")
        data = chat_background(background, tokenizer, stage / "background.jsonl")
        chats = bool(getattr(tokenizer, "chat_template", None))  # each chat its own sequence, as it is read when used
        background_statistics(memory_dir, BackgroundConfig(data=data, batches=config.background_batches,
                                                           batch_size=config.background_batch_size, max_length=128,
                                                           pack=not chats), progress=progress)
    train_examples = examples(facts, tokenizer, config.stop)
    steps = config.steps or max(1, math.ceil(config.epochs * len(train_examples) / config.batch_size))
    train_config = TrainConfig.from_dict({"method": "smf", "rule": "tfidf", "top_t": config.top_t, "lr": config.lr, "steps": steps,
                                          "optimizer": config.optimizer,
                                          "count": config.count,
                                          "batch_size": config.batch_size, "max_length": config.max_length, "seed": config.seed})
    model, _ = load_model(memory_dir)
    background = _anchored_background(model, tokenizer, memory_dir, asked, config, say) if config.anchors else None
    saved = read_kept(memory_dir)  # every sitting's kept answers travel with the model
    keep, kept = (_kept_answers(model, tokenizer, asked, config, saved if config.keep_from == "base" else [], say)
                  if config.keep or config.keep_general else (None, []))
    result = train(model, tokenizer, train_examples, train_config, stage / LEARN_RUN, model_dir=memory_dir,
                   standalone=True, background=background, keep=keep, progress=progress)
    return steps, result, memory_dir, list(dict.fromkeys(saved + kept))  # an answer kept again is saved once


def _anchors(model, tokenizer, facts: list[Fact], n: int, seed: int, say, use: str):
    """(questions, examples): `n` anchors per question with a subject (smf.use.anchors), answered by `model`; both
    empty, said, when there are none."""
    from smf.use.anchors import anchor_examples, anchor_questions

    questions = anchor_questions([f.question for f in facts if f.question is not None], n, seed=seed)
    anchors = anchor_examples(model, tokenizer, questions)
    if not anchors:
        say("no question names a subject to swap (a capitalised name after its first word), or the model answered none "
            f"of them: nothing {use}")
    return questions, anchors


def _kept_answers(model, tokenizer, facts: list[Fact], config: LearnConfig, earlier: list[TrainExample], say):
    """(Keep or None, the kept examples): the answers of the model before any sitting (--keep-from base: its memory
    reading zeros; after the `earlier` sittings' kept answers) or of `model` as it is (start) to this
    sitting's anchors (--keep) and general questions (--keep-general), as a kept-output term for training
    (smf.train.keep); (None, []) without any."""
    from smf.data.docstrings import docstring_questions
    from smf.memory import memory_reading_zeros
    from smf.train.keep import Keep
    from smf.use.anchors import anchor_examples

    kept, said = [], [f"{len(earlier)} earlier sittings' question(s)"] if earlier else []
    with memory_reading_zeros(model) if config.keep_from == "base" else contextlib.nullcontext(model):
        if config.keep:
            questions, anchors = _anchors(model, tokenizer, facts, config.keep, config.seed + 1, say, "to keep")
            kept += anchors
            if anchors:
                said.append(f"{len(anchors)} question(s) about made-up subjects (such as \"{questions[0]}\")")
        if config.keep_general:
            pairs = docstring_questions("background")
            questions = [q for q, _ in pairs[:: max(1, len(pairs) // config.keep_general)][: config.keep_general]]
            general = anchor_examples(model, tokenizer, questions)
            kept += general
            said.append(f"{len(general)} general question(s) (such as \"{questions[0]}\")")
        kept = list(dict.fromkeys(earlier + kept))  # a question asked again is kept once
        if not kept:
            return None, []
        keep = Keep.of(model, tokenizer, kept, config.max_length, config.keep_weight, batch=config.batch_size,
                       most=config.keep_per_step, divergence=config.keep_divergence)
    whose = "the base model's (its memory reading zeros)" if config.keep_from == "base" else "the model's"
    turns = f", {keep.per_step * config.batch_size} a step in turn" if keep.in_turn else ""
    how = ", symmetric KL" if keep.divergence == "symmetric" else ""
    say(f"keeping {whose} answers to {' and '.join(said)}: {keep.positions} tokens, weight {config.keep_weight:g}{how}{turns}")
    return keep, kept


def read_kept(folder: Path) -> list[TrainExample]:
    """The kept answers saved in `folder` (KEPT_FILE, by an earlier sitting), as examples; [] without the file."""
    path = Path(folder) / KEPT_FILE
    if not path.is_file():
        return []

    def damaged(why: str) -> SmfError:
        return SmfError(f"{path} is damaged ({why}); delete it to keep only this sitting's answers")

    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise damaged(f"not UTF-8 text, byte {e.start}") from None
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise damaged(f"line {n}: not valid JSON, {e.msg}") from None
        if not (isinstance(row, dict) and isinstance(row.get("prompt"), str) and isinstance(row.get("target"), str)
                and row["target"]):
            raise damaged(f'line {n}: not a {{"prompt": text, "target": text}} row')
        out.append(TrainExample(row["prompt"], row["target"]))
    if not out:
        raise damaged("no rows")
    return out


def write_kept(folder: Path, examples: list[TrainExample]) -> None:
    """Save the kept answers in `folder` (KEPT_FILE, atomically), for later sittings."""
    from smf.io import write_text_atomic

    write_text_atomic(Path(folder) / KEPT_FILE, "".join(json.dumps({"prompt": e.prompt, "target": e.target}) + "\n" for e in examples))


def _anchored_background(model, tokenizer, memory_dir: Path, facts: list[Fact], config: LearnConfig, say):
    """The background statistics of `memory_dir` with this sitting's anchors added (smf.use.anchors); None without any."""
    from safetensors.torch import load_file

    from smf.memory.delta import root_folder
    from smf.selection import BackgroundStats
    from smf.use.anchors import add_anchor_reads

    questions, anchors = _anchors(model, tokenizer, facts, config.anchors, config.seed, say, "counts as background")
    if not anchors:
        return None
    protected = memory_dir / PROTECTED_FILE
    stats = add_anchor_reads(BackgroundStats.load(root_folder(memory_dir)), model, tokenizer, anchors,
                             config.max_length, load_file(str(protected)) if protected.is_file() else None,
                             exclude=config.anchor_reads == "exclude")
    how = "the rows they read are not trained in" if config.anchor_reads == "exclude" else "count as background for"
    layers = sorted(stats.df)
    zero = " / ".join(f"{int((stats.df[i] == stats.batches).sum()):,}" for i in layers)
    say(f"{len(anchors)} question(s) about made-up subjects (such as \"{questions[0]}\"), answered by the model, "
        f"{how} this sitting (rows at TF-IDF 0: {zero} of {len(stats.df[layers[0]]):,} at layers "
        f"{', '.join(map(str, layers))})")
    return stats
