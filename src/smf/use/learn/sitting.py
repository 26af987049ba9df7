"""The sitting: `learn()`, from a file of facts (or notes) to a new model folder that knows them."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from smf.errors import SmfError
from smf.io import atomic_dir, check_output_path
from smf.lock import output_lock
from smf.memory.delta import root_folder
from smf.memory.retrofit import retrofit, save_retrofitted
from smf.models import load_model, resolve_model
from smf.names import BACKGROUND_FILE, MEMORY_FILE
from smf.train import train
from smf.use.chat import answer
from smf.use.learn.background import anchored_background, changed_rows, count_background, protect_rows
from smf.use.learn.config import LearnConfig
from smf.use.learn.examples import examples
from smf.use.learn.facts import Fact
from smf.use.learn.folder import LEARN_RUN, read_kept, write_kept
from smf.use.learn.kept import kept_answers
from smf.use.learn.study import StudyItem, check_item, read_input, study_data, write_study


def learn(data: Path, out: Path, *, model: str | None = None, config: LearnConfig | None = None, study_out: Path | None = None,
          progress: bool = True, say=print) -> dict:
    """Teach the facts in `data` to `model` (None: the offline default); write the model to `out` and, with
    `study_out`, the study items it trained on (a file `data` accepts back). One sitting at a time on one
    `out` (a second is refused while the first holds its lock)."""
    with output_lock(Path(out)):
        return _sitting(data, out, model, LearnConfig() if config is None else config, study_out, progress, say)


def _sitting(data: Path, out: Path, model: str | None, config: LearnConfig, study_out: Path | None, progress: bool,
             say) -> dict:
    out = Path(out)
    check_output_path(out)
    if out.exists() and not out.is_dir():
        raise SmfError(f"{out} is a file; --out is the new model's folder")
    if out.exists() and any(out.iterdir()):
        raise SmfError(f"{out} is not empty; choose a new --out (a later sitting writes a new folder too)")
    if study_out is not None:
        check_output_path(Path(study_out))
        if Path(study_out).exists():
            raise SmfError(f"{study_out} exists; --study-out writes a new file")
    facts, given = read_input(data)
    where = resolve_model(model)
    net, tokenizer = load_model(where)
    start = time.perf_counter()
    items = checked(given, data) if given is not None else study_data(facts, net, tokenizer, config, say)
    study_seconds = time.perf_counter() - start
    taught = [i.as_fact() for i in items]
    shown = _shown(facts, items)
    asked = [Fact(question=q, answer=a) for q, a in shown]  # one question a fact: the anchors and kept answers follow them
    questions = shown[: config.show]

    def ask_all(m) -> list[str]:
        return [answer(m, tokenizer, [{"role": "user", "content": q}], max_new_tokens=32) for q, _ in questions]

    before = ask_all(net)
    stage = out.parent / f".{out.name}.learning"
    shutil.rmtree(stage, ignore_errors=True)
    try:
        result, memory_dir, kept, seconds = _teach(net, tokenizer, where, taught, asked, stage, config, progress, say)
        after = ask_all(result.model)
        run = stage / LEARN_RUN
        if memory_dir is not None and config.protect != "off":
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
        if study_out is not None:
            write_study(items, Path(study_out))
        os.replace(run / "model", out)  # out is absent or an empty folder: the model appears whole
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    s = result.summary
    if warning := untrained_warning(s):
        say(warning)
    steps = s["steps"]
    times = {"study data": study_seconds, **seconds, "training": s["train_seconds"]}
    n_facts = len({i.fact for i in items})
    say(f"learned {n_facts} facts from {len(items)} study items in {steps} steps ({config.train.method}): loss "
        f"{s['first_loss']:.3f} → {s['final_loss']:.3f}; " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items() if v))
    for (q, taught_answer), a, b in zip(questions, before, after):
        say(f"Q: {q}\n   taught: {taught_answer}\n   before: {a}\n   after:  {b}")
    say(f"model in {out}; ask it: smf ask --model {out} \"...\"")
    return {"facts": n_facts, "items": len(items), "steps": steps, "before": before, "after": after, "summary": s,
            "seconds": times}


def checked(items: list[StudyItem], data: Path) -> list[StudyItem]:
    """A study file's items that pass the check (each still holds its answer); SmfError when none does."""
    kept = [i for i in items if check_item(i)]
    if not kept:
        raise SmfError(f"{data}: no study item passed its check (each must hold its \"short\" answer, and a question must "
                       "not give it away); fix the items or give the facts themselves")
    return kept


def _shown(facts: list[Fact], items: list[StudyItem]) -> list[tuple[str, str]]:
    """The questions whose answers are shown before and after: the person's own, else one per fact from the study."""
    own = [(f.question, f.answer) for f in facts if f.question is not None]
    if own:
        return own
    seen, out = set(), []
    for i in items:
        if i.question is not None and i.fact not in seen:
            seen.add(i.fact)
            out.append((i.question, i.short or i.answer))
    return out


def untrained_warning(summary: dict) -> str | None:
    """The line to print when a sitting's training (its summary) changed no memory row."""
    if summary.get("rows_trained") != 0:
        return None
    return ("warning: no memory row was trained: every row your facts read scores TF-IDF 0 (read by an anchor, spared for an "
            "earlier sitting, or read by every background document); try --anchor-reads document, --anchors 0 or more --slots")


def _teach(net, tokenizer, where, taught: list[Fact], asked: list[Fact], stage: Path, config: LearnConfig, progress: bool,
           say):
    """SMF: retrofit (unless `where` has memory) into `stage`, then train on the study items (anchors and kept
    answers from their questions, `asked`); LoRA and full finetuning: train the model as it is.
    (TrainResult, the memory folder it started from or None, the kept examples, seconds per stage)."""
    train_examples = examples(taught, tokenizer, config.stop)
    seconds: dict[str, float] = {}
    if config.train.method != "smf":
        result = train(net, tokenizer, train_examples, config.train, stage / LEARN_RUN, model_dir=where if isinstance(where, Path) else None,
                       save_model=False, progress=progress)
        with atomic_dir(stage / LEARN_RUN / "model") as tmp:  # the trainer's model is plain already (LoRA merged)
            result.model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        return result, None, [], seconds
    root = root_folder(where) if isinstance(where, Path) else None  # an smf run's delta stands on its base
    if root is not None and (root / MEMORY_FILE).is_file() and (root / BACKGROUND_FILE).is_file():
        memory_dir = where  # a later sitting: the same memory and background statistics
        say(f"continuing from {where} (its memory and background statistics)")
    else:
        if root is not None and (root / MEMORY_FILE).is_file():
            raise SmfError(f"{where} has memory layers but no background statistics; run smf background on it first")
        memory = config.memory.at_depth(net.config.num_hidden_layers)
        say(f"retrofitting memory at layers {', '.join(map(str, memory.layers))} ({memory.slots:,} slots each)")
        start = time.perf_counter()
        retrofit(net, memory)
        memory_dir = save_retrofitted(net, tokenizer, stage / "memory_model")
        seconds["retrofit"] = time.perf_counter() - start
        start = time.perf_counter()
        count_background(memory_dir, config.background, tokenizer, stage, progress)
        seconds["background"] = time.perf_counter() - start
    start = time.perf_counter()
    model, _ = load_model(memory_dir)
    background = anchored_background(model, tokenizer, memory_dir, asked, config, say) if config.anchors else None
    saved = read_kept(memory_dir)  # every sitting's kept answers travel with the model
    keep, kept = (kept_answers(model, tokenizer, asked, config, saved if config.keep_from == "base" else [], say)
                  if config.keep or config.keep_general else (None, []))
    seconds["anchors and kept answers"] = time.perf_counter() - start
    result = train(model, tokenizer, train_examples, config.train, stage / LEARN_RUN, model_dir=memory_dir, save_model=False,
                   background=background, terms=[keep] if keep is not None else [], progress=progress)
    # The whole model, not the run's compact delta: a sitting's folder loads by itself and a later sitting stands on it.
    save_retrofitted(result.model, tokenizer, stage / LEARN_RUN / "model", copy_files=[root_folder(memory_dir) / BACKGROUND_FILE])
    return result, memory_dir, list(dict.fromkeys(saved + kept)), seconds
