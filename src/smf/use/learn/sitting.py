"""The sitting: `learn()`, from a file of facts and a model to a new model folder that knows them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from smf.data.types import TrainExample
from smf.errors import SmfError
from smf.io import check_output_path
from smf.lock import output_lock
from smf.memory.delta import root_folder
from smf.memory.retrofit import retrofit, save_retrofitted
from smf.models import load_model, resolve_model
from smf.names import BACKGROUND_FILE, MEMORY_FILE
from smf.train import train
from smf.use.chat import answer
from smf.use.learn.background import anchored_background, changed_rows, count_background, protect_rows
from smf.use.learn.config import LearnConfig
from smf.use.learn.examples import about_questions, answered_by_statements, examples
from smf.use.learn.facts import Fact, read_facts
from smf.use.learn.folder import LEARN_RUN, read_kept, write_kept
from smf.use.learn.kept import kept_answers


def learn(data: Path, out: Path, *, model: str | None = None, config: LearnConfig | None = None, progress: bool = True,
          say=print) -> dict:
    """Teach the facts in `data` to `model` (None: the offline default); write the model to `out`.
    One sitting at a time on one `out` (a second is refused while the first holds its lock)."""
    with output_lock(Path(out)):
        return _sitting(data, out, model, LearnConfig() if config is None else config, progress, say)


def _sitting(data: Path, out: Path, model: str | None, config: LearnConfig, progress: bool, say) -> dict:
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
        result, memory_dir, kept = _teach(net, tokenizer, where, taught, facts, stage, config, progress, say)
        after = ask_all(result.model)
        run = stage / LEARN_RUN
        if config.protect != "off":
            trained = changed_rows(result.model, memory_dir) if config.protect == "trained" else None
            documents = protect_rows(result.model, tokenizer, taught, run / "model", config.train.max_length, trained,
                                     since=memory_dir, stop=config.stop)
            say(f"the background statistics now count what your facts read ({documents} documents)"
                + (f"; {sum(len(r) for r in trained.values()):,} trained rows will not be chosen again" if trained else ""))
        if kept:  # for a later sitting's keep_from base
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
    steps = s["steps"]
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


def _teach(net, tokenizer, where, facts: list[Fact], asked: list[Fact], stage: Path, config: LearnConfig, progress: bool,
           say):
    """Retrofit (unless `where` has memory) into `stage`, then train SMF on the facts (anchors and kept answers from
    the person's own questions, `asked`); (TrainResult, the folder it started from, the kept examples)."""
    root = root_folder(where) if isinstance(where, Path) else None  # an smf run's delta stands on its base
    if root is not None and (root / MEMORY_FILE).is_file() and (root / BACKGROUND_FILE).is_file():
        memory_dir = where  # a later sitting: the same memory and background statistics
        say(f"continuing from {where} (its memory and background statistics)")
    else:
        if root is not None and (root / MEMORY_FILE).is_file():
            raise SmfError(f"{where} has memory layers but no background statistics; run smf background on it first")
        memory = config.memory.at_depth(net.config.num_hidden_layers)
        say(f"retrofitting memory at layers {', '.join(map(str, memory.layers))} ({memory.slots:,} slots each)")
        retrofit(net, memory)
        memory_dir = save_retrofitted(net, tokenizer, stage / "memory_model")
        count_background(memory_dir, config.background, tokenizer, stage, progress)
    train_examples: list[TrainExample] = examples(facts, tokenizer, config.stop)
    model, _ = load_model(memory_dir)
    background = anchored_background(model, tokenizer, memory_dir, asked, config, say) if config.anchors else None
    saved = read_kept(memory_dir)  # every sitting's kept answers travel with the model
    keep, kept = (kept_answers(model, tokenizer, asked, config, saved if config.keep_from == "base" else [], say)
                  if config.keep or config.keep_general else (None, []))
    result = train(model, tokenizer, train_examples, config.train, stage / LEARN_RUN, model_dir=memory_dir, save_model=False,
                   background=background, terms=[keep] if keep is not None else [], progress=progress)
    # The whole model, not the run's compact delta: a sitting's folder loads by itself and a later sitting stands on it.
    save_retrofitted(result.model, tokenizer, stage / LEARN_RUN / "model", copy_files=[root_folder(memory_dir) / BACKGROUND_FILE])
    return result, memory_dir, list(dict.fromkeys(saved + kept))  # an answer kept again is saved once
