"""The staged runner of a study: base, memory model, one training run per setting and seed.

Stages, each skipped when its output already exists (a stopped study resumes):

    base/result.json            the base model on the task, extra tasks and probes
    memory_model/               the retrofitted model (+ healed) with background statistics (memory_model/seed<s>
                                and heal/seed<s> where heal or background data is drawn per seed: seed: run)
    runs/<label>/seed<s>/       one training run per method setting and seed:
        train_config.json, log.jsonl (losses and curve evaluations), result.json
    results.json, report.md, *.png   written at the end from everything above

Every setting trains on the same data, steps, batch and seed (see `smf.study.config`).
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

import torch

from smf.data.registry import get_form
from smf.data.sources import _is_file, _split, for_seed, general_texts, per_seed, training_examples
from smf.errors import SmfError
from smf.evaluate.evaluator import evaluate, first_items_headline
from smf.evaluate.tasks import Task, load_task, resolve_task
from smf.io import MAX_RECORD_BYTES, read_json, write_json_atomic
from smf.memory.delta import fingerprint
from smf.memory.retrofit import retrofit, save_retrofitted
from smf.methods import METHODS
from smf.models import compute_device, load_model, resolve_model
from smf.names import (BACKGROUND_FILE, CHECKPOINT, CONFIG_FILE, MEMORY_FILE, MODEL_DIR, RESULT_FILE, RESULTS_FILE, STUDY_FILE,
                       SUMMARY_FILE)
from smf.study.config import RunSpec, StudyConfig
from smf.study.report import write_report
from smf.study.results import collect_results
from smf.study.stream import run_stream, write_stream_report
from smf.train import train
from smf.train.stages import background_statistics, heal


def run_study(config: StudyConfig, out: str | Path, *, seeds: list[int] | None = None, progress: bool = True) -> dict:
    """Run (or resume) the study in `out`; return the aggregated results."""
    out = Path(out)
    if seeds:
        config = dataclasses.replace(config, seeds=list(seeds))
    claimed = _claim(out, config)
    # bad data fails before any model work
    stream = config.stream_chunks() if config.stream.chunks is not None else None
    specs = config.eval_specs() if stream is None else [c["task"] for c in stream] + config.eval_specs()[1:]
    loaded = [load_task(s) for s in specs]
    tasks = {t.label: t for t in loaded}
    # data drawn per seed (seed: run) is drawn for every seed here, so bad data still fails before any model work
    examples = {seed: training_examples(for_seed(config.data, seed)) for seed in config.seeds} if per_seed(config.data) \
        else dict.fromkeys(config.seeds, training_examples(config.data))
    if config.needs_memory() or config.evaluation.healed:
        _check_filtered_text(config)
    base_dir = resolve_model(config.model)
    # written only now, so a study refused above leaves no study.json to refuse its corrected config
    _mark(out, config, base_dir, claimed)
    if stream is not None:
        base = _base_results(config, base_dir, tasks, out)
        # a stream's runs share one memory model: heal and background data drawn per seed take the first seed
        first = config.seeds[0] if memory_per_seed(config) else None
        memory_dir = _memory_model(config, base_dir, out, progress, first) if config.needs_memory() else None
        results = run_stream(config, out, base, base_dir, memory_dir, tasks,
                             lambda model, tokenizer, now: _evaluate(model, tokenizer, now, config, progress), progress)
        write_json_atomic(out / RESULTS_FILE, results)
        write_stream_report(results, out)
        return results
    base = _base_results(config, base_dir, tasks, out)
    memory_dirs = _memory_models(config, base_dir, out, progress) if config.needs_memory() or config.evaluation.healed else {}
    if config.evaluation.healed:
        _healed_results(config, memory_dirs, tasks, out)
    for seed in config.seeds:
        for run in config.runs():
            _train_and_evaluate(config, run, seed, base_dir, memory_dirs.get(seed), tasks, examples[seed], out, progress)
    results = collect_results(config, out, base)
    write_json_atomic(out / RESULTS_FILE, results)
    write_report(results, out)
    return results


def _check_filtered_text(config: StudyConfig) -> None:
    """Heal and background data whose filters may leave nothing (a hub source with filter options, as OASST1's)
    are read now, for each seed that draws them, so such data fails before any model work (a local file was
    read when the config loaded)."""
    specs = [("heal data", config.heal.data)] if config.heal is not None else []
    for what, spec in [*specs, ("background data", config.background.data)]:
        name, options = _split(spec, what)
        if _is_file(name) or options.get("source") is not None or get_form(name, "text")[1].check is None:
            continue
        for seed in config.seeds if per_seed(spec) else config.seeds[:1]:
            general_texts(for_seed(spec, seed), what)


def _claim(out: Path, config: StudyConfig) -> dict | None:
    """A study folder holds one study: a different config is refused, never overwritten.

    A study may grow: new method entries can be added (the finished runs of the
    entries it already had are kept); changing or removing an entry is a different study.
    Settings that only gather results (StudyConfig.AGGREGATION_ONLY) may change.
    Returns the folder's study.json (None for a new study); `_mark` writes it.
    """
    marker = out / STUDY_FILE
    mine = config.identity()
    if marker.is_file():
        recorded = read_json(marker, MAX_RECORD_BYTES)
        try:
            config_part = {k: v for k, v in recorded.items() if k != _BASE_KEY} if isinstance(recorded, dict) else recorded
            theirs = StudyConfig.from_dict(config_part, where=str(marker)).identity()
        except SmfError:
            raise SmfError(f"{out} holds a study of another smf version or config schema; choose another --out") from None
        old_methods = theirs.get("methods") or {}
        if all(mine["methods"].get(label) == settings for label, settings in old_methods.items()):
            theirs["methods"] = mine["methods"]  # only additions
        if theirs != mine:
            changed = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            raise SmfError(f"{out} holds a different study (differs in: {', '.join(changed)}); choose another --out")
        return recorded
    if out.exists() and any(out.iterdir()):
        raise SmfError(f"{out} is not empty and holds no {STUDY_FILE}; choose another --out")
    return None


_BASE_KEY = "base_fingerprint"  # in study.json, beside the config: the base model by content


def _mark(out: Path, config: StudyConfig, base_dir: Path | str, recorded: dict | None) -> None:
    """Write study.json, with the base model's fingerprint; a study whose base model changed
    (another folder at the same path, other weights) is refused, so no table mixes two models."""
    now = fingerprint(base_dir) if isinstance(base_dir, Path) else f"hub:{base_dir}"
    then = (recorded or {}).get(_BASE_KEY)
    if then is not None and then != now:
        raise SmfError(f"{out} was run on another base model than {base_dir} (fingerprint {now[:17]} now, "
                       f"{str(then)[:17]} in {out / STUDY_FILE}); give its model back, or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / STUDY_FILE, {**config.to_dict(), _BASE_KEY: now})


def _evaluate(model, tokenizer, tasks: dict, config: StudyConfig, progress: bool) -> dict:
    return evaluate(model, tokenizer, list(tasks.values()), batch_size=config.evaluation.batch_size,
                    generate_batch_size=config.evaluation.generate_batch_size, progress=progress,
                    mixed_precision=config.evaluation.mixed_precision)["tasks"]


def _base_results(config: StudyConfig, base_dir, tasks: dict, out: Path) -> dict:
    path = out / "base" / RESULT_FILE
    if path.is_file():
        return read_json(path)

    model, tokenizer = load_model(base_dir, device=compute_device())
    start = time.perf_counter()
    result = {"label": "base", "model": str(base_dir), "tasks": _evaluate(model, tokenizer, tasks, config, True)}
    if config.curve.every:
        result["curve"] = _curve_point(_curve_tasks(config, tasks), result["tasks"])
    result["eval_seconds"] = time.perf_counter() - start
    write_json_atomic(path, result)
    return result


def memory_per_seed(config: StudyConfig) -> bool:
    """Whether each run seed has its own memory model: the memory is drawn per seed (memory.seed_per_run) or its heal
    or background data is (seed: run)."""
    return config.memory.seed_per_run or (config.heal is not None and per_seed(config.heal.data)) or per_seed(config.background.data)


def _memory_models(config: StudyConfig, base_dir, out: Path, progress: bool) -> dict[int, Path]:
    """Run seed → its memory model: one for every seed, or one per seed (`memory_per_seed`)."""
    if not memory_per_seed(config):
        return dict.fromkeys(config.seeds, _memory_model(config, base_dir, out, progress))
    return {seed: _memory_model(config, base_dir, out, progress, seed) for seed in config.seeds}


def _memory_model(config: StudyConfig, base_dir, out: Path, progress: bool, seed: int | None = None) -> Path:
    """Retrofit (and heal) the base model; background statistics beside it. With `seed`, the memory model of
    that run seed (memory_model/seed<s>, heal/seed<s>), its heal and background data drawn with that seed."""
    folder = out / "memory_model" if seed is None else out / "memory_model" / f"seed{seed}"
    heal_out = out / "heal" if seed is None else out / "heal" / f"seed{seed}"
    heal_config, background_config = config.heal, config.background
    if seed is not None:
        heal_config = heal_config and dataclasses.replace(heal_config, data=for_seed(heal_config.data, seed))
        background_config = dataclasses.replace(background_config, data=for_seed(background_config.data, seed))
    if not (folder / MEMORY_FILE).is_file():
        model, tokenizer = load_model(base_dir)
        memory = dataclasses.replace(config.memory, seed=seed) if config.memory.seed_per_run and seed is not None else config.memory
        retrofit(model, memory)
        save_retrofitted(model, tokenizer, folder, overwrite=True, extra={"base_model": str(base_dir)})
    if heal_config is not None:
        healed = heal_out / MODEL_DIR
        if not (healed / MEMORY_FILE).is_file():
            shutil.rmtree(heal_out, ignore_errors=True)
            heal(folder, heal_config, heal_out, progress=progress)
        folder = healed
    if not (folder / BACKGROUND_FILE).is_file():
        background_statistics(folder, background_config, progress=progress)
    return folder


def _healed_results(config: StudyConfig, memory_dirs: dict[int, Path], tasks: dict, out: Path) -> None:
    """Each seed's healed memory model before any training, evaluated: healed/seed<s>/result.json (a memory model
    shared by the seeds is evaluated once)."""
    done: dict[Path, dict] = {}
    for seed, folder in memory_dirs.items():
        path = out / "healed" / f"seed{seed}" / RESULT_FILE
        if path.is_file():
            continue
        if folder not in done:
            model, tokenizer = load_model(folder, device=compute_device())
            done[folder] = _evaluate(model, tokenizer, tasks, config, True)
            del model
        write_json_atomic(path, {"label": "healed", "seed": seed, "model": str(folder), "tasks": done[folder]})


def _curve_tasks(config: StudyConfig, tasks: dict) -> dict:
    """The tasks evaluated during training: task and probes, their first items."""
    keep = [resolve_task(s).label for s in [config.evaluation.task, *config.evaluation.probes]]
    out = {}
    for label, t in tasks.items():
        if label in keep:
            limit = config.curve.documents if t.kind == "perplexity" else config.curve.limit
            out[label] = Task(t.label, t.dataset, t.items[:limit], t.options, t.data_options)
    return out


def _curve_point(curve_tasks: dict, evaluated: dict) -> dict:
    """The curve's evaluation of the model `evaluated` scored: its curve tasks' items are the first of those."""
    return {label: {"headline": {"metric": evaluated[label]["headline"]["metric"],
                                 "value": first_items_headline(evaluated[label], len(t.items))}}
            for label, t in curve_tasks.items()}


def _train_and_evaluate(config: StudyConfig, run: RunSpec, seed: int, base_dir, memory_dir, tasks: dict,
                        examples: list, out: Path, progress: bool) -> None:
    folder = run.folder(out, seed)
    if (folder / RESULT_FILE).is_file():
        return
    train_config = run.train_config(config, seed)
    model_dir = memory_dir if METHODS[train_config.method].uses_memory(train_config) else base_dir
    model, tokenizer = load_model(model_dir, device=compute_device())
    every = config.curve.every
    curve_tasks = _curve_tasks(config, tasks) if every else {}
    # the last point is the final evaluation's (below), not the same items scored again
    eval_fn = (lambda m, step: None if step == train_config.steps else _evaluate(m, tokenizer, curve_tasks, config, False)) \
        if every else None
    resume = (folder / CONFIG_FILE).is_file()
    if resume and ((folder / SUMMARY_FILE).is_file() or not (folder / CHECKPOINT).is_dir()):
        # trained but not evaluated (the model was not kept), or nothing to resume from: train again
        shutil.rmtree(folder)
        resume = False
    if progress:
        print(f"== {run.label}, seed {seed}")
    start = time.perf_counter()
    result = train(model, tokenizer, examples, train_config, folder, model_dir=model_dir, resume=resume,
                   eval_fn=eval_fn, eval_every=every, save_model=config.keep_models, progress=progress)
    train_wall = time.perf_counter() - start
    evaluated = _evaluate(result.model, tokenizer, tasks, config, progress)
    record = {
        "label": run.label, "family": run.family.label, "seed": seed, "settings": run.settings,
        "train_config": train_config.to_dict(), "summary": result.summary,
        "wall_seconds": train_wall + 0.0, "eval_seconds": time.perf_counter() - start - train_wall, "tasks": evaluated,
    }
    if every:
        record["curve_final"] = {"step": train_config.steps, "eval": _curve_point(curve_tasks, evaluated)}
    write_json_atomic(folder / RESULT_FILE, record)
    shutil.rmtree(folder / CHECKPOINT, ignore_errors=True)
    del model, result
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
